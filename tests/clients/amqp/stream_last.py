"""`x-stream-offset: last` starts at RabbitMQ's last chunk, Weir's last record batch. Stream
`last_chunk` gets three AMQP publishes (a batch each), then one batch of five records from a
Kafka producer (confluent-kafka, lingering so that the five go in one batch) to the stream's
topic; a pika consumer from `last` must get exactly those five. One more AMQP publish after
that is the last batch, alone. Arguments: URL, bootstrap. Prints a JSON summary."""
import json
import sys

import pika
from confluent_kafka import Producer

URL, BOOTSTRAP = sys.argv[1], sys.argv[2]
STREAM = 'last_chunk'
QUIET_S = 1.0


def from_last(connection):
    """(body, x-stream-offset) of every delivery from `last` until nothing came for a second."""
    channel = connection.channel()
    channel.basic_qos(prefetch_count=50)
    got = []
    arguments = {'x-stream-offset': 'last'}
    for method, properties, body in channel.consume(STREAM, arguments=arguments,
                                                    inactivity_timeout=QUIET_S):
        if method is None:
            break
        got.append([body.decode(), properties.headers['x-stream-offset']])
        channel.basic_ack(method.delivery_tag)
    channel.cancel()
    channel.close()
    return got


def main():
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.queue_declare(queue=STREAM, durable=True, arguments={'x-queue-type': 'stream'})
    channel.confirm_delivery()
    for index in range(3):
        channel.basic_publish('', STREAM, f'amqp {index}'.encode())
    producer = Producer({'bootstrap.servers': BOOTSTRAP, 'linger.ms': 500})
    offsets = []

    def delivered(error, message):
        offsets.append(None if error else message.offset())

    for index in range(5):
        producer.produce(STREAM, value=f'kafka {index}'.encode(), on_delivery=delivered)
    producer.flush(30)
    last_after_kafka = from_last(connection)
    channel.basic_publish('', STREAM, b'amqp 3')
    last_after_amqp = from_last(connection)
    channel.queue_delete(queue=STREAM)
    connection.close()
    print(json.dumps({
        'kafka_offsets': sorted(offsets, key=lambda offset: offset if offset is not None else -1),
        'last_after_kafka': last_after_kafka,
        'last_after_amqp': last_after_amqp,
    }))


main()
