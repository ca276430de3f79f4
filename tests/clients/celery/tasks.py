"""The Celery app of tests/tests/celery.rs: the classic `add` task, with Celery's AMQP broker URL
(kombu's py-amqp transport) and the rpc:// result backend (replies over AMQP too).

The broker URL comes from WEIR_AMQP_URL so that the same app runs against Weir or RabbitMQ.
"""

import os

from celery import Celery

app = Celery("tasks", broker=os.environ["WEIR_AMQP_URL"], backend="rpc://")
# Fail fast instead of retrying for ever when the broker is not there.
app.conf.broker_connection_retry_on_startup = False
app.conf.broker_connection_max_retries = 3


@app.task
def add(x, y):
    return x + y
