//! What AMQP does on every shard at start, before its listener accepts: shard 0 declares
//! RabbitMQ's predeclared exchanges (`amq.direct`, ...) and deletes the queues that were not
//! durable (RabbitMQ drops them on restart); every shard opens its queue ack store and rebuilds
//! the runtimes of the durable queues it owns from their logs and acks (`queue_owner::recover`).

use std::collections::BTreeMap;
use std::rc::Rc;

use anyhow::Context;

use super::exchange::PREDECLARED;
use super::message::decode_batches;
use super::queue::{spec_of, CONFIG_DURABLE};
use super::queue_owner;
use crate::routing::exchange::Exchange;
use crate::routing::table::Change;
use crate::shard::mesh::{reply_channel, ControlJob};
use crate::shard::Shard;

/// Bytes read from a queue's log per step while rebuilding it.
const RECOVERY_READ_BYTES: usize = 1 << 20;

pub async fn start(shard: Rc<Shard>) -> anyhow::Result<()> {
    queue_owner::open_ack_store(&shard).await?;
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
    Ok(())
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
    let unfinished = queue_owner::recover(shard, name, spec_of(configs), messages, start, end);
    tracing::info!(
        queue = name,
        unfinished,
        "rebuilt queue from its log and acks"
    );
    Ok(())
}
