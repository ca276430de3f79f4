"""A minimal raw AMQP 0-9-1 client for what pika will not send: malformed or misplaced frames.

Speaks just enough of the protocol (PLAIN login, tune, open, channel.open) to put a connection in
the state a case needs; encodes frames by hand from the 0-9-1 spec; every read has a deadline.
"""

import socket
import struct

from common import DEADLINE_SECONDS, reply_class

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


def shortstr(text):
    data = text.encode()
    return struct.pack("B", len(data)) + data


def longstr(data):
    return struct.pack(">I", len(data)) + data


def table(fields):
    """Only what the cases need: nested tables ('F') and booleans ('t')."""
    body = b""
    for key, value in fields.items():
        if isinstance(value, dict):
            body += shortstr(key) + b"F" + table(value)
        else:
            body += shortstr(key) + b"t" + struct.pack("B", 1 if value else 0)
    return longstr(body)


def frame(kind, channel, payload, end=FRAME_END):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes([end])


def method(channel, class_id, method_id, arguments=b""):
    return frame(FRAME_METHOD, channel, struct.pack(">HH", class_id, method_id) + arguments)


def content_header(channel, body_size, class_id=60):
    return frame(FRAME_HEADER, channel, struct.pack(">HHQH", class_id, 0, body_size, 0))


def qos(channel, prefetch_count=1):
    return method(channel, 60, 10, struct.pack(">IHB", 0, prefetch_count, 0))


def publish(channel, routing_key, body, exchange=""):
    arguments = struct.pack(">H", 0) + shortstr(exchange) + shortstr(routing_key) + b"\x00"
    return (method(channel, 60, 40, arguments) + content_header(channel, len(body))
            + frame(FRAME_BODY, channel, body))


class Raw:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=DEADLINE_SECONDS)
        self.buffer = b""
        self.frame_max = 131072

    def send(self, data):
        self.sock.sendall(data)

    def read_exact(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("socket closed by the broker")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_frame(self):
        kind, channel, size = struct.unpack(">BHI", self.read_exact(7))
        payload = self.read_exact(size)
        end = self.read_exact(1)[0]
        assert end == FRAME_END, f"frame end {end:#x}"
        return kind, channel, payload

    def read_method(self):
        """The next method frame (heartbeats skipped): (channel, (class, method), arguments)."""
        while True:
            kind, channel, payload = self.read_frame()
            if kind == FRAME_METHOD:
                class_id, method_id = struct.unpack(">HH", payload[:4])
                return channel, (class_id, method_id), payload[4:]

    def expect(self, class_method):
        channel, got, arguments = self.read_method()
        assert got == class_method, f"expected {class_method}, got {got} on channel {channel}: {arguments!r}"
        return arguments

    def login(self, vhost="/", password="guest", capabilities=None):
        """Header, start/start-ok, tune/tune-ok, open; returns the answer to connection.open."""
        self.send(PROTOCOL_HEADER)
        self.expect((10, 10))
        client_properties = {"capabilities": capabilities or {}}
        start_ok = (table(client_properties) + shortstr("PLAIN")
                    + longstr(b"\x00guest\x00" + password.encode()) + shortstr("en_US"))
        self.send(method(0, 10, 11, start_ok))
        channel, answer, arguments = self.read_method()
        if answer != (10, 30):  # a refused login is answered here
            return channel, answer, arguments
        channel_max, frame_max, _heartbeat = struct.unpack(">HIH", arguments[:8])
        self.frame_max = frame_max
        self.send(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
        self.send(method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00"))
        return self.read_method()

    def open_channel(self, channel):
        self.send(method(channel, 20, 10, shortstr("")))
        self.expect((20, 11))

    def outcome(self):
        """What the broker does next: a connection or channel close (answered with close-ok,
        then the socket must close for a connection close), or the socket closing."""
        try:
            channel, got, arguments = self.read_method()
            if got == (60, 11):
                # qos-ok may overtake a close that a broker sends from elsewhere (RabbitMQ's
                # reader answers unopened channels, the channel process answers qos): a short
                # second look tells "accepted" from "closed a moment later".
                self.sock.settimeout(1.0)
                try:
                    channel, got, arguments = self.read_method()
                except socket.timeout:
                    return "accepted"
                finally:
                    self.sock.settimeout(DEADLINE_SECONDS)
        except (EOFError, ConnectionResetError):
            return {"socket_closed": True}
        except socket.timeout:
            return "nothing within the deadline"
        return self.close_answer(channel, got, arguments)

    def close_answer(self, channel, got, arguments):
        """A connection.close or channel.close as an outcome (answered with close-ok)."""
        if got not in [(10, 50), (20, 40)]:
            return {"unexpected": list(got), "channel": channel}
        code = struct.unpack(">H", arguments[:2])[0]
        text_length = arguments[2]
        text = arguments[3:3 + text_length].decode(errors="replace")
        scope = "connection" if got == (10, 50) else "channel"
        self.send(method(channel, got[0], got[1] + 1))
        result = {"closed": scope, "code": code, "text": reply_class(text)}
        if scope == "connection":
            result["socket_closed_after"] = self.closes()
        return result

    def closes(self):
        """True when the broker closes the socket (FIN or RST) within the deadline."""
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()
