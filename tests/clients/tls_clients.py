"""Clients over TLS (and, for comparison, plaintext) against one broker.

kafka: confluent-kafka (librdkafka 2.16) with security.protocol=SSL when --ca is given (else
PLAINTEXT; SASL_SSL with SCRAM-SHA-512 when --sasl-user is given too): Metadata must advertise only --ports (the listener the client came in through), then
--count records are produced and consumed back by a consumer group and compared.
amqp: pika over amqps (TLS, PLAIN guest/guest): --count messages published to a fresh queue
with confirms and fetched back with basic.get, compared."""

import ssl
import time

from common import Deadline, check, done, fail, parser

args_parser = parser(__doc__)
args_parser.add_argument("mode", choices=["kafka", "amqp"])
args_parser.add_argument("--ca", help="CA file (PEM) the broker's certificate chains to")
args_parser.add_argument("--cert", help="client certificate (PEM), for mutual TLS")
args_parser.add_argument("--key", help="client key (PEM)")
args_parser.add_argument("--sasl-user", help="SASL_SSL with SCRAM-SHA-512 as this user (needs --ca)")
args_parser.add_argument("--sasl-password")
args_parser.add_argument("--ports", default="", help="comma-separated ports Metadata may advertise")
args_parser.add_argument("--topic", default="tls-topic")
args_parser.add_argument("--count", type=int, default=200)
args = args_parser.parse_args()


def kafka_config():
    config = {"bootstrap.servers": args.bootstrap}
    if args.ca:
        config.update({"security.protocol": "SSL", "ssl.ca.location": args.ca})
    if args.sasl_user:
        config.update(
            {
                "security.protocol": "SASL_SSL",
                "sasl.mechanisms": "SCRAM-SHA-512",
                "sasl.username": args.sasl_user,
                "sasl.password": args.sasl_password,
            }
        )
    if args.cert:
        config.update({"ssl.certificate.location": args.cert, "ssl.key.location": args.key})
    return config


def kafka():
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient

    brokers = AdminClient(kafka_config()).list_topics(timeout=30).brokers
    advertised = sorted(broker.port for broker in brokers.values())
    expected = sorted(int(port) for port in args.ports.split(",") if port)
    check(advertised == expected, "Metadata advertised other ports", advertised=advertised, expected=expected)

    producer = Producer({**kafka_config(), "linger.ms": 5})
    errors = []
    for n in range(args.count):
        producer.produce(args.topic, value=f"{n}".encode(), on_delivery=lambda e, m: e and errors.append(str(e)))
    check(producer.flush(60) == 0, "records left unsent")
    check(not errors, "delivery failed", errors=errors[:5])

    consumer = Consumer({**kafka_config(), "group.id": f"{args.topic}-group", "auto.offset.reset": "earliest"})
    consumer.subscribe([args.topic])
    got = []
    deadline = Deadline(60, f"consuming {args.count} records")
    while len(got) < args.count:
        deadline.check(got=len(got))
        message = consumer.poll(1.0)
        if message is None:
            continue
        if message.error():
            fail("consume error", error=str(message.error()))
        got.append(int(message.value()))
    consumer.close()
    check(sorted(got) == list(range(args.count)), "consumed records differ", got=got[:10])
    done(produced=args.count, consumed=len(got), ports=advertised)


def amqp():
    import pika

    context = ssl.create_default_context(cafile=args.ca)
    host, port = args.bootstrap.rsplit(":", 1)
    parameters = pika.ConnectionParameters(
        host=host,
        port=int(port),
        credentials=pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(context, server_hostname="localhost"),
    )
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    for n in range(args.count):
        channel.basic_publish(exchange="", routing_key=queue, body=f"{n}".encode())
    got = []
    deadline = Deadline(60, f"getting {args.count} messages")
    while len(got) < args.count:
        deadline.check(got=len(got))
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        got.append(int(body))
    connection.close()
    check(got == list(range(args.count)), "messages differ", got=got[:10])
    done(published=args.count, got=len(got))


kafka() if args.mode == "kafka" else amqp()
