"""One phase of the offsets-resume test (the Rust test restarts the broker between phases).

  produce: acks=all records --first..--first+--count to --topic; prints every acknowledged
           (partition, offset, n).
  consume: prints the group's committed offsets as they are BEFORE consuming (OffsetFetch), then
           consumes exactly --count records as group --group, committing each one synchronously,
           and prints every (partition, offset, n) in consumption order.
  read:    reads --count records from the beginning of every partition without a group (assign),
           and prints every (partition, offset, n).
"""

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from common import Deadline, check, done, fail, parser

args_parser = parser(__doc__)
args_parser.add_argument("phase", choices=["produce", "consume", "read"])
args_parser.add_argument("--topic", required=True)
args_parser.add_argument("--group", default="resume-group")
args_parser.add_argument("--first", type=int, default=0)
args_parser.add_argument("--count", type=int, required=True)
args = args_parser.parse_args()


def produce():
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 5})
    acknowledged = []
    errors = []

    def delivered(error, message):
        if error is not None:
            errors.append(str(error))
        else:
            acknowledged.append([message.partition(), message.offset(), int(message.value())])

    for n in range(args.first, args.first + args.count):
        producer.produce(args.topic, key=f"k{n % 10}".encode(), value=str(n).encode(), on_delivery=delivered)
        if n % 1000 == 0:
            producer.poll(0)
    check(producer.flush(60) == 0, "records unacknowledged after flush")
    check(not errors, "delivery errors", first=errors[:5])
    check(len(acknowledged) == args.count, f"{len(acknowledged)} acknowledgements for {args.count} records")
    done(acknowledged=acknowledged)


def consume():
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    metadata = consumer.list_topics(args.topic, timeout=10)
    topic = metadata.topics.get(args.topic)
    check(topic is not None and topic.error is None, f"topic {args.topic} missing", error=topic and topic.error)
    partitions = sorted(topic.partitions)
    committed = consumer.committed([TopicPartition(args.topic, p) for p in partitions], timeout=10)
    committed_before = {str(tp.partition): tp.offset for tp in committed}
    for tp in committed:
        check(tp.error is None, f"OffsetFetch error on partition {tp.partition}: {tp.error}")

    consumer.subscribe([args.topic])
    consumed = []
    deadline = Deadline(90, f"consuming {args.count} records")
    while len(consumed) < args.count:
        deadline.check(consumed=len(consumed))
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error() is not None:
            fail(f"consumer error: {message.error()}")
        consumed.append([message.partition(), message.offset(), int(message.value())])
        consumer.commit(
            offsets=[TopicPartition(args.topic, message.partition(), message.offset() + 1)],
            asynchronous=False,
        )
    consumer.close()
    done(committed_before=committed_before, partitions=partitions, consumed=consumed)


def read():
    consumer = Consumer(
        {"bootstrap.servers": args.bootstrap, "group.id": "unused-by-assign", "enable.auto.commit": False}
    )
    topic = consumer.list_topics(args.topic, timeout=10).topics.get(args.topic)
    check(topic is not None and topic.error is None, f"topic {args.topic} missing", error=topic and topic.error)
    partitions = sorted(topic.partitions)
    # Fail fast, with the numbers, when the log itself is short (ListOffsets earliest/latest).
    marks = {p: consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10) for p in partitions}
    available = sum(high - low for low, high in marks.values())
    check(available >= args.count, f"the log holds {available} records, expected {args.count}", watermarks=marks)
    consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])
    records = []
    deadline = Deadline(90, f"reading {args.count} records")
    while len(records) < args.count:
        deadline.check(read=len(records))
        for message in consumer.consume(num_messages=1000, timeout=0.5):
            if message.error() is not None:
                fail(f"consumer error: {message.error()}")
            records.append([message.partition(), message.offset(), int(message.value())])
    consumer.close()
    done(consumed=records)


{"produce": produce, "consume": consume, "read": read}[args.phase]()
