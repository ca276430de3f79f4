"""The metrics suite's client (tests/tests/metrics.rs): scrapes weir's /metrics and parses it with
the Prometheus project's own python parser (prometheus_client), and drives the broker with real
clients meanwhile.

  metrics.py scrape URL
      one JSON line: {"samples": {"name{k=v,...}": value, ...}}
  metrics.py amqp --amqp URL --metrics URL --queue NAME
      pika: declares NAME, publishes 10 confirmed messages, basic.get + ack 6, basic.get 2
      without ack and scrapes while holding them; prints {"during": samples}; then closes
  metrics.py group --bootstrap HOST:PORT --topic T --group G --count N
      confluent-kafka: consumes N records of T in group G, commits, closes
"""

import argparse
import json
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        if response.status != 200:
            fail(f"{url}: HTTP {response.status}")
        content_type = response.headers.get("Content-Type", "")
        if not content_type.startswith("text/plain; version=0.0.4"):
            fail(f"{url}: Content-Type {content_type}")
        text = response.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            if key in samples:
                fail(f"sample {key} appears twice")
            samples[key] = sample.value
    return samples


def amqp(args):
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(args.amqp))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare(queue=args.queue, durable=True)
    for i in range(10):
        channel.basic_publish(exchange="", routing_key=args.queue, body=f"m{i}".encode())
    for _ in range(6):
        method, _, _ = channel.basic_get(queue=args.queue, auto_ack=False)
        if method is None:
            fail("basic.get found the queue empty")
        channel.basic_ack(method.delivery_tag)
    for _ in range(2):
        method, _, _ = channel.basic_get(queue=args.queue, auto_ack=False)
        if method is None:
            fail("basic.get found the queue empty")
    # basic.get is synchronous: the acks before it have been applied by the queue's shard.
    during = scrape(args.metrics)
    connection.close()
    print(json.dumps({"during": during}), flush=True)


def group(args):
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([args.topic])
    got = 0
    deadline = time.monotonic() + 30
    while got < args.count:
        if time.monotonic() > deadline:
            fail(f"consumed {got} of {args.count} records")
        message = consumer.poll(1.0)
        if message is None or message.error():
            continue
        got += 1
    consumer.commit(asynchronous=False)
    consumer.close()
    print(json.dumps({"consumed": got}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    scrape_parser = commands.add_parser("scrape")
    scrape_parser.add_argument("url")
    amqp_parser = commands.add_parser("amqp")
    amqp_parser.add_argument("--amqp", required=True)
    amqp_parser.add_argument("--metrics", required=True)
    amqp_parser.add_argument("--queue", required=True)
    group_parser = commands.add_parser("group")
    group_parser.add_argument("--bootstrap", required=True)
    group_parser.add_argument("--topic", required=True)
    group_parser.add_argument("--group", required=True)
    group_parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    if args.command == "scrape":
        print(json.dumps({"samples": scrape(args.url)}), flush=True)
    elif args.command == "amqp":
        amqp(args)
    else:
        group(args)


if __name__ == "__main__":
    main()
