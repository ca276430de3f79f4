//! Open and recovery: finds the segments, scans each from its start (CRC, offsets), truncates a
//! torn tail, refuses (or with `repair` cuts at) corruption in sealed data, and starts the writer.
//!
//! Shard: the log's owner; runs before the log is shared, so nothing else sees the state yet.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::rc::Rc;

use super::roll::sync_dir;
use super::sync::run_sync_timer;
use super::writer::run_writer;
use super::{clamp_config, now_ms, Inner};
use crate::io::{align_down, align_up, log_error, open_segment_file, std_error};
use crate::producer::{last_sequence, ProducerBatch, ProducerTable};
use crate::segment::{
    self, file_stem, parse_stem, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::{Durability, LogConfig, LogError};

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
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

pub(super) fn delete_segments(dir: &Path, bases: &[i64]) -> Result<(), LogError> {
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
