"""The memory alarm's whole cycle, seen by pika 1.4.4, against a broker whose
`amqp.vm.memory.high.watermark.absolute` is 128 MiB above its idle resident memory (the test
measured it on a first broker). A filler connection publishes 1 MB messages with confirms to a
queue with no consumer (a queue holds its ready messages in memory) until the broker stops
reading it; a consumer-only connection is still answered and served a message meanwhile; a
second publisher's publish to another queue is held. A thread then deletes the filled queue,
which frees its memory: both publishers must be unblocked and the held publish stored and
confirmed. pika's BlockingConnection runs the blocked / unblocked callbacks only once
basic_publish returns, so the script records their order, and the test compares the confirm's
time with the deletion. Arguments: URL, the broker's pid. Prints a JSON summary."""
import json
import os
import sys
import threading
import time

import pika

URL, PID = sys.argv[1], int(sys.argv[2])
FILL, HELD = 'memory_fill', 'memory_held'
# Under the broker's largest batch (message.max.bytes, 1 MiB with the record's overhead).
BODY = b'm' * 1_000_000
# Enough to pass any watermark the test sets (idle + 128 MiB) several times over; a broker that
# never blocks is stopped here.
FILL_MAX = 400
# The filler is blocked once it made no progress for this long (the check runs every 100 ms).
STALLED_S = 3
# How long the held publish waits before the queue goes.
HELD_S = 3


def resident_bytes():
    with open(f'/proc/{PID}/statm') as statm:
        return int(statm.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def connect(events=None):
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    if events is not None:
        connection.add_on_connection_blocked_callback(
            lambda _c, frame: events.append(['blocked', frame.method.reason]))
        connection.add_on_connection_unblocked_callback(
            lambda _c, _frame: events.append(['unblocked']))
    return connection


def message_count(channel, queue):
    return channel.queue_declare(queue=queue, passive=True).method.message_count


def main():
    start = time.monotonic()
    checker = connect()
    checking = checker.channel()
    checking.queue_declare(queue=FILL)
    checking.queue_declare(queue=HELD)
    publisher_events, filler_events = [], []
    publisher = connect(publisher_events)
    publishing = publisher.channel()
    publishing.confirm_delivery()
    resident_idle = resident_bytes()

    fill = {'confirmed': 0, 'progress_at': time.monotonic(), 'stop': False}

    def filler():
        connection = connect(filler_events)
        channel = connection.channel()
        channel.confirm_delivery()
        while not fill['stop'] and fill['confirmed'] < FILL_MAX:
            channel.basic_publish('', FILL, BODY)
            fill['confirmed'] += 1
            fill['progress_at'] = time.monotonic()
        connection.process_data_events(time_limit=0.2)
        connection.close()

    filling = threading.Thread(target=filler)
    filling.start()
    while filling.is_alive() and time.monotonic() - fill['progress_at'] < STALLED_S:
        checker.process_data_events(time_limit=0.2)
    stalled = filling.is_alive()
    filled = fill['confirmed']
    resident_blocked = resident_bytes()
    # The consumer-only connection is read and served while the alarm is on.
    fill_count = message_count(checking, FILL)
    _method, _properties, got = checking.basic_get(queue=FILL, auto_ack=True)
    got_bytes = len(got) if got is not None else None

    held = {}

    def release():
        time.sleep(HELD_S)
        connection = connect()
        channel = connection.channel()
        held['count'] = message_count(channel, HELD)
        fill['stop'] = True
        channel.queue_delete(queue=FILL)
        held['deleted_at'] = round(time.monotonic() - start, 1)
        connection.close()

    releaser = threading.Thread(target=release)
    if stalled:
        releaser.start()
        # Returns once the broker confirmed it: held until the filled queue is gone.
        publishing.basic_publish('', HELD, b'held while low on memory')
        confirmed_at = round(time.monotonic() - start, 1)
        releaser.join()
    else:
        confirmed_at = None
    filling.join()
    publisher.process_data_events(time_limit=0.5)
    # The broker's check runs every 100 ms; the allocator returns memory once a second.
    time.sleep(1.5)
    resident_after = resident_bytes()
    held_count = message_count(checking, HELD)
    if not stalled:
        checking.queue_delete(queue=FILL)
    checking.queue_delete(queue=HELD)
    checker.close()
    publisher.close()
    print(json.dumps({
        'resident_idle': resident_idle,
        'resident_blocked': resident_blocked,
        'resident_after': resident_after,
        'stalled': stalled,
        'filled': filled,
        'fill_count': fill_count,
        'got_bytes': got_bytes,
        'publisher_events': publisher_events,
        'filler_events': filler_events,
        'count_while_blocked': held.get('count'),
        'held_count': held_count,
        'deleted_at': held.get('deleted_at'),
        'confirmed_at': confirmed_at,
    }))


main()
