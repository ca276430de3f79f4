//! The per-shard group coordinator: its state, configuration, lifecycle (open, close) and the
//! session sweeper. Each request's handling sits in its own file beside this one (`join.rs`,
//! `sync.rs`, `leave.rs`, `offsets.rs`, `describe.rs`); all take and return domain types and
//! refuse with `GroupError`, never a protocol's wire types or codes.
//!
//! Runs on one glommio shard; it is `!Send` and is only touched from that shard's executor.
//! The broker forwards every request for group G to `owner_shard(G, shards)`, so no state is
//! shared between shards. State sits in `RefCell`s that are never borrowed across an `.await`:
//! each handler does its bookkeeping synchronously, and if it must long-poll (JoinGroup during a
//! rebalance, a follower's SyncGroup) it parks a one-shot channel in the group and awaits it with
//! no borrow held. One sweeper task per shard (every `sweep_interval`) expires sessions and
//! pending member ids, and ends rebalances whose timeout or initial delay has passed.
//!
//! Deliberate simplifications, documented for the Kafka-compat notes:
//! - Group membership is in memory only; committed offsets are durable. After a broker restart
//!   members get `UnknownMember` / `IllegalGeneration` and rejoin, as after a coordinator move.
//! - `group.initial.rebalance.delay.ms` is `GroupConfig::initial_rebalance_delay` (200 ms, not
//!   Kafka's 3 s), extended by each new joiner up to the rebalance timeout, as Kafka does.
//! - Static membership (group.instance.id): a rejoining static member takes over its old
//!   member's place and fences the old id (`FencedInstanceId`). In a Stable group with unchanged
//!   protocols it keeps its assignment without a rebalance (KIP-345); otherwise it rebalances.
//!   Assignment is never skipped (JoinGroup v9's skip_assignment): a rejoining static leader gets
//!   the member list and its SyncGroup in Stable just returns the current assignment (pre-v9
//!   Kafka behaviour).
//! - Offsets are not expired (Kafka's offsets.retention.minutes) and topics are not checked
//!   against metadata: the broker may filter unknown topics before calling.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::error::GroupError;
use super::group::{Group, GroupState, JoinOutcome};
use super::membership::{after_members_removed, try_complete_join};
use super::offset_store::OffsetStore;

/// Tunables; `Default` is what the broker runs with.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Kafka's group.initial.rebalance.delay.ms (3000 there); short here so that tests and the
    /// classic one-consumer examples start fast.
    pub initial_rebalance_delay: Duration,
    /// Kafka's group.min.session.timeout.ms (6000 there); lower so that test suites can use
    /// short sessions.
    pub session_timeout_min: Duration,
    /// Kafka's group.max.session.timeout.ms.
    pub session_timeout_max: Duration,
    /// How often sessions and rebalance deadlines are checked.
    pub sweep_interval: Duration,
    /// Kafka's offset.metadata.max.bytes.
    pub offset_metadata_bytes_max: usize,
    /// The offset log is compacted when it grows past this (and twice its live size).
    pub offset_log_compact_bytes: u64,
    /// Kafka's group.max.size: members plus handed-out ids not yet joined. Bounds what one
    /// hostile client can make a group hold.
    pub group_members_max: usize,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(200),
            session_timeout_min: Duration::from_millis(1_000),
            session_timeout_max: Duration::from_millis(1_800_000),
            sweep_interval: Duration::from_millis(50),
            offset_metadata_bytes_max: 4096,
            offset_log_compact_bytes: 4 << 20,
            group_members_max: 10_000,
        }
    }
}

/// Who sent a JoinGroup (from the request header and the socket); shown by DescribeGroups and
/// used as the member id prefix, as Kafka does.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

/// A request answered now, or parked until the group's state machine answers it.
pub(super) enum Step<T> {
    Done(T),
    Wait(flume::Receiver<T>),
}

/// One shard's consumer group coordinator.
pub struct GroupCoordinator {
    pub(super) shard: usize,
    pub(super) config: GroupConfig,
    pub(super) groups: RefCell<HashMap<String, Group>>,
    pub(super) offsets: Rc<OffsetStore>,
    pub(super) closed: Cell<bool>,
    pub(super) member_id_counter: Cell<u64>,
}

impl GroupCoordinator {
    /// How many classic groups this shard coordinates (the metrics).
    pub fn group_count(&self) -> usize {
        self.groups.borrow().len()
    }

    /// The offsets committed to the groups this shard coordinates (the metrics' lag).
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        self.offsets.all_offsets()
    }

    /// Opens (or creates) this shard's group state under `groups_dir`: replays the shard's offset
    /// log and starts the sweeper. Must run on the shard's executor.
    pub async fn open(groups_dir: &Path, shard: usize) -> anyhow::Result<Rc<GroupCoordinator>> {
        Self::open_with_config(groups_dir, shard, GroupConfig::default()).await
    }

    pub async fn open_with_config(
        groups_dir: &Path,
        shard: usize,
        config: GroupConfig,
    ) -> anyhow::Result<Rc<GroupCoordinator>> {
        // Offset log records must stay far below its per-record cap (names are u16-sized).
        assert!(config.offset_metadata_bytes_max <= 64 << 10);
        assert!(config.group_members_max > 0);
        let offsets = OffsetStore::open(groups_dir, shard, config.offset_log_compact_bytes)
            .await
            .with_context(|| format!("opening shard {shard}'s committed offsets"))?;
        let coordinator = Rc::new(GroupCoordinator {
            shard,
            config,
            groups: RefCell::new(HashMap::new()),
            offsets,
            closed: Cell::new(false),
            member_id_counter: Cell::new(0),
        });
        let weak = Rc::downgrade(&coordinator);
        let interval = coordinator.config.sweep_interval;
        glommio::spawn_local(sweep_loop(weak, interval)).detach();
        Ok(coordinator)
    }

    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The offset store, for tests and diagnostics.
    pub fn offset_log_bytes(&self) -> u64 {
        self.offsets.file_bytes()
    }

    // ---------------------------------------------------------------- lifecycle

    /// Answers every parked request with `CoordinatorNotAvailable` (clients go find the
    /// coordinator again), refuses new ones, and waits for queued offset commits to be durable.
    pub async fn close(&self) {
        self.closed.set(true);
        {
            let mut groups = self.groups.borrow_mut();
            for group in groups.values_mut() {
                for member in &mut group.members {
                    if let Some(waiter) = member.join_waiter.take() {
                        let _ = waiter.send(JoinOutcome::error(
                            GroupError::CoordinatorNotAvailable,
                            &member.id,
                        ));
                    }
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(Err(GroupError::CoordinatorNotAvailable));
                    }
                }
            }
            groups.clear();
        }
        self.offsets.close().await;
    }

    /// Expires sessions and pending member ids, and completes rebalances whose time is up.
    fn sweep(&self, now: Instant) {
        let mut groups = self.groups.borrow_mut();
        for group in groups.values_mut() {
            group.pending_members.retain(|_, expiry| *expiry > now);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|member| !member.is_parked() && member.session_deadline <= now)
                .map(|member| member.id.clone())
                .collect();
            for member_id in &expired {
                tracing::debug!(
                    shard = self.shard,
                    member_id,
                    "group member session expired"
                );
                group.remove_member(member_id, GroupError::UnknownMember);
            }
            if expired.is_empty() {
                try_complete_join(group, now);
            } else {
                after_members_removed(group, now, self.config.initial_rebalance_delay);
            }
        }
        // Forget groups with nothing left to remember. A group with committed offsets stays (it
        // keeps its protocol type for ListGroups); without offsets it is listed nowhere anyway.
        groups.retain(|group_id, group| {
            group.state != GroupState::Empty
                || !group.members.is_empty()
                || !group.pending_members.is_empty()
                || self.offsets.has_group(group_id)
        });
    }
}

async fn sweep_loop(coordinator: Weak<GroupCoordinator>, interval: Duration) {
    loop {
        glommio::timer::sleep(interval).await;
        let Some(coordinator) = coordinator.upgrade() else {
            break;
        };
        if coordinator.closed.get() {
            break;
        }
        coordinator.sweep(Instant::now());
    }
}

/// The state of `group_id` as DescribeGroups and ListGroups see it: a group with only committed
/// offsets is Empty; one this shard does not know is Dead.
pub(super) fn state_of(
    groups: &HashMap<String, Group>,
    offsets: &OffsetStore,
    group_id: &str,
) -> GroupState {
    match groups.get(group_id) {
        Some(group) => group.state,
        None if offsets.has_group(group_id) => GroupState::Empty,
        None => GroupState::Dead,
    }
}

/// Group ids and topic names are stored with u16 lengths; Kafka strings cannot be longer anyway.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= u16::MAX as usize
}

/// Milliseconds since the Unix epoch (0 if the clock is before it), for commit timestamps.
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
