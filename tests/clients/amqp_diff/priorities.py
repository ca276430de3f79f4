"""Priority queues (x-max-priority) and consumer priorities (x-priority): ready messages go out
highest priority first and in publish order within a priority (none counts as 0, above the
maximum as the maximum), requeued ones keep their place, TTL expires each priority's head, a full
drop-head queue drops from RabbitMQ's end, and deliveries go to the highest-priority consumer with
prefetch room; the arguments' validation (reply codes) is RabbitMQ's."""

import time

import pika

from common import Scenario, attempt, bodies, get_all, publish, settle, settled_count, x_death


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    outcome = {
        "order": order(s, channel),
        "requeue": requeue(s, connection, channel),
        "ttl": ttl(s, channel),
        "max_length": max_length(s, channel),
        "dead_letter": dead_letter(s, channel),
        "max_priority_arguments": max_priority_arguments(s, connection),
        "consumer_priorities": consumer_priorities(s, channel),
        "consumer_priority_arguments": consumer_priority_arguments(s, connection, channel),
    }
    s.finish(outcome)


def send(channel, queue, body, level, expiration=None):
    properties = pika.BasicProperties(priority=level, expiration=expiration)
    publish(channel, queue, body, properties=properties)


def order(s, channel):
    """Priorities 0..9 (shuffled), none and 12 (above the maximum) to a queue nobody consumes,
    then a consumer: every message in priority order, publish order within a priority."""
    q = s.queue("order")
    channel.queue_declare(q, arguments={"x-max-priority": 10})
    levels = [3, None, 9, 0, 12, 5, 1, 9, 7, 2, 4, 8, 6, 0, 10]
    for index, level in enumerate(levels):
        send(channel, q, f"p{level}-{index}", level)
    count = channel.queue_declare(q, passive=True).method.message_count
    consumer = s.connect()
    got = []
    consuming = consumer.channel()
    consuming.basic_qos(prefetch_count=100)
    consuming.basic_consume(q, lambda ch, m, p, b: got.append(b.decode()), auto_ack=True)
    settle(consumer, [got], minimum=len(levels))
    return {"count": count, "consumed": got}


def requeue(s, connection, channel):
    """Requeued messages go back to their place by priority and publish order, ahead of newer
    ones of the same priority, behind newer ones of a higher priority."""
    q = s.queue("requeue")
    channel.queue_declare(q, arguments={"x-max-priority": 5})
    for index, level in enumerate([1, 5, 1, 5, 3]):
        send(channel, q, f"p{level}-{index}", level)
    taker = connection.channel()
    taken = []
    for _ in range(3):
        method, _properties, body = taker.basic_get(q, auto_ack=False)
        taken.append([body.decode(), method.message_count])
    send(channel, q, "p5-late", 5)
    send(channel, q, "p3-late", 3)
    send(channel, q, "p1-late", 1)
    taker.basic_nack(multiple=True, requeue=True)
    settled_count(channel, q, 8)
    return {"taken": taken, "after": get_all(channel, q)}


def ttl(s, channel):
    """The head (the next message to deliver) expires: a short-TTL message of the highest priority
    published into an empty queue goes at its TTL although a live message of its priority is
    behind it; expired messages of lower priorities wait until they reach the head."""
    q = s.queue("ttl")
    channel.queue_declare(q, arguments={"x-max-priority": 5})
    send(channel, q, "p5-short", 5, expiration="50")
    send(channel, q, "p1-live", 1, expiration="60000")
    send(channel, q, "p1-expired-behind", 1, expiration="20")
    send(channel, q, "p3-expired", 3, expiration="20")
    send(channel, q, "p5-live", 5)
    time.sleep(0.3)
    levels = {"count_after_expiry": settled_count(channel, q, 4), "get": bodies(channel, q)}
    # RabbitMQ arms its expiry timer only for a message published into an empty queue, and
    # delivers this one expired (KNOWN_DIFFERENCES); Weir's timer follows the head.
    unarmed = s.queue("ttl-unarmed")
    channel.queue_declare(unarmed, arguments={"x-max-priority": 5})
    send(channel, unarmed, "p1-live", 1, expiration="60000")
    send(channel, unarmed, "p5-expired-head", 5, expiration="20")
    time.sleep(0.3)
    return {"levels": levels, "expired_head": bodies(channel, unarmed)}


def max_length(s, channel):
    """A full drop-head priority queue drops the oldest message of the ... priority RabbitMQ
    drops from, dead-lettered with reason maxlen; reject-publish refuses the new one."""
    dlx, dead = s.exchange("dlx"), s.queue("dead")
    channel.exchange_declare(dlx, "fanout")
    channel.queue_declare(dead)
    channel.queue_bind(dead, dlx)
    q = s.queue("max-length")
    channel.queue_declare(q, arguments={"x-max-priority": 5, "x-max-length": 3,
                                        "x-dead-letter-exchange": dlx})
    for index, level in enumerate([1, 5, 3, 5, 1, 0]):
        send(channel, q, f"p{level}-{index}", level)
    kept = get_all(channel, q)
    dropped = []
    for _ in range(settled_count(channel, dead, 3)):
        _method, properties, body = channel.basic_get(dead, auto_ack=True)
        dropped.append([body.decode(), x_death(properties)["x-death"][0]["reason"]])
    return {"kept": kept, "dropped": dropped}


def dead_letter(s, channel):
    """A message dead-lettered into a priority queue keeps its priority there."""
    source, target = s.queue("dl-source"), s.queue("dl-target")
    channel.queue_declare(target, arguments={"x-max-priority": 5})
    channel.queue_declare(source, arguments={"x-dead-letter-exchange": "",
                                             "x-dead-letter-routing-key": target})
    for index, level in enumerate([1, 4, None, 4]):
        send(channel, source, f"p{level}-{index}", level)
    for _ in range(4):
        method, _properties, _body = channel.basic_get(source, auto_ack=False)
        channel.basic_reject(method.delivery_tag, requeue=False)
    settled_count(channel, target, 4)
    return get_all(channel, target)


def max_priority_arguments(s, connection):
    cases = {
        "zero": 0,
        "one": 1,
        "max": 255,
        "above_max": 256,
        "negative": -1,
        "text": "ten",
        "boolean": True,
    }
    return {case: attempt(lambda: connection.channel().queue_declare(
        s.queue(f"max-priority-{case}"), arguments={"x-max-priority": value}))
        for case, value in cases.items()}


def consumer_priorities(s, channel):
    """Two consumers with prefetch 1: the high-priority one gets every delivery while it has room,
    the low one only what arrives while the high one is full; equal priorities share in turn."""
    q = s.queue("consumers")
    channel.queue_declare(q)
    consumer = s.connect()
    high, low, negative = [], [], []

    def consume(into, priority, ack):
        ch = consumer.channel()
        ch.basic_qos(prefetch_count=1)

        def on_message(ch, method, _properties, body):
            into.append(body.decode())
            if ack:
                ch.basic_ack(method.delivery_tag)

        arguments = None if priority is None else {"x-priority": priority}
        ch.basic_consume(q, on_message, arguments=arguments)

    consume(low, None, ack=False)
    consume(negative, -5, ack=False)
    consume(high, 10, ack=True)
    # The consumers' callbacks (and so the high one's acks) run only in settle() below: when the
    # messages arrive the high consumer holds one, the default one the next, the -5 one the third.
    for index in range(6):
        publish(channel, q, f"m{index}")
    settle(consumer, [high, low, negative], minimum=6)
    return {"high": high, "default": low, "negative": negative}


def consumer_priority_arguments(s, connection, channel):
    q = s.queue("consumer-arguments")
    channel.queue_declare(q)
    cases = {"text": "high", "integer": 3, "negative": -3, "long": 2**40}
    return {case: attempt(lambda: connection.channel().basic_consume(
        q, lambda *a: None, arguments={"x-priority": value}))
        for case, value in cases.items()}


if __name__ == "__main__":
    main()
