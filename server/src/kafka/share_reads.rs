//! The record batches a ShareFetch answers with, read from a partition's log once for many
//! answers.
//!
//! A share answer carries whole batches but need not acquire all of their records: in
//! record_limit mode (KIP-1206) at most `max_records`, and records of a batch released or
//! expired come back alone, so a producer's large batch (5,000 records of 100 B in 512 KiB) can
//! go out in several answers. Reading it again for each one costs a device read and a CRC check
//! of the whole batch every time (24% of the shard's CPU in a share run when the lock limit still
//! split batches, docs/benchmarks.md). So each
//! shard keeps the last whole batches it read per partition, as one buffer, and answers from it
//! with zero-copy slices while the next record wanted lies inside it. The log below its high
//! watermark never changes, and the memo names its log (`LogName`), so a topic deleted and
//! created again never gets the old one's bytes.

use std::cell::RefCell;
use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use weir_engine::batch::{Header, LOG_OVERHEAD_BYTES};
use weir_engine::{Chunk, Log, LogName};

/// Memos kept per shard at most, and their bytes at most: past either, all are dropped (the
/// next answers read again).
const MEMOS_MAX: usize = 256;
const MEMO_BYTES_MAX: usize = 64 << 20;

struct Memo {
    log: LogName,
    /// Whole batches from the one holding `first` up to the one ending before `end`.
    batches: Bytes,
    first: i64,
    end: i64,
}

thread_local! {
    /// Topic, then partition: a lookup by `&str` allocates no key (it runs per share fetch).
    static MEMOS: RefCell<HashMap<String, HashMap<i32, Memo>>> = RefCell::new(HashMap::new());
}

/// The whole batches from the one holding `start` on that cover `max_records` offsets from
/// `start`, and the offset after the last of them; `None` unless this shard read them before.
pub fn remembered(
    log: &Log,
    topic: &str,
    partition: i32,
    start: i64,
    max_records: usize,
) -> Option<(Bytes, i64)> {
    MEMOS.with(|memos| {
        let memos = memos.borrow();
        let memo = memos.get(topic)?.get(&partition)?;
        let inside = memo.log.names(log) && memo.first <= start && start < memo.end;
        inside.then(|| window(&memo.batches, start, max_records))
    })
}

/// Keeps the whole batches of a log read (from the batch holding `start`) for later answers,
/// and answers this one from them.
pub fn remember(
    log: &Log,
    topic: &str,
    partition: i32,
    chunks: &[Chunk],
    start: i64,
    max_records: usize,
) -> (Bytes, i64) {
    let (batches, first, end) = whole_batches(chunks);
    let answer = window(&batches, start, max_records);
    if batches.is_empty() {
        return answer;
    }
    MEMOS.with(|memos| {
        let mut memos = memos.borrow_mut();
        let all = memos.values().flat_map(HashMap::values);
        let (count, held) = all.fold((0, 0), |(count, held), m| {
            (count + 1, held + m.batches.len())
        });
        if count >= MEMOS_MAX || held + batches.len() > MEMO_BYTES_MAX {
            memos.clear();
        }
        let memo = Memo {
            log: log.name(),
            batches,
            first,
            end,
        };
        memos
            .entry(topic.to_string())
            .or_default()
            .insert(partition, memo);
    });
    answer
}

/// The complete batches at the front of `chunks` as one buffer (a tail-cache chunk is shared, a
/// disk read copied once), the base offset of the first and the offset after the last. A
/// partial batch ends them.
fn whole_batches(chunks: &[Chunk]) -> (Bytes, i64, i64) {
    let mut kept: Vec<&[u8]> = Vec::new();
    let (mut first, mut end) = (None, 0i64);
    for chunk in chunks.iter().map(Chunk::as_slice) {
        let mut at = 0usize;
        while let Some((base, next_offset, next)) = batch_at(chunk, at) {
            first.get_or_insert(base);
            end = next_offset;
            at = next;
        }
        kept.push(&chunk[..at]);
        if at < chunk.len() {
            break;
        }
    }
    let first = first.unwrap_or(0);
    if let [Chunk::Memory(bytes)] = chunks {
        return (bytes.slice(..kept[0].len()), first, end);
    }
    let mut all = BytesMut::with_capacity(kept.iter().map(|c| c.len()).sum());
    kept.iter().for_each(|chunk| all.extend_from_slice(chunk));
    (all.freeze(), first, end)
}

/// The batch at byte `at` of `bytes` if it is there whole: its base offset, the offset after
/// its last record, and the byte after it.
fn batch_at(bytes: &[u8], at: usize) -> Option<(i64, i64, usize)> {
    let header = Header::new(bytes.get(at..)?)?;
    let length = usize::try_from(header.batch_length()).ok()?;
    let next = at + LOG_OVERHEAD_BYTES + length;
    if length == 0 || next > bytes.len() {
        return None;
    }
    let end = header.base_offset() + i64::from(header.last_offset_delta()) + 1;
    Some((header.base_offset(), end, next))
}

/// The batches of `batches` from the one holding `start` up to the one that covers
/// `max_records` offsets from `start` (no more can be acquired, and sending the rest costs
/// without use), as a slice, and the offset after the last (0 when there is none).
fn window(batches: &Bytes, start: i64, max_records: usize) -> (Bytes, i64) {
    let wanted_end = start.saturating_add(i64::try_from(max_records).unwrap_or(i64::MAX));
    let (mut from, mut at, mut end) = (None, 0usize, 0i64);
    while let Some((_, next_offset, next)) = batch_at(batches, at) {
        if next_offset > start {
            from.get_or_insert(at);
            end = next_offset;
        }
        at = next;
        if end >= wanted_end {
            break;
        }
    }
    match from {
        Some(from) => (batches.slice(from..at), end),
        None => (Bytes::new(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_engine::batch::{field, HEADER_BYTES};

    /// A header-only batch of `count` offsets from `base` (nothing here reads more).
    fn batch(base: i64, count: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_BYTES];
        bytes[field::BASE_OFFSET].copy_from_slice(&base.to_be_bytes());
        let length = (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
        bytes[field::BATCH_LENGTH].copy_from_slice(&length.to_be_bytes());
        bytes[field::LAST_OFFSET_DELTA].copy_from_slice(&(count - 1).to_be_bytes());
        bytes
    }

    fn chunk(batches: &[(i64, i32)]) -> Chunk {
        let bytes: Vec<u8> = batches.iter().flat_map(|&(b, c)| batch(b, c)).collect();
        Chunk::Memory(Bytes::from(bytes))
    }

    /// Chunks of batches `(base, count)`; checks the end offset and how many batches are kept.
    fn check(chunks: &[&[(i64, i32)]], start: i64, max_records: usize, end: i64, kept: usize) {
        let chunks: Vec<Chunk> = chunks.iter().map(|batches| chunk(batches)).collect();
        let (batches, _, _) = whole_batches(&chunks);
        let (records, got_end) = window(&batches, start, max_records);
        assert_eq!((got_end, records.len()), (end, kept * HEADER_BYTES));
    }

    #[test]
    fn answers_stop_at_the_batch_that_covers_max_records() {
        // Everything fits: every batch of every chunk.
        check(&[&[(0, 10), (10, 10)], &[(20, 10)]], 0, 500, 30, 3);
        // 500 records from offset 0 end inside the second batch: the third is not sent.
        check(&[&[(0, 300), (300, 300), (600, 300)]], 0, 500, 600, 2);
        // Counted from `start`, which may sit inside the first batch.
        check(&[&[(0, 300)], &[(300, 300)]], 250, 50, 300, 1);
        // Batches before the one holding `start` stay out (a remembered read).
        check(&[&[(0, 300), (300, 300), (600, 300)]], 650, 10, 900, 1);
        // One batch larger than max_records still goes whole.
        check(&[&[(0, 4000)]], 0, 500, 4000, 1);
        // Nothing read.
        check(&[], 0, 500, 0, 0);
    }

    #[test]
    fn a_partial_batch_ends_the_batches() {
        let mut first = batch(0, 10);
        first.extend_from_slice(&batch(10, 10)[..20]);
        let chunks = [Chunk::Memory(Bytes::from(first)), chunk(&[(20, 10)])];
        let (batches, base, end) = whole_batches(&chunks);
        assert_eq!((base, end, batches.len()), (0, 10, HEADER_BYTES));
    }
}
