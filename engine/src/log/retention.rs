//! Retention: drops whole segments past `retention.bytes` / `retention.ms` (never the active one)
//! from the log at once, then unlinks their files off the append path.
//!
//! Shard: the log's owner; the state is borrowed only to pick and detach the victims.

use std::cell::RefCell;
use std::rc::Rc;

use super::{now_ms, Inner};
use crate::io::runtime::yield_if_needed;
use crate::io::std_error;
use crate::segment::Segment;
use crate::LogError;

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
        segment.file.remove().await?;
        for path in [segment.index_path(), segment.time_index_path()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(std_error(&path, e)),
            }
        }
        yield_if_needed().await;
    }
    Ok(())
}
