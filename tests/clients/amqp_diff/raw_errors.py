"""Connection errors reachable only with raw frames (raw.py): a wrong protocol header, an unknown
vhost (530), a second channel.open (504), methods on an unopened channel (504), a content header
without a publish (505), a body longer than declared, a bad frame-end byte and an oversized frame
(501), an unknown frame type or class, wrong credentials (403 with authentication_failure_close),
server-named consumer tags and a reused consumer tag (530), and publisher-confirm delivery tags
(every publish acked once, tags 1..n)."""

import json
import struct
import sys
import time
import urllib.parse

from common import arguments
import raw


def connect(address):
    return raw.Raw(*address)


def logged_in(address, channel=None):
    connection = connect(address)
    _channel, answer, _arguments = connection.login()
    assert answer == (10, 41), f"connection.open answered {answer}"
    if channel is not None:
        connection.open_channel(channel)
    return connection


def bad_protocol_header(address):
    connection = connect(address)
    connection.send(b"AMQP\x00\x00\x09\x02")
    try:
        answer = connection.read_exact(8)
    except EOFError:
        answer = b""
    return {"answer": answer.decode("latin-1"), "socket_closed_after": connection.closes()}


def unknown_vhost(address):
    connection = connect(address)
    return connection.close_answer(*connection.login(vhost="/weir-no-such-vhost"))


def wrong_password(address):
    connection = connect(address)
    try:
        answer = connection.login(password="wrong", capabilities={"authentication_failure_close": True})
    except EOFError:
        return {"socket_closed": True}
    return connection.close_answer(*answer)


def after(address, data, channel=1):
    """Sends `data` on a logged-in connection with `channel` open, then a basic.qos on it: the
    answer is either a close (the data was refused) or qos-ok ("accepted")."""
    connection = logged_in(address, channel)
    connection.send(data + raw.qos(channel))
    result = connection.outcome()
    connection.close()
    return result


def reused_consumer_tag(address):
    connection = logged_in(address, 1)
    declare = b"\x00\x00" + raw.shortstr("") + bytes([0b0100]) + raw.longstr(b"")  # exclusive
    connection.send(raw.method(1, 50, 10, declare))
    arguments = connection.expect((50, 11))
    queue = arguments[1:1 + arguments[0]].decode()
    consume = b"\x00\x00" + raw.shortstr(queue) + raw.shortstr("tag") + b"\x00" + raw.longstr(b"")
    connection.send(raw.method(1, 60, 20, consume))
    connection.expect((60, 21))
    # An empty tag asks the server for one (pika always names its consumers itself).
    unnamed = b"\x00\x00" + raw.shortstr(queue) + raw.shortstr("") + b"\x00" + raw.longstr(b"")
    connection.send(raw.method(1, 60, 20, unnamed))
    arguments = connection.expect((60, 21))
    server_tag = arguments[1:1 + arguments[0]].decode()
    connection.send(raw.method(1, 60, 20, consume))
    result = {"server_named_prefix": server_tag.split("-")[0] + "-", "reused": connection.outcome()}
    connection.close()
    return result


def confirm_tags(address):
    connection = logged_in(address, 1)
    connection.send(raw.method(1, 85, 10, b"\x00"))
    connection.expect((85, 11))
    for i in range(5):
        connection.send(raw.publish(1, "weir-nowhere", f"m{i}".encode()))
    acked = set()
    while len(acked) < 5:
        _channel, got, rest = connection.read_method()
        assert got == (60, 80), f"expected basic.ack, got {got}"
        tag, multiple = struct.unpack(">QB", rest[:9])
        acked |= set(range(1, tag + 1)) if multiple else {tag}
    connection.close()
    return sorted(acked)


def main():
    url = urllib.parse.urlparse(arguments().url)
    address = (url.hostname, url.port or 5672)
    heartbeat_on_channel = raw.frame(raw.FRAME_HEARTBEAT, 1, b"")
    cases = {
        "bad_protocol_header": lambda: bad_protocol_header(address),
        "unknown_vhost": lambda: unknown_vhost(address),
        "wrong_password": lambda: wrong_password(address),
        "second_channel_open": lambda: after(address, raw.method(1, 20, 10, raw.shortstr(""))),
        "publish_on_unopened_channel": lambda: after(address, raw.publish(7, "q", b"x")),
        "queue_declare_on_unopened_channel": lambda: after(address, raw.method(9, 50, 10, b"\x00\x00" + raw.shortstr("q") + b"\x00" + raw.longstr(b""))),
        "header_without_publish": lambda: after(address, raw.content_header(1, 3)),
        "body_without_publish": lambda: after(address, raw.frame(raw.FRAME_BODY, 1, b"abc")),
        "body_longer_than_declared": lambda: after(address, raw.method(1, 60, 40, b"\x00\x00" + raw.shortstr("") + raw.shortstr("q") + b"\x00") + raw.content_header(1, 3) + raw.frame(raw.FRAME_BODY, 1, b"abcde")),
        "bad_frame_end": lambda: after(address, raw.frame(raw.FRAME_METHOD, 1, struct.pack(">HH", 60, 10) + b"\x00" * 11, end=0x00)),
        "frame_over_frame_max": lambda: after(address, raw.frame(raw.FRAME_BODY, 1, b"x" * (1 << 20))),
        "unknown_frame_type": lambda: after(address, raw.frame(9, 1, b"")),
        "heartbeat_on_channel": lambda: after(address, heartbeat_on_channel),
        "channel_method_on_channel_0": lambda: after(address, raw.method(0, 20, 10, raw.shortstr(""))),
        "unknown_class": lambda: after(address, raw.method(1, 99, 10, b"")),
        "reused_consumer_tag": lambda: reused_consumer_tag(address),
        "confirm_tags": lambda: confirm_tags(address),
    }
    outcome = {}
    for name, case in cases.items():
        started = time.monotonic()
        # One broker's misstep (a hang, a close where none was expected) must not hide the other
        # cases: it becomes this case's outcome, which then differs from RabbitMQ's.
        try:
            outcome[name] = case()
        except (AssertionError, EOFError, OSError) as error:
            outcome[name] = {"client_error": f"{type(error).__name__}: {error}"}
        print(f"{name}: {time.monotonic() - started:.3f} s", file=sys.stderr)
    print(json.dumps(outcome, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
