"""Share groups' group configs with confluent-kafka 2.16.1's AdminClient (librdkafka 2.16 sends
ResourceType.GROUP as config resource type 32): describe_configs and incremental_alter_configs on
ConfigResource(ResourceType.GROUP, name). Scenarios:

- alter: each --set group:name=value (SET) or group:name (DELETE) as one incremental alter per
  group; prints each group's error code and message (0 when accepted).
- describe: describes each --group; prints {group: {name: [value, source]}}.
"""

import json

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from common import done, parser

args_parser = parser(__doc__)
args_parser.add_argument("--scenario", required=True)
args_parser.add_argument("--set", action="append", default=[])
args_parser.add_argument("--group", action="append", default=[])
args = args_parser.parse_args()


def alter(admin):
    by_group = {}
    for item in args.set:
        group, _, rest = item.partition(":")
        name, equals, value = rest.partition("=")
        if equals:
            entry = ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        else:
            entry = ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE)
        by_group.setdefault(group, []).append(entry)
    resources = [
        ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
        for group, entries in by_group.items()
    ]
    answers = {}
    for resource, future in admin.incremental_alter_configs(resources).items():
        try:
            future.result(timeout=30)
            answers[resource.name] = [0, ""]
        except KafkaException as error:
            answers[resource.name] = [error.args[0].code(), error.args[0].str()]
    done(answers=answers)


def describe(admin):
    resources = [ConfigResource(ResourceType.GROUP, group) for group in args.group]
    described = {}
    for resource, future in admin.describe_configs(resources).items():
        entries = future.result(timeout=30)
        described[resource.name] = {
            name: [entry.value, getattr(entry.source, "value", entry.source)]
            for name, entry in sorted(entries.items())
        }
    done(groups=described)


admin = AdminClient({"bootstrap.servers": args.bootstrap})
{"alter": alter, "describe": describe}[args.scenario](admin)
