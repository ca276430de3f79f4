//! Durability bookkeeping: how the durable offset advances after an fdatasync (held back while a
//! new segment's directory entry is not synced), and the `Durability::Interval` sync timer.
//!
//! Shard: the log's owner; the timer task holds a `Weak` to the log and ends with it.

use std::cell::RefCell;
use std::rc::Weak;
use std::time::Duration;

use super::Inner;
use crate::io::runtime::sleep;
use crate::{Durability, Offset};

/// Marks offsets below `target` durable (their segment was fdatasynced), except those of a segment
/// whose directory entry is not yet synced: those wait for the seal.
pub(super) fn note_durable(inner: &mut Inner, target: Offset) {
    let allowed = match &mut inner.seal {
        // The sealed segment's own sync (in `seal_segment`) covers the offsets before `new_base`.
        Some(seal) if target > seal.new_base => {
            seal.synced_target = seal.synced_target.max(target);
            inner.durable_offset
        }
        _ => target,
    };
    inner.durable_offset = inner.durable_offset.max(allowed);
    inner.check_invariants();
}

/// Background fdatasync for `Durability::Interval`: at most one sync per interval, only when
/// something was written since the last one.
pub(super) async fn run_sync_timer(weak: Weak<RefCell<Inner>>) {
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
        sleep(Duration::from_millis(interval_ms)).await;
        let (file, target) = {
            let Some(log) = weak.upgrade() else { return };
            let inner = log.borrow();
            if inner.closed || inner.high_watermark <= inner.durable_offset {
                continue;
            }
            let active = inner.active();
            // Every segment before the active one was synced when it was sealed.
            (active.file.clone(), inner.high_watermark)
        };
        match file.fdatasync().await {
            Ok(()) => {
                let Some(log) = weak.upgrade() else { return };
                let mut inner = log.borrow_mut();
                note_durable(&mut inner, target);
                inner.wake_all();
            }
            Err(error) => tracing::warn!(%error, "interval fdatasync failed"),
        }
    }
}
