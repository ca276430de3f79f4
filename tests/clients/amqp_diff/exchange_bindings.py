"""Exchange-to-exchange bindings: a message reaches queues through chains of exchanges, a queue
reachable by two paths gets one copy, a cycle of exchanges terminates, exchange.unbind cuts a
path, alternate-exchange catches what matches nothing, and exchange.delete if-unused is 406 while
the exchange is bound as a source."""

from common import Scenario, attempt, bodies, publish


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    top, left, right = s.exchange("top"), s.exchange("left"), s.exchange("right")
    channel.exchange_declare(top, "topic")
    channel.exchange_declare(left, "direct")
    channel.exchange_declare(right, "fanout")
    channel.exchange_bind(left, top, "a.#")   # destination, source, key
    channel.exchange_bind(right, top, "*.b")
    channel.exchange_bind(top, right, "#")    # a cycle: top → right → top
    q_left, q_right = s.queue("q-left"), s.queue("q-right")
    channel.queue_declare(q_left)
    channel.queue_declare(q_right)
    channel.queue_bind(q_left, left, "a.b")
    channel.queue_bind(q_right, right, "")
    channel.queue_bind(q_right, left, "a.b")  # a second path to q_right
    for key in ["a.b", "a.c", "x.b", "z.z"]:
        publish(channel, key, f"<{key}>", exchange=top)
    outcome = {"left": bodies(channel, q_left), "right": bodies(channel, q_right)}
    outcome["delete_bound_source_if_unused"] = attempt(lambda: connection.channel().exchange_delete(top, if_unused=True))
    channel.exchange_unbind(left, top, "a.#")
    publish(channel, "a.b", "after-unbind", exchange=top)
    outcome["after_unbind"] = {"left": bodies(channel, q_left), "right": bodies(channel, q_right)}

    alternate, main_ex, caught, q_main = s.exchange("alt"), s.exchange("main"), s.queue("caught"), s.queue("q-main")
    channel.exchange_declare(alternate, "fanout")
    channel.exchange_declare(main_ex, "direct", arguments={"alternate-exchange": alternate})
    channel.queue_declare(caught)
    channel.queue_declare(q_main)
    channel.queue_bind(caught, alternate)
    channel.queue_bind(q_main, main_ex, "known")
    for key in ["known", "unknown"]:
        publish(channel, key, f"<{key}>", exchange=main_ex)
    outcome["alternate"] = {"main": bodies(channel, q_main), "caught": bodies(channel, caught)}
    s.finish(outcome)


if __name__ == "__main__":
    main()
