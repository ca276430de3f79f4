"""A 1,000-partition topic with confluent-kafka: AdminClient creates it, metadata lists every
partition with a leader, --per-partition records go to each partition, and a consumer assigned to
all partitions reads every record back at the offsets that were acknowledged, in order."""

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import Deadline, check, check_sent_offsets_dense, compare_records, done, fail, parser

args_parser = parser(__doc__)
args_parser.add_argument("--topic", default="wide")
args_parser.add_argument("--partitions", type=int, default=1000)
args_parser.add_argument("--per-partition", type=int, default=5)
args = args_parser.parse_args()

admin = AdminClient({"bootstrap.servers": args.bootstrap})
started = time.monotonic()
for future in admin.create_topics([NewTopic(args.topic, args.partitions, 1)], operation_timeout=60).values():
    future.result(timeout=90)
create_seconds = time.monotonic() - started

deadline = Deadline(30, "metadata listing every partition with a leader")
while True:
    metadata = admin.list_topics(args.topic, timeout=10)
    topic = metadata.topics.get(args.topic)
    ready = (
        topic is not None
        and topic.error is None
        and len(topic.partitions) == args.partitions
        and all(p.leader >= 0 for p in topic.partitions.values())
    )
    if ready:
        break
    deadline.check(partitions=len(topic.partitions) if topic else None)
    time.sleep(0.2)
check(sorted(topic.partitions) == list(range(args.partitions)), "partition ids are not 0..n-1")
brokers = sorted(metadata.brokers)
leaders = {}
for partition in topic.partitions.values():
    check(partition.leader in metadata.brokers, f"partition {partition.id} has unknown leader {partition.leader}")
    leaders[str(partition.leader)] = leaders.get(str(partition.leader), 0) + 1

producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20})
sent = {}
errors = []


def delivered(error, message):
    if error is not None:
        errors.append(str(error))
    else:
        sent[(message.partition(), message.offset())] = message.value()


for seq in range(args.per_partition):
    for partition in range(args.partitions):
        producer.produce(args.topic, value=f"{partition}:{seq}".encode(), partition=partition, on_delivery=delivered)
    producer.poll(0)
check(producer.flush(120) == 0, "records unacknowledged after flush")
check(not errors, "delivery errors", count=len(errors), first=errors[:5])
per_partition = check_sent_offsets_dense(sent, "produce")
check(len(per_partition) == args.partitions, f"records landed in {len(per_partition)} partitions")
for (partition, offset), value in sent.items():
    check(value == f"{partition}:{offset}".encode(), f"partition {partition} offset {offset} holds {value!r}")

consumer = Consumer(
    {"bootstrap.servers": args.bootstrap, "group.id": f"{args.topic}-reader", "enable.auto.commit": False}
)
consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in range(args.partitions)])
received = []
deadline = Deadline(120, f"consuming {len(sent)} records")
while len(received) < len(sent):
    deadline.check(received=len(received))
    for message in consumer.consume(num_messages=10000, timeout=1.0):
        if message.error() is not None:
            fail(f"consumer error: {message.error()}")
        received.append((message.partition(), message.offset(), message.value()))
consumer.close()
compare_records(sent, received, "consumer of all partitions")

done(
    partitions=len(topic.partitions),
    brokers=brokers,
    leaders_by_broker=leaders,
    produced=len(sent),
    consumed=len(received),
    create_seconds=round(create_seconds, 2),
)
