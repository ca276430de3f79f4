//! The sparse offset index and the time index of one segment: in-memory vectors, saved as
//! fixed-width big-endian files (`.index`, `.timeindex`) when a segment is sealed or the log is
//! closed, and rebuilt from the log file whenever missing or different. Lives on the log's shard.
//!
//! ```text
//! .index      entry = relative offset u32 | position u32            (8 bytes)
//! .timeindex  entry = timestamp i64       | relative offset u32     (12 bytes)
//! ```
//! An offset-index entry (R, P) says the batch with base offset `segment_base + R` starts at byte P.
//! A time-index entry (T, R): T is the largest max timestamp among the batches of the segment before
//! `segment_base + R`, so a search for the first batch with max timestamp ≥ X may start at the last
//! entry with T < X (every batch before it is older than X).

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

/// An offset-index entry: the batch whose base offset is `relative_offset` after the segment's
/// base starts at byte `position` of the segment file. Named fields, because both are `u32` and a
/// swapped pair would still compile as a tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// A time-index entry: every batch before the one at `relative_offset` has a max timestamp of at
/// most `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Offset index and time index, built together at the same batch boundaries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// Relative offsets and byte positions both strictly increasing.
    pub offsets: Vec<OffsetEntry>,
    /// Timestamps increasing.
    pub times: Vec<TimeEntry>,
    bytes_since_entry: u64,
    max_timestamp_so_far: Option<i64>,
}

impl SegmentIndex {
    /// Records a batch appended at `position`; adds entries every `interval_bytes` of log.
    pub fn note_batch(
        &mut self,
        relative_offset: u32,
        position: u32,
        size: u32,
        max_timestamp: i64,
        interval_bytes: u32,
    ) {
        if self.offsets.is_empty() || self.bytes_since_entry >= interval_bytes as u64 {
            self.offsets.push(OffsetEntry {
                relative_offset,
                position,
            });
            self.bytes_since_entry = 0;
            if let Some(before) = self.max_timestamp_so_far {
                if self.times.last().is_none_or(|last| before > last.timestamp) {
                    self.times.push(TimeEntry {
                        timestamp: before,
                        relative_offset,
                    });
                }
            }
        }
        self.bytes_since_entry += size as u64;
        self.max_timestamp_so_far = Some(
            self.max_timestamp_so_far
                .map_or(max_timestamp, |m| m.max(max_timestamp)),
        );
    }

    /// The indexed position at or before `relative_offset` (0 when none).
    pub fn position_for(&self, relative_offset: u32) -> u32 {
        let at = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        if at == 0 {
            0
        } else {
            self.offsets[at - 1].position
        }
    }

    /// A relative offset from which a scan finds the first batch with max timestamp ≥ `timestamp`.
    pub fn scan_start_for(&self, timestamp: i64) -> u32 {
        let at = self.times.partition_point(|e| e.timestamp < timestamp);
        if at == 0 {
            0
        } else {
            self.times[at - 1].relative_offset
        }
    }

    /// The indexes of a segment of `size_bytes` whose batches' largest max timestamp is
    /// `max_timestamp`, from the bytes of its index files, ready to note further batches; `None`
    /// unless the entries are well-formed, increasing and inside the segment (a torn, stale or
    /// foreign file is rebuilt by scanning instead). Entries of the time index past the offset
    /// index are dropped: both files are written together, and a shorter one is only sparser.
    pub fn decode(
        offsets: &[u8],
        times: &[u8],
        size_bytes: u64,
        max_timestamp: i64,
    ) -> Option<SegmentIndex> {
        if !offsets.len().is_multiple_of(OFFSET_ENTRY_BYTES)
            || !times.len().is_multiple_of(TIME_ENTRY_BYTES)
        {
            return None;
        }
        // chunks_exact yields slices of exactly the entry size: the conversions cannot fail.
        let be32 = |bytes: &[u8]| u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
        let offsets: Vec<OffsetEntry> = offsets
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|e| OffsetEntry {
                relative_offset: be32(&e[0..4]),
                position: be32(&e[4..8]),
            })
            .collect();
        let times: Vec<TimeEntry> = times
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|e| TimeEntry {
                timestamp: i64::from_be_bytes(e[0..8].try_into().expect("8 bytes")),
                relative_offset: be32(&e[8..12]),
            })
            .collect();
        let increasing = offsets
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
            && times.windows(2).all(|w| w[0].timestamp < w[1].timestamp);
        // A segment with data has an entry at its first batch; an empty one has none.
        let first_ok = match offsets.first() {
            None => size_bytes == 0,
            Some(first) => first.relative_offset == 0 && first.position == 0,
        };
        let last_relative = offsets.last().map_or(0, |e| e.relative_offset);
        if times.iter().any(|t| t.relative_offset > last_relative) {
            return None;
        }
        let last = offsets.last().map_or(0, |e| e.position as u64);
        if !increasing || !first_ok || (size_bytes > 0 && last >= size_bytes) {
            return None;
        }
        Some(SegmentIndex {
            offsets,
            times,
            bytes_since_entry: size_bytes - last,
            max_timestamp_so_far: (size_bytes > 0).then_some(max_timestamp),
        })
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for entry in &self.offsets {
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
            out.extend_from_slice(&entry.position.to_be_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_BYTES);
        for entry in &self.times {
            out.extend_from_slice(&entry.timestamp.to_be_bytes());
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_every_interval_and_lookups() {
        let mut index = SegmentIndex::default();
        // ten batches of 100 bytes, interval 250 bytes, timestamps 10, 20, ...
        for i in 0..10u32 {
            index.note_batch(i, i * 100, 100, (i as i64 + 1) * 10, 250);
        }
        let offsets: Vec<(u32, u32)> = index
            .offsets
            .iter()
            .map(|e| (e.relative_offset, e.position))
            .collect();
        assert_eq!(offsets, vec![(0, 0), (3, 300), (6, 600), (9, 900)]);
        let times: Vec<(i64, u32)> = index
            .times
            .iter()
            .map(|e| (e.timestamp, e.relative_offset))
            .collect();
        assert_eq!(times, vec![(30, 3), (60, 6), (90, 9)]);
        assert_eq!(index.position_for(0), 0);
        assert_eq!(index.position_for(5), 300);
        assert_eq!(index.position_for(100), 900);
        // first batch with max ts >= 45 is batch 4 (ts 50): start at 3 is safe.
        assert_eq!(index.scan_start_for(45), 3);
        assert_eq!(index.scan_start_for(5), 0);
        assert_eq!(index.scan_start_for(1000), 9);
        assert_eq!(index.encode_offsets().len(), 4 * OFFSET_ENTRY_BYTES);
        assert_eq!(index.encode_times().len(), 3 * TIME_ENTRY_BYTES);
    }
}
