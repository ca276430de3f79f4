"""Shared by the AMQP differential scenarios (tests/tests/amqp_differential.rs).

Every scenario runs unchanged against any AMQP 0-9-1 broker URL (RabbitMQ or Weir), drives it with
pika (or raw frames, raw.py), and prints ONE canonical JSON line: only what a client can observe
and what must not depend on the broker's identity or timing (reply codes and the class of the reply
text, flags, counts, bodies in delivery order, normalised headers). Names carry a per-run prefix so
that runs never collide on a long-lived RabbitMQ; the prefix is replaced by "P" in the output.
Every wait has a deadline; anything unexpected is an exception, a traceback and exit 1.
"""

import argparse
import json
import os
import sys
import time

import pika
import pika.exceptions

DEADLINE_SECONDS = 10.0


def arguments():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="amqp://user:pass@host:port/vhost")
    p.add_argument("--prefix", default=f"diff-{os.getpid()}-{int(time.time() * 1000)}")
    return p.parse_args()


class Scenario:
    """One run: the URL, the name prefix, the connections to close, the names to delete."""

    def __init__(self):
        args = arguments()
        self.url = args.url
        self.prefix = args.prefix
        self.connections = []
        self.queues = []
        self.exchanges = []

    def name(self, short):
        return f"{self.prefix}.{short}"

    def queue(self, short):
        name = self.name(short)
        self.queues.append(name)
        return name

    def exchange(self, short):
        name = self.name(short)
        self.exchanges.append(name)
        return name

    def connect(self):
        parameters = pika.URLParameters(self.url)
        parameters.blocked_connection_timeout = DEADLINE_SECONDS
        parameters.socket_timeout = DEADLINE_SECONDS
        connection = pika.BlockingConnection(parameters)
        self.connections.append(connection)
        return connection

    def channel(self):
        return self.connect().channel()

    def canonical(self, value):
        """Bytes to text, the prefix to "P", dicts sorted (json does that), recursively."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            return value.replace(self.prefix, "P")
        if isinstance(value, dict):
            return {self.canonical(k): self.canonical(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.canonical(v) for v in value]
        if isinstance(value, (bool, int, float)) or value is None:
            return value
        # datetime (timestamp fields), Decimal: their type and value, as text
        return f"{type(value).__name__}:{value}"

    def finish(self, outcome):
        """Prints the canonical outcome, then closes connections and deletes what was declared."""
        print(json.dumps(self.canonical(outcome), sort_keys=True), flush=True)
        self.cleanup()

    def cleanup(self):
        for connection in self.connections:
            if connection.is_open:
                try:
                    connection.close()
                except Exception:  # a broker-closed connection is already gone
                    pass
        connection = self.connect()
        for name in self.queues:
            channel = connection.channel()
            try:
                channel.queue_delete(name)
            except pika.exceptions.ChannelClosedByBroker:
                pass
        for name in self.exchanges:
            channel = connection.channel()
            try:
                channel.exchange_delete(name)
            except pika.exceptions.ChannelClosedByBroker:
                pass
        connection.close()


def reply_class(text):
    """RabbitMQ's reply texts are `CLASS - details`; only the class is compared."""
    return str(text).split(" - ", 1)[0]


def attempt(action):
    """Runs `action()`; returns "ok" or the closing reply as {"closed": scope, "code", "text"}."""
    try:
        action()
        return "ok"
    except pika.exceptions.ChannelClosedByBroker as error:
        return {"closed": "channel", "code": error.reply_code, "text": reply_class(error.reply_text)}
    except pika.exceptions.ConnectionClosedByBroker as error:
        return {"closed": "connection", "code": error.reply_code, "text": reply_class(error.reply_text)}


def get_all(channel, queue, auto_ack=True, limit=1000):
    """basic.get until get-empty: [(body, redelivered, message_count)]."""
    got = []
    for _ in range(limit):
        method, _properties, body = channel.basic_get(queue, auto_ack=auto_ack)
        if method is None:
            return got
        got.append([body.decode(), method.redelivered, method.message_count])
    raise AssertionError(f"more than {limit} messages in {queue}")


def bodies(channel, queue):
    return [body for body, _redelivered, _count in get_all(channel, queue)]


def publish(channel, routing_key, body, exchange="", properties=None, mandatory=False):
    channel.basic_publish(exchange, routing_key, body.encode(), properties, mandatory)


def message_count(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def settled_count(channel, queue, expected):
    """The queue's message count once it reaches `expected` (requeues are asynchronous in
    RabbitMQ), or whatever it is at the deadline: a difference to report, not a crash."""
    end = time.monotonic() + DEADLINE_SECONDS
    while message_count(channel, queue) != expected and time.monotonic() < end:
        time.sleep(0.02)
    return message_count(channel, queue)


def wait_for(predicate, what, seconds=DEADLINE_SECONDS):
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def x_death(properties):
    """The dead-lettering headers as RabbitMQ 3.10 writes them: x-death without its timestamps,
    and the x-first-death-* headers."""
    headers = properties.headers or {}
    deaths = headers.get("x-death") or []
    first = {k: v for k, v in headers.items() if k.startswith("x-first-death-")}
    return {"x-death": [{k: v for k, v in death.items() if k != "time"} for death in deaths], "first": first}


def settle(connection, lists, minimum=1, quiet_seconds=0.3):
    """Processes deliveries until at least `minimum` arrived in total over `lists` and then none
    for `quiet_seconds`: waits out a slow broker, then gives an over-delivery time to show."""
    end = time.monotonic() + DEADLINE_SECONDS
    total = lambda: sum(len(items) for items in lists)  # noqa: E731
    while total() < minimum:
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {minimum} deliveries, got {total()}")
        connection.process_data_events(time_limit=0.05)
    while True:
        before = total()
        connection.process_data_events(time_limit=quiet_seconds)
        if total() == before or time.monotonic() > end:
            return


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)
