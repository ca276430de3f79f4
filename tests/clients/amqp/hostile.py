"""Hostile AMQP clients on raw sockets (frames built with pika's own codec): a wrong protocol
header, a frame larger than the negotiated frame-max, a method on a channel never opened, a
content body longer than its header said, and a peer that goes silent after asking for 1 s
heartbeats. Each must get the right answer (and close) from the broker; afterwards a normal
client must still be served. Prints a JSON summary."""
import json
import socket
import struct
import sys
import time

import pika
from pika import frame, spec

HOST, PORT = sys.argv[1], int(sys.argv[2])


def connect():
    sock = socket.create_connection((HOST, PORT), timeout=10)
    return sock


def read_frames(sock, want, timeout=5.0):
    """Reads frames until one of class `want` (or the socket closes); returns them all."""
    sock.settimeout(timeout)
    data = b""
    frames = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            frames.append("EOF")
            break
        data += chunk
        while True:
            consumed, decoded = frame.decode_frame(data)
            if not decoded:
                break
            data = data[consumed:]
            frames.append(decoded)
            if isinstance(decoded, frame.Method) and isinstance(decoded.method, want):
                return frames
    return frames


def send_method(sock, channel, method):
    sock.sendall(frame.Method(channel, method).marshal())


def handshake(sock, heartbeat=0, frame_max=131072):
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    read_frames(sock, spec.Connection.Start)
    send_method(sock, 0, spec.Connection.StartOk(
        client_properties={}, mechanism="PLAIN", response=b"\x00guest\x00guest", locale="en_US"))
    tune = read_frames(sock, spec.Connection.Tune)[-1].method
    send_method(sock, 0, spec.Connection.TuneOk(channel_max=tune.channel_max,
                                                frame_max=frame_max, heartbeat=heartbeat))
    send_method(sock, 0, spec.Connection.Open(virtual_host="/"))
    read_frames(sock, spec.Connection.OpenOk)
    return tune


def close_code(frames):
    for decoded in frames:
        if isinstance(decoded, frame.Method) and isinstance(
                decoded.method, (spec.Connection.Close, spec.Channel.Close)):
            return decoded.method.reply_code
    return None


def wrong_header():
    sock = connect()
    sock.sendall(b"HTTP/1.1 GET /\r\n\r\n")
    sock.settimeout(5)
    answer = sock.recv(64)
    rest = sock.recv(64)
    return {"answer": answer.hex(), "closed": rest == b""}


def oversized_frame():
    sock = connect()
    tune = handshake(sock)
    # A body frame header announcing frame_max + 1 bytes: refused before its payload is read.
    sock.sendall(struct.pack(">BHI", 3, 1, tune.frame_max + 1))
    return {"frame_max": tune.frame_max, "code": close_code(read_frames(sock, spec.Connection.Close))}


def unopened_channel():
    sock = connect()
    handshake(sock)
    send_method(sock, 7, spec.Queue.Declare(queue="hostile_queue"))
    return close_code(read_frames(sock, spec.Connection.Close))


def body_too_long():
    sock = connect()
    handshake(sock)
    send_method(sock, 1, spec.Channel.Open())
    read_frames(sock, spec.Channel.OpenOk)
    send_method(sock, 1, spec.Basic.Publish(exchange="", routing_key="nowhere"))
    sock.sendall(frame.Header(1, 3, spec.BasicProperties()).marshal())
    sock.sendall(frame.Body(1, b"abcdef").marshal())
    return close_code(read_frames(sock, spec.Connection.Close))


def silent_peer():
    sock = connect()
    handshake(sock, heartbeat=1)
    started = time.time()
    frames = read_frames(sock, (), timeout=8)
    return {"closed": frames[-1:] == ["EOF"], "after_s": round(time.time() - started, 1)}


summary = {
    "wrong_header": wrong_header(),
    "oversized_frame": oversized_frame(),
    "unopened_channel": unopened_channel(),
    "body_too_long": body_too_long(),
    "silent_peer": silent_peer(),
}
connection = pika.BlockingConnection(pika.ConnectionParameters(host=HOST, port=PORT))
channel = connection.channel()
channel.queue_declare(queue="after_hostile")
channel.basic_publish(exchange="", routing_key="after_hostile", body=b"still served")
method, _, body = channel.basic_get("after_hostile", auto_ack=True)
summary["still_served"] = body.decode() if body else None
connection.close()
print(json.dumps(summary))
