"""x-delivery-limit on a quorum queue: a message requeued past its limit is dead-lettered with
reason "delivery_limit" (x-death as RabbitMQ writes it), or dropped without a DLX; the messages
within their limit stay and are redelivered flagged. RabbitMQ also sets an x-delivery-count
header on every redelivery from a quorum queue; it is compared too."""

from common import Scenario, publish, x_death, settled_count


def delivery(method, properties, body):
    headers = properties.headers or {}
    return {"body": body, "redelivered": method.redelivered}, headers.get("x-delivery-count")


def requeue_all(channel, queue, expected):
    """basic.get then nack-requeue each message, one round per entry of `expected` (the count
    RabbitMQ settles at before that round: its requeues land asynchronously, so the current
    count right after a nack can be 0); what each round saw."""
    rounds, counts = [], []
    for count in expected:
        seen = []
        for _ in range(settled_count(channel, queue, count)):
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            seen_delivery, count = delivery(method, properties, body)
            seen.append(seen_delivery)
            counts.append(count)
            channel.basic_nack(method.delivery_tag, requeue=True)
        rounds.append(seen)
    return rounds, counts


def main():
    s = Scenario()
    channel = s.channel()
    channel.confirm_delivery()
    dlx, dead = s.exchange("dlx"), s.queue("dead")
    channel.exchange_declare(dlx, "fanout")
    channel.queue_declare(dead, durable=True)
    channel.queue_bind(dead, dlx)
    limited, dropped = s.queue("limited"), s.queue("dropped")
    quorum = {"x-queue-type": "quorum", "x-delivery-limit": 2}
    channel.queue_declare(limited, durable=True, arguments={**quorum, "x-dead-letter-exchange": dlx})
    channel.queue_declare(dropped, durable=True, arguments=quorum)
    outcome = {}

    publish(channel, limited, "a")
    publish(channel, dropped, "b")
    # Delivered three times (the first and two redeliveries), then dead-lettered or dropped.
    rounds = [1, 1, 1, 0]
    outcome["limited_rounds"], limited_counts = requeue_all(channel, limited, rounds)
    outcome["dropped_rounds"], dropped_counts = requeue_all(channel, dropped, rounds)
    outcome["x_delivery_count_headers"] = {"limited": limited_counts, "dropped": dropped_counts}
    outcome["limited_left"] = settled_count(channel, limited, 0)
    outcome["dropped_left"] = settled_count(channel, dropped, 0)
    deaths = []
    for _ in range(settled_count(channel, dead, 1)):
        method, properties, body = channel.basic_get(dead, auto_ack=True)
        deaths.append({"body": body, "routing_key": method.routing_key, "x_death": x_death(properties)})
    outcome["dead"] = deaths
    s.finish(outcome)


if __name__ == "__main__":
    main()
