// kafkajs 2.2.4 with SASL (SCRAM-SHA-256 or -512, or PLAIN) over plaintext: produce --count
// records, consume them back with a consumer group, compare. Prints one JSON summary line or
// exits 1.
'use strict';

const { Kafka, logLevel } = require('kafkajs');

const { fail, option } = require('./common');

const bootstrap = option('bootstrap');
const topic = option('topic', 'kafkajs-sasl');
const count = Number(option('count', '20'));
const sasl = {
  mechanism: option('mechanism', 'scram-sha-256').toLowerCase(),
  username: option('user'),
  password: option('password'),
};

// The whole run has a deadline: no hang, ever.
setTimeout(() => fail('timed out after 60 s'), 60000).unref();

async function main() {
  const kafka = new Kafka({ clientId: 'weir-kafkajs-sasl', brokers: [bootstrap], sasl, logLevel: logLevel.WARN });
  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const sent = [];
  for (let n = 0; n < count; n += 1) sent.push(`kafkajs-${n}`);
  await producer.send({ topic, messages: sent.map((value) => ({ value })) });
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: `kafkajs-sasl-${Date.now()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ message }) => {
        got.push(message.value.toString());
        if (got.length >= sent.length) resolve();
      },
    });
  });
  await consumer.disconnect();
  if (JSON.stringify(got) !== JSON.stringify(sent)) fail('consumed records differ', { sent, got });
  console.log(JSON.stringify({ ok: true, records: got.length, mechanism: sasl.mechanism }));
}

main().catch((error) => fail(`${error.name}: ${error.message}`));
