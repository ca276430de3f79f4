"""One broker lifetime of the 20-SIGKILL loop (tests/tests/amqp.rs), or the final drain.

  work ROUND BACKLOG: a publisher with confirms sends persistent messages `ROUND-i` to the durable
              queue `crash_loop` while a consumer (prefetch 50) takes and acks each message, until
              the test kills the broker (and then this process). The consumer starts BACKLOG
              seconds after the publisher (0: at once), so that the queue holds a backlog of
              ready messages when the kill comes.
  drain:      takes and acks whatever is left, until the queue stays empty for 2 s.

Every event is one line appended to LOG and flushed at once, so that the test reads what
happened before the kill: `start` (this process began: a new broker lifetime), `confirmed ID`,
`got ID REDELIVERED TIME`, `acked ID TIME` (TIME is time.time() after pika wrote the ack to the
socket). The test kills the broker first and this process after it, so the last events of a
lifetime can come after the broker died (an ack written into a dead connection): the test tells
lifetimes apart by `start`, not by time."""
import sys
import threading
import time

import pika

URL, LOG, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
QUEUE = "crash_loop"
lock = threading.Lock()
log = open(LOG, "a", buffering=1)


def record(line):
    with lock:
        log.write(line + "\n")
        log.flush()


def connect():
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.queue_declare(queue=QUEUE, durable=True)
    return connection, channel


def publish(round_):
    _, channel = connect()
    channel.confirm_delivery()
    for i in range(1_000_000):
        message_id = f"{round_}-{i}"
        channel.basic_publish("", QUEUE, message_id.encode(),
                              pika.BasicProperties(delivery_mode=2))
        record(f"confirmed {message_id}")


def consume(idle_seconds):
    _, channel = connect()
    channel.basic_qos(prefetch_count=50)
    for method, _properties, body in channel.consume(QUEUE, inactivity_timeout=idle_seconds):
        if method is None:
            if idle_seconds >= 1:
                return
            continue
        record(f"got {body.decode()} {int(method.redelivered)} {time.time():.6f}")
        channel.basic_ack(method.delivery_tag)
        record(f"acked {body.decode()} {time.time():.6f}")


def main():
    record("start")
    if MODE == "drain":
        consume(2.0)
        return
    round_, backlog_seconds = sys.argv[4], float(sys.argv[5])

    def consume_later():
        time.sleep(backlog_seconds)
        consume(0.05)

    threading.Thread(target=consume_later, daemon=True).start()
    try:
        publish(round_)
    except Exception:  # the broker was killed: the test kills this process next
        time.sleep(60)


if __name__ == "__main__":
    main()
