"""The disk and memory alarms seen by pika 1.4.4 (which announces the connection.blocked
capability): connection.blocked on a publishing and on a consuming connection, whether the
publish was stored (the test starts the broker with a limit above or below the free space, or a
memory watermark of 1 byte), and whether a connection that only consumes still gets answers.
RabbitMQ 3.10 under `rabbitmqctl set_disk_free_limit 10000000000000` and/or
`set_vm_memory_high_watermark absolute 1` prints what the blocked cases assert. Prints a JSON
summary."""
import json
import sys
import time

import pika
import pika.exceptions

URL = sys.argv[1]
QUEUE = 'disk_alarm_q'


def connect(events):
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    connection.add_on_connection_blocked_callback(
        lambda _c, frame: events.append(['blocked', frame.method.reason]))
    connection.add_on_connection_unblocked_callback(lambda _c, _frame: events.append(['unblocked']))
    # The broker checks free space at start and every 100 ms after.
    connection.process_data_events(time_limit=1.5)
    return connection


def main():
    consumer_events, publisher_events = [], []
    consumer = connect(consumer_events)
    channel = consumer.channel()
    channel.queue_declare(queue=QUEUE)
    publisher = connect(publisher_events)
    publishing = publisher.channel()
    # Without confirms basic_publish returns at once; processing events then shows what the
    # broker sends.
    publishing.basic_publish('', QUEUE, b'while low on disk?')
    publisher.process_data_events(time_limit=2)
    # The consumer's connection is still read: a declare is answered.
    count = channel.queue_declare(queue=QUEUE, passive=True).method.message_count
    consumer.process_data_events(time_limit=0.2)
    channel.queue_delete(queue=QUEUE)
    consumer.close()
    print(json.dumps({
        'publisher_events': publisher_events,
        'consumer_events': consumer_events,
        'message_count': count,
    }))


main()
