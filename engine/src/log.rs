//! One partition's log: the segments, the append path (validation, idempotence, offsets), the
//! per-log writer task (group commit over O_DIRECT), reads, retention, recovery and close.
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

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use glommio::io::{DmaBuffer, DmaFile, ReadResult};

use crate::batch;
use crate::io::{
    align_down, align_up, give_buffer, log_error, open_segment_file, std_error, take_buffer,
};
use crate::limits::{
    BATCH_BYTES_MAX, BLOCK_BYTES, PREALLOCATE_STEP_BYTES, PREALLOCATE_STEP_MIN_BYTES,
    SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, WRITE_BYTES_MAX,
};
use crate::producer::{last_sequence, ProducerBatch, ProducerCheck, ProducerTable};
use crate::segment::{
    self, file_stem, parse_stem, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::slots::SlotClaim;
use crate::{Appended, Chunk, Durability, LogConfig, LogError, ReadBatches};

/// Pause before a failed write (ENOSPC, EIO) is retried.
const WRITE_RETRY_MS: u64 = 100;

/// Read-aheads kept per log: one per reader catching up from disk (consumer groups, followers).
const READ_AHEADS_MAX: usize = 4;

/// The next window of a segment, read while the previous fetch's response is written, for the
/// reader that continues at `offset` (the batch starting at byte `position` of the segment at
/// `segment_base`). Measured before this (weir-bench --backlog): one read in flight per fetch and
/// the device idle while the response went out kept catch-up reads at 0.34-0.50 GB/s.
struct ReadAhead {
    segment_base: i64,
    offset: i64,
    position: u64,
    start: u64,
    /// The window, cut at the data end when it was issued; `None` if the read failed (the fetch
    /// then reads from the device itself and reports the error).
    read: glommio::task::JoinHandle<Option<ReadResult>>,
}

struct PendingBatch {
    base: i64,
    last: i64,
    max_timestamp: i64,
    bytes: Bytes,
}

enum Pending {
    Batch(PendingBatch),
    /// Seal the active segment and start a new one before the batches that follow.
    Roll,
}

struct CachedBatch {
    base: i64,
    last: i64,
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
    segments: BTreeMap<i64, Segment>,
    pending: VecDeque<Pending>,
    /// Bytes of the batches in `pending`.
    pending_bytes: usize,
    /// Bytes of the active segment including pending batches (roll decisions happen at append).
    planned_segment_bytes: u64,
    planned_segment_base: i64,
    planned_segment_opened_ms: i64,
    /// Bytes of the active file from the last block boundary to the written end.
    tail_block: Vec<u8>,
    next_offset: i64,
    high_watermark: i64,
    durable_offset: i64,
    start_offset: i64,
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
}

impl Inner {
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

struct WriteJobResult {
    /// Blocks now reserved in the file, when pre-allocation ran.
    allocated: Option<u64>,
}

struct WriteJob {
    file: Rc<DmaFile>,
    path: PathBuf,
    segment_base: i64,
    /// The write's first block when it rewrites a block already on disk (the last write's
    /// zero-padded tail); `buffer` then holds the blocks after it. See `plan_write`.
    head: Option<DmaBuffer>,
    buffer: DmaBuffer,
    aligned_start: u64,
    /// Where the data on disk is contiguous to once this write (and those before it) completed.
    end: u64,
    /// Ends on a block boundary, its partial last block left to the next write.
    trimmed: bool,
    allocate_to: Option<u64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Where the file's reservation should end once a write reaching `write_end` is issued: the next
/// multiple of a step that doubles with the file (1 MiB, 2 MiB, ... 32 MiB).
fn preallocation_end(write_end: u64) -> u64 {
    let step = write_end
        .next_power_of_two()
        .clamp(PREALLOCATE_STEP_MIN_BYTES, PREALLOCATE_STEP_BYTES);
    write_end.div_ceil(step) * step + step
}

/// Writes in flight at once, at most. With one, the device idled while each write's completion
/// was processed (ext4 converts the pre-allocated extent in a kworker that competes with the shard
/// for its core): measured with io_uring tracepoints, a 4 MiB write took 2.55 ms from submission
/// to completion inside the engine against 2.12 ms for the same write alone, and one partition
/// reached 72-80% of the raw bandwidth. With a second write queued behind it the device never
/// waits for that processing.
const WRITES_IN_FLIGHT_MAX: usize = 2;

/// Where the next write starts: after the written data, or after the writes planned ahead of it
/// (whose batches, the first `skip` of the queue, it must not repeat).
struct WriteStart {
    skip: usize,
    size_bytes: u64,
    tail: Vec<u8>,
    /// `tail`'s block is on disk (written by an earlier write, zero-padded), so the next write
    /// rewrites it rather than filling a pre-allocated block for the first time.
    tail_on_disk: bool,
    allocated_bytes: u64,
}

fn current_start(inner: &Inner) -> WriteStart {
    let active = inner.active();
    WriteStart {
        skip: 0,
        size_bytes: active.size_bytes,
        tail: inner.tail_block.clone(),
        // The visible data ends at `size_bytes`, and every byte before it was written: a trimmed
        // write covers the batches it made visible.
        tail_on_disk: true,
        allocated_bytes: active.allocated_bytes,
    }
}

/// The queued batches the next write takes.
struct WriteSpan {
    batches: usize,
    batch_bytes: usize,
    /// A batch that did not fit follows (rather than a roll marker or the end of the queue).
    more: bool,
}

/// Which queued batches after `start.skip` the next write takes: whole batches up to
/// `WRITE_BYTES_MAX`, never past a roll marker. `None` if there are none, or with `full_only`
/// unless the write is as large as it can get.
fn next_span(inner: &Inner, start: &WriteStart, full_only: bool) -> Option<WriteSpan> {
    let mut batches = 0;
    let mut batch_bytes = 0;
    let mut more = false;
    let mut roll = false;
    for pending in inner.pending.iter().skip(start.skip) {
        let Pending::Batch(b) = pending else {
            roll = true;
            break;
        };
        if batches > 0 && batch_bytes + b.bytes.len() > WRITE_BYTES_MAX {
            more = true;
            break;
        }
        batches += 1;
        batch_bytes += b.bytes.len();
    }
    if batches == 0 || (full_only && !more && !roll) {
        return None;
    }
    Some(WriteSpan {
        batches,
        batch_bytes,
        more,
    })
}

/// Builds the next write from the queued batches after `start.skip`: the partial last block, then
/// whole batches up to `WRITE_BYTES_MAX`, never past a roll marker. When more batches are queued
/// behind it, the write stops at its last full block and the bytes after it open the next write
/// (which therefore overlaps nothing and may be in flight at the same time); otherwise it is
/// zero-padded to the block size and the next write rewrites that block. `span` is what
/// `next_span` found after `start`. Returns the job and where the write after it starts.
///
/// A write that rewrites a block on disk is issued as two: that block, then the rest. ext4 takes
/// the direct-I/O fast path (shared inode lock, issued inline by io_uring) only for a range that
/// is all written or all pre-allocated; one write spanning both gets EAGAIN, and io_uring
/// re-issues it from a worker thread under the exclusive inode lock. Measured at 4.6 M msgs/s
/// into one partition, 20% of the writes went that way and the worker took 13.5% of the shard's
/// core, preempting the shard about 4,000 times a second.
fn plan_write(inner: &Inner, start: &WriteStart, span: WriteSpan) -> (WriteJob, WriteStart) {
    let active = inner.active();
    let aligned_start = align_down(start.size_bytes);
    assert_eq!(start.tail.len() as u64, start.size_bytes - aligned_start);
    let WriteSpan {
        batches,
        batch_bytes,
        more,
    } = span;
    let data_bytes = start.tail.len() + batch_bytes;
    let new_end = start.size_bytes + batch_bytes as u64;
    let tail_from = (align_down(new_end) - aligned_start) as usize;
    let trimmed = more && tail_from > 0;
    let capacity = align_up(if trimmed { tail_from } else { data_bytes } as u64) as usize;
    let head_bytes = if start.tail_on_disk && !start.tail.is_empty() && capacity > BLOCK_BYTES {
        BLOCK_BYTES
    } else {
        0
    };
    let mut head = (head_bytes > 0).then(|| take_buffer(head_bytes));
    let mut buffer = take_buffer(capacity - head_bytes);
    let mut new_tail = Vec::with_capacity(data_bytes - tail_from);
    {
        let mut out = WriteOut {
            head: head.as_mut().map(|head| head.as_bytes_mut()),
            body: buffer.as_bytes_mut(),
        };
        let mut at = 0;
        let mut put = |source: &[u8]| {
            out.copy_at(at, source);
            if at + source.len() > tail_from {
                new_tail.extend_from_slice(&source[tail_from.saturating_sub(at)..]);
            }
            at += source.len();
        };
        put(&start.tail);
        for pending in inner.pending.iter().skip(start.skip).take(batches) {
            if let Pending::Batch(b) = pending {
                put(&b.bytes);
            }
        }
        // Zero padding: recovery reads zeros after the last batch as "end of data".
        out.zero_from(at);
    }
    let write_end = aligned_start + capacity as u64;
    let allocate_to = (write_end > start.allocated_bytes).then(|| preallocation_end(write_end));
    let allocated_after = allocate_to.unwrap_or(start.allocated_bytes);
    let job = WriteJob {
        file: active.file.clone(),
        path: active.path.clone(),
        segment_base: active.base_offset,
        head,
        buffer,
        aligned_start,
        end: if trimmed { write_end } else { new_end },
        trimmed,
        allocate_to,
    };
    let after = WriteStart {
        skip: start.skip + batches,
        size_bytes: new_end,
        tail_on_disk: !trimmed,
        tail: new_tail,
        allocated_bytes: allocated_after,
    };
    (job, after)
}

/// A write's bytes, laid out over its optional separate first block and the rest.
struct WriteOut<'a> {
    head: Option<&'a mut [u8]>,
    body: &'a mut [u8],
}

impl WriteOut<'_> {
    /// Each part with the write offset it starts at.
    fn parts(&mut self) -> impl Iterator<Item = (usize, &mut [u8])> {
        let head_len = self.head.as_ref().map_or(0, |head| head.len());
        self.head
            .as_deref_mut()
            .map(|head| (0, head))
            .into_iter()
            .chain(std::iter::once((head_len, &mut *self.body)))
    }

    /// Copies `source` to the write's offset `at`, dropping what falls past its end (the bytes
    /// of a trimmed write's partial last block, which open the next write).
    fn copy_at(&mut self, at: usize, source: &[u8]) {
        for (base, part) in self.parts() {
            let from = at.max(base);
            let to = (at + source.len()).min(base + part.len());
            if from < to {
                part[from - base..to - base].copy_from_slice(&source[from - at..to - at]);
            }
        }
    }

    fn zero_from(&mut self, at: usize) {
        for (base, part) in self.parts() {
            let from = at.max(base);
            if from < base + part.len() {
                part[from - base..].fill(0);
            }
        }
    }
}

/// Reserves blocks up to `step_end` (a 32 MiB step) or, when the device cannot hold that much,
/// just up to `write_end`, so that pre-allocation alone never makes a near-full disk refuse writes.
async fn preallocate(
    file: &DmaFile,
    path: &Path,
    step_end: u64,
    write_end: u64,
) -> Result<u64, LogError> {
    match file
        .pre_allocate(step_end, false)
        .await
        .map_err(|e| log_error(path, e))
    {
        Err(LogError::StorageFull) => {
            file.pre_allocate(write_end, false)
                .await
                .map_err(|e| log_error(path, e))?;
            Ok(write_end)
        }
        other => other.map(|()| step_end),
    }
}

fn short_write(path: &Path, written: usize, expected: usize) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("short write: {written} of {expected} bytes")),
    }
}

async fn run_write(mut job: WriteJob) -> (Result<(), LogError>, Option<DmaBuffer>, WriteJobResult) {
    let head_bytes = job.head.as_ref().map_or(0, DmaBuffer::len);
    let write_end = job.aligned_start + (head_bytes + job.buffer.len()) as u64;
    if let Some(size) = job.allocate_to {
        match preallocate(&job.file, &job.path, size, write_end).await {
            Ok(allocated) => job.allocate_to = Some(allocated),
            Err(e) => {
                if let Some(head) = job.head {
                    give_buffer(head);
                }
                return (Err(e), Some(job.buffer), WriteJobResult { allocated: None });
            }
        }
    }
    let allocated = WriteJobResult {
        allocated: job.allocate_to,
    };
    let buffer = Rc::new(job.buffer);
    let expected = buffer.len();
    let body_at = job.aligned_start + head_bytes as u64;
    let (head, result) = match job.head.take() {
        None => (None, job.file.write_rc_at(buffer.clone(), body_at).await),
        Some(head) => {
            // Both go out in the same reactor turn; they do not overlap.
            let head = Rc::new(head);
            let (head_result, body_result) = futures_lite::future::zip(
                job.file.write_rc_at(head.clone(), job.aligned_start),
                job.file.write_rc_at(buffer.clone(), body_at),
            )
            .await;
            let head_result = match head_result {
                Ok(written) if written == head_bytes => Ok(()),
                Ok(written) => Err(short_write(&job.path, written, head_bytes)),
                Err(e) => Err(log_error(&job.path, e)),
            };
            (Some((head, head_result)), body_result)
        }
    };
    let buffer = Rc::try_unwrap(buffer).ok();
    if let Some((head, head_result)) = head {
        if let Ok(head) = Rc::try_unwrap(head) {
            give_buffer(head);
        }
        if let Err(e) = head_result {
            return (Err(e), buffer, allocated);
        }
    }
    match result {
        Ok(written) if written == expected => (Ok(()), buffer, allocated),
        Ok(written) => {
            // A device that fills up part-way through a write reports the bytes it took; the
            // rest, written again, gives the reason (ENOSPC: StorageFull), or succeeds.
            let rest = match &buffer {
                Some(buffer) if written > 0 && written % BLOCK_BYTES == 0 => {
                    let mut rest = take_buffer(expected - written);
                    rest.as_bytes_mut()
                        .copy_from_slice(&buffer.as_bytes()[written..]);
                    let at = body_at + written as u64;
                    let result = job.file.write_rc_at(Rc::new(rest), at).await;
                    Some(result.map(|n| n == expected - written))
                }
                _ => None,
            };
            let result = match rest {
                Some(Ok(true)) => Ok(()),
                Some(Err(e)) => Err(log_error(&job.path, e)),
                Some(Ok(false)) | None => Err(short_write(&job.path, written, expected)),
            };
            (result, buffer, allocated)
        }
        Err(e) => (Err(log_error(&job.path, e)), buffer, allocated),
    }
}

/// Applies a completed write, every write before it having completed too: the data is on disk
/// up to `end`, so the queued batches ending there become visible and move to the tail cache.
/// Returns how many batches left the queue.
fn apply_written(inner: &mut Inner, segment_base: i64, end: u64, allocated: Option<u64>) -> usize {
    let interval = inner.config.index_interval_bytes;
    let mut popped = 0;
    loop {
        let fits = match (inner.pending.front(), inner.segments.get(&segment_base)) {
            (Some(Pending::Batch(b)), Some(segment)) => {
                segment.size_bytes + b.bytes.len() as u64 <= end
            }
            _ => false,
        };
        if !fits {
            break;
        }
        let Some(Pending::Batch(b)) = inner.pending.pop_front() else {
            unreachable!("checked above")
        };
        let segment = inner
            .segments
            .get_mut(&segment_base)
            .expect("checked above");
        segment.note_written(b.base, b.last, b.max_timestamp, b.bytes.len(), interval);
        // The bytes after the last block boundary, which the next write starts by rewriting.
        let partial = (segment.size_bytes % BLOCK_BYTES as u64) as usize;
        if b.bytes.len() >= partial {
            inner.tail_block.clear();
            inner
                .tail_block
                .extend_from_slice(&b.bytes[b.bytes.len() - partial..]);
        } else {
            inner.tail_block.extend_from_slice(&b.bytes);
        }
        inner.pending_bytes -= b.bytes.len();
        assert!(
            b.last >= inner.high_watermark,
            "the high watermark only grows"
        );
        inner.high_watermark = b.last + 1;
        inner.cache_bytes += b.bytes.len();
        inner.cache.push_back(CachedBatch {
            base: b.base,
            last: b.last,
            bytes: b.bytes,
        });
        popped += 1;
    }
    if let (Some(size), Some(segment)) = (allocated, inner.segments.get_mut(&segment_base)) {
        segment.allocated_bytes = segment.allocated_bytes.max(size);
    }
    inner.evict_cache();
    popped
}

/// Rolls: opens the next segment and makes it the active one at once, then seals the old one in
/// the background (`seal_segment`), so that appends never wait for the seal. Measured before this
/// (weir-bench kafka-2014, 1 GiB segments): the inline fdatasync + truncate + index writes + directory
/// fsync of a 1 GiB segment stopped acknowledgements for 0.5-0.85 s at every roll.
/// At most one seal runs at a time: a roll waits for the previous seal (only tiny segments get there).
async fn run_roll(log: &Rc<RefCell<Inner>>) -> Result<(), LogError> {
    wait_sealed(log).await;
    let (old_base, new_base, dir) = {
        let inner = log.borrow();
        let active = inner.active();
        assert_eq!(
            active.next_offset, inner.high_watermark,
            "a roll runs after every batch before it is written"
        );
        (active.base_offset, active.next_offset, inner.dir.clone())
    };
    let new_path = dir.join(format!("{}{LOG_SUFFIX}", file_stem(new_base)));
    let new_file = open_segment_file(&new_path, true).await?;
    {
        let mut inner = log.borrow_mut();
        inner
            .segments
            .insert(new_base, Segment::new(&dir, new_base, new_file));
        inner.tail_block.clear();
        // Until the directory holding the new file is synced, nothing in it counts as durable.
        inner.seal = Some(Seal {
            new_base,
            synced_target: new_base,
        });
        let Some(Pending::Roll) = inner.pending.pop_front() else {
            unreachable!("roll marker at the front")
        };
    }
    glommio::spawn_local(seal_segment(Rc::downgrade(log), old_base, new_base, dir)).detach();
    Ok(())
}

/// A seal in flight: the segment starting at `new_base` is active but its directory entry is not
/// synced yet. `synced_target` is what `durable_offset` becomes once it is.
struct Seal {
    new_base: i64,
    synced_target: i64,
}

/// Marks offsets below `target` durable (their segment was fdatasynced), except those of a segment
/// whose directory entry is not yet synced: those wait for the seal.
fn note_durable(inner: &mut Inner, target: i64) {
    let allowed = match &mut inner.seal {
        // The sealed segment's own sync (in `seal_segment`) covers the offsets before `new_base`.
        Some(seal) if target > seal.new_base => {
            seal.synced_target = seal.synced_target.max(target);
            inner.durable_offset
        }
        _ => target,
    };
    inner.durable_offset = inner.durable_offset.max(allowed);
}

/// Waits until no seal is in flight.
async fn wait_sealed(log: &Rc<RefCell<Inner>>) {
    futures_lite::future::poll_fn(|cx| {
        let mut inner = log.borrow_mut();
        if inner.seal.is_none() {
            Poll::Ready(())
        } else {
            inner.register_waiter(cx.waker());
            Poll::Pending
        }
    })
    .await
}

/// Seals the segment at `old_base` off the append path: fdatasync, trim the pre-allocated tail,
/// save the indexes and fsync the directory (which also persists the new segment's entry). The
/// blocking std::fs parts run on glommio's blocking thread pool, never on the reactor. Retries
/// every `WRITE_RETRY_MS` on failure; gives up (recording the error for `close`) once closing.
async fn seal_segment(weak: Weak<RefCell<Inner>>, old_base: i64, new_base: i64, dir: PathBuf) {
    loop {
        let result = seal_once(&weak, old_base, new_base, &dir).await;
        let finished = {
            let Some(log) = weak.upgrade() else { return };
            let mut inner = log.borrow_mut();
            match result {
                Ok(()) => {
                    if let Some(seal) = inner.seal.take() {
                        inner.durable_offset = inner.durable_offset.max(seal.synced_target);
                    }
                    inner.wake_all();
                    true
                }
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "sealing a segment failed");
                    let give_up = inner.closing || inner.closed;
                    if give_up {
                        inner.seal = None;
                        inner.seal_error = Some(WriteFailure::from_error(&error, &dir));
                        inner.wake_all();
                    }
                    give_up
                }
            }
        };
        if finished {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(WRITE_RETRY_MS)).await;
    }
}

async fn seal_once(
    weak: &Weak<RefCell<Inner>>,
    old_base: i64,
    new_base: i64,
    dir: &Path,
) -> Result<(), LogError> {
    let sealed = {
        let Some(log) = weak.upgrade() else {
            return Ok(());
        };
        let inner = log.borrow();
        // Retention may already have removed the old segment: then only the directory matters.
        inner.segments.get(&old_base).map(|s| {
            (
                s.file.clone(),
                s.path.clone(),
                s.size_bytes,
                s.index_files(),
            )
        })
    };
    if let Some((file, path, size, indexes)) = sealed {
        file.fdatasync().await.map_err(|e| log_error(&path, e))?;
        if let Some(log) = weak.upgrade() {
            let mut inner = log.borrow_mut();
            inner.durable_offset = inner.durable_offset.max(new_base);
        }
        file.truncate(size).await.map_err(|e| log_error(&path, e))?;
        glommio::executor()
            .spawn_blocking(move || segment::write_index_files(&indexes))
            .await?;
    }
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || sync_dir(&dir))
        .await
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| std_error(dir, e))
}

type WriteOutcome = (Result<(), LogError>, Option<DmaBuffer>, WriteJobResult);

/// A write in flight.
struct Flight {
    segment_base: i64,
    path: PathBuf,
    /// Where the data on disk is contiguous to once this write and those before it completed.
    end: u64,
    /// Ends on a block boundary: the next write overlaps nothing and may go out meanwhile.
    trimmed: bool,
    write: Pin<Box<dyn Future<Output = WriteOutcome>>>,
    done: Option<(Result<(), LogError>, WriteJobResult)>,
}

impl Flight {
    fn poll(&mut self, cx: &mut Context<'_>) {
        if self.done.is_some() {
            return;
        }
        if let Poll::Ready((result, buffer, allocated)) = self.write.as_mut().poll(cx) {
            if let Some(buffer) = buffer {
                give_buffer(buffer);
            }
            self.done = Some((result, allocated));
        }
    }
}

/// An fdatasync in flight (`Always`): offsets below `target` are durable once it completes.
struct SyncFlight {
    target: i64,
    path: PathBuf,
    sync: Pin<Box<dyn Future<Output = Result<(), LogError>>>>,
}

/// What the writer task must do outside its poll loop.
enum Step {
    Roll,
    Failed(LogError, PathBuf),
    Stop,
}

/// The per-log writer's state: writes in flight in file order (at most `WRITES_IN_FLIGHT_MAX`),
/// where the next one starts, and the `Always` fdatasync in flight.
struct Writer {
    flights: VecDeque<Flight>,
    cursor: Option<WriteStart>,
    sync: Option<SyncFlight>,
    /// The target of the last fdatasync issued (`Always`).
    synced_target: Option<i64>,
    /// This log's share of the shard's write slots: one per write in flight.
    slots: SlotClaim,
}

impl Writer {
    fn poll(&mut self, weak: &Weak<RefCell<Inner>>, cx: &mut Context<'_>) -> Poll<Step> {
        for flight in self.flights.iter_mut() {
            flight.poll(cx);
        }
        let synced = match self.sync.as_mut().map(|s| s.sync.as_mut().poll(cx)) {
            Some(Poll::Ready(result)) => Some(result),
            _ => None,
        };
        let Some(log) = weak.upgrade() else {
            return Poll::Ready(Step::Stop);
        };
        let mut inner = log.borrow_mut();
        if inner.closed {
            return Poll::Ready(Step::Stop);
        }
        if let Some(result) = synced {
            let sync = self.sync.take().expect("polled above");
            match result {
                Ok(()) => {
                    note_durable(&mut inner, sync.target);
                    inner.failure = None;
                    inner.wake_all();
                }
                Err(error) => {
                    // Sync again after the retry pause: the target is not durable yet.
                    self.synced_target = None;
                    return Poll::Ready(Step::Failed(error, sync.path));
                }
            }
        }
        // Completed writes take effect in file order: a later one may finish first.
        while self.flights.front().is_some_and(|f| f.done.is_some()) {
            let flight = self.flights.pop_front().expect("checked above");
            self.slots.release();
            let (result, allocated) = flight.done.expect("checked above");
            if let Err(error) = result {
                return Poll::Ready(Step::Failed(error, flight.path));
            }
            let popped = apply_written(
                &mut inner,
                flight.segment_base,
                flight.end,
                allocated.allocated,
            );
            if let Some(cursor) = self.cursor.as_mut() {
                cursor.skip -= popped;
            }
            inner.failure = None;
            inner.wake_all();
        }
        if inner.config.durability == Durability::Always && self.sync.is_none() {
            let synced = *self.synced_target.get_or_insert(inner.durable_offset);
            if inner.high_watermark > synced {
                let target = inner.high_watermark;
                let active = inner.active();
                let (file, path) = (active.file.clone(), active.path.clone());
                let error_path = path.clone();
                let mut sync = SyncFlight {
                    target,
                    path,
                    sync: Box::pin(async move {
                        file.fdatasync()
                            .await
                            .map_err(|e| log_error(&error_path, e))
                    }),
                };
                // Polled once now so that it is submitted with this tick's writes.
                if let Poll::Ready(result) = sync.sync.as_mut().poll(cx) {
                    sync.sync = Box::pin(std::future::ready(result));
                    cx.waker().wake_by_ref();
                }
                self.synced_target = Some(target);
                self.sync = Some(sync);
            }
        }
        while self.flights.len() < WRITES_IN_FLIGHT_MAX {
            if self.flights.is_empty() {
                if matches!(inner.pending.front(), Some(Pending::Roll)) {
                    if self.sync.is_some() {
                        break;
                    }
                    self.cursor = None;
                    inner.writing = true;
                    return Poll::Ready(Step::Roll);
                }
            } else if !self.flights.back().is_some_and(|f| f.trimmed) {
                break;
            }
            let mut start = match self.cursor.take() {
                Some(start) => start,
                None => current_start(&inner),
            };
            if self.flights.is_empty() {
                // Every planned pre-allocation has run: what it reserved may be less than planned
                // (a near-full device).
                start.allocated_bytes = inner.active().allocated_bytes;
            }
            if self.slots.waiting() {
                // The grant wakes this task; until then appends need not (see below).
                self.cursor = Some(start);
                break;
            }
            // Behind a write or an `Always` sync in flight, only a full write goes out: smaller
            // ones cost the device more than they save, and batches queued during a sync make
            // the next write larger (1,000 partitions, `always`: 21-23% of raw with a write per
            // sync, 12-16% with small writes beside the syncs, 28-31% like this).
            let full_only = !self.flights.is_empty() || self.sync.is_some();
            let span = next_span(&inner, &start, full_only);
            let Some(span) = span.filter(|_| self.slots.try_take(cx.waker())) else {
                // Nothing to write yet, or waiting for a slot (batches keep queueing meanwhile).
                self.cursor = Some(start);
                break;
            };
            let (job, after) = plan_write(&inner, &start, span);
            self.cursor = Some(after);
            let mut flight = Flight {
                segment_base: job.segment_base,
                path: job.path.clone(),
                end: job.end,
                trimmed: job.trimmed,
                write: Box::pin(run_write(job)),
                done: None,
            };
            // Polled once now: that queues its submission for the reactor's next turn.
            flight.poll(cx);
            if flight.done.is_some() {
                cx.waker().wake_by_ref();
            }
            self.flights.push_back(flight);
        }
        self.slots.pass_unused_grant();
        let writing = !self.flights.is_empty() || self.sync.is_some();
        if inner.writing && !writing {
            inner.wake_all();
        }
        inner.writing = writing;
        // Waiting for a slot, appends do not wake the writer: it re-plans with everything queued
        // once the slot is granted (with 1,000 partitions waking it per append cost CPU).
        if !self.slots.waiting() {
            inner.writer_waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// After a failure: waits for every operation still in flight (their results are dropped;
    /// the retry rewrites from the last batch that became visible).
    fn drain(&mut self, weak: &Weak<RefCell<Inner>>, cx: &mut Context<'_>) -> Poll<()> {
        for flight in self.flights.iter_mut() {
            flight.poll(cx);
        }
        if let Some(sync) = self.sync.as_mut() {
            if let Poll::Ready(result) = sync.sync.as_mut().poll(cx) {
                if let (Ok(()), Some(log)) = (result, weak.upgrade()) {
                    note_durable(&mut log.borrow_mut(), sync.target);
                }
                self.sync = None;
            }
        }
        if self.sync.is_none() && self.flights.iter().all(|f| f.done.is_some()) {
            self.flights.clear();
            self.slots.release_all();
            self.slots.pass_unused_grant();
            self.cursor = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// The per-log writer task: plans writes from the queue (see `Writer`), rolls, and retries after
/// a failure.
async fn run_writer(weak: Weak<RefCell<Inner>>) {
    let mut writer = Writer {
        flights: VecDeque::new(),
        cursor: None,
        sync: None,
        synced_target: None,
        slots: SlotClaim::default(),
    };
    loop {
        let step = futures_lite::future::poll_fn(|cx| writer.poll(&weak, cx)).await;
        let failure = match step {
            Step::Stop => return,
            Step::Roll => {
                let Some(log) = weak.upgrade() else { return };
                let path = log.borrow().active().path.clone();
                let rolled = run_roll(&log).await;
                let mut inner = log.borrow_mut();
                inner.writing = false;
                inner.wake_all();
                match rolled {
                    Ok(()) => None,
                    Err(error) => Some((error, path)),
                }
            }
            Step::Failed(error, path) => Some((error, path)),
        };
        let Some((error, path)) = failure else {
            continue;
        };
        if let Some(log) = weak.upgrade() {
            let mut inner = log.borrow_mut();
            tracing::warn!(dir = %inner.dir.display(), %error, "log write failed; retrying");
            inner.failure = Some(WriteFailure::from_error(&error, &path));
            inner.wake_all();
        }
        futures_lite::future::poll_fn(|cx| writer.drain(&weak, cx)).await;
        if let Some(log) = weak.upgrade() {
            let mut inner = log.borrow_mut();
            inner.writing = false;
            inner.wake_all();
        }
        glommio::timer::sleep(Duration::from_millis(WRITE_RETRY_MS)).await;
    }
}

/// Background fdatasync for `Durability::Interval`: at most one sync per interval, only when
/// something was written since the last one.
async fn run_sync_timer(weak: Weak<RefCell<Inner>>) {
    loop {
        let interval_ms = {
            let Some(log) = weak.upgrade() else { return };
            let mut inner = log.borrow_mut();
            match inner.config.durability {
                Durability::Interval { ms } if !inner.closed => ms.max(1),
                _ => {
                    inner.sync_timer_running = false;
                    return;
                }
            }
        };
        glommio::timer::sleep(Duration::from_millis(interval_ms)).await;
        let (file, path, target) = {
            let Some(log) = weak.upgrade() else { return };
            let inner = log.borrow();
            if inner.closed || inner.high_watermark <= inner.durable_offset {
                continue;
            }
            let active = inner.active();
            // Every segment before the active one was synced when it was sealed.
            (
                active.file.clone(),
                active.path.clone(),
                inner.high_watermark,
            )
        };
        match file.fdatasync().await {
            Ok(()) => {
                let Some(log) = weak.upgrade() else { return };
                let mut inner = log.borrow_mut();
                note_durable(&mut inner, target);
                inner.wake_all();
            }
            Err(e) => tracing::warn!(error = %log_error(&path, e), "interval fdatasync failed"),
        }
    }
}

fn clamp_config(mut config: LogConfig) -> LogConfig {
    config.segment_bytes = config
        .segment_bytes
        .clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX);
    config.index_interval_bytes = config.index_interval_bytes.max(1);
    config
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |e| std_error(path, e)
}

/// Opens (recovering) or creates the partition directory.
pub(crate) async fn open(dir: &Path, config: LogConfig) -> Result<Rc<RefCell<Inner>>, LogError> {
    let config = clamp_config(config);
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_stem) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let mut producers = ProducerTable::default();
    let mut segments = BTreeMap::new();
    let mut expected_base: Option<i64> = None;
    let mut index = 0;
    while index < bases.len() {
        let base = bases[index];
        let sealed = index + 1 < bases.len();
        let path = dir.join(format!("{}{LOG_SUFFIX}", file_stem(base)));
        if let Some(expected) = expected_base {
            if base != expected {
                let reason = format!(
                    "segment starts at offset {base} but the previous one ends at {expected}"
                );
                if !config.repair {
                    return Err(LogError::Corrupt { path, reason });
                }
                tracing::warn!(path = %path.display(), %reason, "repair: deleting this and later segments");
                delete_segments(dir, &bases[index..])?;
                break;
            }
        }
        let file = open_segment_file(&path, false).await?;
        let file_bytes = file.file_size().await.map_err(|e| log_error(&path, e))?;
        let mut segment = Segment::new(dir, base, file);
        let stop = segment::recover(
            &mut segment,
            file_bytes,
            config.index_interval_bytes,
            |info, base| {
                if info.producer_id >= 0 {
                    let last = base + info.last_offset_delta as i64;
                    let batch = ProducerBatch {
                        first_sequence: info.base_sequence,
                        last_sequence: last_sequence(info.base_sequence, info.last_offset_delta),
                        base_offset: base,
                        last_offset: last,
                    };
                    producers.record(info.producer_id, info.producer_epoch, batch);
                }
            },
        )
        .await?;
        let mut last_segment = !sealed;
        if let Some(stop) = stop {
            let zeros = segment::all_zero(&segment.file, &path, stop.position, file_bytes).await?;
            if sealed && !zeros {
                let reason = format!("{} (byte {} of {})", stop.reason, stop.position, file_bytes);
                if !config.repair {
                    return Err(LogError::Corrupt { path, reason });
                }
                tracing::warn!(path = %path.display(), %reason, "repair: truncating here and deleting later segments");
                delete_segments(dir, &bases[index + 1..])?;
                last_segment = true;
            } else if !sealed {
                tracing::info!(path = %path.display(), reason = %stop.reason, position = stop.position, "truncating torn tail");
            }
        }
        if file_bytes != segment.size_bytes {
            segment
                .file
                .truncate(segment.size_bytes)
                .await
                .map_err(|e| log_error(&path, e))?;
        }
        segment.allocated_bytes = align_up(segment.size_bytes);
        if !last_segment {
            segment.save_indexes()?;
        }
        expected_base = Some(segment.next_offset);
        segments.insert(base, segment);
        if last_segment {
            break;
        }
        index += 1;
    }
    if segments.is_empty() {
        let file =
            open_segment_file(&dir.join(format!("{}{LOG_SUFFIX}", file_stem(0))), true).await?;
        sync_dir(dir)?;
        segments.insert(0, Segment::new(dir, 0, file));
    }
    let (active_base, active_size, active_next, file, path) = {
        let active = segments.values().next_back().expect("inserted above");
        (
            active.base_offset,
            active.size_bytes,
            active.next_offset,
            active.file.clone(),
            active.path.clone(),
        )
    };
    file.fdatasync().await.map_err(|e| log_error(&path, e))?;
    let tail_start = align_down(active_size);
    let tail_block = if tail_start < active_size {
        let read = file
            .read_at_aligned(tail_start, crate::limits::BLOCK_BYTES)
            .await
            .map_err(|e| log_error(&path, e))?;
        let len = (active_size - tail_start) as usize;
        if read.len() < len {
            let source = std::io::Error::other("short read of the last block");
            return Err(LogError::Io { path, source });
        }
        read[..len].to_vec()
    } else {
        Vec::new()
    };
    let start_offset = *segments.keys().next().expect("inserted above");
    let interval = matches!(config.durability, Durability::Interval { .. });
    let inner = Rc::new(RefCell::new(Inner {
        dir: dir.into(),
        config,
        segments,
        pending: VecDeque::new(),
        pending_bytes: 0,
        planned_segment_bytes: active_size,
        planned_segment_base: active_base,
        planned_segment_opened_ms: now_ms(),
        tail_block,
        next_offset: active_next,
        high_watermark: active_next,
        durable_offset: active_next,
        start_offset,
        cache: VecDeque::new(),
        cache_bytes: 0,
        producers,
        failure: None,
        seal: None,
        seal_error: None,
        writing: false,
        closing: false,
        closed: false,
        sync_timer_running: interval,
        read_aheads: VecDeque::new(),
        writer_waker: None,
        waiters: Vec::new(),
    }));
    glommio::spawn_local(run_writer(Rc::downgrade(&inner))).detach();
    if interval {
        glommio::spawn_local(run_sync_timer(Rc::downgrade(&inner))).detach();
    }
    Ok(inner)
}

fn delete_segments(dir: &Path, bases: &[i64]) -> Result<(), LogError> {
    for base in bases {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let path = dir.join(format!("{}{suffix}", file_stem(*base)));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(std_error(&path, e)),
            }
        }
    }
    Ok(())
}

pub(crate) fn set_config(log: &Rc<RefCell<Inner>>, config: LogConfig) {
    let mut inner = log.borrow_mut();
    inner.config = clamp_config(config);
    if matches!(inner.config.durability, Durability::Interval { .. })
        && !inner.sync_timer_running
        && !inner.closed
    {
        inner.sync_timer_running = true;
        glommio::spawn_local(run_sync_timer(Rc::downgrade(log))).detach();
    }
    inner.evict_cache();
}

pub(crate) fn append(log: &Rc<RefCell<Inner>>, mut batch: BytesMut) -> Result<Appended, LogError> {
    let mut inner = log.borrow_mut();
    if inner.closing || inner.closed {
        return Err(LogError::Closed);
    }
    if let Some(failure) = &inner.failure {
        return Err(failure.to_error());
    }
    let max = inner.config.max_message_bytes;
    if batch.len() > max as usize || batch.len() > BATCH_BYTES_MAX {
        return Err(LogError::BatchTooLarge {
            size: batch.len(),
            max,
        });
    }
    let info = batch::validate(&batch)?;
    let idempotent = info.producer_id >= 0;
    let last_sequence = last_sequence(info.base_sequence, info.last_offset_delta);
    if idempotent {
        match inner.producers.check(
            info.producer_id,
            info.producer_epoch,
            info.base_sequence,
            last_sequence,
        ) {
            ProducerCheck::Append => {}
            ProducerCheck::Duplicate(original) => {
                return Ok(Appended {
                    base_offset: original.base_offset,
                    last_offset: original.last_offset,
                    duplicate: true,
                    log_start_offset: inner.start_offset,
                });
            }
            ProducerCheck::OutOfOrder { expected } => {
                return Err(LogError::OutOfOrderSequence {
                    producer_id: info.producer_id,
                    expected,
                    got: info.base_sequence,
                });
            }
            ProducerCheck::Fenced { current } => {
                return Err(LogError::InvalidProducerEpoch {
                    producer_id: info.producer_id,
                    epoch: info.producer_epoch,
                    current,
                });
            }
        }
    }
    let base = inner.next_offset;
    let last = base + info.last_offset_delta as i64;
    let now = now_ms();
    let size = batch.len() as u64;
    if inner.planned_segment_bytes > 0 {
        let full = inner.planned_segment_bytes + size > inner.config.segment_bytes;
        let old = now - inner.planned_segment_opened_ms >= inner.config.segment_ms as i64;
        let far = last - inner.planned_segment_base > i32::MAX as i64;
        if full || old || far {
            inner.pending.push_back(Pending::Roll);
            inner.planned_segment_bytes = 0;
            inner.planned_segment_base = base;
        }
    }
    if inner.planned_segment_bytes == 0 {
        inner.planned_segment_opened_ms = now;
    }
    batch::set_base_offset(&mut batch, base);
    if idempotent {
        let record = ProducerBatch {
            first_sequence: info.base_sequence,
            last_sequence,
            base_offset: base,
            last_offset: last,
        };
        inner
            .producers
            .record(info.producer_id, info.producer_epoch, record);
    }
    inner.planned_segment_bytes += size;
    inner.pending_bytes += batch.len();
    inner.next_offset = last + 1;
    inner.pending.push_back(Pending::Batch(PendingBatch {
        base,
        last,
        max_timestamp: info.max_timestamp,
        bytes: batch.freeze(),
    }));
    inner.wake_writer();
    Ok(Appended {
        base_offset: base,
        last_offset: last,
        duplicate: false,
        log_start_offset: inner.start_offset,
    })
}

/// Waits until `done` holds; fails with the write failure or `Closed` while offsets are missing.
fn wait_until(
    log: &Rc<RefCell<Inner>>,
    offset: i64,
    durable: bool,
) -> impl Future<Output = Result<(), LogError>> + '_ {
    futures_lite::future::poll_fn(move |cx| {
        let mut inner = log.borrow_mut();
        let reached = if durable && inner.config.durability == Durability::Always {
            inner.durable_offset > offset
        } else {
            inner.high_watermark > offset
        };
        if reached {
            return Poll::Ready(Ok(()));
        }
        if let Some(failure) = &inner.failure {
            return Poll::Ready(Err(failure.to_error()));
        }
        if inner.closed {
            return Poll::Ready(Err(LogError::Closed));
        }
        if offset >= inner.next_offset {
            // Never assigned: waiting could hang forever, so it is an error, not a wait.
            return Poll::Ready(Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.start_offset,
                log_end_offset: inner.next_offset,
            }));
        }
        inner.register_waiter(cx.waker());
        Poll::Pending
    })
}

pub(crate) async fn wait_written(log: &Rc<RefCell<Inner>>, offset: i64) -> Result<(), LogError> {
    wait_until(log, offset, false).await
}

pub(crate) async fn wait_durable(log: &Rc<RefCell<Inner>>, offset: i64) -> Result<(), LogError> {
    wait_until(log, offset, true).await
}

pub(crate) fn offsets(log: &Rc<RefCell<Inner>>) -> (i64, i64, i64) {
    let inner = log.borrow();
    (inner.start_offset, inner.high_watermark, inner.next_offset)
}

pub(crate) fn dir(log: &Rc<RefCell<Inner>>) -> PathBuf {
    log.borrow().dir.clone()
}

pub(crate) fn config(log: &Rc<RefCell<Inner>>) -> LogConfig {
    log.borrow().config.clone()
}

pub(crate) async fn read(
    log: &Rc<RefCell<Inner>>,
    offset: i64,
    max_bytes: usize,
) -> Result<ReadBatches, LogError> {
    let (file, path, segment_base, from, to, window, high_watermark, log_start_offset, ahead) = {
        let mut inner = log.borrow_mut();
        if inner.closed {
            return Err(LogError::Closed);
        }
        let (start, hwm) = (inner.start_offset, inner.high_watermark);
        if offset < start || offset > inner.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: start,
                log_end_offset: inner.next_offset,
            });
        }
        let empty = ReadBatches {
            chunks: Vec::new(),
            high_watermark: hwm,
            log_start_offset: start,
            total_bytes: 0,
        };
        if offset >= hwm {
            return Ok(empty);
        }
        if inner.cache.front().is_some_and(|c| c.base <= offset) {
            let first = inner.cache.partition_point(|c| c.last < offset);
            let mut chunks = Vec::new();
            let mut total = 0;
            for cached in inner.cache.iter().skip(first) {
                if total > 0 && total + cached.bytes.len() > max_bytes {
                    break;
                }
                total += cached.bytes.len();
                chunks.push(Chunk::Memory(cached.bytes.clone()));
            }
            return Ok(ReadBatches {
                chunks,
                high_watermark: hwm,
                log_start_offset: start,
                total_bytes: total,
            });
        }
        let Some(segment) = inner
            .segments
            .range(..=offset)
            .next_back()
            .map(|(_, s)| s)
            .filter(|s| offset < s.next_offset)
        else {
            return Ok(empty);
        };
        let relative = (offset - segment.base_offset) as u32;
        let mut from = segment.index.position_for(relative) as u64;
        let window = inner.config.index_interval_bytes as usize
            + max_bytes.min(WRITE_BYTES_MAX * 8)
            + 2 * crate::limits::BLOCK_BYTES;
        let (file, path, segment_base, to) = (
            segment.file.clone(),
            segment.path.clone(),
            segment.base_offset,
            segment.size_bytes,
        );
        let ahead = inner
            .read_aheads
            .iter()
            .position(|a| a.offset == offset && a.segment_base == segment_base)
            .and_then(|at| inner.read_aheads.remove(at));
        if let Some(ahead) = &ahead {
            // The exact position of the batch, known from the read that came before.
            from = ahead.position;
        }
        (
            file,
            path,
            segment_base,
            from,
            to,
            window,
            hwm,
            start,
            ahead,
        )
    };
    let prefetched = match ahead {
        Some(ahead) => ahead.read.await.flatten().map(|read| (ahead.start, read)),
        None => None,
    };
    let read = segment::read_batches(
        &file, &path, from, to, offset, max_bytes, window, prefetched,
    )
    .await?;
    let (chunks, total_bytes) = match read {
        Some((read, end, next_offset)) => {
            start_read_ahead(log, segment_base, end, next_offset, window);
            let len = read.len();
            (vec![Chunk::Disk(read)], len)
        }
        None => (Vec::new(), 0),
    };
    Ok(ReadBatches {
        chunks,
        high_watermark,
        log_start_offset,
        total_bytes,
    })
}

/// After a disk read that ended at byte `end` of the segment at `segment_base`, reads the next
/// window (`window_bytes`, as the fetch did) in the background, from the same segment or the start
/// of the next one, unless that data is in the tail cache or not written yet.
fn start_read_ahead(
    log: &Rc<RefCell<Inner>>,
    segment_base: i64,
    end: u64,
    next_offset: i64,
    window_bytes: usize,
) {
    let mut inner = log.borrow_mut();
    if inner.closed
        || next_offset >= inner.high_watermark
        || inner.cache.front().is_some_and(|c| c.base <= next_offset)
        || inner.read_aheads.iter().any(|a| a.offset == next_offset)
    {
        return;
    }
    let target = match inner.segments.get(&segment_base) {
        Some(segment) if end < segment.size_bytes => Some((segment, end)),
        Some(_) => inner
            .segments
            .range(segment_base + 1..)
            .next()
            .map(|(_, s)| s)
            .filter(|s| s.base_offset == next_offset && s.size_bytes > 0)
            .map(|s| (s, 0)),
        None => None,
    };
    let Some((segment, position)) = target else {
        return;
    };
    let start = align_down(position);
    let data_end = (position + window_bytes as u64).min(segment.size_bytes);
    let len = (align_up(data_end) - start) as usize;
    let file = segment.file.clone();
    let base = segment.base_offset;
    let read = glommio::spawn_local(async move {
        let read = file.read_at_aligned(start, len).await.ok()?;
        // Cut at the data end: the bytes after it may be rewritten (partial last block).
        let valid = read.len().min((data_end - start) as usize);
        ReadResult::slice(&read, 0, valid)
    })
    .detach();
    if inner.read_aheads.len() >= READ_AHEADS_MAX {
        inner.read_aheads.pop_front();
    }
    inner.read_aheads.push_back(ReadAhead {
        segment_base: base,
        offset: next_offset,
        position,
        start,
        read,
    });
}

pub(crate) async fn wait_for_data(log: &Rc<RefCell<Inner>>, offset: i64) {
    futures_lite::future::poll_fn(|cx| {
        let mut inner = log.borrow_mut();
        if inner.high_watermark > offset || inner.closed {
            Poll::Ready(())
        } else {
            inner.register_waiter(cx.waker());
            Poll::Pending
        }
    })
    .await
}

pub(crate) async fn offset_for_timestamp(
    log: &Rc<RefCell<Inner>>,
    timestamp_ms: i64,
) -> Result<Option<(i64, i64)>, LogError> {
    let (file, path, from, to) = {
        let inner = log.borrow();
        if inner.closed {
            return Err(LogError::Closed);
        }
        let Some(segment) = inner
            .segments
            .values()
            .find(|s| s.max_timestamp >= timestamp_ms)
        else {
            return Ok(None);
        };
        let relative = segment.index.scan_start_for(timestamp_ms);
        (
            segment.file.clone(),
            segment.path.clone(),
            segment.index.position_for(relative) as u64,
            segment.size_bytes,
        )
    };
    segment::find_timestamp(&file, &path, from, to, timestamp_ms).await
}

pub(crate) async fn enforce_retention(log: &Rc<RefCell<Inner>>) -> Result<(), LogError> {
    let victims: Vec<Segment> = {
        let mut inner = log.borrow_mut();
        if inner.closed {
            return Err(LogError::Closed);
        }
        let now = now_ms();
        let (retention_bytes, retention_ms) =
            (inner.config.retention_bytes, inner.config.retention_ms);
        let mut total: u64 = inner.segments.values().map(|s| s.size_bytes).sum();
        let mut bases = Vec::new();
        // Oldest first, never the active segment, stop at the first one that must stay.
        for segment in inner.segments.values().take(inner.segments.len() - 1) {
            let over_size =
                retention_bytes >= 0 && total - segment.size_bytes >= retention_bytes as u64;
            let too_old = retention_ms >= 0 && segment.max_timestamp < now - retention_ms;
            if !(over_size || too_old) {
                break;
            }
            total -= segment.size_bytes;
            bases.push(segment.base_offset);
        }
        let victims: Vec<Segment> = bases
            .iter()
            .filter_map(|b| inner.segments.remove(b))
            .collect();
        if let Some(first) = inner.segments.keys().next() {
            inner.start_offset = *first;
        }
        let start_offset = inner.start_offset;
        inner.read_aheads.retain(|a| a.segment_base >= start_offset);
        inner.evict_cache();
        victims
    };
    // The segments are gone for readers already; unlinking happens off the append path (reads in
    // flight keep their file open).
    for segment in victims {
        segment
            .file
            .remove()
            .await
            .map_err(|e| log_error(&segment.path, e))?;
        for path in [segment.index_path(), segment.time_index_path()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(std_error(&path, e)),
            }
        }
        glommio::yield_if_needed().await;
    }
    Ok(())
}

pub(crate) async fn close(log: &Rc<RefCell<Inner>>) -> Result<(), LogError> {
    {
        let mut inner = log.borrow_mut();
        if inner.closed {
            return Ok(());
        }
        inner.closing = true;
        inner.wake_writer();
    }
    // Drain: everything appended gets written (or the write keeps failing).
    let drained = futures_lite::future::poll_fn(|cx| {
        let mut inner = log.borrow_mut();
        if inner.pending.is_empty() && !inner.writing && inner.seal.is_none() {
            return Poll::Ready(Ok(()));
        }
        if let Some(failure) = &inner.failure {
            return Poll::Ready(Err(failure.to_error()));
        }
        inner.register_waiter(cx.waker());
        Poll::Pending
    })
    .await;
    let (file, path, size) = {
        let inner = log.borrow();
        let active = inner.active();
        (active.file.clone(), active.path.clone(), active.size_bytes)
    };
    let finish = async {
        drained?;
        if let Some(failure) = log.borrow_mut().seal_error.take() {
            return Err(failure.to_error());
        }
        file.fdatasync().await.map_err(|e| log_error(&path, e))?;
        file.truncate(size).await.map_err(|e| log_error(&path, e))?;
        log.borrow().active().save_indexes()
    }
    .await;
    let segments = {
        let mut inner = log.borrow_mut();
        inner.closed = true;
        if finish.is_ok() {
            inner.durable_offset = inner.high_watermark;
        }
        inner.pending.clear();
        inner.pending_bytes = 0;
        inner.cache.clear();
        inner.cache_bytes = 0;
        inner.read_aheads.clear();
        inner.wake_writer();
        inner.wake_all();
        std::mem::take(&mut inner.segments)
    };
    drop(file);
    for (_, segment) in segments {
        if let Ok(file) = Rc::try_unwrap(segment.file) {
            let _ = file.close().await;
        }
    }
    finish
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_steps_double_up_to_32_mib() {
        assert_eq!(preallocation_end(4096), 2 << 20);
        assert_eq!(preallocation_end((1 << 20) + 1), 4 << 20);
        assert_eq!(preallocation_end(3 << 20), 8 << 20);
        assert_eq!(preallocation_end(100 << 20), 160 << 20);
        for end in [1u64, 4096, 5 << 20, 1 << 30] {
            let reserved = preallocation_end(end);
            assert!(reserved > end && reserved - end <= 2 * PREALLOCATE_STEP_BYTES);
        }
    }
}
