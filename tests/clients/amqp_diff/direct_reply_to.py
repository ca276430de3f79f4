"""Direct reply-to (amq.rabbitmq.reply-to) around the happy path that properties.py covers: the
406s with their full reply texts (consuming in ack mode, a second reply consumer, publishing a
request before consuming, or after cancelling), passive declares of the pseudo-queue and of a
reply name (404 once its channel is gone), what a reply looks like (exchange, routing key,
redelivered), a reply published mandatory or with confirms, a reply to a channel that is gone
(dropped, or returned when mandatory?), and a reply name no broker issued."""

import pika
import pika.exceptions

from common import Scenario, publish, settle, wait_for

REPLY_TO = "amq.rabbitmq.reply-to"


def full(action):
    """Like common.attempt, but with the whole reply text: these texts are compared exactly."""
    try:
        result = action()
        return "ok" if result is None else result
    except pika.exceptions.ChannelClosedByBroker as error:
        return {"closed": "channel", "code": error.reply_code, "text": error.reply_text}
    except pika.exceptions.ConnectionClosedByBroker as error:
        return {"closed": "connection", "code": error.reply_code, "text": error.reply_text}
    except pika.exceptions.UnroutableError as error:
        return {"returned": [[m.method.reply_code, m.method.reply_text] for m in error.messages]}


def consume(channel, replies, auto_ack=True):
    return channel.basic_consume(
        REPLY_TO, lambda _ch, m, p, b: replies.append([b.decode(), m.exchange, m.routing_key, m.redelivered, p.correlation_id]),
        auto_ack=auto_ack)


def request_reply_to(s, caller_channel):
    """Publishes a request from `caller_channel`; returns the reply_to the server side saw."""
    server = s.channel()
    rpc = s.queue("rpc")
    server.queue_declare(rpc)
    server.queue_purge(rpc)
    caller_channel.basic_publish("", rpc, b"q", pika.BasicProperties(reply_to=REPLY_TO))
    got = []
    wait_for(lambda: got.append(server.basic_get(rpc, auto_ack=True)) or got[-1][0] is not None, "the request")
    return got[-1][1].reply_to


def main():
    s = Scenario()
    outcome = {}
    outcome["consume_with_ack"] = full(lambda: consume(s.channel(), [], auto_ack=False) and None)

    def twice():
        channel = s.channel()
        consume(channel, [])
        consume(channel, [])
    outcome["second_consumer"] = full(twice)

    def before_consume():
        channel = s.channel()
        channel.basic_publish("", "anything", b"q", pika.BasicProperties(reply_to=REPLY_TO))
        channel.queue_declare(REPLY_TO, passive=True)  # a round trip: the 406 arrives first
    outcome["request_before_consume"] = full(before_consume)

    def after_cancel():
        channel = s.channel()
        channel.basic_cancel(consume(channel, []))
        channel.basic_publish("", "anything", b"q", pika.BasicProperties(reply_to=REPLY_TO))
        channel.queue_declare(REPLY_TO, passive=True)  # a round trip: the 406 arrives first
    outcome["request_after_cancel"] = full(after_cancel)

    def passive_pseudo_queue():
        ok = s.channel().queue_declare(REPLY_TO, passive=True).method
        return [ok.queue, ok.message_count, ok.consumer_count]
    outcome["passive_pseudo_queue"] = full(passive_pseudo_queue)

    caller = s.connect()
    caller_channel = caller.channel()
    replies = []
    consume(caller_channel, replies)
    reply_to = request_reply_to(s, caller_channel)
    outcome["reply_to_shape"] = [reply_to.startswith(REPLY_TO + "."), len(reply_to) > len(REPLY_TO) + 8]

    def passive_reply_name():
        ok = s.channel().queue_declare(reply_to, passive=True).method
        return [ok.queue == reply_to, ok.message_count, ok.consumer_count]
    outcome["passive_reply_name"] = full(passive_reply_name)

    replier = s.channel()
    replier.confirm_delivery()
    returned = []
    replier.add_on_return_callback(lambda _ch, m, _p, b: returned.append([b.decode(), m.reply_code, m.reply_text]))
    publish(replier, reply_to, "plain", properties=pika.BasicProperties(correlation_id="c1"))
    outcome["mandatory_reply"] = full(lambda: publish(replier, reply_to, "mandatory", mandatory=True))
    settle(caller, [replies], minimum=2)
    replier.connection.process_data_events(0.2)
    outcome["replies"] = [r[:2] + [r[2] == reply_to] + r[3:] for r in replies]
    outcome["returned_while_alive"] = returned[:]

    caller_channel.close()
    gone = full(passive_reply_name)
    # The reply name is the broker's own token: only its place in the text is compared.
    outcome["passive_reply_name_gone"] = {**gone, "text": gone["text"].replace(reply_to, "R")}
    returned.clear()
    outcome["reply_to_gone"] = full(lambda: publish(replier, reply_to, "late"))
    outcome["mandatory_reply_to_gone"] = full(lambda: publish(replier, reply_to, "late", mandatory=True))
    replier.connection.process_data_events(0.2)
    outcome["returned_when_gone"] = returned[:]
    made_up = s.channel()
    made_up.confirm_delivery()
    outcome["made_up_name"] = full(lambda: publish(made_up, REPLY_TO + ".bm90LWEtdG9rZW4.eA==", "x"))
    outcome["passive_made_up_name"] = full(
        lambda: s.channel().queue_declare(REPLY_TO + ".bm90LWEtdG9rZW4.eA==", passive=True) and None)
    s.finish(outcome)


if __name__ == "__main__":
    main()
