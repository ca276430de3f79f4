"""The x-delayed-message exchange (RabbitMQ's delayed-message plugin) with pika, in phases:
  live:   declare errors; delays in mixed order delivered in due order and never early, x-delay
          negated on delivery; no x-delay, 0 or negative routes at once; a topic-typed delayed
          exchange routes by pattern once due; mandatory returns at once (as the plugin); a
          deleted delayed exchange drops what it held.
  before: publishes persistent messages with delays to a durable queue behind a delayed exchange
          (confirms), prints when each was sent; the test then restarts or SIGKILLs the broker.
  after SENT_JSON: consumes for a while; says when each message arrived (epoch seconds), so the
          test checks every one came once, in due order, not before its due time.
  e2e:    a direct exchange bound exchange-to-exchange to a delayed one: what asks for a delay
          waits there (the other binding of the direct exchange routes at once), what does not
          passes straight through.
  kafka BOOTSTRAP: confluent-kafka produces to the delayed exchange, one record with header
          `x-delay` (decimal text) and one without; says when each was acknowledged and arrived.
  paths_before BOOTSTRAP: one held message by each path (e2e with pika and confirms, Kafka with
          acks=all), due seconds after; the test SIGKILLs the broker.
  paths_after SENT_JSON: as `after`, for those two.
Prints a JSON summary."""
import json
import sys
import time

import pika

URL, PHASE = sys.argv[1], sys.argv[2]


def connect():
    return pika.BlockingConnection(pika.URLParameters(URL))


def declare_error(arguments, exchange_type='x-delayed-message'):
    connection = connect()
    try:
        connection.channel().exchange_declare('delayed_bad', exchange_type, arguments=arguments)
        return None
    except pika.exceptions.ChannelClosedByBroker as error:
        return [error.reply_code, error.reply_text]
    finally:
        if connection.is_open:
            connection.close()


def collect(channel, queue, count, seconds):
    """(body, seconds since `start`, x-delay header) of what arrives, until `count` or timeout."""
    got = []
    for method, properties, body in channel.consume(queue, auto_ack=True, inactivity_timeout=0.05):
        if method is not None:
            delay = (properties.headers or {}).get('x-delay')
            got.append([body.decode(), time.time(), delay])
        if len(got) >= count or time.time() > seconds:
            break
    channel.cancel()
    return got


def live():
    out = {
        "missing_type": declare_error({}),
        "invalid_type": declare_error({'x-delayed-type': 'x-consistent-hash'}),
    }
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.exchange_declare('delayed_direct', 'x-delayed-message',
                             arguments={'x-delayed-type': 'direct'})
    # The same again is fine; another x-delayed-type is not.
    channel.exchange_declare('delayed_direct', 'x-delayed-message',
                             arguments={'x-delayed-type': 'direct'})
    other = connect()
    try:
        other.channel().exchange_declare('delayed_direct', 'x-delayed-message',
                                         arguments={'x-delayed-type': 'topic'})
        out["redeclare"] = None
    except pika.exceptions.ChannelClosedByBroker as error:
        out["redeclare"] = [error.reply_code, error.reply_text]
    channel.queue_declare('delayed_q')
    channel.queue_bind('delayed_q', 'delayed_direct', routing_key='k')
    sent = {}
    for body, delay in [('d900', 900), ('d300', 300), ('d600', 600), ('none', None),
                        ('zero', 0), ('negative', -50)]:
        headers = {} if delay is None else {'x-delay': delay}
        sent[body] = [time.time(), delay]
        channel.basic_publish('delayed_direct', 'k', body,
                              properties=pika.BasicProperties(headers=headers))
    got = collect(channel, 'delayed_q', 6, time.time() + 5)
    out["order"] = [body for body, _, _ in got]
    out["early"] = [body for body, at, _ in got
                    if sent[body][1] and at < due(sent[body])]
    out["late"] = [body for body, at, _ in got
                   if sent[body][1] and at > sent[body][0] + sent[body][1] / 1000.0 + 0.5]
    out["x_delay"] = {body: delay for body, _, delay in got}

    channel.exchange_declare('delayed_topic', 'x-delayed-message',
                             arguments={'x-delayed-type': 'topic'})
    channel.queue_declare('delayed_orders')
    channel.queue_bind('delayed_orders', 'delayed_topic', routing_key='orders.*')
    for key in ['orders.paid', 'invoices.paid', 'orders.shipped.late']:
        channel.basic_publish('delayed_topic', key, key,
                              properties=pika.BasicProperties(headers={'x-delay': 200}))
    immediately = channel.basic_get('delayed_orders', auto_ack=True)[0] is not None
    topic = collect(channel, 'delayed_orders', 3, time.time() + 1.5)
    out["topic"] = {"immediately": immediately, "routed": [body for body, _, _ in topic]}

    returned = []
    try:
        channel.basic_publish('delayed_direct', 'k', 'mandatory',
                              properties=pika.BasicProperties(headers={'x-delay': 200}),
                              mandatory=True)
    except pika.exceptions.UnroutableError as error:
        returned = [message.body.decode() for message in error.messages]
    later = collect(channel, 'delayed_q', 1, time.time() + 2)
    out["mandatory"] = {"returned": returned, "routed": [body for body, _, _ in later]}

    channel.exchange_declare('delayed_gone', 'x-delayed-message',
                             arguments={'x-delayed-type': 'fanout'})
    channel.queue_declare('delayed_gone_q')
    channel.queue_bind('delayed_gone_q', 'delayed_gone')
    channel.basic_publish('delayed_gone', '', 'dropped',
                          properties=pika.BasicProperties(headers={'x-delay': 300}))
    channel.exchange_delete('delayed_gone')
    channel.exchange_declare('delayed_gone', 'x-delayed-message',
                             arguments={'x-delayed-type': 'fanout'})
    channel.queue_bind('delayed_gone_q', 'delayed_gone')
    time.sleep(0.8)
    out["after_delete"] = channel.queue_declare('delayed_gone_q', passive=True).method.message_count
    try:
        channel.basic_get('amq.weir.delayed.delayed_direct')
        out["hold_queue_get"] = None
    except pika.exceptions.ChannelClosedByBroker as error:
        out["hold_queue_get"] = error.reply_code
    connection.close()
    return out


def due(sent):
    """The earliest time a message sent at `sent[0]` with delay `sent[1]` ms may arrive. The
    broker's clock for it is the record's timestamp, in whole milliseconds, so its due time can
    be up to 1 ms before the client's reading of the send instant plus the delay."""
    at, delay = sent
    return at + delay / 1000.0 - 0.001


DELAYS = [('r6000', 6000), ('r300', 300), ('r4000', 4000), ('r5000', 5000), ('r4500', 4500)]


def before():
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    channel.exchange_declare('delayed_durable', 'x-delayed-message', durable=True,
                             arguments={'x-delayed-type': 'direct'})
    channel.queue_declare('delayed_durable_q', durable=True)
    channel.queue_bind('delayed_durable_q', 'delayed_durable', routing_key='job')
    sent = {}
    for body, delay in DELAYS:
        sent[body] = [time.time(), delay]
        channel.basic_publish('delayed_durable', 'job', body,
                              properties=pika.BasicProperties(delivery_mode=2,
                                                              headers={'x-delay': delay}))
    connection.close()
    return {"sent": sent}


def after(sent):
    deadline = max(at + delay / 1000.0 for at, delay in sent.values()) + 3
    connection = connect()
    channel = connection.channel()
    got = collect(channel, 'delayed_durable_q', len(sent) + 1, deadline)
    extra = channel.queue_declare('delayed_durable_q', durable=True, passive=True)
    connection.close()
    return {
        "order": [body for body, _, _ in got],
        "early": [body for body, at, _ in got if at < due(sent[body])],
        "lateness": {body: round(at - sent[body][0] - sent[body][1] / 1000.0, 3)
                     for body, at, _ in got},
        "x_delay": {body: delay for body, _, delay in got},
        "left": extra.method.message_count,
    }


def declare_e2e(channel, durable=False):
    """delayed_front (direct) → delayed_back (x-delayed-message, direct) → delayed_e2e_q, and
    delayed_front → delayed_front_q: the delay sits behind an exchange-to-exchange binding."""
    channel.exchange_declare('delayed_front', 'direct', durable=durable)
    channel.exchange_declare('delayed_back', 'x-delayed-message', durable=durable,
                             arguments={'x-delayed-type': 'direct'})
    channel.exchange_bind('delayed_back', 'delayed_front', routing_key='k')
    channel.queue_declare('delayed_e2e_q', durable=durable)
    channel.queue_bind('delayed_e2e_q', 'delayed_back', routing_key='k')
    channel.queue_declare('delayed_front_q', durable=durable)
    channel.queue_bind('delayed_front_q', 'delayed_front', routing_key='k')


def arrivals(got, sent):
    """What `collect` got, against what was sent: order, the early ones, lateness, x-delay."""
    return {
        "order": [body for body, _, _ in got],
        "early": [body for body, at, _ in got if sent[body][1] and at < due(sent[body])],
        "lateness": {body: round(at - sent[body][0] - (sent[body][1] or 0) / 1000.0, 3)
                     for body, at, _ in got},
        "x_delay": {body: delay for body, _, delay in got},
    }


def e2e():
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    declare_e2e(channel)
    sent = {}
    for body, delay in [('e800', 800), ('e0', None)]:
        headers = {} if delay is None else {'x-delay': delay}
        sent[body] = [time.time(), delay]
        channel.basic_publish('delayed_front', 'k', body,
                              properties=pika.BasicProperties(headers=headers))
    # The front's own binding takes both at once; the delayed exchange only the undelayed one.
    front = collect(channel, 'delayed_front_q', 2, time.time() + 1)
    got = collect(channel, 'delayed_e2e_q', 2, time.time() + 4)
    connection.close()
    out = arrivals(got, sent)
    out["front"] = sorted(body for body, _, _ in front)
    return out


def produce(bootstrap, records):
    """Produces (key, value, x-delay text or None) to delayed_kafka with acks=all; answers
    {value: [time produced, delay ms or None, seconds until acknowledged]}."""
    from confluent_kafka import Producer
    producer = Producer({'bootstrap.servers': bootstrap, 'acks': 'all', 'linger.ms': 0})
    sent, acked = {}, {}

    def delivered(error, message):
        value = message.value().decode()
        acked[value] = None if error else round(time.time() - sent[value][0], 3)

    for key, value, delay in records:
        headers = [] if delay is None else [('x-delay', delay.encode())]
        sent[value] = [time.time(), None if delay is None else int(delay)]
        producer.produce('delayed_kafka', key=key, value=value, headers=headers,
                         on_delivery=delivered)
        producer.poll(0)
    producer.flush(10)
    return {value: sent[value] + [acked.get(value)] for value in sent}


def declare_kafka(channel, durable=False):
    channel.exchange_declare('delayed_kafka', 'x-delayed-message', durable=durable,
                             arguments={'x-delayed-type': 'direct'})
    channel.queue_declare('delayed_kafka_q', durable=durable)
    channel.queue_bind('delayed_kafka_q', 'delayed_kafka', routing_key='job')


def kafka(bootstrap):
    connection = connect()
    channel = connection.channel()
    declare_kafka(channel)
    produced = produce(bootstrap, [('job', 'k800', '800'), ('job', 'knone', None)])
    got = collect(channel, 'delayed_kafka_q', 2, time.time() + 4)
    connection.close()
    sent = {value: record[:2] for value, record in produced.items()}
    out = arrivals(got, sent)
    out["acked_after"] = {value: record[2] for value, record in produced.items()}
    return out


def paths_before(bootstrap):
    connection = connect()
    channel = connection.channel()
    channel.confirm_delivery()
    declare_e2e(channel, durable=True)
    declare_kafka(channel, durable=True)
    sent = {'e4000': [time.time(), 4000]}
    channel.basic_publish('delayed_front', 'k', 'e4000',
                          properties=pika.BasicProperties(delivery_mode=2,
                                                          headers={'x-delay': 4000}))
    channel.queue_purge('delayed_front_q')
    connection.close()
    produced = produce(bootstrap, [('job', 'k4500', '4500')])
    sent['k4500'] = produced['k4500'][:2]
    return {"sent": sent, "acked": produced['k4500'][2] is not None}


def paths_after(sent):
    deadline = max(at + delay / 1000.0 for at, delay in sent.values()) + 3
    connection = connect()
    channel = connection.channel()
    got = collect(channel, 'delayed_e2e_q', 1, deadline)
    got += collect(channel, 'delayed_kafka_q', 1, deadline)
    connection.close()
    return arrivals(got, sent)


if PHASE == 'live':
    print(json.dumps(live()))
elif PHASE == 'before':
    print(json.dumps(before()))
elif PHASE == 'e2e':
    print(json.dumps(e2e()))
elif PHASE == 'kafka':
    print(json.dumps(kafka(sys.argv[3])))
elif PHASE == 'paths_before':
    print(json.dumps(paths_before(sys.argv[3])))
elif PHASE == 'paths_after':
    print(json.dumps(paths_after(json.loads(sys.argv[3]))))
else:
    print(json.dumps(after(json.loads(sys.argv[3]))))
