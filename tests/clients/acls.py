"""Kafka ACLs with confluent-kafka 2.16.1 (librdkafka 2.16) against a broker whose authorizer is
on. Every connection is User:ANONYMOUS until SASL lands, so the ACLs name that principal (and
User:guest, the AMQP side's). Scenarios:

- create_topics: creates each --topic (1 partition).
- create_acls: AdminClient.create_acls of each --acl, written
  PERMISSION:OPERATION:PATTERN:TYPE:NAME:PRINCIPAL (DENY:WRITE:LITERAL:TOPIC:orders:User:ANONYMOUS;
  the principal last, as it holds a colon; the Cluster type is confluent-kafka's BROKER).
- describe_acls: every binding (a filter of ANY), as sorted lists of the same six fields.
- delete_acls: AdminClient.delete_acls with one exact filter per --acl; prints what each deleted.
- produce: one record to each --topic; prints each topic's delivery error name ("" when stored).
- offsets: each --topic's end offset (ListOffsets), or its error name.
- metadata: the topics a full Metadata lists, and, for each --topic, the error a Metadata naming
  it answers.
- consume: a consumer of group --group subscribed to each --topic; prints the first error a poll
  reports ("" if it reads a record first).
"""

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from common import Deadline, done, parser

args_parser = parser(__doc__)
args_parser.add_argument("--scenario", required=True)
args_parser.add_argument("--topic", action="append", default=[])
args_parser.add_argument("--acl", action="append", default=[])
args_parser.add_argument("--group", default="acl-group")
args = args_parser.parse_args()


def binding(spec, kind=AclBinding):
    permission, operation, pattern, resource, name, principal = spec.split(":", 5)
    return kind(
        ResourceType[resource],
        name,
        ResourcePatternType[pattern],
        principal,
        "*",
        AclOperation[operation],
        AclPermissionType[permission],
    )


def fields(found):
    return [
        found.permission_type.name,
        found.operation.name,
        found.resource_pattern_type.name,
        found.restype.name,
        found.name,
        found.principal,
    ]


def create_topics(admin):
    futures = admin.create_topics([NewTopic(topic, 1) for topic in args.topic])
    for future in futures.values():
        future.result(timeout=30)
    done(created=args.topic)


def create_acls(admin):
    for future in admin.create_acls([binding(spec) for spec in args.acl]).values():
        future.result(timeout=30)
    done(created=len(args.acl))


def describe_acls(admin):
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    found = admin.describe_acls(everything).result(timeout=30)
    done(acls=sorted(fields(one) for one in found))


def delete_acls(admin):
    filters = [binding(spec, AclBindingFilter) for spec in args.acl]
    deleted = []
    for future in admin.delete_acls(filters).values():
        deleted.extend(fields(one) for one in future.result(timeout=30))
    done(deleted=sorted(deleted))


def produce(_admin):
    errors = {}

    def report(error, message):
        errors[message.topic()] = error.name() if error else ""

    producer = Producer({"bootstrap.servers": args.bootstrap, "message.timeout.ms": 15000})
    for topic in args.topic:
        producer.produce(topic, b"value", on_delivery=report)
    producer.flush(30)
    done(errors=errors)


def offsets(_admin):
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "acl-offsets"})
    ends = {}
    for topic in args.topic:
        try:
            ends[topic] = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=15)[1]
        except KafkaException as error:
            ends[topic] = error.args[0].name()
    consumer.close()
    done(ends=ends)


def metadata(admin):
    listed = sorted(admin.list_topics(timeout=15).topics)
    named = {}
    for topic in args.topic:
        answer = admin.list_topics(topic=topic, timeout=15).topics[topic]
        named[topic] = answer.error.name() if answer.error else ""
    done(listed=listed, named=named)


def consume(_admin):
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(args.topic)
    deadline = Deadline(30, "a record or an error")
    error = None
    while error is None:
        deadline.check()
        message = consumer.poll(0.5)
        if message is not None:
            error = message.error().name() if message.error() else ""
    consumer.close()
    done(error=error)


admin_client = AdminClient({"bootstrap.servers": args.bootstrap})
globals()[args.scenario](admin_client)
