"""basic.reject and basic.nack, with and without requeue, single and multiple: requeued messages
come back flagged redelivered, in their original order; the others are gone (no DLX here)."""

from common import Scenario, get_all, publish, settled_count


def take(channel, queue, count):
    taken = []
    for _ in range(count):
        method, _props, body = channel.basic_get(queue, auto_ack=False)
        taken.append((method.delivery_tag, body.decode()))
    return taken


def main():
    s = Scenario()
    q = s.queue("q")
    channel = s.channel()
    channel.queue_declare(q)
    channel.confirm_delivery()
    outcome = {}

    for i in range(6):
        publish(channel, q, f"m{i}")
    worker = channel.connection.channel()
    taken = take(worker, q, 6)
    worker.basic_reject(taken[1][0], requeue=True)
    worker.basic_reject(taken[0][0], requeue=False)
    worker.basic_nack(taken[3][0], multiple=True, requeue=True)  # m2, m3 back
    worker.basic_nack(taken[5][0], multiple=True, requeue=False)  # m4, m5 dropped
    outcome["count_after"] = settled_count(channel, q, 3)
    outcome["requeued"] = get_all(channel, q)

    # Requeued messages go back before the ones never delivered (RabbitMQ puts them at the head).
    for i in range(3):
        publish(channel, q, f"n{i}")
    taken = take(worker, q, 1)
    worker.basic_nack(taken[0][0], requeue=True)
    outcome["requeue_goes_to_head"] = get_all(channel, q)

    # nack multiple with delivery tag 0 = every unacked delivery of the channel.
    for i in range(3):
        publish(channel, q, f"z{i}")
    take(worker, q, 3)
    worker.basic_nack(0, multiple=True, requeue=True)
    outcome["nack_all_tag_0"] = get_all(channel, q)
    s.finish(outcome)


if __name__ == "__main__":
    main()
