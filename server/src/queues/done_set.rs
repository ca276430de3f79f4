//! `DoneSet`: which offsets of one queue partition are finished (acknowledged or archived), as a
//! floor (every offset below it is finished) plus disjoint ranges of finished offsets above it.
//!
//! Plain data, used by the owning shard only (inside `QueueState` and the ack store's mirror).
//! Every operation is O(log n + k) for k ranges merged: consumers acknowledge far ahead of the
//! floor all the time (several consumers, prefetch windows), so a set of single offsets or a
//! linear scan would not do. Invariants (checked by `assert_invariants` in tests and the model):
//! ranges are non-empty, lie strictly above the floor (a range that touches the floor is folded
//! into it), do not overlap and are not adjacent (adjacent ranges merge).
//!
//! ```text
//!   floor            ranges: [s1, e1)      [s2, e2)
//!   ──────┤░░░░░░░░░░░░┤██████████┤░░░░░░░░░┤█████┤░░░░
//!   all finished       open       finished  open  finished  open ...
//! ```

use std::collections::BTreeMap;

use weir_engine::Offset;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DoneSet {
    floor: Offset,
    /// start → end (exclusive).
    ranges: BTreeMap<Offset, Offset>,
    /// Offsets held by `ranges` (not counting the floor).
    count_above_floor: u64,
}

impl DoneSet {
    /// A set whose every offset below `floor` is finished.
    pub fn new(floor: Offset) -> DoneSet {
        DoneSet {
            floor,
            ranges: BTreeMap::new(),
            count_above_floor: 0,
        }
    }

    pub fn floor(&self) -> Offset {
        self.floor
    }

    /// Finished offsets at or above the floor.
    pub fn count_above_floor(&self) -> u64 {
        self.count_above_floor
    }

    /// The finished ranges above the floor, lowest first.
    pub fn ranges(&self) -> impl Iterator<Item = (Offset, Offset)> + '_ {
        self.ranges.iter().map(|(&start, &end)| (start, end))
    }

    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    pub fn contains(&self, offset: Offset) -> bool {
        offset < self.floor || self.range_end_at(offset).is_some()
    }

    /// The end of the finished range holding `offset` (above the floor), if any.
    pub fn range_end_at(&self, offset: Offset) -> Option<Offset> {
        let (_, &end) = self.ranges.range(..=offset).next_back()?;
        (end > offset).then_some(end)
    }

    /// The start of the lowest finished range that begins after `offset`, if any.
    pub fn next_start_after(&self, offset: Offset) -> Option<Offset> {
        use std::ops::Bound::{Excluded, Unbounded};
        let (&start, _) = self.ranges.range((Excluded(offset), Unbounded)).next()?;
        Some(start)
    }

    /// Marks `[start, end)` finished (parts already finished are fine) and folds ranges that
    /// reach the floor into it. Returns how many offsets were newly finished.
    pub fn insert(&mut self, start: Offset, end: Offset) -> u64 {
        let start = start.max(self.floor);
        if end <= start {
            return 0;
        }
        if let Some(added) = self.insert_at_an_edge(start, end) {
            return added;
        }
        let mut merged_start = start;
        let mut merged_end = end;
        let mut already = 0u64;
        // The range that begins at or before `start` and touches it, then every range that begins
        // inside `(start, end]`: exactly the ranges the union absorbs.
        let mut absorbed: Vec<Offset> = Vec::new();
        if let Some((&range_start, &range_end)) = self.ranges.range(..=start).next_back() {
            if range_end >= start {
                absorbed.push(range_start);
            }
        }
        absorbed.extend(
            self.ranges
                .range((
                    std::ops::Bound::Excluded(start),
                    std::ops::Bound::Included(end),
                ))
                .map(|(&range_start, _)| range_start),
        );
        for range_start in absorbed {
            let range_end = self.ranges.remove(&range_start).unwrap_or(range_start);
            merged_start = merged_start.min(range_start);
            merged_end = merged_end.max(range_end);
            already += length(range_start, range_end);
        }
        let added = length(merged_start, merged_end) - already;
        self.ranges.insert(merged_start, merged_end);
        self.count_above_floor += length(merged_start, merged_end);
        self.count_above_floor -= already;
        self.fold_into_floor();
        added
    }

    /// The two common cases without a search or an allocation: acknowledgements in order at the
    /// floor, and ones that extend the highest range (another consumer's, ahead of the floor).
    /// `None` when `[start, end)` (above the floor, non-empty) is neither.
    fn insert_at_an_edge(&mut self, start: Offset, end: Offset) -> Option<u64> {
        let first_start = self.ranges.first_key_value().map(|(&s, _)| s);
        if start == self.floor && first_start.is_none_or(|first| first > end) {
            self.floor = end;
            return Some(length(start, end));
        }
        let (_, last_end) = self.ranges.last_key_value()?;
        if *last_end != start {
            return None;
        }
        *self.ranges.last_entry()?.into_mut() = end;
        self.count_above_floor += length(start, end);
        Some(length(start, end))
    }

    /// Raises the floor to at least `floor` (everything below it becomes finished).
    pub fn raise_floor(&mut self, floor: Offset) -> u64 {
        self.insert(self.floor, floor)
    }

    fn fold_into_floor(&mut self) {
        while let Some((&start, &end)) = self.ranges.first_key_value() {
            if start > self.floor {
                break;
            }
            self.ranges.remove(&start);
            self.count_above_floor -= length(start, end);
            self.floor = self.floor.max(end);
        }
    }

    /// Drops every finished offset at or above `end` (the log lost its tail: those offsets will
    /// be reused by new messages) and lowers the floor to `end` if it was above.
    pub fn clip(&mut self, end: Offset) {
        self.floor = self.floor.min(end);
        let above = self.ranges.split_off(&end);
        for (start, range_end) in above {
            self.count_above_floor -= length(start, range_end);
        }
        // Every range left starts below `end`, so cutting the last one leaves it non-empty.
        if let Some(range_end) = self.ranges.values_mut().next_back() {
            if *range_end > end {
                self.count_above_floor -= length(end, *range_end);
                *range_end = end;
            }
        }
    }

    #[cfg(test)]
    pub fn assert_invariants(&self) {
        let mut previous_end = self.floor;
        let mut count = 0;
        for (&start, &end) in &self.ranges {
            assert!(
                start > previous_end,
                "range {start}..{end} touches {previous_end}"
            );
            assert!(end > start);
            count += length(start, end);
            previous_end = end;
        }
        assert_eq!(count, self.count_above_floor);
    }
}

fn length(start: Offset, end: Offset) -> u64 {
    assert!(end >= start, "range {start}..{end} runs backwards");
    end.since(start) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(value: i64) -> Offset {
        Offset::new(value)
    }

    /// Inserts `inserts` into a set with floor 0 and checks floor, ranges and count.
    fn check(inserts: &[(i64, i64)], floor: i64, ranges: &[(i64, i64)]) {
        let mut set = DoneSet::new(Offset::ZERO);
        let mut added = 0;
        for &(start, end) in inserts {
            added += set.insert(offset(start), offset(end));
            set.assert_invariants();
        }
        let got: Vec<(i64, i64)> = set.ranges().map(|(s, e)| (s.get(), e.get())).collect();
        assert_eq!(set.floor().get(), floor, "floor after {inserts:?}");
        assert_eq!(got, ranges, "ranges after {inserts:?}");
        let expected: u64 = floor as u64 + ranges.iter().map(|(s, e)| (e - s) as u64).sum::<u64>();
        assert_eq!(added, expected, "added after {inserts:?}");
    }

    #[test]
    fn inserts_merge_and_fold_into_the_floor() {
        check(&[], 0, &[]);
        check(&[(0, 1)], 1, &[]);
        check(&[(5, 6)], 0, &[(5, 6)]);
        check(&[(5, 6), (6, 7)], 0, &[(5, 7)]);
        check(&[(6, 7), (5, 6)], 0, &[(5, 7)]);
        check(&[(5, 6), (7, 8)], 0, &[(5, 6), (7, 8)]);
        check(&[(5, 6), (7, 8), (6, 7)], 0, &[(5, 8)]);
        check(&[(5, 6), (7, 8), (0, 5)], 6, &[(7, 8)]);
        check(&[(5, 6), (7, 8), (0, 9)], 9, &[]);
        check(&[(2, 4), (3, 10), (20, 30), (1, 25)], 0, &[(1, 30)]);
        check(&[(2, 4), (2, 4), (3, 4)], 0, &[(2, 4)]);
        check(&[(4, 4), (9, 3)], 0, &[]);
        check(&[(10, 20), (30, 40), (15, 35)], 0, &[(10, 40)]);
        check(&[(10, 20), (30, 40), (20, 30)], 0, &[(10, 40)]);
    }

    proptest::proptest! {
        /// Any run of inserts (the edge fast paths included) finishes exactly the offsets a
        /// plain set of them holds, and reports each newly finished one once.
        #[test]
        fn inserts_agree_with_a_plain_set(
            inserts in proptest::collection::vec((0i64..60, 0i64..8), 1..40),
        ) {
            let mut set = DoneSet::new(offset(0));
            let mut plain = std::collections::BTreeSet::new();
            for (start, length) in inserts {
                let added = set.insert(offset(start), offset(start + length));
                let before = plain.len();
                plain.extend(start..start + length);
                set.assert_invariants();
                proptest::prop_assert_eq!(added as usize, plain.len() - before);
            }
            let members: Vec<i64> = (0..70).filter(|&o| set.contains(offset(o))).collect();
            proptest::prop_assert_eq!(members, plain.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn contains_and_clip() {
        let mut set = DoneSet::new(offset(3));
        set.insert(offset(5), offset(8));
        set.insert(offset(10), offset(12));
        let members: Vec<i64> = (0..14).filter(|&o| set.contains(offset(o))).collect();
        assert_eq!(members, [0, 1, 2, 5, 6, 7, 10, 11]);
        assert_eq!(set.range_end_at(offset(6)), Some(offset(8)));
        assert_eq!(set.range_end_at(offset(8)), None);
        set.clip(offset(11));
        set.assert_invariants();
        assert_eq!(set.count_above_floor(), 4);
        set.clip(offset(6));
        set.assert_invariants();
        assert_eq!(set.count_above_floor(), 1);
        set.clip(offset(2));
        set.assert_invariants();
        assert_eq!((set.floor(), set.count_above_floor()), (offset(2), 0));
    }
}
