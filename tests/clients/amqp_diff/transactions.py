"""Transactions and the rarer channel methods: publishes inside tx.select are invisible until
tx.commit and dropped by tx.rollback, acks inside a transaction take effect at commit,
tx.commit without tx.select is 406, basic.recover(requeue=False), and channel.flow."""

from common import Scenario, attempt, get_all, message_count, publish


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    q = s.queue("q")
    channel.queue_declare(q)
    outcome = {"tx": attempt_tx(connection.channel(), channel, q)}
    # Each on its own connection: brokers answer some of these with a connection error (540).
    outcome["commit_without_select"] = attempt(lambda: s.channel().tx_commit())
    outcome["recover_no_requeue"] = attempt(lambda: s.channel().basic_recover(requeue=False))
    flow = s.connect().channel()
    outcome["flow_off"] = attempt(lambda: flow.flow(False))
    s.finish(outcome)


def attempt_tx(tx, channel, q):
    """The transaction steps, or how the broker refused tx.select (540 is what the issue allows)."""
    selected = attempt(lambda: tx.tx_select())
    if selected != "ok":
        return {"select": selected}
    outcome = {}
    publish(tx, q, "t1")
    publish(tx, q, "t2")
    outcome["before_commit"] = message_count(channel, q)
    tx.tx_commit()
    outcome["after_commit"] = message_count(channel, q)
    publish(tx, q, "t3")
    tx.tx_rollback()
    outcome["after_rollback"] = message_count(channel, q)
    method, _properties, _body = tx.basic_get(q, auto_ack=False)
    tx.basic_ack(method.delivery_tag)
    tx.tx_rollback()  # the ack is dropped: t1 stays unacked on this channel
    tx.close()
    outcome["after_ack_rolled_back"] = get_all(channel, q)
    return outcome


if __name__ == "__main__":
    main()
