//! The append path: validation, idempotent-producer checks, offset assignment and the roll
//! decision, all synchronous so that offsets follow call order; and the waits for an offset to be
//! written or durable.
//!
//! Shard: the log's owner. Concurrency: `append` borrows the log's state once and never awaits; the
//! waits register a waker and re-check on every wake-up.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;

use bytes::BytesMut;

use super::{now_ms, Inner, Pending, PendingBatch};
use crate::batch::{self, BatchInfo};
use crate::limits::BATCH_BYTES_MAX;
use crate::producer::{last_sequence, ProducerBatch, ProducerCheck};
use crate::{Appended, Durability, LogError, Offset};

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
        if let Some(duplicate) = check_producer(&inner, &info, last_sequence)? {
            return Ok(duplicate);
        }
    }
    let base = inner.next_offset;
    let last = base.plus(info.last_offset_delta as i64);
    plan_roll(&mut inner, base, last, batch.len() as u64, now_ms());
    batch::set_base_offset(&mut batch, base.get());
    if idempotent {
        let record = ProducerBatch {
            first_sequence: info.base_sequence,
            last_sequence,
            base_offset: base.get(),
            last_offset: last.get(),
        };
        inner
            .producers
            .record(info.producer_id, info.producer_epoch, record);
    }
    inner.planned_segment_bytes += batch.len() as u64;
    inner.pending_bytes += batch.len();
    inner.next_offset = last.next();
    inner.check_invariants();
    inner.pending.push_back(Pending::Batch(PendingBatch {
        base,
        last,
        max_timestamp: info.max_timestamp,
        bytes: batch.freeze(),
    }));
    inner.wake_writer();
    Ok(Appended {
        base_offset: base.get(),
        last_offset: last.get(),
        duplicate: false,
        log_start_offset: inner.start_offset.get(),
    })
}

/// The idempotent-producer check of a batch (see `producer.rs`): `Some` with the original
/// offsets for a resend of a remembered batch, an error for a gap or a fenced epoch.
fn check_producer(
    inner: &Inner,
    info: &BatchInfo,
    last_sequence: i32,
) -> Result<Option<Appended>, LogError> {
    match inner.producers.check(
        info.producer_id,
        info.producer_epoch,
        info.base_sequence,
        last_sequence,
    ) {
        ProducerCheck::Append => Ok(None),
        ProducerCheck::Duplicate(original) => Ok(Some(Appended {
            base_offset: original.base_offset,
            last_offset: original.last_offset,
            duplicate: true,
            log_start_offset: inner.start_offset.get(),
        })),
        ProducerCheck::OutOfOrder { expected } => Err(LogError::OutOfOrderSequence {
            producer_id: info.producer_id,
            expected,
            got: info.base_sequence,
        }),
        ProducerCheck::Fenced { current } => Err(LogError::InvalidProducerEpoch {
            producer_id: info.producer_id,
            epoch: info.producer_epoch,
            current,
        }),
    }
}

/// Queues a roll before the batch `base..=last` of `size` bytes when the planned segment is full,
/// too old, or its offsets would leave `i32` of its base; roll decisions happen at append so that
/// the writer only follows the queue.
fn plan_roll(inner: &mut Inner, base: Offset, last: Offset, size: u64, now: i64) {
    if inner.planned_segment_bytes > 0 {
        let full = inner.planned_segment_bytes + size > inner.config.segment_bytes;
        let old = now - inner.planned_segment_opened_ms >= inner.config.segment_ms as i64;
        let far = last.since(inner.planned_segment_base) > i32::MAX as i64;
        if full || old || far {
            inner.pending.push_back(Pending::Roll);
            inner.planned_segment_bytes = 0;
            inner.planned_segment_base = base;
        }
    }
    if inner.planned_segment_bytes == 0 {
        inner.planned_segment_opened_ms = now;
    }
}

/// Waits until `done` holds; fails with the write failure or `Closed` while offsets are missing.
pub(super) fn wait_until(
    log: &Rc<RefCell<Inner>>,
    offset: Offset,
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
                offset: offset.get(),
                log_start_offset: inner.start_offset.get(),
                log_end_offset: inner.next_offset.get(),
            }));
        }
        inner.register_waiter(cx.waker());
        Poll::Pending
    })
}

pub(crate) async fn wait_written(log: &Rc<RefCell<Inner>>, offset: i64) -> Result<(), LogError> {
    wait_until(log, Offset::new(offset), false).await
}

pub(crate) async fn wait_durable(log: &Rc<RefCell<Inner>>, offset: i64) -> Result<(), LogError> {
    wait_until(log, Offset::new(offset), true).await
}
