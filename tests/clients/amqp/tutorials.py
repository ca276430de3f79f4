"""RabbitMQ's six pika tutorials (hello world, work queues, publish/subscribe, routing, topics,
RPC), each run to completion against a broker URL with the tutorial's own calls; consumers stop
once they have what the tutorial sends. Prints a JSON summary."""
import json
import sys
import threading
import time
import uuid

import pika

URL = sys.argv[1]


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def consume_until(channel, queue, count, auto_ack=True, timeout=10.0):
    """Collects `count` bodies from `queue` (or what arrived before `timeout`)."""
    got = []
    deadline = time.time() + timeout
    for method, properties, body in channel.consume(queue, auto_ack=auto_ack, inactivity_timeout=0.5):
        if method is not None:
            got.append(body.decode())
            if not auto_ack:
                channel.basic_ack(method.delivery_tag)
        if len(got) >= count or time.time() > deadline:
            break
    channel.cancel()
    return got


def tutorial_one():
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue='hello_t1')
    channel.basic_publish(exchange='', routing_key='hello_t1', body='Hello World!')
    got = consume_until(channel, 'hello_t1', 1)
    connection.close()
    return got


def tutorial_two():
    """Work queues: durable task_queue, persistent messages, two workers with prefetch 1 and
    manual acks share the tasks round-robin."""
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue='task_queue', durable=True)
    tasks = [f"task {i}{'.' * (i % 3)}" for i in range(10)]
    for task in tasks:
        channel.basic_publish(
            exchange='', routing_key='task_queue', body=task,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
    connection.close()
    done = {"a": [], "b": []}

    def worker(name):
        connection = connect()
        channel = connection.channel()
        channel.queue_declare(queue='task_queue', durable=True)
        channel.basic_qos(prefetch_count=1)

        def callback(ch, method, properties, body):
            time.sleep(0.02)
            done[name].append(body.decode())
            ch.basic_ack(delivery_tag=method.delivery_tag)
            if len(done["a"]) + len(done["b"]) >= len(tasks):
                ch.stop_consuming()

        channel.basic_consume(queue='task_queue', on_message_callback=callback)
        deadline = time.time() + 15
        while len(done["a"]) + len(done["b"]) < len(tasks) and time.time() < deadline:
            connection.process_data_events(time_limit=0.2)
        connection.close()

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"a": done["a"], "b": done["b"], "all": sorted(done["a"] + done["b"]) == sorted(tasks)}


def subscriber(exchange, exchange_type, keys, ready, out, count):
    connection = connect()
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)
    result = channel.queue_declare(queue='', exclusive=True)
    queue_name = result.method.queue
    for key in keys:
        channel.queue_bind(exchange=exchange, queue=queue_name, routing_key=key)
    ready.set()
    out.extend(consume_until(channel, queue_name, count))
    out.append(("queue", queue_name))
    connection.close()


def run_subscribers(exchange, exchange_type, key_sets, publish, counts):
    outs = [[] for _ in key_sets]
    readies = [threading.Event() for _ in key_sets]
    threads = [threading.Thread(target=subscriber,
                                args=(exchange, exchange_type, keys, ready, out, count))
               for keys, ready, out, count in zip(key_sets, readies, outs, counts)]
    for thread in threads:
        thread.start()
    for ready in readies:
        ready.wait(10)
    connection = connect()
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, exchange_type=exchange_type)
    for key, body in publish:
        channel.basic_publish(exchange=exchange, routing_key=key, body=body)
    connection.close()
    for thread in threads:
        thread.join()
    return [[item for item in out if not isinstance(item, tuple)] for out in outs], \
        [item[1] for out in outs for item in out if isinstance(item, tuple)]


def tutorial_three():
    bodies, queues = run_subscribers('logs', 'fanout', [[''], ['']],
                                     [('', 'info: one'), ('', 'info: two')], [2, 2])
    return {"received": bodies, "queues": queues}


def tutorial_four():
    bodies, _ = run_subscribers(
        'direct_logs', 'direct', [['error'], ['info', 'warning', 'error']],
        [('info', 'an info'), ('warning', 'a warning'), ('error', 'an error')], [1, 3])
    return bodies


def tutorial_five():
    bodies, _ = run_subscribers(
        'topic_logs', 'topic', [['*.critical'], ['kern.#'], ['#']],
        [('kern.critical', 'A critical kernel error'), ('kern.info', 'kernel info'),
         ('app.critical', 'app critical'), ('app.info.x', 'app info')], [2, 2, 4])
    return bodies


def tutorial_six():
    """RPC: a server on rpc_queue answers fib(n) to reply_to with the correlation_id."""
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    ready = threading.Event()
    stop = threading.Event()

    def server():
        connection = connect()
        channel = connection.channel()
        channel.queue_declare(queue='rpc_queue')

        def on_request(ch, method, props, body):
            response = fib(int(body))
            ch.basic_publish(exchange='', routing_key=props.reply_to,
                             properties=pika.BasicProperties(correlation_id=props.correlation_id),
                             body=str(response))
            ch.basic_ack(delivery_tag=method.delivery_tag)

        channel.basic_qos(prefetch_count=1)
        channel.basic_consume(queue='rpc_queue', on_message_callback=on_request)
        ready.set()
        while not stop.is_set():
            connection.process_data_events(time_limit=0.1)
        connection.close()

    thread = threading.Thread(target=server)
    thread.start()
    ready.wait(10)
    connection = connect()
    channel = connection.channel()
    callback_queue = channel.queue_declare(queue='', exclusive=True).method.queue
    responses = {}

    def on_response(ch, method, props, body):
        responses[props.correlation_id] = int(body)

    channel.basic_consume(queue=callback_queue, on_message_callback=on_response, auto_ack=True)
    answers = []
    for n in (10, 20, 30):
        corr_id = str(uuid.uuid4())
        channel.basic_publish(exchange='', routing_key='rpc_queue',
                              properties=pika.BasicProperties(reply_to=callback_queue,
                                                              correlation_id=corr_id),
                              body=str(n))
        deadline = time.time() + 10
        while corr_id not in responses and time.time() < deadline:
            connection.process_data_events(time_limit=0.1)
        answers.append(responses.get(corr_id))
    connection.close()
    stop.set()
    thread.join()
    return answers


print(json.dumps({
    "one": tutorial_one(),
    "two": tutorial_two(),
    "three": tutorial_three(),
    "four": tutorial_four(),
    "five": tutorial_five(),
    "six": tutorial_six(),
}))
