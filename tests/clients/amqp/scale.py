"""Hostile scale on raw sockets (frames built with pika's own codec), while a normal pika client
keeps publishing and consuming:

  channels HOST PORT PID   10,000 channel.open on one connection, in two pipelined writes:
                           1..channel-max (all must open), then the rest (the first one past the
                           limit closes the connection). Repeated for tune-ok channel-max 0 and
                           65535, and for a few rounds to see whether memory comes back.
  idle HOST PORT PID N     N connections that complete the handshake and go silent (heartbeat 0
                           or 600 s), in four rounds: all accepted and alive, then half closed
                           politely and half dropped; the broker's descriptors and memory come
                           back.

PID is the broker's: its VmRSS and open descriptors are read from /proc. Prints a JSON summary;
the test (tests/tests/amqp.rs) holds the bounds."""
import json
import os
import resource
import socket
import struct
import sys
import time

import pika
from pika import frame, spec

CHANNEL_OPENS = 10_000
# The first round may get fresh (lazily resident) memory, the second the first's recycled (and
# zeroed, so resident) memory; the later ones show whether anything is left behind.
IDLE_ROUNDS = 4
# How long the broker may take to notice closed sockets and release them.
SETTLE_SECONDS = 30
# How long the broker may take to hand freed memory back to the OS.
RSS_SETTLE_SECONDS = 10


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def settled_rss_kib(pid):
    """The broker's RSS once it stops falling: its allocator hands freed memory back to the OS
    after a purge delay (up to about 3 s: an emptied page goes back to its arena at a shard's
    next collection, once a second, and is purged at the first collection 1 s after that;
    server/src/allocator.rs), not at the free itself. Waits until 3 s pass without a fall of
    more than 64 KiB, at most RSS_SETTLE_SECONDS."""
    deadline = time.monotonic() + RSS_SETTLE_SECONDS
    low = rss_kib(pid)
    steady_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - steady_since < 3:
        time.sleep(0.25)
        now = rss_kib(pid)
        if now < low - 64:
            steady_since = time.monotonic()
        low = min(low, now)
    return rss_kib(pid)


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Peer:
    """One raw AMQP connection: writes methods, reads frames in order."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=30)
        # tune-ok and open go in two writes before any answer: without this, Nagle holds the
        # second until the broker's delayed ACK (40 ms a handshake).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, channel, method):
        self.sock.sendall(frame.Method(channel, method).marshal())

    def send_many(self, channels, method):
        self.sock.sendall(b"".join(frame.Method(c, method).marshal() for c in channels))

    def next_frame(self, timeout=30.0):
        """The next frame, "EOF" when the broker closed the socket, None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 7:
                size = struct.unpack_from(">I", self.buffer, 3)[0]
                if len(self.buffer) >= size + 8:
                    whole, self.buffer = self.buffer[:size + 8], self.buffer[size + 8:]
                    return frame.decode_frame(whole)[1]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                return None
            except ConnectionResetError:
                return "EOF"
            if not chunk:
                return "EOF"
            self.buffer += chunk

    def expect(self, kind):
        got = self.next_frame()
        if not (isinstance(got, frame.Method) and isinstance(got.method, kind)):
            raise AssertionError(f"expected {kind.NAME}, got {got}")
        return got.method

    def handshake(self, channel_max=None, heartbeat=0):
        """Start to open-ok; tune-ok asks for `channel_max` (None: what tune offered)."""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect(spec.Connection.Start)
        self.send(0, spec.Connection.StartOk(client_properties={}, mechanism="PLAIN",
                                             response=b"\x00guest\x00guest", locale="en_US"))
        tune = self.expect(spec.Connection.Tune)
        asked = tune.channel_max if channel_max is None else channel_max
        self.send(0, spec.Connection.TuneOk(channel_max=asked, frame_max=tune.frame_max,
                                            heartbeat=heartbeat))
        self.send(0, spec.Connection.Open(virtual_host="/"))
        answer = self.next_frame()
        if isinstance(answer, frame.Method) and isinstance(answer.method, spec.Connection.OpenOk):
            return tune, None
        return tune, answer

    def open_channels(self, channels):
        """Sends channel.open for every id in one write; returns (ids opened, the close that
        ended the answers or None)."""
        self.send_many(channels, spec.Channel.Open())
        opened = []
        while len(opened) < len(channels):
            got = self.next_frame()
            if isinstance(got, frame.Method) and isinstance(got.method, spec.Channel.OpenOk):
                opened.append(got.channel_number)
                continue
            return opened, got
        return opened, None

    def close_politely(self):
        self.send(0, spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        self.expect(spec.Connection.CloseOk)
        self.sock.close()

    def alive(self):
        """Nothing to read and not closed: the broker still holds the connection open quietly."""
        self.sock.settimeout(0.0)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
            return False  # data or end of stream
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(30)


def close_of(answer):
    """(reply code, text) of a connection.close or channel.close, else a description."""
    if isinstance(answer, frame.Method) and isinstance(
            answer.method, (spec.Connection.Close, spec.Channel.Close)):
        return {"method": answer.method.NAME, "code": answer.method.reply_code,
                "text": answer.method.reply_text}
    return {"method": str(answer)}


class Bystander:
    """A normal pika client with a queue of its own: publishes with confirms and reads back."""

    def __init__(self, host, port):
        self.host, self.port = host, port
        self.connection = pika.BlockingConnection(pika.ConnectionParameters(host=host, port=port))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.queue_declare(queue="scale_bystander")
        # Declared now, so that its log's files are open before any descriptor count.
        self.channel.queue_declare(queue="scale_fresh")

    def roundtrip(self, tag, count=50):
        """Publishes `count` confirmed messages and gets them back in order: True when it did."""
        sent = [f"{tag} {i}".encode() for i in range(count)]
        for body in sent:
            self.channel.basic_publish(exchange="", routing_key="scale_bystander", body=body)
        got = []
        for _ in range(count):
            _method, _properties, body = self.channel.basic_get("scale_bystander", auto_ack=True)
            got.append(body)
        return got == sent

    def fresh_connection_works(self):
        """A connection made now (the accept path under load) declares, publishes and gets."""
        connection = pika.BlockingConnection(pika.ConnectionParameters(host=self.host, port=self.port))
        channel = connection.channel()
        channel.queue_declare(queue="scale_fresh")
        channel.basic_publish(exchange="", routing_key="scale_fresh", body=b"fresh")
        _method, _properties, body = channel.basic_get("scale_fresh", auto_ack=True)
        connection.close()
        return body == b"fresh"


def settle(pid, descriptors_max):
    """Waits until the broker holds at most `descriptors_max` descriptors; returns its count."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while descriptors(pid) > descriptors_max and time.monotonic() < deadline:
        time.sleep(0.1)
    # The broker's close path answers close-ok and frees buffers after the socket is gone.
    time.sleep(0.5)
    return descriptors(pid)


def channel_flood(host, port, pid, bystander):
    """One connection, channels 1..channel-max opened, then the rest of the 10,000."""
    peer = Peer(host, port)
    tune, refused = peer.handshake()
    assert refused is None, refused
    rss_connected = rss_kib(pid)
    opened, stop = peer.open_channels(list(range(1, tune.channel_max + 1)))
    rss_open = rss_kib(pid)
    # The last channel is usable: a passive declare of the bystander's queue answers.
    peer.send(tune.channel_max, spec.Queue.Declare(queue="scale_bystander", passive=True))
    answer = peer.next_frame()
    last_usable = isinstance(answer, frame.Method) and isinstance(answer.method, spec.Queue.DeclareOk)
    during = bystander.roundtrip("during")
    beyond, close = peer.open_channels(list(range(tune.channel_max + 1, CHANNEL_OPENS + 1)))
    if isinstance(close, frame.Method) and isinstance(close.method, spec.Connection.Close):
        peer.send(0, spec.Connection.CloseOk())
    end = peer.next_frame(timeout=10)
    return {
        "channel_max": tune.channel_max,
        "opened": len(opened),
        # Every id once (RabbitMQ answers them out of order: a process per channel).
        "opened_all": sorted(opened) == list(range(1, tune.channel_max + 1)),
        "stopped_by": None if stop is None else close_of(stop),
        "last_channel_usable": last_usable,
        "rss_growth_kib": rss_open - rss_connected,
        "bystander_during": during,
        "opened_beyond_max": len(beyond),
        "beyond_max": close_of(close),
        "closed_after_close_ok": end == "EOF",
    }


def asked_channel_max(host, port, asked):
    """A client whose tune-ok asks for `asked` channels, then sends 10,000 channel.open."""
    peer = Peer(host, port)
    tune, refused = peer.handshake(channel_max=asked)
    if refused is not None:
        return {"asked": asked, "handshake": close_of(refused)}
    opened, close = peer.open_channels(list(range(1, CHANNEL_OPENS + 1)))
    if isinstance(close, frame.Method) and isinstance(close.method, spec.Connection.Close):
        peer.send(0, spec.Connection.CloseOk())
    peer.sock.close()
    return {"asked": asked, "opened": len(opened), "close": close_of(close)}


def channels(host, port, pid):
    bystander = Bystander(host, port)
    summary = {"bystander_before": bystander.roundtrip("before")}
    baseline_descriptors = descriptors(pid)
    rss_before = rss_kib(pid)
    summary["flood"] = channel_flood(host, port, pid, bystander)
    settle(pid, baseline_descriptors)
    rss_after = [settled_rss_kib(pid)]
    summary["asked"] = [asked_channel_max(host, port, asked) for asked in (0, 65535)]
    settle(pid, baseline_descriptors)
    rss_after.append(settled_rss_kib(pid))
    # Further full floods: memory a closed connection's channels held must be reused.
    for _ in range(3):
        channel_flood(host, port, pid, bystander)
        settle(pid, baseline_descriptors)
        rss_after.append(settled_rss_kib(pid))
    summary["rss_before_kib"] = rss_before
    summary["rss_after_rounds_kib"] = rss_after
    summary["bystander_after"] = bystander.roundtrip("after")
    summary["fresh_after"] = bystander.fresh_connection_works()
    bystander.connection.close()
    print(json.dumps(summary))


def idle_round(host, port, pid, count, bystander):
    """`count` idle connections: accepted, alive, a normal client unaffected, then closed."""
    baseline_descriptors = descriptors(pid)
    rss_before = rss_kib(pid)
    peers = []
    refused = []
    for index in range(count):
        peer = Peer(host, port)
        _tune, answer = peer.handshake(heartbeat=0 if index % 2 == 0 else 600)
        if answer is not None:
            refused.append(close_of(answer))
        peers.append(peer)
    # Idle for a moment: nothing may close them, nothing may be sent to them.
    time.sleep(2)
    rss_open = rss_kib(pid)
    descriptors_open = descriptors(pid)
    result = {
        "refused": refused,
        "alive": sum(peer.alive() for peer in peers),
        "descriptors_added": descriptors_open - baseline_descriptors,
        "rss_growth_kib": rss_open - rss_before,
        "bystander_during": bystander.roundtrip("idle"),
        "fresh_during": bystander.fresh_connection_works(),
    }
    for index, peer in enumerate(peers):
        if index % 2 == 0:
            peer.close_politely()
        else:
            peer.sock.close()
    result["descriptors_left"] = settle(pid, baseline_descriptors) - baseline_descriptors
    result["rss_after_close_kib"] = settled_rss_kib(pid)
    return result


def idle(host, port, pid, count):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {wanted} sockets needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    bystander = Bystander(host, port)
    summary = {"bystander_before": bystander.roundtrip("before"), "rss_before_kib": rss_kib(pid)}
    summary["rounds"] = [idle_round(host, port, pid, count, bystander) for _ in range(IDLE_ROUNDS)]
    summary["bystander_after"] = bystander.roundtrip("after")
    bystander.connection.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    mode, host, port, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode == "channels":
        channels(host, port, pid)
    else:
        idle(host, port, pid, int(sys.argv[5]))
