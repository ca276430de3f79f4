//! Reads: from the tail cache (the very buffers appended) or from a segment on disk, with a
//! read-ahead per catching-up reader (the rest of the window it read, and the next window of
//! `READ_AHEAD_BYTES` at least); long-poll waits; timestamp lookups.
//!
//! Shard: the log's owner. Concurrency: the state is borrowed to pick the source and released
//! before any read is awaited; a read in flight keeps its segment's file open.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::task::Poll;

use super::Inner;
use crate::io::runtime::{spawn_background, Background};
use crate::io::{align_down, align_up, DiskBytes, SegmentFile};
use crate::limits::{
    BLOCK_BYTES, READ_AHEADS_MAX, READ_AHEAD_BYTES, READ_AHEAD_SHARD_BYTES, READ_FETCH_BYTES_MAX,
};
use crate::{batch, segment};
use crate::{Chunk, LogError, Offset, ReadBatches};

/// The next window of a segment, read while the previous fetch's response is written, for the
/// reader that continues at `offset` (the batch starting at byte `position` of the segment at
/// `segment_base`). Measured before this (weir-bench --backlog): one read in flight per fetch and
/// the device idle while the response went out kept catch-up reads at 0.34-0.50 GB/s.
pub(super) struct ReadAhead {
    pub(super) segment_base: Offset,
    pub(super) offset: Offset,
    pub(super) position: u64,
    pub(super) start: u64,
    pub(super) read: AheadBytes,
    /// This read-ahead's share of the shard's read-ahead memory, given back when it is dropped.
    _held: Held,
}

/// The bytes of a read-ahead: a device read in flight, or the rest of a window a fetch already
/// took its part of.
pub(super) enum AheadBytes {
    /// The window, cut at the data end when it was issued; `None` if the read failed (the fetch
    /// then reads from the device itself and reports the error).
    Reading(Background<Option<DiskBytes>>),
    Ready(DiskBytes),
}

impl AheadBytes {
    async fn bytes(self) -> Option<DiskBytes> {
        match self {
            AheadBytes::Reading(read) => read.await.flatten(),
            AheadBytes::Ready(bytes) => Some(bytes),
        }
    }
}

thread_local! {
    /// Bytes of read-ahead windows this shard holds or has in flight (`READ_AHEAD_SHARD_BYTES`).
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// A claim on the shard's read-ahead memory, released on drop.
pub(super) struct Held(usize);

impl Held {
    fn claim(bytes: usize) -> Held {
        HELD.with(|held| held.set(held.get() + bytes));
        Held(bytes)
    }

    /// The bytes a new read-ahead may read: two fetch windows and `READ_AHEAD_BYTES` at least
    /// while the shard holds less than its budget, otherwise only the fetch's own window. Two
    /// windows, because the next read starts only when a fetch finds a window's end: with one,
    /// a reader whose fetches take whole windows keeps one read in flight.
    fn window(fetch_window: usize) -> usize {
        if HELD.with(Cell::get) < READ_AHEAD_SHARD_BYTES {
            (2 * fetch_window).max(READ_AHEAD_BYTES)
        } else {
            fetch_window
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|held| held.set(held.get().saturating_sub(self.0)));
    }
}

/// Whole batches from the one holding `offset`: from the tail cache when it holds `offset`,
/// otherwise one read of a segment window (or the read-ahead that already fetched it).
pub(crate) async fn read(
    log: &Rc<RefCell<Inner>>,
    offset: i64,
    max_bytes: usize,
) -> Result<ReadBatches, LogError> {
    let offset = Offset::new(offset);
    let disk = match plan_read(&mut log.borrow_mut(), offset, max_bytes)? {
        ReadSource::Ready(batches) => return Ok(batches),
        ReadSource::Disk(disk) => disk,
    };
    let prefetched = match disk.ahead {
        Some(ahead) => ahead.read.bytes().await.map(|read| (ahead.start, read)),
        None => None,
    };
    // The window stays shared with the fetch's slice of it: its rest serves the next fetches.
    let window = prefetched
        .as_ref()
        .and_then(|(start, read)| Some((*start, read.slice(0, read.len())?)));
    let read = segment::read_batches(
        &disk.file,
        &disk.path,
        disk.from,
        disk.to,
        offset,
        max_bytes,
        disk.window,
        prefetched,
    )
    .await?;
    let (chunks, total_bytes) = match read {
        Some((read, end, next_offset)) => {
            let next = Next {
                segment_base: disk.segment_base,
                end,
                offset: next_offset,
            };
            read_on(log, next, window, disk.window);
            let len = read.len();
            (vec![Chunk::Disk(read)], len)
        }
        None => (Vec::new(), 0),
    };
    Ok(ReadBatches {
        chunks,
        high_watermark: disk.high_watermark.get(),
        log_start_offset: disk.log_start_offset.get(),
        total_bytes,
    })
}

/// Where a read is served from, decided with the state borrowed.
enum ReadSource {
    /// Nothing to read yet, or the tail cache's batches.
    Ready(ReadBatches),
    Disk(DiskRead),
}

/// A read of a segment window, planned before the state is released.
struct DiskRead {
    file: Rc<SegmentFile>,
    path: PathBuf,
    segment_base: Offset,
    /// The indexed (or read-ahead's exact) position to start searching at.
    from: u64,
    /// The segment's written end.
    to: u64,
    window: usize,
    high_watermark: Offset,
    log_start_offset: Offset,
    ahead: Option<ReadAhead>,
}

/// Checks `offset` and picks the source of the read: the tail cache, or a segment window (taking
/// the read-ahead issued for `offset`, if any).
fn plan_read(inner: &mut Inner, offset: Offset, max_bytes: usize) -> Result<ReadSource, LogError> {
    if inner.closed {
        return Err(LogError::Closed);
    }
    let (start, hwm) = (inner.start_offset, inner.high_watermark);
    if offset < start || offset > inner.next_offset {
        return Err(LogError::OffsetOutOfRange {
            offset: offset.get(),
            log_start_offset: start.get(),
            log_end_offset: inner.next_offset.get(),
        });
    }
    let empty = ReadBatches {
        chunks: Vec::new(),
        high_watermark: hwm.get(),
        log_start_offset: start.get(),
        total_bytes: 0,
    };
    if offset >= hwm {
        return Ok(ReadSource::Ready(empty));
    }
    if inner.cache.front().is_some_and(|c| c.base <= offset) {
        crate::io::stats::read_from_tail_cache(true);
        return Ok(ReadSource::Ready(read_cache(inner, offset, max_bytes)));
    }
    let Some(segment) = inner
        .segments
        .range(..=offset)
        .next_back()
        .map(|(_, s)| s)
        .filter(|s| offset < s.next_offset)
    else {
        return Ok(ReadSource::Ready(empty));
    };
    let relative = offset.since(segment.base_offset) as u32;
    let mut from = segment.index.position_for(relative) as u64;
    let window = inner.config.index_interval_bytes as usize
        + max_bytes.min(READ_FETCH_BYTES_MAX)
        + 2 * BLOCK_BYTES;
    let (file, path, segment_base, to) = (
        segment.file.clone(),
        segment.path.clone(),
        segment.base_offset,
        segment.size_bytes,
    );
    let ahead = inner
        .read_aheads
        .iter()
        .position(|a| a.offset == offset && a.segment_base == segment_base)
        .and_then(|at| inner.read_aheads.remove(at));
    if let Some(ahead) = &ahead {
        // The exact position of the batch, known from the read that came before.
        from = ahead.position;
    }
    crate::io::stats::read_from_tail_cache(false);
    Ok(ReadSource::Disk(DiskRead {
        file,
        path,
        segment_base,
        from,
        to,
        window,
        high_watermark: hwm,
        log_start_offset: start,
        ahead,
    }))
}

/// The cached batches from the one holding `offset`, up to `max_bytes` (at least one).
fn read_cache(inner: &Inner, offset: Offset, max_bytes: usize) -> ReadBatches {
    let first = inner.cache.partition_point(|c| c.last < offset);
    let mut chunks = Vec::new();
    let mut total = 0;
    for cached in inner.cache.iter().skip(first) {
        if total > 0 && total + cached.bytes.len() > max_bytes {
            break;
        }
        total += cached.bytes.len();
        chunks.push(Chunk::Memory(cached.bytes.clone()));
    }
    ReadBatches {
        chunks,
        high_watermark: inner.high_watermark.get(),
        log_start_offset: inner.start_offset.get(),
        total_bytes: total,
    }
}

/// Where a reader continues after a disk read: the batch at byte `end` of the segment at
/// `segment_base`, holding `offset`.
#[derive(Clone, Copy)]
struct Next {
    segment_base: Offset,
    end: u64,
    offset: Offset,
}

/// After a fetch read up to `next`: keeps the rest of the window it read from (`window`, its
/// aligned start and bytes) for the reader's next fetches, and reads on from the first batch that
/// window does not hold whole.
fn read_on(
    log: &Rc<RefCell<Inner>>,
    next: Next,
    window: Option<(u64, DiskBytes)>,
    fetch_window: usize,
) {
    let Some((start, bytes)) = window else {
        return start_read_ahead(log, next, fetch_window);
    };
    let (end, offset) = whole_batches_end(&bytes, start, next.end, next.offset);
    if end == next.end {
        return start_read_ahead(log, next, fetch_window);
    }
    let mut inner = log.borrow_mut();
    if inner.closed || next.offset >= inner.high_watermark {
        return;
    }
    let held = Held::claim(bytes.len());
    push_ahead(
        &mut inner,
        ReadAhead {
            segment_base: next.segment_base,
            offset: next.offset,
            position: next.end,
            start,
            read: AheadBytes::Ready(bytes),
            _held: held,
        },
    );
    drop(inner);
    let after = Next {
        end,
        offset,
        ..next
    };
    start_read_ahead(log, after, fetch_window);
}

/// The end of the last batch `bytes` (read from byte `start`) holds whole when walking from the
/// batch at `position` holding `offset`, and the offset after it. Stops at anything that is not a
/// batch header: the fetch that reaches it reads it from the device and reports it.
fn whole_batches_end(bytes: &[u8], start: u64, position: u64, offset: Offset) -> (u64, Offset) {
    let (mut at, mut offset) = (position, offset);
    loop {
        let Some(rest) = bytes.get((at - start) as usize..) else {
            return (at, offset);
        };
        let Some(size) = batch::claimed_size(rest).filter(|size| *size <= rest.len()) else {
            return (at, offset);
        };
        let Some(header) = batch::Header::new(&rest[..size]) else {
            return (at, offset);
        };
        at += size as u64;
        offset = Offset::new(header.base_offset() + header.last_offset_delta() as i64 + 1);
    }
}

/// Reads the window at `next` (`READ_AHEAD_BYTES` at least, while the shard's budget allows) in
/// the background, from the same segment or the start of the next one, unless that data is in the
/// tail cache or not written yet.
fn start_read_ahead(log: &Rc<RefCell<Inner>>, next: Next, fetch_window: usize) {
    let mut inner = log.borrow_mut();
    if inner.closed
        || next.offset >= inner.high_watermark
        || inner.cache.front().is_some_and(|c| c.base <= next.offset)
        || inner.read_aheads.iter().any(|a| a.offset == next.offset)
    {
        return;
    }
    let target = match inner.segments.get(&next.segment_base) {
        Some(segment) if next.end < segment.size_bytes => Some((segment, next.end)),
        Some(_) => inner
            .segments
            .range(next.segment_base.next()..)
            .next()
            .map(|(_, s)| s)
            .filter(|s| s.base_offset == next.offset && s.size_bytes > 0)
            .map(|s| (s, 0)),
        None => None,
    };
    let Some((segment, position)) = target else {
        return;
    };
    let start = align_down(position);
    let data_end = (position + Held::window(fetch_window) as u64).min(segment.size_bytes);
    let len = (align_up(data_end) - start) as usize;
    let file = segment.file.clone();
    let base = segment.base_offset;
    let read = spawn_background(async move {
        let read = file.read_aligned(start, len).await.ok()?;
        // Cut at the data end: the bytes after it may be rewritten (partial last block).
        let valid = read.len().min((data_end - start) as usize);
        read.slice(0, valid)
    });
    let ahead = ReadAhead {
        segment_base: base,
        offset: next.offset,
        position,
        start,
        read: AheadBytes::Reading(read),
        _held: Held::claim(len),
    };
    push_ahead(&mut inner, ahead);
}

/// Keeps `ahead`, dropping the oldest read-ahead past `READ_AHEADS_MAX`.
fn push_ahead(inner: &mut Inner, ahead: ReadAhead) {
    if inner.read_aheads.len() >= READ_AHEADS_MAX {
        inner.read_aheads.pop_front();
    }
    inner.read_aheads.push_back(ahead);
}

pub(crate) async fn wait_for_data(log: &Rc<RefCell<Inner>>, offset: i64) {
    let offset = Offset::new(offset);
    futures_lite::future::poll_fn(|cx| {
        let mut inner = log.borrow_mut();
        if inner.high_watermark > offset || inner.closed {
            Poll::Ready(())
        } else {
            inner.register_waiter(cx.waker());
            Poll::Pending
        }
    })
    .await
}

pub(crate) async fn offset_for_timestamp(
    log: &Rc<RefCell<Inner>>,
    timestamp_ms: i64,
) -> Result<Option<(i64, i64)>, LogError> {
    let (file, path, from, to) = {
        let inner = log.borrow();
        if inner.closed {
            return Err(LogError::Closed);
        }
        let Some(segment) = inner
            .segments
            .values()
            .find(|s| s.max_timestamp >= timestamp_ms)
        else {
            return Ok(None);
        };
        let relative = segment.index.scan_start_for(timestamp_ms);
        (
            segment.file.clone(),
            segment.path.clone(),
            segment.index.position_for(relative) as u64,
            segment.size_bytes,
        )
    };
    let found = segment::find_timestamp(&file, &path, from, to, timestamp_ms).await?;
    Ok(found.map(|(offset, timestamp)| (offset.get(), timestamp)))
}
