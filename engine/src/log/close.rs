//! Close: drains the queue, syncs and trims the active segment, saves its indexes and the
//! recovery checkpoint, and closes the files; waiters and the writer see `closed` and stop.
//!
//! Shard: the log's owner; the state is borrowed between awaits only.

use std::cell::RefCell;
use std::rc::Rc;
use std::task::Poll;

use super::Inner;
use crate::LogError;

/// Nothing queued, being written, sealed or checkpointed: the files can be closed.
fn settled(inner: &Inner) -> bool {
    inner.pending.is_empty() && !inner.writing && inner.seal.is_none() && !inner.checkpointing
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
        if settled(&inner) {
            return Poll::Ready(Ok(()));
        }
        if let Some(failure) = &inner.failure {
            return Poll::Ready(Err(failure.to_error()));
        }
        inner.register_waiter(cx.waker());
        Poll::Pending
    })
    .await;
    let (file, size, untouched) = {
        let inner = log.borrow();
        let active = inner.active();
        let untouched = inner.opened_at == (active.base_offset, inner.next_offset);
        (active.file.clone(), active.size_bytes, untouched)
    };
    let finish = async {
        drained?;
        if let Some(failure) = log.borrow_mut().seal_error.take() {
            return Err(failure.to_error());
        }
        // An idle log (a queue nobody used since the start) is as recovery left it, trimmed to
        // its data: 100,000 of them would otherwise take minutes of syncs to stop.
        if untouched {
            return Ok(());
        }
        file.fdatasync().await?;
        file.truncate(size).await?;
        let inner = log.borrow();
        inner.active().save_indexes()?;
        // Everything is written and synced: the next open scans nothing.
        let through = inner.active().base_offset;
        let checkpoint = super::checkpoint::of(&inner, through, inner.next_offset);
        super::checkpoint::store(&inner.dir, &super::checkpoint::encode(&checkpoint))
    }
    .await;
    let segments = {
        let mut inner = log.borrow_mut();
        inner.closed = true;
        if finish.is_ok() {
            inner.durable_offset = inner.high_watermark;
        }
        inner.check_invariants();
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
