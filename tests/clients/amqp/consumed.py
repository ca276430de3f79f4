"""A queue is consumed, not retained; and a clean shutdown persists every ack the broker took in.
Phases, run by tests/tests/amqp.rs around broker restarts:

  fill:       durable queues `consumed_q` and `held_q` get COUNT persistent messages each
              (publisher confirms). Every message of `consumed_q` is acknowledged. Of `held_q`,
              the first message (h0) is taken and never acknowledged (its channel closes, so it
              is ready again), every other one is acknowledged.
  refill:     after a restart: `consumed_q` and `held_q` hold what they should (nothing acked
              comes back; h0 does, flagged redelivered), and `consumed_q` still takes and hands
              out new messages.
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


def fill():
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    for queue in ("consumed_q", "held_q"):
        channel.queue_declare(queue=queue, durable=True)
    publish(channel, "consumed_q", "c", COUNT)
    publish(channel, "held_q", "h", COUNT)
    consumed = take_and_ack(connection.channel(), "consumed_q", COUNT)
    holding = connection.channel()
    method, _, body = holding.basic_get("held_q", auto_ack=False)
    held_first = name_of(body) if method else None
    held_acked = take_and_ack(connection.channel(), "held_q", COUNT - 1)
    holding.close()
    left = {queue: ready(channel, queue) for queue in ("consumed_q", "held_q")}
    connection.close()
    return {"consumed": len(consumed), "in_order": consumed == [f"c{i}" for i in range(COUNT)],
            "held_first": held_first, "held_acked": len(held_acked), "left": left}


def refill():
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    left = {queue: ready(channel, queue) for queue in ("consumed_q", "held_q")}
    held = get_all(channel, "held_q")
    publish(channel, "consumed_q", "n", 3)
    # Names only: a restarted queue flags offsets up to its persisted delivery mark (ahead of
    # what was really delivered, state.rs DELIVERED_MARK_AHEAD) redelivered, new ones included.
    new = [name for name, _ in get_all(channel, "consumed_q")]
    left_after = {queue: ready(channel, queue) for queue in ("consumed_q", "held_q")}
    connection.close()
    return {"left": left, "held": held, "new": new, "left_after": left_after}


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


print(json.dumps({"fill": fill, "refill": refill, "ack": ack, "after_ack": after_ack}[PHASE]()))
