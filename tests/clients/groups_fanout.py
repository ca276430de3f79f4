"""Two consumer groups, `email-service` and `analytics-service` (kafka-python), each receive every
`user-signups` event: half of the events exist before the services start (catch-up from earliest),
half are produced while they run (live tail)."""

import json
import threading

from kafka import KafkaConsumer, KafkaProducer

from common import Deadline, check, compare_records, done, fail, parser

args_parser = parser(__doc__)
args_parser.add_argument("--count", type=int, default=1000)
args = args_parser.parse_args()

TOPIC = "user-signups"
GROUPS = ["email-service", "analytics-service"]

producer = KafkaProducer(
    bootstrap_servers=args.bootstrap,
    key_serializer=lambda key: key.encode("utf-8"),
    value_serializer=lambda value: json.dumps(value).encode("utf-8"),
)
sent = {}


def produce(first, count):
    futures = []
    for n in range(first, first + count):
        event = {"user_id": n, "email": f"user{n}@example.com"}
        futures.append((event, producer.send(TOPIC, key=f"user-{n}", value=event)))
    producer.flush(timeout=60)
    for event, future in futures:
        metadata = future.get(timeout=60)
        sent[(metadata.partition, metadata.offset)] = event


received = {group: [] for group in GROUPS}
failures = []


def service(group, expected):
    try:
        consumer = KafkaConsumer(
            TOPIC,
            bootstrap_servers=args.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            value_deserializer=lambda raw: json.loads(raw.decode("utf-8")),
            consumer_timeout_ms=500,
        )
        deadline = Deadline(120, f"{group} consuming {expected} events")
        while len(received[group]) < expected and not deadline.expired():
            for message in consumer:
                received[group].append((message.partition, message.offset, message.value))
                if len(received[group]) >= expected:
                    break
        consumer.close()
    except Exception as error:  # reported by the main thread
        failures.append(f"{group}: {error!r}")


half = args.count // 2
produce(0, half)
threads = [threading.Thread(target=service, args=(group, args.count)) for group in GROUPS]
for thread in threads:
    thread.start()
produce(half, args.count - half)
producer.close(timeout=30)
for thread in threads:
    thread.join(timeout=180)
    check(not thread.is_alive(), "a consumer thread did not finish")
if failures:
    fail("consumer failed", errors=failures)
check(len(sent) == args.count, f"{len(sent)} distinct acknowledged offsets for {args.count} events")
for group in GROUPS:
    compare_records(sent, received[group], group)

partitions = sorted({partition for partition, _ in sent})
done(
    produced=len(sent),
    partitions=len(partitions),
    **{group.replace("-", "_"): len(received[group]) for group in GROUPS},
)
