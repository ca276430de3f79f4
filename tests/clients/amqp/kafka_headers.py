"""AMQP headers as Kafka record headers: pika publishes a message with a headers table to a
queue; kafka-python reads the queue's topic and sees each entry as a record header (text as its
bytes, numbers and booleans as text, tables left out) beside `amqp.properties`; it produces the
record, headers and all, to a second queue's topic, and pika gets it back with the original
types (the `amqp.properties` header wins over the loose ones).
Prints a JSON summary."""
import json
import sys

import pika
from kafka import KafkaConsumer, KafkaProducer

URL, BOOTSTRAP = sys.argv[1], sys.argv[2]

connection = pika.BlockingConnection(pika.URLParameters(URL))
channel = connection.channel()
channel.confirm_delivery()
channel.queue_declare('kh_out')
channel.queue_declare('kh_back')
headers = {'tenant': 'acme', 'size': 42, 'urgent': True, 'nested': {'a': 1}, 'ratio': 2 ** 40}
channel.basic_publish('', 'kh_out', b'payload', properties=pika.BasicProperties(
    headers=headers, content_type='text/plain'))

consumer = KafkaConsumer('kh_out', bootstrap_servers=BOOTSTRAP, auto_offset_reset='earliest',
                         consumer_timeout_ms=10000, group_id=None)
record = next(iter(consumer))
consumer.close()
seen = {name: (value.decode('utf-8', 'replace') if name != 'amqp.properties' else 'present')
        for name, value in record.headers}

producer = KafkaProducer(bootstrap_servers=BOOTSTRAP)
producer.send('kh_back', key=record.key, value=record.value, headers=record.headers)
producer.flush()
producer.close()

back = None
for _ in range(100):
    method, properties, body = channel.basic_get('kh_back', auto_ack=True)
    if method is not None:
        back = {"headers": properties.headers, "content_type": properties.content_type,
                "body": body.decode()}
        break
    connection.sleep(0.1)
connection.close()
print(json.dumps({"kafka_headers": seen, "back": back}))
