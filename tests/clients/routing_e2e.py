#!/usr/bin/env python3
"""Exchanges and bindings end to end with an unmodified kafka-python client.

The issue's example: a topic exchange `app` with bindings `user.*` -> `email_queue` and
`#` -> `audit`, records keyed `user.registered`, `user.`, `order.created` and `` (empty).
`email_queue` must receive exactly the two `user.*` records, `audit` all four. Declarations are
made with kafka-python's admin client (CreateTopics and IncrementalAlterConfigs with `weir.*`
configs), read back with DescribeConfigs, and must survive a broker restart.

Run (builds nothing; build first with `cargo build --release`):
    python3 tests/clients/routing_e2e.py                 # starts target/release/weir itself
    python3 tests/clients/routing_e2e.py --bootstrap 127.0.0.1:9092   # against a running broker

Installs kafka-python 3.0.12 into a private venv if it is missing. The broker it starts listens on
port 19310 (override with --port) with a temporary data directory; WEIR_ARGS overrides how the
binary is started (`{port}` and `{data_dir}` are substituted; shard i also listens on port+1+i).
"""

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

VENV = os.path.join(tempfile.gettempdir(), "weir-tests-venv")
KAFKA_PYTHON = "kafka-python==3.0.12"
DEFAULT_WEIR_ARGS = "--listen 127.0.0.1:{port} --data-dir {data_dir} --cpus 0-1 --amqp-listen none --metrics-listen none"


def ensure_kafka_python():
    try:
        import kafka  # noqa: F401
        return
    except ImportError:
        pass
    python = os.path.join(VENV, "bin", "python")
    if os.path.realpath(sys.executable) == os.path.realpath(python):
        sys.exit("kafka-python is missing even inside " + VENV)
    if not os.path.exists(python):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    subprocess.check_call([python, "-m", "pip", "install", "-q", KAFKA_PYTHON])
    os.execv(python, [python] + sys.argv)


ensure_kafka_python()

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic  # noqa: E402

KEYS = [b"user.registered", b"user.", b"order.created", b""]


def wait_for_port(port, process, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"weir exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"weir did not listen on {port} within {timeout_s}s")


class Broker:
    def __init__(self, binary, port, data_dir):
        self.binary, self.port, self.data_dir = binary, port, data_dir
        self.process = None

    def start(self):
        template = os.environ.get("WEIR_ARGS", DEFAULT_WEIR_ARGS)
        args = shlex.split(template.format(port=self.port, data_dir=self.data_dir))
        self.process = subprocess.Popen([self.binary] + args)
        wait_for_port(self.port, self.process)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def admin_client(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, client_id="routing-e2e")


def declare(bootstrap):
    admin = admin_client(bootstrap)
    try:
        # The exchange first: a topic can only bind to an exchange that exists.
        admin.create_topics([NewTopic("app", 1, 1, topic_configs={"weir.exchange.type": "topic"})])
        admin.create_topics([
            NewTopic("email_queue", 2, 1),
            # Bound from the destination's end ...
            NewTopic("audit", 1, 1, topic_configs={"weir.bindings": "app=#"}),
        ])
        # ... and from the exchange's end.
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "app",
                            configs={"weir.exchange.bindings": ("APPEND", "email_queue=user.*")})],
            raise_on_unknown=False, incremental=True)
        # An invalid declaration is refused with INVALID_CONFIG and leaves nothing behind.
        try:
            admin.create_topics([NewTopic("bogus", 1, 1, topic_configs={"weir.exchange.type": "queue"})])
        except Exception as error:  # kafka-python raises a per-topic error class
            assert "InvalidConfig" in type(error).__name__ or "INVALID_CONFIG" in str(error).upper() \
                or "40" in str(error), f"unexpected error for a bad type: {error!r}"
        else:
            raise AssertionError("an exchange of type 'queue' was accepted")
    finally:
        admin.close()


def declare_more(bootstrap):
    """A headers exchange and a direct exchange with an alternate exchange."""
    admin = admin_client(bootstrap)
    try:
        admin.create_topics([NewTopic("unrouted", 1, 1, topic_configs={"weir.exchange.type": "fanout"})])
        admin.create_topics([
            NewTopic("docs", 1, 1, topic_configs={
                "weir.exchange.type": "headers",
                "weir.exchange.bindings": "topic:reports=x-match=any&format=pdf&type=report",
            }),
            NewTopic("orders", 1, 1, topic_configs={
                "weir.exchange.type": "direct",
                "weir.exchange.alternate": "unrouted",
            }),
        ])
        admin.create_topics([
            NewTopic("reports", 1, 1),
            NewTopic("paid", 1, 1, topic_configs={"weir.bindings": "orders=paid"}),
            NewTopic("dead", 1, 1, topic_configs={"weir.bindings": "unrouted"}),
        ])
    finally:
        admin.close()


def produce_more(bootstrap):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    sends = [
        ("docs", None, b"pdf", [("format", b"pdf")]),
        ("docs", None, b"report", [("type", b"report"), ("format", b"zip")]),
        ("docs", None, b"zip", [("format", b"zip")]),
        ("orders", b"paid", b"order-1", []),
        ("orders", b"refunded", b"order-2", []),
    ]
    for topic, key, value, headers in sends:
        producer.send(topic, key=key, value=value, headers=headers).get(timeout=30)
    producer.close()


def describe(bootstrap):
    admin = admin_client(bootstrap)
    try:
        result = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "app")], config_filter="all")
    finally:
        admin.close()
    # kafka-python 3: {resource_type: {resource_name: {config_key: {config data}}}}
    for by_name in result.values():
        configs = by_name.get("app")
        if configs is None:
            continue
        def value(key):
            entry = configs.get(key)
            return entry.get("value") if isinstance(entry, dict) else entry
        return {key: value(key) for key in configs}
    raise AssertionError(f"no configs for app in {result!r}")


def produce(bootstrap, keys, tag):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for key in keys:
        producer.send("app", key=key, value=tag + b":" + key).get(timeout=30)
    producer.flush()
    producer.close()


def consume(bootstrap, topic, expected_count, timeout_s=20):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    partitions = consumer.partitions_for_topic(topic) or {0}
    consumer.assign([TopicPartition(topic, partition) for partition in partitions])
    consumer.seek_to_beginning()
    values = []
    deadline = time.monotonic() + timeout_s
    while len(values) < expected_count and time.monotonic() < deadline:
        for message in consumer:
            values.append(message.value)
    # Anything beyond the expected count would be a duplicate or a misroute: give it a moment.
    for _ in range(2):
        values.extend(message.value for message in consumer)
    consumer.close()
    return sorted(values)


def consume_as_group(bootstrap, topic, group, expected_count, timeout_s=30):
    """The classic example's consumer: subscribe with a group id, read from the earliest offset."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                             auto_offset_reset="earliest", consumer_timeout_ms=1000)
    values = []
    deadline = time.monotonic() + timeout_s
    while len(values) < expected_count and time.monotonic() < deadline:
        values.extend(message.value for message in consumer)
    consumer.close()
    return sorted(values)


def expect(actual, expected, what):
    if actual != sorted(expected):
        raise AssertionError(f"{what}: expected {sorted(expected)!r}, got {actual!r}")
    print(f"ok: {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", help="use a running broker instead of starting one")
    parser.add_argument("--weir", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                       "target", "release", "weir"))
    parser.add_argument("--port", type=int, default=19310)
    arguments = parser.parse_args()

    broker = None
    data_dir = tempfile.mkdtemp(prefix="weir-routing-e2e-")
    bootstrap = arguments.bootstrap
    if bootstrap is None:
        broker = Broker(os.path.abspath(arguments.weir), arguments.port, data_dir)
        broker.start()
        bootstrap = f"127.0.0.1:{arguments.port}"
    try:
        declare(bootstrap)
        configs = describe(bootstrap)
        assert configs.get("weir.exchange.type") == "topic", configs
        assert configs.get("weir.exchange.bindings") == "topic:audit=#,topic:email_queue=user.*", configs
        print("ok: declarations read back with DescribeConfigs")

        produce(bootstrap, KEYS, b"first")
        expect(consume(bootstrap, "email_queue", 2),
               [b"first:user.registered", b"first:user."], "email_queue got the user.* records")
        expect(consume(bootstrap, "audit", 4), [b"first:" + key for key in KEYS],
               "audit got every record once")
        expect(consume_as_group(bootstrap, "email_queue", "email-service", 2),
               [b"first:user.registered", b"first:user."], "consumer group email-service read email_queue")

        declare_more(bootstrap)
        produce_more(bootstrap)
        expect(consume(bootstrap, "reports", 2), [b"pdf", b"report"], "headers exchange (x-match=any)")
        expect(consume(bootstrap, "paid", 1), [b"order-1"], "direct exchange")
        expect(consume(bootstrap, "dead", 1), [b"order-2"], "alternate exchange took the unmatched key")

        if broker is not None:
            broker.stop()
            broker.start()
            produce(bootstrap, [b"user.again"], b"second")
            expect(consume(bootstrap, "email_queue", 3),
                   [b"first:user.registered", b"first:user.", b"second:user.again"],
                   "bindings survived a restart")
        print("routing e2e: all passed")
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
