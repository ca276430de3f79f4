#!/usr/bin/env python3
"""Memory per idle partition (issue 14): creates N single-partition topics on a running broker in
batches of CreateTopics, then prints the broker's RSS before and after and the Metadata latency
(all topics) from kafka-python. Usage (tests/.venv's python):
  idle_partitions.py --bootstrap 127.0.0.1:22900 --pid PID --topics 100000"""
import argparse, time
from kafka.admin import KafkaAdminClient, NewTopic
from kafka import KafkaConsumer

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

parser = argparse.ArgumentParser()
parser.add_argument("--bootstrap", required=True)
parser.add_argument("--pid", type=int, required=True)
parser.add_argument("--topics", type=int, default=100000)
parser.add_argument("--create", action="store_true")
args = parser.parse_args()
before = rss_kib(args.pid)
if args.create:
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=120000)
    started = time.time()
    for first in range(0, args.topics, 1000):
        names = [f"idle-{i}" for i in range(first, min(first + 1000, args.topics))]
        admin.create_topics([NewTopic(n, 1, 1) for n in names], timeout_ms=120000)
    print(f"created {args.topics} topics in {time.time() - started:.1f} s")
    time.sleep(2)
after = rss_kib(args.pid)
consumer = KafkaConsumer(bootstrap_servers=args.bootstrap)
latencies = []
for _ in range(5):
    started = time.time()
    topics = consumer.topics()
    latencies.append(time.time() - started)
consumer.close()
print(f"rss before {before} KiB, after {after} KiB, per topic {(after - before) * 1024 / args.topics:.0f} B"
      f" (only meaningful with --create); topics listed {len(topics)};"
      f" Metadata(all) seconds {', '.join(f'{l:.3f}' for l in latencies)}")
