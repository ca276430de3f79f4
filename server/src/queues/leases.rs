//! `Leases`: the acquired records of one queue partition as runs, after Kafka's share partition
//! and its "in-flight batches": a contiguous range of offsets acquired together by one owner, with
//! one lock deadline and one delivery count, is one entry, split only where an operation touches
//! part of it (a partial accept, a release or renew of some of its records). Acquiring N fresh
//! records and accepting them again costs O(log runs), not N hash operations.
//!
//! Part of `QueueState`: plain data on the shard that owns the queue's log, `&mut self` only.
//!
//! Invariants (`assert_invariants`): runs are non-empty, disjoint, keyed by their start; `len` is
//! the sum of their lengths. There are never more runs than leased records, so memory stays
//! O(acquired), as the module docs of `state.rs` bound it. Neighbouring runs with equal leases are
//! merged on insert (an AMQP channel's deliveries one at a time grow one run), never required to
//! be: every operation takes whatever runs it finds.

use std::collections::BTreeMap;
use std::time::Instant;

use weir_engine::Offset;

use super::state::ConsumerId;

/// What every record of a run shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Lease {
    pub owner: ConsumerId,
    pub delivery_count: u16,
    pub deadline: Option<Instant>,
    /// The count the journal last recorded for these offsets (a `DeliveryCount` on their last
    /// return, or one restored), so that `QueueState::snapshot` says what the ack store holds.
    pub journaled_count: Option<u16>,
}

/// One run: `[start, end)` with its lease (the start is the map key).
#[derive(Clone, Copy, Debug)]
struct Run {
    end: Offset,
    lease: Lease,
}

/// A run as the callers see it: `[start, end)` and the lease they share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct LeasedRun {
    pub start: Offset,
    pub end: Offset,
    pub lease: Lease,
}

impl LeasedRun {
    pub fn len(&self) -> usize {
        self.end.since(self.start) as usize
    }

    pub fn offsets(&self) -> impl Iterator<Item = Offset> {
        (self.start.get()..self.end.get()).map(Offset::new)
    }
}

#[derive(Debug, Default)]
pub(super) struct Leases {
    runs: BTreeMap<Offset, Run>,
    /// Records leased: the sum of the runs' lengths.
    len: usize,
}

impl Leases {
    /// Records leased.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The run holding `offset`.
    pub fn at(&self, offset: Offset) -> Option<LeasedRun> {
        let (&start, run) = self.runs.range(..=offset).next_back()?;
        (run.end > offset).then_some(LeasedRun {
            start,
            end: run.end,
            lease: run.lease,
        })
    }

    /// Every run, lowest offset first.
    pub fn iter(&self) -> impl Iterator<Item = LeasedRun> + '_ {
        self.runs.iter().map(|(&start, run)| LeasedRun {
            start,
            end: run.end,
            lease: run.lease,
        })
    }

    /// The runs holding any offset of `[start, end)`, lowest first, whole (not clipped).
    pub fn overlapping(&self, start: Offset, end: Offset) -> impl Iterator<Item = LeasedRun> + '_ {
        let end = end.max(start);
        let before = self
            .at(start)
            .filter(|run| run.start < start && start < end);
        let inside = self.runs.range(start..end);
        before
            .into_iter()
            .chain(inside.map(|(&start, run)| LeasedRun {
                start,
                end: run.end,
                lease: run.lease,
            }))
    }

    /// Leases `[start, end)`, none of which is leased, merging with a neighbour holding the same
    /// lease.
    pub fn insert(&mut self, start: Offset, end: Offset, lease: Lease) {
        assert!(start < end, "empty lease run [{start}, {end})");
        let before = self.runs.range(..start).next_back();
        let before = before.map(|(&previous, run)| (previous, *run));
        assert!(
            before.is_none_or(|(_, run)| run.end <= start),
            "offset {start} leased twice"
        );
        let after = self
            .runs
            .range(start..)
            .next()
            .map(|(&next, run)| (next, *run));
        assert!(
            after.is_none_or(|(next, _)| next >= end),
            "offset range [{start}, {end}) leased twice"
        );
        self.len += end.since(start) as usize;
        let mut end = end;
        if let Some((next, run)) = after {
            if next == end && run.lease == lease {
                self.runs.remove(&next);
                end = run.end;
            }
        }
        if let Some((previous, run)) = before {
            if run.end == start && run.lease == lease {
                if let Some(run) = self.runs.get_mut(&previous) {
                    run.end = end;
                }
                return;
            }
        }
        self.runs.insert(start, Run { end, lease });
    }

    /// Takes `[start, end)`, which must lie inside one run, out of the leases; answers its lease.
    pub fn take(&mut self, start: Offset, end: Offset) -> Lease {
        let run = self
            .at(start)
            .unwrap_or_else(|| panic!("offset {start} has no lease"));
        assert!(
            start < end && end <= run.end,
            "[{start}, {end}) not in one run"
        );
        if run.start < start {
            if let Some(left) = self.runs.get_mut(&run.start) {
                left.end = start;
            }
        } else {
            self.runs.remove(&run.start);
        }
        if end < run.end {
            let right = Run {
                end: run.end,
                lease: run.lease,
            };
            self.runs.insert(end, right);
        }
        self.len -= end.since(start) as usize;
        run.lease
    }

    #[cfg(test)]
    pub fn assert_invariants(&self) {
        let mut total = 0;
        let mut previous_end: Option<Offset> = None;
        for run in self.iter() {
            assert!(run.start < run.end);
            assert!(previous_end.is_none_or(|end| end <= run.start));
            previous_end = Some(run.end);
            total += run.len();
        }
        assert_eq!(total, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(value: i64) -> Offset {
        Offset::new(value)
    }

    fn lease(owner: u64) -> Lease {
        Lease {
            owner: ConsumerId(owner),
            delivery_count: 1,
            deadline: None,
            journaled_count: None,
        }
    }

    fn runs(leases: &Leases) -> Vec<(i64, i64, u64)> {
        leases.assert_invariants();
        let all = leases.iter();
        all.map(|run| (run.start.get(), run.end.get(), run.lease.owner.0))
            .collect()
    }

    #[test]
    fn equal_neighbours_merge_and_takes_split() {
        let mut leases = Leases::default();
        leases.insert(offset(0), offset(4), lease(1));
        leases.insert(offset(6), offset(8), lease(1));
        leases.insert(offset(4), offset(6), lease(1));
        assert_eq!(runs(&leases), [(0, 8, 1)], "merged both ways");
        leases.insert(offset(8), offset(9), lease(2));
        assert_eq!(
            runs(&leases),
            [(0, 8, 1), (8, 9, 2)],
            "other owner: no merge"
        );
        assert_eq!(leases.take(offset(3), offset(5)), lease(1));
        assert_eq!(runs(&leases), [(0, 3, 1), (5, 8, 1), (8, 9, 2)]);
        leases.take(offset(0), offset(3));
        leases.take(offset(7), offset(8));
        assert_eq!(runs(&leases), [(5, 7, 1), (8, 9, 2)]);
        assert_eq!(leases.len(), 3);
        assert_eq!(leases.at(offset(6)).map(|r| r.start), Some(offset(5)));
        assert_eq!(leases.at(offset(7)), None);
        let over: Vec<i64> = leases
            .overlapping(offset(6), offset(9))
            .map(|run| run.start.get())
            .collect();
        assert_eq!(over, [5, 8]);
    }

    #[test]
    #[should_panic(expected = "leased twice")]
    fn an_offset_is_never_leased_twice() {
        let mut leases = Leases::default();
        leases.insert(offset(0), offset(4), lease(1));
        leases.insert(offset(3), offset(5), lease(2));
    }
}
