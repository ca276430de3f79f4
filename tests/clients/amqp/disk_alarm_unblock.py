"""The disk alarm's whole cycle, with a real file on the data directory's filesystem, seen by
pika 1.4.4. The test starts the broker with `amqp.disk.free.limit` a margin below the free
space; this script publishes with confirms (stored), fills the filesystem past the limit with a
file (`posix_fallocate`: the blocks are reserved, so statvfs counts them at once), publishes
again and waits for the confirm; a second thread, a few seconds into that wait, counts the
queue's messages on its own connection and deletes the file. The held publish must then be
stored and confirmed, after connection.blocked and connection.unblocked (pika's
BlockingConnection runs those callbacks only once basic_publish returns, so the script records
their order, and the test compares the confirm's time with the file's deletion).
Arguments: URL, the file's path, the limit in bytes. Prints a JSON summary."""
import json
import os
import sys
import threading
import time

import pika

URL, FILLER, LIMIT = sys.argv[1], sys.argv[2], int(sys.argv[3])
QUEUE = 'disk_unblock_q'
# Free space left under the limit once the file is written: room for other processes on this
# machine to delete files while the alarm should hold.
BELOW_LIMIT = 512 << 20
# Longer than the broker's check interval (1 s) plus its broadcast to every shard.
ALARM_SETTLE_S = 2.5
# How long the held publish waits before the file goes.
HELD_S = 3


def free_bytes(path):
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def message_count(connection):
    return connection.channel().queue_declare(queue=QUEUE, passive=True).method.message_count


def main():
    start = time.monotonic()
    events = []

    def on_blocked(_connection, frame):
        events.append(['blocked', frame.method.reason])

    def on_unblocked(_connection, _frame):
        events.append(['unblocked'])

    checker = pika.BlockingConnection(pika.URLParameters(URL))
    checker.channel().queue_declare(queue=QUEUE)
    publisher = pika.BlockingConnection(pika.URLParameters(URL))
    publisher.add_on_connection_blocked_callback(on_blocked)
    publisher.add_on_connection_unblocked_callback(on_unblocked)
    channel = publisher.channel()
    channel.confirm_delivery()
    channel.basic_publish('', QUEUE, b'before the file')
    count_before = message_count(checker)

    directory = os.path.dirname(FILLER)
    free = free_bytes(directory)
    size = free - LIMIT + BELOW_LIMIT
    if free <= LIMIT:
        # Another process filled the disk past the test's margin before the file was written.
        print(json.dumps({'error': f'free {free} already below the limit {LIMIT}'}))
        return
    descriptor = os.open(FILLER, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        os.posix_fallocate(descriptor, 0, size)
    finally:
        os.close(descriptor)
    free_with_file = free_bytes(directory)
    publisher.process_data_events(time_limit=ALARM_SETTLE_S)
    events_before_publish = list(events)

    held = {}

    def release():
        # Runs beside the held publish, with its own connection (pika connections are not
        # shared between threads).
        time.sleep(HELD_S)
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        held['count'] = message_count(connection)
        connection.close()
        os.unlink(FILLER)
        held['free_after_delete'] = free_bytes(directory)
        held['deleted_at'] = round(time.monotonic() - start, 1)

    releaser = threading.Thread(target=release)
    releaser.start()
    # Returns once the broker confirmed the publish: blocked until the file is gone.
    channel.basic_publish('', QUEUE, b'held while low on disk')
    confirmed_at = round(time.monotonic() - start, 1)
    releaser.join()
    publisher.process_data_events(time_limit=0.2)
    count_after = message_count(checker)
    checker.channel().queue_delete(queue=QUEUE)
    checker.close()
    publisher.close()
    print(json.dumps({
        'limit': LIMIT,
        'free_before_file': free,
        'free_with_file': free_with_file,
        'free_after_delete': held.get('free_after_delete'),
        'events_before_publish': events_before_publish,
        'events': events,
        'count_before': count_before,
        'count_while_blocked': held.get('count'),
        'count_after': count_after,
        'deleted_at': held.get('deleted_at'),
        'confirmed_at': confirmed_at,
    }))


main()
