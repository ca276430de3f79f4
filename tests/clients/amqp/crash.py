"""SIGKILL around confirmed publishes and persisted acks, in two phases run by the test around
`Broker::kill9` + `start_again`.
  before: 200 persistent messages to a durable queue with publisher confirms (every publish
          confirmed: on the device); a consumer acks the first 50, waits for the ack store's group
          commit (2 ms; it waits 500 ms), then takes 20 more without acking and stays connected
          while the broker is killed.
  after:  every confirmed message not acknowledged is delivered (none lost), none of the 50
          acknowledged ones is (their acks were persisted), in publish order, flagged redelivered
          for those that had been delivered.
Prints a JSON summary."""
import json
import sys
import time

import pika

URL, PHASE = sys.argv[1], sys.argv[2]
COUNT, ACKED, HELD = 200, 50, 20


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def before():
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue='crash_queue', durable=True)
    confirmed = 0
    for i in range(COUNT):
        channel.basic_publish(exchange='', routing_key='crash_queue', body=f"c{i}",
                              properties=pika.BasicProperties(delivery_mode=2))
        confirmed += 1
    consuming = connection.channel()
    consuming.basic_qos(prefetch_count=ACKED + HELD)
    taken = []
    for method, _, body in consuming.consume('crash_queue', inactivity_timeout=1.0):
        if method is None:
            break
        taken.append(body.decode())
        if len(taken) <= ACKED:
            consuming.basic_ack(method.delivery_tag)
        if len(taken) == ACKED:
            time.sleep(0.5)
        if len(taken) == ACKED + HELD:
            break
    # Stay connected: the test kills the broker now.
    print(json.dumps({"confirmed": confirmed, "taken": len(taken)}), flush=True)
    time.sleep(30)


def after():
    connection = connect()
    channel = connection.channel()
    bodies, redelivered = [], []
    while True:
        method, _, body = channel.basic_get('crash_queue', auto_ack=True)
        if method is None:
            break
        bodies.append(body.decode())
        redelivered.append(method.redelivered)
    connection.close()
    expected = [f"c{i}" for i in range(ACKED, COUNT)]
    return {
        "lost": sorted(set(expected) - set(bodies)),
        "acked_again": [body for body in bodies if int(body[1:]) < ACKED],
        "in_order": bodies == sorted(bodies, key=lambda body: int(body[1:])),
        "count": len(bodies),
        "held_redelivered": all(redelivered[:HELD]),
    }


if PHASE == "before":
    before()
else:
    print(json.dumps(after()))
