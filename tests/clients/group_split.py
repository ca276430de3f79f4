"""Two confluent-kafka consumers of one group split a 6-partition topic: each gets a disjoint,
non-empty share; together they receive every record once, in order per partition, and commit it.
Then one leaves the group: the other takes over all 6 partitions and continues exactly after the
committed offsets, with no loss and no duplicate of committed work."""

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import Deadline, check, compare_records, done, fail, parser

args_parser = parser(__doc__)
args_parser.add_argument("--per-partition", type=int, default=50)
args = args_parser.parse_args()

TOPIC = "orders"
PARTITIONS = 6
GROUP = "order-workers"
ALL = set(range(PARTITIONS))

admin = AdminClient({"bootstrap.servers": args.bootstrap})
for future in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
    future.result(timeout=30)


def new_consumer(name):
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": GROUP,
            "client.id": name,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([TOPIC])
    return consumer


def assigned(consumer):
    return {tp.partition for tp in consumer.assignment()}


def poll_all(consumers, received, what):
    """One poll round over every consumer; every record is processed then committed (sync)."""
    for name, consumer in consumers.items():
        message = consumer.poll(0.1)
        if message is None:
            continue
        if message.error() is not None:
            fail(f"{what}: {name}: {message.error()}")
        received[name].append((message.partition(), message.offset(), message.value()))
        consumer.commit(message=message, asynchronous=False)


producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
sent = {}
errors = []


def produce(first, count):
    def delivered(error, message):
        if error is not None:
            errors.append(str(error))
        else:
            sent[(message.partition(), message.offset())] = message.value()

    for partition in range(PARTITIONS):
        for seq in range(first, first + count):
            producer.produce(TOPIC, value=f"{partition}:{seq}".encode(), partition=partition, on_delivery=delivered)
    check(producer.flush(60) == 0, "records unacknowledged after flush")
    check(not errors, "delivery errors", first=errors[:5])


# Phase 1: both members join; wait for a stable split before producing anything.
consumers = {"a": new_consumer("member-a"), "b": new_consumer("member-b")}
received = {"a": [], "b": []}
deadline = Deadline(60, "two members splitting 6 partitions")
while True:
    deadline.check(a=sorted(assigned(consumers["a"])), b=sorted(assigned(consumers["b"])))
    poll_all(consumers, received, "joining")
    share_a, share_b = assigned(consumers["a"]), assigned(consumers["b"])
    if share_a and share_b and not (share_a & share_b) and share_a | share_b == ALL:
        break
check(not received["a"] and not received["b"], "records arrived before any were produced")

produce(0, args.per_partition)
phase_one = dict(sent)
deadline = Deadline(60, "consuming phase 1")
while len(received["a"]) + len(received["b"]) < len(phase_one):
    deadline.check(a=len(received["a"]), b=len(received["b"]))
    poll_all(consumers, received, "phase 1")
check(assigned(consumers["a"]) == share_a, "member a's share changed during phase 1", now=sorted(assigned(consumers["a"])))
check(assigned(consumers["b"]) == share_b, "member b's share changed during phase 1", now=sorted(assigned(consumers["b"])))
for name, share in (("a", share_a), ("b", share_b)):
    outside = [record for record in received[name] if record[0] not in share]
    check(not outside, f"member {name} got records of partitions it does not own", first=outside[:5])
compare_records(phase_one, received["a"] + received["b"], "phase 1 (both members)")
compare_records({k: v for k, v in phase_one.items() if k[0] in share_a}, received["a"], "member a")
compare_records({k: v for k, v in phase_one.items() if k[0] in share_b}, received["b"], "member b")

# Phase 2: b leaves (close sends LeaveGroup); a must take over everything.
consumers["b"].close()
survivor = {"a": consumers["a"]}
after = {"a": []}
deadline = Deadline(60, "member a taking over all 6 partitions")
while assigned(survivor["a"]) != ALL:
    deadline.check(a=sorted(assigned(survivor["a"])))
    poll_all(survivor, after, "take-over")
check(not after["a"], "member a re-received committed records after the take-over", first=after["a"][:5])

produce(args.per_partition, args.per_partition)
phase_two = {k: v for k, v in sent.items() if k not in phase_one}
deadline = Deadline(60, "consuming phase 2")
while len(after["a"]) < len(phase_two):
    deadline.check(a=len(after["a"]))
    poll_all(survivor, after, "phase 2")
# A duplicate of committed work would be an old record arriving first; a late one would follow.
for _ in range(10):
    poll_all(survivor, after, "phase 2 (nothing more)")
compare_records(phase_two, after["a"], "member a after the take-over")
committed = survivor["a"].committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
offsets = {tp.partition: tp.offset for tp in committed}
check(
    offsets == {p: 2 * args.per_partition for p in range(PARTITIONS)},
    "committed offsets after phase 2",
    committed=offsets,
)
survivor["a"].close()

done(
    share_a=sorted(share_a),
    share_b=sorted(share_b),
    phase_one_a=len(received["a"]),
    phase_one_b=len(received["b"]),
    phase_two_a=len(after["a"]),
    committed=offsets,
)
