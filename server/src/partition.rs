//! Partition operations as the OWNING shard runs them: append, wait for durability, read, wait
//! for data, list offsets. Called directly when a request reaches the owner, or from the shard's
//! inbox (`shard::job_loop`) when another shard forwards it.
//!
//! Runs on the owning shard only; `append` is synchronous so that offsets follow arrival order,
//! only waiting is async. Results are domain errors ([`PartitionError`], built from the engine's
//! `LogError` in one place, `PartitionError::from_log`); each protocol maps them to its own
//! codes. Core module: imports no protocol.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use weir_engine::{Chunk, Log, LogError};

use crate::metadata::Metadata;
use crate::shard::mesh::{reply_channel, Job};
use crate::shard::Shard;

/// Why a partition operation failed, in the broker's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// No such topic, or no such partition of it.
    #[error("unknown topic or partition")]
    UnknownPartition,
    /// The topic exists but this shard's view says another shard owns the partition, or the
    /// owner could not be reached: the client should refresh its metadata.
    #[error("this shard does not own the partition")]
    NotOwner,
    /// The records are not whole, valid RecordBatch v2 frames (framing, header or CRC).
    #[error("corrupt record batch")]
    CorruptBatch,
    #[error("record batch too large")]
    BatchTooLarge,
    #[error("offset out of range")]
    OffsetOutOfRange,
    #[error("out of order sequence number")]
    OutOfOrderSequence,
    #[error("invalid producer epoch")]
    InvalidProducerEpoch,
    /// Corrupt sealed data, a full device or an I/O error.
    #[error("storage error")]
    Storage,
    /// The log is being deleted or the broker is stopping.
    #[error("partition log closed")]
    Closed,
}

impl PartitionError {
    /// The domain error for an engine error (the one engine → domain mapping).
    pub fn from_log(error: &LogError) -> PartitionError {
        match error {
            LogError::InvalidBatch(_) => PartitionError::CorruptBatch,
            LogError::BatchTooLarge { .. } => PartitionError::BatchTooLarge,
            LogError::OffsetOutOfRange { .. } => PartitionError::OffsetOutOfRange,
            LogError::OutOfOrderSequence { .. } => PartitionError::OutOfOrderSequence,
            LogError::InvalidProducerEpoch { .. } => PartitionError::InvalidProducerEpoch,
            LogError::Corrupt { .. } | LogError::StorageFull | LogError::Io { .. } => {
                PartitionError::Storage
            }
            LogError::Closed => PartitionError::Closed,
        }
    }
}

impl From<LogError> for PartitionError {
    fn from(error: LogError) -> PartitionError {
        PartitionError::from_log(&error)
    }
}

/// The synchronous part of a produce: the log and the offsets it assigned.
pub struct Appended {
    pub log: Log,
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
}

/// The outcome of appending one partition's records. On a failed wait for durability the offsets
/// assigned are still reported beside the error (as they always were).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceOutcome {
    pub error: Option<PartitionError>,
    pub base_offset: i64,
    pub log_start_offset: i64,
}

impl ProduceOutcome {
    pub fn failed(error: PartitionError) -> ProduceOutcome {
        ProduceOutcome {
            error: Some(error),
            base_offset: -1,
            log_start_offset: -1,
        }
    }
}

/// The outcome of reading one partition; `P` is a local chunk or a `Bytes` copy. On error the
/// partition's offsets are still reported when the log is known (clients reset positions by them).
pub struct FetchOutcome<P> {
    pub error: Option<PartitionError>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub payload: Vec<P>,
}

impl<P> FetchOutcome<P> {
    pub fn failed(error: PartitionError) -> FetchOutcome<P> {
        FetchOutcome {
            error: Some(error),
            high_watermark: -1,
            log_start_offset: -1,
            payload: Vec::new(),
        }
    }
}

/// An offset found by a ListOffsets lookup; -1 and -1 when no record is that recent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: i64,
    pub timestamp: i64,
}

pub type OffsetOutcome = Result<ListedOffset, PartitionError>;

/// A partition this shard should own but has no log for: unknown topic or a stale owner view.
fn missing(shard: &Shard, topic: &str, partition: i32) -> PartitionError {
    match shard.metadata().owner(topic, partition) {
        Some(_) => PartitionError::NotOwner,
        None => PartitionError::UnknownPartition,
    }
}

/// Splits `records` into whole RecordBatch frames (8-byte base offset, 4-byte length, body)
/// without looking inside them.
fn batch_bounds(records: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut bounds = Vec::with_capacity(1);
    let mut at = 0;
    while at < records.len() {
        let length = weir_engine::batch::batch_length_field(&records[at..])?;
        let end = at
            .checked_add(weir_engine::batch::LOG_OVERHEAD_BYTES)?
            .checked_add(usize::try_from(length).ok()?)?;
        if end > records.len() {
            return None;
        }
        bounds.push((at, end));
        at = end;
    }
    if bounds.is_empty() {
        None
    } else {
        Some(bounds)
    }
}

/// Appends the batches of one partition of a produce request. Produce v3+ carries one batch per
/// partition; several are accepted and appended in order. `records` is the request's own buffer
/// (a region of the frame the connection read): each batch is handed to the engine as a piece of
/// it, not copied, and the engine writes baseOffset into it in place.
pub fn append(
    shard: &Shard,
    topic: &str,
    partition: i32,
    records: Option<BytesMut>,
) -> Result<Appended, PartitionError> {
    let log = shard
        .log(topic, partition)
        .ok_or_else(|| missing(shard, topic, partition))?;
    let mut records = records.ok_or(PartitionError::CorruptBatch)?;
    let records_bytes = records.len();
    let bounds = batch_bounds(&records).ok_or(PartitionError::CorruptBatch)?;
    if bounds.len() > 1 {
        // All or nothing, as in Kafka: check every batch before appending the first. (A single
        // batch is checked once, by the engine.)
        for (start, end) in &bounds {
            weir_engine::batch::validate(&records[*start..*end])
                .map_err(|error| PartitionError::from(LogError::from(error)))?;
        }
    }
    let mut first = None;
    let mut last = (0, 0);
    for (start, end) in bounds {
        // The bounds are contiguous from 0 and cover `records`: split_to takes the next batch
        // without copying (the pieces share the frame's allocation, each owning its own bytes).
        debug_assert_eq!(records_bytes - records.len(), start);
        let batch = records.split_to(end - start);
        let appended = log.append(batch)?;
        first.get_or_insert(appended.base_offset);
        last = (appended.last_offset, appended.log_start_offset);
    }
    let base_offset = first.unwrap_or(last.0);
    crate::metrics::appended(
        topic,
        records_bytes,
        u64::try_from(last.0 - base_offset + 1).unwrap_or(0),
    );
    Ok(Appended {
        log,
        base_offset,
        last_offset: last.0,
        log_start_offset: last.1,
    })
}

/// Waits as `durable` asks (false: written; true: durable) and builds the outcome.
pub async fn finish_append(
    appended: Result<Appended, PartitionError>,
    durable: bool,
) -> ProduceOutcome {
    let appended = match appended {
        Ok(appended) => appended,
        Err(error) => return ProduceOutcome::failed(error),
    };
    let waited = if durable {
        appended.log.wait_durable(appended.last_offset).await
    } else {
        appended.log.wait_written(appended.last_offset).await
    };
    ProduceOutcome {
        error: waited.err().map(PartitionError::from),
        base_offset: appended.base_offset,
        log_start_offset: appended.log_start_offset,
    }
}

pub async fn read(
    shard: &Shard,
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: usize,
) -> FetchOutcome<Chunk> {
    let Some(log) = shard.log(topic, partition) else {
        let error = missing(shard, topic, partition);
        crate::metrics::partition_error(crate::metrics::Op::Fetch, error);
        return FetchOutcome::failed(error);
    };
    let empty = |error, high_watermark, log_start_offset| FetchOutcome {
        error,
        high_watermark,
        log_start_offset,
        payload: Vec::new(),
    };
    if offset == log.high_watermark() {
        return empty(None, offset, log.log_start_offset());
    }
    match log.read(offset, max_bytes).await {
        Ok(read) => {
            crate::metrics::read(topic, read.chunks.iter().map(Chunk::as_slice));
            FetchOutcome {
                error: None,
                high_watermark: read.high_watermark,
                log_start_offset: read.log_start_offset,
                payload: read.chunks,
            }
        }
        Err(error) => {
            let error = PartitionError::from(error);
            crate::metrics::partition_error(crate::metrics::Op::Fetch, error);
            empty(Some(error), log.high_watermark(), log.log_start_offset())
        }
    }
}

/// Returns when the partition has data past `offset`, after `wait`, or at once if it is unknown.
pub async fn wait_for_data(
    shard: &Shard,
    topic: &str,
    partition: i32,
    offset: i64,
    wait: Duration,
) {
    let Some(log) = shard.log(topic, partition) else {
        return;
    };
    futures_lite::future::or(log.wait_for_data(offset), glommio::timer::sleep(wait)).await;
}

/// ListOffsets for one partition: -2 earliest, -1 latest, -3 (max timestamp) answered as latest,
/// otherwise the first offset with a timestamp at or after the one given.
pub async fn list_offset(
    shard: &Shard,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> OffsetOutcome {
    let Some(log) = shard.log(topic, partition) else {
        return Err(missing(shard, topic, partition));
    };
    let found = |offset| {
        Ok(ListedOffset {
            offset,
            timestamp: -1,
        })
    };
    match timestamp {
        -2 => found(log.log_start_offset()),
        -1 | -3 => found(log.high_watermark()),
        _ => match log.offset_for_timestamp(timestamp).await? {
            Some((offset, timestamp)) => Ok(ListedOffset { offset, timestamp }),
            None => found(-1),
        },
    }
}

/// `records` (a batch built for routing or dead-lettering) as the owned buffer `append` takes: a
/// copy, because `records` may be a slice of a larger buffer that a moved piece would keep
/// allocated in the tail cache (see `kafka::produce::take_records`).
pub fn owned_records(records: Bytes) -> BytesMut {
    BytesMut::from(&records[..])
}

/// A produce append issued in the caller's dispatch phase, wherever the partition lives: local
/// appends happen at once, remote ones are queued on the owner's bounded inbox (whose fullness is
/// backpressure), so the records of one connection reach each partition in produce order.
pub enum PendingAppend {
    Local(Result<Appended, PartitionError>),
    Remote(flume::Receiver<ProduceOutcome>),
    Failed(PartitionError),
}

impl PendingAppend {
    /// Appends `records` to `topic`/`partition` on its owner by `metadata`'s view.
    pub async fn issue(
        shard: &Shard,
        metadata: &Metadata,
        topic: &str,
        partition: i32,
        records: Option<BytesMut>,
        durable: bool,
    ) -> PendingAppend {
        match metadata.owner(topic, partition) {
            None => PendingAppend::Failed(PartitionError::UnknownPartition),
            Some(owner) if owner == shard.id => {
                PendingAppend::Local(append(shard, topic, partition, records))
            }
            Some(owner) => {
                let (reply, answer) = reply_channel();
                let job = Job::Produce {
                    topic: topic.to_string(),
                    partition,
                    records,
                    durable,
                    reply,
                };
                match shard.mesh.inbox(owner).send_async(job).await {
                    Ok(()) => PendingAppend::Remote(answer),
                    Err(_) => PendingAppend::Failed(PartitionError::NotOwner),
                }
            }
        }
    }

    /// Waits for the append's answer; `durable` must be what `issue` was given.
    pub async fn finish(self, durable: bool) -> ProduceOutcome {
        let outcome = self.outcome(durable).await;
        if let Some(error) = outcome.error {
            crate::metrics::partition_error(crate::metrics::Op::Produce, error);
        }
        outcome
    }

    async fn outcome(self, durable: bool) -> ProduceOutcome {
        match self {
            PendingAppend::Local(appended) => finish_append(appended, durable).await,
            PendingAppend::Remote(answer) => answer
                .recv_async()
                .await
                .unwrap_or(ProduceOutcome::failed(PartitionError::NotOwner)),
            PendingAppend::Failed(error) => ProduceOutcome::failed(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body_bytes: usize) -> Vec<u8> {
        let mut out = vec![0u8; 8];
        out.extend_from_slice(&(body_bytes as i32).to_be_bytes());
        out.extend(std::iter::repeat_n(7u8, body_bytes));
        out
    }

    #[test]
    fn batch_framing() {
        let check =
            |bytes: &[u8], want: Option<Vec<(usize, usize)>>| assert_eq!(batch_bounds(bytes), want);
        check(&[], None);
        check(&frame(49), Some(vec![(0, 61)]));
        let mut two = frame(49);
        two.extend(frame(60));
        check(&two, Some(vec![(0, 61), (61, 133)]));
        check(&frame(49)[..60], None);
        let mut negative = frame(0);
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        check(&negative, None);
        check(&[0u8; 5], None);
    }
}
