"""basic.qos global=true (RabbitMQ 3.3+ per_consumer_qos): one limit shared by every consumer of
the channel, across queues; global=false limits each consumer started afterwards; both together
need room under both. Which queue a freed credit goes to is the broker's choice, so only totals
and per-consumer maxima are compared."""

import time

from common import Scenario, publish, settle, message_count


def consume(channel, queue, auto_ack=False):
    delivered = []
    channel.basic_consume(queue, lambda ch, m, p, b: delivered.append((m.delivery_tag, b.decode())), auto_ack=auto_ack)
    return delivered


def fill(s, channel, short, count):
    queue = s.queue(short)
    channel.queue_declare(queue)
    for i in range(count):
        publish(channel, queue, f"{short}-{i}")
    return queue


def ready(channel, queues):
    return sum(message_count(channel, queue) for queue in queues)


def global_only(s, connection, channel):
    """Global 3, two consumers on two queues of 10: 3 in total; one ack lets one more through;
    a basic.get is not limited and not counted; the channel's close gives everything back."""
    queues = [fill(s, channel, "a1", 10), fill(s, channel, "a2", 10)]
    limited = connection.channel()
    limited.basic_qos(prefetch_count=3, global_qos=True)
    lists = [consume(limited, queues[0]), consume(limited, queues[1])]
    settle(connection, lists, minimum=3)
    outcome = {"held": sum(map(len, lists)), "ready_while_held": ready(channel, queues)}
    first = next(items for items in lists if items)
    limited.basic_ack(first[0][0])
    settle(connection, lists, minimum=4)
    outcome["after_one_ack"] = sum(map(len, lists))
    method, _properties, _body = limited.basic_get(queues[0])
    outcome["get_at_limit"] = method is not None
    limited.basic_ack(method.delivery_tag)
    settle(connection, lists, minimum=4)
    outcome["after_get_ack"] = sum(map(len, lists))
    # Ack everything delivered: three more come, no more.
    last = max((items[-1][0] for items in lists if items))
    limited.basic_ack(last, multiple=True)
    settle(connection, lists, minimum=7)
    outcome["after_ack_all"] = sum(map(len, lists))
    limited.close()
    outcome["ready_after_close"] = settled_ready(channel, queues, 20 - 5)
    return outcome


def settled_ready(channel, queues, expected):
    """Requeues on close are asynchronous in RabbitMQ: wait for the count, report what it is."""
    end = time.monotonic() + 10
    while ready(channel, queues) != expected and time.monotonic() < end:
        time.sleep(0.02)
    return ready(channel, queues)


def combined(s, connection, channel):
    """Per-consumer 2, then global 5: three consumers (two on one queue) hold 2, 2 and 1; an ack
    lets exactly one more through. Global 5 then per-consumer 2: RabbitMQ 3.10's global=false
    lifts the global limit, so each of the three holds 2."""
    outcome = {}
    for order in ["consumer_first", "global_first"]:
        queues = [fill(s, channel, f"{order}1", 10), fill(s, channel, f"{order}2", 10)]
        both = connection.channel()
        limits = [(2, False), (5, True)]
        for prefetch, is_global in limits if order == "consumer_first" else reversed(limits):
            both.basic_qos(prefetch_count=prefetch, global_qos=is_global)
        lists = [consume(both, queues[0]), consume(both, queues[1]), consume(both, queues[0])]
        settle(connection, lists, minimum=5)
        result = {"held": sorted(map(len, lists))}
        full = next(items for items in lists if len(items) == 2)
        both.basic_ack(full[0][0])
        settle(connection, lists, minimum=6)
        result["after_one_ack"] = sum(map(len, lists))
        both.close()
        outcome[order] = result
    return outcome


def changed_later(s, connection, channel):
    """A global limit set after the consumer started applies to it, counting what it holds
    unacknowledged; global 0 lifts it."""
    queue = fill(s, channel, "c1", 10)
    later = connection.channel()
    later.basic_qos(prefetch_count=2, global_qos=False)
    held = consume(later, queue)
    settle(connection, [held], minimum=2)
    later.basic_qos(prefetch_count=1, global_qos=True)
    later.basic_ack(held[0][0])
    settle(connection, [held], minimum=2)
    outcome = {"after_first_ack": len(held)}
    later.basic_ack(held[1][0])
    settle(connection, [held], minimum=3)
    outcome["after_second_ack"] = len(held)
    later.basic_qos(prefetch_count=0, global_qos=True)
    settle(connection, [held], minimum=4)
    outcome["after_unlimit"] = len(held)
    later.close()
    return outcome


def no_ack_consumer(s, connection, channel):
    """A no-ack consumer on a channel at its global limit waits; once acks free the channel, it
    takes everything (its deliveries do not count against the limit)."""
    queues = [fill(s, channel, "d1", 2), fill(s, channel, "d2", 6)]
    mixed = connection.channel()
    mixed.basic_qos(prefetch_count=2, global_qos=True)
    acked = consume(mixed, queues[0])
    settle(connection, [acked], minimum=2)
    free = consume(mixed, queues[1], auto_ack=True)
    settle(connection, [acked, free], minimum=2)
    outcome = {"no_ack_at_limit": len(free)}
    mixed.basic_ack(acked[-1][0], multiple=True)
    settle(connection, [acked, free], minimum=8)
    outcome["total_after_ack"] = len(acked) + len(free)
    mixed.close()
    return outcome


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    channel.confirm_delivery()  # every publish is in its queue when basic_publish returns
    outcome = {
        "global_only": global_only(s, connection, channel),
        "combined": combined(s, connection, channel),
        "changed_later": changed_later(s, connection, channel),
        "no_ack": no_ack_consumer(s, connection, channel),
    }
    s.finish(outcome)


if __name__ == "__main__":
    main()
