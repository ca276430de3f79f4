//! What one shard reports to a scrape: its counters (copied out of the thread-local) and the
//! state it owns (log offsets, queue depths, groups), as a `Send` [`ShardSnapshot`] that crosses
//! to shard 0 over the mesh. Runs on each shard's job loop, in one go (no await).

use std::collections::HashMap;
use std::rc::Rc;

use weir_engine::io::stats::IoStats;

use super::stall::StallTotals;
use super::{
    ApiStats, ExecutorTotals, ListenerStats, Protocols, TopicStats, COUNTERS, PARTITION_ERRORS,
};
use crate::shard::mesh::on_shard;
use crate::shard::{Shard, ShardId};

/// One partition's offsets.
#[derive(Clone, Copy, Debug)]
pub struct PartitionOffsets {
    pub partition: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

/// One AMQP queue's state on its owner shard (RabbitMQ's names for what is counted).
#[derive(Clone, Debug, Default)]
pub struct QueueStats {
    pub name: String,
    pub ready: u64,
    pub unacked: u64,
    pub consumers: u64,
    pub published: u64,
    pub delivered: u64,
    pub acked: u64,
}

/// What one shard reports.
#[derive(Debug, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    /// (API key, its counters), for keys that had requests.
    pub apis: Vec<(i16, ApiStats)>,
    /// Data counters of topics that still exist.
    pub topics: Vec<(String, TopicStats)>,
    /// [produce, fetch] × `PARTITION_ERRORS`.
    pub partition_errors: [[u64; PARTITION_ERRORS.len()]; 2],
    pub listeners: Vec<ListenerStats>,
    /// The partitions this shard owns, by topic.
    pub partitions: Vec<(String, Vec<PartitionOffsets>)>,
    pub consumer_groups: u64,
    pub share_groups: u64,
    pub amqp_channels: u64,
    pub queues: Vec<QueueStats>,
    pub executor: ExecutorTotals,
    pub io: IoStats,
    pub stalls: StallTotals,
    /// Offsets committed to the classic groups this shard coordinates.
    pub group_offsets: Vec<GroupOffset>,
}

/// An offset a classic group committed for one partition.
#[derive(Clone, Debug)]
pub struct GroupOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// This shard's snapshot.
pub fn snapshot(shard: &Shard, protocols: &Protocols) -> ShardSnapshot {
    let metadata = shard.metadata();
    let (apis, topics, partition_errors, listeners, amqp_channels) = COUNTERS.with(|counters| {
        let apis = counters
            .apis
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, api)| api.requests > 0)
            .map(|(key, api)| (key as i16, *api))
            .collect::<Vec<_>>();
        // Topics deleted since they were counted go (a counter of a topic created again
        // under the name starts over, as a new series would).
        let mut topics = counters.topics.borrow_mut();
        topics.retain(|name, _| metadata.topics.contains_key(&**name));
        let topics = topics
            .iter()
            .map(|(name, stats)| (name.to_string(), *stats))
            .collect::<Vec<_>>();
        (
            apis,
            topics,
            *counters.partition_errors.borrow(),
            counters.listeners.borrow().clone(),
            counters.amqp_channels.get(),
        )
    });
    let mut partitions: HashMap<String, Vec<PartitionOffsets>> = HashMap::new();
    shard.for_each_log(|topic, partition, log| {
        partitions
            .entry(topic.to_string())
            .or_default()
            .push(PartitionOffsets {
                partition,
                log_start_offset: log.log_start_offset(),
                high_watermark: log.high_watermark(),
            });
    });
    let groups = shard.groups.borrow();
    let consumer_groups = groups.as_ref().map_or(0, |groups| groups.group_count()) as u64;
    let group_offsets = groups
        .as_ref()
        .map(|groups| groups.committed_offsets())
        .unwrap_or_default()
        .into_iter()
        .map(|(group, topic, partition, offset)| GroupOffset {
            group,
            topic,
            partition,
            offset,
        })
        .collect();
    ShardSnapshot {
        shard: shard.id.index(),
        apis,
        topics,
        partition_errors,
        listeners,
        partitions: partitions.into_iter().collect(),
        consumer_groups,
        share_groups: crate::shares::members::group_count() as u64,
        amqp_channels,
        queues: (protocols.queues)(),
        executor: super::executor_totals(),
        io: weir_engine::io::stats::snapshot(),
        stalls: super::stall::totals(),
        group_offsets,
    }
}

/// Every shard's snapshot, asked one shard at a time; a shard that is stopping is left out.
pub async fn everywhere(shard: &Rc<Shard>, protocols: &'static Protocols) -> Vec<ShardSnapshot> {
    let mut snapshots = Vec::with_capacity(shard.count);
    for index in 0..shard.count {
        let work = move |shard: &Rc<Shard>| snapshot(shard, protocols);
        if let Some(snapshot) = on_shard(shard, ShardId(index), work).await {
            snapshots.push(snapshot);
        }
    }
    snapshots
}
