"""One group id is one group (Kafka's GroupMetadataManager), with confluent-kafka 2.16.1: a
ShareConsumer holds --share-group, then a classic Consumer subscribing with that id is refused
(JoinGroup INCONSISTENT_GROUP_PROTOCOL) and its offset commit too (GROUP_ID_NOT_FOUND); a classic
Consumer commits an offset for --classic-group, then a ShareConsumer with that id gets no record
(ShareGroupHeartbeat GROUP_ID_NOT_FOUND) while a ShareConsumer of --share-group does. Prints the
error names each client saw.
"""

from confluent_kafka import Consumer, KafkaException, Producer, ShareConsumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import Deadline, check, done, parser

args_parser = parser(__doc__)
args_parser.add_argument("--share-group", default="ns-share")
args_parser.add_argument("--classic-group", default="ns-classic")
args_parser.add_argument("--topic", default="ns-topic")
args = args_parser.parse_args()


def share_consumer(group, errors):
    share = ShareConsumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": group,
        "error_cb": lambda error: errors.append(error.name()),
    })
    share.subscribe([args.topic])
    return share


def share_records(share, seconds, errors):
    """Records polled in `seconds`; a fatal error (librdkafka raises it) ends the polling."""
    got = 0
    deadline = Deadline(seconds, "polling")
    while not deadline.expired():
        try:
            messages = share.poll(0.5) or []
        except KafkaException as error:
            errors.append(error.args[0].name())
            return got
        got += sum(1 for message in messages if message.error() is None)
    return got


def classic_refused(errors):
    classic = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.share_group,
        "error_cb": lambda error: errors.append(error.name()),
    })
    classic.subscribe([args.topic])
    deadline = Deadline(8, "the classic consumer's join")
    while not deadline.expired() and not errors:
        message = classic.poll(0.5)
        if message is not None and message.error() is not None:
            errors.append(message.error().name())
    try:
        classic.commit(offsets=[TopicPartition(args.topic, 0, 1)], asynchronous=False)
        commit = "NO_ERROR"
    except KafkaException as error:
        commit = error.args[0].name()
    classic.close()
    return commit


def main():
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(args.topic, 1, 1)]).values():
        future.result(timeout=30)
    owner_errors, classic_errors, intruder_errors = [], [], []
    owner = share_consumer(args.share_group, owner_errors)
    share_records(owner, 3, owner_errors)  # joined within the first heartbeats
    commit = classic_refused(classic_errors)

    plain = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.classic_group})
    plain.commit(offsets=[TopicPartition(args.topic, 0, 0)], asynchronous=False)
    plain.close()
    intruder = share_consumer(args.classic_group, intruder_errors)
    producer = Producer({"bootstrap.servers": args.bootstrap})
    for i in range(10):
        producer.produce(args.topic, b"r%d" % i)
    check(producer.flush(30) == 0, "produce")
    owner_got = share_records(owner, 5, owner_errors)
    intruder_got = share_records(intruder, 3, intruder_errors)
    owner.close()
    intruder.close()
    done(classic_errors=sorted(set(classic_errors)), commit=commit, owner_got=owner_got,
         owner_errors=sorted(set(owner_errors)),
         intruder_got=intruder_got, intruder_errors=sorted(set(intruder_errors)))


main()
