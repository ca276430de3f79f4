"""Message TTL: per-queue x-message-ttl and per-message expiration; expired messages are never
delivered, are dead-lettered with reason "expired" (and the expiration property removed),
x-message-ttl 0 delivers only to a waiting consumer, and unexpired messages stay."""

import time

from common import Scenario, get_all, publish, x_death, wait_for, settled_count
import pika


def main():
    s = Scenario()
    channel = s.channel()
    channel.confirm_delivery()
    dlx, dead = s.exchange("dlx"), s.queue("dead")
    channel.exchange_declare(dlx, "fanout")
    channel.queue_declare(dead)
    channel.queue_bind(dead, dlx)
    queue_ttl, message_ttl, zero_ttl = s.queue("queue-ttl"), s.queue("message-ttl"), s.queue("zero-ttl")
    channel.queue_declare(queue_ttl, arguments={"x-message-ttl": 200, "x-dead-letter-exchange": dlx})
    channel.queue_declare(message_ttl, arguments={"x-dead-letter-exchange": dlx})
    channel.queue_declare(zero_ttl, arguments={"x-message-ttl": 0})
    outcome = {}

    publish(channel, queue_ttl, "q1")
    publish(channel, queue_ttl, "q2")
    publish(channel, message_ttl, "short", properties=pika.BasicProperties(expiration="200"))
    publish(channel, message_ttl, "short2", properties=pika.BasicProperties(expiration="200"))
    publish(channel, zero_ttl, "nobody-waits")
    time.sleep(0.6)
    publish(channel, message_ttl, "long", properties=pika.BasicProperties(expiration="60000"))
    publish(channel, queue_ttl, "fresh")
    outcome["queue_ttl_get"] = [body for body, _r, _c in get_all(channel, queue_ttl)]
    outcome["message_ttl_get"] = [body for body, _r, _c in get_all(channel, message_ttl)]
    outcome["zero_ttl_get"] = get_all(channel, zero_ttl)
    # Whatever arrived by the deadline: a broker without this feature shows as a difference.
    deaths = []
    for _ in range(settled_count(channel, dead, 4)):
        method, properties, body = channel.basic_get(dead, auto_ack=True)
        deaths.append({"body": body, "routing_key": method.routing_key, "expiration": properties.expiration,
                       "x_death": x_death(properties)})
    # per-queue and per-message expiries happen in two queues at once: compare sorted.
    outcome["dead"] = sorted(deaths, key=lambda death: death["body"])

    # x-message-ttl 0: a waiting consumer still gets the message.
    consumer = channel.connection.channel()
    got = []
    consumer.basic_consume(zero_ttl, lambda ch, m, p, b: got.append(b.decode()), auto_ack=True)
    publish(channel, zero_ttl, "someone-waits")
    wait_for(lambda: channel.connection.process_data_events(0.05) or got, "delivery at ttl 0")
    outcome["zero_ttl_consumed"] = got
    s.finish(outcome)


if __name__ == "__main__":
    main()
