"""confluent-kafka AdminClient against weir, in two phases around a broker restart.

  setup:  create `admin-a` (3 partitions, retention.ms=3600000) and `admin-b` (2 partitions);
          creating `admin-a` again fails with TOPIC_ALREADY_EXISTS and an invalid name with
          INVALID_TOPIC_EXCEPTION; DescribeConfigs shows retention.ms; IncrementalAlterConfigs sets
          it to 7200000 and DescribeConfigs shows that; DeleteTopics removes `admin-b` (metadata no
          longer lists it; DescribeConfigs of it fails with UNKNOWN_TOPIC_OR_PARTITION).
  verify: after the restart, `admin-a` still has 3 partitions and retention.ms=7200000, and
          `admin-b` is still gone.
"""

import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from common import Deadline, check, done, fail, parser

args_parser = parser(__doc__)
args_parser.add_argument("phase", choices=["setup", "verify"])
args = args_parser.parse_args()

admin = AdminClient({"bootstrap.servers": args.bootstrap})


def error_code(future):
    try:
        future.result(timeout=30)
        return None
    except KafkaException as exception:
        return exception.args[0].code()


def topics():
    metadata = admin.list_topics(timeout=10)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items() if topic.error is None}


def topic_config(name):
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    return admin.describe_configs([resource])[resource].result(timeout=30)


def wait_for(condition, what):
    deadline = Deadline(15, what)
    while not condition():
        deadline.check(topics=topics())
        time.sleep(0.2)


def setup():
    futures = admin.create_topics(
        [
            NewTopic("admin-a", 3, 1, config={"retention.ms": "3600000"}),
            NewTopic("admin-b", 2, 1),
        ],
        operation_timeout=30,
    )
    for name, future in futures.items():
        check(error_code(future) is None, f"creating {name} failed", error=error_code(future))
    wait_for(lambda: topics().get("admin-a") == 3 and topics().get("admin-b") == 2, "metadata listing the new topics")

    again = admin.create_topics([NewTopic("admin-a", 3, 1)])["admin-a"]
    code = error_code(again)
    check(code == KafkaError.TOPIC_ALREADY_EXISTS, "creating admin-a twice", got=code)
    invalid = admin.create_topics([NewTopic("bad name!", 1, 1)])["bad name!"]
    code = error_code(invalid)
    check(code == KafkaError.TOPIC_EXCEPTION, "creating a topic with an invalid name", got=code)

    config = topic_config("admin-a")
    check("retention.ms" in config, "DescribeConfigs lacks retention.ms", names=sorted(config))
    check(config["retention.ms"].value == "3600000", "retention.ms after create", got=config["retention.ms"].value)

    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        "admin-a",
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)
    value = topic_config("admin-a")["retention.ms"].value
    check(value == "7200000", "retention.ms after IncrementalAlterConfigs", got=value)

    deleted = admin.delete_topics(["admin-b"], operation_timeout=30)["admin-b"]
    check(error_code(deleted) is None, "deleting admin-b failed", error=error_code(deleted))
    wait_for(lambda: "admin-b" not in topics(), "metadata dropping admin-b")
    try:
        topic_config("admin-b")
        fail("DescribeConfigs of the deleted admin-b succeeded")
    except KafkaException as exception:
        code = exception.args[0].code()
        check(code == KafkaError.UNKNOWN_TOPIC_OR_PART, "DescribeConfigs of a deleted topic", got=code)
    done(phase="setup", topics=topics())


def verify():
    listed = topics()
    check(listed.get("admin-a") == 3, "admin-a after restart", topics=listed)
    check("admin-b" not in listed, "admin-b came back after restart", topics=listed)
    value = topic_config("admin-a")["retention.ms"].value
    check(value == "7200000", "retention.ms after restart", got=value)
    done(phase="verify", topics=listed)


setup() if args.phase == "setup" else verify()
