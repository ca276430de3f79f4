//! Progress checkpoints of the active segment: after `checkpoint_interval_bytes` written to it
//! (or `checkpoint_interval_ms` with anything written), the active segment is fdatasynced, its
//! indexes saved and the recovery checkpoint rewritten to cover it up to its written end, so that
//! the open after a crash scans only what was written since (a seal checkpoints everything before
//! the new segment, a clean close everything).
//!
//! Shard: the log's owner; started from the writer after a completed write, the blocking
//! std::fs parts on the executor's blocking pool. At most one runs per log, never beside a seal
//! (a roll waits for it, as it waits for a seal, and close drains it): both rewrite index files
//! and the checkpoint, and an older snapshot written last would undo the newer one.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use super::sync::note_durable;
use super::{checkpoint, now_ms, Inner};
use crate::io::runtime::{blocking, spawn_detached};
use crate::segment;
use crate::{LogError, Offset};

/// What the last checkpoint covers of the active segment: its base, its bytes, and when.
#[derive(Clone, Copy, Debug)]
pub(super) struct Covered {
    pub base: Offset,
    pub bytes: u64,
    pub at_ms: i64,
}

/// Starts a progress checkpoint when one is due and none (and no seal) is running.
pub(super) fn start_if_due(log: &Rc<RefCell<Inner>>, inner: &mut Inner) {
    if inner.checkpointing || inner.seal.is_some() || inner.closing || inner.closed {
        return;
    }
    let active = inner.active();
    let covered = inner.checkpointed;
    let since = match covered.base == active.base_offset {
        true => active.size_bytes.saturating_sub(covered.bytes),
        false => active.size_bytes,
    };
    let config = &inner.config;
    let due = since >= config.checkpoint_interval_bytes
        || (since > 0 && now_ms() - covered.at_ms >= config.checkpoint_interval_ms as i64);
    if due {
        inner.checkpointing = true;
        spawn_detached(run(Rc::downgrade(log)));
    }
}

async fn run(weak: Weak<RefCell<Inner>>) {
    // glommio may run a task spawned from a task right away (`Task::run_right_away`), inside the
    // writer's poll that still holds the log borrowed.
    futures_lite::future::yield_now().await;
    let result = checkpoint_active(&weak).await;
    let Some(log) = weak.upgrade() else { return };
    let mut inner = log.borrow_mut();
    inner.checkpointing = false;
    match result {
        Ok(Some(covered)) => {
            inner.checkpointed = covered;
            // Writes that completed while this one ran started none: without a look now, a log
            // that then went quiet would stay covered only up to this snapshot.
            start_if_due(&log, &mut inner);
        }
        Ok(None) => {}
        // Nothing is lost: the next open scans from the previous checkpoint.
        Err(error) => {
            tracing::warn!(dir = %inner.dir.display(), %error, "progress checkpoint failed")
        }
    }
    inner.wake_all();
}

/// Syncs the active segment up to its written end, then saves its indexes and the checkpoint
/// as they were at that end (a snapshot: the writer goes on meanwhile).
async fn checkpoint_active(weak: &Weak<RefCell<Inner>>) -> Result<Option<Covered>, LogError> {
    let (file, end, durable, indexes, bytes, dir, covered) = {
        let Some(log) = weak.upgrade() else {
            return Ok(None);
        };
        let inner = log.borrow();
        if inner.closing || inner.closed {
            return Ok(None);
        }
        let active = inner.active();
        let end = active.next_offset;
        let covered = Covered {
            base: active.base_offset,
            bytes: active.size_bytes,
            at_ms: now_ms(),
        };
        let snapshot = checkpoint::encode(&checkpoint::of(&inner, active.base_offset, end));
        let durable = inner.durable_offset >= end;
        let indexes = active.index_files();
        (
            active.file.clone(),
            end,
            durable,
            indexes,
            snapshot,
            inner.dir.clone(),
            covered,
        )
    };
    if !durable {
        file.fdatasync().await?;
        if let Some(log) = weak.upgrade() {
            let mut inner = log.borrow_mut();
            note_durable(&mut inner, end);
            inner.wake_all();
        }
    }
    blocking(move || {
        segment::write_index_files(&indexes)?;
        checkpoint::store(&dir, &bytes)
    })
    .await?;
    Ok(Some(covered))
}
