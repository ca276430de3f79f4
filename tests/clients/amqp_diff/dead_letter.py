"""Dead-lettering through x-dead-letter-exchange on reject/nack without requeue: the message
reaches the DLX's queue with RabbitMQ's x-death header (count, reason, queue, exchange,
routing-keys; time left out), an x-dead-letter-routing-key replaces the key, and a second death
of the same message increments the count of its x-death entry."""

from common import Scenario, publish, x_death, message_count, settled_count


def main():
    s = Scenario()
    channel = s.channel()
    channel.confirm_delivery()
    dlx = s.exchange("dlx")
    channel.exchange_declare(dlx, "direct")
    work, dead, rekeyed = s.queue("work"), s.queue("dead"), s.queue("rekeyed")
    channel.queue_declare(dead)
    channel.queue_bind(dead, dlx, work)
    channel.queue_declare(work, arguments={"x-dead-letter-exchange": dlx})
    channel.queue_declare(rekeyed, arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": work})
    outcome = {}

    publish(channel, work, "a")
    publish(channel, work, "b")
    publish(channel, rekeyed, "c")
    method, _p, _b = channel.basic_get(work, auto_ack=False)
    channel.basic_reject(method.delivery_tag, requeue=False)
    method, _p, _b = channel.basic_get(work, auto_ack=False)
    channel.basic_nack(method.delivery_tag, requeue=False)
    method, _p, _b = channel.basic_get(rekeyed, auto_ack=False)
    channel.basic_reject(method.delivery_tag, requeue=False)
    # Whatever arrived by the deadline: a broker without this feature shows as a difference.
    deaths = []
    for _ in range(settled_count(channel, dead, 3)):
        method, properties, body = channel.basic_get(dead, auto_ack=False)
        deaths.append({"body": body, "routing_key": method.routing_key, "redelivered": method.redelivered,
                       "x_death": x_death(properties), "exchange": method.exchange})
        # Back to work it goes (by the default exchange, keeping the headers) to die once more.
        publish(channel, work, body.decode(), properties=properties)
        channel.basic_ack(method.delivery_tag)
    # Dead letters from two queues race each other into the DLX's queue: compare them sorted.
    outcome["first_deaths"] = sorted(deaths, key=lambda death: death["body"])
    for _ in range(len(deaths)):
        method, _p, _b = channel.basic_get(work, auto_ack=False)
        channel.basic_reject(method.delivery_tag, requeue=False)
    again = []
    for _ in range(settled_count(channel, dead, len(deaths))):
        method, properties, body = channel.basic_get(dead, auto_ack=True)
        again.append({"body": body, "x_death": x_death(properties)})
    outcome["second_deaths"] = sorted(again, key=lambda death: death["body"])
    outcome["work_left"] = message_count(channel, work)
    s.finish(outcome)


if __name__ == "__main__":
    main()
