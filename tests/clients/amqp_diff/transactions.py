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
    outcome = {}
    tx = connection.channel()
    tx.tx_select()
    publish(tx, q, "t1")
    publish(tx, q, "t2")
    outcome["before_commit"] = message_count(channel, q)
    tx.tx_commit()
    outcome["after_commit"] = message_count(channel, q)
    publish(tx, q, "t3")
    tx.tx_rollback()
    outcome["after_rollback"] = message_count(channel, q)
    method, _properties, body = tx.basic_get(q, auto_ack=False)
    tx.basic_ack(method.delivery_tag)
    tx.tx_rollback()  # the ack is dropped: t1 stays unacked on this channel
    tx.close()
    outcome["after_ack_rolled_back"] = get_all(channel, q)
    no_tx = connection.channel()
    outcome["commit_without_select"] = attempt(lambda: no_tx.tx_commit())
    recover = connection.channel()
    outcome["recover_no_requeue"] = attempt(lambda: recover.basic_recover(requeue=False))
    flow = s.connect().channel()
    outcome["flow_off"] = attempt(lambda: flow.flow(False))
    s.finish(outcome)


if __name__ == "__main__":
    main()
