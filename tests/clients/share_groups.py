"""Share groups (KIP-932) with confluent-kafka's ShareConsumer (librdkafka 2.16, preview),
against a broker started with share.auto.offset.reset=earliest and short locks. Scenarios:

- split: two share consumers (explicit acknowledgement) split --count records of a 4-partition
  topic; every record is accepted exactly once, by one of them; a third consumer gets nothing.
- release: a released record comes back with delivery count 2.
- reject: a rejected record never comes back; a record released again and again stops coming
  back after the delivery count limit deliveries; with --dlq, both are read back from that
  dead-letter topic with their headers.
- hold: acquire records and exit without acknowledging or closing (a crashed consumer); prints
  how many it held.
- take: consume and accept everything available until --idle seconds pass with nothing; prints
  the (partition, offset) pairs and their delivery counts.
- produce: produce --count records to --topic (created with 4 partitions).
- mixed: a pika consumer and a share consumer on one AMQP queue (--amqp-port): each published
  message processed by exactly one of them.
- accept-some: accept --accept records, commit them durably, then exit holding more acquired
  (a crash mid-run); prints the accepted pairs and how many it held.
"""

import json
import os
import threading
import time

from confluent_kafka import AcknowledgeType, Producer, ShareConsumer
from confluent_kafka.admin import AdminClient, NewTopic

from common import Deadline, check, done, fail, parser

args_parser = parser(__doc__)
args_parser.add_argument("--scenario", required=True)
args_parser.add_argument("--topic", default="tasks")
args_parser.add_argument("--group", default="workers")
args_parser.add_argument("--count", type=int, default=1000)
args_parser.add_argument("--accept", type=int, default=0)
args_parser.add_argument("--idle", type=float, default=3.0)
args_parser.add_argument("--amqp-port", default="5672")
args_parser.add_argument("--dlq", default="")
args = args_parser.parse_args()


def create_topic(topic, partitions=4):
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        try:
            future.result(timeout=30)
        except Exception as error:  # an existing topic is fine: scenarios run in phases
            if "already exists" not in str(error):
                raise


def produce(topic, count, size=100):
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5})
    errors = []

    def report(error, _message):
        if error is not None:
            errors.append(error)

    for i in range(count):
        value = (b"%08d" % i).ljust(size, b".")
        producer.produce(topic, value=value, key=b"%d" % i, on_delivery=report)
        if i % 10000 == 0:
            producer.poll(0)
    check(producer.flush(60) == 0, "produce: not every record delivered")
    check(not errors, "produce: delivery errors", first=errors[:3])


def consumer(name):
    share = ShareConsumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "client.id": name,
            "share.acknowledgement.mode": "explicit",
            **({"debug": os.environ["SHARE_DEBUG"]} if os.environ.get("SHARE_DEBUG") else {}),
        }
    )
    share.subscribe([args.topic])
    return share


def poll_records(share, timeout=0.5):
    out = []
    for message in share.poll(timeout):
        if message.error() is not None:
            fail(f"poll: {message.error()}")
        out.append(message)
    return out


def commit(share, what):
    results = share.commit_sync(30)
    for partition, error in (results or {}).items():
        check(error is None, f"{what}: commit of {partition} failed: {error}")


def take(share, idle, limit=None):
    """Accepts everything until `idle` seconds pass with nothing (or `limit` records)."""
    got = []
    quiet_since = time.monotonic()
    deadline = Deadline(600, "take")
    while time.monotonic() - quiet_since < idle and (limit is None or len(got) < limit):
        deadline.check(got=len(got))
        messages = poll_records(share)
        if messages:
            quiet_since = time.monotonic()
        for message in messages:
            got.append((message.partition(), message.offset(), message.delivery_count()))
            share.acknowledge(message, AcknowledgeType.ACCEPT)
        if messages:
            commit(share, "take")
    return got


def split():
    create_topic(args.topic)
    produce(args.topic, args.count)
    received = {"a": [], "b": []}

    def work(name):
        share = consumer(name)
        received[name] = take(share, args.idle)
        share.close()

    threads = [threading.Thread(target=work, args=(name,)) for name in received]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pairs = [(p, o) for name in received for (p, o, _) in received[name]]
    check(len(pairs) == len(set(pairs)), "a record was accepted twice",
          total=len(pairs), distinct=len(set(pairs)))
    check(len(pairs) == args.count, "not every record was accepted",
          accepted=len(pairs), produced=args.count)
    late = consumer("c")
    leftover = take(late, 2.0)
    late.close()
    check(not leftover, "a third consumer got accepted records again", first=leftover[:5])
    done(a=len(received["a"]), b=len(received["b"]), accepted=len(pairs))


def release():
    create_topic(args.topic)
    share = consumer("r")
    produce(args.topic, 1)
    first = next_record(share)
    share.acknowledge(first, AcknowledgeType.RELEASE)
    commit(share, "release")
    again = next_record(share)
    check((again.partition(), again.offset()) == (first.partition(), first.offset()),
          "another record came back than the released one")
    share.acknowledge(again, AcknowledgeType.ACCEPT)
    commit(share, "accept")
    share.close()
    done(first_count=first.delivery_count(), second_count=again.delivery_count())


def next_record(share, seconds=30):
    deadline = Deadline(seconds, "a record")
    while True:
        deadline.check()
        messages = poll_records(share)
        if messages:
            check(len(messages) == 1, "more records than produced", got=len(messages))
            return messages[0]


def read_dead_letters(count):
    """The records of the dead-letter topic --dlq: (reason, source offset, value)."""
    from confluent_kafka import Consumer

    reader = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "dlq-reader",
                       "auto.offset.reset": "earliest"})
    reader.subscribe([args.dlq])
    got = []
    deadline = Deadline(30, "dead letters")
    while len(got) < count:
        deadline.check(got=got)
        message = reader.poll(0.5)
        if message is None:
            continue
        check(message.error() is None, f"dlq: {message.error()}")
        headers = {k: v.decode() for k, v in (message.headers() or [])}
        got.append((headers.get("__dlq.errors.reason"), headers.get("__dlq.errors.offset"),
                    headers.get("__dlq.errors.group"), message.value().decode()[:8]))
    reader.close()
    return sorted(got)


def reject():
    create_topic(args.topic)
    if args.dlq:
        create_topic(args.dlq, 1)
    share = consumer("x")
    produce(args.topic, 2)
    deliveries = {}
    rejected = None
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < args.idle:
        for message in poll_records(share):
            quiet_since = time.monotonic()
            key = (message.partition(), message.offset())
            deliveries[key] = deliveries.get(key, 0) + 1
            if rejected is None or rejected == key:
                rejected = key
                share.acknowledge(message, AcknowledgeType.REJECT)
            else:
                share.acknowledge(message, AcknowledgeType.RELEASE)
        commit(share, "reject")
    share.close()
    other = [count for key, count in deliveries.items() if key != rejected]
    dead = read_dead_letters(2) if args.dlq else []
    done(rejected_deliveries=deliveries.get(rejected, 0), released_deliveries=other,
         dead_letters=dead)


def hold():
    create_topic(args.topic)
    share = consumer("h")
    deadline = Deadline(30, "records to hold")
    held = []
    while not held:
        deadline.check()
        held = poll_records(share)
    print(json.dumps({"ok": True, "held": [(m.partition(), m.offset()) for m in held]}), flush=True)
    os._exit(0)


def accept_some():
    """Accepts the first --accept records (committed durably), then exits holding the rest of
    the batch that reached that count (or the next batch): at least one record held."""
    create_topic(args.topic)
    share = consumer("s")
    accepted, held = [], []
    deadline = Deadline(30, "records to accept and hold")
    while not held:
        deadline.check(accepted=len(accepted))
        for message in poll_records(share):
            if len(accepted) < args.accept:
                share.acknowledge(message, AcknowledgeType.ACCEPT)
                accepted.append((message.partition(), message.offset()))
            else:
                held.append(message)
        commit(share, "accept-some")
    print(json.dumps({"ok": True, "accepted": accepted, "held": len(held)}), flush=True)
    os._exit(0)


def take_all():
    create_topic(args.topic)
    share = consumer("t")
    got = take(share, args.idle)
    share.close()
    done(records=got)


def mixed():
    """pika consumers and a share consumer on one AMQP queue: each message processed once."""
    import pika

    host, port = args.bootstrap.split(":")[0], int(args.amqp_port)
    params = pika.ConnectionParameters(host=host, port=port)
    setup = pika.BlockingConnection(params)
    channel = setup.channel()
    channel.queue_declare(queue=args.topic, durable=True)
    got = {"pika": [], "share": []}
    stop = threading.Event()

    def pika_worker():
        connection = pika.BlockingConnection(params)
        ch = connection.channel()
        ch.basic_qos(prefetch_count=10)
        for method, _props, body in ch.consume(args.topic, inactivity_timeout=0.2):
            if stop.is_set():
                break
            if method is None:
                continue
            got["pika"].append(body)
            time.sleep(0.001)  # some work, so that the share consumer gets its part
            ch.basic_ack(method.delivery_tag)
        ch.cancel()
        connection.close()

    def share_worker():
        share = consumer("m")
        while not stop.is_set():
            messages = poll_records(share)
            for message in messages:
                got["share"].append(message.value())
                share.acknowledge(message, AcknowledgeType.ACCEPT)
            if messages:
                commit(share, "mixed")
        share.close()

    threads = [threading.Thread(target=pika_worker), threading.Thread(target=share_worker)]
    for thread in threads:
        thread.start()
    time.sleep(3)  # both consuming before the first publish
    channel.confirm_delivery()
    for i in range(args.count):
        channel.basic_publish("", args.topic, b"job-%06d" % i,
                              pika.BasicProperties(delivery_mode=2))
    deadline = Deadline(120, "every message processed")
    while len(got["pika"]) + len(got["share"]) < args.count:
        deadline.check(pika=len(got["pika"]), share=len(got["share"]))
        time.sleep(0.2)
    time.sleep(args.idle)  # anything processed twice would arrive now
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    every = got["pika"] + got["share"]
    check(len(every) == len(set(every)), "a message was processed twice",
          total=len(every), distinct=len(set(every)))
    check(len(set(every)) == args.count, "not every message was processed", got=len(set(every)))
    remaining = channel.queue_declare(queue=args.topic, passive=True).method.message_count
    setup.close()
    done(pika=len(got["pika"]), share=len(got["share"]), left_in_queue=remaining)


def produce_only():
    create_topic(args.topic)
    produce(args.topic, args.count)
    done(produced=args.count)


{
    "split": split,
    "release": release,
    "reject": reject,
    "hold": hold,
    "take": take_all,
    "produce": produce_only,
    "mixed": mixed,
    "accept-some": accept_some,
}[args.scenario]()
