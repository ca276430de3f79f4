"""The delayed-retry pattern: a message parked in a queue nobody reads, with a TTL and a DLX
back to the work queue, comes back by itself once its TTL passes (the broker's own timer: no
client touches the parking queue), with x-death reason "expired" and the parking queue's name;
a per-message expiration in the parking queue works the same way, and a second trip counts."""

import time

from common import Scenario, publish, x_death, wait_for
import pika


def main():
    s = Scenario()
    channel = s.channel()
    channel.confirm_delivery()
    work, parking, parked_by_message = s.queue("work"), s.queue("parking"), s.queue("parking-msg")
    channel.queue_declare(work)
    back = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": work}
    channel.queue_declare(parking, arguments={**back, "x-message-ttl": 300})
    channel.queue_declare(parked_by_message, arguments=back)
    outcome = {}

    got = []
    consumer = s.channel()
    consumer.basic_consume(work, lambda ch, m, p, b: got.append((m, p, b)), auto_ack=True)
    start = time.monotonic()
    publish(channel, parking, "retry-1")
    publish(channel, parked_by_message, "retry-2", properties=pika.BasicProperties(expiration="300"))
    wait_for(lambda: consumer.connection.process_data_events(0.05) or len(got) >= 2, "two retries")
    elapsed = time.monotonic() - start
    # Not a timing test: only that it waited for the TTL at all and came back within the deadline.
    outcome["waited_for_ttl"] = elapsed >= 0.25
    first = sorted(({"body": b, "routing_key": m.routing_key, "x_death": x_death(p)} for m, p, b in got),
                   key=lambda d: d["body"])
    outcome["first_trip"] = first
    # The second trip: park the first one again with its headers, as a retry library does.
    _m, properties, body = next(entry for entry in got if entry[2] == b"retry-1")
    got.clear()
    publish(channel, parking, body.decode(), properties=pika.BasicProperties(headers=properties.headers))
    wait_for(lambda: consumer.connection.process_data_events(0.05) or got, "second trip")
    outcome["second_trip"] = [{"body": b, "x_death": x_death(p)} for _m, p, b in got]
    s.finish(outcome)


if __name__ == "__main__":
    main()
