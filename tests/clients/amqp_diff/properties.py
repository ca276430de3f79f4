"""Content properties are carried through unchanged (every basic property, header tables with
every field type pika encodes; pika has no float), a user-id that is not the connection's user is 406, a body split
over several frames arrives whole, an empty body arrives empty, and direct reply-to
(amq.rabbitmq.reply-to) carries an RPC reply back to the caller."""

import datetime
import decimal

import pika
import pika.exceptions

from common import Scenario, attempt, publish, wait_for

HEADERS = {
    "text": "héllo", "int": 7, "negative": -70000, "long": 2**40, "true": True,
    "false": False, "none": None, "bytes": b"\x00\x01", "list": [1, "two", [3]],
    "table": {"nested": {"deep": 1}}, "decimal": decimal.Decimal("1.25"),
    "time": datetime.datetime(2024, 1, 2, 3, 4, 5),
}


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    q = s.queue("q")
    channel.queue_declare(q)
    properties = pika.BasicProperties(
        content_type="application/json", content_encoding="utf-8", headers=HEADERS, delivery_mode=2,
        priority=3, correlation_id="corr-1", reply_to="replies", expiration="60000", message_id="id-1",
        timestamp=1700000000, type="kind", user_id="guest", app_id="app")
    publish(channel, q, "{}", properties=properties)
    publish(channel, q, "")
    publish(channel, q, "x" * 300000)  # larger than the default frame-max: several body frames
    outcome = {}
    method, got, body = channel.basic_get(q, auto_ack=True)
    outcome["properties"] = {k: v for k, v in vars(got).items()}
    outcome["body"] = body
    _method, got, body = channel.basic_get(q, auto_ack=True)
    outcome["empty"] = {"body": body, "properties": {k: v for k, v in vars(got).items() if v is not None}}
    _method, _got, body = channel.basic_get(q, auto_ack=True)
    outcome["large"] = [len(body), body == b"x" * 300000]
    other_user = connection.channel()
    other_user.confirm_delivery()
    outcome["wrong_user_id"] = attempt(lambda: publish(other_user, q, "x", properties=pika.BasicProperties(user_id="someone")))
    try:
        outcome["direct_reply_to"] = direct_reply_to(s, channel)
    except pika.exceptions.ChannelClosedByBroker as error:  # a broker without direct reply-to
        outcome["direct_reply_to"] = {"closed": "channel", "code": error.reply_code}
    s.finish(outcome)


def direct_reply_to(s, channel):
    """A caller consumes amq.rabbitmq.reply-to (no-ack), a server replies to the reply_to it got."""
    rpc = s.queue("rpc")
    channel.queue_declare(rpc)
    caller = s.connect()
    caller_channel = caller.channel()
    replies = []
    caller_channel.basic_consume("amq.rabbitmq.reply-to", lambda ch, m, p, b: replies.append([b.decode(), p.correlation_id]), auto_ack=True)
    caller_channel.basic_publish("", rpc, b"question", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c-9"))
    wait_for(lambda: channel.connection.process_data_events(0.01) or channel.queue_declare(rpc, passive=True).method.message_count == 1, "the request")
    _method, request, body = channel.basic_get(rpc, auto_ack=True)
    reply_to_prefix = request.reply_to.split(".")[0:3]
    channel.basic_publish("", request.reply_to, b"answer:" + body, pika.BasicProperties(correlation_id=request.correlation_id))
    wait_for(lambda: caller.process_data_events(0.05) or replies, "the reply")
    return {"replies": replies, "reply_to_prefix": ".".join(reply_to_prefix)}


if __name__ == "__main__":
    main()
