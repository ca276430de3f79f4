//! One partition's log: the shared state (`Inner`: segments, queue, offsets, tail cache, waiters)
//! and the small accessors over it. Each concern is a file beside this one: `append` (validation,
//! idempotence, offsets), `plan` (which batches the next write takes, its aligned layout), `write`
//! (one write's I/O), `writer` (the per-log writer task: writes in flight, completions in file
//! order), `sync` (durable offset, interval fdatasync), `roll` (roll and background seal),
//! `recovery` (open), `read` (tail cache, disk reads, read-ahead, long-poll), `retention` (and deleting below an
//! offset), `close`.
//!
//! Shard and concurrency: a `Log` lives on the shard that owns the partition and is `!Send`; its
//! state sits in one `Rc<RefCell<..>>`, borrowed only between awaits (never across one).
//!
//! Write path, and how appends of many partitions are coalesced:
//! ```text
//! append(batch) ── sync: validate, idempotence check, assign offsets, queue ──► pending
//!                  └─ wakes this log's writer task (if idle)
//! writer task  ── takes ALL pending batches (≤ 4 MiB), copies them after the partial last block
//!                 into one aligned pooled buffer, fallocates ahead in 32 MiB steps, issues ONE
//!                 write; appends arriving meanwhile wait for the next write (group commit).
//!              ── when a full 4 MiB more is queued, a second write goes out before the first
//!                 completes: the first then stops at its last full block and the second starts
//!                 there, so they never overlap (at most two in flight).
//!              ── on completion, in file order: batches become visible (high watermark), move to
//!                 the tail cache, waiters wake; `Always` fdatasyncs (one sync in flight, beside
//!                 the writes) before `wait_durable` resolves.
//! many logs    ── a produce request appending to N partitions wakes N writer tasks in the same
//!                 executor tick; each queues its write SQE and glommio submits all of them in
//!                 the next single io_uring_enter, so N partitions cost one system call.
//! ```

mod append;
mod checkpoint;
mod close;
mod plan;
mod progress;
mod read;
mod recovery;
mod retention;
mod roll;
mod sync;
mod write;
mod writer;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Waker;

use bytes::Bytes;

use self::read::ReadAhead;
use self::roll::Seal;
use self::sync::run_sync_timer;
use crate::io::runtime::spawn_detached;
use crate::limits::{SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN};
use crate::producer::ProducerTable;
use crate::segment::Segment;
use crate::{Durability, LogConfig, LogError, Offset};

pub(crate) use append::{append, wait_durable, wait_written};
pub(crate) use close::close;
pub(crate) use read::{offset_for_timestamp, read, wait_for_data};
pub(crate) use recovery::open;
pub(crate) use retention::{delete_segments_below, enforce_retention};

struct PendingBatch {
    base: Offset,
    last: Offset,
    max_timestamp: i64,
    bytes: Bytes,
}

enum Pending {
    Batch(PendingBatch),
    /// Seal the active segment and start a new one before the batches that follow.
    Roll,
}

struct CachedBatch {
    base: Offset,
    last: Offset,
    bytes: Bytes,
}

/// A failed write, kept so that every waiter and append sees it until a retry succeeds.
#[derive(Clone)]
struct WriteFailure {
    storage_full: bool,
    path: PathBuf,
    kind: std::io::ErrorKind,
    message: String,
}

impl WriteFailure {
    fn from_error(error: &LogError, path: &Path) -> WriteFailure {
        match error {
            LogError::StorageFull => WriteFailure {
                storage_full: true,
                path: path.into(),
                kind: std::io::ErrorKind::StorageFull,
                message: String::new(),
            },
            LogError::Io { path, source } => WriteFailure {
                storage_full: false,
                path: path.clone(),
                kind: source.kind(),
                message: source.to_string(),
            },
            other => WriteFailure {
                storage_full: false,
                path: path.into(),
                kind: std::io::ErrorKind::Other,
                message: other.to_string(),
            },
        }
    }

    fn to_error(&self) -> LogError {
        if self.storage_full {
            return LogError::StorageFull;
        }
        LogError::Io {
            path: self.path.clone(),
            source: std::io::Error::new(self.kind, self.message.clone()),
        }
    }
}

pub(crate) struct Inner {
    dir: PathBuf,
    config: LogConfig,
    segments: BTreeMap<Offset, Segment>,
    pending: VecDeque<Pending>,
    /// Bytes of the batches in `pending`.
    pending_bytes: usize,
    /// Bytes of the active segment including pending batches (roll decisions happen at append).
    planned_segment_bytes: u64,
    planned_segment_base: Offset,
    planned_segment_opened_ms: i64,
    /// Bytes of the active file from the last block boundary to the written end.
    tail_block: Vec<u8>,
    next_offset: Offset,
    high_watermark: Offset,
    durable_offset: Offset,
    start_offset: Offset,
    /// The active segment's base and the log's end when it was opened: a log still there at
    /// close took no append, and its files are as recovery left them (nothing to sync).
    opened_at: (Offset, Offset),
    cache: VecDeque<CachedBatch>,
    cache_bytes: usize,
    producers: ProducerTable,
    failure: Option<WriteFailure>,
    /// The seal of the previous segment, while it runs in the background.
    seal: Option<Seal>,
    /// Why the last seal gave up (only once closing); returned by `close`.
    seal_error: Option<WriteFailure>,
    writing: bool,
    closing: bool,
    closed: bool,
    sync_timer_running: bool,
    /// Reads of the next window issued after disk reads, newest last (at most `READ_AHEADS_MAX`).
    read_aheads: VecDeque<ReadAhead>,
    writer_waker: Option<Waker>,
    waiters: Vec<Waker>,
    /// Bytes of segment files the open scanned: past the checkpoint, or all without one.
    recovery_scanned_bytes: u64,
    /// A progress checkpoint (`progress.rs`) is running.
    checkpointing: bool,
    /// What the last checkpoint covers of the active segment.
    checkpointed: progress::Covered,
}

/// Asserts the order of a log's offsets: nothing is durable before it is written, nothing is
/// written before it is assigned.
fn check_offsets(durable_offset: Offset, high_watermark: Offset, next_offset: Offset) {
    assert!(
        durable_offset <= high_watermark && high_watermark <= next_offset,
        "durable offset <= high watermark <= next offset: {durable_offset}, {high_watermark}, \
         {next_offset}"
    );
}

impl Inner {
    /// Checked after every change of the offsets.
    fn check_invariants(&self) {
        check_offsets(self.durable_offset, self.high_watermark, self.next_offset);
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Registers the polling task once: a long-poll over many partitions re-polls every one of
    /// them on each wake-up, and glommio's task refcount is an i16, so pushing a clone per poll
    /// overflowed it ("Waker invariant broken", seen with 1,000 partitions). Dedup also bounds the
    /// list to the tasks actually waiting.
    fn register_waiter(&mut self, waker: &Waker) {
        if !self.waiters.iter().any(|w| w.will_wake(waker)) {
            self.waiters.push(waker.clone());
        }
    }

    fn wake_all(&mut self) {
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer_waker.take() {
            waker.wake();
        }
    }

    fn evict_cache(&mut self) {
        while self.cache_bytes > self.config.tail_cache_bytes
            || self
                .cache
                .front()
                .is_some_and(|c| c.base < self.start_offset)
        {
            let Some(front) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= front.bytes.len();
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn clamp_config(mut config: LogConfig) -> LogConfig {
    config.segment_bytes = config
        .segment_bytes
        .clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX);
    config.index_interval_bytes = config.index_interval_bytes.max(1);
    config
}

pub(crate) fn set_config(log: &Rc<RefCell<Inner>>, config: LogConfig) {
    let mut inner = log.borrow_mut();
    inner.config = clamp_config(config);
    if matches!(inner.config.durability, Durability::Interval { .. })
        && !inner.sync_timer_running
        && !inner.closed
    {
        inner.sync_timer_running = true;
        spawn_detached(run_sync_timer(Rc::downgrade(log)));
    }
    inner.evict_cache();
}

pub(crate) fn is_closed(log: &Rc<RefCell<Inner>>) -> bool {
    log.borrow().closed
}

pub(crate) fn recovery_scanned_bytes(log: &Rc<RefCell<Inner>>) -> u64 {
    log.borrow().recovery_scanned_bytes
}

pub(crate) fn offsets(log: &Rc<RefCell<Inner>>) -> (i64, i64, i64) {
    let inner = log.borrow();
    let (start, hwm, next) = (inner.start_offset, inner.high_watermark, inner.next_offset);
    (start.get(), hwm.get(), next.get())
}

pub(crate) fn dir(log: &Rc<RefCell<Inner>>) -> PathBuf {
    log.borrow().dir.clone()
}

pub(crate) fn config(log: &Rc<RefCell<Inner>>) -> LogConfig {
    log.borrow().config.clone()
}

#[cfg(test)]
mod tests {
    use super::check_offsets;
    use crate::Offset;

    #[test]
    fn offsets_in_order_pass() {
        check_offsets(Offset::ZERO, Offset::ZERO, Offset::ZERO);
        check_offsets(Offset::new(3), Offset::new(5), Offset::new(9));
    }

    #[test]
    #[should_panic(expected = "durable offset <= high watermark <= next offset")]
    fn durable_past_the_high_watermark_is_refused() {
        check_offsets(Offset::new(6), Offset::new(5), Offset::new(9));
    }

    #[test]
    #[should_panic(expected = "durable offset <= high watermark <= next offset")]
    fn high_watermark_past_the_next_offset_is_refused() {
        check_offsets(Offset::new(3), Offset::new(10), Offset::new(9));
    }
}
