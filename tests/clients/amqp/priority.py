"""A durable priority queue across a broker restart or SIGKILL, in two phases run by the test.
  before: a durable queue with x-max-priority 10 gets 8 persistent messages of mixed priorities
          (publisher confirms: each on the device once acked); a client takes the first three in
          priority order, acks the first and leaves two unacked when its connection closes.
  after:  every unacknowledged message, in priority order (publish order within a priority),
          the two delivered before flagged redelivered and no other.
Prints a JSON summary."""
import json
import sys
import time

import pika

from drain import get_all

URL, PHASE = sys.argv[1], sys.argv[2]
QUEUE = 'priority_tasks'
ARGUMENTS = {'x-max-priority': 10}


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def before():
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue=QUEUE, durable=True, arguments=ARGUMENTS)
    for i, level in enumerate([1, 5, None, 9, 5, 0, 12, 3]):
        channel.basic_publish(exchange='', routing_key=QUEUE, body=f"p{level}-{i}",
                              properties=pika.BasicProperties(delivery_mode=2, priority=level))
    taker = connect()
    taking = taker.channel()
    taken = []
    for _ in range(3):
        method, _, body = taking.basic_get(QUEUE, auto_ack=False)
        taken.append(body.decode())
        if len(taken) == 1:
            taking.basic_ack(method.delivery_tag)
    taker.close()
    # The ack and the delivery counts travel to the queue's shard and into its ack store's next
    # group commit (2 ms).
    time.sleep(0.5)
    connection.close()
    return {"taken": taken}


def after():
    connection = connect()
    channel = connection.channel()
    declared = channel.queue_declare(queue=QUEUE, durable=True, arguments=ARGUMENTS, passive=True)
    bodies, redelivered = get_all(channel, QUEUE)
    connection.close()
    return {"count": declared.method.message_count, "bodies": bodies, "redelivered": redelivered}


print(json.dumps(before() if PHASE == "before" else after()))
