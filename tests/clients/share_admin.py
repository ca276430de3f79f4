"""What confluent-kafka 2.16.1's AdminClient (librdkafka 2.16) makes of share groups: it has no
share-group admin API and lists groups with ListGroups v5, keeping only groups of the consumer
protocol types ("" and "consumer"), so a share group (protocol type "share") is left out, as
against Kafka 4.2. A ShareConsumer joins --group and polls; a simple classic group commits an
offset; then list_consumer_groups() (every type and CLASSIC only) and the older list_groups()
(ListGroups, then DescribeGroups of each) are asked. Prints each listing's rows.
"""

from confluent_kafka import Consumer, ConsumerGroupType, ShareConsumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, done, parser

args_parser = parser(__doc__)
args_parser.add_argument("--group", default="share-admins")
args_parser.add_argument("--classic-group", default="classic-admins")
args_parser.add_argument("--topic", default="watched")
args = args_parser.parse_args()


def listed(admin, **options):
    result = admin.list_consumer_groups(**options).result(timeout=30)
    check(not result.errors, "list_consumer_groups errors", errors=[str(e) for e in result.errors])
    return sorted([g.group_id, g.type.name, g.state.name] for g in result.valid)


def main():
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(args.topic, 2, 1)]).values():
        future.result(timeout=30)
    share = ShareConsumer({"bootstrap.servers": args.bootstrap, "group.id": args.group})
    share.subscribe([args.topic])
    for _ in range(6):  # joins within the first heartbeats
        share.poll(0.5)
    classic = Consumer({"bootstrap.servers": args.bootstrap, "group.id": args.classic_group})
    classic.commit(offsets=[TopicPartition(args.topic, 0, 0)], asynchronous=False)
    classic.close()
    every = listed(admin)
    classic_only = listed(admin, types={ConsumerGroupType.CLASSIC})
    old = sorted([g.id, g.protocol_type, g.state] for g in admin.list_groups(timeout=30))
    share.close()
    done(every=every, classic_only=classic_only, list_groups=old)


main()
