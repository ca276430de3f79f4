"""AMQP under Kafka ACLs, with pika 1.4.4: the connection is User:guest. Phases, run by the test
around its CreateAcls:
  before: declares queues `locked` and `free` (no ACL names them yet).
  after:  with User:guest denied everything on topics prefixed `locked`, each of queue.declare,
          a confirmed basic.publish and basic.get on `locked`, and exchange.declare of
          `locked-exchange`, closes its channel with 403 ACCESS_REFUSED, and `free` still takes a
          message and gives it back.
Prints a JSON summary."""
import json
import sys

import pika

URL, PHASE = sys.argv[1], sys.argv[2]


def refused(connection, action):
    """The reply code that closes a fresh channel doing `action` (0 if none does)."""
    channel = connection.channel()
    channel.confirm_delivery()
    try:
        action(channel)
    except pika.exceptions.ChannelClosedByBroker as closed:
        return [closed.reply_code, closed.reply_text]
    channel.close()
    return [0, ""]


def after(connection):
    codes = {
        "declare": refused(connection, lambda c: c.queue_declare(queue="locked")),
        "publish": refused(
            connection, lambda c: c.basic_publish(exchange="", routing_key="locked", body="x")
        ),
        "get": refused(connection, lambda c: c.basic_get(queue="locked", auto_ack=True)),
        "exchange": refused(
            connection,
            lambda c: c.exchange_declare(exchange="locked-exchange", exchange_type="fanout"),
        ),
    }
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish(exchange="", routing_key="free", body="fine")
    _, _, body = channel.basic_get(queue="free", auto_ack=True)
    return {"codes": codes, "free": body.decode() if body else None}


connection = pika.BlockingConnection(pika.URLParameters(URL))
if PHASE == "before":
    channel = connection.channel()
    channel.queue_declare(queue="locked")
    channel.queue_declare(queue="free")
    summary = {"declared": True}
else:
    summary = after(connection)
connection.close()
print(json.dumps({"ok": True, **summary}), flush=True)
