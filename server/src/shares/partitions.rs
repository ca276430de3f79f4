//! Share partitions: the per-record state of one share group on one partition, on the shard
//! that owns the partition's log. The state is the queues' `QueueState` with KIP-932's limits
//! (`QueueLimits::SHARE_GROUP`: 2,000 records acquired at once, 5 deliveries, 30 s locks; set
//! with Kafka's `group.share.*` names, `config.rs`), the
//! same machinery an AMQP queue's deliveries and acks run on; its journal goes to this shard's
//! share ack store, so a restart redelivers no record whose acknowledgement was answered and
//! every record that was acquired but not settled (flagged with one more delivery).
//!
//! A share partition starts, the first time a member of its group fetches it, at the log's end
//! (KIP-932's `share.auto.offset.reset` default, `latest`) or, with the group's
//! `share.auto.offset.reset=earliest` (or the broker's), at its start; the group's
//! `share.record.lock.duration.ms` applies to what it acquires from then on (`group_configs`). Its state is keyed in the store by
//! the topic's id, so a topic deleted and created again under the same name starts afresh.
//! Records the log no longer holds (retention) are skipped without delivery. Locks that expired
//! are returned whenever the partition is touched, before anything else happens to it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use weir_engine::Offset;

use super::dead_letter::{self, DeadRecord};
use super::member_key;
use super::queues::{self, QueueRefusal};
use crate::partition::PartitionError;
use crate::queues::{
    AckStore, AckStoreOptions, Acquired, AcquiredRun, Durability, QueueError, QueueKey,
    QueueLimits, QueueState, ReturnOutcome, Returned,
};
use crate::shard::Shard;

/// One share group's view of one partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SharePartitionId {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

struct SharePartition {
    key: QueueKey,
    state: QueueState,
}

/// KIP-932's acknowledge types, and KIP-1222's Renew.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckType {
    /// No record at that offset (compaction, control records): finished.
    Gap,
    Accept,
    Release,
    Reject,
    /// KIP-1222: the member still works on the record; its lock runs for another full lock
    /// duration from now. Nothing else changes (state, delivery count, owner), and nothing is
    /// journalled: locks are not durable (a restart hands every acquired record out again).
    Renew,
}

impl AckType {
    pub fn from_code(code: i8) -> Option<AckType> {
        match code {
            0 => Some(AckType::Gap),
            1 => Some(AckType::Accept),
            2 => Some(AckType::Release),
            3 => Some(AckType::Reject),
            4 => Some(AckType::Renew),
            _ => None,
        }
    }
}

/// What a partition's acknowledgements came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// A record the member does not hold (never acquired, expired, or another's).
    #[error("record is not acquired by this member")]
    InvalidRecordState,
    #[error("malformed acknowledgement batch")]
    InvalidRequest,
    #[error("{0}")]
    Partition(PartitionError),
    /// A queue share groups cannot consume (`queues::QueueRefusal::Unsupported`).
    #[error("share groups cannot consume this queue")]
    Unsupported,
}

impl From<PartitionError> for AckError {
    fn from(error: PartitionError) -> AckError {
        AckError::Partition(error)
    }
}

impl From<QueueRefusal> for AckError {
    fn from(refusal: QueueRefusal) -> AckError {
        match refusal {
            QueueRefusal::NotAcquired => AckError::InvalidRecordState,
            QueueRefusal::Unsupported => AckError::Unsupported,
        }
    }
}

thread_local! {
    /// This shard, for the dead-letter copies' tasks.
    static SHARD: RefCell<Option<Rc<Shard>>> = const { RefCell::new(None) };
    /// Records archived unaccepted and not yet handed to `dead_letter::send`: (group, record).
    static DEAD: RefCell<Vec<(String, DeadRecord)>> = const { RefCell::new(Vec::new()) };
    static STORE: RefCell<Option<Rc<AckStore>>> = const { RefCell::new(None) };
    static PARTITIONS: RefCell<HashMap<SharePartitionId, SharePartition>> =
        RefCell::new(HashMap::new());
    /// The queue marks (`mark_queue`) known to be in the store.
    static MARKED: RefCell<HashSet<QueueKey>> = RefCell::new(HashSet::new());
}

/// The key prefix of a queue's mark (`mark_queue`).
const QUEUE_MARK: &str = "share-queue/";

/// Opens `<data-dir>/shares/acks-<shard>.log`.
pub async fn open_store(shard: &Rc<Shard>) -> anyhow::Result<()> {
    SHARD.with(|slot| *slot.borrow_mut() = Some(shard.clone()));
    let dir = shard.config.data_dir.join("shares");
    // No gathering delay: every acknowledgement of a share group has a request waiting on it
    // (ShareAcknowledge, or a ShareFetch that carries it, with one in flight per session), so
    // waiting to gather more only adds to each round trip; what arrives while a write and its
    // fdatasync are under way still goes together in the next one.
    let options = AckStoreOptions {
        flush_delay: std::time::Duration::ZERO,
        fdatasync: shard.config.shares.state_fdatasync,
        ..AckStoreOptions::default()
    };
    let store = AckStore::open(&dir, shard.id.index(), options)
        .await
        .map_err(|error| anyhow::anyhow!("opening the share-group ack store: {error}"))?;
    STORE.with(|slot| *slot.borrow_mut() = Some(store));
    Ok(())
}

pub async fn close_store() {
    let store = STORE.with(|slot| slot.borrow_mut().take());
    if let Some(store) = store {
        store.close().await;
    }
}

fn store() -> Option<Rc<AckStore>> {
    STORE.with(|slot| slot.borrow().clone())
}

/// Waits until every acknowledgement taken in so far is durable.
pub async fn sync() -> Result<(), PartitionError> {
    match store() {
        Some(store) => store.sync().await.map_err(|_| PartitionError::Storage),
        None => Err(PartitionError::Closed),
    }
}

/// Runs `work` on the partition's state, brought up to date with its log first (new records,
/// retention, expired locks), then hands what changed to the ack store.
fn with_state<R>(
    shard: &Shard,
    id: &SharePartitionId,
    work: impl FnOnce(&mut QueueState) -> R,
) -> Result<R, PartitionError> {
    let (topic_id, log_start, end) = owned(shard, id)?;
    let (log_start, end) = (Offset::new(log_start), Offset::new(end));
    let store = store().ok_or(PartitionError::Closed)?;
    let result = PARTITIONS.with(|partitions| {
        let mut partitions = partitions.borrow_mut();
        // The group's own configs where it has them (`group_configs`), else the broker's.
        let limits = super::group_configs::limits(shard, &id.group);
        let entry = partitions.entry(id.clone()).or_insert_with(|| {
            let start = if super::group_configs::of(shard, &id.group).from_earliest {
                log_start
            } else {
                end
            };
            open_partition(&store, id, &topic_id, (start, end), limits)
        });
        let state = &mut entry.state;
        if state.limits() != limits {
            state.set_limits(limits);
        }
        if end > state.next_offset() {
            state.on_appended(end);
        }
        state.skip_below(log_start);
        let expired = state.expire(Instant::now());
        note_returned(id, &expired);
        let result = work(state);
        store
            .record(&entry.key, state.take_journal())
            .map_err(|_| PartitionError::Storage)?;
        Ok(result)
    });
    send_dead();
    result
}

/// Notes the records among `returned` that reached the delivery limit, for the dead-letter topic.
fn note_returned(id: &SharePartitionId, returned: &[Returned]) {
    for record in returned {
        if matches!(record.outcome, ReturnOutcome::Archived(_)) {
            note_dead(id, record.offset.get(), "delivery_limit");
        }
    }
}

fn note_dead(id: &SharePartitionId, offset: i64, reason: &'static str) {
    let record = DeadRecord {
        topic: id.topic.clone(),
        partition: id.partition,
        offset,
        reason,
    };
    DEAD.with(|dead| dead.borrow_mut().push((id.group.clone(), record)));
}

/// Sends what was archived unaccepted since the last call to the dead-letter topic.
fn send_dead() {
    let dead = DEAD.with(|dead| std::mem::take(&mut *dead.borrow_mut()));
    let Some(shard) = SHARD.with(|slot| slot.borrow().clone()) else {
        return;
    };
    for (group, record) in dead {
        dead_letter::send(&shard, &group, vec![record]);
    }
}

fn open_partition(
    store: &AckStore,
    id: &SharePartitionId,
    topic_id: &str,
    (start, end): (Offset, Offset),
    limits: QueueLimits,
) -> SharePartition {
    let key = share_key(topic_id, id);
    let state = match store.snapshot(&key) {
        Some(snapshot) => QueueState::restore(&snapshot, end, limits, Durability::Durable),
        None => QueueState::new(start, end, limits, Durability::Durable),
    };
    SharePartition { key, state }
}

/// The lowest record available to the group (where a share fetch reads from), if any, and how
/// many records the group may acquire before its lock limit (an AMQP queue's log: unbounded
/// here, the queue caps its own).
pub fn first_available(
    shard: &Shard,
    id: &SharePartitionId,
) -> Result<Option<(i64, usize)>, AckError> {
    if let Some(queue) = queues::queue(&id.topic) {
        mark_queue(shard, id)?;
        let first = queue.first_available(&id.topic).map_err(AckError::from)?;
        return Ok(first.map(|first| (first, usize::MAX)));
    }
    let found = with_state(shard, id, |state| {
        let room = state.room();
        state.first_available().map(|first| (first.get(), room))
    });
    found.map_err(AckError::from)
}

/// Acquires for `member` up to `max` available records below `end` (what the read covered), as
/// runs of consecutive offsets with one delivery count, lowest first. `aligned`: `max` was
/// rounded up to a batch's end and may pass the lock limit (`QueueState::acquire_runs_aligned`).
pub fn acquire(
    shard: &Shard,
    id: &SharePartitionId,
    member: &str,
    (max, end): (usize, i64),
    aligned: bool,
) -> Result<Vec<AcquiredRun>, AckError> {
    let owner = member_key(member);
    if let Some(queue) = queues::queue(&id.topic) {
        mark_queue(shard, id)?;
        return queue
            .acquire(&id.topic, owner, max, end)
            .map(|records| runs(&records))
            .map_err(AckError::from);
    }
    with_state(shard, id, |state| {
        let (end, now) = (Offset::new(end), Instant::now());
        if aligned {
            state.acquire_runs_aligned(owner, max, end, now)
        } else {
            state.acquire_runs_before(owner, max, end, now)
        }
    })
    .map_err(AckError::from)
}

/// Records one at a time (a queue's own state hands them so) as runs, lowest first.
fn runs(acquired: &[Acquired]) -> Vec<AcquiredRun> {
    let mut sorted: Vec<Acquired> = acquired.to_vec();
    sorted.sort_by_key(|record| record.offset);
    let mut runs: Vec<AcquiredRun> = Vec::new();
    for record in sorted {
        let run = AcquiredRun {
            start: record.offset,
            end: record.offset.next(),
            delivery_count: record.delivery_count,
        };
        AcquiredRun::push_merged(&mut runs, run);
    }
    runs
}

/// Applies one acknowledgement batch: `types` has one type for the whole range or one per
/// offset. Every offset is tried; the first refusal is answered.
pub fn acknowledge(
    shard: &Shard,
    id: &SharePartitionId,
    member: &str,
    (first, last): (i64, i64),
    types: &[i8],
) -> Result<(), AckError> {
    let count = last.checked_sub(first).map(|span| span + 1).unwrap_or(0);
    if first < 0 || count <= 0 || (types.len() != 1 && types.len() as i64 != count) {
        return Err(AckError::InvalidRequest);
    }
    let kinds: Option<Vec<AckType>> = types.iter().map(|&t| AckType::from_code(t)).collect();
    let kinds = kinds.ok_or(AckError::InvalidRequest)?;
    let owner = member_key(member);
    if let Some(queue) = queues::queue(&id.topic) {
        let mut refused = None;
        for (index, offset) in (first..=last).enumerate() {
            let kind = kinds[if kinds.len() == 1 { 0 } else { index }];
            if let Err(error) = queue.settle(&id.topic, owner, offset, kind) {
                refused.get_or_insert(AckError::from(error));
            }
        }
        return refused.map_or(Ok(()), Err);
    }
    let outcome = with_state(shard, id, |state| {
        if let [AckType::Accept | AckType::Gap] = kinds[..] {
            return accept_range(state, owner, first, last);
        }
        let mut refused = None;
        for (index, offset) in (first..=last).enumerate() {
            let kind = kinds[if kinds.len() == 1 { 0 } else { index }];
            if let Err(error) = settle(state, id, owner, Offset::new(offset), kind) {
                refused.get_or_insert(error);
            }
        }
        refused
    });
    match outcome {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(AckError::InvalidRecordState),
        Err(error) => Err(AckError::Partition(error)),
    }
}

/// Accepts every offset of `[first, last]` that `owner` holds (`QueueState::accept_held`: a
/// lease run at a time, one finished range and journal entry for a whole acknowledged batch);
/// answers the first refusal.
fn accept_range(
    state: &mut QueueState,
    owner: crate::queues::ConsumerId,
    first: i64,
    last: i64,
) -> Option<QueueError> {
    // `last` may be i64::MAX: no record there is ever held, so the end saturating loses nothing.
    let end = Offset::new(last.saturating_add(1));
    state.accept_held(owner, Offset::new(first), end)
}

fn settle(
    state: &mut QueueState,
    id: &SharePartitionId,
    owner: crate::queues::ConsumerId,
    offset: Offset,
    kind: AckType,
) -> Result<(), QueueError> {
    match kind {
        AckType::Gap | AckType::Accept => state.accept(owner, offset),
        AckType::Release => {
            if let ReturnOutcome::Archived(_) = state.release(owner, offset)? {
                note_dead(id, offset.get(), "delivery_limit");
            }
            Ok(())
        }
        AckType::Reject => {
            state.reject(owner, offset)?;
            note_dead(id, offset.get(), "rejected");
            Ok(())
        }
        // `with_state` expired the locks due first: a lapsed one cannot be renewed.
        AckType::Renew => state.renew(owner, offset, Instant::now()),
    }
}

/// Releases what `member` holds in the named partitions of `group` on this shard (its share
/// session closed or forgot them).
pub fn release_in(group: &str, member: &str, partitions: &[(String, i32)]) {
    let owner = member_key(member);
    for (topic, _) in partitions {
        if let Some(queue) = queues::queue(topic) {
            queue.release(topic, owner);
        }
    }
    PARTITIONS.with(|all| {
        let mut all = all.borrow_mut();
        for (topic, partition) in partitions {
            let id = SharePartitionId {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
            };
            if let Some(entry) = all.get_mut(&id) {
                let returned = entry.state.release_owner(owner);
                note_returned(&id, &returned);
                record(&entry.key, &mut entry.state);
            }
        }
    });
    send_dead();
}

/// Releases everything `member` holds in `group` on this shard (it left or timed out).
pub fn release_member(group: &str, member: &str) {
    let owner = member_key(member);
    PARTITIONS.with(|all| {
        for (id, entry) in all.borrow_mut().iter_mut() {
            if id.group == group {
                let returned = entry.state.release_owner(owner);
                note_returned(id, &returned);
                record(&entry.key, &mut entry.state);
            }
        }
    });
    send_dead();
}

fn record(key: &QueueKey, state: &mut QueueState) {
    let journal = state.take_journal();
    if let Some(store) = store() {
        // A failed store refuses every later record too; the fetches that follow report it.
        let _ = store.record(key, journal);
    }
}

/// (records ready, records acquired) of every share partition of `group` on this shard.
pub fn counts(group: &str) -> Vec<(String, i32, u64, u64)> {
    PARTITIONS.with(|all| {
        all.borrow()
            .iter()
            .filter(|(id, _)| id.group == group)
            .map(|(id, entry)| {
                let counts = entry.state.counts();
                (
                    id.topic.clone(),
                    id.partition,
                    counts.ready,
                    counts.acquired,
                )
            })
            .collect()
    })
}

/// Notes durably, once, that `id.group` consumes a queue's log: the queue keeps the records'
/// state (`queues.rs`), so without this mark nothing would tell, after a restart, that the group
/// exists (`known_groups`). The mark is an empty state under its own key prefix, which the
/// offset admin APIs (`of_group`) do not take for a share partition.
fn mark_queue(shard: &Shard, id: &SharePartitionId) -> Result<(), PartitionError> {
    let (topic_id, _, _) = owned(shard, id)?;
    let key = QueueKey::new(format!("{QUEUE_MARK}{topic_id}/{}", id.group), id.partition);
    if MARKED.with(|marked| marked.borrow().contains(&key)) {
        return Ok(());
    }
    let store = store().ok_or(PartitionError::Closed)?;
    if store.snapshot(&key).is_none() {
        let limits = QueueLimits::SHARE_GROUP;
        let zero = Offset::new(0);
        let mut mark = QueueState::new(zero, zero, limits, Durability::Durable);
        store
            .record(&key, mark.take_journal())
            .map_err(|_| PartitionError::Storage)?;
    }
    MARKED.with(|marked| marked.borrow_mut().insert(key));
    Ok(())
}

// The share-group offset admin APIs (DescribeShareGroupOffsets, AlterShareGroupOffsets,
// DeleteShareGroupOffsets) on the partition's owner shard.

/// The ack store's key of a share partition: by topic id, so a topic created again under the
/// same name starts afresh.
/// The share groups with state on this shard's partitions: open, or only in the ack store (a
/// group's state outlives its members and a restart, as Kafka's share-group state does).
pub fn known_groups() -> Vec<String> {
    let stored = store().map(|store| store.queues()).unwrap_or_default();
    let mut names: Vec<String> = stored
        .iter()
        .filter_map(|key| group_of_key(&key.name))
        .collect();
    PARTITIONS.with(|partitions| {
        names.extend(partitions.borrow().keys().map(|id| id.group.clone()));
    });
    names.sort_unstable();
    names.dedup();
    names
}

/// The group of a `share_key` name, `share/<topic id>/<group>`, or of a queue's mark,
/// `share-queue/<topic id>/<group>` (a topic id holds no `/`).
fn group_of_key(name: &str) -> Option<String> {
    let rest = name
        .strip_prefix("share/")
        .or_else(|| name.strip_prefix(QUEUE_MARK))?;
    let (_topic_id, group) = rest.split_once('/')?;
    Some(group.to_string())
}

fn share_key(topic_id: &str, id: &SharePartitionId) -> QueueKey {
    QueueKey::new(format!("share/{topic_id}/{}", id.group), id.partition)
}

/// The partition's topic id, log start and log end, checked to be on this shard.
fn owned(shard: &Shard, id: &SharePartitionId) -> Result<(String, i64, i64), PartitionError> {
    let log = shard
        .log(&id.topic, id.partition)
        .ok_or(PartitionError::NotOwner)?;
    let topic_id = shard
        .metadata()
        .topics
        .get(&id.topic)
        .map(|topic| topic.id.clone())
        .ok_or(PartitionError::UnknownPartition)?;
    Ok((topic_id, log.log_start_offset(), log.high_watermark()))
}

/// KIP-932's share-partition start offset: every record below it is acknowledged or archived.
/// `None` when the group never fetched the partition (nor had its offset set).
pub fn start_offset(shard: &Shard, id: &SharePartitionId) -> Result<Option<i64>, PartitionError> {
    let (topic_id, _, _) = owned(shard, id)?;
    let loaded = PARTITIONS.with(|all| all.borrow().get(id).map(|p| p.state.floor().get()));
    if loaded.is_some() {
        return Ok(loaded);
    }
    let store = store().ok_or(PartitionError::Closed)?;
    Ok(store
        .snapshot(&share_key(&topic_id, id))
        .map(|s| s.floor.get()))
}

/// Starts the share partition afresh at `start`, as Kafka's AlterShareGroupOffsets initializes
/// it: nothing below is delivered, everything from it on is available once. The group has no
/// members (the caller checked), so no acknowledgement is in flight but a departed member's,
/// which then finds its record gone (INVALID_RECORD_STATE).
pub fn start_at(shard: &Shard, id: &SharePartitionId, start: i64) -> Result<(), PartitionError> {
    let (topic_id, log_start, end) = owned(shard, id)?;
    // Past the end there is no record to start at; the queues' state keeps offsets in the log.
    if !(0..=end).contains(&start) {
        return Err(PartitionError::OffsetOutOfRange);
    }
    let store = store().ok_or(PartitionError::Closed)?;
    let key = share_key(&topic_id, id);
    let start = Offset::new(start.max(log_start));
    let limits = super::group_configs::limits(shard, &id.group);
    let mut state = QueueState::new(start, Offset::new(end), limits, Durability::Durable);
    // The forget and the new state's floor reach the store in this order.
    store.forget(&key).map_err(|_| PartitionError::Storage)?;
    store
        .record(&key, state.take_journal())
        .map_err(|_| PartitionError::Storage)?;
    PARTITIONS.with(|all| {
        all.borrow_mut()
            .insert(id.clone(), SharePartition { key, state })
    });
    Ok(())
}

/// Forgets the share partition (DeleteShareGroupOffsets): the group's next fetch starts it as
/// `share.auto.offset.reset` says. Answers whether there was a state to forget.
pub fn forget(shard: &Shard, id: &SharePartitionId) -> Result<bool, PartitionError> {
    let (topic_id, _, _) = owned(shard, id)?;
    let store = store().ok_or(PartitionError::Closed)?;
    let key = share_key(&topic_id, id);
    let loaded = PARTITIONS.with(|all| all.borrow_mut().remove(id).is_some());
    let existed = loaded || store.snapshot(&key).is_some();
    if existed {
        store.forget(&key).map_err(|_| PartitionError::Storage)?;
    }
    Ok(existed)
}

/// (topic id, partition) of every share partition of `group` with a state on this shard.
pub fn of_group(group: &str) -> Vec<(String, i32)> {
    let mut found: Vec<(String, i32)> = PARTITIONS.with(|all| {
        all.borrow()
            .values()
            .filter_map(|p| topic_id_of(&p.key, group).map(|t| (t, p.key.partition)))
            .collect()
    });
    if let Some(store) = store() {
        let stored = store.queues().into_iter();
        found.extend(stored.filter_map(|key| topic_id_of(&key, group).map(|t| (t, key.partition))));
    }
    found.sort();
    found.dedup();
    found
}

/// The topic id in a share key of `group` (`share/<topic-id>/<group>`; ids hold no '/').
fn topic_id_of(key: &QueueKey, group: &str) -> Option<String> {
    let rest = key.name.strip_prefix("share/")?;
    let (topic_id, owner) = rest.split_once('/')?;
    (owner == group).then(|| topic_id.to_string())
}
