"""Declare errors and their reply codes: 404 passive/bind on what is missing, 406 redeclare with
other arguments or another type, 403 reserved amq.* names, 405 another connection's exclusive
queue, 406 an ack of an unknown delivery tag, 404 publish to a missing exchange, 503 an unknown
exchange type; a queue with an exchange's name (allowed by RabbitMQ) and names outside Kafka's
topic rule, each used end to end."""

from common import Scenario, attempt, bodies, publish, settled_count


def main():
    s = Scenario()
    connection = s.connect()
    q = s.queue("q")
    ex = s.exchange("ex")
    setup = connection.channel()
    setup.queue_declare(q, arguments={"x-message-ttl": 60000})
    setup.exchange_declare(ex, "direct")
    missing_q, missing_ex = s.name("missing-q"), s.name("missing-ex")
    cases = {
        "passive_missing_queue": lambda ch: ch.queue_declare(missing_q, passive=True),
        "passive_missing_exchange": lambda ch: ch.exchange_declare(missing_ex, passive=True),
        "bind_missing_exchange": lambda ch: ch.queue_bind(q, missing_ex, "k"),
        "bind_missing_queue": lambda ch: ch.queue_bind(missing_q, ex, "k"),
        "delete_missing_queue": lambda ch: ch.queue_delete(missing_q),
        "purge_missing_queue": lambda ch: ch.queue_purge(missing_q),
        "consume_missing_queue": lambda ch: ch.basic_consume(missing_q, lambda *a: None),
        "get_missing_queue": lambda ch: ch.basic_get(missing_q),
        "redeclare_other_ttl": lambda ch: ch.queue_declare(q, arguments={"x-message-ttl": 1000}),
        "redeclare_no_args": lambda ch: ch.queue_declare(q),
        "redeclare_durable": lambda ch: ch.queue_declare(q, durable=True, arguments={"x-message-ttl": 60000}),
        "redeclare_same": lambda ch: ch.queue_declare(q, arguments={"x-message-ttl": 60000}),
        "exchange_other_type": lambda ch: ch.exchange_declare(ex, "fanout"),
        "exchange_same_type": lambda ch: ch.exchange_declare(ex, "direct"),
        "exchange_reserved_name": lambda ch: ch.exchange_declare("amq.weirtest", "direct"),
        "queue_reserved_name": lambda ch: ch.queue_declare("amq.weirtest"),
        "delete_amq_direct": lambda ch: ch.exchange_delete("amq.direct"),
        "passive_amq_topic": lambda ch: ch.exchange_declare("amq.topic", passive=True),
        "unknown_exchange_type": lambda ch: ch.exchange_declare(s.name("bad-type"), "no-such-type"),
        "ack_unknown_tag": ack_unknown_tag,
        "publish_missing_exchange": lambda ch: publish_and_sync(ch, missing_ex),
    }
    outcome = {}
    for case, action in cases.items():
        # A connection-level error (503 for an unknown exchange type) ends the connection.
        if not connection.is_open:
            connection = s.connect()
        channel = connection.channel()
        outcome[case] = attempt(lambda: action(channel))
        if channel.is_open:
            channel.close()
    same_name = s.name("shared-name")
    s.exchanges.append(same_name)
    s.channel().exchange_declare(same_name, "direct")
    outcome["queue_named_like_exchange"] = attempt(lambda: s.channel().queue_declare(s.queue("shared-name")))
    outcome["shared_name_round_trip"] = shared_name_round_trip(s, same_name)
    outcome["odd_names"] = odd_names(s)
    outcome["exclusive"] = exclusive_from_another_connection(s)
    s.finish(outcome)


def shared_name_round_trip(s, name):
    """A queue and an exchange of one name (Celery declares both as `celery`): bind the queue to
    the exchange, publish through the exchange and through the default exchange."""
    channel = s.channel()
    channel.queue_bind(name, name, "k")
    publish(channel, "k", "via-exchange", exchange=name)
    publish(channel, name, "via-default")
    declared = channel.queue_declare(name, passive=True).method.queue
    settled_count(channel, name, 2)
    return {"declared": declared, "bodies": sorted(bodies(channel, name))}


def odd_names(s):
    """Names outside Kafka's topic rule (Celery's `worker@host.celery.pidbox`)."""
    channel = s.channel()
    queue, exchange = s.queue("worker@host/é ü"), s.exchange("pid@box")
    declared = channel.queue_declare(queue).method.queue
    channel.exchange_declare(exchange, "fanout")
    channel.queue_bind(queue, exchange, "")
    publish(channel, "any", "fanned", exchange=exchange)
    settled_count(channel, queue, 1)
    return {"declared": declared, "bodies": bodies(channel, queue)}


def ack_unknown_tag(channel):
    channel.basic_ack(delivery_tag=99)
    channel.basic_qos(prefetch_count=1)  # a synchronous round trip that sees the close


def publish_and_sync(channel, exchange):
    publish(channel, "k", "x", exchange=exchange)
    channel.basic_qos(prefetch_count=1)


def exclusive_from_another_connection(s):
    owner = s.channel()
    q = s.queue("exclusive")
    owner.queue_declare(q, exclusive=True)
    other = s.connect()
    outcome = {}
    for case, action in {
        "passive": lambda ch: ch.queue_declare(q, passive=True),
        "declare": lambda ch: ch.queue_declare(q, exclusive=True),
        "consume": lambda ch: ch.basic_consume(q, lambda *a: None),
        "get": lambda ch: ch.basic_get(q),
        "bind": lambda ch: ch.queue_bind(q, "amq.direct", "k"),
        "purge": lambda ch: ch.queue_purge(q),
        "delete": lambda ch: ch.queue_delete(q),
    }.items():
        channel = other.channel()
        outcome[case] = attempt(lambda: action(channel))
    # attempt: a broker that let the other connection delete the queue answers 404 here.
    outcome["owner_passive"] = attempt(lambda: owner.queue_declare(q, passive=True))
    owner.connection.close()
    channel = other.channel()
    outcome["after_owner_closed"] = attempt(lambda: channel.queue_declare(q, passive=True))
    return outcome


if __name__ == "__main__":
    main()
