//! What AMQP does on every shard at start, before its listener accepts: shard 0 declares
//! RabbitMQ's predeclared exchanges (`amq.direct`, ...) and deletes the queues that were not
//! durable (RabbitMQ drops them on restart); every shard opens its queue ack store, rebuilds
//! the runtimes of the durable queues it owns from their logs and acks (`queue_owner::recover`;
//! a stream only reopens, `queue_owner/stream.rs`) and starts deleting their consumed segments (`consumed.rs`). And what it does at a clean
//! shutdown (`stop`): persist every ack the shard has taken in.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::exchange::PREDECLARED;
use super::message::decode_batches;
use super::queue::{spec_of, CONFIG_DURABLE};
use super::queue_owner;
use crate::routing::exchange::Exchange;
use crate::routing::table::Change;
use crate::shard::mesh::{reply_channel, ControlJob, Job};
use crate::shard::Shard;

/// Bytes read from a queue's log per step while rebuilding it.
const RECOVERY_READ_BYTES: usize = 1 << 20;
/// How long a stopping shard waits for the other shards' connections to close before it closes
/// its ack store. They close within milliseconds of the shutdown (AMQP's get connection.close
/// at once); one still open after this is stuck, and the acks it might still send are
/// redelivered after the restart, as after a crash.
const CONNECTIONS_CLOSED_WAIT: Duration = Duration::from_secs(2);

pub async fn start(shard: Rc<Shard>) -> anyhow::Result<()> {
    queue_owner::open_ack_store(&shard).await?;
    crate::shares::queues::set_hook(Rc::new(queue_owner::shared::SharedQueues));
    if shard.id.index() == 0 {
        declare_predeclared(&shard).await?;
        delete_transient_queues(&shard).await;
    }
    let metadata = shard.metadata();
    for (name, topic) in &metadata.topics {
        let durable = topic
            .configs
            .get(CONFIG_DURABLE)
            .is_some_and(|value| value == "true");
        if durable && metadata.owner(name, 0) == Some(shard.id) {
            recover_queue(&shard, name, &topic.configs)
                .await
                .with_context(|| format!("rebuilding queue {name} from its log"))?;
        }
    }
    super::consumed::spawn(shard.clone());
    super::alarm::spawn(shard);
    Ok(())
}

/// A clean shutdown, on every shard once its own connections are gone: acks of this shard's
/// queues may still come from connections on other shards, so it waits (at most
/// `CONNECTIONS_CLOSED_WAIT`) until no shard has a connection left, then lets its inbox serve
/// what they sent (jobs are served in arrival order: once a marker sent now has run, every ack
/// sent before it is recorded), then closes the ack store, which writes and syncs everything
/// queued for its group commit. A clean restart then redelivers no message whose ack the broker
/// took in. Logs close after this (`shard::serve`).
pub async fn stop(shard: Rc<Shard>) {
    let deadline = Instant::now() + CONNECTIONS_CLOSED_WAIT;
    while shard.connections_total.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    let (reply, served) = reply_channel();
    let marker = Job::Run(Box::new(move |_| {
        let _ = reply.try_send(());
    }));
    if shard.mesh.inbox(shard.id).send_async(marker).await.is_ok() {
        let _ = served.recv_async().await;
    }
    if let Some(store) = queue_owner::ack_store() {
        store.close().await;
    }
}

async fn declare_predeclared(shard: &Shard) -> anyhow::Result<()> {
    let table = shard.metadata().routing.clone();
    let changes: Vec<Change> = PREDECLARED
        .iter()
        .filter(|(name, _)| !table.is_exchange(name))
        .map(|(name, kind)| Change::DeclareExchange(Exchange::new(name, *kind)))
        .collect();
    if changes.is_empty() {
        return Ok(());
    }
    let (reply, answer) = reply_channel();
    shard
        .mesh
        .controller
        .send_async(ControlJob::Routing { changes, reply })
        .await
        .context("the controller is gone")?;
    answer
        .recv_async()
        .await
        .context("the controller did not answer")?
        .context("declaring amq.* exchanges")
}

async fn delete_transient_queues(shard: &Shard) {
    let metadata = shard.metadata();
    let names: Vec<String> = metadata
        .topics
        .iter()
        .filter(|(_, topic)| {
            topic
                .configs
                .get(CONFIG_DURABLE)
                .is_some_and(|value| value == "false")
        })
        .map(|(name, _)| name.clone())
        .collect();
    if names.is_empty() {
        return;
    }
    tracing::info!(
        queues = names.len(),
        "deleting the non-durable queues of the last run"
    );
    let (reply, answer) = reply_channel();
    if shard
        .mesh
        .controller
        .send_async(ControlJob::DeleteTopics { names, reply })
        .await
        .is_ok()
    {
        let _ = answer.recv_async().await;
    }
}

async fn recover_queue(
    shard: &Rc<Shard>,
    name: &str,
    configs: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let log = shard.log(name, 0).context("the queue's log is not open")?;
    let spec = spec_of(configs);
    if spec.policy.stream {
        // A stream holds nothing in memory: its readers read the log.
        queue_owner::stream::install(name, spec, Some(log)).map_err(anyhow::Error::msg)?;
        tracing::info!(queue = name, "reopened stream");
        return Ok(());
    }
    let start = log.log_start_offset();
    let mut offset = start;
    let end = log.high_watermark();
    let mut messages = Vec::new();
    while offset < end {
        let read = log
            .read(offset, RECOVERY_READ_BYTES)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let before = offset;
        for chunk in &read.chunks {
            for (at, message) in decode_batches(chunk.as_slice()).map_err(anyhow::Error::msg)? {
                if at >= offset && at < end {
                    offset = at + 1;
                    messages.push((at, message));
                }
            }
        }
        if offset == before {
            break;
        }
        glommio::yield_if_needed().await;
    }
    let unfinished = queue_owner::recover(shard, name, spec, messages, start, end);
    if super::delayed::is_hold_queue(name) {
        super::delayed::resume(shard, name);
    }
    tracing::info!(
        queue = name,
        unfinished,
        "rebuilt queue from its log and acks"
    );
    Ok(())
}
