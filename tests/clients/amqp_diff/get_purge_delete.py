"""basic.get counts (message_count = messages left after this one), get-empty, queue.declare's
message and consumer counts, queue.purge's and queue.delete's message counts, delete if-empty and
if-unused refused with 406, and consumers cancelled by the server when their queue is deleted."""

from common import Scenario, attempt, get_all, publish, wait_for


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    q, unused, cancelled = s.queue("q"), s.queue("unused"), s.queue("cancelled")
    channel.queue_declare(q)
    for i in range(5):
        publish(channel, q, f"m{i}")
    outcome = {"declare_ok": counts(channel.queue_declare(q))}
    outcome["gets"] = [get_one(channel, q) for _ in range(2)]
    for i in range(3):
        publish(channel, q, f"n{i}")
    outcome["declare_after_gets"] = counts(channel.queue_declare(q, passive=True))
    outcome["delete_if_empty"] = attempt(lambda: connection.channel().queue_delete(q, if_empty=True))
    outcome["purged"] = channel.queue_purge(q).method.message_count
    outcome["get_after_purge"] = get_all(channel, q)
    for i in range(2):
        publish(channel, q, f"p{i}")
    outcome["deleted"] = channel.queue_delete(q).method.message_count

    channel.queue_declare(unused)
    consumer = connection.channel()
    consumer.basic_consume(unused, lambda *a: None, consumer_tag="c1")
    outcome["with_consumer"] = counts(channel.queue_declare(unused, passive=True))
    outcome["delete_if_unused"] = attempt(lambda: connection.channel().queue_delete(unused, if_unused=True))
    consumer.basic_cancel("c1")
    outcome["delete_if_unused_after_cancel"] = channel.queue_delete(unused, if_unused=True).method.message_count

    channel.queue_declare(cancelled)
    watcher = connection.channel()
    cancels = []
    watcher.add_on_cancel_callback(lambda frame: cancels.append(frame.method.consumer_tag))
    watcher.basic_consume(cancelled, lambda *a: None, consumer_tag="watch")
    channel.queue_delete(cancelled)
    wait_for(lambda: connection.process_data_events(0.05) or cancels, "server-sent basic.cancel")
    outcome["server_cancel"] = cancels
    outcome["watcher_open"] = watcher.is_open
    s.finish(outcome)


def counts(declare_ok):
    return [declare_ok.method.message_count, declare_ok.method.consumer_count]


def get_one(channel, queue):
    method, _properties, body = channel.basic_get(queue, auto_ack=True)
    return [body.decode(), method.message_count]


if __name__ == "__main__":
    main()
