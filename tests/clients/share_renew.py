"""KIP-1222's lock renewal (acknowledge type Renew, 4), in raw ShareFetch v2 / ShareAcknowledge v2
requests written here byte by byte from Kafka 4.2's message definitions (librdkafka 2.16's
ShareConsumer cannot renew), so that the broker's codec is checked against a second encoder.
confluent-kafka only creates the topic, produces and reads the topic id.

With the broker's lock at --lock-ms (2000): member a acquires the records, renews them twice (once
with ShareAcknowledge, once with a renew-only ShareFetch) across more than one lock duration while
member b fetches nothing; a stops renewing and b gets them with delivery count 2; a's late renew,
a Renew in a version 1 request and a renew-only fetch with fetch limits are refused as Kafka
refuses them; b renews then accepts, and the records are settled once: accepting again is
INVALID_RECORD_STATE and nothing comes back after another lock duration. A group whose
`share.renew.acknowledge.enable` is false cannot renew (INVALID_RECORD_STATE).

With --amqp-port, also on an AMQP queue's log (a share group takes records from the queue's own
state, which keeps no lock: a member holds them until its session ends): Renew succeeds for the
holder and is INVALID_RECORD_STATE for another member, the records stay held past a lock
duration, and once accepted neither the other member nor an AMQP basic.get finds them.
"""

import socket
import struct
import time

from confluent_kafka import Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from common import check, done, parser

args_parser = parser(__doc__)
args_parser.add_argument("--topic", default="renewed")
args_parser.add_argument("--group", default="renewers")
args_parser.add_argument("--lock-ms", type=int, default=2000)
args_parser.add_argument("--amqp-port", type=int)
args_parser.add_argument("--queue", default="renewed-queue")
args = args_parser.parse_args()

SHARE_GROUP_HEARTBEAT, SHARE_FETCH, SHARE_ACKNOWLEDGE = 76, 78, 79
ACCEPT, RENEW = 1, 4
NONE, INVALID_REQUEST, INVALID_RECORD_STATE = 0, 42, 121


# Writing: the flexible versions' compact types.
def uvarint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def cstr(text):
    if text is None:
        return uvarint(0)
    data = text.encode()
    return uvarint(len(data) + 1) + data


def carray(items):
    return uvarint(len(items) + 1) + b"".join(items)


TAGS = uvarint(0)


def ack_batches(batches):
    return carray(
        [
            struct.pack(">qq", first, last) + carray([struct.pack(">b", t) for t in types]) + TAGS
            for first, last, types in batches
        ]
    )


# Reading.
class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, fmt):
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def uvarint(self):
        shift = value = 0
        while True:
            byte = self.data[self.at]
            self.at += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def bytes(self):
        n = self.uvarint()
        if n == 0:
            return None
        out = self.data[self.at : self.at + n - 1]
        self.at += n - 1
        return out

    def cstr(self):
        data = self.bytes()
        return None if data is None else data.decode()

    def array(self, element):
        n = self.uvarint()
        return [] if n == 0 else [element(self) for _ in range(n - 1)]

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.at += self.uvarint()


class Connection:
    def __init__(self, bootstrap):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=20)
        self.correlation = 0

    def call(self, key, version, body):
        """Request header v2, response header v1 (every API here is flexible)."""
        self.correlation += 1
        client = b"share-renew"
        header = struct.pack(">hhih", key, version, self.correlation, len(client)) + client + TAGS
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", self.read(4))[0]
        reader = Reader(self.read(size))
        check(reader.take(">i") == self.correlation, "answer out of order")
        reader.tags()
        return reader

    def read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            check(chunk, "the broker closed the connection")
            out += chunk
        return out


def heartbeat(conn, group, member, epoch, topic):
    body = cstr(group) + cstr(member) + struct.pack(">i", epoch) + cstr(None)
    body += carray([cstr(topic)]) + TAGS
    reader = conn.call(SHARE_GROUP_HEARTBEAT, 1, body)
    reader.take(">i")
    return reader.take(">h")


class Member:
    """One share group member with its share session on partition 0 of a topic."""

    def __init__(self, bootstrap, name, topic, topic_id, group=None):
        self.conn = Connection(bootstrap)
        self.group = group or args.group
        self.name, self.topic_id, self.epoch = name, topic_id, 0
        code = heartbeat(self.conn, self.group, name, 0, topic)
        check(code == NONE, f"{name} joins", error=code)

    def next_epoch(self):
        epoch = self.epoch
        self.epoch += 1
        return epoch

    def fetch(self, wait_ms=0, acks=(), renew=False, limits=None, version=2):
        """ShareFetch: (top error, lock ms, ack error, acquired [(first, last, count)])."""
        wait, min_bytes, max_bytes, max_records = limits or (
            (0, 0, 0, 0) if renew else (wait_ms, 1, 1 << 20, 100)
        )
        body = cstr(self.group) + cstr(self.name) + struct.pack(">i", self.next_epoch())
        body += struct.pack(">iiiii", wait, min_bytes, max_bytes, max_records, 100)
        if version >= 2:
            body += struct.pack(">b?", 0, renew)  # ShareAcquireMode batch_optimized, IsRenewAck
        partition = struct.pack(">i", 0) + ack_batches(acks) + TAGS
        body += carray([self.topic_id + carray([partition]) + TAGS]) + carray([]) + TAGS
        reader = self.conn.call(SHARE_FETCH, version, body)
        reader.take(">i")
        error = reader.take(">h")
        if error == INVALID_REQUEST:
            self.epoch -= 1  # refused before the session moved on, as by Kafka
        reader.cstr()
        lock_ms = reader.take(">i")

        def partition_data(r):
            r.take(">i")
            fetch_error = r.take(">h")
            r.cstr()
            ack_error = r.take(">h")
            r.cstr()
            r.take(">ii")
            r.tags()
            r.bytes()
            acquired = r.array(lambda a: (a.take(">qqh"), a.tags())[0])
            r.tags()
            return fetch_error, ack_error, acquired

        def topic(r):
            r.at += 16
            partitions = r.array(partition_data)
            r.tags()
            return partitions

        topics = reader.array(topic)
        partitions = [p for t in topics for p in t]
        if not partitions:
            return error, lock_ms, None, []
        fetch_error, ack_error, acquired = partitions[0]
        check(fetch_error == NONE, f"{self.name}'s fetch", error=fetch_error)
        return error, lock_ms, ack_error, [tuple(a) for a in acquired]

    def acknowledge(self, acks, renew=False, version=2):
        """ShareAcknowledge: (top error, lock ms or None before v2, partition error)."""
        body = cstr(self.group) + cstr(self.name) + struct.pack(">i", self.next_epoch())
        if version >= 2:
            body += struct.pack(">?", renew)
        partition = struct.pack(">i", 0) + ack_batches(acks) + TAGS
        body += carray([self.topic_id + carray([partition]) + TAGS]) + TAGS
        reader = self.conn.call(SHARE_ACKNOWLEDGE, version, body)
        reader.take(">i")
        error = reader.take(">h")
        reader.cstr()
        lock_ms = reader.take(">i") if version >= 2 else None

        def partition_data(r):
            r.take(">i")
            code = r.take(">h")
            r.cstr()
            r.take(">ii")
            r.tags()
            r.tags()
            return code

        def topic(r):
            r.at += 16
            codes = r.array(partition_data)
            r.tags()
            return codes

        codes = [c for t in reader.array(topic) for c in t]
        return error, lock_ms, codes[0] if codes else None


def topic_id(admin, topic):
    described = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=30)
    uuid = described.topic_id
    return struct.pack(">qq", uuid.get_most_significant_bits(), uuid.get_least_significant_bits())


def main():
    started = time.monotonic()
    lock = args.lock_ms / 1000
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(args.topic, 1, 1)]).values():
        future.result(timeout=30)
    producer = Producer({"bootstrap.servers": args.bootstrap})
    for i in range(3):
        producer.produce(args.topic, value=f"job-{i}".encode(), partition=0)
    check(producer.flush(30) == 0, "produce")
    tid = topic_id(admin, args.topic)
    a = Member(args.bootstrap, "member-a", args.topic, tid)
    b = Member(args.bootstrap, "member-b", args.topic, tid)
    everything = [(0, 2, [RENEW])]

    error, lock_ms, _, acquired = a.fetch(wait_ms=5000)
    acquired_at = time.monotonic()
    check(error == NONE and acquired == [(0, 2, 1)], "a acquires the three", got=(error, acquired))
    check(lock_ms == args.lock_ms, "ShareFetch v2 names the lock", lock_ms=lock_ms)
    check(b.fetch()[3] == [], "b finds nothing held by a")

    # Two renewals, 0.6 lock apart: the locks run to 2.2 locks after the acquisition (1.6 with
    # the first alone), while b keeps finding nothing until 2.1 locks: its long polls end then.
    seen_by_b = []
    time.sleep(0.6 * lock)
    error, lock_ms, code = a.acknowledge(everything, renew=True)
    check((error, lock_ms, code) == (NONE, args.lock_ms, NONE), "ShareAcknowledge renews",
          got=(error, lock_ms, code))
    seen_by_b += b.fetch(wait_ms=int(0.5 * lock * 1000))[3]
    time.sleep(max(0.0, acquired_at + 1.2 * lock - time.monotonic()))
    renewed_at = time.monotonic()
    error, _, code, acquired = a.fetch(acks=everything, renew=True)
    check((error, code, acquired) == (NONE, NONE, []), "a renew-only ShareFetch renews",
          got=(error, code, acquired))
    watch_until = acquired_at + 2.1 * lock
    while time.monotonic() < watch_until - 0.02 * lock:
        wait = min(0.25 * lock, watch_until - time.monotonic())
        seen_by_b += b.fetch(wait_ms=int(wait * 1000))[3]
    check(seen_by_b == [], "b gets nothing while a renews", got=seen_by_b)
    held_for = time.monotonic() - acquired_at

    # Refused as Kafka refuses them: a renew-only fetch that also asks for records, and a Renew
    # in a version 1 request. Neither renews anything.
    check(a.fetch(acks=everything, renew=True, limits=(100, 0, 0, 0))[0] == INVALID_REQUEST,
          "a renew-only fetch with a wait is INVALID_REQUEST")
    check(a.acknowledge(everything, version=1)[2] == INVALID_REQUEST,
          "a Renew in ShareAcknowledge v1 is INVALID_REQUEST")

    # a stops renewing: b gets the three once the last renewal's lock runs out, redelivered.
    deadline = time.monotonic() + 3 * lock
    got = []
    while not got and time.monotonic() < deadline:
        got = b.fetch(wait_ms=int(lock * 1000))[3]
    redelivered_after = time.monotonic() - renewed_at
    check(got == [(0, 2, 2)], "b gets them with delivery count 2", got=got)
    check(redelivered_after >= 0.95 * lock, "not before the second renewal's lock ran out",
          after=redelivered_after)

    # a no longer holds them (another member does): its renew is INVALID_RECORD_STATE.
    check(a.acknowledge(everything, renew=True)[2] == INVALID_RECORD_STATE, "a's late renew")
    check(a.acknowledge([(7, 7, [RENEW])], renew=True)[2] == INVALID_RECORD_STATE,
          "renewing an offset never acquired")

    # Renew then Accept settles each record once.
    check(b.acknowledge(everything, renew=True)[2] == NONE, "b renews")
    check(b.acknowledge([(0, 2, [ACCEPT])])[2] == NONE, "b accepts")
    check(b.acknowledge([(0, 2, [ACCEPT])])[2] == INVALID_RECORD_STATE, "accepting twice")
    check(b.acknowledge(everything, renew=True)[2] == INVALID_RECORD_STATE, "renewing settled")
    time.sleep(1.1 * lock)
    again = a.fetch(wait_ms=200)[3] + b.fetch(wait_ms=200)[3]
    check(again == [], "settled records are not delivered again", got=again)
    renew_disabled(admin, tid)
    queue = on_a_queue(admin, lock) if args.amqp_port else None
    done(
        held_for_locks=round(held_for / lock, 1),
        redelivered_after_last_renewal_locks=round(redelivered_after / lock, 1),
        queue=queue,
        seconds=round(time.monotonic() - started, 1),
    )


def renew_disabled(admin, tid):
    """A group whose `share.renew.acknowledge.enable` is false (Kafka 4.3's group config, set
    with the AdminClient) gets INVALID_RECORD_STATE for a Renew; its Accept still settles. Its
    own `share.record.lock.duration.ms` is the lock both ShareFetch and ShareAcknowledge name."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    group, group_lock_ms = "renew-off", 20000
    entries = [
        ConfigEntry("share.renew.acknowledge.enable", "false",
                    incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("share.record.lock.duration.ms", str(group_lock_ms),
                    incremental_operation=AlterConfigOpType.SET),
    ]
    resource = ConfigResource(ResourceType.GROUP, group, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    c = Member(args.bootstrap, "member-c", args.topic, tid, group=group)
    error, lock_ms, _, acquired = c.fetch(wait_ms=5000)
    check(error == NONE and acquired == [(0, 2, 1)], "c acquires the three", got=(error, acquired))
    check(lock_ms == group_lock_ms, "ShareFetch names the group's lock", lock_ms=lock_ms)
    _, lock_ms, code = c.acknowledge([(0, 2, [RENEW])], renew=True)
    check(code == INVALID_RECORD_STATE, "renewing with renew disabled", got=code)
    check(lock_ms == group_lock_ms, "ShareAcknowledge v2 names the group's lock", lock_ms=lock_ms)
    check(c.acknowledge([(0, 2, [ACCEPT])])[2] == NONE, "c accepts")


def on_a_queue(admin, lock):
    import pika

    host = args.bootstrap.rsplit(":", 1)[0]
    amqp = pika.BlockingConnection(pika.ConnectionParameters(host=host, port=args.amqp_port))
    channel = amqp.channel()
    channel.queue_declare(queue=args.queue, durable=True)
    channel.confirm_delivery()
    for i in range(2):
        channel.basic_publish("", args.queue, b"task-%d" % i, pika.BasicProperties(delivery_mode=2))
    qid = topic_id(admin, args.queue)
    c = Member(args.bootstrap, "member-c", args.queue, qid, group="queue-renewers")
    d = Member(args.bootstrap, "member-d", args.queue, qid, group="queue-renewers")
    error, _, _, acquired = c.fetch(wait_ms=5000)
    check(error == NONE and len(acquired) == 1, "c acquires the queue's messages", got=acquired)
    first, last, count = acquired[0]
    check((last - first, count) == (1, 1), "two messages, first delivery", got=acquired)
    check(d.fetch()[3] == [], "d finds nothing held by c")
    held = [(first, last, [RENEW])]
    check(c.acknowledge(held, renew=True)[2] == NONE, "c renews on the queue")
    check(d.acknowledge(held, renew=True)[2] == INVALID_RECORD_STATE, "d cannot renew c's")
    time.sleep(1.2 * lock)
    check(d.fetch(wait_ms=200)[3] == [], "held past a lock duration: d gets nothing")
    check(c.acknowledge(held, renew=True)[2] == NONE, "c still holds them")
    check(c.acknowledge([(first, last, [ACCEPT])])[2] == NONE, "c accepts")
    check(c.acknowledge(held, renew=True)[2] == INVALID_RECORD_STATE, "renewing what is settled")
    check(d.fetch(wait_ms=200)[3] == [], "d gets nothing after the accept")
    method, _, _ = channel.basic_get(args.queue, auto_ack=True)
    check(method is None, "the queue is empty for AMQP too")
    amqp.close()
    return {"acquired": last - first + 1}


main()
