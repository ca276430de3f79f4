//! weir-engine: partition logs of Kafka RecordBatch v2 bytes.
//!
//! PUBLIC API CONTRACT (fixed; the server codes against it). The bodies in this first commit are an
//! in-memory stand-in so that the server can be built in parallel; the real direct-I/O engine
//! replaces them without changing any signature.
//!
//! Every type here lives on one glommio executor (one shard) and is `!Send`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

pub mod batch;
pub mod io;

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
    OffsetOutOfRange { offset: i64, log_start_offset: i64, log_end_offset: i64 },
    #[error("out of order sequence: producer {producer_id} expected {expected}, got {got}")]
    OutOfOrderSequence { producer_id: i64, expected: i32, got: i32 },
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current}")]
    InvalidProducerEpoch { producer_id: i64, epoch: i16, current: i16 },
    #[error("corrupt data in sealed segment {path}: {reason} (start with repair to truncate)")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no space left on the data device")]
    StorageFull,
    #[error("log is closed")]
    Closed,
    #[error("i/o error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
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
    Memory(Bytes),
}

impl Chunk {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Memory(bytes) => bytes,
        }
    }
    /// A `Send` copy for crossing shards (disk chunks are not `Send`).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Chunk::Memory(bytes) => bytes.clone(),
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
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    dir: PathBuf,
    config: LogConfig,
    batches: Vec<(i64, i64, i64, Bytes)>, // base, last, max_timestamp, bytes
    next_offset: i64,
    start_offset: i64,
    waiters: Vec<std::task::Waker>,
}

impl Log {
    /// Opens (recovering) or creates the partition directory `dir`.
    pub async fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io { path: dir.into(), source })?;
        Ok(Log {
            inner: Rc::new(RefCell::new(Inner {
                dir: dir.into(),
                config,
                batches: Vec::new(),
                next_offset: 0,
                start_offset: 0,
                waiters: Vec::new(),
            })),
        })
    }

    pub fn dir(&self) -> PathBuf {
        self.inner.borrow().dir.clone()
    }

    pub fn config(&self) -> LogConfig {
        self.inner.borrow().config.clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        self.inner.borrow_mut().config = config;
    }

    /// Validates the batch (header + CRC), applies idempotent-producer checks, assigns offsets by
    /// writing `baseOffset` in place, and queues it for writing. Synchronous: offsets are ordered
    /// by call order.
    pub fn append(&self, mut batch: BytesMut) -> Result<Appended, LogError> {
        let mut inner = self.inner.borrow_mut();
        if batch.len() > inner.config.max_message_bytes as usize {
            return Err(LogError::BatchTooLarge { size: batch.len(), max: inner.config.max_message_bytes });
        }
        let info = batch::validate(&batch)?;
        let base = inner.next_offset;
        batch::set_base_offset(&mut batch, base);
        let last = base + info.last_offset_delta as i64;
        inner.batches.push((base, last, info.max_timestamp, batch.freeze()));
        inner.next_offset = last + 1;
        for w in inner.waiters.drain(..) {
            w.wake();
        }
        Ok(Appended { base_offset: base, last_offset: last, duplicate: false, log_start_offset: inner.start_offset })
    }

    /// Resolves once every offset ≤ `offset` is written to the device (and visible to readers).
    pub async fn wait_written(&self, _offset: i64) -> Result<(), LogError> {
        Ok(())
    }

    /// Resolves once every offset ≤ `offset` is durable under the log's durability policy.
    pub async fn wait_durable(&self, _offset: i64) -> Result<(), LogError> {
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.borrow().start_offset
    }

    /// The next offset not yet visible to readers (Kafka's high watermark; no replication).
    pub fn high_watermark(&self) -> i64 {
        self.inner.borrow().next_offset
    }

    /// The next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.inner.borrow().next_offset
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadBatches, LogError> {
        let inner = self.inner.borrow();
        if offset < inner.start_offset || offset > inner.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.start_offset,
                log_end_offset: inner.next_offset,
            });
        }
        let mut chunks = Vec::new();
        let mut total = 0;
        for (_, last, _, bytes) in inner.batches.iter().filter(|b| b.1 >= offset) {
            let _ = last;
            if total > 0 && total + bytes.len() > max_bytes {
                break;
            }
            total += bytes.len();
            chunks.push(Chunk::Memory(bytes.clone()));
        }
        Ok(ReadBatches { chunks, high_watermark: inner.next_offset, log_start_offset: inner.start_offset, total_bytes: total })
    }

    /// Resolves when the high watermark moves above `offset` (for Fetch long-polls).
    pub async fn wait_for_data(&self, offset: i64) {
        futures_lite::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.next_offset > offset {
                std::task::Poll::Ready(())
            } else {
                inner.waiters.push(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// The first offset whose batch max timestamp is ≥ `timestamp_ms`, with that timestamp.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        let inner = self.inner.borrow();
        Ok(inner.batches.iter().find(|b| b.2 >= timestamp_ms).map(|b| (b.0, b.2)))
    }

    /// Deletes whole segments past `retention.bytes` / `retention.ms`; never blocks appends.
    pub async fn enforce_retention(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// Flushes, syncs and closes the files.
    pub async fn close(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// Closes and deletes the partition directory (DeleteTopics).
    pub async fn delete(self) -> Result<(), LogError> {
        let dir = self.dir();
        std::fs::remove_dir_all(&dir).map_err(|source| LogError::Io { path: dir, source })
    }
}

