"""Transactions and the rarer channel methods: publishes inside tx.select are invisible until
tx.commit and dropped by tx.rollback, acks inside a transaction take effect at commit,
tx.commit without tx.select is 406, basic.recover(requeue=False), and channel.flow. Then: a
rolled-back ack leaves its delivery unacked (acked again and committed, it is gone), nack and
reject with and without requeue at commit, a mandatory unroutable publish is returned at
commit, tx.select twice, tx.rollback without tx.select, an empty commit, a publish to a missing
exchange inside a transaction, and a transaction across two queues."""

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
    outcome["rollback_without_select"] = attempt(lambda: s.channel().tx_rollback())
    outcome["acks"] = attempt_or(lambda: tx_acks(s))
    outcome["returns"] = attempt_or(lambda: tx_returns(s))
    outcome["missing_exchange"] = attempt_or(lambda: tx_missing_exchange(s))
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


def attempt_or(action):
    """The action's outcome, or how the broker closed on it."""
    result = {}
    closed = attempt(lambda: result.update(action()))
    return result if closed == "ok" else closed


def tx_acks(s):
    """Acks, nacks and rejects buffered until commit; a rolled-back ack can be given again."""
    connection = s.connect()
    tx, channel = connection.channel(), connection.channel()
    q, q2 = s.queue("acks"), s.queue("acks2")
    for name in (q, q2):
        channel.queue_declare(name)
    for body in ("a1", "a2", "a3", "a4", "a5"):
        publish(channel, q, body)
    tx.tx_select()
    tx.tx_select()  # a second select is answered too
    tags = [tx.basic_get(q, auto_ack=False)[0].delivery_tag for _ in range(5)]
    outcome = {"empty_commit": attempt(lambda: tx.tx_commit())}
    tx.basic_ack(tags[0])
    tx.tx_rollback()
    tx.basic_ack(tags[0])  # acked again after the rollback, then committed: gone
    tx.basic_nack(tags[1], requeue=True)
    tx.basic_nack(tags[2], requeue=False)
    tx.basic_reject(tags[3], requeue=True)
    tx.basic_reject(tags[4], requeue=False)
    publish(tx, q2, "x1")
    publish(tx, q, "x2")
    outcome["before_commit"] = [message_count(channel, q), message_count(channel, q2)]
    tx.tx_commit()
    outcome["after_commit"] = [get_all(channel, q), get_all(channel, q2)]
    tx.close()
    outcome["after_close"] = get_all(channel, q)
    return outcome


def tx_returns(s):
    """A mandatory publish that routes nowhere is returned at commit, not at publish."""
    connection = s.connect()
    tx = connection.channel()
    returned = []
    tx.add_on_return_callback(lambda _ch, m, _p, b: returned.append([b.decode(), m.reply_code]))
    tx.tx_select()
    publish(tx, s.name("nowhere"), "r1", mandatory=True)
    tx.queue_declare(s.queue("returns"))  # a round trip
    connection.process_data_events(0.2)
    outcome = {"before_commit": returned[:]}
    tx.tx_commit()
    connection.process_data_events(0.2)
    outcome["after_commit"] = returned[:]
    publish(tx, s.name("nowhere"), "r2", mandatory=True)
    tx.tx_rollback()
    connection.process_data_events(0.2)
    outcome["after_rollback"] = returned[:]
    return outcome


def tx_missing_exchange(s):
    """A publish to a missing exchange is refused at once (404), inside a transaction too."""
    tx = s.channel()
    tx.tx_select()
    publish(tx, "", "k", exchange=s.name("missing-x"))
    tx.tx_commit()
    return {"committed": True}


if __name__ == "__main__":
    main()
