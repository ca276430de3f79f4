//! Dropping the oldest segments, for two policies over one path: retention (`retention.bytes` /
//! `retention.ms`) and an explicit log start offset (`delete_segments_below`, Kafka's
//! DeleteRecords at segment granularity; a consumed queue's acknowledged prefix). Either way whole
//! sealed segments go, oldest first, never the active one: they are detached from the log at
//! once (readers stop seeing them, the log start offset becomes the first remaining segment's
//! base, which is also what recovery computes on open), then their files are unlinked off the
//! append path.
//!
//! Shard: the log's owner; the state is borrowed only to pick and detach the victims.

use std::cell::RefCell;
use std::rc::Rc;

use super::{now_ms, Inner};
use crate::io::runtime::yield_if_needed;
use crate::io::std_error;
use crate::segment::Segment;
use crate::{LogConfig, LogError, Offset};

pub(crate) async fn enforce_retention(log: &Rc<RefCell<Inner>>) -> Result<(), LogError> {
    let now = now_ms();
    drop_oldest_segments(log, |config, segment, bytes_from_here| {
        let (retention_bytes, retention_ms) = (config.retention_bytes, config.retention_ms);
        let over_size =
            retention_bytes >= 0 && bytes_from_here - segment.size_bytes >= retention_bytes as u64;
        let too_old = retention_ms >= 0 && segment.max_timestamp < now - retention_ms;
        over_size || too_old
    })
    .await
}

/// Drops every sealed segment whose offsets are all below `below` (a segment holding `below` or
/// anything after it stays, and so does the active one). Answers the log start offset after it.
pub(crate) async fn delete_segments_below(
    log: &Rc<RefCell<Inner>>,
    below: Offset,
) -> Result<Offset, LogError> {
    drop_oldest_segments(log, |_, segment, _| segment.next_offset <= below).await?;
    Ok(log.borrow().start_offset)
}

/// Detaches the oldest sealed segments while `doomed(config, segment, bytes of it and every later
/// segment)` holds (stopping at the first that must stay), then unlinks their files.
async fn drop_oldest_segments(
    log: &Rc<RefCell<Inner>>,
    doomed: impl FnMut(&LogConfig, &Segment, u64) -> bool,
) -> Result<(), LogError> {
    let victims = detach_oldest(&mut log.borrow_mut(), doomed)?;
    // The segments are gone for readers already; unlinking happens off the append path (reads in
    // flight keep their file open). The indexes go first: a crash between the two leaves a log
    // file that the next open indexes again and the next pass deletes, never an orphan index.
    for segment in victims {
        for path in [segment.index_path(), segment.time_index_path()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(std_error(&path, e)),
            }
        }
        segment.file.remove().await?;
        yield_if_needed().await;
    }
    Ok(())
}

fn detach_oldest(
    inner: &mut Inner,
    mut doomed: impl FnMut(&LogConfig, &Segment, u64) -> bool,
) -> Result<Vec<Segment>, LogError> {
    if inner.closed {
        return Err(LogError::Closed);
    }
    let mut bytes_from_here: u64 = inner.segments.values().map(|s| s.size_bytes).sum();
    let mut bases = Vec::new();
    // Oldest first, never the active segment, stop at the first one that must stay.
    for segment in inner.segments.values().take(inner.segments.len() - 1) {
        if !doomed(&inner.config, segment, bytes_from_here) {
            break;
        }
        bytes_from_here -= segment.size_bytes;
        bases.push(segment.base_offset);
    }
    let victims: Vec<Segment> = bases
        .iter()
        .filter_map(|b| inner.segments.remove(b))
        .collect();
    if let Some(first) = inner.segments.keys().next() {
        assert!(
            *first >= inner.start_offset,
            "the log start offset only grows: {} -> {first}",
            inner.start_offset
        );
        inner.start_offset = *first;
    }
    let start_offset = inner.start_offset;
    inner.read_aheads.retain(|a| a.segment_base >= start_offset);
    inner.evict_cache();
    Ok(victims)
}
