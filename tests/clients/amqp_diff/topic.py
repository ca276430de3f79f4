"""Topic exchange matching: `*` is exactly one word, `#` zero or more, words are `.`-separated,
empty words count, matching is case-sensitive, a queue bound by several matching patterns gets
one copy, and unbinding stops the flow."""

from common import Scenario, bodies, publish

PATTERNS = {
    "star": ["user.*"],
    "hash": ["user.#"],
    "middle": ["*.created.*"],
    "tail_hash": ["#.error"],
    "everything": ["#"],
    "exact": ["user.created"],
    "empty_words": ["a..b"],
    "double": ["user.*", "user.#"],
    "star_alone": ["*"],
    "hash_star": ["#.*"],
}
KEYS = ["user.created", "user", "user.", "user.created.eu", "User.created", "order.created.eu",
        "app.db.error", "error", "a..b", "a.b", "", "x.created.y.z", "lone"]


def main():
    s = Scenario()
    channel = s.channel()
    channel.confirm_delivery()
    ex = s.exchange("topic")
    channel.exchange_declare(ex, "topic")
    queues = {}
    for short, patterns in PATTERNS.items():
        queues[short] = s.queue(short)
        channel.queue_declare(queues[short])
        for pattern in patterns:
            channel.queue_bind(queues[short], ex, pattern)
    for key in KEYS:
        publish(channel, key, f"<{key}>", exchange=ex)
    outcome = {short: bodies(channel, queue) for short, queue in queues.items()}
    channel.queue_unbind(queues["star"], ex, "user.*")
    publish(channel, "user.created", "after-unbind", exchange=ex)
    outcome["star_after_unbind"] = bodies(channel, queues["star"])
    outcome["hash_after_unbind"] = bodies(channel, queues["hash"])
    s.finish(outcome)


if __name__ == "__main__":
    main()
