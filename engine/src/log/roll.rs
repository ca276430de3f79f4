//! Roll and seal: the next segment becomes active at once, and the old one is sealed in the
//! background (fdatasync, trim, indexes, directory fsync, recovery checkpoint), so that appends
//! never wait for a seal.
//!
//! Shard: the log's owner; the blocking std::fs parts run on the executor's blocking pool. At most one
//! seal runs at a time.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::task::Poll;
use std::time::Duration;

use super::progress::Covered;
use super::{checkpoint, Inner, Pending, WriteFailure};
use crate::io::runtime::{blocking, sleep, spawn_detached};
use crate::io::{std_error, SegmentFile};
use crate::limits::WRITE_RETRY_MS;
use crate::segment::{self, file_stem, Segment, LOG_SUFFIX};
use crate::{LogError, Offset};

/// Rolls: opens the next segment and makes it the active one at once, then seals the old one in
/// the background (`seal_segment`), so that appends never wait for the seal. Measured before this
/// (weir-bench kafka-2014, 1 GiB segments): the inline fdatasync + truncate + index writes + directory
/// fsync of a 1 GiB segment stopped acknowledgements for 0.5-0.85 s at every roll.
/// At most one seal runs at a time: a roll waits for the previous seal (only tiny segments get there).
pub(super) async fn run_roll(log: &Rc<RefCell<Inner>>) -> Result<(), LogError> {
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
    let new_file = SegmentFile::open(&new_path, true).await?;
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
    spawn_detached(seal_segment(Rc::downgrade(log), old_base, new_base, dir));
    Ok(())
}

/// A seal in flight: the segment starting at `new_base` is active but its directory entry is not
/// synced yet. `synced_target` is what `durable_offset` becomes once it is.
pub(super) struct Seal {
    pub(super) new_base: Offset,
    pub(super) synced_target: Offset,
}

/// Waits until no seal (and no progress checkpoint: both rewrite the checkpoint) is in flight.
pub(super) async fn wait_sealed(log: &Rc<RefCell<Inner>>) {
    futures_lite::future::poll_fn(|cx| {
        let mut inner = log.borrow_mut();
        if inner.seal.is_none() && !inner.checkpointing {
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
/// blocking std::fs parts run on the executor's blocking thread pool, never on the reactor. Retries
/// every `WRITE_RETRY_MS` on failure; gives up (recording the error for `close`) once closing.
pub(super) async fn seal_segment(
    weak: Weak<RefCell<Inner>>,
    old_base: Offset,
    new_base: Offset,
    dir: PathBuf,
) {
    loop {
        let result = seal_once(&weak, old_base, new_base, &dir).await;
        let finished = {
            let Some(log) = weak.upgrade() else { return };
            let mut inner = log.borrow_mut();
            match result {
                Ok(()) => {
                    if let Some(seal) = inner.seal.take() {
                        inner.durable_offset = inner.durable_offset.max(seal.synced_target);
                        inner.check_invariants();
                    }
                    // The seal's checkpoint covers everything before the new segment.
                    inner.checkpointed = Covered {
                        base: new_base,
                        bytes: 0,
                        at_ms: super::now_ms(),
                    };
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
        sleep(Duration::from_millis(WRITE_RETRY_MS)).await;
    }
}

pub(super) async fn seal_once(
    weak: &Weak<RefCell<Inner>>,
    old_base: Offset,
    new_base: Offset,
    dir: &Path,
) -> Result<(), LogError> {
    let sealed = {
        let Some(log) = weak.upgrade() else {
            return Ok(());
        };
        let inner = log.borrow();
        // Retention may already have removed the old segment: then only the directory matters.
        inner
            .segments
            .get(&old_base)
            .map(|s| (s.file.clone(), s.size_bytes, s.index_files()))
    };
    if let Some((file, size, indexes)) = sealed {
        file.fdatasync().await?;
        if let Some(log) = weak.upgrade() {
            let mut inner = log.borrow_mut();
            inner.durable_offset = inner.durable_offset.max(new_base);
            inner.check_invariants();
        }
        file.truncate(size).await?;
        blocking(move || segment::write_index_files(&indexes)).await?;
    }
    let synced = dir.to_path_buf();
    blocking(move || sync_dir(&synced)).await?;
    // Every segment up to the sealed one is now durable and whole: checkpoint them, so that
    // after a crash only the segments from `new_base` on are scanned.
    let Some(log) = weak.upgrade() else {
        return Ok(());
    };
    let bytes = checkpoint::encode(&checkpoint::of(&log.borrow(), old_base, new_base));
    let dir = dir.to_path_buf();
    blocking(move || checkpoint::store(&dir, &bytes)).await
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| std_error(dir, e))
}
