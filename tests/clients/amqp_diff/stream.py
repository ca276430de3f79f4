"""Stream queues (x-queue-type=stream): declare refusals (non-durable, exclusive, auto-delete, the
classic queues' arguments, bad retention arguments) and redeclaration, consumers starting at
x-stream-offset first / last / next / a numeric offset / a timestamp / an interval, the
x-stream-offset header on every delivery, prefetch credit returned by acks, two consumers each
getting every message, messages kept after they were acknowledged, declare-ok and delete-ok counts,
and what a stream refuses: a consumer without basic.qos, an automatic-ack consumer, basic.get,
queue.purge, nack, reject and recover."""

import datetime

import pika

from common import Scenario, attempt, publish, settle

STREAM = {"x-queue-type": "stream"}


def main():
    s = Scenario()
    connection = s.connect()
    outcome = {"declare": declare_errors(s, connection)}
    channel = connection.channel()
    channel.confirm_delivery()
    q = s.queue("s")
    outcome["declare_ok"] = counts(channel.queue_declare(q, durable=True, arguments=STREAM))
    for i in range(5):
        publish(channel, q, f"m{i}")
    # Counts once the stream holds messages are not compared: RabbitMQ 3.10 answers counters it
    # refreshes every few seconds (0 at first), Weir the log's messages at once.
    channel.queue_declare(q, durable=True, arguments=STREAM)
    channel.queue_declare(q, passive=True)
    outcome["redeclare"] = {
        "classic": attempt(lambda: connection.channel().queue_declare(q, durable=True)),
        "other_age": attempt(
            lambda: connection.channel().queue_declare(q, durable=True, arguments=dict(STREAM, **{"x-max-age": "1h"}))
        ),
    }
    outcome["prefetch"] = prefetch_and_acks(connection, q)
    outcome["offsets"] = {
        name: consume_from(connection, q, offset, expected)
        for name, offset, expected in [
            ("first", "first", 5),
            ("last", "last", 1),
            ("numeric", 3, 2),
            ("below_start", -1, 5),
            ("timestamp", datetime.datetime(2020, 1, 1), 5),
            ("interval", "1h", 5),
            ("next", "next", 0),
            ("past_end", 100, 0),
            ("default", None, 0),
        ]
    }
    outcome["live"] = live_consumers(s, connection, channel, q)
    outcome["refused"] = refusals(s, q)
    outcome["deleted"] = channel.queue_delete(q).method.message_count
    s.finish(outcome)


def declare_errors(s, connection):
    def declare(short, arguments=None, **flags):
        name = s.queue(short)
        arguments = dict(STREAM, **(arguments or {}))
        return attempt(lambda: connection.channel().queue_declare(name, arguments=arguments, **flags))

    outcome = {
        "non_durable": declare("nd"),
        "exclusive": declare("ex", durable=True, exclusive=True),
        "auto_delete": declare("ad", durable=True, auto_delete=True),
    }
    for index, (name, value) in enumerate(
        [
            ("x-message-ttl", 10),
            ("x-max-length", 3),
            ("x-dead-letter-exchange", "dlx"),
            ("x-max-priority", 3),
            ("x-overflow", "drop-head"),
            ("x-expires", 1000),
            ("x-single-active-consumer", True),
            ("x-delivery-limit", 3),
            ("x-max-age", "7D"),
            ("x-max-age", "30s"),
            ("x-max-age", "7X"),
            ("x-max-age", 5),
            ("x-max-length-bytes", 1000000),
            ("x-max-length-bytes", -1),
            ("x-max-length-bytes", "big"),
            ("x-stream-max-segment-size-bytes", 100000),
            ("x-stream-max-segment-size-bytes", -1),
            ("x-queue-leader-locator", "client-local"),
            ("x-initial-cluster-size", 1),
            ("x-unknown-argument", 1),
        ]
    ):
        outcome[f"{name}={value}"] = declare(f"arg{index}", {name: value}, durable=True)
    for index, arguments in enumerate([{"x-max-age": "1h"}, {"x-stream-max-segment-size-bytes": 100000}]):
        name = s.queue(f"classic{index}")
        outcome[f"classic_with_{list(arguments)[0]}"] = attempt(
            lambda: connection.channel().queue_declare(name, durable=True, arguments=arguments)
        )
    return outcome


def prefetch_and_acks(connection, q):
    """prefetch 2: two deliveries until an ack; one more per ack; the rest after an ack of all."""
    channel = connection.channel()
    channel.basic_qos(prefetch_count=2)
    got = []
    channel.basic_consume(
        q,
        lambda _ch, method, properties, body: got.append(delivery(method, properties, body)),
        arguments={"x-stream-offset": "first"},
    )
    settle(connection, [got], minimum=2)
    outcome = {"before_ack": list(got)}
    channel.basic_ack(got[0][0])
    settle(connection, [got], minimum=3)
    outcome["after_one_ack"] = list(got[2:])
    channel.basic_ack(got[-1][0], multiple=True)
    settle(connection, [got], minimum=5)
    outcome["after_ack_all"] = list(got[3:])
    channel.close()
    return outcome


def delivery(method, properties, body):
    return [method.delivery_tag, method.redelivered, method.exchange, method.routing_key, properties.headers, body]


def consume_from(connection, q, offset, expected):
    """What a consumer starting at `offset` gets: (body, x-stream-offset header) in order."""
    channel = connection.channel()
    channel.basic_qos(prefetch_count=100)
    got = []
    arguments = {} if offset is None else {"x-stream-offset": offset}
    channel.basic_consume(
        q, lambda _ch, _m, properties, body: got.append([body, properties.headers]), arguments=arguments
    )
    if expected:
        settle(connection, [got], minimum=expected)
    else:
        connection.process_data_events(time_limit=0.5)
    channel.close()
    return got


def live_consumers(s, connection, publisher, q):
    """Consumers at the end are woken by a publish; two consumers each get every message; a
    consumer from `first` after everything was acknowledged still gets everything."""
    waiting, first_a, first_b = [], [], []
    for got, offset in [(waiting, "next"), (first_a, "first"), (first_b, "first")]:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=100)
        channel.basic_consume(
            q,
            lambda ch, method, properties, body, got=got: (
                got.append([body, properties.headers]),
                ch.basic_ack(method.delivery_tag),
            ),
            arguments={"x-stream-offset": offset},
        )
    settle(connection, [first_a, first_b], minimum=10)
    publish(publisher, q, "late", properties=pika.BasicProperties(headers={"h": 1}))
    settle(connection, [waiting, first_a, first_b], minimum=13)
    kept = consume_from(connection, q, "first", 6)
    return {"waiting": waiting, "first_a": first_a, "first_b": first_b, "kept_after_acks": kept}


def refusals(s, q):
    def fresh():
        return s.connect().channel()

    def consume(qos, auto_ack):
        channel = fresh()
        if qos:
            channel.basic_qos(prefetch_count=10)
        channel.basic_consume(q, lambda *a: None, auto_ack=auto_ack)

    def nack(requeue, reject=False, recover=False):
        connection = s.connect()
        channel = connection.channel()
        channel.basic_qos(prefetch_count=10)
        got = []
        channel.basic_consume(q, lambda _c, method, *_: got.append(method.delivery_tag), arguments={"x-stream-offset": "first"})
        settle(connection, [got], minimum=6)
        if reject:
            channel.basic_reject(got[0], requeue=requeue)
        elif recover:
            channel.basic_recover(requeue=True)
        else:
            channel.basic_nack(got[0], requeue=requeue)
        connection.process_data_events(time_limit=0.5)

    return {
        "consume_without_qos": attempt(lambda: consume(False, False)),
        "consume_auto_ack": attempt(lambda: consume(True, True)),
        "get": attempt(lambda: fresh().basic_get(q, auto_ack=False)),
        "purge": attempt(lambda: fresh().queue_purge(q)),
        "nack_requeue": attempt(lambda: nack(True)),
        "reject": attempt(lambda: nack(False, reject=True)),
        "bad_offset": attempt(lambda: consume_offset(s, q, "soon")),
        "recover": attempt(lambda: nack(True, recover=True)),
    }


def consume_offset(s, q, offset):
    connection = s.connect()
    channel = connection.channel()
    channel.basic_qos(prefetch_count=10)
    channel.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": offset})
    connection.process_data_events(time_limit=0.5)


def counts(declare_ok):
    return [declare_ok.method.message_count, declare_ok.method.consumer_count]


if __name__ == "__main__":
    main()
