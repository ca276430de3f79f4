// amqplib (Node) against an AMQP broker URL: publish --count persistent messages on a confirm
// channel (waitForConfirms), then consume them with manual acks and prefetch 10, checking content
// and order, then basic.get finds the queue empty. Prints one JSON summary line; exit 1 on failure.
const amqp = require('amqplib');

function argument(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : fallback;
}

function fail(message) {
  console.error(`FAIL: ${message}`);
  process.exit(1);
}

async function publish(connection, queue, count) {
  const channel = await connection.createConfirmChannel();
  for (let i = 0; i < count; i++) {
    const body = Buffer.from(JSON.stringify({ seq: i }));
    channel.sendToQueue(queue, body, { persistent: true, contentType: 'application/json', messageId: `m${i}` });
  }
  await channel.waitForConfirms();
  await channel.close();
}

async function consume(connection, queue, count) {
  const channel = await connection.createChannel();
  await channel.prefetch(10);
  const received = [];
  let redelivered = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`received ${received.length} of ${count}`)), 60000);
    channel.consume(queue, (message) => {
      if (message === null) return reject(new Error('consumer cancelled by the broker'));
      if (message.fields.redelivered) redelivered++;
      if (message.properties.contentType !== 'application/json') return reject(new Error('content type lost'));
      received.push(JSON.parse(message.content.toString()).seq);
      channel.ack(message);
      if (received.length === count) { clearTimeout(timer); resolve(); }
    }, { noAck: false }).catch(reject);
  });
  return { channel, received, redelivered };
}

async function main() {
  const url = argument('url');
  const count = Number(argument('count', '1000'));
  const queue = `amqplib-${process.pid}-${Date.now()}`;
  const connection = await amqp.connect(url);
  const setup = await connection.createChannel();
  await setup.assertQueue(queue, { durable: true });
  await publish(connection, queue, count);
  const declared = await setup.checkQueue(queue);
  if (declared.messageCount !== count) fail(`queue holds ${declared.messageCount}, published ${count}`);
  const { channel, received, redelivered } = await consume(connection, queue, count);
  for (let i = 0; i < count; i++) {
    if (received[i] !== i) fail(`delivery ${i} was seq ${received[i]}`);
  }
  await channel.close();
  const left = await setup.get(queue, { noAck: true });
  if (left !== false) fail('the queue was not empty after every message was acked');
  await setup.deleteQueue(queue);
  await connection.close();
  console.log(JSON.stringify({ ok: true, published: count, consumed: received.length, redelivered }));
}

main().catch((error) => fail(error.stack || String(error)));
