// kafkajs 2.2.4 round trip (a client that speaks no flexible versions): produce --count records
// with keys and headers to explicit partitions of an auto-created topic, then consume them with a
// consumer group from the beginning and compare every record (partition, offset, key, value,
// header) with what the broker acknowledged. Prints one JSON summary line or exits 1.
'use strict';

const { Kafka, logLevel } = require('kafkajs');

const { fail, option } = require('./common');

const bootstrap = option('bootstrap');
const topic = option('topic', 'kafkajs-events');
const count = Number(option('count', '1000'));
const partitions = Number(option('partitions', '3'));
const batch = 100;

// The whole run has a deadline: no hang, ever.
setTimeout(() => fail('timed out after 150 s'), 150000).unref();

async function main() {
  const kafka = new Kafka({ clientId: 'weir-kafkajs-test', brokers: [bootstrap], logLevel: logLevel.WARN });

  const producer = kafka.producer({ allowAutoTopicCreation: true });
  await producer.connect();
  const sent = new Map(); // "partition:offset" -> "key|value|header"
  for (let first = 0; first < count; first += batch) {
    const messages = [];
    for (let n = first; n < Math.min(first + batch, count); n += 1) {
      messages.push({
        partition: n % partitions,
        key: `key-${n}`,
        value: JSON.stringify({ n }),
        headers: { n: String(n) },
      });
    }
    const results = await producer.send({ topic, acks: -1, messages });
    // The broker answers one base offset per partition; the messages of one partition follow it
    // in the order they were given.
    const base = new Map(results.map((r) => [r.partition, BigInt(r.baseOffset)]));
    const next = new Map();
    for (const message of messages) {
      if (!base.has(message.partition)) fail(`no result for partition ${message.partition}`, results);
      const index = next.get(message.partition) || 0n;
      next.set(message.partition, index + 1n);
      const offset = base.get(message.partition) + index;
      const id = `${message.partition}:${offset}`;
      if (sent.has(id)) fail(`offset ${id} acknowledged twice`);
      sent.set(id, `${message.key}|${message.value}|${message.headers.n}`);
    }
  }
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: 'kafkajs-group' });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const received = new Map();
  const lastOffset = new Map();
  let resolveAll;
  const all = new Promise((resolve) => { resolveAll = resolve; });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const offset = BigInt(message.offset);
      const id = `${partition}:${offset}`;
      if (received.has(id)) fail(`record ${id} received twice`);
      if (lastOffset.has(partition) && lastOffset.get(partition) >= offset) {
        fail(`partition ${partition} went back from ${lastOffset.get(partition)} to ${offset}`);
      }
      lastOffset.set(partition, offset);
      const header = message.headers && message.headers.n ? message.headers.n.toString() : '';
      received.set(id, `${message.key}|${message.value}|${header}`);
      if (received.size >= count) resolveAll();
    },
  });
  await all;
  await consumer.disconnect();

  if (sent.size !== count) fail(`${sent.size} acknowledged offsets for ${count} records`);
  const differences = [];
  for (const [id, record] of sent) {
    if (received.get(id) !== record) differences.push({ id, sent: record, received: received.get(id) });
  }
  for (const id of received.keys()) if (!sent.has(id)) differences.push({ id, extra: received.get(id) });
  if (differences.length) fail(`${differences.length} records differ`, differences.slice(0, 10));

  console.log(JSON.stringify({ ok: true, produced: sent.size, consumed: received.size, partitions }));
  process.exit(0);
}

main().catch((error) => fail(`kafkajs error: ${error && error.stack ? error.stack : error}`));
