//! The recovery checkpoint of one log (`<partition dir>/checkpoint`): what a previous run knew to
//! be valid and durable — each segment's size, end offset and largest timestamp, and the
//! idempotent producers' state — so that opening the log scans only the bytes past it instead of
//! every segment from its start. Written after recovery (when it changed), after every seal and
//! at a clean close; always after the bytes it covers were synced, so any checkpoint that reaches
//! the disk describes durable data.
//!
//! ```text
//! magic "WEIRCKP1"                                                              8 bytes
//! segment count u32, then per segment (ascending base):
//!   base offset i64 | covered bytes u64 | next offset i64 | max timestamp i64    32 bytes
//! producer count u32, then per producer (ascending id):
//!   producer id i64 | epoch i16 | batch count u8, then per batch:
//!     first sequence i32 | last sequence i32 | base offset i64 | last offset i64 24 bytes
//! crc32c u32 of everything before it
//! ```
//! All integers big-endian. A missing, torn, foreign or checksum-failing file is ignored (with a
//! warning) and the log is scanned in full, as before checkpoints existed.
//!
//! Shard: the log's owner. Blocking std::fs: at open and close on the shard, from a seal on the
//! executor's blocking pool.

use std::path::{Path, PathBuf};

use super::Inner;
use crate::io::std_error;
use crate::producer::ProducerBatch;
use crate::{LogError, Offset};

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";
const MAGIC: &[u8; 8] = b"WEIRCKP1";
const SEGMENT_BYTES: usize = 32;

/// A segment as the checkpoint knows it: its first `size_bytes` hold whole, valid batches ending
/// before `next_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CoveredSegment {
    pub base: Offset,
    pub size_bytes: u64,
    pub next_offset: Offset,
    pub max_timestamp: i64,
}

/// One idempotent producer's state at the checkpoint.
pub(crate) type ProducerState = (i64, i16, Vec<ProducerBatch>);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub segments: Vec<CoveredSegment>,
    pub producers: Vec<ProducerState>,
}

impl Checkpoint {
    /// One empty segment and no producers: what a log that never held a batch checkpoints.
    pub(crate) fn is_empty_log(&self) -> bool {
        self.producers.is_empty() && matches!(&self.segments[..], [only] if only.size_bytes == 0)
    }
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

pub(crate) fn encode(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + checkpoint.segments.len() * SEGMENT_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(checkpoint.segments.len() as u32).to_be_bytes());
    for segment in &checkpoint.segments {
        out.extend_from_slice(&segment.base.get().to_be_bytes());
        out.extend_from_slice(&segment.size_bytes.to_be_bytes());
        out.extend_from_slice(&segment.next_offset.get().to_be_bytes());
        out.extend_from_slice(&segment.max_timestamp.to_be_bytes());
    }
    out.extend_from_slice(&(checkpoint.producers.len() as u32).to_be_bytes());
    for (id, epoch, batches) in &checkpoint.producers {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&epoch.to_be_bytes());
        // The table keeps at most PRODUCER_BATCHES_MAX (5) batches per producer.
        out.push(batches.len().min(u8::MAX as usize) as u8);
        for batch in batches.iter().take(u8::MAX as usize) {
            out.extend_from_slice(&batch.first_sequence.to_be_bytes());
            out.extend_from_slice(&batch.last_sequence.to_be_bytes());
            out.extend_from_slice(&batch.base_offset.to_be_bytes());
            out.extend_from_slice(&batch.last_offset.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A cursor over the checkpoint's bytes; every read fails cleanly past the end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if self.0.len() < N {
            return Err("ends early".to_string());
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("split at N"))
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.take().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.take().map(i64::from_be_bytes)
    }
    fn i32(&mut self) -> Result<i32, String> {
        self.take().map(i32::from_be_bytes)
    }
}

/// Decodes a checkpoint, or says why the bytes are not one.
pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    if bytes.len() < MAGIC.len() + 12 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a checkpoint (magic)".to_string());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch".to_string());
    }
    let mut reader = Reader(&body[MAGIC.len()..]);
    let count = reader.u32()? as usize;
    if count > reader.0.len() / SEGMENT_BYTES {
        return Err("segment count past the end".to_string());
    }
    let mut segments = Vec::with_capacity(count);
    for _ in 0..count {
        segments.push(CoveredSegment {
            base: Offset::new(reader.i64()?),
            size_bytes: reader.take().map(u64::from_be_bytes)?,
            next_offset: Offset::new(reader.i64()?),
            max_timestamp: reader.i64()?,
        });
    }
    let count = reader.u32()? as usize;
    let mut producers = Vec::with_capacity(count.min(reader.0.len() / 11));
    for _ in 0..count {
        let id = reader.i64()?;
        let epoch = reader.take().map(i16::from_be_bytes)?;
        let [batches] = reader.take::<1>()?;
        let mut list = Vec::with_capacity(batches as usize);
        for _ in 0..batches {
            list.push(ProducerBatch {
                first_sequence: reader.i32()?,
                last_sequence: reader.i32()?,
                base_offset: reader.i64()?,
                last_offset: reader.i64()?,
            });
        }
        producers.push((id, epoch, list));
    }
    if !reader.0.is_empty() {
        return Err("bytes after the producers".to_string());
    }
    check_segments(&segments)?;
    Ok(Checkpoint {
        segments,
        producers,
    })
}

/// Segments ascending and contiguous, each ending at or after its base.
fn check_segments(segments: &[CoveredSegment]) -> Result<(), String> {
    for segment in segments {
        if segment.next_offset < segment.base
            || (segment.size_bytes == 0) != (segment.next_offset == segment.base)
        {
            return Err(format!("segment {} is inconsistent", segment.base));
        }
    }
    for pair in segments.windows(2) {
        if pair[0].next_offset != pair[1].base {
            return Err(format!(
                "segment {} does not follow the one before",
                pair[1].base
            ));
        }
    }
    Ok(())
}

/// The checkpoint in `dir` and its bytes, or `None` when there is none or it is unusable (said
/// in a warning: the log is then scanned in full).
pub(crate) fn load(dir: &Path) -> Option<(Checkpoint, Vec<u8>)> {
    let path = path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "reading the checkpoint failed: scanning the whole log");
            return None;
        }
    };
    match decode(&bytes) {
        Ok(checkpoint) => Some((checkpoint, bytes)),
        Err(reason) => {
            tracing::warn!(path = %path.display(), %reason, "checkpoint unusable: scanning the whole log");
            None
        }
    }
}

/// Replaces the checkpoint: written beside it and renamed over it, so a crash leaves the old one
/// or the new one (a torn new one fails its checksum and costs a full scan, nothing more). No
/// fsync: a checkpoint that does not reach the disk only costs the next open a longer scan.
pub(crate) fn store(dir: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let target = path(dir);
    let temporary = dir.join(format!("{CHECKPOINT_FILE}.new"));
    std::fs::write(&temporary, bytes).map_err(|e| std_error(&temporary, e))?;
    std::fs::rename(&temporary, &target).map_err(|e| std_error(&target, e))
}

/// The checkpoint of a log whose segments up to the one at `through` are durable and whole (their
/// sizes as they are now), with the producer state of the batches before `end`.
pub(super) fn of(inner: &Inner, through: Offset, end: Offset) -> Checkpoint {
    let segments = inner
        .segments
        .range(..=through)
        .map(|(_, segment)| CoveredSegment {
            base: segment.base_offset,
            size_bytes: segment.size_bytes,
            next_offset: segment.next_offset,
            max_timestamp: segment.max_timestamp,
        })
        .collect();
    Checkpoint {
        segments,
        producers: inner.producers.snapshot(end.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let segment = |base: i64, next: i64, size: u64| CoveredSegment {
            base: Offset::new(base),
            size_bytes: size,
            next_offset: Offset::new(next),
            max_timestamp: 7,
        };
        let batch = ProducerBatch {
            first_sequence: 0,
            last_sequence: 4,
            base_offset: 3,
            last_offset: 7,
        };
        Checkpoint {
            segments: vec![segment(0, 10, 4096), segment(10, 12, 100)],
            producers: vec![(5, 1, vec![batch])],
        }
    }

    #[test]
    fn round_trips_and_rejects_every_torn_or_flipped_form() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes), Ok(sample()));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "torn at {cut}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x40;
            assert!(decode(&flipped).is_err(), "flipped byte {at}");
        }
    }
}
