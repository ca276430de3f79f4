"""The seeds' AMQP examples (issue 12), as users write them with pika, against a broker URL:
the `hello` producer and consumer, the `email_queue` worker with manual acks and prefetch 1,
and the `my_exchange` direct exchange bound to `process_queue`. Prints a JSON summary."""
import json
import sys

import pika

URL = sys.argv[1]


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def hello():
    # send.py
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue='hello')
    channel.basic_publish(exchange='', routing_key='hello', body='Hello World!')
    connection.close()
    # receive.py (stops after the one message instead of consuming forever)
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue='hello')
    received = []

    def callback(ch, method, properties, body):
        received.append(body.decode())
        ch.stop_consuming()

    channel.basic_consume(queue='hello', on_message_callback=callback, auto_ack=True)
    channel.start_consuming()
    connection.close()
    return received


def email_queue():
    connection = connect()
    channel = connection.channel()
    channel.queue_declare(queue='email_queue')
    for user_id in range(123, 128):
        channel.basic_publish(exchange='', routing_key='email_queue',
                              body=json.dumps({"user_id": user_id}))
    handled = []

    def callback(ch, method, properties, body):
        handled.append(json.loads(body)["user_id"])
        ch.basic_ack(delivery_tag=method.delivery_tag)
        if len(handled) == 5:
            ch.stop_consuming()

    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue='email_queue', on_message_callback=callback)
    channel.start_consuming()
    left = channel.queue_declare(queue='email_queue', passive=True).method.message_count
    connection.close()
    return handled, left


def my_exchange():
    connection = connect()
    channel = connection.channel()
    channel.exchange_declare(exchange='my_exchange', exchange_type='direct')
    channel.queue_declare(queue='process_queue')
    channel.queue_bind(exchange='my_exchange', queue='process_queue', routing_key='process')
    channel.basic_publish(exchange='my_exchange', routing_key='process', body='do it')
    channel.basic_publish(exchange='my_exchange', routing_key='other', body='not for us')
    bodies = []
    for _ in range(50):
        method, _, body = channel.basic_get('process_queue', auto_ack=True)
        if method is None:
            break
        bodies.append(body.decode())
    connection.close()
    return bodies


handled, left = email_queue()
print(json.dumps({
    "hello": hello(),
    "email_handled": handled,
    "email_left": left,
    "my_exchange": my_exchange(),
}))
