"""confluent-kafka (librdkafka 2.16) round trip: produce --count keyed records with headers to a
fresh auto-created topic (optionally idempotent, optionally compressed), then consume them with a
consumer group and compare every record: partition, offset, key, value, headers."""

import time

from confluent_kafka import Consumer, KafkaException, Producer

from common import Deadline, check, check_sent_offsets_dense, compare_records, done, fail, parser

args_parser = parser(__doc__)
args_parser.add_argument("--topic", required=True)
args_parser.add_argument("--count", type=int, default=10000)
args_parser.add_argument("--compression", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
args_parser.add_argument("--idempotence", action="store_true")
args_parser.add_argument("--value-bytes", type=int, default=100)
args = args_parser.parse_args()

padding = "x" * max(0, args.value_bytes - 12)


def record(n):
    key = f"key-{n % 64}".encode()
    value = f"{n:010d}:{padding}".encode()
    headers = [("n", str(n).encode()), ("source", b"confluent_roundtrip")]
    return key, value, headers


producer = Producer(
    {
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": args.idempotence,
        "compression.type": args.compression,
        "linger.ms": 5,
    }
)
sent = {}
errors = []


def delivered(error, message):
    if error is not None:
        errors.append(str(error))
        return
    # What was sent for this record, rebuilt from its number (delivery reports need not carry
    # headers); the consumer must return exactly this.
    n = int(message.value().split(b":")[0])
    sent[(message.partition(), message.offset())] = record(n)


started = time.monotonic()
deadline = Deadline(120, f"producing {args.count} records")
for n in range(args.count):
    key, value, headers = record(n)
    while True:
        try:
            producer.produce(args.topic, value=value, key=key, headers=headers, on_delivery=delivered)
            break
        except BufferError:
            deadline.check(sent=len(sent))
            producer.poll(0.05)
    if n % 1000 == 0:
        producer.poll(0)
remaining = producer.flush(120)
produce_seconds = time.monotonic() - started
check(not errors, "delivery errors", count=len(errors), first=errors[:5])
check(remaining == 0, f"{remaining} records still unacknowledged after flush")
check(len(sent) == args.count, f"{len(sent)} distinct acknowledged offsets for {args.count} records")
partitions = check_sent_offsets_dense(sent, "produce")

consumer = Consumer(
    {
        "bootstrap.servers": args.bootstrap,
        "group.id": f"roundtrip-{args.topic}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
)
consumer.subscribe([args.topic])
received = []
started = time.monotonic()
deadline = Deadline(60 + args.count / 2000, f"consuming {args.count} records")
while len(received) < args.count:
    deadline.check(received=len(received))
    for message in consumer.consume(num_messages=5000, timeout=1.0):
        if message.error() is not None:
            fail(f"consumer error: {message.error()}")
        payload = (message.key(), message.value(), message.headers())
        received.append((message.partition(), message.offset(), payload))
consume_seconds = time.monotonic() - started
consumer.close()

compare_records(sent, received, "consumer")
# Records of one key were produced in order and one key lives in one partition: order is kept.
by_key = {}
for _, _, (key, value, _) in received:
    n = int(value.split(b":")[0])
    check(n > by_key.get(key, -1), f"key {key!r}: record {n} arrived after {by_key.get(key)}")
    by_key[key] = n

done(
    produced=len(sent),
    consumed=len(received),
    partitions=partitions,
    compression=args.compression,
    idempotence=args.idempotence,
    produce_seconds=round(produce_seconds, 2),
    consume_seconds=round(consume_seconds, 2),
)
