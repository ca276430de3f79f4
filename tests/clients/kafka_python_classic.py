"""The classic kafka-python example, unconfigured: a KafkaProducer sends JSON to `my_topic`; a
KafkaConsumer(group_id='my_group', auto_offset_reset='earliest') reads all of it. Then a new
consumer of the same group resumes after the committed offsets: it gets exactly the events produced
afterwards, none of the earlier ones."""

import json

from kafka import KafkaConsumer, KafkaProducer

from common import Deadline, check, compare_records, check_sent_offsets_dense, done, parser

args_parser = parser(__doc__)
args_parser.add_argument("--count", type=int, default=1000)
args = args_parser.parse_args()


def produce(first, count):
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap,
        value_serializer=lambda value: json.dumps(value).encode("utf-8"),
    )
    futures = []
    for n in range(first, first + count):
        event = {"n": n, "event": "signup", "user": f"user-{n}"}
        futures.append((event, producer.send("my_topic", event)))
    producer.flush(timeout=60)
    sent = {}
    for event, future in futures:
        metadata = future.get(timeout=60)
        sent[(metadata.partition, metadata.offset)] = event
    producer.close(timeout=30)
    return sent


def consume(expected, what):
    consumer = KafkaConsumer(
        "my_topic",
        bootstrap_servers=args.bootstrap,
        group_id="my_group",
        auto_offset_reset="earliest",
        value_deserializer=lambda raw: json.loads(raw.decode("utf-8")),
        consumer_timeout_ms=1000,
    )
    received = []
    deadline = Deadline(90, f"{what}: consuming {expected} events")
    while len(received) < expected:
        deadline.check(received=len(received))
        for message in consumer:  # the classic loop; it ends after 1 s without messages
            received.append((message.partition, message.offset, message.value))
            if len(received) >= expected:
                break
    # The classic example just closes: kafka-python commits the consumed offsets on close.
    consumer.close()
    return received


sent_first = produce(0, args.count)
partitions = check_sent_offsets_dense(sent_first, "first produce")
received_first = consume(args.count, "first consumer")
compare_records(sent_first, received_first, "first consumer")
# One producer, so within each partition the events are in the order they were sent.
last_n = {}
for partition, offset, value in sorted(received_first, key=lambda r: (r[0], r[1])):
    check(value["n"] > last_n.get(partition, -1), f"partition {partition}: event {value['n']} stored after {last_n.get(partition)}")
    last_n[partition] = value["n"]

later = 50
sent_later = produce(args.count, later)
received_later = consume(later, "second consumer of my_group")
compare_records(sent_later, received_later, "second consumer of my_group (after the commit)")

done(
    produced=len(sent_first) + len(sent_later),
    consumed_first=len(received_first),
    consumed_after_commit=len(received_later),
    partitions=partitions,
)
