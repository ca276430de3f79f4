//! `QueueState`: the per-message state of one queue partition (an AMQP queue, or one partition of
//! a Kafka share group), beside the log that holds the messages. Pure: no I/O, no clock (time is
//! passed in as `Instant`), no protocol types.
//!
//! Runs on the shard that owns the queue's log; `!Sync` by intent (plain `&mut self`).
//!
//! A message is a log offset in `[floor, next)`. Its state:
//! ```text
//!              acquire                  accept
//!  available ───────────► acquired ───────────────► acknowledged ┐
//!      ▲  ▲                │  │  │      reject                     ├─ finished (DoneSet)
//!      │  └────────────────┘  │  └────────────────► archived ─────┘
//!      │  release / owner gone │  delivery limit reached on return
//!      │  / lock expired       │  (caller dead-letters an archived message)
//!      └── purge, archive_available: available → archived (no delivery)
//! ```
//! | operation       | precondition (else `QueueError`)   | effect                                  |
//! |-----------------|------------------------------------|-----------------------------------------|
//! | `acquire`       | —                                  | lowest available offsets → acquired     |
//! | `acquire_at`    | that offset available              | it → acquired (count journaled)         |
//! | `accept`        | acquired by this owner             | acknowledged                            |
//! | `accept_all`    | each acquired by this owner        | as `accept` of each, up to the first not |
//! | `accept_range`  | each acquired by this owner        | as `accept_all` of `[start, end)`       |
//! | `accept_held`   | —                                  | `accept` of those held in `[start, end)`, lowest refusal answered |
//! | `reject`        | acquired by this owner             | archived (`Rejected`)                   |
//! | `release`       | acquired by this owner             | available, or archived at the limit     |
//! | `renew`         | acquired by this owner             | lock deadline moves to now + duration   |
//! | `release_owner` | —                                  | all of the owner's → as `release`       |
//! | `expire`        | —                                  | locks past deadline → as `release`      |
//! | `purge`         | —                                  | every available → archived (`Purged`)   |
//!
//! Order: `acquire` always hands out the lowest available offsets, so requeued messages come back
//! in log order before newer ones (as RabbitMQ does). Offsets below `frontier` that are neither
//! finished nor acquired sit in `returned` with their delivery counts; offsets at or above it have
//! never been acquired since the queue was opened. A caller with an order of its own (an AMQP
//! priority queue) names the record with `acquire_at` instead: the frontier moves past it and the
//! available records it passed wait in `returned` with their counts (0: never delivered).
//!
//! Acquired records are kept as lease runs (`leases.rs`, Kafka's share partition "in-flight
//! batches"): the records one `acquire` takes together at the frontier are one run with one
//! owner, deadline and delivery count, so handing out N records and accepting them back as a
//! range (`accept_range`, `accept_held`) costs O(log runs), not N map updates. Operations on
//! part of a run (an accept, release, reject or renew of some of its records, an AMQP ack of one
//! delivery) split it; records given back one at a time come back as runs of one (merged with an
//! equal neighbour). Every operation keeps its per-record meaning: the runs are how the state is
//! stored, not what it means. An owner's books (`Owned`) keep the ranges it was handed and how
//! many records it holds; the deadline book counts records per lock deadline.
//!
//! Bounds (memory is O(acquired_max), whatever the log length): at most `limits.acquired_max`
//! (≤ `ACQUIRED_RECORDS_MAX`) records acquired, except that a share fetch's batch-aligned
//! acquisition (`acquire_runs_aligned`), which starts only below `acquired_max`, may finish the
//! producer batch it started past it, as Kafka's `SharePartition` does (never past
//! `ACQUIRED_RECORDS_MAX`); below, `acquired_max` stands for the most ever acquired at once.
//! `returned` only ever holds records that were acquired and came back, and `acquire` drains it
//! before advancing `frontier`, so `acquired + returned ≤ acquired_max` between restarts
//! (`acquire_at` breaks this bound: what it skips waits in `returned`, so a priority queue's
//! state is O(ready), as its messages are). Below `frontier` the finished ranges are separated
//! only by those records, so there are at most `acquired_max + 1` of them; above
//! it, only a restore (whose ranges obeyed the same bound when written) or `archive_available`
//! on a record that is not the queue's head can leave gaps. RabbitMQ's TTL and drop-head only
//! ever take the head (`first_available`), which leaves none.
//!
//! Durability: a durable state records a journal of what changed (`JournalEntry`), which the
//! caller drains with `take_journal` and hands to the ack store. The state never waits for it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use weir_engine::Offset;

use super::done_set::DoneSet;
use super::leases::{Lease, LeasedRun, Leases};
use crate::integer_hash::IntegerMap;

/// Hard cap on records acquired at once in one queue partition. AMQP has no such limit (prefetch
/// 0 is unlimited); Weir caps unacknowledged deliveries per queue here so that per-queue memory is
/// bounded (about 100 bytes per acquired record). A consumer past it simply gets no more
/// deliveries until it acknowledges.
pub const ACQUIRED_RECORDS_MAX: usize = 65_536;

/// KIP-932's `group.share.partition.max.record.locks` default.
pub const SHARE_GROUP_ACQUIRED_RECORDS: usize = 2_000;
/// KIP-932's `group.share.delivery.count.limit` default.
pub const SHARE_GROUP_DELIVERY_LIMIT: u16 = 5;
/// KIP-932's `group.share.record.lock.duration.ms` default.
pub const SHARE_GROUP_LOCK_DURATION: Duration = Duration::from_secs(30);

/// How far ahead of the acquisition frontier the journal's "may have been delivered" mark is set.
/// A restart flags every unfinished offset below the persisted mark as redelivered; writing the
/// mark ahead (and again when the frontier is half-way to it) means a crash loses the flag only if
/// more than half this many records were acquired within one ack-store flush. The price: after a
/// restart up to this many never-delivered records carry one delivery too many.
pub const DELIVERED_MARK_AHEAD: i64 = 1_024;

const _: () = assert!(SHARE_GROUP_ACQUIRED_RECORDS <= ACQUIRED_RECORDS_MAX);
const _: () = assert!(DELIVERED_MARK_AHEAD >= 2);

/// The acquiring party, chosen by the protocol layer and opaque here: AMQP packs its
/// (connection, channel) pair, a share group its member. Everything a consumer holds is released
/// together with `release_owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u64);

/// Per-queue limits, set when the queue is opened; a share group's lock duration and delivery
/// limit can change later (`QueueState::set_limits`, its group configs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Records acquired at once, at most `ACQUIRED_RECORDS_MAX`.
    pub acquired_max: usize,
    /// A record returned (released, owner gone, lock expired) after it was acquired this many
    /// times is archived with `ArchiveReason::DeliveryLimit` instead. `None`: no limit. KIP-932's
    /// limit 5 means five deliveries; RabbitMQ's `x-delivery-limit` N allows N returns, i.e. N+1
    /// deliveries: the AMQP layer passes N+1.
    pub delivery_limit: Option<u16>,
    /// Acquisition lock (share groups: 30 s); `None`: held until released (AMQP).
    pub lock_duration: Option<Duration>,
}

impl QueueLimits {
    /// An AMQP queue: no lock, no delivery limit, the hard cap on unacknowledged records.
    pub const AMQP: QueueLimits = QueueLimits {
        acquired_max: ACQUIRED_RECORDS_MAX,
        delivery_limit: None,
        lock_duration: None,
    };
    /// A share-group partition with KIP-932's defaults.
    pub const SHARE_GROUP: QueueLimits = QueueLimits {
        acquired_max: SHARE_GROUP_ACQUIRED_RECORDS,
        delivery_limit: Some(SHARE_GROUP_DELIVERY_LIMIT),
        lock_duration: Some(SHARE_GROUP_LOCK_DURATION),
    };
}

/// Whether the state keeps a journal for the ack store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Durable,
    /// A non-durable queue: nothing to persist, no journal kept.
    Transient,
}

/// One record handed to a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    pub offset: Offset,
    /// Times acquired, this one included (1 on first delivery; KIP-932's delivery count; RabbitMQ's
    /// `x-delivery-count` header is this minus one).
    pub delivery_count: u16,
    /// Acquired before (or possibly before, across a restart): AMQP's `redelivered` flag.
    pub redelivered: bool,
}

/// Why a record was archived; the caller turns it into `x-death` / a dead-letter record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveReason {
    /// `reject` (AMQP nack/reject without requeue, KIP-932 Reject): x-death reason `rejected`.
    Rejected,
    /// Returned after `delivery_limit` deliveries: x-death reason `delivery_limit`.
    DeliveryLimit,
    /// Archived while available by the caller (`archive_available`: TTL `expired`, max-length
    /// `maxlen`): the caller knows the reason.
    Discarded,
    /// `purge`: RabbitMQ drops purged messages without dead-lettering them.
    Purged,
}

/// What happened to a record that came back from its consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnOutcome {
    /// Available again, ahead of newer records.
    Requeued,
    /// Finished without acknowledgement; the caller dead-letters it.
    Archived(ArchiveReason),
}

/// A record returned by `release_owner` or `expire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Returned {
    pub offset: Offset,
    /// Times it was acquired so far.
    pub delivery_count: u16,
    pub outcome: ReturnOutcome,
}

/// An operation on a record the caller does not hold. AMQP answers PRECONDITION_FAILED (406,
/// "unknown delivery tag"), share groups INVALID_RECORD_STATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// Not acquired by anyone: available, finished, expired, or outside the log.
    #[error("offset {offset} is not acquired")]
    NotAcquired { offset: Offset },
    /// Acquired, but by another consumer.
    #[error("offset {offset} is acquired by another consumer")]
    AcquiredByOther { offset: Offset },
    /// `archive_available` on a record that is not available.
    #[error("offset {offset} is not available")]
    NotAvailable { offset: Offset },
}

/// A change the ack store must persist. Replaying a journal in order onto the state it started
/// from gives the state's durable part (`QueueSnapshot`); entries are idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalEntry {
    /// Every offset below this is finished (a new queue whose log starts here).
    Floor(Offset),
    /// `[start, end)` finished (acknowledged or archived).
    Done { start: Offset, end: Offset },
    /// Every offset below this may have been delivered.
    Delivered(Offset),
    /// `offset` came back available after `count` deliveries.
    DeliveryCount { offset: Offset, count: u16 },
}

/// The durable part of a queue's state: what the ack store keeps and restores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    pub floor: Offset,
    /// Finished ranges above the floor, `[start, end)`, ascending and disjoint.
    pub done: Vec<(Offset, Offset)>,
    /// Every unfinished offset below this may have been delivered before the restart.
    pub delivered_below: Offset,
    /// Delivery counts of records that came back available, for offsets at or above the floor.
    pub delivery_counts: Vec<(Offset, u16)>,
}

/// Ready, acquired (unacknowledged) and their sum, as RabbitMQ and KIP-932 report them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub ready: u64,
    pub acquired: u64,
    pub total: u64,
}

/// Records handed out together: `[start, end)`, each with this delivery count (KIP-932's
/// acquired records ranges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcquiredRun {
    pub start: Offset,
    pub end: Offset,
    /// Times acquired, this one included (as `Acquired::delivery_count`).
    pub delivery_count: u16,
}

impl AcquiredRun {
    /// Each record of the run.
    pub fn records(self) -> impl Iterator<Item = Acquired> {
        (self.start.get()..self.end.get()).map(move |offset| Acquired {
            offset: Offset::new(offset),
            delivery_count: self.delivery_count,
            redelivered: self.delivery_count > 1,
        })
    }

    pub fn len(&self) -> usize {
        self.end.since(self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Appends `run` to `runs` (lowest first), extending the last one instead when `run`
    /// continues it with the same delivery count.
    pub fn push_merged(runs: &mut Vec<AcquiredRun>, run: AcquiredRun) {
        match runs.last_mut() {
            Some(last) if last.end == run.start && last.delivery_count == run.delivery_count => {
                last.end = run.end;
            }
            _ => runs.push(run),
        }
    }
}

/// What one owner holds: the ranges of offsets it was handed, in order, and how many records it
/// still holds. Ranges it settled are left in `handed` (pruned once they outnumber what it
/// holds, dropped with the entry when it holds nothing), so that settling costs no search; what
/// it holds are the runs leased to it that overlap these ranges.
#[derive(Debug, Default)]
struct Owned {
    handed: Vec<(Offset, Offset)>,
    live: usize,
}

impl Owned {
    fn add(&mut self, start: Offset, end: Offset) {
        self.live += end.since(start) as usize;
        match self.handed.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.handed.push((start, end)),
        }
    }
}

/// The per-message state of one queue partition. See the module docs.
#[derive(Debug)]
pub struct QueueState {
    limits: QueueLimits,
    /// The log's end: the next offset the log will assign.
    next: Offset,
    done: DoneSet,
    /// Lowest offset not yet acquired since open. `done.floor() <= frontier <= next`.
    frontier: Offset,
    /// Available offsets below `frontier`, with the deliveries they have had.
    returned: BTreeMap<Offset, u16>,
    /// The acquired records as runs (`leases.rs`): a share fetch's records are one entry, taken
    /// and settled whole unless an acknowledgement splits them.
    acquired: Leases,
    by_owner: IntegerMap<ConsumerId, Owned>,
    /// Leases per lock deadline. A fetch or a delivery run takes its records at one `now`, so
    /// there are about as many deadlines as fetches in one lock duration, not as records.
    deadlines: BTreeMap<Instant, u32>,
    /// From a restore: delivery counts of offsets at or above `frontier`.
    prior_counts: BTreeMap<Offset, u16>,
    /// From a restore: unfinished offsets below this were possibly delivered before the restart.
    delivered_below: Offset,
    /// The highest `Delivered` mark journaled.
    journaled_mark: Offset,
    journal: Option<Vec<JournalEntry>>,
}

impl QueueState {
    /// A new queue whose log holds `[start, next)`, none of it delivered yet.
    pub fn new(start: Offset, next: Offset, limits: QueueLimits, durability: Durability) -> Self {
        let snapshot = QueueSnapshot {
            floor: start,
            delivered_below: start,
            ..QueueSnapshot::default()
        };
        let mut state = QueueState::restore(&snapshot, next, limits, durability);
        state.record(JournalEntry::Floor(start));
        state
    }

    /// The state after a restart: `snapshot` from the ack store, `next` the log's end now.
    /// Nothing is acquired; unfinished offsets below `snapshot.delivered_below` come back flagged
    /// redelivered with one more delivery counted (the conservative +1: they may have been
    /// acquired when the broker stopped).
    pub fn restore(
        snapshot: &QueueSnapshot,
        next: Offset,
        limits: QueueLimits,
        durability: Durability,
    ) -> Self {
        assert!(limits.acquired_max <= ACQUIRED_RECORDS_MAX);
        let mut done = DoneSet::new(snapshot.floor);
        for &(start, end) in &snapshot.done {
            done.insert(start, end);
        }
        // Acks persisted for offsets the log no longer has (it lost its unsynced tail) must not
        // hide the new messages that will take those offsets.
        done.clip(next);
        let floor = done.floor();
        let prior_counts = snapshot
            .delivery_counts
            .iter()
            .filter(|&&(offset, _)| offset >= floor && offset < next)
            .copied()
            .collect();
        QueueState {
            limits,
            next,
            done,
            frontier: floor,
            returned: BTreeMap::new(),
            acquired: Leases::default(),
            by_owner: IntegerMap::default(),
            deadlines: BTreeMap::new(),
            prior_counts,
            delivered_below: snapshot.delivered_below,
            journaled_mark: snapshot.delivered_below,
            journal: (durability == Durability::Durable).then(Vec::new),
        }
    }

    pub fn limits(&self) -> QueueLimits {
        self.limits
    }

    /// New limits from now on: a lock duration applies to the records acquired after it (a
    /// record acquired before keeps its deadline), a delivery limit to the records returned
    /// after it. `acquired_max` stays what it was (records acquired past a lower cap could not
    /// be given back without a release).
    pub fn set_limits(&mut self, limits: QueueLimits) {
        self.limits = QueueLimits {
            acquired_max: self.limits.acquired_max,
            ..limits
        };
    }

    /// Every offset below the floor is finished: the caller may delete whole log segments below
    /// it (once the ack store has persisted it: `AckStore::durable_floor`).
    pub fn floor(&self) -> Offset {
        self.done.floor()
    }

    /// The log's end as last reported by `on_appended`.
    pub fn next_offset(&self) -> Offset {
        self.next
    }

    /// The log grew: offsets below `next` exist. Offsets only grow.
    pub fn on_appended(&mut self, next: Offset) {
        assert!(
            next >= self.next,
            "queue log end moved back from {} to {next}",
            self.next
        );
        self.next = next;
    }

    pub fn counts(&self) -> QueueCounts {
        let total = self.next.since(self.done.floor()) as u64 - self.done.count_above_floor();
        let acquired = self.acquired.len() as u64;
        QueueCounts {
            ready: total - acquired,
            acquired,
            total,
        }
    }

    /// Whether `offset` is acquired by `owner`.
    pub fn is_held_by(&self, owner: ConsumerId, offset: Offset) -> bool {
        self.acquired
            .at(offset)
            .is_some_and(|run| run.lease.owner == owner)
    }

    /// The offsets `owner` holds, lowest first.
    pub fn held_by(&self, owner: ConsumerId) -> Vec<Offset> {
        let runs = self.owner_runs(owner);
        runs.iter().flat_map(LeasedRun::offsets).collect()
    }

    /// The runs leased to `owner`, lowest first: those overlapping the ranges it was handed
    /// (every offset it holds lies in one of them; a run is never shared by two owners).
    fn owner_runs(&self, owner: ConsumerId) -> Vec<LeasedRun> {
        let Some(owned) = self.by_owner.get(&owner) else {
            return Vec::new();
        };
        let mut runs: Vec<LeasedRun> = owned
            .handed
            .iter()
            .flat_map(|&(start, end)| self.acquired.overlapping(start, end))
            .filter(|run| run.lease.owner == owner)
            .collect();
        runs.sort_unstable_by_key(|run| run.start);
        runs.dedup_by_key(|run| run.start);
        runs
    }

    /// The lowest available offset (RabbitMQ's queue head: what TTL and drop-head look at).
    pub fn first_available(&self) -> Option<Offset> {
        if let Some((&offset, _)) = self.returned.first_key_value() {
            return Some(offset);
        }
        let mut candidate = self.frontier;
        while candidate < self.next {
            match self.done.range_end_at(candidate) {
                Some(end) => candidate = end,
                None => return Some(candidate),
            }
        }
        None
    }

    /// The earliest lock deadline, for the caller's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines
            .first_key_value()
            .map(|(&deadline, _)| deadline)
    }

    /// Hands up to `max` of the lowest available records to `owner` (fewer when fewer are
    /// available or `acquired_max` would be passed).
    pub fn acquire(&mut self, owner: ConsumerId, max: usize, now: Instant) -> Vec<Acquired> {
        let runs = self.hand_runs(owner, max.min(self.room()), Offset::new(i64::MAX), now);
        runs.into_iter().flat_map(AcquiredRun::records).collect()
    }

    /// `acquire` limited to offsets below `end`: a share fetch hands out only the records its
    /// read of the log covers, so that none is counted as delivered without being sent.
    pub fn acquire_before(
        &mut self,
        owner: ConsumerId,
        max: usize,
        end: Offset,
        now: Instant,
    ) -> Vec<Acquired> {
        let runs = self.hand_runs(owner, max.min(self.room()), end, now);
        runs.into_iter().flat_map(AcquiredRun::records).collect()
    }

    /// `acquire_before` answering runs of consecutive records with one delivery count, lowest
    /// first (a share fetch's acquired ranges), rather than one entry per record.
    pub fn acquire_runs_before(
        &mut self,
        owner: ConsumerId,
        max: usize,
        end: Offset,
        now: Instant,
    ) -> Vec<AcquiredRun> {
        let want = max.min(self.room());
        self.hand_runs(owner, want, end, now)
    }

    /// `acquire_runs_before` as Kafka's batch-optimized share fetch (`SharePartition.acquire`):
    /// it starts only while fewer than `acquired_max` records are acquired, and then takes up to
    /// `max`, which the caller rounded up from the room (`room`) to the end of the producer batch
    /// it falls in, so it may pass `acquired_max` (a batch is never split between answers, nor
    /// sent again for the rest of its records). `ACQUIRED_RECORDS_MAX` still bounds it.
    pub fn acquire_runs_aligned(
        &mut self,
        owner: ConsumerId,
        max: usize,
        end: Offset,
        now: Instant,
    ) -> Vec<AcquiredRun> {
        let held = self.acquired.len();
        if held >= self.limits.acquired_max {
            return Vec::new();
        }
        let want = max.min(ACQUIRED_RECORDS_MAX - held);
        self.hand_runs(owner, want, end, now)
    }

    /// Records that can be acquired before `acquired_max` is reached.
    pub fn room(&self) -> usize {
        self.limits.acquired_max.saturating_sub(self.acquired.len())
    }

    /// The log no longer holds the offsets below `start` (retention deleted them): every
    /// available record there is archived without delivery; acquired ones stay until settled.
    /// Answers how many were archived.
    pub fn skip_below(&mut self, start: Offset) -> u64 {
        let before = self.counts().ready;
        let gone: Vec<Offset> = self.returned.range(..start).map(|(&o, _)| o).collect();
        for offset in gone {
            self.returned.remove(&offset);
            self.finish(offset, offset.next());
        }
        let end = start.min(self.next);
        if self.frontier < end {
            let from = self.frontier;
            self.finish(from, end);
            self.frontier = self.frontier.max(end);
        }
        before - self.counts().ready
    }

    /// `acquire` of one record, without a `Vec` (a queue's delivery loop hands out one at a
    /// time, per message).
    pub fn acquire_one(&mut self, owner: ConsumerId, now: Instant) -> Option<Acquired> {
        if self.acquired.len() >= self.limits.acquired_max {
            return None;
        }
        let acquired = self.hand_next(owner, now, Offset::new(i64::MAX));
        self.journal_delivered_mark();
        acquired
    }

    /// Takes the next available record below `end` and leases it to `owner` (the caller checked
    /// the room).
    fn hand_next(&mut self, owner: ConsumerId, now: Instant, end: Offset) -> Option<Acquired> {
        let (offset, previous_count, journaled_count) = self.take_available(end)?;
        let delivery_count = previous_count.saturating_add(1);
        let deadline = self.limits.lock_duration.map(|duration| now + duration);
        self.hold(
            offset,
            Lease {
                owner,
                delivery_count,
                deadline,
                journaled_count,
            },
        );
        Some(Acquired {
            offset,
            delivery_count,
            redelivered: previous_count > 0,
        })
    }

    /// Leases up to `want` of the lowest available records below `end` to `owner` (fewer when
    /// fewer are available; the caller checked the room). Runs of never-delivered records
    /// at the frontier are taken whole (`fresh_run`) as one lease run, and the deadline book is
    /// updated once per call: a share fetch takes hundreds of records at a time, and per-record
    /// map updates were most of a share shard's time.
    fn hand_runs(
        &mut self,
        owner: ConsumerId,
        want: usize,
        end: Offset,
        now: Instant,
    ) -> Vec<AcquiredRun> {
        let deadline = self.limits.lock_duration.map(|duration| now + duration);
        let mut handed: Vec<AcquiredRun> = Vec::new();
        let mut taken = 0;
        while taken < want {
            let (start, stop, previous, journaled_count) =
                if let Some((start, stop)) = self.fresh_run(end, want - taken) {
                    (start, stop, 0, None)
                } else if let Some((offset, previous, journaled)) = self.take_available(end) {
                    (offset, offset.next(), previous, journaled)
                } else {
                    break;
                };
            let lease = Lease {
                owner,
                delivery_count: previous.saturating_add(1),
                deadline,
                journaled_count,
            };
            self.lease_run(start, stop, lease);
            taken += stop.since(start) as usize;
            let run = AcquiredRun {
                start,
                end: stop,
                delivery_count: lease.delivery_count,
            };
            AcquiredRun::push_merged(&mut handed, run);
        }
        if let (Some(deadline), true) = (deadline, taken > 0) {
            *self.deadlines.entry(deadline).or_default() += taken as u32;
        }
        self.journal_delivered_mark();
        handed
    }

    /// Leases `[start, end)` to `lease.owner` (the caller keeps the deadline book).
    fn lease_run(&mut self, start: Offset, end: Offset, lease: Lease) {
        assert!(start >= self.done.floor() && end <= self.next);
        self.acquired.insert(start, end, lease);
        self.by_owner
            .entry(lease.owner)
            .or_default()
            .add(start, end);
    }

    /// The next run of at most `max` records from the frontier that were never delivered and
    /// carry no restored count (nothing given back, no prior counts, past the restart's
    /// "may have been delivered" mark, up to the next finished range and below `end`): taken
    /// past whole. `None` when the frontier is not at such a run.
    fn fresh_run(&mut self, end: Offset, max: usize) -> Option<(Offset, Offset)> {
        if !self.returned.is_empty() || !self.prior_counts.is_empty() {
            return None;
        }
        while let Some(finished_end) = self.done.range_end_at(self.frontier) {
            self.frontier = finished_end;
        }
        let start = self.frontier;
        if start < self.delivered_below {
            return None;
        }
        let limit = end
            .min(self.next)
            .min(self.done.next_start_after(start).unwrap_or(self.next));
        let stop = limit.min(start.plus(max as i64));
        if stop <= start {
            return None;
        }
        self.frontier = stop;
        Some((start, stop))
    }

    /// Hands the available record `offset` to `owner`, whatever its place (a priority queue's
    /// caller picks the order); `None` when it is not available or `acquired_max` is reached.
    /// Available records it skips over stay available, in `returned`. No "may have been
    /// delivered" mark can cover records handed out out of order, so the journal records each
    /// one's delivery count as it goes (a restart then flags exactly those as redelivered).
    pub fn acquire_at(
        &mut self,
        owner: ConsumerId,
        offset: Offset,
        now: Instant,
    ) -> Option<Acquired> {
        if self.acquired.len() >= self.limits.acquired_max {
            return None;
        }
        let previous_count = self.take_at(offset)?;
        let delivery_count = previous_count.saturating_add(1);
        self.record(JournalEntry::DeliveryCount {
            offset,
            count: delivery_count,
        });
        let deadline = self.limits.lock_duration.map(|duration| now + duration);
        let lease = Lease {
            owner,
            delivery_count,
            deadline,
            journaled_count: Some(delivery_count),
        };
        self.hold(offset, lease);
        Some(Acquired {
            offset,
            delivery_count,
            redelivered: previous_count > 0,
        })
    }

    /// AMQP ack, KIP-932 Accept.
    pub fn accept(&mut self, owner: ConsumerId, offset: Offset) -> Result<(), QueueError> {
        self.unhold(owner, offset)?;
        self.finish(offset, offset.next());
        Ok(())
    }

    /// `accept` of each offset in turn, with every stretch of consecutive offsets accepted as one
    /// range (`accept_range`): an AMQP ack `multiple` of a few hundred deliveries then costs one
    /// lease-run split, one `DoneSet` insert and one journal entry rather than one per message.
    /// Stops at the first offset `owner` does not hold; answers how many were accepted before
    /// it, and its error.
    pub fn accept_all(
        &mut self,
        owner: ConsumerId,
        offsets: &[Offset],
    ) -> (usize, Result<(), QueueError>) {
        let mut accepted = 0;
        let mut at = 0;
        while at < offsets.len() {
            let mut stop = at + 1;
            while stop < offsets.len()
                && offsets[stop - 1].get().checked_add(1) == Some(offsets[stop].get())
            {
                stop += 1;
            }
            let start = offsets[at];
            let (count, result) = self.accept_range(owner, start, offsets[stop - 1].next());
            accepted += count;
            if result.is_err() {
                return (accepted, result);
            }
            at = stop;
        }
        (accepted, Ok(()))
    }

    /// Accepts `[start, end)` in order, a lease run at a time, up to the first offset `owner`
    /// does not hold; answers how many were accepted, and that offset's error.
    pub fn accept_range(
        &mut self,
        owner: ConsumerId,
        start: Offset,
        end: Offset,
    ) -> (usize, Result<(), QueueError>) {
        let mut cursor = start;
        let result = loop {
            if cursor >= end {
                break Ok(());
            }
            let run = match self.lease_of(owner, cursor) {
                Ok(run) => run,
                Err(error) => break Err(error),
            };
            let stop = run.end.min(end);
            self.settle_piece(cursor, stop, run.lease);
            cursor = stop;
        };
        self.finish(start, cursor);
        (cursor.since(start).max(0) as usize, result)
    }

    /// Accepts every offset of `[start, end)` that `owner` holds, whatever lies between them (a
    /// KIP-932 Accept batch, which may span gaps and records of others); answers the lowest
    /// offset refused, and why. Costs O(lease runs in the range), not O(end - start): a client
    /// naming a huge range costs no more than the records it holds there.
    pub fn accept_held(
        &mut self,
        owner: ConsumerId,
        start: Offset,
        end: Offset,
    ) -> Option<QueueError> {
        let runs: Vec<LeasedRun> = self.acquired.overlapping(start, end).collect();
        let mut refused = None;
        let mut cursor = start;
        let mut pending: Option<(Offset, Offset)> = None;
        for run in runs {
            let (from, to) = (run.start.max(start), run.end.min(end));
            if cursor < from {
                refused.get_or_insert(QueueError::NotAcquired { offset: cursor });
            }
            cursor = to;
            if run.lease.owner != owner {
                refused.get_or_insert(QueueError::AcquiredByOther { offset: from });
                continue;
            }
            self.settle_piece(from, to, run.lease);
            pending = match pending {
                Some((first, last)) if last == from => Some((first, to)),
                other => {
                    if let Some((first, last)) = other {
                        self.finish(first, last);
                    }
                    Some((from, to))
                }
            };
        }
        if let Some((first, last)) = pending {
            self.finish(first, last);
        }
        if cursor < end {
            refused.get_or_insert(QueueError::NotAcquired { offset: cursor });
        }
        refused
    }

    /// AMQP nack/reject without requeue, KIP-932 Reject: archived; the caller dead-letters it.
    pub fn reject(&mut self, owner: ConsumerId, offset: Offset) -> Result<(), QueueError> {
        self.unhold(owner, offset)?;
        self.finish(offset, offset.next());
        Ok(())
    }

    /// AMQP nack/reject with requeue, KIP-932 Release: available again (or archived when it has
    /// had `delivery_limit` deliveries).
    pub fn release(
        &mut self,
        owner: ConsumerId,
        offset: Offset,
    ) -> Result<ReturnOutcome, QueueError> {
        let lease = self.unhold(owner, offset)?;
        Ok(self.give_back(offset, lease.delivery_count))
    }

    /// KIP-932 Renew: the lock runs for another lock duration from `now`. Without a lock
    /// (AMQP) it only checks that `owner` holds `offset`. Splits the record off its lease run.
    pub fn renew(
        &mut self,
        owner: ConsumerId,
        offset: Offset,
        now: Instant,
    ) -> Result<(), QueueError> {
        self.lease_of(owner, offset)?;
        let Some(duration) = self.limits.lock_duration else {
            return Ok(());
        };
        let lease = self.acquired.take(offset, offset.next());
        if let Some(old) = lease.deadline {
            self.unlock(old);
        }
        let deadline = now + duration;
        *self.deadlines.entry(deadline).or_default() += 1;
        let renewed = Lease {
            deadline: Some(deadline),
            ..lease
        };
        self.acquired.insert(offset, offset.next(), renewed);
        Ok(())
    }

    /// The consumer (AMQP channel or connection, share-group member) is gone: everything it held
    /// comes back, lowest offset first.
    pub fn release_owner(&mut self, owner: ConsumerId) -> Vec<Returned> {
        let runs = self.owner_runs(owner);
        self.by_owner.remove(&owner);
        let mut returned = Vec::with_capacity(runs.iter().map(LeasedRun::len).sum());
        for run in runs {
            self.drop_run(&run);
            self.give_back_run(&run, &mut returned);
        }
        returned
    }

    /// Every lock whose deadline is at or before `now` expires: its records come back, lowest
    /// offset first. Finding them walks the lease runs, which happens only when some lock did
    /// expire.
    pub fn expire(&mut self, now: Instant) -> Vec<Returned> {
        if self.next_deadline().is_none_or(|first| first > now) {
            return Vec::new();
        }
        let expired: Vec<LeasedRun> = self
            .acquired
            .iter()
            .filter(|run| run.lease.deadline.is_some_and(|deadline| deadline <= now))
            .collect();
        let mut returned = Vec::with_capacity(expired.iter().map(LeasedRun::len).sum());
        for run in expired {
            self.drop_run(&run);
            self.forget_owner_offsets(run.lease.owner, run.len());
            self.give_back_run(&run, &mut returned);
        }
        returned
    }

    /// Archives an available record without delivering it (TTL expiry, max-length drop-head):
    /// the caller dead-letters it with its own reason.
    pub fn archive_available(&mut self, offset: Offset) -> Result<(), QueueError> {
        let available = if offset < self.frontier {
            self.returned.remove(&offset).is_some()
        } else {
            offset < self.next && !self.done.contains(offset)
        };
        if !available {
            return Err(QueueError::NotAvailable { offset });
        }
        self.finish(offset, offset.next());
        Ok(())
    }

    /// Archives every available record (RabbitMQ's queue.purge: acquired records stay). Returns
    /// how many were purged.
    pub fn purge(&mut self) -> u64 {
        let before = self.counts().ready;
        for offset in std::mem::take(&mut self.returned).into_keys() {
            self.finish(offset, offset.next());
        }
        let (start, end) = (self.frontier, self.next);
        self.finish(start, end);
        self.frontier = self.frontier.max(end);
        let after = self.counts().ready;
        assert_eq!(after, 0, "purge left ready records");
        before
    }

    /// The changes since the last call, for the ack store (empty for a transient queue).
    pub fn take_journal(&mut self) -> Vec<JournalEntry> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The durable part of this state, as a restart would see it once the journal is persisted.
    pub fn snapshot(&self) -> QueueSnapshot {
        // A count of 0 is a record `acquire_at` skipped over: never delivered, never journaled.
        let mut counts: BTreeMap<Offset, u16> = self
            .returned
            .iter()
            .filter(|&(_, &count)| count > 0)
            .map(|(&offset, &count)| (offset, count))
            .collect();
        counts.extend(self.prior_counts.iter().map(|(&o, &c)| (o, c)));
        for run in self.acquired.iter() {
            if let Some(count) = run.lease.journaled_count {
                counts.extend(run.offsets().map(|offset| (offset, count)));
            }
        }
        let delivery_counts = counts.into_iter().collect();
        QueueSnapshot {
            floor: self.done.floor(),
            done: self.done.ranges().collect(),
            // Below the floor the mark means nothing; say so the same way the ack store does.
            delivered_below: self
                .journaled_mark
                .max(self.delivered_below)
                .max(self.done.floor()),
            delivery_counts,
        }
    }
}

/// Private steps; each keeps `acquired`, `by_owner` and `deadlines` in step.
impl QueueState {
    /// The lowest available offset and the deliveries it has had, removed from availability.
    /// Also returns the count the journal holds for it (see `Lease::journaled_count`).
    fn take_available(&mut self, end: Offset) -> Option<(Offset, u16, Option<u16>)> {
        // Records given back lie below the frontier: if the lowest is not below `end`, no
        // available record is.
        if self
            .returned
            .first_key_value()
            .is_some_and(|(&lowest, _)| lowest >= end)
        {
            return None;
        }
        if let Some((offset, count)) = self.returned.pop_first() {
            // Only `take_at` leaves a never-delivered record (count 0, nothing journaled) here.
            return Some((offset, count, (count > 0).then_some(count)));
        }
        self.advance_frontier(end)
    }

    /// The available record at the frontier, taken past: its offset, the deliveries it has had
    /// and the count the journal holds for it.
    fn advance_frontier(&mut self, below: Offset) -> Option<(Offset, u16, Option<u16>)> {
        while self.frontier < self.next {
            if let Some(end) = self.done.range_end_at(self.frontier) {
                self.frontier = end;
                continue;
            }
            let offset = self.frontier;
            if offset >= below {
                return None;
            }
            self.frontier = offset.next();
            let prior = self.prior_counts.remove(&offset);
            if offset >= self.delivered_below {
                return Some((offset, prior.unwrap_or(0), prior));
            }
            // Possibly delivered before the restart: one more delivery, and journaled, or a
            // second restart would count from the older figure again and come out one short.
            let previous = prior.unwrap_or(0).saturating_add(1);
            self.record(JournalEntry::DeliveryCount {
                offset,
                count: previous,
            });
            return Some((offset, previous, Some(previous)));
        }
        None
    }

    /// Takes the available record `offset` out of availability; answers the deliveries it has
    /// had. Moves the frontier past it: the available records in between go to `returned`.
    fn take_at(&mut self, offset: Offset) -> Option<u16> {
        if offset < self.frontier {
            return self.returned.remove(&offset);
        }
        if offset >= self.next || self.done.contains(offset) {
            return None;
        }
        while let Some((skipped, count, _)) = self.advance_frontier(Offset::new(i64::MAX)) {
            if skipped == offset {
                return Some(count);
            }
            self.returned.insert(skipped, count);
        }
        None
    }

    /// Leases one record (a delivery loop's, or `acquire_at`'s pick), with its deadline.
    fn hold(&mut self, offset: Offset, lease: Lease) {
        if let Some(deadline) = lease.deadline {
            *self.deadlines.entry(deadline).or_default() += 1;
        }
        self.lease_run(offset, offset.next(), lease);
    }

    /// The lease run holding `offset`, if `owner` holds it.
    fn lease_of(&self, owner: ConsumerId, offset: Offset) -> Result<LeasedRun, QueueError> {
        match self.acquired.at(offset) {
            None => Err(QueueError::NotAcquired { offset }),
            Some(run) if run.lease.owner != owner => Err(QueueError::AcquiredByOther { offset }),
            Some(run) => Ok(run),
        }
    }

    /// Checks that `owner` holds `offset` and takes it away.
    fn unhold(&mut self, owner: ConsumerId, offset: Offset) -> Result<Lease, QueueError> {
        let run = self.lease_of(owner, offset)?;
        self.settle_piece(offset, offset.next(), run.lease);
        Ok(run.lease)
    }

    /// Takes `[start, end)`, part of one run with `lease`, from its owner: lease, deadline and
    /// owner books.
    fn settle_piece(&mut self, start: Offset, end: Offset, lease: Lease) {
        self.acquired.take(start, end);
        let count = end.since(start) as usize;
        self.unlock_many(lease.deadline.map(|deadline| (deadline, count as u32)));
        self.forget_owner_offsets(lease.owner, count);
    }

    /// Removes a whole run and its deadlines (not the owner books: callers do that).
    fn drop_run(&mut self, run: &LeasedRun) {
        self.acquired.take(run.start, run.end);
        let count = run.len() as u32;
        self.unlock_many(run.lease.deadline.map(|deadline| (deadline, count)));
    }

    /// Gives back every record of `run` (already dropped), noting each in `returned`.
    fn give_back_run(&mut self, run: &LeasedRun, returned: &mut Vec<Returned>) {
        let delivery_count = run.lease.delivery_count;
        for offset in run.offsets() {
            returned.push(Returned {
                offset,
                delivery_count,
                outcome: self.give_back(offset, delivery_count),
            });
        }
    }

    fn unlock(&mut self, deadline: Instant) {
        self.unlock_many(Some((deadline, 1)));
    }

    /// `count` leases with lock `deadline` are gone.
    fn unlock_many(&mut self, unlocks: Option<(Instant, u32)>) {
        let Some((deadline, gone)) = unlocks else {
            return;
        };
        if let Some(count) = self.deadlines.get_mut(&deadline) {
            *count = count.saturating_sub(gone);
            if *count == 0 {
                self.deadlines.remove(&deadline);
            }
        }
    }

    /// `owner` gave back `count` records (their leases already dropped): the entry goes once it
    /// holds nothing, and its ranges are pruned once they outnumber what it holds.
    fn forget_owner_offsets(&mut self, owner: ConsumerId, count: usize) {
        if count == 0 {
            return;
        }
        let Some(owned) = self.by_owner.get_mut(&owner) else {
            return;
        };
        owned.live -= count;
        if owned.live == 0 {
            self.by_owner.remove(&owner);
        } else if owned.handed.len() > 2 * owned.live + 64 {
            let acquired = &self.acquired;
            owned.handed.retain(|&(start, end)| {
                let mut runs = acquired.overlapping(start, end);
                runs.any(|run| run.lease.owner == owner)
            });
        }
    }

    /// A record that came back from its consumer: available again, or archived at the limit.
    fn give_back(&mut self, offset: Offset, delivery_count: u16) -> ReturnOutcome {
        if self
            .limits
            .delivery_limit
            .is_some_and(|limit| delivery_count >= limit)
        {
            self.finish(offset, offset.next());
            return ReturnOutcome::Archived(ArchiveReason::DeliveryLimit);
        }
        assert!(offset < self.frontier);
        self.returned.insert(offset, delivery_count);
        self.record(JournalEntry::DeliveryCount {
            offset,
            count: delivery_count,
        });
        ReturnOutcome::Requeued
    }

    /// Marks `[start, end)` finished and journals it.
    fn finish(&mut self, start: Offset, end: Offset) {
        if end <= start {
            return;
        }
        self.done.insert(start, end);
        let floor = self.done.floor();
        self.frontier = self.frontier.max(floor);
        if self
            .prior_counts
            .first_key_value()
            .is_some_and(|(&offset, _)| offset < floor)
        {
            self.prior_counts = self.prior_counts.split_off(&floor);
        }
        // Restored counts of records finished without being acquired (archive_available, purge)
        // go, as the ack store drops them on `Done` (the model test holds the two equal).
        let finished: Vec<Offset> = self
            .prior_counts
            .range(start..end)
            .map(|(&offset, _)| offset)
            .collect();
        for offset in finished {
            self.prior_counts.remove(&offset);
        }
        self.record(JournalEntry::Done { start, end });
    }

    fn record(&mut self, entry: JournalEntry) {
        if let Some(journal) = self.journal.as_mut() {
            journal.push(entry);
        }
    }

    /// Keeps the journaled "may have been delivered" mark ahead of the frontier (see
    /// `DELIVERED_MARK_AHEAD`).
    fn journal_delivered_mark(&mut self) {
        if self.journal.is_none() {
            return;
        }
        if self.frontier.plus(DELIVERED_MARK_AHEAD / 2) > self.journaled_mark {
            self.journaled_mark = self.frontier.plus(DELIVERED_MARK_AHEAD);
            self.record(JournalEntry::Delivered(self.journaled_mark));
        }
    }

    /// Finished ranges above the floor: what the memory bound in the module docs counts.
    #[cfg(test)]
    pub(crate) fn finished_range_count(&self) -> usize {
        self.done.range_count()
    }

    #[cfg(test)]
    pub(crate) fn assert_invariants(&self) {
        self.done.assert_invariants();
        let floor = self.done.floor();
        assert!(floor <= self.frontier && self.frontier <= self.next);
        assert!(self.acquired.len() <= ACQUIRED_RECORDS_MAX);
        self.acquired.assert_invariants();
        for &offset in self.returned.keys() {
            assert!(offset >= floor && offset < self.frontier && !self.done.contains(offset));
            assert!(self.acquired.at(offset).is_none());
        }
        let mut owned = 0;
        for (owner, entry) in &self.by_owner {
            let held = self.held_by(*owner);
            assert!(entry.live > 0 && entry.live == held.len());
            owned += held.len();
        }
        assert_eq!(owned, self.acquired.len());
        let mut locks: BTreeMap<Instant, u32> = BTreeMap::new();
        for run in self.acquired.iter() {
            assert!(run.start >= floor && run.end <= self.frontier);
            assert!(run.offsets().all(|offset| !self.done.contains(offset)));
            if let Some(deadline) = run.lease.deadline {
                *locks.entry(deadline).or_default() += run.len() as u32;
            }
        }
        assert_eq!(self.deadlines, locks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ConsumerId = ConsumerId(1);
    const B: ConsumerId = ConsumerId(2);

    fn offset(value: i64) -> Offset {
        Offset::new(value)
    }

    fn offsets(records: &[Acquired]) -> Vec<i64> {
        records.iter().map(|record| record.offset.get()).collect()
    }

    fn queue(limits: QueueLimits, next: i64) -> QueueState {
        QueueState::new(Offset::ZERO, offset(next), limits, Durability::Durable)
    }

    fn counts(state: &QueueState) -> (u64, u64, u64) {
        let counts = state.counts();
        (counts.ready, counts.acquired, counts.total)
    }

    /// A share group's lock duration changed by its group configs: records acquired before keep
    /// their deadline, records acquired after get the new one; the cap stays.
    #[test]
    fn new_limits_apply_to_what_is_acquired_after_them() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::SHARE_GROUP, 4);
        assert_eq!(offsets(&state.acquire(A, 1, now)), [0]);
        state.set_limits(QueueLimits {
            lock_duration: Some(Duration::from_secs(1)),
            acquired_max: 1,
            ..QueueLimits::SHARE_GROUP
        });
        assert_eq!(
            state.limits().acquired_max,
            QueueLimits::SHARE_GROUP.acquired_max
        );
        assert_eq!(offsets(&state.acquire(B, 1, now)), [1]);
        let returned = state.expire(now + Duration::from_secs(2));
        let back: Vec<i64> = returned.iter().map(|r| r.offset.get()).collect();
        assert_eq!(back, [1], "only the record acquired under the 1 s lock");
        let later = state.expire(now + QueueLimits::SHARE_GROUP.lock_duration.unwrap());
        assert_eq!(later.len(), 1, "the first keeps its 30 s lock");
        state.assert_invariants();
    }

    /// One fetch's records are one lease run; acknowledgements touching part of it split it, and
    /// each part keeps its owner, count and deadline.
    #[test]
    fn a_lease_run_splits_where_part_of_it_is_settled_or_renewed() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut state = queue(QueueLimits::SHARE_GROUP, 12);
        let runs = state.acquire_runs_before(A, 10, offset(12), start);
        let run = AcquiredRun {
            start: offset(0),
            end: offset(10),
            delivery_count: 1,
        };
        assert_eq!(runs, [run]);
        state.take_journal();
        assert_eq!(state.accept_held(A, offset(3), offset(5)), None);
        let done = JournalEntry::Done {
            start: offset(3),
            end: offset(5),
        };
        assert_eq!(
            state.take_journal(),
            [done],
            "one range for the accepted part"
        );
        assert_eq!(state.release(A, offset(6)), Ok(ReturnOutcome::Requeued));
        state.renew(A, offset(8), start + 10 * second).unwrap();
        let held: Vec<i64> = state.held_by(A).iter().map(|o| o.get()).collect();
        assert_eq!(held, [0, 1, 2, 5, 7, 8, 9]);
        // A range naming records not held: the held ones go, the lowest refusal is answered.
        assert_eq!(
            state.accept_held(B, offset(0), offset(2)),
            Some(QueueError::AcquiredByOther { offset: offset(0) })
        );
        assert_eq!(
            state.accept_held(A, offset(4), offset(6)),
            Some(QueueError::NotAcquired { offset: offset(4) })
        );
        let again = state.acquire(B, 1, start);
        assert_eq!((again[0].offset, again[0].delivery_count), (offset(6), 2));
        let expired: Vec<i64> = state
            .expire(start + 30 * second)
            .iter()
            .map(|r| r.offset.get())
            .collect();
        assert_eq!(expired, [0, 1, 2, 6, 7, 9], "all but the renewed record");
        assert_eq!(state.held_by(A), [offset(8)]);
        assert_eq!(state.next_deadline(), Some(start + 40 * second));
        state.assert_invariants();
    }

    #[test]
    fn acquire_hands_out_the_lowest_offsets_and_respects_the_cap() {
        let now = Instant::now();
        let limits = QueueLimits {
            acquired_max: 3,
            ..QueueLimits::AMQP
        };
        let mut state = queue(limits, 5);
        assert_eq!(counts(&state), (5, 0, 5));
        let first = state.acquire(A, 2, now);
        assert_eq!(offsets(&first), [0, 1]);
        assert!(first
            .iter()
            .all(|r| r.delivery_count == 1 && !r.redelivered));
        assert_eq!(offsets(&state.acquire(B, 10, now)), [2]);
        assert!(state.acquire(B, 10, now).is_empty(), "cap of 3 reached");
        assert_eq!(counts(&state), (2, 3, 5));
        state.accept(A, offset(1)).unwrap();
        assert_eq!(offsets(&state.acquire(B, 10, now)), [3]);
        state.on_appended(offset(7));
        assert_eq!(counts(&state), (3, 3, 6));
        state.assert_invariants();
    }

    #[test]
    fn requeued_records_come_back_first_in_order_with_their_counts() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::AMQP, 10);
        state.acquire(A, 4, now);
        assert_eq!(state.release(A, offset(2)), Ok(ReturnOutcome::Requeued));
        assert_eq!(state.release(A, offset(0)), Ok(ReturnOutcome::Requeued));
        let again = state.acquire(B, 3, now);
        assert_eq!(offsets(&again), [0, 2, 4]);
        assert_eq!(
            again
                .iter()
                .map(|r| (r.delivery_count, r.redelivered))
                .collect::<Vec<_>>(),
            [(2, true), (2, true), (1, false)]
        );
        state.assert_invariants();
    }

    #[test]
    fn acquire_at_takes_any_available_record_and_keeps_those_it_passes() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::AMQP, 6);
        state.take_journal();
        let first = state.acquire_at(A, offset(3), now).unwrap();
        assert_eq!((first.delivery_count, first.redelivered), (1, false));
        let count = |o, count| JournalEntry::DeliveryCount {
            offset: offset(o),
            count,
        };
        assert_eq!(state.take_journal(), [count(3, 1)]);
        assert_eq!(state.acquire_at(B, offset(3), now), None, "acquired");
        assert_eq!(state.acquire_at(B, offset(6), now), None, "past the end");
        assert_eq!(counts(&state), (5, 1, 6));
        assert_eq!(state.first_available(), Some(offset(0)));
        assert_eq!(state.release(A, offset(3)), Ok(ReturnOutcome::Requeued));
        // What the journal holds: 3 was delivered once; 0, 1, 2 (passed over) never.
        let snapshot = state.snapshot();
        assert_eq!(snapshot.delivery_counts, [(offset(3), 1)]);
        assert_eq!(snapshot.delivered_below, Offset::ZERO);
        state.assert_invariants();
        let mut restored =
            QueueState::restore(&snapshot, offset(6), QueueLimits::AMQP, Durability::Durable);
        let again = restored.acquire_at(B, offset(3), now).unwrap();
        assert_eq!((again.delivery_count, again.redelivered), (2, true));
        let rest = restored.acquire(B, 10, now);
        assert_eq!(offsets(&rest), [0, 1, 2, 4, 5]);
        assert!(rest.iter().all(|r| !r.redelivered && r.delivery_count == 1));
        restored.assert_invariants();
    }

    #[test]
    fn operations_on_records_not_held_are_domain_errors() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::AMQP, 3);
        state.acquire(A, 1, now);
        let not_acquired = |o| Err(QueueError::NotAcquired { offset: offset(o) });
        assert_eq!(state.accept(A, offset(1)), not_acquired(1));
        assert_eq!(state.accept(A, offset(99)), not_acquired(99));
        assert_eq!(state.accept(A, offset(-1)), not_acquired(-1));
        let by_other = Err(QueueError::AcquiredByOther { offset: offset(0) });
        assert_eq!(state.accept(B, offset(0)), by_other);
        assert_eq!(state.reject(B, offset(0)), by_other);
        assert_eq!(state.release(B, offset(0)).err(), by_other.err());
        assert_eq!(state.renew(B, offset(0), now), by_other);
        state.accept(A, offset(0)).unwrap();
        assert_eq!(state.accept(A, offset(0)), not_acquired(0), "double ack");
        assert_eq!(state.floor(), offset(1));
        state.assert_invariants();
    }

    #[test]
    fn acks_far_ahead_of_the_floor_keep_ranges_and_advance_the_floor() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::AMQP, 1_000);
        state.acquire(A, 1_000, now);
        for o in (1..1_000).rev() {
            state.accept(A, offset(o)).unwrap();
        }
        assert_eq!(state.floor(), Offset::ZERO);
        assert_eq!(state.snapshot().done, [(offset(1), offset(1_000))]);
        state.reject(A, offset(0)).unwrap();
        assert_eq!(state.floor(), offset(1_000));
        assert_eq!(counts(&state), (0, 0, 0));
        state.assert_invariants();
    }

    #[test]
    fn delivery_limit_archives_on_return() {
        let now = Instant::now();
        let limits = QueueLimits {
            delivery_limit: Some(2),
            ..QueueLimits::AMQP
        };
        let mut state = queue(limits, 2);
        state.acquire(A, 1, now);
        assert_eq!(state.release(A, offset(0)), Ok(ReturnOutcome::Requeued));
        assert_eq!(state.acquire(A, 1, now)[0].delivery_count, 2);
        let limit = ReturnOutcome::Archived(ArchiveReason::DeliveryLimit);
        assert_eq!(state.release(A, offset(0)), Ok(limit));
        assert_eq!(state.floor(), offset(1));
        assert_eq!(offsets(&state.acquire(A, 5, now)), [1]);
        let gone = state.release_owner(A);
        assert_eq!(gone[0].outcome, ReturnOutcome::Requeued);
        state.assert_invariants();
    }

    #[test]
    fn locks_expire_and_renew() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut state = queue(QueueLimits::SHARE_GROUP, 3);
        state.acquire(A, 2, start);
        assert_eq!(state.next_deadline(), Some(start + 30 * second));
        state.renew(A, offset(1), start + 10 * second).unwrap();
        assert!(state.expire(start + 29 * second).is_empty());
        let expired = state.expire(start + 30 * second);
        assert_eq!(expired.len(), 1);
        assert_eq!(
            (expired[0].offset, expired[0].delivery_count),
            (offset(0), 1)
        );
        assert_eq!(
            state.accept(A, offset(0)),
            Err(QueueError::NotAcquired { offset: offset(0) })
        );
        assert_eq!(state.next_deadline(), Some(start + 40 * second));
        let again = state.acquire(B, 1, start + 31 * second);
        assert_eq!((again[0].offset, again[0].redelivered), (offset(0), true));
        state.assert_invariants();
    }

    #[test]
    fn release_owner_returns_everything_it_held() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::AMQP, 6);
        state.acquire(A, 2, now);
        state.acquire(B, 2, now);
        state.acquire(A, 1, now);
        assert_eq!(state.held_by(A), [offset(0), offset(1), offset(4)]);
        let returned: Vec<i64> = state
            .release_owner(A)
            .iter()
            .map(|r| r.offset.get())
            .collect();
        assert_eq!(returned, [0, 1, 4]);
        assert!(state.held_by(A).is_empty());
        assert!(state.release_owner(A).is_empty());
        assert_eq!(counts(&state), (4, 2, 6));
        state.assert_invariants();
    }

    #[test]
    fn purge_archives_ready_records_only() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::AMQP, 6);
        state.acquire(A, 3, now);
        state.release(A, offset(1)).unwrap();
        assert_eq!(state.purge(), 4);
        assert_eq!(counts(&state), (0, 2, 2));
        assert_eq!(state.first_available(), None);
        state.on_appended(offset(8));
        assert_eq!(state.first_available(), Some(offset(6)));
        assert_eq!(offsets(&state.acquire(B, 5, now)), [6, 7]);
        state.accept(A, offset(0)).unwrap();
        state.accept(A, offset(2)).unwrap();
        assert_eq!(state.floor(), offset(6));
        state.assert_invariants();
    }

    #[test]
    fn archive_available_takes_a_ready_record_without_delivering_it() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::AMQP, 4);
        state.acquire(A, 1, now);
        let not_available = |o| Err(QueueError::NotAvailable { offset: offset(o) });
        assert_eq!(state.archive_available(offset(0)), not_available(0));
        assert_eq!(state.archive_available(offset(4)), not_available(4));
        state.archive_available(offset(2)).unwrap();
        assert_eq!(state.archive_available(offset(2)), not_available(2));
        assert_eq!(offsets(&state.acquire(A, 5, now)), [1, 3]);
        state.assert_invariants();
    }

    #[test]
    fn restore_redelivers_unfinished_records_flagged() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::AMQP, 10);
        state.acquire(A, 4, now);
        state.accept(A, offset(1)).unwrap();
        state.release(A, offset(2)).unwrap();
        state.acquire(A, 1, now);
        let snapshot = state.snapshot();
        let mut restored = QueueState::restore(
            &snapshot,
            offset(10),
            QueueLimits::AMQP,
            Durability::Durable,
        );
        assert_eq!(
            restored.counts(),
            QueueCounts {
                ready: 9,
                acquired: 0,
                total: 9
            }
        );
        let again = restored.acquire(B, 10, now);
        assert_eq!(offsets(&again), [0, 2, 3, 4, 5, 6, 7, 8, 9]);
        // Every record below the delivered mark is flagged, delivered or not (the mark runs
        // ahead); offset 2 was delivered twice, the second time after its count was recorded.
        assert!(again.iter().all(|r| r.redelivered));
        assert_eq!(again[1].delivery_count, 3);
        assert_eq!(again[0].delivery_count, 2);
        // A log that lost its tail: acks at or past the new end are dropped.
        let clipped =
            QueueState::restore(&snapshot, offset(1), QueueLimits::AMQP, Durability::Durable);
        assert_eq!(clipped.counts().total, 1);
        restored.assert_invariants();
    }

    #[test]
    fn the_journal_records_durable_changes_only_when_durable() {
        let now = Instant::now();
        let mut state = queue(QueueLimits::AMQP, 3);
        assert_eq!(state.take_journal(), [JournalEntry::Floor(Offset::ZERO)]);
        state.acquire(A, 2, now);
        assert_eq!(
            state.take_journal(),
            [JournalEntry::Delivered(offset(2 + DELIVERED_MARK_AHEAD))]
        );
        state.accept(A, offset(1)).unwrap();
        state.release(A, offset(0)).unwrap();
        assert_eq!(
            state.take_journal(),
            [
                JournalEntry::Done {
                    start: offset(1),
                    end: offset(2)
                },
                JournalEntry::DeliveryCount {
                    offset: offset(0),
                    count: 1
                },
            ]
        );
        let mut transient = QueueState::new(
            Offset::ZERO,
            offset(3),
            QueueLimits::AMQP,
            Durability::Transient,
        );
        transient.acquire(A, 3, now);
        transient.accept(A, offset(0)).unwrap();
        assert!(transient.take_journal().is_empty());
    }
}
