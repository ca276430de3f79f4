"""Unacknowledged messages come back, in order, flagged redelivered, when their consumer's
connection closes; a nack with requeue brings one back; acked ones never do. Also mandatory
publishes that no queue takes come back as basic.return, and publisher confirms ack what was
stored. Prints a JSON summary."""
import json
import sys
import time

import pika

URL = sys.argv[1]


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def take(channel, queue, count, timeout=10.0):
    got = []
    deadline = time.time() + timeout
    for method, properties, body in channel.consume(queue, inactivity_timeout=0.3):
        if method is not None:
            got.append((method, body.decode()))
        if len(got) >= count or time.time() > deadline:
            break
    return got


setup = connect()
channel = setup.channel()
channel.queue_declare(queue='redelivery_queue')
channel.confirm_delivery()
for i in range(6):
    channel.basic_publish(exchange='', routing_key='redelivery_queue', body=f"m{i}")

# A consumer takes all six, acks m0 and m1, nacks m2 back (requeue), and closes with m3..m5
# unacknowledged.
first = connect()
channel_one = first.channel()
got = take(channel_one, 'redelivery_queue', 6)
first_bodies = [body for _, body in got]
first_redelivered = [method.redelivered for method, _ in got]
channel_one.basic_ack(got[0][0].delivery_tag)
channel_one.basic_ack(got[1][0].delivery_tag)
channel_one.basic_nack(got[2][0].delivery_tag, requeue=True)
first.close()

second = connect()
channel_two = second.channel()
again = take(channel_two, 'redelivery_queue', 4)
second_bodies = [body for _, body in again]
second_redelivered = [method.redelivered for method, _ in again]
for method, _ in again:
    channel_two.basic_ack(method.delivery_tag)
channel_two.cancel()
left = channel_two.queue_declare(queue='redelivery_queue', passive=True).method.message_count

# Mandatory publish to an exchange with no binding: basic.return, then the confirm.
returned = []
channel.add_on_return_callback(lambda ch, method, props, body: returned.append(body.decode()))
channel.exchange_declare(exchange='nowhere', exchange_type='direct')
unroutable = None
try:
    channel.basic_publish(exchange='nowhere', routing_key='x', body='lost', mandatory=True)
except pika.exceptions.UnroutableError as error:
    unroutable = [message.body.decode() for message in error.messages]
setup.process_data_events(time_limit=0.2)

# A publish to a missing exchange closes the channel with 404.
closed = None
try:
    bad = setup.channel()
    bad.basic_publish(exchange='no_such_exchange', routing_key='x', body='x')
    bad.queue_declare(queue='redelivery_queue', passive=True)
except pika.exceptions.ChannelClosedByBroker as error:
    closed = error.reply_code
# Redeclaring with other properties: 406. A passive declare of a missing queue: 404.
codes = []
for kwargs in ({"queue": "redelivery_queue", "durable": True},
               {"queue": "no_such_queue", "passive": True}):
    try:
        setup.channel().queue_declare(**kwargs)
    except pika.exceptions.ChannelClosedByBroker as error:
        codes.append(error.reply_code)
second.close()
setup.close()
print(json.dumps({
    "first": first_bodies,
    "first_redelivered": first_redelivered,
    "second": second_bodies,
    "second_redelivered": second_redelivered,
    "left": left,
    "unroutable": unroutable,
    "missing_exchange_code": closed,
    "codes": codes,
}))
