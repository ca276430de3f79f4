"""A clean shutdown persists every ack the broker took in. Phases, run by tests/tests/amqp.rs
around broker restarts:

  ack:        durable queue `acked_then_stopped` gets COUNT messages, all acknowledged, then a
              synchronous round trip (so the broker has applied the acks) and a clean close;
              the test stops the broker with SIGTERM next.
  after_ack:  after the restart, nothing of `acked_then_stopped` is delivered again.

Prints a JSON summary."""
import json
import sys

import pika

URL, PHASE = sys.argv[1], sys.argv[2]
COUNT = int(sys.argv[3]) if len(sys.argv) > 3 else 0
BODY = b"x" * 200


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def publish(channel, queue, prefix, count):
    for i in range(count):
        channel.basic_publish(exchange="", routing_key=queue, body=f"{prefix}{i} ".encode() + BODY,
                              properties=pika.BasicProperties(delivery_mode=2))


def name_of(body):
    return body.split(b" ", 1)[0].decode()


def take_and_ack(channel, queue, count):
    """Consumes `count` messages, acknowledging each; answers their names."""
    names = []
    channel.basic_qos(prefetch_count=100)
    for method, _, body in channel.consume(queue, inactivity_timeout=5):
        if method is None:
            break
        names.append(name_of(body))
        channel.basic_ack(method.delivery_tag)
        if len(names) == count:
            break
    channel.cancel()
    return names


def ready(channel, queue):
    return channel.queue_declare(queue=queue, durable=True, passive=True).method.message_count


def get_all(channel, queue):
    """basic.get until empty, acknowledging: [(name, redelivered)]."""
    got = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=False)
        if method is None:
            return got
        got.append((name_of(body), method.redelivered))
        channel.basic_ack(method.delivery_tag)


def ack():
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue="acked_then_stopped", durable=True)
    publish(channel, "acked_then_stopped", "a", COUNT)
    acked = take_and_ack(connection.channel(), "acked_then_stopped", COUNT)
    # queue.declare is answered by the queue's owner after the acks sent before it.
    left = ready(channel, "acked_then_stopped")
    connection.close()
    return {"acked": len(acked), "left": left}


def after_ack():
    connection = connect()
    channel = connection.channel()
    left = ready(channel, "acked_then_stopped")
    again = get_all(channel, "acked_then_stopped")
    connection.close()
    return {"left": left, "again": again}


print(json.dumps({"ack": ack, "after_ack": after_ack}[PHASE]()))
