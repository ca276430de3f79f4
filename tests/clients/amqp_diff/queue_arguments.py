"""Queue arguments beyond TTL and length: x-expires (an unused queue is deleted), single active
consumer (only the first consumer gets deliveries until it cancels), x-max-priority (higher
priority first), x-queue-type quorum (durable only), and invalid values refused with 406."""

import time

import pika

from common import Scenario, attempt, publish, settle


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    outcome = {"expires": expires(s, channel), "single_active": single_active(s, connection, channel)}

    outcome["priority"] = priority_order(s)

    quorum = s.queue("quorum")
    outcome["quorum_durable"] = attempt(lambda: connection.channel().queue_declare(
        quorum, durable=True, arguments={"x-queue-type": "quorum"}))
    outcome["quorum_transient"] = attempt(lambda: connection.channel().queue_declare(
        s.queue("quorum-transient"), arguments={"x-queue-type": "quorum"}))
    invalid = {
        "ttl_negative": {"x-message-ttl": -1},
        "ttl_text": {"x-message-ttl": "soon"},
        "max_length_negative": {"x-max-length": -1},
        "overflow_unknown": {"x-overflow": "explode"},
        "expires_zero": {"x-expires": 0},
        "queue_type_unknown": {"x-queue-type": "teapot"},
    }
    outcome["invalid"] = {case: attempt(lambda: connection.channel().queue_declare(
        s.queue(f"invalid-{case}"), arguments=arguments)) for case, arguments in invalid.items()}
    s.finish(outcome)


def priority_order(s):
    """Higher priority first, above x-max-priority counts as the maximum (more in
    priorities.py)."""
    channel = s.channel()
    channel.confirm_delivery()
    priority = s.queue("priority")
    declared = attempt(lambda: channel.queue_declare(priority, arguments={"x-max-priority": 5}))
    if declared != "ok":
        return declared
    for body, level in [("low", 1), ("none", None), ("high", 5), ("mid", 3), ("over", 9)]:
        publish(channel, priority, body, properties=pika.BasicProperties(priority=level))
    order = []
    for _ in range(5):
        _method, _properties, body = channel.basic_get(priority, auto_ack=True)
        order.append(body.decode())
    return order


def expires(s, channel):
    short, used = s.queue("expires"), s.queue("expires-used")
    channel.queue_declare(short, arguments={"x-expires": 300})
    channel.queue_declare(used, arguments={"x-expires": 60000})
    time.sleep(0.05)
    present = attempt(lambda: channel.connection.channel().queue_declare(short, passive=True))
    # Every declare, passive too, counts as use and restarts the expiry: look once, well after.
    time.sleep(1.5)
    gone = attempt(lambda: channel.connection.channel().queue_declare(short, passive=True))
    kept = attempt(lambda: channel.connection.channel().queue_declare(used, passive=True))
    return {"before": present, "after": gone, "long_expiry": kept}


def single_active(s, connection, channel):
    q = s.queue("single-active")
    channel.queue_declare(q, arguments={"x-single-active-consumer": True})
    first, second = connection.channel(), connection.channel()
    got_first, got_second = [], []
    first.basic_consume(q, lambda ch, m, p, b: (got_first.append(b.decode()), ch.basic_ack(m.delivery_tag)), consumer_tag="first")
    second.basic_consume(q, lambda ch, m, p, b: (got_second.append(b.decode()), ch.basic_ack(m.delivery_tag)), consumer_tag="second")
    for i in range(4):
        publish(channel, q, f"a{i}")
    settle(connection, [got_first, got_second], minimum=4)
    first.basic_cancel("first")
    for i in range(2):
        publish(channel, q, f"b{i}")
    settle(connection, [got_first, got_second], minimum=6)
    return {"first": got_first, "second": got_second}


if __name__ == "__main__":
    main()
