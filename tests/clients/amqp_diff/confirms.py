"""Publisher confirms with pika: every publish to a queue is acked; an unroutable mandatory one
is returned then acked; a publish to a full reject-publish queue is nacked; confirm.select is
idempotent; tx.select on a confirm channel and confirm.select on a tx channel are 406."""

import pika.exceptions

from common import Scenario, attempt, get_all, publish


def outcome_of_publish(channel, exchange, key, body, mandatory=False):
    try:
        publish(channel, key, body, exchange=exchange, mandatory=mandatory)
        return "ack"
    except pika.exceptions.NackError:
        return "nack"
    except pika.exceptions.UnroutableError:
        return "returned"


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    q, full = s.queue("q"), s.queue("full")
    channel.queue_declare(q)
    channel.queue_declare(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    channel.confirm_delivery()
    outcome = {"publishes": [outcome_of_publish(channel, "", q, f"m{i}") for i in range(20)]}
    outcome["to_full_queue"] = outcome_of_publish(channel, "", full, "no-room")
    outcome["unroutable_mandatory"] = outcome_of_publish(channel, "amq.direct", "nobody", "x", mandatory=True)
    outcome["unroutable"] = outcome_of_publish(channel, "amq.direct", "nobody", "x")
    outcome["select_again"] = attempt(lambda: channel.confirm_delivery())
    outcome["stored"] = [body for body, _r, _c in get_all(channel, q)]
    outcome["tx_on_confirm_channel"] = attempt(lambda: channel.tx_select())
    # Its own connection: a broker without transactions closes the connection (540) at tx.select.
    outcome["confirm_on_tx_channel"] = attempt(lambda: confirm_after_tx(s.channel()))
    s.finish(outcome)


def confirm_after_tx(channel):
    channel.tx_select()
    channel.confirm_delivery()


if __name__ == "__main__":
    main()
