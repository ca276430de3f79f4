"""x-max-length with x-overflow drop-head (the oldest are dropped, and dead-lettered with reason
"maxlen") and reject-publish (new ones are nacked under confirms and never enqueued), and
x-max-length-bytes."""

import pika.exceptions

from common import Scenario, get_all, publish, x_death, message_count, settled_count


def publish_confirmed(channel, queue, body):
    try:
        publish(channel, queue, body)
        return "ack"
    except pika.exceptions.NackError:
        return "nack"


def main():
    s = Scenario()
    channel = s.channel()
    channel.confirm_delivery()
    dlx, dead = s.exchange("dlx"), s.queue("dead")
    channel.exchange_declare(dlx, "fanout")
    channel.queue_declare(dead)
    channel.queue_bind(dead, dlx)
    drop_head, reject, by_bytes = s.queue("drop-head"), s.queue("reject"), s.queue("bytes")
    channel.queue_declare(drop_head, arguments={"x-max-length": 2, "x-dead-letter-exchange": dlx})
    channel.queue_declare(reject, arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    channel.queue_declare(by_bytes, arguments={"x-max-length-bytes": 10})
    outcome = {}

    outcome["drop_head_confirms"] = [publish_confirmed(channel, drop_head, f"d{i}") for i in range(5)]
    outcome["drop_head_count"] = message_count(channel, drop_head)
    outcome["drop_head_get"] = get_all(channel, drop_head)
    # Whatever arrived by the deadline: a broker without this feature shows as a difference.
    deaths = []
    for _ in range(settled_count(channel, dead, 3)):
        _method, properties, body = channel.basic_get(dead, auto_ack=True)
        deaths.append({"body": body, "x_death": x_death(properties)})
    outcome["dropped"] = deaths

    outcome["reject_confirms"] = [publish_confirmed(channel, reject, f"r{i}") for i in range(4)]
    outcome["reject_get"] = get_all(channel, reject)
    outcome["reject_after_room"] = publish_confirmed(channel, reject, "r-late")
    outcome["reject_get_again"] = get_all(channel, reject)

    for body in ["aaaa", "bbbb", "cccc"]:  # 12 bytes > 10: the oldest goes
        publish(channel, by_bytes, body)
    outcome["bytes_get"] = get_all(channel, by_bytes)
    s.finish(outcome)


if __name__ == "__main__":
    main()
