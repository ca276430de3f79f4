"""One routing table for both protocols: records a Kafka client (kafka-python) produces to an
AMQP-declared exchange, or straight to a queue's topic, reach the queue's AMQP consumer (key =
routing key, value = body, Kafka headers = AMQP headers). Prints a JSON summary."""
import json
import sys
import time

import pika
from kafka import KafkaProducer

URL, BOOTSTRAP = sys.argv[1], sys.argv[2]

connection = pika.BlockingConnection(pika.URLParameters(URL))
channel = connection.channel()
channel.exchange_declare(exchange='orders', exchange_type='topic')
channel.queue_declare(queue='order_events', durable=True)
channel.queue_bind(queue='order_events', exchange='orders', routing_key='order.*')
channel.basic_publish(exchange='orders', routing_key='order.created', body='from amqp')

producer = KafkaProducer(bootstrap_servers=BOOTSTRAP)
producer.send('orders', key=b'order.paid', value=b'from kafka via the exchange',
              headers=[('trace-id', b'abc-123'), ('tenant', b'acme')])
producer.send('orders', key=b'invoice.sent', value=b'not bound')
producer.send('order_events', key=b'direct', value=b'from kafka to the queue topic')
# A key longer than an AMQP short string (255 bytes) is cut to the last whole character within.
producer.send('order_events', key=('\u00e9' * 200).encode(), value=b'a 400-byte key')
producer.flush()
producer.close()
channel.basic_publish(exchange='orders', routing_key='order.shipped', body='from amqp again')

got = []
deadline = time.time() + 15
headers = {}
for method, properties, body in channel.consume('order_events', inactivity_timeout=0.3):
    if method is not None:
        key = method.routing_key
        got.append([key if len(key) < 100 else f"{key[0]} x {len(key.encode())} bytes", body.decode()])
        headers[body.decode()] = properties.headers
        channel.basic_ack(method.delivery_tag)
    if len(got) >= 5 or time.time() > deadline:
        break
connection.close()
print(json.dumps({"received": sorted(got), "headers": headers}))
