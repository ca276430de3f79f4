//! The queue model test: random operation sequences run against `QueueState` and against a
//! reference model simple enough to be obviously right (a `BTreeMap` of offset → record state),
//! with every result compared. Every durable change also goes the way the ack store takes it
//! (journal → coalesced records → bytes → replay → `DurableQueue`), and the replayed snapshot
//! must equal the state's own after every step; `Restart` rebuilds the state from it.
//!
//! Every new durable queue state joins this model.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use weir_engine::Offset;

use super::ack_store::{apply_replayed, encode_queue, replay_bytes, DurableQueue, QueueKey};
use super::state::{
    Acquired, ArchiveReason, ConsumerId, Durability, QueueError, QueueLimits, QueueState,
    ReturnOutcome, Returned,
};

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        owner: u8,
        max: u8,
    },
    /// A share fetch's take: only records below what its read covered.
    AcquireBefore {
        owner: u8,
        max: u8,
        end: u8,
    },
    /// A batch-aligned share fetch's take: starts only below the lock limit, then may pass it.
    AcquireAligned {
        owner: u8,
        max: u8,
        end: u8,
    },
    /// Retention deleted the log below `start`.
    SkipBelow {
        start: u8,
    },
    /// A priority queue's pick: that record, wherever it is.
    AcquireAt {
        owner: u8,
        offset: u8,
    },
    Accept {
        owner: u8,
        offset: u8,
    },
    /// An ack `multiple`: `count` offsets from `offset` on, in order.
    AcceptAll {
        owner: u8,
        offset: u8,
        count: u8,
    },
    /// A KIP-932 Accept batch: every offset of `count` from `offset` the owner holds, the first
    /// refusal answered (lease runs split at both ends, gaps and others' runs in between).
    AcceptHeld {
        owner: u8,
        offset: u8,
        count: u8,
    },
    Reject {
        owner: u8,
        offset: u8,
    },
    Release {
        owner: u8,
        offset: u8,
    },
    Renew {
        owner: u8,
        offset: u8,
    },
    ReleaseOwner {
        owner: u8,
    },
    Advance {
        ms: u8,
    },
    Append {
        count: u8,
    },
    ArchiveAvailable {
        offset: u8,
    },
    Purge,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let owner = 0u8..3;
    prop_oneof![
        4 => (owner.clone(), 0u8..6).prop_map(|(owner, max)| Op::Acquire { owner, max }),
        2 => (owner.clone(), 0u8..6, any::<u8>())
            .prop_map(|(owner, max, end)| Op::AcquireBefore { owner, max, end }),
        2 => (owner.clone(), 0u8..12, any::<u8>())
            .prop_map(|(owner, max, end)| Op::AcquireAligned { owner, max, end }),
        1 => any::<u8>().prop_map(|start| Op::SkipBelow { start }),
        2 => (owner.clone(), any::<u8>()).prop_map(|(owner, offset)| Op::AcquireAt { owner, offset }),
        4 => (owner.clone(), any::<u8>()).prop_map(|(owner, offset)| Op::Accept { owner, offset }),
        2 => (owner.clone(), any::<u8>(), 0u8..6)
            .prop_map(|(owner, offset, count)| Op::AcceptAll { owner, offset, count }),
        2 => (owner.clone(), any::<u8>(), 0u8..10)
            .prop_map(|(owner, offset, count)| Op::AcceptHeld { owner, offset, count }),
        1 => (owner.clone(), any::<u8>()).prop_map(|(owner, offset)| Op::Reject { owner, offset }),
        2 => (owner.clone(), any::<u8>()).prop_map(|(owner, offset)| Op::Release { owner, offset }),
        1 => (owner.clone(), any::<u8>()).prop_map(|(owner, offset)| Op::Renew { owner, offset }),
        1 => owner.prop_map(|owner| Op::ReleaseOwner { owner }),
        1 => (0u8..20).prop_map(|ms| Op::Advance { ms }),
        2 => (0u8..6).prop_map(|count| Op::Append { count }),
        1 => any::<u8>().prop_map(|offset| Op::ArchiveAvailable { offset }),
        1 => Just(Op::Purge),
        1 => Just(Op::Restart),
    ]
}

fn limits() -> impl Strategy<Value = QueueLimits> {
    (
        1usize..8,
        prop::option::of(1u16..4),
        prop::option::of(1u64..15),
    )
        .prop_map(|(acquired_max, delivery_limit, lock_ms)| QueueLimits {
            acquired_max,
            delivery_limit,
            lock_duration: lock_ms.map(Duration::from_millis),
        })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Record {
    Available {
        count: u16,
    },
    Acquired {
        owner: u8,
        count: u16,
        deadline_ms: Option<u64>,
    },
    Done,
}

/// The reference model. After a restart delivery counts are only lower bounds (the state adds
/// the conservative +1 for records that may have been delivered): `counts_exact` turns false and
/// the model adopts the state's counts once it has checked they are not lower.
struct Model {
    records: BTreeMap<i64, Record>,
    limits: QueueLimits,
    now_ms: u64,
    counts_exact: bool,
    /// A restart or an `archive_available` below the head happened: the finished ranges are no
    /// longer bounded by `acquired_max + 1` (see the bounds in `state.rs`).
    gaps_allowed: bool,
    /// The most records ever acquired at once (an aligned acquire may pass `acquired_max`): the
    /// bound on finished ranges in its place.
    acquired_peak: usize,
}

impl Model {
    /// The lowest available offset.
    fn head(&self) -> Option<i64> {
        let first = self
            .records
            .iter()
            .find(|(_, r)| matches!(r, Record::Available { .. }));
        first.map(|(&offset, _)| offset)
    }

    fn next(&self) -> i64 {
        self.records.len() as i64
    }

    fn floor(&self) -> i64 {
        let first_open = self.records.iter().find(|(_, r)| **r != Record::Done);
        first_open.map_or(self.next(), |(&offset, _)| offset)
    }

    /// ready, acquired, total.
    fn counts(&self) -> (u64, u64, u64) {
        let ready = self
            .records
            .values()
            .filter(|r| matches!(r, Record::Available { .. }));
        let acquired = self
            .records
            .values()
            .filter(|r| matches!(r, Record::Acquired { .. }));
        let (ready, acquired) = (ready.count() as u64, acquired.count() as u64);
        (ready, acquired, ready + acquired)
    }

    /// Hands out up to `max` of the lowest available records below `end`; `aligned`: if any
    /// room is left under `acquired_max`, `max` whole, else within the room.
    fn acquire(&mut self, owner: u8, max: usize, end: i64, aligned: bool) -> Vec<(i64, u16, bool)> {
        let room = self
            .limits
            .acquired_max
            .saturating_sub(self.counts().1 as usize);
        let room = if aligned && room > 0 { max } else { room };
        let deadline_ms = self
            .limits
            .lock_duration
            .map(|d| self.now_ms + d.as_millis() as u64);
        let mut handed = Vec::new();
        for (&offset, record) in self.records.iter_mut() {
            if handed.len() == max.min(room) || offset >= end {
                break;
            }
            if let Record::Available { count } = *record {
                *record = Record::Acquired {
                    owner,
                    count: count + 1,
                    deadline_ms,
                };
                handed.push((offset, count + 1, count > 0));
            }
        }
        handed
    }

    /// The lease on `offset` if `owner` holds it, else the error the state must give.
    fn held(&self, owner: u8, offset: i64) -> Result<(u16, Option<u64>), QueueError> {
        let error_offset = Offset::new(offset);
        match self.records.get(&offset) {
            Some(&Record::Acquired {
                owner: holder,
                count,
                deadline_ms,
            }) if holder == owner => Ok((count, deadline_ms)),
            Some(Record::Acquired { .. }) => Err(QueueError::AcquiredByOther {
                offset: error_offset,
            }),
            _ => Err(QueueError::NotAcquired {
                offset: error_offset,
            }),
        }
    }

    fn give_back(&mut self, offset: i64, count: u16) -> ReturnOutcome {
        if self
            .limits
            .delivery_limit
            .is_some_and(|limit| count >= limit)
        {
            self.records.insert(offset, Record::Done);
            return ReturnOutcome::Archived(ArchiveReason::DeliveryLimit);
        }
        self.records.insert(offset, Record::Available { count });
        ReturnOutcome::Requeued
    }

    /// Returns every acquired record matching `which`, lowest offset first.
    fn return_where(
        &mut self,
        which: impl Fn(u8, Option<u64>) -> bool,
    ) -> Vec<(i64, u16, ReturnOutcome)> {
        let chosen: Vec<(i64, u16)> = self
            .records
            .iter()
            .filter_map(|(&offset, record)| match *record {
                Record::Acquired {
                    owner,
                    count,
                    deadline_ms,
                } if which(owner, deadline_ms) => Some((offset, count)),
                _ => None,
            })
            .collect();
        chosen
            .into_iter()
            .map(|(offset, count)| (offset, count, self.give_back(offset, count)))
            .collect()
    }
}

struct Harness {
    state: QueueState,
    model: Model,
    mirror: HashMap<QueueKey, DurableQueue>,
    key: QueueKey,
    epoch: Instant,
}

impl Harness {
    fn new(limits: QueueLimits, initial: u8) -> Harness {
        let next = Offset::new(i64::from(initial));
        let mut harness = Harness {
            state: QueueState::new(Offset::ZERO, next, limits, Durability::Durable),
            model: Model {
                records: (0..i64::from(initial))
                    .map(|o| (o, Record::Available { count: 0 }))
                    .collect(),
                limits,
                now_ms: 0,
                counts_exact: true,
                gaps_allowed: false,
                acquired_peak: 0,
            },
            mirror: HashMap::new(),
            key: QueueKey::new("model", 0),
            epoch: Instant::now(),
        };
        harness.persist();
        harness
    }

    fn now(&self) -> Instant {
        self.epoch + Duration::from_millis(self.model.now_ms)
    }

    /// An offset in or just around the log.
    fn pick(&self, raw: u8) -> i64 {
        i64::from(raw) % (self.model.next() + 2) - 1
    }

    /// Journal → the ack store's records → bytes → replay → mirror, as the store does it.
    fn persist(&mut self) {
        let mut bytes = Vec::new();
        encode_queue(&self.key, false, &self.state.take_journal(), &mut bytes);
        let replay = replay_bytes(&bytes);
        assert_eq!(replay.corrupt_at, None);
        assert_eq!(replay.valid_bytes, bytes.len() as u64);
        for (key, ops) in replay.records {
            apply_replayed(&mut self.mirror, key, ops);
        }
    }

    fn check(&mut self) {
        self.persist();
        self.state.assert_invariants();
        let counts = self.state.counts();
        assert_eq!(
            (counts.ready, counts.acquired, counts.total),
            self.model.counts()
        );
        assert_eq!(self.state.floor().get(), self.model.floor());
        assert_eq!(self.state.next_offset().get(), self.model.next());
        let durable = self.mirror.get(&self.key).map(DurableQueue::snapshot);
        assert_eq!(
            durable,
            Some(self.state.snapshot()),
            "replayed journal differs"
        );
        assert_eq!(
            self.state.first_available().map(Offset::get),
            self.model.head()
        );
        if !self.model.gaps_allowed {
            let ranges = self.state.finished_range_count();
            assert!(
                ranges <= self.model.limits.acquired_max.max(self.model.acquired_peak) + 1,
                "{ranges} finished ranges"
            );
        }
    }
}

/// One operation on both sides, results compared.
impl Harness {
    fn step(&mut self, op: &Op) {
        match *op {
            Op::Acquire { owner, max } => self.acquire(owner, usize::from(max), None),
            Op::AcquireBefore { owner, max, end } => {
                let end = self.pick(end);
                self.acquire(owner, usize::from(max), Some(end))
            }
            Op::AcquireAligned { owner, max, end } => {
                let end = self.pick(end);
                self.acquire_aligned(owner, usize::from(max), end)
            }
            Op::SkipBelow { start } => self.skip_below(start),
            Op::AcquireAt { owner, offset } => self.acquire_at(owner, offset),
            Op::Accept { owner, offset } => self.finish(owner, offset, false),
            Op::AcceptAll {
                owner,
                offset,
                count,
            } => self.accept_all(owner, offset, count),
            Op::AcceptHeld {
                owner,
                offset,
                count,
            } => self.accept_held(owner, offset, count),
            Op::Reject { owner, offset } => self.finish(owner, offset, true),
            Op::Release { owner, offset } => self.release(owner, offset),
            Op::Renew { owner, offset } => self.renew(owner, offset),
            Op::ReleaseOwner { owner } => {
                let got = self.state.release_owner(ConsumerId(u64::from(owner)));
                let want = self.model.return_where(|holder, _| holder == owner);
                compare_returned(&got, &want);
            }
            Op::Advance { ms } => {
                self.model.now_ms += u64::from(ms);
                let now_ms = self.model.now_ms;
                let got = self.state.expire(self.now());
                let want = self
                    .model
                    .return_where(|_, deadline| deadline.is_some_and(|d| d <= now_ms));
                compare_returned(&got, &want);
            }
            Op::Append { count } => {
                for _ in 0..count {
                    let next = self.model.next();
                    self.model
                        .records
                        .insert(next, Record::Available { count: 0 });
                }
                self.state.on_appended(Offset::new(self.model.next()));
            }
            Op::ArchiveAvailable { offset } => self.archive_available(offset),
            Op::Purge => {
                let want = self.model.counts().0;
                for record in self.model.records.values_mut() {
                    if matches!(record, Record::Available { .. }) {
                        *record = Record::Done;
                    }
                }
                assert_eq!(self.state.purge(), want);
            }
            Op::Restart => self.restart(),
        }
        self.check();
    }

    fn acquire(&mut self, owner: u8, max: usize, end: Option<i64>) {
        let (owner_id, now) = (ConsumerId(u64::from(owner)), self.now());
        // One at a time is the AMQP delivery loop's call; checked against the same model.
        let got = match end {
            // The share fetch's call: runs, checked ascending and flattened.
            Some(end) if max.is_multiple_of(2) => {
                let end = Offset::new(end.max(0));
                let runs = self.state.acquire_runs_before(owner_id, max, end, now);
                assert!(runs.iter().all(|run| !run.is_empty()));
                assert!(runs.windows(2).all(|pair| pair[0].end <= pair[1].start));
                runs.into_iter().flat_map(|run| run.records()).collect()
            }
            Some(end) => {
                let end = Offset::new(end.max(0));
                self.state.acquire_before(owner_id, max, end, now)
            }
            None if max == 1 => self.state.acquire_one(owner_id, now).into_iter().collect(),
            None => self.state.acquire(owner_id, max, now),
        };
        let want = self
            .model
            .acquire(owner, max, end.unwrap_or(i64::MAX), false);
        self.compare_handed(&got, &want);
    }

    fn skip_below(&mut self, raw: u8) {
        let start = self.pick(raw);
        let mut want = 0;
        for (_, record) in self.model.records.range_mut(..start) {
            if matches!(record, Record::Available { .. }) {
                *record = Record::Done;
                want += 1;
            }
        }
        // Acquired records below `start` stay: finished ranges around them.
        self.model.gaps_allowed = true;
        assert_eq!(self.state.skip_below(Offset::new(start.max(0))), want);
    }

    fn acquire_aligned(&mut self, owner: u8, max: usize, end: i64) {
        let (owner_id, now) = (ConsumerId(u64::from(owner)), self.now());
        let end_offset = Offset::new(end.max(0));
        let runs = self
            .state
            .acquire_runs_aligned(owner_id, max, end_offset, now);
        assert!(runs.windows(2).all(|pair| pair[0].end <= pair[1].start));
        let got: Vec<Acquired> = runs.into_iter().flat_map(|run| run.records()).collect();
        let want = self.model.acquire(owner, max, end, true);
        self.compare_handed(&got, &want);
    }

    fn compare_handed(&mut self, got: &[Acquired], want: &[(i64, u16, bool)]) {
        let got_offsets: Vec<i64> = got.iter().map(|r| r.offset.get()).collect();
        let want_offsets: Vec<i64> = want.iter().map(|&(o, _, _)| o).collect();
        assert_eq!(
            got_offsets, want_offsets,
            "acquire hands out the lowest available"
        );
        self.compare_acquired(got, want);
        let acquired = self.model.counts().1 as usize;
        self.model.acquired_peak = self.model.acquired_peak.max(acquired);
    }

    fn acquire_at(&mut self, owner: u8, raw: u8) {
        let offset = self.pick(raw);
        let got: Vec<Acquired> = self
            .state
            .acquire_at(
                ConsumerId(u64::from(owner)),
                Offset::new(offset),
                self.now(),
            )
            .into_iter()
            .collect();
        let room = self.model.limits.acquired_max > self.model.counts().1 as usize;
        let available = matches!(
            self.model.records.get(&offset),
            Some(Record::Available { .. })
        );
        let mut want = Vec::new();
        if room && available {
            // Out of log order: the ranges finished around it are no longer bounded.
            self.model.gaps_allowed |= self.model.head() != Some(offset);
            let deadline_ms = self
                .model
                .limits
                .lock_duration
                .map(|d| self.model.now_ms + d.as_millis() as u64);
            if let Some(Record::Available { count }) = self.model.records.get(&offset).copied() {
                self.model.records.insert(
                    offset,
                    Record::Acquired {
                        owner,
                        count: count + 1,
                        deadline_ms,
                    },
                );
                want.push((offset, count + 1, count > 0));
            }
        }
        let got_offsets: Vec<i64> = got.iter().map(|r| r.offset.get()).collect();
        assert_eq!(got_offsets, [offset][..want.len()], "acquire_at {offset}");
        self.compare_acquired(&got, &want);
    }

    /// What the state handed out against what the model did (counts are lower bounds after a
    /// restart).
    fn compare_acquired(&mut self, got: &[Acquired], want: &[(i64, u16, bool)]) {
        for (
            &Acquired {
                offset,
                delivery_count,
                redelivered,
            },
            &(_, count, was_delivered),
        ) in got.iter().zip(want)
        {
            if self.model.counts_exact {
                assert_eq!(
                    (delivery_count, redelivered),
                    (count, was_delivered),
                    "{offset}"
                );
            } else {
                // Never fewer deliveries than really happened; never unflagged if delivered.
                assert!(
                    delivery_count >= count,
                    "{offset}: {delivery_count} < {count}"
                );
                assert!(
                    redelivered || !was_delivered,
                    "{offset} not flagged redelivered"
                );
                assert_eq!(redelivered, delivery_count > 1);
                if let Some(Record::Acquired { count, .. }) =
                    self.model.records.get_mut(&offset.get())
                {
                    *count = delivery_count;
                }
            }
        }
    }

    fn finish(&mut self, owner: u8, raw: u8, reject: bool) {
        let offset = self.pick(raw);
        let consumer = ConsumerId(u64::from(owner));
        let got = if reject {
            self.state.reject(consumer, Offset::new(offset))
        } else {
            self.state.accept(consumer, Offset::new(offset))
        };
        let want = self.model.held(owner, offset).map(|_| ());
        if want.is_ok() {
            self.model.records.insert(offset, Record::Done);
        }
        assert_eq!(got, want);
    }

    /// The model accepts one offset after the other and stops at the first it refuses.
    fn accept_all(&mut self, owner: u8, raw: u8, count: u8) {
        let first = self.pick(raw);
        let offsets: Vec<i64> = (first..first + i64::from(count)).collect();
        let typed: Vec<Offset> = offsets.iter().map(|&offset| Offset::new(offset)).collect();
        let got = self.state.accept_all(ConsumerId(u64::from(owner)), &typed);
        let mut want = (0, Ok(()));
        for &offset in &offsets {
            if let Err(error) = self.model.held(owner, offset) {
                want.1 = Err(error);
                break;
            }
            self.model.records.insert(offset, Record::Done);
            want.0 += 1;
        }
        assert_eq!(got, want);
    }

    /// The model accepts every offset the owner holds and answers the lowest it refused.
    fn accept_held(&mut self, owner: u8, raw: u8, count: u8) {
        let first = self.pick(raw).max(0);
        let end = first + i64::from(count);
        let got = self.state.accept_held(
            ConsumerId(u64::from(owner)),
            Offset::new(first),
            Offset::new(end),
        );
        let mut want = None;
        for offset in first..end {
            match self.model.held(owner, offset) {
                Ok(_) => {
                    self.model.records.insert(offset, Record::Done);
                }
                Err(error) => {
                    want.get_or_insert(error);
                }
            }
        }
        assert_eq!(got, want);
    }

    fn release(&mut self, owner: u8, raw: u8) {
        let offset = self.pick(raw);
        let got = self
            .state
            .release(ConsumerId(u64::from(owner)), Offset::new(offset));
        let want = self
            .model
            .held(owner, offset)
            .map(|(count, _)| self.model.give_back(offset, count));
        assert_eq!(got, want);
    }

    fn renew(&mut self, owner: u8, raw: u8) {
        let offset = self.pick(raw);
        let got = self.state.renew(
            ConsumerId(u64::from(owner)),
            Offset::new(offset),
            self.now(),
        );
        let want = self.model.held(owner, offset);
        if let Ok((count, Some(_))) = want {
            let deadline_ms = self
                .model
                .limits
                .lock_duration
                .map(|d| self.model.now_ms + d.as_millis() as u64);
            self.model.records.insert(
                offset,
                Record::Acquired {
                    owner,
                    count,
                    deadline_ms,
                },
            );
        }
        assert_eq!(got, want.map(|_| ()));
    }

    fn archive_available(&mut self, raw: u8) {
        let offset = self.pick(raw);
        let got = self.state.archive_available(Offset::new(offset));
        let available = matches!(
            self.model.records.get(&offset),
            Some(Record::Available { .. })
        );
        if available && self.model.head() != Some(offset) {
            self.model.gaps_allowed = true;
        }
        if available {
            self.model.records.insert(offset, Record::Done);
            assert_eq!(got, Ok(()));
        } else {
            assert_eq!(
                got,
                Err(QueueError::NotAvailable {
                    offset: Offset::new(offset)
                })
            );
        }
    }

    /// The broker restarts: the state comes back from what the ack store replayed; everything
    /// acquired is available again.
    fn restart(&mut self) {
        self.persist();
        let snapshot = self.mirror[&self.key].snapshot();
        let next = Offset::new(self.model.next());
        self.state = QueueState::restore(&snapshot, next, self.model.limits, Durability::Durable);
        for record in self.model.records.values_mut() {
            if let Record::Acquired { count, .. } = *record {
                *record = Record::Available { count };
            }
        }
        self.model.counts_exact = false;
        self.model.gaps_allowed = true;
    }
}

fn compare_returned(got: &[Returned], want: &[(i64, u16, ReturnOutcome)]) {
    let got: Vec<(i64, u16, ReturnOutcome)> = got
        .iter()
        .map(|r| (r.offset.get(), r.delivery_count, r.outcome))
        .collect();
    assert_eq!(got, want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn queue_state_matches_the_model(
        limits in limits(),
        initial in 0u8..8,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut harness = Harness::new(limits, initial);
        harness.check();
        for op in &ops {
            harness.step(op);
        }
    }
}
