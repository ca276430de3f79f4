//! weir-engine: partition logs of Kafka RecordBatch v2 bytes on O_DIRECT files.
//!
//! Scope: a `Log` stores and serves batches of one partition by offset; it knows nothing of sockets
//! or Kafka requests. Batches are validated (header + CRC32C) and stored exactly as received, with
//! `baseOffset` written in place; records are never decoded.
//!
//! Shards: every type here lives on one glommio executor (the shard that owns the partition) and is
//! `!Send`; a log's state is borrowed only between awaits. Crossing shards means copying a chunk
//! with [`Chunk::to_bytes`].
//!
//! Guarantees: offsets are assigned at `append` in call order and only grow; readers see a batch
//! only after its write completed (high watermark); `wait_durable` follows [`Durability`]; on open
//! the log continues exactly where the valid data ends (see `docs/storage-format.md`).
//! Limits: `limits.rs`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

pub mod batch;
pub mod index;
pub mod io;
pub mod limits;
mod log;
mod offset;
pub mod producer;
mod segment;
mod slots;

pub use offset::Offset;
pub use segment::{scan_segment_bytes, SegmentScan};

/// How durable an append is before `wait_durable` returns (Kafka's `flush.messages` / `flush.ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fdatasync before an append is reported durable (`flush.messages=1`).
    Always,
    /// group commit: fdatasync at most every `ms` (`flush.ms=N`).
    Interval { ms: u64 },
    /// written to the device with O_DIRECT, no explicit sync.
    Os,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: u64,
    /// `retention.bytes`, -1 = unlimited
    pub retention_bytes: i64,
    /// `retention.ms`, -1 = unlimited
    pub retention_ms: i64,
    pub durability: Durability,
    /// `index.interval.bytes`
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u32,
    /// Bytes of recently written batches kept in memory per partition for readers at the head.
    pub tail_cache_bytes: usize,
    /// On open, truncate at a CRC failure inside a sealed segment (and delete the segments after
    /// it) instead of refusing to open with `LogError::Corrupt`.
    pub repair: bool,
    /// A progress checkpoint of the active segment (synced, indexes saved, `checkpoint` written)
    /// once this many bytes were written to it since the last one, so that the open after a
    /// crash scans at most about this much per log (without one it scanned the whole active
    /// segment, up to `segment.bytes`).
    pub checkpoint_interval_bytes: u64,
    /// ... or once this long passed since the last one and anything was written (Kafka's
    /// `log.flush.offset.checkpoint.interval.ms`, 60 s).
    pub checkpoint_interval_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            durability: Durability::Os,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            tail_cache_bytes: 1 << 20,
            repair: false,
            checkpoint_interval_bytes: 256 << 20,
            checkpoint_interval_ms: 60_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] batch::BatchError),
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    BatchTooLarge { size: usize, max: u32 },
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("out of order sequence: producer {producer_id} expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error("corrupt data in sealed segment {path}: {reason} (start with repair to truncate)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no space left on the data device")]
    StorageFull,
    #[error("log is closed")]
    Closed,
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The outcome of an append; offsets are assigned before `append` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub last_offset: i64,
    /// true when an idempotent producer resent a batch already in the log; nothing was appended and
    /// the offsets are those of the original batch.
    pub duplicate: bool,
    pub log_start_offset: i64,
}

/// A piece of a read: whole batches, refcounted, never copied.
pub enum Chunk {
    /// From the tail cache: the very buffer that `append` stored.
    Memory(Bytes),
    /// An aligned read of a segment sliced to whole batches (not `Send`).
    Disk(io::DiskBytes),
}

impl Chunk {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Memory(bytes) => bytes,
            Chunk::Disk(read) => read.as_slice(),
        }
    }
    /// A `Send` copy for crossing shards (disk chunks are not `Send`; memory chunks are not copied).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Chunk::Memory(bytes) => bytes.clone(),
            Chunk::Disk(read) => Bytes::copy_from_slice(read.as_slice()),
        }
    }
}

pub struct ReadBatches {
    pub chunks: Vec<Chunk>,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub total_bytes: usize,
}

/// One partition's log. Cheap to clone (shared handle on the owning shard).
#[derive(Clone)]
pub struct Log {
    inner: Rc<RefCell<log::Inner>>,
}

/// Names a log without keeping it open: for memos of a log's data that must not outlive it nor
/// be taken for a later log's (a deleted topic created again). It holds the allocation only, so
/// no other log can take its address while the name exists.
#[derive(Clone)]
pub struct LogName(std::rc::Weak<RefCell<log::Inner>>);

impl LogName {
    /// Whether `log` is the log this names (and still open).
    pub fn names(&self, log: &Log) -> bool {
        std::ptr::eq(self.0.as_ptr(), Rc::as_ptr(&log.inner))
    }
}

impl Log {
    pub fn name(&self) -> LogName {
        LogName(Rc::downgrade(&self.inner))
    }

    /// Opens (recovering) or creates the partition directory `dir`. Call
    /// [`io::prepare_data_dir`] on the data directory first on every executor.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        Ok(Log {
            inner: log::open(dir, config).await?,
        })
    }

    pub fn dir(&self) -> PathBuf {
        log::dir(&self.inner)
    }

    pub fn config(&self) -> LogConfig {
        log::config(&self.inner)
    }

    pub fn set_config(&self, config: LogConfig) {
        log::set_config(&self.inner, config)
    }

    /// Validates the batch (header + CRC), applies idempotent-producer checks, assigns offsets by
    /// writing `baseOffset` in place, and queues it for writing. Synchronous: offsets are ordered
    /// by call order.
    pub fn append(&self, batch: BytesMut) -> Result<Appended, LogError> {
        log::append(&self.inner, batch)
    }

    /// Resolves once every offset ≤ `offset` is written to the device (and visible to readers).
    pub async fn wait_written(&self, offset: i64) -> Result<(), LogError> {
        log::wait_written(&self.inner, offset).await
    }

    /// Resolves once every offset ≤ `offset` is durable under the log's durability policy
    /// (`Always`: after fdatasync; `Interval`/`Os`: once written).
    pub async fn wait_durable(&self, offset: i64) -> Result<(), LogError> {
        log::wait_durable(&self.inner, offset).await
    }

    pub fn log_start_offset(&self) -> i64 {
        log::offsets(&self.inner).0
    }

    /// Whether the log was closed (shutdown, deletion): it takes no more appends or reads, and
    /// `wait_for_data` returns at once.
    pub fn is_closed(&self) -> bool {
        log::is_closed(&self.inner)
    }

    /// The next offset not yet visible to readers (Kafka's high watermark; no replication).
    pub fn high_watermark(&self) -> i64 {
        log::offsets(&self.inner).1
    }

    /// Bytes of segment files its open scanned (CRC, offsets): those past the recovery
    /// checkpoint, or every byte when there was no usable checkpoint.
    pub fn recovery_scanned_bytes(&self) -> u64 {
        log::recovery_scanned_bytes(&self.inner)
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        log::offsets(&self.inner).2
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadBatches, LogError> {
        log::read(&self.inner, offset, max_bytes).await
    }

    /// Resolves when the high watermark moves above `offset` (for Fetch long-polls), or the log
    /// closes.
    pub async fn wait_for_data(&self, offset: i64) {
        log::wait_for_data(&self.inner, offset).await
    }

    /// The first offset whose batch max timestamp is ≥ `timestamp_ms`, with that timestamp.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        log::offset_for_timestamp(&self.inner, timestamp_ms).await
    }

    /// Deletes whole segments past `retention.bytes` / `retention.ms`; never blocks appends.
    pub async fn enforce_retention(&self) -> Result<(), LogError> {
        log::enforce_retention(&self.inner).await
    }

    /// Deletes every whole sealed segment whose offsets are all below `offset` (Kafka's
    /// DeleteRecords at segment granularity: a segment holding `offset` or later offsets stays,
    /// and so does the active segment), through the same path as retention; never blocks appends.
    /// Answers the log start offset after it: the first remaining segment's base, which is also
    /// what the log starts at when it is opened again.
    pub async fn delete_segments_below(&self, offset: i64) -> Result<i64, LogError> {
        let start = log::delete_segments_below(&self.inner, Offset::new(offset)).await?;
        Ok(start.get())
    }

    /// Flushes, syncs and closes the files.
    pub async fn close(&self) -> Result<(), LogError> {
        log::close(&self.inner).await
    }

    /// Closes and deletes the partition directory (DeleteTopics).
    pub async fn delete(self) -> Result<(), LogError> {
        let dir = self.dir();
        let _ = self.close().await;
        std::fs::remove_dir_all(&dir).map_err(|source| LogError::Io { path: dir, source })
    }
}
