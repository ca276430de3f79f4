//! Open and recovery: finds the segments, takes what the checkpoint (`checkpoint.rs`) covers as
//! known (sizes, offsets, indexes, producer state) and scans only the bytes past it (CRC,
//! offsets) — every byte of every segment when there is no usable checkpoint — truncates a torn
//! tail, refuses (or with `repair` cuts at) corruption in sealed data, writes a new checkpoint
//! when it changed, and starts the writer.
//!
//! Shard: the log's owner; runs before the log is shared, so nothing else sees the state yet.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::rc::Rc;

use super::checkpoint::{self, Checkpoint, CoveredSegment};
use super::progress::Covered;
use super::roll::sync_dir;
use super::sync::run_sync_timer;
use super::writer::run_writer;
use super::{clamp_config, now_ms, Inner};
use crate::batch::BatchInfo;
use crate::index::SegmentIndex;
use crate::io::runtime::spawn_detached;
use crate::io::{align_down, align_up, std_error, SegmentFile};
use crate::limits::BLOCK_BYTES;
use crate::producer::{last_sequence, ProducerBatch, ProducerTable};
use crate::segment::{
    self, file_stem, parse_stem, Segment, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX,
};
use crate::{Durability, LogConfig, LogError, Offset};

pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |e| std_error(path, e)
}

/// What recovery carries from segment to segment: the producer state (from the checkpoint, then
/// every scanned batch), the segments the checkpoint covers, and the bytes scanned so far.
#[derive(Default)]
struct Scan {
    producers: ProducerTable,
    covered: BTreeMap<Offset, (CoveredSegment, SegmentIndex)>,
    scanned_bytes: u64,
}

/// Opens (recovering) or creates the partition directory.
pub(crate) async fn open(dir: &Path, config: LogConfig) -> Result<Rc<RefCell<Inner>>, LogError> {
    let config = clamp_config(config);
    let bases = segment_bases(dir)?;
    let loaded = checkpoint::load(dir);
    let mut scan = Scan::default();
    if let Some((checkpoint, _)) = &loaded {
        if let Some(covered) = covered_segments(dir, &bases, checkpoint) {
            for (id, epoch, batches) in &checkpoint.producers {
                scan.producers.restore(*id, *epoch, batches);
            }
            scan.covered = covered;
        }
    }
    let mut segments = recover_segments(dir, &bases, &config, &mut scan).await?;
    if segments.is_empty() {
        let file = SegmentFile::open(
            &dir.join(format!("{}{LOG_SUFFIX}", file_stem(Offset::ZERO))),
            true,
        )
        .await?;
        sync_dir(dir)?;
        segments.insert(Offset::ZERO, Segment::new(dir, Offset::ZERO, file));
    }
    let active = segments.values().next_back().expect("inserted above");
    let tail_block = sync_and_read_tail(active).await?;
    let interval = matches!(config.durability, Durability::Interval { .. });
    let mut inner = new_inner(dir, config, segments, scan.producers, tail_block);
    inner.recovery_scanned_bytes = scan.scanned_bytes;
    inner.check_invariants();
    store_checkpoint(&inner, loaded.as_ref().map(|(_, bytes)| &bytes[..]))?;
    let inner = Rc::new(RefCell::new(inner));
    spawn_detached(run_writer(Rc::downgrade(&inner)));
    if interval {
        spawn_detached(run_sync_timer(Rc::downgrade(&inner)));
    }
    Ok(inner)
}

/// The segments a checkpoint covers, with their indexes read back; `None` (the whole log is
/// scanned) unless every covered segment still present is a file at least as long as covered,
/// with index files that check out, and the covered ones are a prefix of the files. Segments
/// covered but gone from the front were deleted by retention.
fn covered_segments(
    dir: &Path,
    bases: &[Offset],
    checkpoint: &Checkpoint,
) -> Option<BTreeMap<Offset, (CoveredSegment, SegmentIndex)>> {
    let first = *bases.first()?;
    let mut covered = BTreeMap::new();
    for (kept, entry) in checkpoint
        .segments
        .iter()
        .filter(|entry| entry.base >= first)
        .enumerate()
    {
        let reason = match covered_segment(dir, entry) {
            _ if bases.get(kept) != Some(&entry.base) => "its segment files differ".to_string(),
            Ok(index) => {
                covered.insert(entry.base, (*entry, index));
                continue;
            }
            Err(reason) => reason,
        };
        let segment = entry.base.get();
        tracing::warn!(dir = %dir.display(), segment, %reason, "checkpoint unusable: scanning the whole log");
        return None;
    }
    Some(covered)
}

/// The indexes of one covered segment, or why it does not match what the checkpoint says. An
/// empty segment needs no file system call: any file length covers 0 bytes and its indexes are
/// empty (100,000 idle partitions restarted 2.7 s slower with a stat and two reads each).
fn covered_segment(dir: &Path, entry: &CoveredSegment) -> Result<SegmentIndex, String> {
    if entry.size_bytes == 0 {
        return Ok(SegmentIndex::default());
    }
    let stem = file_stem(entry.base);
    let length = |suffix: &str| std::fs::metadata(dir.join(format!("{stem}{suffix}")));
    let file_bytes = length(LOG_SUFFIX).map_err(|e| e.to_string())?.len();
    if file_bytes < entry.size_bytes {
        return Err(format!(
            "segment of {file_bytes} bytes, covered {}",
            entry.size_bytes
        ));
    }
    let read = |suffix: &str| std::fs::read(dir.join(format!("{stem}{suffix}")));
    let (offsets, times) = match (read(INDEX_SUFFIX), read(TIME_INDEX_SUFFIX)) {
        (Ok(offsets), Ok(times)) => (offsets, times),
        _ => return Err("index files missing".to_string()),
    };
    SegmentIndex::decode(&offsets, &times, entry.size_bytes, entry.max_timestamp)
        .ok_or_else(|| "index files do not match".to_string())
}

/// Writes the checkpoint of the log just recovered, unless the one read holds exactly that, or
/// there is none and the log holds nothing (an empty log scans 0 bytes without one, and an open
/// that finds no file costs one failed `open` instead of a read).
/// Everything recovered is durable (`sync_and_read_tail` synced the active segment); the active
/// segment's indexes are saved first, since the checkpoint covers it up to its end.
fn store_checkpoint(inner: &Inner, loaded: Option<&[u8]>) -> Result<(), LogError> {
    let last = inner
        .segments
        .keys()
        .next_back()
        .copied()
        .unwrap_or(Offset::ZERO);
    let checkpoint = checkpoint::of(inner, last, inner.next_offset);
    if loaded.is_none() && checkpoint.is_empty_log() {
        return Ok(());
    }
    let bytes = checkpoint::encode(&checkpoint);
    if loaded == Some(&bytes[..]) {
        return Ok(());
    }
    inner.active().save_indexes()?;
    checkpoint::store(&inner.dir, &bytes)
}

/// The base offsets of the segment files in `dir` (created if missing), ascending.
fn segment_bases(dir: &Path) -> Result<Vec<Offset>, LogError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_stem) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Recovers the segments in order until the valid data ends: a gap between segments or (with
/// `repair`) corruption in a sealed one deletes the segments after it.
async fn recover_segments(
    dir: &Path,
    bases: &[Offset],
    config: &LogConfig,
    scan: &mut Scan,
) -> Result<BTreeMap<Offset, Segment>, LogError> {
    let mut segments = BTreeMap::new();
    let mut expected_base: Option<Offset> = None;
    for (index, &base) in bases.iter().enumerate() {
        if let Some(expected) = expected_base.filter(|expected| *expected != base) {
            let path = dir.join(format!("{}{LOG_SUFFIX}", file_stem(base)));
            let reason =
                format!("segment starts at offset {base} but the previous one ends at {expected}");
            if !config.repair {
                return Err(LogError::Corrupt { path, reason });
            }
            tracing::warn!(path = %path.display(), %reason, "repair: deleting this and later segments");
            delete_segments(dir, &bases[index..])?;
            break;
        }
        let later = &bases[index + 1..];
        let (segment, last_segment) = recover_segment(dir, base, later, config, scan).await?;
        expected_base = Some(segment.next_offset);
        segments.insert(base, segment);
        if last_segment {
            break;
        }
    }
    Ok(segments)
}

/// Recovers the segment at `base` (sealed when `later` segments follow): scans it past what the
/// checkpoint covers (from its start when not covered), truncates it at the end of its valid
/// data, and saves its indexes if it stays sealed. Returns the segment and whether it is the
/// last one kept (the active segment, or a repaired one).
async fn recover_segment(
    dir: &Path,
    base: Offset,
    later: &[Offset],
    config: &LogConfig,
    scan: &mut Scan,
) -> Result<(Segment, bool), LogError> {
    let sealed = !later.is_empty();
    let path = dir.join(format!("{}{LOG_SUFFIX}", file_stem(base)));
    let file = SegmentFile::open(&path, false).await?;
    let file_bytes = file.size().await?;
    let mut segment = Segment::new(dir, base, file);
    if let Some((covered, index)) = scan.covered.remove(&base) {
        segment.size_bytes = covered.size_bytes.min(file_bytes);
        segment.next_offset = covered.next_offset;
        segment.max_timestamp = covered.max_timestamp;
        segment.index = index;
    }
    let known_bytes = segment.size_bytes;
    scan.scanned_bytes += file_bytes - known_bytes;
    let interval_bytes = config.index_interval_bytes;
    let producers = &mut scan.producers;
    let stop = segment::recover(&mut segment, file_bytes, interval_bytes, |info, base| {
        note_producer(producers, info, base)
    })
    .await?;
    let mut last_segment = !sealed;
    if let Some(stop) = stop {
        let zeros = segment::all_zero(&segment.file, stop.position, file_bytes).await?;
        if sealed && !zeros {
            let reason = format!("{} (byte {} of {})", stop.reason, stop.position, file_bytes);
            if !config.repair {
                return Err(LogError::Corrupt { path, reason });
            }
            tracing::warn!(path = %path.display(), %reason, "repair: truncating here and deleting later segments");
            delete_segments(dir, later)?;
            last_segment = true;
        } else if !sealed {
            tracing::info!(path = %path.display(), reason = %stop.reason, position = stop.position, "truncating torn tail");
        }
    }
    if file_bytes != segment.size_bytes {
        segment.file.truncate(segment.size_bytes).await?;
    }
    segment.allocated_bytes = align_up(segment.size_bytes);
    // A sealed segment the checkpoint covered whole has the index files it was checked against.
    if !last_segment && (known_bytes == 0 || segment.size_bytes != known_bytes) {
        segment.save_indexes()?;
    }
    Ok((segment, last_segment))
}

/// Rebuilds an idempotent producer's state from a recovered batch at `base`.
fn note_producer(producers: &mut ProducerTable, info: &BatchInfo, base: Offset) {
    if info.producer_id < 0 {
        return;
    }
    let last = base.plus(info.last_offset_delta as i64);
    let batch = ProducerBatch {
        first_sequence: info.base_sequence,
        last_sequence: last_sequence(info.base_sequence, info.last_offset_delta),
        base_offset: base.get(),
        last_offset: last.get(),
    };
    producers.record(info.producer_id, info.producer_epoch, batch);
}

/// Syncs the active segment and reads back its partial last block (the bytes the next write
/// starts with).
async fn sync_and_read_tail(active: &Segment) -> Result<Vec<u8>, LogError> {
    let (file, path, size) = (&active.file, &active.path, active.size_bytes);
    file.fdatasync().await?;
    let tail_start = align_down(size);
    if tail_start == size {
        return Ok(Vec::new());
    }
    let read = file.read_aligned(tail_start, BLOCK_BYTES).await?;
    let len = (size - tail_start) as usize;
    if read.len() < len {
        let source = std::io::Error::other("short read of the last block");
        return Err(LogError::Io {
            path: path.clone(),
            source,
        });
    }
    Ok(read[..len].to_vec())
}

/// The state of a log just recovered: everything on disk is written and durable (synced above).
fn new_inner(
    dir: &Path,
    config: LogConfig,
    segments: BTreeMap<Offset, Segment>,
    producers: ProducerTable,
    tail_block: Vec<u8>,
) -> Inner {
    let active = segments.values().next_back().expect("a segment at least");
    let (active_base, active_size, active_next) =
        (active.base_offset, active.size_bytes, active.next_offset);
    let start_offset = *segments.keys().next().expect("a segment at least");
    let interval = matches!(config.durability, Durability::Interval { .. });
    Inner {
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
        opened_at: (active_base, active_next),
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
        recovery_scanned_bytes: 0,
        checkpointing: false,
        checkpointed: Covered {
            base: active_base,
            bytes: active_size,
            at_ms: now_ms(),
        },
    }
}

pub(super) fn delete_segments(dir: &Path, bases: &[Offset]) -> Result<(), LogError> {
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
