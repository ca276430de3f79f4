"""Stream queues (x-queue-type=stream) against the real binary, in steps the test runs around
restarts and kills. Prints a JSON summary.

  stream.py URL publish N   declares stream `events`, publishes N persistent messages with
                            confirms (e0..), reads them all from `first` acking each, then reads
                            again from `first`: a stream keeps what was consumed and acked
  stream.py URL replay      reads `events` from `first` until quiet: bodies in order, offsets
  stream.py URL retention N declares `small_events` with x-max-length-bytes and tiny segments,
                            publishes N messages of 200 bytes with confirms
  stream.py URL aged N      the same for `aged_events` with x-max-age 1s
  stream.py URL first Q     the x-stream-offset of the first message a `first` consumer of Q gets
  stream.py URL kafka BOOTSTRAP N
                            reads topic `events` with kafka-python from the earliest offset
  stream.py URL big N BYTES declares `big_events`, publishes N messages of BYTES (the last one
                            confirmed: the log is written up to it)
  stream.py URL read_all Q PID
                            reads Q from `first` (prefetch 200), sampling the broker's VmRSS
"""
import json
import sys
import time

import pika

URL, STEP = sys.argv[1], sys.argv[2]
STREAM = {"x-queue-type": "stream"}
DEADLINE_SECONDS = 30


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def read_from_first(channel, queue, expected=None, quiet=1.0):
    """(body, x-stream-offset) of every delivery from `first`, each acked, until `expected` came
    (or, without it, nothing came for `quiet` seconds)."""
    channel.basic_qos(prefetch_count=50)
    got = []
    deadline = time.time() + DEADLINE_SECONDS
    arguments = {"x-stream-offset": "first"}
    for method, properties, body in channel.consume(queue, arguments=arguments, inactivity_timeout=quiet):
        if method is None:
            if expected is None or time.time() > deadline:
                break
            continue
        got.append([body.decode(), properties.headers["x-stream-offset"]])
        channel.basic_ack(method.delivery_tag)
        if expected is not None and len(got) >= expected:
            break
    channel.cancel()
    return got


def in_order(got):
    return all(offset == index for index, (_body, offset) in enumerate(got))


def publish(count):
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("events", durable=True, arguments=STREAM)
    persistent = pika.BasicProperties(delivery_mode=2)
    for i in range(count):
        channel.basic_publish("", "events", f"e{i}".encode(), persistent)
    first = read_from_first(channel, "events", count)
    again = read_from_first(channel, "events", count)
    connection.close()
    return {
        "confirmed": count,
        "first_read": len(first),
        "in_order": in_order(first),
        "again": len(again),
        "same": first == again,
    }


def replay():
    connection = connect()
    channel = connection.channel()
    got = read_from_first(channel, "events")
    connection.close()
    return {"bodies": [body for body, _offset in got], "in_order": in_order(got)}


def retention(count, queue="small_events", limit=None):
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    limit = limit or {"x-max-length-bytes": 20000}
    arguments = dict(STREAM, **limit, **{"x-stream-max-segment-size-bytes": 4096})
    channel.queue_declare(queue, durable=True, arguments=arguments)
    for i in range(count):
        channel.basic_publish("", queue, f"{i:06d}".encode() + b"x" * 194)
    connection.close()
    return {"published": count}


def first_offset(queue):
    connection = connect()
    channel = connection.channel()
    got = read_from_first(channel, queue)
    connection.close()
    return {"first": got[0][1] if got else None, "count": len(got), "last": got[-1] if got else None}


def kafka(bootstrap, count):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        "events",
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10000,
    )
    got = []
    for record in consumer:
        exchange = dict(record.headers).get("amqp.exchange")
        got.append([record.offset, record.value.decode(), None if exchange is None else exchange.decode()])
        if len(got) >= count:
            break
    consumer.close()
    return {"records": len(got), "first": got[:2], "in_order": [r[0] for r in got] == list(range(len(got)))}


def big(count, size):
    connection = connect()
    channel = connection.channel()
    channel.queue_declare("big_events", durable=True, arguments=STREAM)
    body = b"b" * size
    for _ in range(count - 1):
        channel.basic_publish("", "big_events", body)
    confirmed = connection.channel()
    confirmed.confirm_delivery()
    confirmed.basic_publish("", "big_events", body)
    connection.close()
    return {"published": count}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def read_all(queue, pid):
    connection = connect()
    channel = connection.channel()
    channel.basic_qos(prefetch_count=200)
    rss_before = rss_kib(pid)
    rss_max, count, in_order = rss_before, 0, True
    arguments = {"x-stream-offset": "first"}
    for method, properties, _body in channel.consume(queue, arguments=arguments, inactivity_timeout=2):
        if method is None:
            break
        in_order = in_order and properties.headers["x-stream-offset"] == count
        count += 1
        channel.basic_ack(method.delivery_tag)
        if count % 2000 == 0:
            rss_max = max(rss_max, rss_kib(pid))
    channel.cancel()
    connection.close()
    return {"count": count, "in_order": in_order, "rss_before_kib": rss_before, "rss_max_kib": rss_max}


def main():
    if STEP == "publish":
        outcome = publish(int(sys.argv[3]))
    elif STEP == "replay":
        outcome = replay()
    elif STEP == "retention":
        outcome = retention(int(sys.argv[3]))
    elif STEP == "aged":
        outcome = retention(int(sys.argv[3]), "aged_events", {"x-max-age": "1s"})
    elif STEP == "first":
        outcome = first_offset(sys.argv[3])
    elif STEP == "kafka":
        outcome = kafka(sys.argv[3], int(sys.argv[4]))
    elif STEP == "big":
        outcome = big(int(sys.argv[3]), int(sys.argv[4]))
    elif STEP == "read_all":
        outcome = read_all(sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown step {STEP}")
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main()
