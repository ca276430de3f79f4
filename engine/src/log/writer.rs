//! The per-log writer task: a state machine over the writes in flight (at most
//! `WRITES_IN_FLIGHT_MAX`, in file order), the `Always` fdatasync, rolls and the retry after a
//! failure. Completed writes are applied in file order (`apply_written`): batches become visible,
//! move to the tail cache, and waiters wake.
//!
//! Shard: the log's owner; one writer task per log, holding only a `Weak` to the log so that a
//! dropped log ends it. The state is borrowed inside one poll, never across an await.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Weak;
use std::task::{Context, Poll};
use std::time::Duration;

use super::plan::{
    check_file_order, check_submission, current_start, next_span, plan_write, WriteExtent,
    WriteJob, WriteJobResult, WriteStart,
};
use super::progress;
use super::roll::run_roll;
use super::sync::note_durable;
use super::write::run_write;
use super::{CachedBatch, Inner, Pending, WriteFailure};
use crate::io::runtime::sleep;
use crate::io::{give_buffer, IoBuffer};
use crate::limits::{BLOCK_BYTES, WRITES_IN_FLIGHT_MAX, WRITE_RETRY_MS};
use crate::slots::SlotClaim;
use crate::{Durability, LogError, Offset};

/// Applies a completed write, every write before it having completed too: the data is on disk
/// up to `end`, so the queued batches ending there become visible and move to the tail cache.
/// Returns how many batches left the queue.
pub(super) fn apply_written(
    inner: &mut Inner,
    segment_base: Offset,
    end: u64,
    allocated: Option<u64>,
) -> usize {
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
        inner.high_watermark = b.last.next();
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
    inner.check_invariants();
    popped
}

pub(super) type WriteOutcome = (Result<(), LogError>, Option<IoBuffer>, WriteJobResult);

/// A write in flight.
pub(super) struct Flight {
    /// The bytes of the file it covers.
    pub(super) extent: WriteExtent,
    pub(super) path: PathBuf,
    /// Where the data on disk is contiguous to once this write and those before it completed.
    pub(super) end: u64,
    /// Ends on a block boundary: the next write overlaps nothing and may go out meanwhile.
    pub(super) trimmed: bool,
    pub(super) write: Pin<Box<dyn Future<Output = WriteOutcome>>>,
    pub(super) done: Option<(Result<(), LogError>, WriteJobResult)>,
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
pub(super) struct SyncFlight {
    pub(super) target: Offset,
    pub(super) path: PathBuf,
    pub(super) sync: Pin<Box<dyn Future<Output = Result<(), LogError>>>>,
}

/// What the writer task must do outside its poll loop.
pub(super) enum Step {
    Roll,
    Failed(LogError, PathBuf),
    Stop,
}

/// The per-log writer's state: writes in flight in file order (at most `WRITES_IN_FLIGHT_MAX`),
/// where the next one starts, and the `Always` fdatasync in flight.
pub(super) struct Writer {
    pub(super) flights: VecDeque<Flight>,
    pub(super) cursor: Option<WriteStart>,
    pub(super) sync: Option<SyncFlight>,
    /// The target of the last fdatasync issued (`Always`).
    pub(super) synced_target: Option<Offset>,
    /// This log's share of the shard's write slots: one per write in flight.
    pub(super) slots: SlotClaim,
    /// (segment base, contiguous end) of the last write applied: completions follow file order.
    pub(super) applied: Option<(Offset, u64)>,
}

impl Writer {
    /// One turn of the writer: applies what completed (the sync, then writes in file order),
    /// starts the `Always` sync and the next writes, and says when the task must roll, retry or
    /// stop. The steps own no branching on the log's lifecycle; this does.
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
            if let Err(step) = self.apply_sync(&mut inner, result) {
                return Poll::Ready(step);
            }
        }
        if let Err(step) = self.apply_completed(&mut inner) {
            return Poll::Ready(step);
        }
        progress::start_if_due(&log, &mut inner);
        if inner.config.durability == Durability::Always && self.sync.is_none() {
            self.start_sync(&mut inner, cx);
        }
        if let Some(step) = self.start_writes(&mut inner, cx) {
            return Poll::Ready(step);
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

    /// Applies the completed `Always` fdatasync; a failure becomes the step to retry.
    fn apply_sync(&mut self, inner: &mut Inner, result: Result<(), LogError>) -> Result<(), Step> {
        let sync = self.sync.take().expect("polled by the caller");
        match result {
            Ok(()) => {
                note_durable(inner, sync.target);
                inner.failure = None;
                inner.wake_all();
                Ok(())
            }
            Err(error) => {
                // Sync again after the retry pause: the target is not durable yet.
                self.synced_target = None;
                Err(Step::Failed(error, sync.path))
            }
        }
    }

    /// Applies the completed writes at the front, in file order: a later one may finish first
    /// and then waits for those before it.
    fn apply_completed(&mut self, inner: &mut Inner) -> Result<(), Step> {
        while self.flights.front().is_some_and(|f| f.done.is_some()) {
            let flight = self.flights.pop_front().expect("checked above");
            self.slots.release();
            let (result, allocated) = flight.done.expect("checked above");
            if let Err(error) = result {
                return Err(Step::Failed(error, flight.path));
            }
            let segment_base = flight.extent.segment_base;
            check_file_order(self.applied, (segment_base, flight.end));
            self.applied = Some((segment_base, flight.end));
            let popped = apply_written(inner, segment_base, flight.end, allocated.allocated);
            if let Some(cursor) = self.cursor.as_mut() {
                cursor.skip -= popped;
            }
            inner.failure = None;
            inner.wake_all();
        }
        Ok(())
    }

    /// Issues an fdatasync of the active segment (`Always`) when the high watermark moved past
    /// the last one's target.
    fn start_sync(&mut self, inner: &mut Inner, cx: &mut Context<'_>) {
        let synced = *self.synced_target.get_or_insert(inner.durable_offset);
        if inner.high_watermark <= synced {
            return;
        }
        let target = inner.high_watermark;
        let active = inner.active();
        let (file, path) = (active.file.clone(), active.path.clone());
        let mut sync = SyncFlight {
            target,
            path,
            sync: Box::pin(async move { file.fdatasync().await }),
        };
        // Polled once now so that it is submitted with this tick's writes.
        if let Poll::Ready(result) = sync.sync.as_mut().poll(cx) {
            sync.sync = Box::pin(std::future::ready(result));
            cx.waker().wake_by_ref();
        }
        self.synced_target = Some(target);
        self.sync = Some(sync);
    }

    /// Starts writes while fewer than `WRITES_IN_FLIGHT_MAX` are in flight and the last one is
    /// trimmed (so the next overlaps nothing). Returns `Roll` when a roll marker is at the front
    /// and nothing is in flight.
    fn start_writes(&mut self, inner: &mut Inner, cx: &mut Context<'_>) -> Option<Step> {
        while self.flights.len() < WRITES_IN_FLIGHT_MAX {
            if self.flights.is_empty() {
                if matches!(inner.pending.front(), Some(Pending::Roll)) {
                    if self.sync.is_some() {
                        break;
                    }
                    self.cursor = None;
                    inner.writing = true;
                    return Some(Step::Roll);
                }
            } else if !self.flights.back().is_some_and(|f| f.trimmed) {
                break;
            }
            let start = self.next_start(inner);
            if self.slots.waiting() {
                // The grant wakes this task; until then appends need not (see `poll`).
                self.cursor = Some(start);
                break;
            }
            // Behind a write or an `Always` sync in flight, only a full write goes out: smaller
            // ones cost the device more than they save, and batches queued during a sync make
            // the next write larger (1,000 partitions, `always`: 21-23% of raw with a write per
            // sync, 12-16% with small writes beside the syncs, 28-31% like this).
            let full_only = !self.flights.is_empty() || self.sync.is_some();
            let span = next_span(inner, &start, full_only);
            let Some(span) = span.filter(|_| self.slots.try_take(cx.waker())) else {
                // Nothing to write yet, or waiting for a slot (batches keep queueing meanwhile).
                self.cursor = Some(start);
                break;
            };
            let (job, after) = plan_write(inner, &start, span);
            self.cursor = Some(after);
            self.issue(job, cx);
        }
        None
    }

    /// Where the next write starts: after the writes planned ahead, or after the written data.
    fn next_start(&mut self, inner: &Inner) -> WriteStart {
        let mut start = match self.cursor.take() {
            Some(start) => start,
            None => current_start(inner),
        };
        if self.flights.is_empty() {
            // Every planned pre-allocation has run: what it reserved may be less than planned
            // (a near-full device).
            start.allocated_bytes = inner.active().allocated_bytes;
        }
        start
    }

    /// Puts a planned write in flight, behind those already in flight.
    fn issue(&mut self, job: WriteJob, cx: &mut Context<'_>) {
        let extent = job.extent();
        check_submission(&extent, self.flights.iter().map(|f| &f.extent));
        let mut flight = Flight {
            extent,
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
pub(super) async fn run_writer(weak: Weak<RefCell<Inner>>) {
    let mut writer = Writer {
        flights: VecDeque::new(),
        cursor: None,
        sync: None,
        synced_target: None,
        slots: SlotClaim::default(),
        applied: None,
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
        sleep(Duration::from_millis(WRITE_RETRY_MS)).await;
    }
}
