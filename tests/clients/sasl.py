"""SASL against weir with real clients (suite tests/tests/sasl.rs).

Scenarios:
  create      confluent-kafka AdminClient: alter_user_scram_credentials upserts --user/--password
              (--mechanism, 4096 iterations), then describe; authenticates with --sasl-* if given
  delete      the same AdminClient deletes --user's --mechanism credential
  roundtrip   confluent-kafka Producer + Consumer with SASL_PLAINTEXT: --count records out and back
  refused     confluent-kafka Producer with a wrong password: the client reports an
              authentication failure and delivers nothing
  python      kafka-python KafkaProducer + KafkaConsumer with SASL_PLAINTEXT
  pika        pika BlockingConnection to --amqp HOST:PORT: prints whether the login was accepted and the broker's reply text otherwise
"""

import uuid

from common import Deadline, check, done, fail, parser


def sasl_conf(args, user=None, password=None):
    return {
        "bootstrap.servers": args.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": args.mechanism,
        "sasl.username": user or args.user,
        "sasl.password": password or args.password,
    }


def admin(args):
    from confluent_kafka.admin import AdminClient

    conf = {"bootstrap.servers": args.bootstrap}
    if args.sasl_user:
        conf = sasl_conf(args, args.sasl_user, args.sasl_password)
        conf["sasl.mechanism"] = "SCRAM-SHA-512"
    return AdminClient(conf)


def scram_mechanism(name):
    from confluent_kafka.admin import ScramMechanism

    return {"SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256, "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512}[name]


def create(args):
    from confluent_kafka.admin import ScramCredentialInfo, UserScramCredentialUpsertion

    client = admin(args)
    info = ScramCredentialInfo(scram_mechanism(args.mechanism), 4096)
    upsertion = UserScramCredentialUpsertion(args.user, info, args.password.encode())
    for future in client.alter_user_scram_credentials([upsertion], request_timeout=20).values():
        future.result()
    described = client.describe_user_scram_credentials([args.user], request_timeout=20)[args.user].result()
    infos = described.scram_credential_infos
    done(mechanisms=[str(i.mechanism) for i in infos], iterations=[i.iterations for i in infos])


def delete(args):
    from confluent_kafka.admin import UserScramCredentialDeletion

    deletion = UserScramCredentialDeletion(args.user, scram_mechanism(args.mechanism))
    client = admin(args)  # kept alive until the answer: a dropped client cancels its futures
    for future in client.alter_user_scram_credentials([deletion], request_timeout=20).values():
        future.result()
    done()


def roundtrip(args):
    from confluent_kafka import Consumer, Producer

    topic = args.topic
    errors = []
    producer = Producer(dict(sasl_conf(args), error_cb=lambda e: errors.append(str(e))))
    sent = [f"{args.user}-{i}".encode() for i in range(args.count)]
    for value in sent:
        producer.produce(topic, value)
    check(producer.flush(20) == 0, "records left unsent", errors=errors)
    consumer = Consumer(dict(sasl_conf(args), **{"group.id": str(uuid.uuid4()), "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    got = []
    deadline = Deadline(30, "consuming")
    while len(got) < len(sent) and not deadline.expired():
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            got.append(message.value())
    consumer.close()
    check(got == sent, "consumed records differ", sent=len(sent), got=len(got))
    done(records=len(got))


def refused(args):
    from confluent_kafka import KafkaError, Producer

    errors = []
    delivered = []
    producer = Producer(dict(sasl_conf(args), error_cb=lambda e: errors.append(e), **{"message.timeout.ms": 3000}))
    producer.produce(args.topic, b"must not arrive", on_delivery=lambda err, msg: delivered.append(err is None))
    producer.flush(10)
    check(not any(delivered), "a record was delivered with a wrong password")
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    check(auth, "no authentication error reported", errors=[str(e) for e in errors])
    done(error=str(auth[0]))


def python(args):
    from kafka import KafkaConsumer, KafkaProducer

    conf = dict(
        bootstrap_servers=args.bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=args.mechanism,
        sasl_plain_username=args.user,
        sasl_plain_password=args.password,
    )
    producer = KafkaProducer(**conf)
    sent = [f"kp-{i}".encode() for i in range(args.count)]
    for value in sent:
        producer.send(args.topic, value)
    producer.flush(20)
    producer.close()
    consumer = KafkaConsumer(args.topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **conf)
    got = [m.value for m in consumer][: len(sent)]
    consumer.close()
    check(got == sent, "consumed records differ", sent=len(sent), got=len(got))
    done(records=len(got))


def amqp(args):
    import pika

    host, port = args.amqp.rsplit(":", 1)
    params = pika.ConnectionParameters(
        host, int(port), credentials=pika.PlainCredentials(args.user, args.password), connection_attempts=1
    )
    try:
        connection = pika.BlockingConnection(params)
    except pika.exceptions.ProbableAuthenticationError as error:
        done(accepted=False, reply=str(error))
        return
    except pika.exceptions.AMQPConnectionError as error:
        done(accepted=False, reply=repr(error))
        return
    channel = connection.channel()
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.basic_publish("", queue, b"hello")
    method, _, body = channel.basic_get(queue, auto_ack=True)
    check(body == b"hello", "message not round-tripped", got=body)
    connection.close()
    done(accepted=True)


def main():
    p = parser(__doc__)
    p.add_argument("--scenario", required=True)
    p.add_argument("--user", default="alice")
    p.add_argument("--password", default="alice-secret")
    p.add_argument("--mechanism", default="SCRAM-SHA-512")
    p.add_argument("--sasl-user")
    p.add_argument("--sasl-password")
    p.add_argument("--topic", default="sasl-topic")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--amqp")
    args = p.parse_args()
    scenarios = {
        "create": create,
        "delete": delete,
        "roundtrip": roundtrip,
        "refused": refused,
        "python": python,
        "pika": amqp,
    }
    if args.scenario not in scenarios:
        fail(f"unknown scenario {args.scenario}")
    scenarios[args.scenario](args)


if __name__ == "__main__":
    main()
