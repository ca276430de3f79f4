"""Many idle durable queues: `idle_queues.py HOST PORT PID N [PREFIX] [--check]` declares N
durable queues (PREFIX-0 .. PREFIX-{N-1}, default prefix `idle`) on one connection, pipelined in
chunks of 1,000 declares, each answered with declare-ok, and prints a JSON summary: how many
were confirmed (declare-ok), the broker's VmRSS before and after (KiB, /proc/PID/status), the
RSS per queue (bytes), its open descriptors, and the declare rate. With `--check` the declares
are passive (after a restart: every one must still exist, or the broker closes the channel
with 404). A broker that dies midway (the SIGKILL test) ends the run early: the summary then
says how many declares it had confirmed, and `"broker_gone": true`."""
import json
import sys
import time

from pika import frame, spec

from scale import Peer, rss_kib, descriptors

CHUNK = 1000


def declare_all(peer, names, passive):
    """Declares in chunks; returns how many were confirmed before the broker went away."""
    confirmed = 0
    for start in range(0, len(names), CHUNK):
        chunk = names[start:start + CHUNK]
        try:
            peer.sock.sendall(b"".join(
                frame.Method(1, spec.Queue.Declare(queue=name, durable=True, passive=passive)).marshal()
                for name in chunk))
        except OSError:
            return confirmed, True
        for _ in chunk:
            got = peer.next_frame()
            if isinstance(got, frame.Method) and isinstance(got.method, spec.Queue.DeclareOk):
                confirmed += 1
                continue
            if got == "EOF" and not passive:
                return confirmed, True
            raise AssertionError(f"declare {confirmed} answered {got}")
    return confirmed, False


def rss_or_none(pid):
    try:
        return rss_kib(pid)
    except OSError:
        return None


def main():
    host, port, pid, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    positional = [arg for arg in sys.argv[5:] if not arg.startswith("--")]
    prefix = positional[0] if positional else "idle"
    passive = "--check" in sys.argv
    names = [f"{prefix}-{i}" for i in range(count)]
    peer = Peer(host, port)
    peer.handshake()
    peer.open_channels([1])
    before = rss_or_none(pid)
    started = time.monotonic()
    confirmed, gone = declare_all(peer, names, passive)
    seconds = time.monotonic() - started
    summary = {"queues": count, "confirmed": confirmed, "broker_gone": gone, "passive": passive,
               "declare_seconds": round(seconds, 2), "declares_per_s": round(confirmed / max(seconds, 1e-9))}
    if not gone:
        time.sleep(2)
        after = rss_kib(pid)
        peer.close_politely()
        summary.update({"rss_before_kib": before, "rss_after_kib": after,
                        "rss_per_queue_bytes": round((after - before) * 1024 / max(count, 1)),
                        "descriptors": descriptors(pid)})
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
