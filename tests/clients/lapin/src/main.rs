//! The lapin 4.12 client of `tests/tests/lapin.rs` (see there for what it proves): a durable
//! queue, 10,000 persistent messages published with publisher confirms, consumed with manual
//! acks and prefetch 100, one nacked with requeue. `lapin-client AMQP_URL` prints
//! `{"messages": N}` and exits 0 when every check held, else prints why and exits 1.
//!
//! A crate of its own, outside the workspace: lapin needs a runtime (tokio), whose feature on
//! `amq-protocol` would otherwise be unified into the broker's own `amq-protocol` by
//! `cargo build --workspace --all-targets`, so that `cargo run --release --bin weir` rebuilt
//! the broker (tests/run.sh fails when the two builds differ).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};

const MESSAGES: usize = 10_000;
const PREFETCH: u16 = 100;
/// The message the consumer nacks with requeue the first time it sees it.
const NACKED: usize = 4_321;
const QUEUE: &str = "lapin_durable";
/// How long the consumer waits for a delivery past its full prefetch window before it believes
/// none is coming (proving an absence, so only a slow broker could make this pass wrongly).
const PAST_PREFETCH_WAIT: Duration = Duration::from_millis(500);
/// The whole round trip's bound (the test harness kills the process later than this).
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(150);

fn main() -> Result<()> {
    let url = std::env::args()
        .nth(1)
        .context("usage: lapin-client AMQP_URL")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::time::timeout(ROUND_TRIP_TIMEOUT, roundtrip(&url))
            .await
            .context("lapin round trip timed out")?
    })?;
    println!("{{\"messages\": {MESSAGES}}}");
    Ok(())
}

async fn roundtrip(url: &str) -> Result<()> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let publisher = connection.create_channel().await?;
    // A leftover from an earlier run against a RabbitMQ that kept its durable queue.
    publisher
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    publisher
        .queue_declare(QUEUE.into(), durable, FieldTable::default())
        .await?;
    publish_confirmed(&publisher).await?;
    let consumer_channel = connection.create_channel().await?;
    consumer_channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let consumer = consumer_channel
        .basic_consume(
            QUEUE.into(),
            "lapin_consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let received = consume_all(consumer).await?;
    received.check()?;
    let left = publisher
        .basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
        .await?;
    ensure!(left.is_none(), "a message left after all were acked");
    publisher
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    connection.close(200, "done".into()).await?;
    Ok(())
}

/// Publishes every message persistent (delivery mode 2) on a confirm channel, all in flight at
/// once, then waits for each confirm: all must be acks.
async fn publish_confirmed(channel: &Channel) -> Result<()> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let mut confirms = Vec::with_capacity(MESSAGES);
    for index in 0..MESSAGES {
        let confirm = channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                body(index).as_bytes(),
                persistent.clone(),
            )
            .await?;
        confirms.push(confirm);
    }
    let mut acked = 0;
    for confirm in confirms {
        if confirm.await?.is_ack() {
            acked += 1;
        }
    }
    ensure!(
        acked == MESSAGES,
        "{acked} of {MESSAGES} publishes confirmed with an ack"
    );
    Ok(())
}

fn body(index: usize) -> String {
    format!("m{index}")
}

/// What the consumer saw: every delivery's index and redelivered flag, in arrival order.
#[derive(Default)]
struct Received {
    deliveries: Vec<(usize, bool)>,
    /// Deliveries that arrived while the full prefetch window was unacked.
    past_prefetch: usize,
    /// `NACKED` was nacked once already.
    nacked: bool,
}

/// Takes the first full prefetch window without acking and checks that no further delivery
/// comes; then acks everything (nacking `NACKED` with requeue once) until every message is
/// acked.
async fn consume_all(mut consumer: Consumer) -> Result<Received> {
    let mut received = Received::default();
    let mut window = Vec::new();
    while window.len() < usize::from(PREFETCH) {
        window.push(next(&mut consumer).await?);
    }
    if let Ok(extra) = tokio::time::timeout(PAST_PREFETCH_WAIT, next(&mut consumer)).await {
        received.past_prefetch += 1;
        window.push(extra?);
    }
    let mut acked = 0;
    for delivery in window {
        acked += settle(&mut received, delivery).await?;
    }
    while acked < MESSAGES {
        let delivery = next(&mut consumer).await?;
        acked += settle(&mut received, delivery).await?;
    }
    Ok(received)
}

async fn next(consumer: &mut Consumer) -> Result<Delivery> {
    Ok(consumer.next().await.context("consumer cancelled")??)
}

/// Records the delivery and acks it (1), or nacks it with requeue (0) if it is `NACKED` seen
/// for the first time.
async fn settle(received: &mut Received, delivery: Delivery) -> Result<usize> {
    let text = String::from_utf8_lossy(&delivery.data).into_owned();
    let index: usize = text
        .strip_prefix('m')
        .and_then(|number| number.parse().ok())
        .with_context(|| format!("unexpected body {text:?}"))?;
    received.deliveries.push((index, delivery.redelivered));
    if index == NACKED && !received.nacked {
        received.nacked = true;
        let requeue = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        delivery.nack(requeue).await?;
        return Ok(0);
    }
    delivery.ack(BasicAckOptions::default()).await?;
    Ok(1)
}

impl Received {
    fn check(&self) -> Result<()> {
        ensure!(
            self.past_prefetch == 0,
            "a delivery arrived past prefetch {PREFETCH} with none acked"
        );
        let first: Vec<usize> = self
            .deliveries
            .iter()
            .filter(|&&(_, redelivered)| !redelivered)
            .map(|&(index, _)| index)
            .collect();
        let again: Vec<usize> = self
            .deliveries
            .iter()
            .filter(|&&(_, redelivered)| redelivered)
            .map(|&(index, _)| index)
            .collect();
        let in_order = first.iter().copied().eq(0..MESSAGES);
        ensure!(
            in_order,
            "first deliveries not 0..{MESSAGES} in order: {} of them, first out of place at {:?}",
            first.len(),
            first.iter().enumerate().find(|&(at, &index)| at != index)
        );
        ensure!(
            again == [NACKED],
            "redelivered: {again:?}, expected only the nacked {NACKED}"
        );
        Ok(())
    }
}
