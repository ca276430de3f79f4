"""Shared by the python client programs of the weir test suites.

Every program takes --bootstrap, talks to a real weir broker with a real client, checks what it
got against what it sent (count, content, order within a partition), prints one JSON summary line
on stdout and exits 0, or prints why on stderr and exits 1. Every wait has a deadline.
"""

import argparse
import json
import sys
import time


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bootstrap", required=True, help="host:port of the broker")
    return p


def fail(message, **details):
    print(f"FAIL: {message}", file=sys.stderr)
    for key, value in details.items():
        print(f"  {key}: {value}", file=sys.stderr)
    sys.exit(1)


def check(condition, message, **details):
    if not condition:
        fail(message, **details)


def done(**summary):
    print(json.dumps({"ok": True, **summary}, sort_keys=True), flush=True)


class Deadline:
    def __init__(self, seconds, what):
        self.end = time.monotonic() + seconds
        self.what = what

    def expired(self):
        return time.monotonic() > self.end

    def check(self, **details):
        if self.expired():
            fail(f"timed out: {self.what}", **details)


def compare_records(sent, received, what):
    """sent: {(partition, offset): payload} as acknowledged by the broker; received: list of
    (partition, offset, payload) in consumption order. Requires exactly the same records, each
    once, and offsets strictly increasing within each partition in consumption order."""
    seen = {}
    last_offset = {}
    for partition, offset, payload in received:
        key = (partition, offset)
        check(key not in seen, f"{what}: duplicate record at partition {partition} offset {offset}")
        seen[key] = payload
        check(
            offset > last_offset.get(partition, -1),
            f"{what}: partition {partition} went back from offset {last_offset.get(partition)} to {offset}",
        )
        last_offset[partition] = offset
    missing = sorted(set(sent) - set(seen))
    extra = sorted(set(seen) - set(sent))
    check(
        not missing and not extra,
        f"{what}: received records differ from the acknowledged ones",
        sent=len(sent),
        received=len(seen),
        missing_first=missing[:10],
        extra_first=extra[:10],
    )
    wrong = [key for key in sent if sent[key] != seen[key]]
    check(
        not wrong,
        f"{what}: {len(wrong)} records have other content than was sent",
        first=[(key, sent[key], seen[key]) for key in sorted(wrong)[:5]],
    )


def check_sent_offsets_dense(sent, what):
    """A fresh topic written once by one producer: the acknowledged offsets of each partition are
    exactly 0..n-1 (a gap or a repeat means a lost or duplicated append)."""
    by_partition = {}
    for partition, offset in sent:
        by_partition.setdefault(partition, []).append(offset)
    for partition, offsets in by_partition.items():
        offsets.sort()
        check(
            offsets == list(range(len(offsets))),
            f"{what}: acknowledged offsets of partition {partition} are not 0..{len(offsets) - 1}",
            first=offsets[:10],
            last=offsets[-10:],
        )
    return {str(p): len(o) for p, o in sorted(by_partition.items())}
