"""Durability across a broker restart, in two phases run by the test around `Broker::restart`.
  before: a durable queue gets 10 persistent messages (publisher confirms: each acked once on
          the device), a consumer acks m0..m3 and leaves m4 unacked when its connection closes;
          a non-durable queue gets one message.
  after:  the durable queue is still there (passive declare) with its unacknowledged messages,
          flagged redelivered; the non-durable queue is gone (404).
Prints a JSON summary."""
import json
import sys
import time

import pika

from drain import get_all

URL, PHASE = sys.argv[1], sys.argv[2]


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def before():
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue='durable_tasks', durable=True)
    channel.queue_declare(queue='transient_tasks')
    for i in range(10):
        channel.basic_publish(exchange='', routing_key='durable_tasks', body=f"m{i}",
                              properties=pika.BasicProperties(delivery_mode=2))
    channel.basic_publish(exchange='', routing_key='transient_tasks', body='gone')
    consumer = connect()
    consuming = consumer.channel()
    consuming.basic_qos(prefetch_count=5)
    taken = []
    for method, _, body in consuming.consume('durable_tasks', inactivity_timeout=0.5):
        if method is None:
            break
        taken.append(body.decode())
        if len(taken) <= 4:
            consuming.basic_ack(method.delivery_tag)
        if len(taken) == 5:
            break
    consumer.close()
    # The acks travel to the queue's shard and into its ack store's next group commit.
    time.sleep(0.5)
    connection.close()
    return {"taken": taken}


def after():
    connection = connect()
    channel = connection.channel()
    count = channel.queue_declare(queue='durable_tasks', durable=True, passive=True).method.message_count
    bodies, redelivered = get_all(channel, 'durable_tasks')
    transient = None
    try:
        connection.channel().queue_declare(queue='transient_tasks', passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        transient = error.reply_code
    connection.close()
    return {"count": count, "bodies": bodies, "redelivered": redelivered, "transient": transient}


print(json.dumps(before() if PHASE == "before" else after()))
