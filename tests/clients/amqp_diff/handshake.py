"""The connection handshake as a client sees it (raw.py): connection.start's protocol version,
mechanisms (PLAIN, AMQPLAIN), locales and the capabilities in the server properties; AMQPLAIN
login; tune's channel-max, frame-max and heartbeat; a channel id above the negotiated channel-max
(530); and a client that negotiated a 1 s heartbeat and then stays silent is disconnected."""

import json
import struct
import time
import urllib.parse

import raw
from common import arguments

CAPABILITIES = ["publisher_confirms", "basic.nack", "consumer_cancel_notify",
                "exchange_exchange_bindings", "per_consumer_qos", "connection.blocked",
                "authentication_failure_close"]


def decode_table(data):
    """Field table → dict, for the types brokers put in server properties."""
    fields, offset = {}, 0
    while offset < len(data):
        key_length = data[offset]
        key = data[offset + 1:offset + 1 + key_length].decode()
        offset += 1 + key_length
        kind = chr(data[offset])
        offset += 1
        if kind == "S":
            length = struct.unpack(">I", data[offset:offset + 4])[0]
            fields[key] = data[offset + 4:offset + 4 + length].decode(errors="replace")
            offset += 4 + length
        elif kind == "F":
            length = struct.unpack(">I", data[offset:offset + 4])[0]
            fields[key] = decode_table(data[offset + 4:offset + 4 + length])
            offset += 4 + length
        elif kind == "t":
            fields[key] = bool(data[offset])
            offset += 1
        elif kind in "Il":
            size = 4 if kind == "I" else 8
            fields[key] = int.from_bytes(data[offset:offset + size], "big", signed=True)
            offset += size
        else:
            raise AssertionError(f"field type {kind!r} in server properties")
    return fields


def start_and_tune(address, mechanism="PLAIN"):
    connection = raw.Raw(*address)
    connection.send(raw.PROTOCOL_HEADER)
    start = connection.expect((10, 10))
    major, minor = start[0], start[1]
    length = struct.unpack(">I", start[2:6])[0]
    properties = decode_table(start[6:6 + length])
    rest = start[6 + length:]
    mechanisms_length = struct.unpack(">I", rest[:4])[0]
    mechanisms = rest[4:4 + mechanisms_length].decode().split()
    locales = rest[8 + mechanisms_length:].decode().split()
    if mechanism == "PLAIN":
        response = b"\x00guest\x00guest"
    else:  # AMQPLAIN: a field table without its length prefix
        response = raw.table({})[4:] + b"\x05LOGINS" + raw.longstr(b"guest") + b"\x08PASSWORDS" + raw.longstr(b"guest")
    start_ok = raw.table({}) + raw.shortstr(mechanism) + raw.longstr(response) + raw.shortstr("en_US")
    connection.send(raw.method(0, 10, 11, start_ok))
    channel, answer, tune = connection.read_method()
    summary = {"version": [major, minor], "mechanisms": sorted(mechanisms), "locales": locales,
               "capabilities": {c: properties.get("capabilities", {}).get(c) for c in CAPABILITIES}}
    return connection, summary, answer, tune


def main():
    url = urllib.parse.urlparse(arguments().url)
    address = (url.hostname, url.port or 5672)
    outcome = {}
    connection, outcome["start"], answer, tune = start_and_tune(address)
    channel_max, frame_max, heartbeat = struct.unpack(">HIH", tune[:8])
    outcome["tune"] = {"answer": list(answer), "channel_max_nonzero": channel_max > 0,
                       "frame_max_at_least_4096": frame_max >= 4096, "heartbeat": heartbeat}
    connection.send(raw.method(0, 10, 31, struct.pack(">HIH", 2, frame_max, 0)))
    connection.send(raw.method(0, 10, 40, raw.shortstr("/") + raw.shortstr("") + b"\x00"))
    connection.expect((10, 41))
    connection.send(raw.method(3, 20, 10, raw.shortstr("")))  # channel-max is 2
    channel, answer, rest = connection.read_method()
    # RabbitMQ 3.10 opens it anyway (it enforces only its own channel_max, not the client's).
    opened = answer == (20, 11)
    outcome["channel_above_max"] = "opened" if opened else connection.close_answer(channel, answer, rest)

    connection, _summary, answer, _tune = start_and_tune(address, mechanism="AMQPLAIN")
    outcome["amqplain"] = list(answer)
    connection.close()

    silent, _summary, _answer, tune = start_and_tune(address)
    silent.send(raw.method(0, 10, 31, tune[:6] + struct.pack(">H", 1)))  # heartbeat 1 s
    silent.send(raw.method(0, 10, 40, raw.shortstr("/") + raw.shortstr("") + b"\x00"))
    silent.expect((10, 41))
    started = time.monotonic()
    closed = silent.closes()  # reads (heartbeats from the broker) until the socket closes
    outcome["silent_client"] = {"closed": closed, "within_10_s": time.monotonic() - started < 10}
    print(json.dumps(outcome, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
