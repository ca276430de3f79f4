"""A broker started under a low open-files limit: `files_limit.py URL BOOTSTRAP PID COUNT PHASE`.
Segment descriptors are a per-shard cache (idle files close and reopen on use), so COUNT durable
queues, past what the limit used to allow, are all declared and usable. PHASE `declare`: declares
them, publishes one confirmed persistent message to each, takes the first and last queues'
messages back, creates a Kafka topic too. PHASE `check` (after a restart): every queue is there
with its message (none on the first and last), and a middle one gives it back. Both report the
descriptors the broker holds. Prints a JSON summary."""
import json
import os
import sys

import pika
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

URL, BOOTSTRAP, PID, COUNT, PHASE = sys.argv[1:6]
COUNT = int(COUNT)
FIRST, LAST = "fq-0", f"fq-{COUNT - 1}"

connection = pika.BlockingConnection(pika.URLParameters(URL))
channel = connection.channel()
channel.confirm_delivery()
summary = {}


def get_body(queue):
    method, _, body = channel.basic_get(queue, auto_ack=True)
    return body.decode() if method else None


if PHASE == "declare":
    declared = 0
    for index in range(COUNT):
        try:
            channel.queue_declare(queue=f"fq-{index}", durable=True)
        except pika.exceptions.ChannelClosedByBroker as closed:
            summary["refused"] = [closed.reply_code, closed.reply_text]
            break
        declared += 1
        channel.basic_publish(exchange="", routing_key=f"fq-{index}", body=f"m-{index}".encode(),
                              properties=pika.BasicProperties(delivery_mode=2))
    summary["declared"] = declared
    summary["first"] = get_body(FIRST)
    summary["last"] = get_body(LAST)
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    try:
        admin.create_topics([NewTopic("past-the-old-limit", num_partitions=4,
                                      replication_factor=1)])
        summary["kafka_create"] = "created"
    except KafkaError as error:
        summary["kafka_create"] = type(error).__name__
    admin.close()
else:
    counts = {}
    for index in range(COUNT):
        try:
            ok = channel.queue_declare(queue=f"fq-{index}", durable=True, passive=True)
        except pika.exceptions.ChannelClosedByBroker as closed:
            summary["missing"] = [index, closed.reply_code]
            break
        count = ok.method.message_count
        counts[count] = counts.get(count, 0) + 1
    summary["message_counts"] = {str(k): v for k, v in sorted(counts.items())}
    summary["middle"] = get_body(f"fq-{COUNT // 2}")
    channel.basic_publish(exchange="", routing_key=FIRST, body=b"again",
                          properties=pika.BasicProperties(delivery_mode=2))
    summary["first"] = get_body(FIRST)
summary["broker_descriptors"] = len(os.listdir(f"/proc/{PID}/fd"))
connection.close()
print(json.dumps(summary))
