"""Prefetch: a consumer with basic.qos(prefetch_count=N) holds at most N unacked deliveries; each
ack releases one more; a second consumer on the queue gets the rest round-robin; prefetch 0 is
unlimited; no-ack consumers ignore prefetch; global and per-consumer limits on one channel."""

from common import Scenario, publish, settle, wait_for, message_count


def consume(channel, queue, auto_ack=False):
    delivered = []
    channel.basic_consume(queue, lambda ch, m, p, b: delivered.append((m.delivery_tag, b.decode())), auto_ack=auto_ack)
    return delivered


def main():
    s = Scenario()
    q = s.queue("q")
    connection = s.connect()
    channel = connection.channel()
    channel.queue_declare(q)
    channel.confirm_delivery()  # every publish is in the queue when basic_publish returns
    for i in range(10):
        publish(channel, q, f"m{i}")
    outcome = {}

    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=3)
    delivered = consume(consumer, q)
    settle(connection, [delivered])
    outcome["held_with_prefetch_3"] = [body for _tag, body in delivered]
    outcome["ready_while_held"] = message_count(channel, q)
    consumer.basic_ack(delivered[0][0])
    settle(connection, [delivered], minimum=4)
    outcome["after_one_ack"] = [body for _tag, body in delivered]
    consumer.basic_ack(delivered[-1][0], multiple=True)
    settle(connection, [delivered], minimum=5)
    outcome["after_multiple_ack"] = [body for _tag, body in delivered]

    # Unlimited prefetch on another channel takes everything that is left.
    greedy = connection.channel()
    greedy.basic_qos(prefetch_count=0)
    taken = consume(greedy, q)
    settle(connection, [taken])
    outcome["unlimited_took"] = len(taken)
    outcome["held_after_unlimited"] = len(delivered)
    consumer.close()
    greedy.close()
    # 4 acked; the 6 still unacked go back when their channels close.
    wait_for(lambda: message_count(channel, q) == 6, "6 unacked messages back in the queue")

    # Round-robin between two prefetch-1 consumers.
    first, second = connection.channel(), connection.channel()
    first.basic_qos(prefetch_count=1)
    second.basic_qos(prefetch_count=1)
    got_first, got_second = consume(first, q), consume(second, q)
    settle(connection, [got_first, got_second], minimum=2)
    outcome["round_robin_held"] = [len(got_first), len(got_second)]
    first.close()
    second.close()

    # A no-ack consumer is not limited by prefetch.
    free = connection.channel()
    free.basic_qos(prefetch_count=1)
    all_of_them = consume(free, q, auto_ack=True)
    settle(connection, [all_of_them])
    outcome["no_ack_took"] = len(all_of_them)
    outcome["left"] = message_count(channel, q)
    outcome["global"] = global_qos(s, connection, channel)
    s.finish(outcome)


def global_qos(s, connection, channel):
    """RabbitMQ's per_consumer_qos: global=True limits the whole channel, global=False each
    consumer; both together apply both limits."""
    queues = [s.queue("g1"), s.queue("g2")]
    for queue in queues:
        channel.queue_declare(queue)
        for i in range(5):
            publish(channel, queue, f"{queue[-2:]}-{i}")
    shared = connection.channel()
    shared.basic_qos(prefetch_count=3, global_qos=True)
    shared.basic_qos(prefetch_count=1, global_qos=False)
    first, second = consume(shared, queues[0]), consume(shared, queues[1])
    settle(connection, [first, second], minimum=2)
    per_consumer = [len(first), len(second)]
    shared.close()
    only_global = connection.channel()
    only_global.basic_qos(prefetch_count=3, global_qos=True)
    first, second = consume(only_global, queues[0]), consume(only_global, queues[1])
    settle(connection, [first, second], minimum=3)
    return {"global_3_consumer_1": per_consumer, "global_3_total": len(first) + len(second)}


if __name__ == "__main__":
    main()
