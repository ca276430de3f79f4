"""More of the AMQP surface with pika against a broker URL, each checked against what RabbitMQ
does: exchange-to-exchange bindings, the headers exchange, purge, delete if-empty, exclusive
queues seen from another connection (405), the server-sent cancel when a consumer's queue is
deleted, nack without requeue, refused arguments (406) and transactions (540). Then a Kafka
consumer (kafka-python) reads a queue as a topic of the same name (the record layout of
docs/amqp-compat.md). Prints a JSON summary."""
import json
import sys
import time

import pika

URL, BOOTSTRAP = sys.argv[1], sys.argv[2]


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def drain(channel, queue):
    bodies = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return bodies
        bodies.append(body.decode())


def code_of(action):
    try:
        action()
    except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) as error:
        return error.reply_code
    return None


connection = connect()
channel = connection.channel()
summary = {}

# Exchange to exchange: upstream (fanout) -> downstream (direct) -> e2e_queue.
channel.exchange_declare(exchange='upstream', exchange_type='fanout')
channel.exchange_declare(exchange='downstream', exchange_type='direct')
channel.exchange_bind(destination='downstream', source='upstream')
channel.queue_declare(queue='e2e_queue')
channel.queue_bind(queue='e2e_queue', exchange='downstream', routing_key='k')
channel.basic_publish(exchange='upstream', routing_key='k', body='through two exchanges')
channel.basic_publish(exchange='upstream', routing_key='other', body='dropped by downstream')
summary["e2e"] = drain(channel, 'e2e_queue')

# Headers exchange: x-match all / any.
channel.queue_declare(queue='headers_all')
channel.queue_declare(queue='headers_any')
channel.queue_bind(queue='headers_all', exchange='amq.headers',
                   arguments={'x-match': 'all', 'format': 'pdf', 'type': 'report'})
channel.queue_bind(queue='headers_any', exchange='amq.headers',
                   arguments={'x-match': 'any', 'format': 'pdf', 'type': 'log'})
for body, headers in (('pdf report', {'format': 'pdf', 'type': 'report'}),
                      ('pdf only', {'format': 'pdf'}),
                      ('a log', {'type': 'log'})):
    channel.basic_publish(exchange='amq.headers', routing_key='', body=body,
                          properties=pika.BasicProperties(headers=headers))
summary["headers_all"] = drain(channel, 'headers_all')
summary["headers_any"] = drain(channel, 'headers_any')

# Purge and delete if-empty.
channel.queue_declare(queue='purged')
for i in range(3):
    channel.basic_publish(exchange='', routing_key='purged', body=f'p{i}')
summary["purged"] = channel.queue_purge('purged').method.message_count
channel.basic_publish(exchange='', routing_key='purged', body='keeps it non-empty')
summary["delete_if_empty"] = code_of(lambda: connection.channel().queue_delete('purged', if_empty=True))
summary["deleted_count"] = channel.queue_delete('purged').method.message_count

# An exclusive queue is locked to its connection.
owner = connect()
exclusive = owner.channel().queue_declare(queue='', exclusive=True).method.queue
summary["exclusive_other"] = code_of(lambda: connection.channel().queue_declare(queue=exclusive, passive=True)
                                     or connection.channel().basic_consume(exclusive, lambda *a: None))
owner.close()
summary["exclusive_after_close"] = code_of(lambda: connection.channel().queue_declare(queue=exclusive, passive=True))

# Deleting a queue under a consumer: the server cancels it (consumer_cancel_notify).
cancelled = []
watcher = connect()
watching = watcher.channel()
watching.queue_declare(queue='doomed')
watching.basic_consume('doomed', lambda *args: None, consumer_tag='watcher')
watching.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
channel.queue_delete('doomed')
deadline = time.time() + 5
while not cancelled and time.time() < deadline:
    watcher.process_data_events(time_limit=0.1)
summary["server_cancel"] = cancelled
watcher.close()

# nack without requeue drops the message.
channel.queue_declare(queue='nacked')
channel.basic_publish(exchange='', routing_key='nacked', body='bad')
method, _, _ = channel.basic_get('nacked')
channel.basic_nack(method.delivery_tag, requeue=False)
summary["after_nack"] = drain(channel, 'nacked')

# Refused: a priority above RabbitMQ's maximum of 255 (406), tx.commit without tx.select (406).
summary["max_priority"] = code_of(lambda: connection.channel().queue_declare(
    queue='prio', arguments={'x-max-priority': 256}))
summary["tx"] = code_of(lambda: connect().channel().tx_commit())

# A Kafka consumer reads a queue's log as a topic.
channel.queue_declare(queue='audited', durable=True)
channel.basic_publish(exchange='', routing_key='audited', body='{"order": 1}',
                      properties=pika.BasicProperties(content_type='application/json'))
connection.close()
from kafka import KafkaConsumer  # noqa: E402
consumer = KafkaConsumer('audited', bootstrap_servers=BOOTSTRAP, auto_offset_reset='earliest',
                         consumer_timeout_ms=10000, enable_auto_commit=False)
records = []
for record in consumer:
    records.append({"key": record.key.decode(), "value": record.value.decode(),
                    "headers": sorted(name for name, _ in record.headers)})
    break
consumer.close()
summary["kafka"] = records
print(json.dumps(summary))
