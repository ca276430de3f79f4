"""Redelivery: unacked deliveries go back to the queue, in order and flagged redelivered, when
their channel closes, when their connection closes, and on basic.recover(requeue=True); acked
ones never come back."""

from common import Scenario, bodies, get_all, publish, wait_for, message_count


def main():
    s = Scenario()
    q = s.queue("q")
    channel = s.channel()
    channel.queue_declare(q)
    channel.confirm_delivery()  # every publish is in the queue when basic_publish returns
    for i in range(5):
        publish(channel, q, f"m{i}")
    outcome = {"declared_count": message_count(channel, q)}

    # Take all five without acking, then close the channel.
    taker = channel.connection.channel()
    taken = get_all(taker, q, auto_ack=False)
    outcome["first_gets"] = taken
    taker.close()
    wait_for(lambda: message_count(channel, q) == 5, "5 messages back after channel close")
    outcome["after_channel_close"] = get_all(channel, q)

    # Consume without ack on a second connection, close the connection: all come back.
    for i in range(3):
        publish(channel, q, f"c{i}")
    consumer_connection = s.connect()
    consumer = consumer_connection.channel()
    delivered = []
    consumer.basic_consume(q, lambda ch, m, p, b: delivered.append([b.decode(), m.redelivered]))
    wait_for(lambda: consumer_connection.process_data_events(0.05) or len(delivered) == 3, "3 deliveries")
    outcome["consumed_unacked"] = delivered
    consumer_connection.close()
    wait_for(lambda: message_count(channel, q) == 3, "3 messages back after connection close")
    outcome["after_connection_close"] = get_all(channel, q)

    # Partial ack, then basic.recover(requeue=True) on the same channel.
    for i in range(4):
        publish(channel, q, f"r{i}")
    recoverer = channel.connection.channel()
    got = []
    for _ in range(4):
        method, _props, body = recoverer.basic_get(q, auto_ack=False)
        got.append((method.delivery_tag, body.decode()))
    recoverer.basic_ack(got[0][0])
    recoverer.basic_ack(got[2][0])
    recoverer.basic_recover(requeue=True)
    outcome["after_recover"] = get_all(channel, q)
    outcome["acked_are_gone"] = bodies(channel, q)
    s.finish(outcome)


if __name__ == "__main__":
    main()
