"""mandatory → basic.return: an unroutable mandatory message comes back with 312 NO_ROUTE, its
exchange, routing key, properties and body (before its confirm, which is still an ack); a
non-mandatory unroutable message is dropped silently and confirmed; a routable mandatory message
is not returned; immediate is refused (540 NOT_IMPLEMENTED, a connection error) as RabbitMQ does."""

import pika
import pika.exceptions

from common import Scenario, attempt, get_all, reply_class, settle


def main():
    s = Scenario()
    connection = s.connect()
    channel = connection.channel()
    q = s.queue("q")
    ex = s.exchange("ex")
    channel.queue_declare(q)
    channel.exchange_declare(ex, "direct")
    channel.queue_bind(q, ex, "bound")
    returned = []
    channel.add_on_return_callback(
        lambda ch, method, properties, body: returned.append({
            "reply_code": method.reply_code, "reply_text": reply_class(method.reply_text),
            "exchange": method.exchange, "routing_key": method.routing_key, "body": body,
            "content_type": properties.content_type, "headers": properties.headers,
        }))
    properties = pika.BasicProperties(content_type="text/plain", headers={"h": "v"})
    channel.basic_publish(ex, "unbound", b"returned-1", properties, mandatory=True)
    channel.basic_publish("", s.name("no-such-queue"), b"returned-2", properties, mandatory=True)
    channel.basic_publish(ex, "unbound", b"dropped", properties, mandatory=False)
    channel.basic_publish(ex, "bound", b"routed", properties, mandatory=True)
    settle(connection, [returned], minimum=2)
    outcome = {"returned": returned, "queue": get_all(channel, q)}

    confirming = connection.channel()
    confirming.confirm_delivery()
    try:
        confirming.basic_publish(ex, "unbound", b"returned-3", mandatory=True)
        outcome["confirmed_unroutable"] = "no return"
    except pika.exceptions.UnroutableError as error:
        outcome["confirmed_unroutable"] = [m.body.decode() for m in error.messages]
    confirming.basic_publish(ex, "unbound", b"dropped-2")
    outcome["confirmed_dropped"] = "acked"

    immediate = s.connect().channel()
    outcome["immediate"] = attempt(lambda: immediate_publish(immediate, q))
    s.finish(outcome)


def immediate_publish(channel, queue):
    # pika's BlockingChannel has no `immediate` argument; its implementation channel has none
    # either, so send basic.publish with the immediate bit through the frame layer.
    from pika import spec
    impl = channel._impl
    impl._send_method(spec.Basic.Publish(exchange="", routing_key=queue, mandatory=False, immediate=True),
                      (spec.BasicProperties(), b"x"))
    channel.basic_qos(prefetch_count=1)  # a synchronous round trip that sees the close


if __name__ == "__main__":
    main()
