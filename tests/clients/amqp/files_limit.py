"""A broker started under a low open-files limit: `files_limit.py URL BOOTSTRAP`. Declares
durable queues until the broker refuses one, then checks that every declared queue works (the
last one takes a message and gives it back), that a Kafka CreateTopics past the limit is
refused too, and that deleting queues makes room again. Prints a JSON summary."""
import json
import sys

import pika
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError

URL, BOOTSTRAP = sys.argv[1], sys.argv[2]
ATTEMPTS = 5000

connection = pika.BlockingConnection(pika.URLParameters(URL))
channel = connection.channel()
summary = {"declared": 0}
for index in range(ATTEMPTS):
    try:
        channel.queue_declare(queue=f"fq-{index}", durable=True)
    except pika.exceptions.ChannelClosedByBroker as closed:
        summary["refused_code"] = closed.reply_code
        summary["refused_text"] = closed.reply_text
        break
    summary["declared"] = index + 1

channel = connection.channel()
last = f"fq-{summary['declared'] - 1}"
channel.confirm_delivery()
channel.basic_publish(exchange="", routing_key=last, body=b"still works",
                      properties=pika.BasicProperties(delivery_mode=2))
method, _, body = channel.basic_get(last, auto_ack=True)
summary["last_queue_gives_back"] = body.decode() if method else None

admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
try:
    admin.create_topics([NewTopic("too-many", num_partitions=1, replication_factor=1)])
    summary["kafka_create"] = "created"
except KafkaError as error:
    summary["kafka_create"] = type(error).__name__

for index in range(10):
    channel.queue_delete(queue=f"fq-{index}")
try:
    channel.queue_declare(queue="after-deletes", durable=True)
    summary["declare_after_deletes"] = "ok"
except pika.exceptions.ChannelClosedByBroker as closed:
    summary["declare_after_deletes"] = closed.reply_code
admin.close()
connection.close()
print(json.dumps(summary))
