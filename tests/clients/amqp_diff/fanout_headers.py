"""Fanout (every bound queue, the key ignored) and headers exchanges (x-match all, any, the
default all, all with no criteria, typed values (int, long, string, bool, decimal, void as
presence: RabbitMQ compares type classes and values), the x- arguments ignored by all/any and
considered by all-with-x/any-with-x), the
direct exchange with one queue bound under several keys, and the default exchange."""

from decimal import Decimal

import pika

from common import Scenario, bodies, publish

HEADER_BINDINGS = {
    "all": {"x-match": "all", "format": "pdf", "type": "report"},
    "any": {"x-match": "any", "format": "pdf", "type": "report"},
    "default_all": {"format": "pdf", "type": "report"},
    "no_criteria": {"x-match": "all"},
    "number": {"x-match": "all", "size": 42},
    "text": {"x-match": "all", "size": "42"},
    "long": {"x-match": "all", "size": 2 ** 40},
    "void": {"x-match": "all", "size": None},
    "bool": {"x-match": "all", "flag": True},
    "decimal": {"x-match": "all", "ratio": Decimal("1.5")},
    "any_typed": {"x-match": "any", "size": 7, "flag": False},
    "all_with_x": {"x-match": "all-with-x", "format": "pdf", "x-tenant": "7"},
    "any_with_x": {"x-match": "any-with-x", "x-tenant": "7"},
}
MESSAGES = [
    ("both", {"format": "pdf", "type": "report"}),
    ("format-only", {"format": "pdf"}),
    ("type-only", {"type": "report"}),
    ("neither", {"format": "zip"}),
    ("no-headers", None),
    ("extra", {"format": "pdf", "type": "report", "more": "yes"}),
    ("size-42", {"size": 42}),
    ("size-text", {"size": "42"}),
    ("size-long", {"size": 2 ** 40}),
    ("size-long-text", {"size": str(2 ** 40)}),
    ("size-7", {"size": 7}),
    ("flag-true", {"flag": True}),
    ("flag-text", {"flag": "true"}),
    ("flag-one", {"flag": 1}),
    ("flag-false", {"flag": False}),
    ("ratio-decimal", {"ratio": Decimal("1.5")}),
    ("ratio-text", {"ratio": "1.5"}),
    ("tenant", {"format": "pdf", "x-tenant": "7"}),
    ("tenant-other", {"format": "pdf", "x-tenant": "8"}),
]


def main():
    s = Scenario()
    channel = s.channel()
    channel.confirm_delivery()
    outcome = {"fanout": fanout(s, channel), "direct": direct(s, channel)}
    ex = s.exchange("headers")
    channel.exchange_declare(ex, "headers")
    queues = {}
    for short, arguments in HEADER_BINDINGS.items():
        queues[short] = s.queue(f"h-{short}")
        channel.queue_declare(queues[short])
        channel.queue_bind(queues[short], ex, "ignored", arguments=arguments)
    for body, headers in MESSAGES:
        publish(channel, "any-key", body, exchange=ex, properties=pika.BasicProperties(headers=headers))
    outcome["headers"] = {short: bodies(channel, queue) for short, queue in queues.items()}
    s.finish(outcome)


def fanout(s, channel):
    ex = s.exchange("fanout")
    channel.exchange_declare(ex, "fanout")
    names = [s.queue(f"f{i}") for i in range(3)]
    for name in names[:2]:
        channel.queue_declare(name)
        channel.queue_bind(name, ex, f"key-{name}")
    channel.queue_declare(names[2])  # not bound
    publish(channel, "whatever", "one", exchange=ex)
    publish(channel, "", "two", exchange=ex)
    return [bodies(channel, name) for name in names]


def direct(s, channel):
    ex = s.exchange("direct")
    channel.exchange_declare(ex, "direct")
    q, other = s.queue("d"), s.queue("d-other")
    channel.queue_declare(q)
    channel.queue_declare(other)
    for key in ["a", "b", "a"]:  # binding twice is idempotent
        channel.queue_bind(q, ex, key)
    channel.queue_bind(other, ex, "b")
    for key in ["a", "b", "c", "A"]:
        publish(channel, key, f"to-{key}", exchange=ex)
    publish(channel, q, "default-exchange")
    publish(channel, q, "amq.direct-unbound", exchange="amq.direct")
    return {"q": bodies(channel, q), "other": bodies(channel, other)}


if __name__ == "__main__":
    main()
