//! Prometheus metrics (`--metrics-listen`, default `127.0.0.1:9644`, `GET /metrics`).
//!
//! Collected per shard, merged at scrape time. What the data path counts lives in this shard's
//! own `thread_local!` [`Counters`] (plain `Cell`s and one `RefCell<HashMap>` keyed by topic):
//! a request, an append or a read adds to it with no atomic, no lock and no message. What is
//! state rather than a count (log offsets, queue depths, group counts, connection counts) is read
//! where it already lives, on its own shard, when a scrape asks. A scrape (`http.rs`, shard 0
//! only) asks every shard for a [`gather::ShardSnapshot`] over the mesh (`on_shard`, i.e.
//! `Job::Run`), merges them and renders the text format with `prometheus-client`
//! (`render.rs`).
//!
//! Core module: imports no protocol. What only a protocol knows (Kafka's API and error names, the
//! AMQP queues) comes in as [`Protocols`], function pointers the composition root (`lib.rs`)
//! hands the endpoint's start hook.
//!
//! Names follow Redpanda's public metrics on the log side (`weir_kafka_*` for Redpanda's
//! `redpanda_kafka_*`) and RabbitMQ's prometheus plugin for queues (`rabbitmq_*`); the list, with
//! meanings, is docs/metrics.md.

pub mod gather;
pub mod http;
pub mod render;
pub mod stall;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Instant;

use crate::partition::PartitionError;

/// What the protocols tell the metrics (see the module comment).
pub struct Protocols {
    /// A Kafka API key's name in snake case (`produce`, `api_versions`).
    pub api_name: fn(i16) -> String,
    /// The name of the Kafka error code a partition error is answered with.
    pub error_name: fn(PartitionError) -> &'static str,
    /// This shard's AMQP queues (runs on each shard).
    pub queues: fn() -> Vec<gather::QueueStats>,
    /// The process's resident memory in bytes.
    pub resident_bytes: fn() -> Option<u64>,
}

/// Upper bounds of the request latency histogram's buckets, in microseconds (100 µs to 10 s,
/// the 1-2.5-5 steps Prometheus client libraries default to).
pub const LATENCY_BUCKETS_MICROS: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// Kafka API keys counted one by one (every key Weir answers is below this); others are not.
pub const API_KEYS: usize = 96;

/// One Kafka API's request counters on one shard.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiStats {
    pub requests: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Requests at or under each bound of `LATENCY_BUCKETS_MICROS` (not cumulative here: one
    /// count per bucket; the render makes them cumulative).
    pub buckets: [u64; LATENCY_BUCKETS_MICROS.len()],
    pub latency_micros_sum: u64,
}

/// One topic's data counters on one shard (the shard's partitions of it).
#[derive(Clone, Copy, Debug, Default)]
pub struct TopicStats {
    pub produced_bytes: u64,
    pub produced_records: u64,
    pub fetched_bytes: u64,
    pub fetched_records: u64,
}

/// The data-path operations whose partition errors are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Produce = 0,
    Fetch = 1,
}

/// `PartitionError`s in a fixed order: the index of the per-shard error counters.
pub const PARTITION_ERRORS: [PartitionError; 9] = [
    PartitionError::UnknownPartition,
    PartitionError::NotOwner,
    PartitionError::CorruptBatch,
    PartitionError::BatchTooLarge,
    PartitionError::OffsetOutOfRange,
    PartitionError::OutOfOrderSequence,
    PartitionError::InvalidProducerEpoch,
    PartitionError::Storage,
    PartitionError::Closed,
];

fn error_index(error: PartitionError) -> usize {
    PARTITION_ERRORS
        .iter()
        .position(|known| *known == error)
        .unwrap_or(0)
}

/// A listener's connections on one shard.
#[derive(Clone, Copy, Debug)]
pub struct ListenerStats {
    pub name: &'static str,
    pub accepted: u64,
    pub open: u64,
}

/// Everything the data path counts on one shard. Only this shard's thread touches it.
struct Counters {
    apis: RefCell<Vec<ApiStats>>,
    topics: RefCell<HashMap<Box<str>, TopicStats>>,
    partition_errors: RefCell<[[u64; PARTITION_ERRORS.len()]; 2]>,
    listeners: RefCell<Vec<ListenerStats>>,
    amqp_channels: Cell<u64>,
    /// glommio hands its executor and I/O statistics out as deltas (reading resets them):
    /// their sums since start.
    executor: Cell<ExecutorTotals>,
}

/// A shard's executor and storage I/O since start (glommio's statistics, summed).
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecutorTotals {
    /// Time spent running tasks and polling for I/O.
    pub busy_seconds: f64,
    pub tasks: u64,
    pub file_writes: u64,
    pub file_bytes_written: u64,
    pub file_reads: u64,
    pub file_bytes_read: u64,
}

/// This shard's executor totals, brought up to date (must run on a glommio executor).
fn executor_totals() -> ExecutorTotals {
    let executor = glommio::executor();
    let stats = executor.executor_stats();
    let io = executor.io_stats().all_rings();
    COUNTERS.with(|counters| {
        let mut totals = counters.executor.get();
        totals.busy_seconds += stats.total_runtime().as_secs_f64();
        totals.tasks += stats.tasks_executed();
        let (writes, written) = io.file_writes();
        let (reads, read) = io.file_reads();
        totals.file_writes += writes;
        totals.file_bytes_written += written;
        totals.file_reads += reads;
        totals.file_bytes_read += read;
        counters.executor.set(totals);
        totals
    })
}

thread_local! {
    static COUNTERS: Counters = Counters {
        apis: RefCell::new(vec![ApiStats::default(); API_KEYS]),
        topics: RefCell::new(HashMap::new()),
        partition_errors: RefCell::new([[0; PARTITION_ERRORS.len()]; 2]),
        listeners: RefCell::new(Vec::new()),
        amqp_channels: Cell::new(0),
        executor: Cell::new(ExecutorTotals {
            busy_seconds: 0.0,
            tasks: 0,
            file_writes: 0,
            file_bytes_written: 0,
            file_reads: 0,
            file_bytes_read: 0,
        }),
    };
}

/// A Kafka request from the moment its frame was read: finished once its answer is written.
pub struct RequestStamp {
    api_key: i16,
    request_bytes: usize,
    start: Instant,
}

impl RequestStamp {
    /// `frame` is the request without its size prefix: its first two bytes are the API key.
    pub fn start(frame: &[u8]) -> RequestStamp {
        let api_key = match frame {
            [high, low, ..] => i16::from_be_bytes([*high, *low]),
            _ => -1,
        };
        RequestStamp {
            api_key,
            request_bytes: frame.len() + 4,
            start: Instant::now(),
        }
    }

    /// The answer (`response_bytes` on the wire, 0 for none) is written.
    pub fn finish(self, response_bytes: usize) {
        let Ok(key) = usize::try_from(self.api_key) else {
            return;
        };
        if key >= API_KEYS {
            return;
        }
        let micros = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        COUNTERS.with(|counters| {
            let mut apis = counters.apis.borrow_mut();
            let api = &mut apis[key];
            api.requests += 1;
            api.request_bytes += self.request_bytes as u64;
            api.response_bytes += response_bytes as u64;
            api.latency_micros_sum = api.latency_micros_sum.saturating_add(micros);
            // Past the last bound: counted in `requests` only (the +Inf bucket).
            if let Some(bucket) = LATENCY_BUCKETS_MICROS.iter().position(|b| micros <= *b) {
                api.buckets[bucket] += 1;
            }
        });
    }
}

fn with_topic(topic: &str, update: impl FnOnce(&mut TopicStats)) {
    COUNTERS.with(|counters| {
        let mut topics = counters.topics.borrow_mut();
        match topics.get_mut(topic) {
            Some(stats) => update(stats),
            None => update(topics.entry(topic.into()).or_default()),
        }
    });
}

/// The owner shard appended `records` records in `bytes` bytes to a partition of `topic`.
pub fn appended(topic: &str, bytes: usize, records: u64) {
    with_topic(topic, |stats| {
        stats.produced_bytes += bytes as u64;
        stats.produced_records += records;
    });
}

/// The owner shard read `chunks` (whole record batches) from a partition of `topic`.
pub fn read<'a>(topic: &str, chunks: impl IntoIterator<Item = &'a [u8]>) {
    let mut bytes = 0u64;
    let mut records = 0u64;
    for chunk in chunks {
        bytes += chunk.len() as u64;
        records += batch_records(chunk);
    }
    if bytes == 0 {
        return;
    }
    with_topic(topic, |stats| {
        stats.fetched_bytes += bytes;
        stats.fetched_records += records;
    });
}

/// Records in whole v2 record batches laid end to end: each batch's `recordCount` (bytes 57..61),
/// found by walking the batch lengths (bytes 8..12); a short tail counts nothing.
fn batch_records(mut bytes: &[u8]) -> u64 {
    const LENGTH_AT: usize = 8;
    const RECORD_COUNT_AT: usize = 57;
    let mut records = 0u64;
    while bytes.len() >= RECORD_COUNT_AT + 4 {
        let length = i32::from_be_bytes(read4(bytes, LENGTH_AT));
        let count = i32::from_be_bytes(read4(bytes, RECORD_COUNT_AT));
        records += u64::try_from(count).unwrap_or(0);
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|length| length.checked_add(LENGTH_AT + 4))
        else {
            break;
        };
        if end > bytes.len() {
            break;
        }
        bytes = &bytes[end..];
    }
    records
}

fn read4(bytes: &[u8], at: usize) -> [u8; 4] {
    [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]
}

/// A produce or fetch of one partition failed with `error`.
pub fn partition_error(op: Op, error: PartitionError) {
    COUNTERS.with(|counters| {
        counters.partition_errors.borrow_mut()[op as usize][error_index(error)] += 1;
    });
}

fn with_listener(name: &'static str, update: impl FnOnce(&mut ListenerStats)) {
    COUNTERS.with(|counters| {
        let mut listeners = counters.listeners.borrow_mut();
        let index = match listeners.iter().position(|l| l.name == name) {
            Some(index) => index,
            None => {
                listeners.push(ListenerStats {
                    name,
                    accepted: 0,
                    open: 0,
                });
                listeners.len() - 1
            }
        };
        update(&mut listeners[index]);
    });
}

/// Listener `name` admitted a connection.
pub fn connection_opened(name: &'static str) {
    with_listener(name, |listener| {
        listener.accepted += 1;
        listener.open += 1;
    });
}

/// A connection of listener `name` closed.
pub fn connection_closed(name: &'static str) {
    with_listener(name, |listener| {
        listener.open = listener.open.saturating_sub(1)
    });
}

/// Counts an open AMQP channel for as long as it lives (a field of the channel).
pub struct ChannelGauge(());

impl ChannelGauge {
    #[expect(clippy::new_without_default, reason = "creating one counts a channel")]
    pub fn new() -> ChannelGauge {
        COUNTERS.with(|counters| counters.amqp_channels.set(counters.amqp_channels.get() + 1));
        ChannelGauge(())
    }
}

impl Drop for ChannelGauge {
    fn drop(&mut self) {
        // A shard's thread-local may be gone while its executor tears down: then nothing to do.
        let _ = COUNTERS.try_with(|counters| {
            counters
                .amqp_channels
                .set(counters.amqp_channels.get().saturating_sub(1));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_records_walks_whole_batches() {
        let mut batch = vec![0u8; 70];
        batch[8..12].copy_from_slice(&58i32.to_be_bytes());
        batch[57..61].copy_from_slice(&3i32.to_be_bytes());
        let mut two = batch.clone();
        two.extend_from_slice(&batch);
        assert_eq!(batch_records(&batch), 3);
        assert_eq!(batch_records(&two), 6);
        assert_eq!(batch_records(&two[..100]), 3, "a torn tail counts nothing");
        assert_eq!(batch_records(&[]), 0);
    }

    #[test]
    fn request_stamp_counts_by_key_and_bucket() {
        let frame = [0u8, 1, 0, 12, 0, 0, 0, 7];
        RequestStamp::start(&frame).finish(100);
        RequestStamp::start(&[0xff]).finish(5); // too short: not counted
        let api = COUNTERS.with(|counters| counters.apis.borrow()[1]);
        assert_eq!(api.requests, 1);
        assert_eq!(api.request_bytes, 12);
        assert_eq!(api.response_bytes, 100);
        assert_eq!(api.buckets.iter().sum::<u64>(), 1);
    }
}
