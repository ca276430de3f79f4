//! One segment of a partition: its O_DIRECT file, the in-memory sparse indexes, and the two ways
//! of walking it (recovery scan, reads by offset and by timestamp). Lives on the log's shard; the
//! file handle is an `Rc` so that reads in flight keep a segment readable while retention deletes it.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::batch::{self, BatchInfo, LOG_OVERHEAD_BYTES};
use crate::index::SegmentIndex;
use crate::io::runtime::yield_if_needed;
use crate::io::{align_down, align_up, std_error, DiskBytes, SegmentFile};
use crate::limits::{BATCH_BYTES_MAX, SCAN_WINDOW_BYTES};
use crate::{LogError, Offset};

pub(crate) const LOG_SUFFIX: &str = ".log";
pub(crate) const INDEX_SUFFIX: &str = ".index";
pub(crate) const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// `<base_offset>` zero-padded to 20 digits, as Kafka names segment files.
pub(crate) fn file_stem(base_offset: Offset) -> String {
    format!("{:020}", base_offset.get())
}

pub(crate) fn parse_stem(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(LOG_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset::new)
}

pub(crate) struct Segment {
    pub base_offset: Offset,
    pub path: PathBuf,
    pub file: Rc<SegmentFile>,
    /// Bytes of whole batches written (the file may be longer: pre-allocation, padding).
    pub size_bytes: u64,
    /// One past the last written offset.
    pub next_offset: Offset,
    /// Largest max timestamp of the written batches; `i64::MIN` when empty.
    pub max_timestamp: i64,
    pub index: SegmentIndex,
    /// Bytes reserved with fallocate (or known to be allocated).
    pub allocated_bytes: u64,
}

impl Segment {
    pub fn new(dir: &Path, base_offset: Offset, file: SegmentFile) -> Segment {
        Segment {
            base_offset,
            path: dir.join(format!("{}{LOG_SUFFIX}", file_stem(base_offset))),
            file: Rc::new(file),
            size_bytes: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            index: SegmentIndex::default(),
            allocated_bytes: 0,
        }
    }

    pub fn index_path(&self) -> PathBuf {
        self.path.with_extension(&INDEX_SUFFIX[1..])
    }

    pub fn time_index_path(&self) -> PathBuf {
        self.path.with_extension(&TIME_INDEX_SUFFIX[1..])
    }

    /// Accounts for a batch written at the current end.
    pub fn note_written(
        &mut self,
        base: Offset,
        last: Offset,
        max_timestamp: i64,
        size: usize,
        interval_bytes: u32,
    ) {
        assert_eq!(base, self.next_offset, "offsets only grow, without gaps");
        let relative = u32::try_from(base.since(self.base_offset))
            .expect("roll keeps relative offsets in u32");
        self.index.note_batch(
            relative,
            self.size_bytes as u32,
            size as u32,
            max_timestamp,
            interval_bytes,
        );
        self.size_bytes += size as u64;
        self.next_offset = last.next();
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
    }

    /// The index files' paths and encoded contents (for `write_index_files`).
    pub fn index_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        vec![
            (self.index_path(), self.index.encode_offsets()),
            (self.time_index_path(), self.index.encode_times()),
        ]
    }

    /// Writes the index files unless they already hold exactly the in-memory indexes (so a missing
    /// or damaged index is rebuilt). Blocking std::fs: used at open and close; a roll runs
    /// `write_index_files` on the blocking pool instead.
    pub fn save_indexes(&self) -> Result<(), LogError> {
        write_index_files(&self.index_files())
    }
}

/// Writes each (path, bytes) unless the file already holds exactly those bytes. Blocking.
pub(crate) fn write_index_files(files: &[(PathBuf, Vec<u8>)]) -> Result<(), LogError> {
    for (path, bytes) in files {
        if std::fs::read(path).ok().as_deref() != Some(&bytes[..]) {
            std::fs::write(path, bytes).map_err(|e| std_error(path, e))?;
        }
    }
    Ok(())
}

/// Why a walk over a segment stopped before the end of its file.
#[derive(Debug)]
pub(crate) struct ScanStop {
    pub position: u64,
    pub reason: String,
}

/// Makes `window` hold `[position, position + need)`, reading a new window (at least
/// `SCAN_WINDOW_BYTES`, never past `align_up(to)`) when it does not. False when the file is shorter.
async fn cover(
    file: &SegmentFile,
    window: &mut Option<(u64, DiskBytes)>,
    position: u64,
    need: u64,
    to: u64,
) -> Result<bool, LogError> {
    let covered = |window: &Option<(u64, DiskBytes)>| {
        window.as_ref().is_some_and(|(start, w)| {
            *start <= position && position + need <= start + w.len() as u64
        })
    };
    if covered(window) {
        return Ok(true);
    }
    let start = align_down(position);
    let len = (align_up(position + need) - start)
        .max(SCAN_WINDOW_BYTES as u64)
        .min(align_up(to) - start);
    let read = file.read_aligned(start, len as usize).await?;
    *window = Some((start, read));
    Ok(covered(window))
}

/// Reads `[from, to)` of a file in windows and hands every whole batch (position, bytes) to `f`.
/// Stops at the first bytes that are not a plausible batch. `f` returns false to stop early.
async fn walk(
    file: &SegmentFile,
    from: u64,
    to: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<bool, ScanStop>,
) -> Result<Option<ScanStop>, LogError> {
    let mut position = from;
    let mut window: Option<(u64, DiskBytes)> = None;
    let short = |position| {
        Ok(Some(ScanStop {
            position,
            reason: "file shorter than expected".into(),
        }))
    };
    while position < to {
        yield_if_needed().await;
        if to - position < LOG_OVERHEAD_BYTES as u64 {
            let reason = format!("{} stray bytes after the last batch", to - position);
            return Ok(Some(ScanStop { position, reason }));
        }
        if !cover(file, &mut window, position, LOG_OVERHEAD_BYTES as u64, to).await? {
            return short(position);
        }
        let (start, w) = window.as_ref().expect("covered");
        let Some(size) = batch::claimed_size(&w[(position - start) as usize..]) else {
            return Ok(Some(ScanStop {
                position,
                reason: "invalid batch length".into(),
            }));
        };
        if size > BATCH_BYTES_MAX || position + size as u64 > to {
            let reason = format!("batch of {size} bytes runs past the end of the data");
            return Ok(Some(ScanStop { position, reason }));
        }
        if !cover(file, &mut window, position, size as u64, to).await? {
            return short(position);
        }
        let (start, w) = window.as_ref().expect("covered");
        let at = (position - start) as usize;
        match f(position, &w[at..at + size]) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(stop) => return Ok(Some(stop)),
        }
        position += size as u64;
    }
    Ok(None)
}

/// Checks one whole batch met by recovery at byte `position`: header and CRC, that its base offset
/// is the `expected` one, and that its offsets stay within `u32` of the segment base (the index
/// stores relative offsets). Returns the header and the next expected offset. Pure, so the same
/// rule is fuzzed through [`scan_segment_bytes`].
pub(crate) fn check_recovered_batch(
    position: u64,
    bytes: &[u8],
    expected: i64,
    segment_base: i64,
) -> Result<(BatchInfo, i64), ScanStop> {
    let info = batch::validate(bytes).map_err(|e| ScanStop {
        position,
        reason: format!("batch at byte {position}: {e}"),
    })?;
    let base = batch::base_offset(bytes);
    if base != expected {
        return Err(ScanStop {
            position,
            reason: format!("batch at byte {position} has base offset {base}, expected {expected}"),
        });
    }
    // Checked: a hostile file may put the base offset anywhere, up to i64::MAX.
    let next = base
        .checked_add(info.last_offset_delta as i64 + 1)
        .filter(|next| next - 1 - segment_base <= u32::MAX as i64);
    let Some(next) = next else {
        return Err(ScanStop {
            position,
            reason: format!("offset {base} too far from segment base"),
        });
    };
    Ok((info, next))
}

/// What [`scan_segment_bytes`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// Bytes of whole valid batches from the start (where recovery would truncate).
    pub valid_bytes: u64,
    /// One past the last valid offset (`base_offset` when none).
    pub next_offset: i64,
    pub batches: usize,
    /// Why the valid data ends before the end of `bytes`, if it does.
    pub stop_reason: Option<String>,
}

/// Recovery's scan over an in-memory copy of a segment file whose first offset is `base_offset`:
/// the same per-batch rule as opening a log (`check_recovered_batch`), and the same length
/// checks as the windowed walk. Pure, for fuzzing and offline inspection.
pub fn scan_segment_bytes(bytes: &[u8], base_offset: i64) -> SegmentScan {
    let mut position = 0usize;
    let mut expected = base_offset;
    let mut batches = 0;
    let mut stop_reason = None;
    while position < bytes.len() {
        let rest = &bytes[position..];
        let Some(size) = batch::claimed_size(rest) else {
            stop_reason = Some(format!("invalid batch length at byte {position}"));
            break;
        };
        if size > BATCH_BYTES_MAX || size > rest.len() {
            stop_reason = Some(format!(
                "batch of {size} bytes runs past the end of the data"
            ));
            break;
        }
        match check_recovered_batch(position as u64, &rest[..size], expected, base_offset) {
            Ok((_, next)) => expected = next,
            Err(stop) => {
                stop_reason = Some(stop.reason);
                break;
            }
        }
        batches += 1;
        position += size;
    }
    SegmentScan {
        valid_bytes: position as u64,
        next_offset: expected,
        batches,
        stop_reason,
    }
}

/// Scans a segment on open from where its known state ends (its start, or what the checkpoint
/// covered): checks every header and CRC and that offsets follow on,
/// rebuilds the indexes, and calls `on_batch` for every valid batch. Returns where and why the
/// valid data ends, if before `file_bytes`.
pub(crate) async fn recover(
    segment: &mut Segment,
    file_bytes: u64,
    interval_bytes: u32,
    mut on_batch: impl FnMut(&BatchInfo, Offset),
) -> Result<Option<ScanStop>, LogError> {
    let file = segment.file.clone();
    let segment_base = segment.base_offset.get();
    // From where the segment's known state ends: its start, or what a checkpoint covered.
    let mut expected = segment.next_offset.get();
    let mut found: Vec<(u64, Offset, Offset, i64, usize)> = Vec::new();
    let stop = walk(&file, segment.size_bytes, file_bytes, |position, bytes| {
        let (info, next) = check_recovered_batch(position, bytes, expected, segment_base)?;
        let base = Offset::new(expected);
        on_batch(&info, base);
        expected = next;
        found.push((
            position,
            base,
            Offset::new(next - 1),
            info.max_timestamp,
            bytes.len(),
        ));
        Ok(true)
    })
    .await?;
    for (position, base, last, max_timestamp, size) in found {
        assert_eq!(position, segment.size_bytes);
        segment.note_written(base, last, max_timestamp, size, interval_bytes);
    }
    Ok(stop)
}

/// True when `[from, to)` of the file holds only zero bytes (padding, never written blocks).
pub(crate) async fn all_zero(file: &SegmentFile, from: u64, to: u64) -> Result<bool, LogError> {
    let mut position = from;
    while position < to {
        let start = align_down(position);
        let len = (align_up(to) - start).min(SCAN_WINDOW_BYTES as u64);
        let read = file.read_aligned(start, len as usize).await?;
        let end = (start + read.len() as u64).min(to);
        if end <= position {
            // The file ends before `to` (another handle may have trimmed its pre-allocated tail
            // meanwhile): nothing past its end can be non-zero. Without this check a short read
            // that stops before `position` was retried forever.
            return Ok(true);
        }
        if read[(position - start) as usize..(end - start) as usize]
            .iter()
            .any(|b| *b != 0)
        {
            return Ok(false);
        }
        position = end;
        yield_if_needed().await;
    }
    Ok(true)
}

/// First batch in `[from, to)` whose max timestamp is ≥ `timestamp`: (base offset, max timestamp).
pub(crate) async fn find_timestamp(
    file: &SegmentFile,
    path: &Path,
    from: u64,
    to: u64,
    timestamp: i64,
) -> Result<Option<(Offset, i64)>, LogError> {
    let mut found = None;
    let stop = walk(file, from, to, |position, bytes| {
        let info = batch::validate(bytes).map_err(|e| ScanStop {
            position,
            reason: e.to_string(),
        })?;
        if info.max_timestamp >= timestamp {
            found = Some((Offset::new(batch::base_offset(bytes)), info.max_timestamp));
            return Ok(false);
        }
        Ok(true)
    })
    .await?;
    if let Some(stop) = stop {
        return Err(LogError::Corrupt {
            path: path.into(),
            reason: stop.reason,
        });
    }
    Ok(found)
}

/// Whole batches from the one holding `offset`, starting the search at the indexed `from`, never
/// past `to` (the written end): one aligned read sliced to the batches, no copy. The CRC
/// of every returned batch is checked after the read. At least one batch; at most `max_bytes` more.
/// `prefetched` (start, bytes) is a window already read ahead; it is used when it holds `from`.
/// Returns the batches, the byte position just after them and the offset that follows them.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn read_batches(
    file: &SegmentFile,
    path: &Path,
    from: u64,
    to: u64,
    offset: Offset,
    max_bytes: usize,
    window_bytes: usize,
    mut prefetched: Option<(u64, DiskBytes)>,
) -> Result<Option<(DiskBytes, u64, Offset)>, LogError> {
    let corrupt = |reason: String| LogError::Corrupt {
        path: path.into(),
        reason,
    };
    let span = ReadSpan {
        to,
        offset,
        max_bytes,
    };
    let mut position = from;
    let mut want = window_bytes as u64;
    loop {
        if position >= to {
            return Ok(None);
        }
        let (start, read) = match prefetched.take() {
            Some((start, read))
                if start <= position
                    && position + LOG_OVERHEAD_BYTES as u64 <= start + read.len() as u64 =>
            {
                (start, read)
            }
            _ => read_window(file, path, position, want, to).await?,
        };
        match batches_in_window(&read, start, position, want, &span).map_err(corrupt)? {
            WindowBatches::Found {
                first,
                end,
                next_offset,
            } => {
                let slice = read.slice((first - start) as usize, (end - first) as usize);
                return Ok(slice.map(|slice| (slice, end, next_offset)));
            }
            WindowBatches::Continue { at, more } => {
                if at >= to {
                    return Ok(None);
                }
                position = at;
                want = more.max(window_bytes as u64);
            }
        }
    }
}

/// Reads the aligned window holding `[position, position + want)`, never past `to`.
async fn read_window(
    file: &SegmentFile,
    path: &Path,
    position: u64,
    want: u64,
    to: u64,
) -> Result<(u64, DiskBytes), LogError> {
    let start = align_down(position);
    let len = align_up((position + want).min(to)) - start;
    let read = file.read_aligned(start, len as usize).await?;
    if start + (read.len() as u64) < (position + want).min(to) {
        // The file ends before the written end: reading again would return the same.
        return Err(LogError::Corrupt {
            path: path.into(),
            reason: format!(
                "file ends at byte {} before the written end {to}",
                start + read.len() as u64
            ),
        });
    }
    Ok((start, read))
}

/// What a read asks for: batches from the one holding `offset`, at most `max_bytes` after the
/// first, never past the written end `to`.
struct ReadSpan {
    to: u64,
    offset: Offset,
    max_bytes: usize,
}

/// What one window holds for a read.
enum WindowBatches {
    /// The batches in `[first, end)` of the segment; `next_offset` follows them.
    Found {
        first: u64,
        end: u64,
        next_offset: Offset,
    },
    /// None returned from this window: the search continues at `at` with a window of at least
    /// `more` bytes (a batch larger than the window needs it whole).
    Continue { at: u64, more: u64 },
}

/// Finds the batches to return in `read` (segment bytes from `start`) from `position` on: skips
/// batches before the span's offset, stops `max_bytes` after the first, checks the CRC of each
/// one returned. Pure; an error is the reason the data is corrupt.
fn batches_in_window(
    read: &[u8],
    start: u64,
    position: u64,
    want: u64,
    span: &ReadSpan,
) -> Result<WindowBatches, String> {
    let to = span.to;
    let window_end = (start + read.len() as u64).min(to);
    let mut at = position;
    let mut first: Option<u64> = None;
    let mut end = at;
    let mut next_offset = span.offset;
    let mut more = want;
    while at < to {
        if at + LOG_OVERHEAD_BYTES as u64 > window_end {
            break;
        }
        let slice = &read[(at - start) as usize..];
        let size = batch::claimed_size(slice)
            .ok_or_else(|| format!("invalid batch length at byte {at}"))? as u64;
        if at + size > to {
            return Err(format!("batch at byte {at} runs past the written end"));
        }
        if at + size > window_end {
            more = more.max(size);
            break;
        }
        let bytes = &slice[..size as usize];
        let header =
            batch::Header::new(bytes).ok_or_else(|| format!("short batch at byte {at}"))?;
        let last = header.base_offset() + header.last_offset_delta() as i64;
        if first.is_none() && last < span.offset.get() {
            at += size;
            continue;
        }
        if let Some(first) = first {
            if at + size - first > span.max_bytes as u64 {
                break;
            }
        }
        batch::validate(bytes).map_err(|e| format!("batch at byte {at} read back: {e}"))?;
        first.get_or_insert(at);
        at += size;
        end = at;
        next_offset = Offset::new(last + 1);
    }
    Ok(match first {
        Some(first) => WindowBatches::Found {
            first,
            end,
            next_offset,
        },
        None => WindowBatches::Continue { at, more },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{build_value_batch, set_base_offset, BatchSpec};

    fn batch_at(base: i64, count: usize) -> Vec<u8> {
        let mut batch = build_value_batch(&BatchSpec::default(), b"value", count);
        set_base_offset(&mut batch, base);
        batch.to_vec()
    }

    /// Regression (a model-test case hung CI for 90 minutes): a log dropped mid-seal trimmed its
    /// segment's pre-allocated tail while the reopened log scanned the file at its old size. Each
    /// read then stopped short of where the scan stood and the scan re-read the same window forever.
    #[test]
    fn reads_past_a_shorter_file_end_finish() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(crate::io::IO_MEMORY_BYTES)
            .spawn(move || async move {
                crate::io::prepare_data_dir(&data).await.unwrap();
                let path = data.join("0.log");
                let file = SegmentFile::open(&path, true).await.unwrap();
                let batches = [batch_at(0, 3), batch_at(3, 2)].concat();
                let mut buffer = crate::io::take_buffer(batches.len());
                buffer.as_bytes_mut().fill(0);
                buffer.as_bytes_mut()[..batches.len()].copy_from_slice(&batches);
                file.write(buffer, 0).await.0.unwrap();
                let size = batches.len() as u64;
                file.truncate(size).await.unwrap();
                // As if the file still had its 2 MiB reservation.
                let reserved = 2 << 20;
                assert!(all_zero(&file, size, reserved).await.unwrap());
                let read = read_batches(
                    &file,
                    &path,
                    0,
                    size,
                    Offset::new(3),
                    1 << 20,
                    1 << 20,
                    None,
                )
                .await
                .unwrap()
                .expect("the second batch");
                assert_eq!(read.2, Offset::new(5));
                let whole =
                    read_batches(&file, &path, 0, reserved, Offset::ZERO, 1 << 20, 64, None).await;
                assert!(
                    whole.is_ok(),
                    "whole batches before the file's end are returned"
                );
                let error = read_batches(
                    &file,
                    &path,
                    size,
                    reserved,
                    Offset::new(5),
                    1 << 20,
                    64,
                    None,
                )
                .await
                .unwrap_err();
                assert!(error.to_string().contains("file ends at byte"), "{error}");
                file.close().await.unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn scan_stops_at_torn_tail_and_garbage() {
        let mut bytes = batch_at(100, 3);
        bytes.extend(batch_at(103, 2));
        let whole = bytes.len() as u64;
        let scan = scan_segment_bytes(&bytes, 100);
        assert_eq!(
            (scan.valid_bytes, scan.next_offset, scan.batches),
            (whole, 105, 2)
        );
        assert_eq!(scan.stop_reason, None);

        let mut torn = bytes.clone();
        torn.extend(&batch_at(105, 1)[..30]);
        let scan = scan_segment_bytes(&torn, 100);
        assert_eq!((scan.valid_bytes, scan.next_offset), (whole, 105));
        assert!(scan.stop_reason.is_some());

        let scan = scan_segment_bytes(&bytes, 99);
        assert_eq!((scan.valid_bytes, scan.batches), (0, 0));
    }

    #[test]
    fn scan_survives_offsets_at_the_edge_of_i64() {
        // Found by reasoning about the fuzz target: a base offset near i64::MAX must stop the
        // scan, not overflow.
        let base = i64::MAX - 1;
        let scan = scan_segment_bytes(&batch_at(base, 5), base);
        assert_eq!(scan.batches, 0);
        assert!(scan.stop_reason.is_some());
    }
}
