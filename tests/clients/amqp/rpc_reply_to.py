"""Direct reply-to RPC with many callers and repliers on their own connections over two shards:
every caller consumes amq.rabbitmq.reply-to and sends requests to one queue; repliers answer to
the reply_to each request carries. Connections are opened until each shard has callers and
repliers, so that replies cross shards and stay on one. A connection's shard is read from a
reply name it is given (Weir's names start `amq.rabbitmq.reply-to.<connection id in hex>`, the
shard in the id's top bits). Prints a JSON summary."""
import json
import sys
import time

import pika

URL = sys.argv[1]
REPLY_TO = "amq.rabbitmq.reply-to"
QUEUE = "rpc_reply_to_requests"
REQUESTS_PER_CALLER = 25
DEADLINE_SECONDS = 20.0


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def shard_of(reply_name):
    return int(reply_name[len(REPLY_TO) + 1:].split(".")[0], 16) >> 40


def own_shard(connection):
    """Asks for a reply name on `connection` (a request to itself) and reads its shard."""
    channel = connection.channel()
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_consume(REPLY_TO, lambda *_: None, auto_ack=True)
    channel.basic_publish("", queue, b"", pika.BasicProperties(reply_to=REPLY_TO))
    end = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < end:
        _method, properties, _body = channel.basic_get(queue, auto_ack=True)
        if properties is not None:
            channel.close()
            return shard_of(properties.reply_to)
    raise AssertionError("no request came back")


def on_shards(count_per_shard, shards=2, attempts=64):
    """Connections until each shard has `count_per_shard`: [(connection, shard)]."""
    chosen, spare = [], []
    for _ in range(attempts):
        connection = connect()
        shard = own_shard(connection)
        if sum(1 for _, s in chosen if s == shard) < count_per_shard:
            chosen.append((connection, shard))
        else:
            spare.append(connection)
        if len(chosen) == count_per_shard * shards:
            break
    for connection in spare:
        connection.close()
    return chosen


setup = connect()
setup.channel().queue_declare(QUEUE)
callers = on_shards(2)
repliers = on_shards(1)
pairs = {"cross_shard": 0, "same_shard": 0}
wrong = []

for connection, shard in repliers:
    channel = connection.channel()

    def answer(channel, method, properties, body, shard=shard):
        pairs["cross_shard" if shard_of(properties.reply_to) != shard else "same_shard"] += 1
        channel.basic_publish("", properties.reply_to, b"re:" + body,
                              pika.BasicProperties(correlation_id=properties.correlation_id))
    channel.basic_consume(QUEUE, answer, auto_ack=True)

replies = {}
for index, (connection, _shard) in enumerate(callers):
    channel = connection.channel()
    replies[index] = []

    def on_reply(_channel, method, properties, body, index=index):
        replies[index].append((properties.correlation_id, body.decode(), method.routing_key))
    channel.basic_consume(REPLY_TO, on_reply, auto_ack=True)
    for number in range(REQUESTS_PER_CALLER):
        channel.basic_publish("", QUEUE, f"{index}-{number}".encode(),
                              pika.BasicProperties(reply_to=REPLY_TO, correlation_id=f"{index}-{number}"))

total = len(callers) * REQUESTS_PER_CALLER
end = time.monotonic() + DEADLINE_SECONDS
while sum(len(r) for r in replies.values()) < total and time.monotonic() < end:
    for connection, _shard in repliers + callers:
        connection.process_data_events(time_limit=0)
    time.sleep(0.005)

for index, got in replies.items():
    for correlation_id, body, routing_key in got:
        if not correlation_id.startswith(f"{index}-") or body != f"re:{correlation_id}" \
                or not routing_key.startswith(REPLY_TO + "."):
            wrong.append([index, correlation_id, body])

print(json.dumps({
    "requests": total,
    "replies": sum(len(r) for r in replies.values()),
    "wrong": wrong,
    "caller_shards": sorted(shard for _, shard in callers),
    "replier_shards": sorted(shard for _, shard in repliers),
    **pairs,
}), flush=True)
for connection, _shard in callers + repliers:
    connection.close()
setup.close()
