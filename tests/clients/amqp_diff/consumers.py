"""Consumers (a reused consumer tag is in raw_errors.py: pika refuses to send one): deliveries in publish order with increasing delivery tags, an exclusive consumer locks others out (403 ACCESS_REFUSED), cancel stops deliveries, and a queue
declared with an empty name gets a server name (`amq.gen-…`)."""

from common import Scenario, attempt, publish, wait_for, message_count


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    q = s.queue("q")
    channel.queue_declare(q)
    outcome = {}

    delivered = []
    consumer = connection.channel()
    tag = consumer.basic_consume(q, lambda ch, m, p, b: delivered.append([m.delivery_tag, b.decode(), m.redelivered]), auto_ack=True)
    for i in range(5):
        publish(channel, q, f"m{i}")
    wait_for(lambda: connection.process_data_events(0.05) or len(delivered) == 5, "5 deliveries")
    outcome["delivered"] = delivered
    consumer.basic_cancel(tag)
    publish(channel, q, "after-cancel")
    connection.process_data_events(time_limit=0.3)
    outcome["after_cancel"] = [len(delivered), message_count(channel, q)]

    owner = connection.channel()
    owner.basic_consume(q, lambda *a: None, exclusive=True, consumer_tag="owner")
    other = connection.channel()
    outcome["second_on_exclusive"] = attempt(lambda: other.basic_consume(q, lambda *a: None))
    owner.basic_cancel("owner")
    exclusive_again = connection.channel()
    exclusive_again.basic_consume(q, lambda *a: None, consumer_tag="first")
    blocked = connection.channel()
    outcome["exclusive_on_busy"] = attempt(lambda: blocked.basic_consume(q, lambda *a: None, exclusive=True))

    fresh = s.channel()
    declared = fresh.queue_declare("", exclusive=True)
    outcome["server_named_queue"] = [declared.method.queue.split("-")[0] + "-", declared.method.message_count]
    s.finish(outcome)


if __name__ == "__main__":
    main()
