"""Runs of publishes (server/src/amqp/publish_run.rs): publishes written to the socket in one
write reach the broker in one read, and are stored as one record batch. Frames are built with
pika's codec and sent with one sendall each step; pika and kafka-python read the results.
Prints a JSON summary.

  runs.py URL queue BOOTSTRAP  durable queue `runs`: 40 persistent publishes with confirms in
                               one write, then 10 more, a publish to a missing exchange and 5
                               more in one write (the channel closes with 404 at the bad one);
                               what a Kafka consumer of topic `runs` reads (offset, value), then
                               what the queue holds (basic.get until empty)
  runs.py URL stream           stream `run_stream`: 20 publishes with confirms in one write; what
                               consumers starting at x-stream-offset 7 and `first` get
"""
import json
import socket
import sys
import time

import pika
from pika import frame, spec

URL, STEP = sys.argv[1], sys.argv[2]
PARAMETERS = pika.URLParameters(URL)
PERSISTENT = spec.BasicProperties(delivery_mode=2)


def raw_channel():
    """A raw socket with channel 1 open in confirm mode."""
    sock = socket.create_connection((PARAMETERS.host, PARAMETERS.port), timeout=10)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    reader = Frames(sock)
    reader.until(spec.Connection.Start)
    send(sock, 0, spec.Connection.StartOk(
        client_properties={}, mechanism="PLAIN", response=b"\x00guest\x00guest", locale="en_US"))
    tune = reader.until(spec.Connection.Tune)[-1].method
    send(sock, 0, spec.Connection.TuneOk(channel_max=tune.channel_max, frame_max=131072, heartbeat=0))
    send(sock, 0, spec.Connection.Open(virtual_host="/"))
    reader.until(spec.Connection.OpenOk)
    send(sock, 1, spec.Channel.Open())
    reader.until(spec.Channel.OpenOk)
    send(sock, 1, spec.Confirm.Select())
    reader.until(spec.Confirm.SelectOk)
    return sock, reader


class Frames:
    def __init__(self, sock):
        self.sock, self.data = sock, b""

    def next(self, deadline):
        while True:
            consumed, decoded = frame.decode_frame(self.data)
            if decoded:
                self.data = self.data[consumed:]
                return decoded
            self.sock.settimeout(max(0.01, deadline - time.time()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("broker closed the socket")
            self.data += chunk

    def until(self, want, timeout=10.0):
        deadline, frames = time.time() + timeout, []
        while True:
            decoded = self.next(deadline)
            frames.append(decoded)
            if isinstance(decoded, frame.Method) and isinstance(decoded.method, want):
                return frames


def send(sock, channel, method):
    sock.sendall(frame.Method(channel, method).marshal())


def publish_frames(exchange, key, body):
    return (frame.Method(1, spec.Basic.Publish(exchange=exchange, routing_key=key)).marshal()
            + frame.Header(1, len(body), PERSISTENT).marshal()
            + frame.Body(1, body).marshal())


def confirms(reader, count, timeout=10.0):
    """Acked and nacked delivery tags until every one of 1..=count is confirmed."""
    deadline, acked, nacked, last = time.time() + timeout, set(), set(), 0
    while len(acked) + len(nacked) < count:
        decoded = reader.next(deadline)
        if not isinstance(decoded, frame.Method):
            continue
        method = decoded.method
        if isinstance(method, (spec.Basic.Ack, spec.Basic.Nack)):
            tags = range(last + 1, method.delivery_tag + 1) if method.multiple else [method.delivery_tag]
            (acked if isinstance(method, spec.Basic.Ack) else nacked).update(tags)
            last = max(last, method.delivery_tag)
    return sorted(acked), sorted(nacked)


def kafka_read(bootstrap, topic, count):
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=10000)
    got = []
    for record in consumer:
        got.append([record.offset, record.value.decode()])
        if len(got) >= count:
            break
    consumer.close()
    return got


def queue(bootstrap):
    connection = pika.BlockingConnection(PARAMETERS)
    channel = connection.channel()
    channel.queue_declare("runs", durable=True)
    sock, reader = raw_channel()
    sock.sendall(b"".join(publish_frames("", "runs", f"r{i}".encode()) for i in range(40)))
    acked, nacked = confirms(reader, 40)
    good = b"".join(publish_frames("", "runs", f"r{i}".encode()) for i in range(40, 50))
    bad = publish_frames("no-such-exchange", "runs", b"bad")
    after = b"".join(publish_frames("", "runs", f"r{i}".encode()) for i in range(50, 55))
    sock.sendall(good + bad + after)
    closed = reader.until(spec.Channel.Close)[-1].method
    send(sock, 1, spec.Channel.CloseOk())
    sock.close()
    kafka = kafka_read(bootstrap, "runs", 50)
    held = []
    while True:
        method, _properties, body = channel.basic_get("runs", auto_ack=True)
        if method is None:
            break
        held.append(body.decode())
    connection.close()
    return {"acked": len(acked), "nacked": nacked, "bad_code": closed.reply_code,
            "kafka": kafka, "queue": held}


def stream():
    connection = pika.BlockingConnection(PARAMETERS)
    channel = connection.channel()
    channel.queue_declare("run_stream", durable=True, arguments={"x-queue-type": "stream"})
    sock, reader = raw_channel()
    sock.sendall(b"".join(publish_frames("", "run_stream", f"e{i}".encode()) for i in range(20)))
    acked, nacked = confirms(reader, 20)
    sock.close()
    read = {}
    for start in [7, "first"]:
        channel.basic_qos(prefetch_count=50)
        got = []
        arguments = {"x-stream-offset": start}
        for method, properties, body in channel.consume("run_stream", arguments=arguments,
                                                        inactivity_timeout=1.0):
            if method is None:
                break
            got.append([body.decode(), properties.headers["x-stream-offset"]])
            channel.basic_ack(method.delivery_tag)
        channel.cancel()
        read[str(start)] = got
    connection.close()
    return {"acked": len(acked), "nacked": nacked, "read": read}


if STEP == "queue":
    print(json.dumps(queue(sys.argv[3])))
elif STEP == "stream":
    print(json.dumps(stream()))
else:
    raise SystemExit(f"unknown step {STEP}")
