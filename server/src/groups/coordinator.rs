//! The per-shard group coordinator: the API the broker calls for every group request.
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
//!   members get UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION and rejoin, as after a coordinator move.
//! - `group.initial.rebalance.delay.ms` is `GroupConfig::initial_rebalance_delay` (200 ms, not
//!   Kafka's 3 s), extended by each new joiner up to the rebalance timeout, as Kafka does.
//! - Static membership (group.instance.id): a rejoining static member takes over its old
//!   member's place and fences the old id (FENCED_INSTANCE_ID). In a Stable group with unchanged
//!   protocols it keeps its assignment without a rebalance (KIP-345); otherwise it rebalances.
//!   JoinGroup v9's skip_assignment is never set: a rejoining static leader gets the member list
//!   and its SyncGroup in Stable just returns the current assignment (pre-v9 Kafka behaviour).
//! - Offsets are not expired (Kafka's offsets.retention.minutes) and topics are not checked
//!   against metadata: the broker may filter unknown topics before calling.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::group::{Group, GroupState, JoinOutcome, Member, SyncOutcome};
use super::membership::{
    after_members_removed, current_join_outcome, prepare_rebalance, replace_static_member,
    try_complete_join,
};
use super::offset_store::{CommittedOffset, OffsetRecord, OffsetStore};

pub(super) const NONE: i16 = 0;
const COORDINATOR_NOT_AVAILABLE: i16 = ResponseError::CoordinatorNotAvailable.code();
const INVALID_GROUP_ID: i16 = ResponseError::InvalidGroupId.code();
const INVALID_SESSION_TIMEOUT: i16 = ResponseError::InvalidSessionTimeout.code();
const INCONSISTENT_GROUP_PROTOCOL: i16 = ResponseError::InconsistentGroupProtocol.code();
pub(super) const UNKNOWN_MEMBER_ID: i16 = ResponseError::UnknownMemberId.code();
const ILLEGAL_GENERATION: i16 = ResponseError::IllegalGeneration.code();
pub(super) const REBALANCE_IN_PROGRESS: i16 = ResponseError::RebalanceInProgress.code();
const MEMBER_ID_REQUIRED: i16 = ResponseError::MemberIdRequired.code();
pub(super) const FENCED_INSTANCE_ID: i16 = ResponseError::FencedInstanceId.code();
const OFFSET_METADATA_TOO_LARGE: i16 = ResponseError::OffsetMetadataTooLarge.code();
const UNKNOWN_TOPIC_OR_PARTITION: i16 = ResponseError::UnknownTopicOrPartition.code();
const GROUP_ID_NOT_FOUND: i16 = ResponseError::GroupIdNotFound.code();
const GROUP_MAX_SIZE_REACHED: i16 = ResponseError::GroupMaxSizeReached.code();

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

enum Step<T> {
    Done(T),
    Wait(flume::Receiver<T>),
}

/// One shard's consumer group coordinator.
pub struct GroupCoordinator {
    shard: usize,
    config: GroupConfig,
    groups: RefCell<HashMap<String, Group>>,
    offsets: Rc<OffsetStore>,
    closed: Cell<bool>,
    member_id_counter: Cell<u64>,
}

impl GroupCoordinator {
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

    // ---------------------------------------------------------------- JoinGroup

    pub async fn join_group(&self, version: i16, req: JoinGroupRequest) -> JoinGroupResponse {
        self.join_group_from(version, &ClientInfo::default(), req)
            .await
    }

    /// JoinGroup with the caller's client id and host (preferred by the broker when it has them).
    pub async fn join_group_from(
        &self,
        version: i16,
        client: &ClientInfo,
        req: JoinGroupRequest,
    ) -> JoinGroupResponse {
        let member_id = req.member_id.to_string();
        let outcome = match self.join_begin(version, client, &req) {
            Step::Done(outcome) => outcome,
            Step::Wait(receiver) => match receiver.recv_async().await {
                Ok(outcome) => outcome,
                // The waiter was replaced by a newer JoinGroup from the same member.
                Err(_) => JoinOutcome::error(REBALANCE_IN_PROGRESS, &member_id),
            },
        };
        join_response(version, outcome)
    }

    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    fn join_begin(
        &self,
        version: i16,
        client: &ClientInfo,
        req: &JoinGroupRequest,
    ) -> Step<JoinOutcome> {
        let member_id = req.member_id.to_string();
        let error = |code| Step::Done(JoinOutcome::error(code, &member_id));
        if self.closed.get() {
            return error(COORDINATOR_NOT_AVAILABLE);
        }
        let group_id = req.group_id.to_string();
        if !valid_name(&group_id) {
            return error(INVALID_GROUP_ID);
        }
        let session_timeout = match u64::try_from(req.session_timeout_ms) {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => return error(INVALID_SESSION_TIMEOUT),
        };
        if session_timeout < self.config.session_timeout_min
            || session_timeout > self.config.session_timeout_max
        {
            return error(INVALID_SESSION_TIMEOUT);
        }
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        let rebalance_timeout = match u64::try_from(req.rebalance_timeout_ms) {
            Ok(ms) if version >= 1 && ms > 0 => Duration::from_millis(ms),
            _ => session_timeout,
        };
        let protocol_type = req.protocol_type.to_string();
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata.clone()))
            .collect();
        if protocol_type.is_empty() || protocols.is_empty() {
            return error(INCONSISTENT_GROUP_PROTOCOL);
        }
        let instance_id = if version >= 5 {
            req.group_instance_id
                .as_ref()
                .map(|id| id.to_string())
                .filter(|id| !id.is_empty())
        } else {
            None
        };

        let now = Instant::now();
        let mut groups = self.groups.borrow_mut();
        let group = groups.entry(group_id).or_insert_with(Group::new);
        if group.state == GroupState::Dead {
            return error(COORDINATOR_NOT_AVAILABLE);
        }
        if !group.accepts(&member_id, &protocol_type, &protocols) {
            return error(INCONSISTENT_GROUP_PROTOCOL);
        }

        let (sender, receiver) = flume::bounded(1);
        let mut joiner = Member {
            id: member_id.clone(),
            instance_id: instance_id.clone(),
            client_id: client.client_id.clone(),
            client_host: client.client_host.clone(),
            session_timeout,
            rebalance_timeout,
            protocol_type,
            protocols,
            assignment: Bytes::new(),
            session_deadline: now + session_timeout,
            join_waiter: Some(sender),
            sync_waiter: None,
        };

        let is_new = member_id.is_empty()
            || (group.member(&member_id).is_none()
                && !group.pending_members.contains_key(&member_id));
        if is_new
            && group.members.len() + group.pending_members.len() >= self.config.group_members_max
        {
            return error(GROUP_MAX_SIZE_REACHED);
        }

        if member_id.is_empty() {
            joiner.id = self.new_member_id(&client.client_id);
            if let Some(instance) = &instance_id {
                // A static member restarting: take over the old member's place; the old id is
                // fenced from now on. In a Stable group with unchanged protocols it keeps its
                // assignment and no rebalance happens (KIP-345).
                if let Some(outcome) = replace_static_member(group, instance, &joiner, now) {
                    return Step::Done(outcome);
                }
                if let Some(old_id) = group.static_members.get(instance).cloned() {
                    if let Some(old) = group.remove_member(&old_id, FENCED_INSTANCE_ID) {
                        joiner.assignment = old.assignment;
                    }
                }
                group
                    .static_members
                    .insert(instance.clone(), joiner.id.clone());
            } else if version >= 4 {
                // KIP-394: hand out the id first, so a client that dies before its real join
                // leaves no ghost member behind.
                group
                    .pending_members
                    .insert(joiner.id.clone(), now + session_timeout);
                return Step::Done(JoinOutcome::error(MEMBER_ID_REQUIRED, &joiner.id));
            }
            self.add_member(group, joiner, now);
            return Step::Wait(receiver);
        }

        if group.is_fenced(instance_id.as_deref(), &member_id) {
            return error(FENCED_INSTANCE_ID);
        }
        if group.pending_members.remove(&member_id).is_some() {
            if let Some(instance) = &instance_id {
                group
                    .static_members
                    .insert(instance.clone(), member_id.clone());
            }
            self.add_member(group, joiner, now);
            return Step::Wait(receiver);
        }
        let Some(existing) = group.member(&member_id) else {
            return error(UNKNOWN_MEMBER_ID);
        };
        let unchanged = existing.protocols == joiner.protocols;
        match group.state {
            GroupState::PreparingRebalance => {
                self.update_member(group, joiner);
                try_complete_join(group, now);
                Step::Wait(receiver)
            }
            // A follower that lost its JoinGroup response, or whose metadata has not changed:
            // give it the current generation again instead of starting over.
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged
                    && (group.state == GroupState::CompletingRebalance
                        || !group.is_leader(&member_id)) =>
            {
                let outcome = current_join_outcome(group, &member_id);
                if let Some(member) = group.member_mut(&member_id) {
                    member.session_deadline = now + member.session_timeout;
                }
                Step::Done(outcome)
            }
            _ => {
                self.update_member(group, joiner);
                prepare_rebalance(group, now, self.config.initial_rebalance_delay);
                try_complete_join(group, now);
                Step::Wait(receiver)
            }
        }
    }

    fn add_member(&self, group: &mut Group, joiner: Member, now: Instant) {
        group.members.push(joiner);
        match group.state {
            GroupState::PreparingRebalance => {
                // Kafka's InitialDelayedJoin: every newcomer during the initial delay extends it,
                // bounded by the rebalance timeout.
                if let (Some(until), Some(started)) =
                    (group.initial_delay_until, group.rebalance_started)
                {
                    if now < until {
                        let cap = started + group.max_rebalance_timeout();
                        group.initial_delay_until =
                            Some((now + self.config.initial_rebalance_delay).min(cap));
                    }
                }
                group.rebalance_deadline = group
                    .rebalance_started
                    .map(|started| started + group.max_rebalance_timeout());
            }
            _ => prepare_rebalance(group, now, self.config.initial_rebalance_delay),
        }
        try_complete_join(group, now);
    }

    fn update_member(&self, group: &mut Group, joiner: Member) {
        if let Some(member) = group.member_mut(&joiner.id) {
            member.session_timeout = joiner.session_timeout;
            member.rebalance_timeout = joiner.rebalance_timeout;
            member.protocol_type = joiner.protocol_type;
            member.protocols = joiner.protocols;
            member.session_deadline = joiner.session_deadline;
            member.client_id = joiner.client_id;
            member.client_host = joiner.client_host;
            // Replacing a parked waiter drops its sender: that older request gets
            // REBALANCE_IN_PROGRESS and the client follows the newer one.
            member.join_waiter = joiner.join_waiter;
        }
    }

    fn new_member_id(&self, client_id: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        let counter = self.member_id_counter.get().wrapping_add(1);
        self.member_id_counter.set(counter);
        // RandomState is seeded from the OS once per thread and stepped per instance: two
        // draws give 128 unpredictable bits without another dependency.
        let draw = |salt: u64| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(counter ^ salt);
            hasher.write_usize(self.shard);
            hasher.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            hasher.finish()
        };
        let high = draw(0x9e37_79b9_7f4a_7c15);
        let low = draw(0xc2b2_ae3d_27d4_eb4f);
        let prefix = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            low >> 48,
            low & 0xffff_ffff_ffff
        )
    }

    // ---------------------------------------------------------------- SyncGroup

    pub async fn sync_group(&self, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
        let (outcome, protocol_type, protocol_name) = match self.sync_begin(version, &req) {
            (Step::Done(outcome), protocol_type, protocol_name) => {
                (outcome, protocol_type, protocol_name)
            }
            (Step::Wait(receiver), protocol_type, protocol_name) => (
                receiver
                    .recv_async()
                    .await
                    .unwrap_or(Err(REBALANCE_IN_PROGRESS)),
                protocol_type,
                protocol_name,
            ),
        };
        let mut response = SyncGroupResponse::default();
        match outcome {
            Ok(assignment) => {
                response.assignment = assignment;
                if version >= 5 {
                    response.protocol_type = protocol_type.map(StrBytes::from_string);
                    response.protocol_name = protocol_name.map(StrBytes::from_string);
                }
            }
            Err(code) => response.error_code = code,
        }
        response
    }

    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    fn sync_begin(
        &self,
        version: i16,
        req: &SyncGroupRequest,
    ) -> (Step<SyncOutcome>, Option<String>, Option<String>) {
        let done = |code| (Step::Done(Err(code)), None, None);
        if self.closed.get() {
            return done(COORDINATOR_NOT_AVAILABLE);
        }
        let member_id = req.member_id.to_string();
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(req.group_id.as_str()) else {
            return done(UNKNOWN_MEMBER_ID);
        };
        let instance_id = instance_id(version >= 3, &req.group_instance_id);
        if group.is_fenced(instance_id.as_deref(), &member_id) {
            return done(FENCED_INSTANCE_ID);
        }
        if group.member(&member_id).is_none() {
            return done(UNKNOWN_MEMBER_ID);
        }
        if req.generation_id != group.generation_id {
            return done(ILLEGAL_GENERATION);
        }
        if version >= 5 {
            let mismatch = |asked: &Option<StrBytes>, current: &Option<String>| {
                asked
                    .as_ref()
                    .is_some_and(|asked| current.as_deref() != Some(asked.as_str()))
            };
            if mismatch(&req.protocol_type, &group.protocol_type)
                || mismatch(&req.protocol_name, &group.protocol_name)
            {
                return done(INCONSISTENT_GROUP_PROTOCOL);
            }
        }
        let protocol_type = group.protocol_type.clone();
        let protocol_name = group.protocol_name.clone();
        let now = Instant::now();
        match group.state {
            GroupState::Empty | GroupState::Dead => done(UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => done(REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let Some(member) = group.member_mut(&member_id) else {
                    return done(UNKNOWN_MEMBER_ID);
                };
                member.session_deadline = now + member.session_timeout;
                (
                    Step::Done(Ok(member.assignment.clone())),
                    protocol_type,
                    protocol_name,
                )
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = flume::bounded(1);
                if let Some(member) = group.member_mut(&member_id) {
                    member.session_deadline = now + member.session_timeout;
                    member.sync_waiter = Some(sender);
                }
                if group.is_leader(&member_id) {
                    let mut assignments: HashMap<&str, &Bytes> = HashMap::new();
                    for assignment in &req.assignments {
                        assignments.insert(assignment.member_id.as_str(), &assignment.assignment);
                    }
                    for member in &mut group.members {
                        member.assignment = assignments
                            .get(member.id.as_str())
                            .map(|bytes| (*bytes).clone())
                            .unwrap_or_default();
                        if let Some(waiter) = member.sync_waiter.take() {
                            let _ = waiter.send(Ok(member.assignment.clone()));
                        }
                    }
                    group.state = GroupState::Stable;
                }
                (Step::Wait(receiver), protocol_type, protocol_name)
            }
        }
    }

    // ---------------------------------------------------------------- Heartbeat

    pub async fn heartbeat(&self, version: i16, req: HeartbeatRequest) -> HeartbeatResponse {
        let mut response = HeartbeatResponse::default();
        response.error_code = self.heartbeat_error(version, &req);
        response
    }

    fn heartbeat_error(&self, version: i16, req: &HeartbeatRequest) -> i16 {
        if self.closed.get() {
            return COORDINATOR_NOT_AVAILABLE;
        }
        let member_id = req.member_id.as_str();
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(req.group_id.as_str()) else {
            return UNKNOWN_MEMBER_ID;
        };
        let instance_id = instance_id(version >= 3, &req.group_instance_id);
        if group.is_fenced(instance_id.as_deref(), member_id) {
            return FENCED_INSTANCE_ID;
        }
        let generation_id = group.generation_id;
        let state = group.state;
        let Some(member) = group.member_mut(member_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if req.generation_id != generation_id {
            return ILLEGAL_GENERATION;
        }
        member.session_deadline = Instant::now() + member.session_timeout;
        match state {
            GroupState::Empty | GroupState::Dead => UNKNOWN_MEMBER_ID,
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        }
    }

    // ---------------------------------------------------------------- LeaveGroup

    pub async fn leave_group(&self, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            req.members
                .iter()
                .map(|member| {
                    (
                        member.member_id.to_string(),
                        member
                            .group_instance_id
                            .as_ref()
                            .map(|id| id.to_string())
                            .filter(|id| !id.is_empty()),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.to_string(), None)]
        };
        let errors = self.leave(req.group_id.as_str(), &leaving);
        let mut response = LeaveGroupResponse::default();
        if version >= 3 {
            if self.closed.get() {
                response.error_code = COORDINATOR_NOT_AVAILABLE;
            }
            response.members = leaving
                .into_iter()
                .zip(errors)
                .map(|((member_id, instance_id), error_code)| {
                    let mut member = MemberResponse::default();
                    member.member_id = StrBytes::from_string(member_id);
                    member.group_instance_id = instance_id.map(StrBytes::from_string);
                    member.error_code = error_code;
                    member
                })
                .collect();
        } else {
            response.error_code = errors.first().copied().unwrap_or(NONE);
        }
        response
    }

    fn leave(&self, group_id: &str, leaving: &[(String, Option<String>)]) -> Vec<i16> {
        if self.closed.get() {
            return vec![COORDINATOR_NOT_AVAILABLE; leaving.len()];
        }
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return vec![UNKNOWN_MEMBER_ID; leaving.len()];
        };
        let mut removed_any = false;
        let errors = leaving
            .iter()
            .map(|(member_id, instance_id)| {
                let target = match instance_id {
                    Some(instance) => match group.static_members.get(instance) {
                        Some(current) if member_id.is_empty() || current == member_id => {
                            current.clone()
                        }
                        Some(_) => return FENCED_INSTANCE_ID,
                        None => return UNKNOWN_MEMBER_ID,
                    },
                    None => member_id.clone(),
                };
                if group.remove_member(&target, UNKNOWN_MEMBER_ID).is_some() {
                    removed_any = true;
                    NONE
                } else if group.pending_members.remove(&target).is_some() {
                    NONE
                } else {
                    UNKNOWN_MEMBER_ID
                }
            })
            .collect();
        if removed_any {
            after_members_removed(group, Instant::now(), self.config.initial_rebalance_delay);
        } else {
            try_complete_join(group, Instant::now());
        }
        errors
    }

    // ---------------------------------------------------------------- OffsetCommit

    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    pub async fn offset_commit(
        &self,
        version: i16,
        req: OffsetCommitRequest,
    ) -> OffsetCommitResponse {
        let group_error = self.commit_error(version, &req);
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let group_id = req.group_id.to_string();
        // (topic index, partition index, error) for every partition; NONE ones are written.
        let mut errors: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
        let mut records = Vec::new();
        for topic in &req.topics {
            let mut topic_errors = Vec::with_capacity(topic.partitions.len());
            for partition in &topic.partitions {
                let metadata_bytes = partition
                    .committed_metadata
                    .as_ref()
                    .map_or(0, |metadata| metadata.len());
                let error = if group_error != NONE {
                    group_error
                } else if !valid_name(topic.name.as_str()) || partition.partition_index < 0 {
                    UNKNOWN_TOPIC_OR_PARTITION
                } else if metadata_bytes > self.config.offset_metadata_bytes_max {
                    OFFSET_METADATA_TOO_LARGE
                } else {
                    records.push(OffsetRecord {
                        group: group_id.clone(),
                        topic: topic.name.to_string(),
                        partition: partition.partition_index,
                        value: CommittedOffset {
                            offset: partition.committed_offset,
                            leader_epoch: if version >= 6 {
                                partition.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: partition
                                .committed_metadata
                                .as_ref()
                                .map(|metadata| metadata.to_string()),
                            commit_timestamp_ms: timestamp_ms,
                        },
                    });
                    NONE
                };
                topic_errors.push(error);
            }
            errors.push(topic_errors);
        }
        let write_error = match self.offsets.commit(records).await {
            Ok(()) => NONE,
            Err(error) => {
                tracing::warn!(shard = self.shard, %error, "offset commit not durable");
                COORDINATOR_NOT_AVAILABLE
            }
        };
        let mut response = OffsetCommitResponse::default();
        response.topics = req
            .topics
            .iter()
            .zip(errors)
            .map(|(topic, topic_errors)| {
                let mut out = OffsetCommitResponseTopic::default();
                out.name = topic.name.clone();
                out.partitions = topic
                    .partitions
                    .iter()
                    .zip(topic_errors)
                    .map(|(partition, error)| {
                        let mut out = OffsetCommitResponsePartition::default();
                        out.partition_index = partition.partition_index;
                        out.error_code = if error == NONE { write_error } else { error };
                        out
                    })
                    .collect();
                out
            })
            .collect();
        response
    }

    /// Kafka's fencing for OffsetCommit: who may commit for this group right now.
    fn commit_error(&self, version: i16, req: &OffsetCommitRequest) -> i16 {
        if self.closed.get() {
            return COORDINATOR_NOT_AVAILABLE;
        }
        if !valid_name(req.group_id.as_str()) {
            return INVALID_GROUP_ID;
        }
        let generation_id = req.generation_id_or_member_epoch;
        let member_id = req.member_id.as_str();
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(req.group_id.as_str()) else {
            // A group that only uses Kafka to store offsets (generation -1, no member).
            return if generation_id < 0 {
                NONE
            } else {
                ILLEGAL_GENERATION
            };
        };
        let instance_id = instance_id(version >= 7, &req.group_instance_id);
        if group.is_fenced(instance_id.as_deref(), member_id) {
            return FENCED_INSTANCE_ID;
        }
        if generation_id < 0 && group.state == GroupState::Empty {
            return NONE;
        }
        let group_generation = group.generation_id;
        let state = group.state;
        let Some(member) = group.member_mut(member_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if generation_id != group_generation {
            return ILLEGAL_GENERATION;
        }
        match state {
            GroupState::Stable | GroupState::PreparingRebalance => {
                member.session_deadline = Instant::now() + member.session_timeout;
                NONE
            }
            GroupState::CompletingRebalance => REBALANCE_IN_PROGRESS,
            GroupState::Empty => UNKNOWN_MEMBER_ID,
            GroupState::Dead => COORDINATOR_NOT_AVAILABLE,
        }
    }

    // ---------------------------------------------------------------- OffsetFetch

    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    pub async fn offset_fetch(&self, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let mut response = OffsetFetchResponse::default();
        let closed = self.closed.get();
        if version >= 8 {
            // Every group of the request is answered from this shard; the broker sends each
            // group to its owner (splitting multi-group requests) before calling.
            response.groups = req
                .groups
                .iter()
                .map(|group| {
                    let mut out = OffsetFetchResponseGroup::default();
                    out.group_id = group.group_id.clone();
                    if closed {
                        out.error_code = COORDINATOR_NOT_AVAILABLE;
                        return out;
                    }
                    if group.group_id.is_empty() {
                        out.error_code = INVALID_GROUP_ID;
                        return out;
                    }
                    let wanted = group.topics.as_ref().map(|topics| {
                        topics
                            .iter()
                            .map(|topic| (topic.name.clone(), topic.partition_indexes.clone()))
                            .collect::<Vec<_>>()
                    });
                    out.topics = self
                        .fetch_offsets(group.group_id.as_str(), wanted)
                        .into_iter()
                        .map(|(name, partitions)| {
                            let mut topic = OffsetFetchResponseTopics::default();
                            topic.name = name;
                            topic.partitions = partitions
                                .into_iter()
                                .map(|(index, value)| {
                                    let mut partition = OffsetFetchResponsePartitions::default();
                                    partition.partition_index = index;
                                    fill_v8_partition(&mut partition, value);
                                    partition
                                })
                                .collect();
                            topic
                        })
                        .collect();
                    out
                })
                .collect();
            return response;
        }
        let group_error = if closed {
            COORDINATOR_NOT_AVAILABLE
        } else if req.group_id.is_empty() {
            INVALID_GROUP_ID
        } else {
            NONE
        };
        if group_error != NONE {
            if version >= 2 {
                response.error_code = group_error;
                return response;
            }
            // v1 has no top-level error: it goes on every requested partition.
            response.topics = req
                .topics
                .iter()
                .flatten()
                .map(|topic| {
                    let mut out = OffsetFetchResponseTopic::default();
                    out.name = topic.name.clone();
                    out.partitions = topic
                        .partition_indexes
                        .iter()
                        .map(|index| {
                            let mut partition = OffsetFetchResponsePartition::default();
                            partition.partition_index = *index;
                            partition.committed_offset = -1;
                            partition.error_code = group_error;
                            partition
                        })
                        .collect();
                    out
                })
                .collect();
            return response;
        }
        let wanted = req.topics.as_ref().map(|topics| {
            topics
                .iter()
                .map(|topic| (topic.name.clone(), topic.partition_indexes.clone()))
                .collect::<Vec<_>>()
        });
        response.topics = self
            .fetch_offsets(req.group_id.as_str(), wanted)
            .into_iter()
            .map(|(name, partitions)| {
                let mut topic = OffsetFetchResponseTopic::default();
                topic.name = name;
                topic.partitions = partitions
                    .into_iter()
                    .map(|(index, value)| {
                        let mut partition = OffsetFetchResponsePartition::default();
                        partition.partition_index = index;
                        partition.committed_offset = value.as_ref().map_or(-1, |v| v.offset);
                        partition.committed_leader_epoch = if version >= 5 {
                            value.as_ref().map_or(-1, |v| v.leader_epoch)
                        } else {
                            -1
                        };
                        partition.metadata = Some(StrBytes::from_string(
                            value.and_then(|v| v.metadata).unwrap_or_default(),
                        ));
                        partition
                    })
                    .collect();
                topic
            })
            .collect();
        response
    }

    /// The requested partitions' offsets (None = not committed), or all of the group's when
    /// `wanted` is None.
    #[allow(clippy::type_complexity)]
    fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(TopicName, Vec<i32>)>>,
    ) -> Vec<(TopicName, Vec<(i32, Option<CommittedOffset>)>)> {
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(name, partitions)| {
                    let offsets = partitions
                        .into_iter()
                        .map(|partition| (partition, self.offsets.get(group_id, &name, partition)))
                        .collect();
                    (name, offsets)
                })
                .collect(),
            None => {
                let mut topics: Vec<(TopicName, Vec<(i32, Option<CommittedOffset>)>)> = Vec::new();
                for (topic, partition, value) in self.offsets.group_offsets(group_id) {
                    match topics.last_mut() {
                        Some((name, partitions)) if name.as_str() == topic => {
                            partitions.push((partition, Some(value)))
                        }
                        _ => topics.push((
                            TopicName(StrBytes::from_string(topic)),
                            vec![(partition, Some(value))],
                        )),
                    }
                }
                topics
            }
        }
    }

    // ---------------------------------------------------------------- DescribeGroups

    /// One group of a DescribeGroups request (the broker splits and merges by owner).
    pub async fn describe_group(&self, version: i16, group_id: &str) -> DescribedGroup {
        let mut described = DescribedGroup::default();
        described.group_id = GroupId(StrBytes::from_string(group_id.to_string()));
        if self.closed.get() {
            described.error_code = COORDINATOR_NOT_AVAILABLE;
            return described;
        }
        if group_id.is_empty() {
            described.error_code = INVALID_GROUP_ID;
            return described;
        }
        let groups = self.groups.borrow();
        let state = self.state_of(&groups, group_id);
        described.group_state = StrBytes::from_static_str(state.name());
        if state == GroupState::Dead && version >= 6 {
            // KIP-1043: v6 reports unknown groups as an error instead of a Dead group.
            described.error_code = GROUP_ID_NOT_FOUND;
            described.error_message = Some(StrBytes::from_string(format!(
                "Group {group_id} not found."
            )));
        }
        let Some(group) = groups.get(group_id) else {
            return described;
        };
        described.protocol_type =
            StrBytes::from_string(group.protocol_type.clone().unwrap_or_default());
        // Kafka shows the protocol, member metadata and assignments only once Stable.
        let stable_protocol = (group.state == GroupState::Stable)
            .then(|| group.protocol_name.clone())
            .flatten();
        described.protocol_data =
            StrBytes::from_string(stable_protocol.clone().unwrap_or_default());
        described.members = group
            .members
            .iter()
            .map(|member| {
                let mut out = DescribedGroupMember::default();
                out.member_id = StrBytes::from_string(member.id.clone());
                if version >= 4 {
                    out.group_instance_id = member.instance_id.clone().map(StrBytes::from_string);
                }
                out.client_id = StrBytes::from_string(member.client_id.clone());
                out.client_host = StrBytes::from_string(member.client_host.clone());
                if let Some(protocol) = &stable_protocol {
                    out.member_metadata = member.metadata(protocol);
                    out.member_assignment = member.assignment.clone();
                }
                out
            })
            .collect();
        described
    }

    // ---------------------------------------------------------------- ListGroups

    /// This shard's groups (the broker fans ListGroups out to every shard and merges).
    /// `states_filter` matches state names case-insensitively; empty means all.
    pub async fn list_groups(&self, version: i16, states_filter: &[String]) -> Vec<ListedGroup> {
        if self.closed.get() {
            return Vec::new();
        }
        let groups = self.groups.borrow();
        let mut ids: BTreeSet<String> = groups.keys().cloned().collect();
        ids.extend(self.offsets.groups());
        ids.into_iter()
            .filter_map(|group_id| {
                let state = self.state_of(&groups, &group_id);
                if state == GroupState::Dead {
                    return None;
                }
                if !states_filter.is_empty()
                    && !states_filter
                        .iter()
                        .any(|wanted| wanted.eq_ignore_ascii_case(state.name()))
                {
                    return None;
                }
                let mut listed = ListedGroup::default();
                listed.protocol_type = StrBytes::from_string(
                    groups
                        .get(&group_id)
                        .and_then(|group| group.protocol_type.clone())
                        .unwrap_or_default(),
                );
                listed.group_id = GroupId(StrBytes::from_string(group_id));
                if version >= 4 {
                    listed.group_state = StrBytes::from_static_str(state.name());
                }
                if version >= 5 {
                    listed.group_type = StrBytes::from_static_str("classic");
                }
                Some(listed)
            })
            .collect()
    }

    fn state_of(&self, groups: &HashMap<String, Group>, group_id: &str) -> GroupState {
        match groups.get(group_id) {
            Some(group) => group.state,
            None if self.offsets.has_group(group_id) => GroupState::Empty,
            None => GroupState::Dead,
        }
    }

    // ---------------------------------------------------------------- lifecycle

    /// Answers every parked request with COORDINATOR_NOT_AVAILABLE (clients go find the
    /// coordinator again), refuses new ones, and waits for queued offset commits to be durable.
    pub async fn close(&self) {
        self.closed.set(true);
        {
            let mut groups = self.groups.borrow_mut();
            for group in groups.values_mut() {
                for member in &mut group.members {
                    if let Some(waiter) = member.join_waiter.take() {
                        let _ =
                            waiter.send(JoinOutcome::error(COORDINATOR_NOT_AVAILABLE, &member.id));
                    }
                    if let Some(waiter) = member.sync_waiter.take() {
                        let _ = waiter.send(Err(COORDINATOR_NOT_AVAILABLE));
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
                group.remove_member(member_id, UNKNOWN_MEMBER_ID);
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

    /// The offset store, for tests and diagnostics.
    pub fn offset_log_bytes(&self) -> u64 {
        self.offsets.file_bytes()
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

fn join_response(version: i16, outcome: JoinOutcome) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = outcome.error_code;
    response.generation_id = outcome.generation_id;
    if version >= 7 {
        response.protocol_type = outcome.protocol_type.map(StrBytes::from_string);
        response.protocol_name = outcome.protocol_name.map(StrBytes::from_string);
    } else {
        // Not nullable before v7.
        response.protocol_name = Some(StrBytes::from_string(
            outcome.protocol_name.unwrap_or_default(),
        ));
    }
    response.leader = StrBytes::from_string(outcome.leader);
    response.member_id = StrBytes::from_string(outcome.member_id);
    response.members = outcome
        .members
        .into_iter()
        .map(|(member_id, instance_id, metadata)| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = StrBytes::from_string(member_id);
            if version >= 5 {
                member.group_instance_id = instance_id.map(StrBytes::from_string);
            }
            member.metadata = metadata;
            member
        })
        .collect();
    response
}

fn fill_v8_partition(
    partition: &mut OffsetFetchResponsePartitions,
    value: Option<CommittedOffset>,
) {
    partition.committed_offset = value.as_ref().map_or(-1, |v| v.offset);
    partition.committed_leader_epoch = value.as_ref().map_or(-1, |v| v.leader_epoch);
    partition.metadata = Some(StrBytes::from_string(
        value.and_then(|v| v.metadata).unwrap_or_default(),
    ));
}

fn instance_id(supported: bool, field: &Option<StrBytes>) -> Option<String> {
    if !supported {
        return None;
    }
    field
        .as_ref()
        .map(|id| id.to_string())
        .filter(|id| !id.is_empty())
}

/// Group ids and topic names are stored with u16 lengths; Kafka strings cannot be longer anyway.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= u16::MAX as usize
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::path::PathBuf;

    use futures_lite::future::zip;
    use glommio::{LocalExecutorBuilder, Placement};
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::protocol::Encodable;

    use super::*;

    /// A directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let path = std::env::temp_dir()
                .join(format!("weir-groups-{name}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            TestDir(path)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn test_config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(30),
            session_timeout_min: Duration::from_millis(10),
            sweep_interval: Duration::from_millis(10),
            ..GroupConfig::default()
        }
    }

    /// Runs `body` on a real glommio executor with a fresh groups dir.
    fn run<F, Fut>(name: &str, body: F)
    where
        F: FnOnce(PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let dir = TestDir::new(name);
        let data_dir = dir.0.clone();
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(512 << 10)
            .spawn(move || async move {
                weir_engine::io::prepare_data_dir(&data_dir).await.unwrap();
                body(data_dir.join("groups")).await
            })
            .unwrap()
            .join()
            .unwrap();
    }

    async fn open(groups_dir: &Path) -> Rc<GroupCoordinator> {
        GroupCoordinator::open_with_config(groups_dir, 0, test_config())
            .await
            .unwrap()
    }

    fn join_request(
        group: &str,
        member_id: &str,
        session_ms: i32,
        protocols: &[&str],
    ) -> JoinGroupRequest {
        let mut req = JoinGroupRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.member_id = StrBytes::from_string(member_id.to_string());
        req.session_timeout_ms = session_ms;
        req.rebalance_timeout_ms = 2_000;
        req.protocol_type = StrBytes::from_static_str("consumer");
        req.protocols = protocols
            .iter()
            .map(|name| {
                let mut protocol = JoinGroupRequestProtocol::default();
                protocol.name = StrBytes::from_string(name.to_string());
                protocol.metadata = Bytes::from(format!("meta-{name}"));
                protocol
            })
            .collect();
        req
    }

    /// Joins like a v5 client: an empty member id gets MEMBER_ID_REQUIRED, then joins with it.
    async fn join(
        coordinator: &GroupCoordinator,
        group: &str,
        member_id: &str,
        session_ms: i32,
    ) -> JoinGroupResponse {
        let response = coordinator
            .join_group(
                5,
                join_request(group, member_id, session_ms, &["range", "roundrobin"]),
            )
            .await;
        if response.error_code != MEMBER_ID_REQUIRED {
            return response;
        }
        assert!(!response.member_id.is_empty());
        coordinator
            .join_group(
                5,
                join_request(
                    group,
                    response.member_id.as_str(),
                    session_ms,
                    &["range", "roundrobin"],
                ),
            )
            .await
    }

    async fn sync(
        coordinator: &GroupCoordinator,
        group: &str,
        generation_id: i32,
        member_id: &str,
        assignments: &[(&str, &str)],
    ) -> SyncGroupResponse {
        let mut req = SyncGroupRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.generation_id = generation_id;
        req.member_id = StrBytes::from_string(member_id.to_string());
        req.protocol_type = Some(StrBytes::from_static_str("consumer"));
        req.protocol_name = Some(StrBytes::from_static_str("range"));
        req.assignments = assignments
            .iter()
            .map(|(member, assignment)| {
                let mut out = SyncGroupRequestAssignment::default();
                out.member_id = StrBytes::from_string(member.to_string());
                out.assignment = Bytes::from(assignment.to_string());
                out
            })
            .collect();
        coordinator.sync_group(5, req).await
    }

    async fn heartbeat(
        coordinator: &GroupCoordinator,
        group: &str,
        generation_id: i32,
        member_id: &str,
    ) -> i16 {
        let mut req = HeartbeatRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.generation_id = generation_id;
        req.member_id = StrBytes::from_string(member_id.to_string());
        coordinator.heartbeat(4, req).await.error_code
    }

    fn commit_request(
        group: &str,
        generation_id: i32,
        member_id: &str,
        offsets: &[(&str, i32, i64)],
    ) -> OffsetCommitRequest {
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.generation_id_or_member_epoch = generation_id;
        req.member_id = StrBytes::from_string(member_id.to_string());
        for (topic, partition, offset) in offsets {
            let mut part = OffsetCommitRequestPartition::default();
            part.partition_index = *partition;
            part.committed_offset = *offset;
            part.committed_leader_epoch = 3;
            part.committed_metadata = Some(StrBytes::from_string(format!("m{offset}")));
            match req.topics.iter_mut().find(|t| t.name.as_str() == *topic) {
                Some(existing) => existing.partitions.push(part),
                None => {
                    let mut out = OffsetCommitRequestTopic::default();
                    out.name = TopicName(StrBytes::from_string(topic.to_string()));
                    out.partitions.push(part);
                    req.topics.push(out);
                }
            }
        }
        req
    }

    fn commit_errors(response: &OffsetCommitResponse) -> Vec<i16> {
        response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect()
    }

    /// (topic, partition, offset, leader epoch, metadata) as OffsetFetch v6 reports them.
    async fn fetch(
        coordinator: &GroupCoordinator,
        group: &str,
        topics: Option<&[(&str, &[i32])]>,
    ) -> Vec<(String, i32, i64, i32, String)> {
        let mut req = OffsetFetchRequest::default();
        req.group_id = GroupId(StrBytes::from_string(group.to_string()));
        req.topics = topics.map(|topics| {
            topics
                .iter()
                .map(|(name, partitions)| {
                    let mut topic = OffsetFetchRequestTopic::default();
                    topic.name = TopicName(StrBytes::from_string(name.to_string()));
                    topic.partition_indexes = partitions.to_vec();
                    topic
                })
                .collect()
        });
        let response = coordinator.offset_fetch(6, req).await;
        assert_eq!(response.error_code, NONE);
        response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    assert_eq!(p.error_code, NONE);
                    (
                        t.name.to_string(),
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                    )
                })
            })
            .collect()
    }

    /// Two members joined and synced: (coordinator, generation, leader id, follower id).
    async fn stable_pair(
        groups_dir: &Path,
        session_ms: i32,
    ) -> (Rc<GroupCoordinator>, i32, String, String) {
        let coordinator = open(groups_dir).await;
        let (a, b) = zip(
            join(&coordinator, "g", "", session_ms),
            join(&coordinator, "g", "", session_ms),
        )
        .await;
        let (leader, follower) = if a.member_id == a.leader {
            (a, b)
        } else {
            (b, a)
        };
        let generation = leader.generation_id;
        let leader_id = leader.member_id.to_string();
        let follower_id = follower.member_id.to_string();
        let assignments = [
            (leader_id.as_str(), "to-leader"),
            (follower_id.as_str(), "to-follower"),
        ];
        let (leader_sync, follower_sync) = zip(
            sync(&coordinator, "g", generation, &leader_id, &assignments),
            sync(&coordinator, "g", generation, &follower_id, &[]),
        )
        .await;
        assert_eq!(leader_sync.error_code, NONE);
        assert_eq!(follower_sync.error_code, NONE);
        (coordinator, generation, leader_id, follower_id)
    }

    #[test]
    fn two_members_join_the_same_generation_with_one_leader() {
        run("join", |dir| async move {
            let coordinator = open(&dir).await;
            let (a, b) = zip(
                join(&coordinator, "g", "", 5_000),
                join(&coordinator, "g", "", 5_000),
            )
            .await;
            assert_eq!((a.error_code, b.error_code), (NONE, NONE));
            assert_eq!(a.generation_id, 1);
            assert_eq!(b.generation_id, 1);
            assert_ne!(a.member_id, b.member_id);
            assert_eq!(a.leader, b.leader);
            assert_eq!(
                a.protocol_name.as_deref().map(|s| s.to_string()),
                Some("range".to_string())
            );
            let (leader, follower) = if a.member_id == a.leader {
                (&a, &b)
            } else {
                (&b, &a)
            };
            assert_eq!(leader.members.len(), 2);
            assert!(leader.members.iter().all(|m| m.metadata == "meta-range"));
            assert!(follower.members.is_empty());
            assert!(a.member_id.starts_with("member-"), "{:?}", a.member_id);
            coordinator.close().await;
        });
    }

    #[test]
    fn sync_distributes_the_leaders_assignments() {
        run("sync", |dir| async move {
            let coordinator = open(&dir).await;
            let (a, b) = zip(
                join(&coordinator, "g", "", 5_000),
                join(&coordinator, "g", "", 5_000),
            )
            .await;
            let (leader, follower) = if a.member_id == a.leader {
                (a, b)
            } else {
                (b, a)
            };
            let generation = leader.generation_id;
            let leader_id = leader.member_id.to_string();
            let follower_id = follower.member_id.to_string();
            // The follower syncs first and waits for the leader.
            let assignments = [(leader_id.as_str(), "p0"), (follower_id.as_str(), "p1")];
            let (follower_sync, leader_sync) = zip(
                sync(&coordinator, "g", generation, &follower_id, &[]),
                async {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                    sync(&coordinator, "g", generation, &leader_id, &assignments).await
                },
            )
            .await;
            assert_eq!(follower_sync.error_code, NONE);
            assert_eq!(follower_sync.assignment, Bytes::from("p1"));
            assert_eq!(leader_sync.assignment, Bytes::from("p0"));
            assert_eq!(
                leader_sync.protocol_name.as_deref().map(|s| s.to_string()),
                Some("range".into())
            );
            assert_eq!(
                heartbeat(&coordinator, "g", generation, &follower_id).await,
                NONE
            );
            // A late sync in Stable gets the same assignment again.
            let again = sync(&coordinator, "g", generation, &follower_id, &[]).await;
            assert_eq!(again.assignment, Bytes::from("p1"));
            let described = coordinator.describe_group(5, "g").await;
            assert_eq!(described.group_state.as_str(), "Stable");
            assert_eq!(described.protocol_type.as_str(), "consumer");
            assert_eq!(described.protocol_data.as_str(), "range");
            assert_eq!(described.members.len(), 2);
            assert!(described
                .members
                .iter()
                .any(|m| m.member_assignment == "p1"));
            let listed = coordinator.list_groups(4, &["stable".to_string()]).await;
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].group_state.as_str(), "Stable");
            assert!(coordinator
                .list_groups(4, &["Empty".to_string()])
                .await
                .is_empty());
            coordinator.close().await;
        });
    }

    #[test]
    fn an_expired_session_starts_a_rebalance() {
        run("expiry", |dir| async move {
            let (coordinator, generation, leader_id, follower_id) = stable_pair(&dir, 500).await;
            // Only the leader keeps heartbeating; the follower goes silent.
            let mut error = NONE;
            for _ in 0..100 {
                glommio::timer::sleep(Duration::from_millis(20)).await;
                error = heartbeat(&coordinator, "g", generation, &leader_id).await;
                if error != NONE {
                    break;
                }
            }
            assert_eq!(error, REBALANCE_IN_PROGRESS);
            assert_eq!(
                heartbeat(&coordinator, "g", generation, &follower_id).await,
                UNKNOWN_MEMBER_ID
            );
            let rejoined = join(&coordinator, "g", &leader_id, 500).await;
            assert_eq!(rejoined.error_code, NONE);
            assert_eq!(rejoined.generation_id, generation + 1);
            assert_eq!(rejoined.leader, rejoined.member_id);
            assert_eq!(rejoined.members.len(), 1);
            coordinator.close().await;
        });
    }

    #[test]
    fn leaving_starts_a_rebalance_and_the_last_leave_empties_the_group() {
        run("leave", |dir| async move {
            let (coordinator, generation, leader_id, follower_id) = stable_pair(&dir, 5_000).await;
            let mut req = LeaveGroupRequest::default();
            req.group_id = GroupId(StrBytes::from_static_str("g"));
            let mut identity = MemberIdentity::default();
            identity.member_id = StrBytes::from_string(leader_id.clone());
            req.members = vec![identity];
            let response = coordinator.leave_group(3, req).await;
            assert_eq!(response.error_code, NONE);
            assert_eq!(response.members[0].error_code, NONE);
            assert_eq!(
                heartbeat(&coordinator, "g", generation, &follower_id).await,
                REBALANCE_IN_PROGRESS
            );
            let rejoined = join(&coordinator, "g", &follower_id, 5_000).await;
            assert_eq!(rejoined.generation_id, generation + 1);
            assert_eq!(
                rejoined.leader, rejoined.member_id,
                "the follower becomes leader"
            );
            // v0 leave of the last member: the group empties with a new generation.
            let mut req = LeaveGroupRequest::default();
            req.group_id = GroupId(StrBytes::from_static_str("g"));
            req.member_id = StrBytes::from_string(follower_id.clone());
            assert_eq!(
                coordinator.leave_group(0, req.clone()).await.error_code,
                NONE
            );
            assert_eq!(
                coordinator.leave_group(0, req).await.error_code,
                UNKNOWN_MEMBER_ID
            );
            let described = coordinator.describe_group(0, "g").await;
            assert_eq!(described.group_state.as_str(), "Empty");
            assert!(described.members.is_empty());
            coordinator.close().await;
        });
    }

    #[test]
    fn committed_offsets_survive_reopening_the_coordinator() {
        run("durable", |dir| async move {
            let coordinator = open(&dir).await;
            let offsets = [("t", 0, 10), ("t", 1, 20), ("u", 0, 5)];
            let response = coordinator
                .offset_commit(7, commit_request("simple", -1, "", &offsets))
                .await;
            assert_eq!(commit_errors(&response), vec![NONE; 3]);
            // A later commit overwrites one partition.
            let response = coordinator
                .offset_commit(7, commit_request("simple", -1, "", &[("t", 1, 25)]))
                .await;
            assert_eq!(commit_errors(&response), vec![NONE]);
            coordinator.close().await;
            drop(coordinator);

            let coordinator = open(&dir).await;
            let all = fetch(&coordinator, "simple", None).await;
            assert_eq!(
                all,
                vec![
                    ("t".to_string(), 0, 10, 3, "m10".to_string()),
                    ("t".to_string(), 1, 25, 3, "m25".to_string()),
                    ("u".to_string(), 0, 5, 3, "m5".to_string()),
                ]
            );
            let some = fetch(&coordinator, "simple", Some(&[("t", &[1, 7])])).await;
            assert_eq!(
                some,
                vec![
                    ("t".to_string(), 1, 25, 3, "m25".to_string()),
                    ("t".to_string(), 7, -1, -1, String::new())
                ]
            );
            assert!(fetch(&coordinator, "nobody", None).await.is_empty());
            // An offsets-only group is listed as Empty.
            let listed = coordinator.list_groups(4, &[]).await;
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].group_state.as_str(), "Empty");
            // v8: the groups array.
            let mut req = OffsetFetchRequest::default();
            let mut group = OffsetFetchRequestGroup::default();
            group.group_id = GroupId(StrBytes::from_static_str("simple"));
            group.topics = None;
            req.groups = vec![group];
            let response = coordinator.offset_fetch(8, req).await;
            assert_eq!(response.groups[0].topics.len(), 2);
            assert_eq!(
                response.groups[0].topics[0].partitions[1].committed_offset,
                25
            );
            coordinator.close().await;
        });
    }

    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    fn commits_are_fenced_by_generation_and_membership() {
        run("fencing", |dir| async move {
            let (coordinator, generation, leader_id, follower_id) = stable_pair(&dir, 5_000).await;
            let check = |request: OffsetCommitRequest, expected: i16| {
                let coordinator = coordinator.clone();
                async move {
                    let response = coordinator.offset_commit(7, request).await;
                    assert_eq!(commit_errors(&response), vec![expected]);
                }
            };
            check(
                commit_request("g", generation, &leader_id, &[("t", 0, 1)]),
                NONE,
            )
            .await;
            check(
                commit_request("g", generation + 1, &leader_id, &[("t", 0, 2)]),
                ILLEGAL_GENERATION,
            )
            .await;
            check(
                commit_request("g", generation, "stranger", &[("t", 0, 3)]),
                UNKNOWN_MEMBER_ID,
            )
            .await;
            // A simple commit is refused while the group has members.
            check(
                commit_request("g", -1, "", &[("t", 0, 4)]),
                UNKNOWN_MEMBER_ID,
            )
            .await;
            check(commit_request("", -1, "", &[("t", 0, 5)]), INVALID_GROUP_ID).await;
            check(
                commit_request("other", 3, "m", &[("t", 0, 6)]),
                ILLEGAL_GENERATION,
            )
            .await;
            let mut big = commit_request("g", generation, &leader_id, &[("t", 1, 7)]);
            big.topics[0].partitions[0].committed_metadata =
                Some(StrBytes::from_string("x".repeat(5000)));
            check(big, OFFSET_METADATA_TOO_LARGE).await;
            assert_eq!(
                fetch(&coordinator, "g", None).await,
                vec![("t".to_string(), 0, 1, 3, "m1".to_string())]
            );

            // Sync and heartbeat fencing.
            assert_eq!(
                sync(&coordinator, "g", generation + 5, &follower_id, &[])
                    .await
                    .error_code,
                ILLEGAL_GENERATION
            );
            assert_eq!(
                sync(&coordinator, "g", generation, "stranger", &[])
                    .await
                    .error_code,
                UNKNOWN_MEMBER_ID
            );
            assert_eq!(
                heartbeat(&coordinator, "g", generation - 1, &follower_id).await,
                ILLEGAL_GENERATION
            );
            assert_eq!(
                heartbeat(&coordinator, "nope", generation, &follower_id).await,
                UNKNOWN_MEMBER_ID
            );

            // The leader rejoins: a rebalance starts, sync and commits see it.
            let coordinator2 = coordinator.clone();
            let leader2 = leader_id.clone();
            let rejoin =
                glommio::spawn_local(
                    async move { join(&coordinator2, "g", &leader2, 5_000).await },
                );
            glommio::timer::sleep(Duration::from_millis(20)).await;
            assert_eq!(
                sync(&coordinator, "g", generation, &follower_id, &[])
                    .await
                    .error_code,
                REBALANCE_IN_PROGRESS
            );
            assert_eq!(
                heartbeat(&coordinator, "g", generation, &follower_id).await,
                REBALANCE_IN_PROGRESS
            );
            // Commits during PreparingRebalance are still accepted for the current generation.
            check(
                commit_request("g", generation, &follower_id, &[("t", 0, 8)]),
                NONE,
            )
            .await;
            let follower_join = join(&coordinator, "g", &follower_id, 5_000).await;
            let leader_join = rejoin.await;
            assert_eq!(follower_join.generation_id, generation + 1);
            assert_eq!(leader_join.generation_id, generation + 1);
            // CompletingRebalance: commits wait for the assignment.
            check(
                commit_request("g", generation + 1, &follower_id, &[("t", 0, 9)]),
                REBALANCE_IN_PROGRESS,
            )
            .await;
            coordinator.close().await;
        });
    }

    #[test]
    fn bad_joins_get_errors_not_panics() {
        run("bad-join", |dir| async move {
            let coordinator = open(&dir).await;
            let cases: Vec<(i16, JoinGroupRequest, i16)> = vec![
                (5, join_request("", "", 5_000, &["range"]), INVALID_GROUP_ID),
                (
                    5,
                    join_request("g", "", 5_000, &[]),
                    INCONSISTENT_GROUP_PROTOCOL,
                ),
                (
                    5,
                    join_request("g", "", -1, &["range"]),
                    INVALID_SESSION_TIMEOUT,
                ),
                (
                    5,
                    join_request("g", "", 1, &["range"]),
                    INVALID_SESSION_TIMEOUT,
                ),
                (
                    5,
                    join_request("g", "", i32::MAX, &["range"]),
                    INVALID_SESSION_TIMEOUT,
                ),
                (
                    5,
                    join_request("g", "ghost", 5_000, &["range"]),
                    UNKNOWN_MEMBER_ID,
                ),
            ];
            for (version, request, expected) in cases {
                let response = coordinator.join_group(version, request).await;
                assert_eq!(response.error_code, expected);
                assert!(response
                    .encode(&mut bytes::BytesMut::new(), version)
                    .is_ok());
            }
            // v0 clients get their id directly (no MEMBER_ID_REQUIRED round trip).
            let first = coordinator
                .join_group(0, join_request("old", "", 5_000, &["range"]))
                .await;
            assert_eq!(first.error_code, NONE);
            assert_eq!(first.generation_id, 1);
            // A member with no protocol in common is refused.
            let mut other = join_request("old", "", 5_000, &["sticky"]);
            other.protocol_type = StrBytes::from_static_str("consumer");
            assert_eq!(
                coordinator.join_group(0, other).await.error_code,
                INCONSISTENT_GROUP_PROTOCOL
            );
            coordinator.close().await;
        });
    }

    #[test]
    fn a_newcomer_rebalances_a_stable_group_and_the_leader_stays() {
        run("newcomer", |dir| async move {
            let (coordinator, generation, leader_id, follower_id) = stable_pair(&dir, 5_000).await;
            let newcomer = {
                let coordinator = coordinator.clone();
                glommio::spawn_local(async move { join(&coordinator, "g", "", 5_000).await })
            };
            glommio::timer::sleep(Duration::from_millis(20)).await;
            assert_eq!(
                heartbeat(&coordinator, "g", generation, &leader_id).await,
                REBALANCE_IN_PROGRESS
            );
            let (leader, follower) = zip(
                join(&coordinator, "g", &leader_id, 5_000),
                join(&coordinator, "g", &follower_id, 5_000),
            )
            .await;
            let newcomer = newcomer.await;
            for response in [&leader, &follower, &newcomer] {
                assert_eq!(response.error_code, NONE);
                assert_eq!(response.generation_id, generation + 1);
                assert_eq!(response.leader.as_str(), leader_id);
            }
            assert_eq!(leader.members.len(), 3);

            // A follower parked in SyncGroup is released when another rebalance starts.
            let parked = {
                let coordinator = coordinator.clone();
                let follower_id = follower_id.clone();
                glommio::spawn_local(async move {
                    sync(&coordinator, "g", generation + 1, &follower_id, &[]).await
                })
            };
            glommio::timer::sleep(Duration::from_millis(20)).await;
            let mut leave = LeaveGroupRequest::default();
            leave.group_id = GroupId(StrBytes::from_static_str("g"));
            leave.member_id = newcomer.member_id.clone();
            assert_eq!(coordinator.leave_group(1, leave).await.error_code, NONE);
            assert_eq!(parked.await.error_code, REBALANCE_IN_PROGRESS);
            coordinator.close().await;
        });
    }

    #[test]
    fn a_full_group_refuses_new_members() {
        run("full", |dir| async move {
            let config = GroupConfig {
                group_members_max: 2,
                ..test_config()
            };
            let coordinator = GroupCoordinator::open_with_config(&dir, 0, config)
                .await
                .unwrap();
            let request = || join_request("g", "", 5_000, &["range"]);
            let first = coordinator.join_group(5, request()).await;
            let second = coordinator.join_group(5, request()).await;
            assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
            assert_eq!(second.error_code, MEMBER_ID_REQUIRED);
            assert_eq!(
                coordinator.join_group(5, request()).await.error_code,
                GROUP_MAX_SIZE_REACHED
            );
            // Ids already handed out still get in.
            let (a, b) = zip(
                join(&coordinator, "g", first.member_id.as_str(), 5_000),
                join(&coordinator, "g", second.member_id.as_str(), 5_000),
            )
            .await;
            assert_eq!((a.error_code, b.error_code), (NONE, NONE));
            coordinator.close().await;
        });
    }

    #[test]
    fn static_members_fence_their_old_id() {
        run("static", |dir| async move {
            let coordinator = open(&dir).await;
            let mut request = join_request("s", "", 5_000, &["range"]);
            request.group_instance_id = Some(StrBytes::from_static_str("instance-1"));
            let first = coordinator.join_group(5, request.clone()).await;
            assert_eq!(
                first.error_code, NONE,
                "static members skip MEMBER_ID_REQUIRED"
            );
            let second = coordinator.join_group(5, request).await;
            assert_eq!(second.error_code, NONE);
            assert_ne!(first.member_id, second.member_id);
            let mut fenced = HeartbeatRequest::default();
            fenced.group_id = GroupId(StrBytes::from_static_str("s"));
            fenced.generation_id = second.generation_id;
            fenced.member_id = first.member_id.clone();
            fenced.group_instance_id = Some(StrBytes::from_static_str("instance-1"));
            assert_eq!(
                coordinator.heartbeat(4, fenced).await.error_code,
                FENCED_INSTANCE_ID
            );
            // Once Stable, a restart with the same protocols keeps the assignment, no rebalance.
            let generation = second.generation_id;
            let second_id = second.member_id.to_string();
            let synced = sync(
                &coordinator,
                "s",
                generation,
                &second_id,
                &[(second_id.as_str(), "mine")],
            )
            .await;
            assert_eq!(synced.assignment, Bytes::from("mine"));
            let mut request = join_request("s", "", 5_000, &["range"]);
            request.group_instance_id = Some(StrBytes::from_static_str("instance-1"));
            let third = coordinator.join_group(5, request).await;
            assert_eq!(third.error_code, NONE);
            assert_eq!(third.generation_id, generation);
            assert_eq!(third.leader, third.member_id);
            let third_id = third.member_id.to_string();
            let synced = sync(&coordinator, "s", generation, &third_id, &[]).await;
            assert_eq!(synced.assignment, Bytes::from("mine"));
            assert_eq!(
                heartbeat(&coordinator, "s", generation, &second_id).await,
                UNKNOWN_MEMBER_ID
            );
            assert_eq!(
                coordinator
                    .describe_group(5, "s")
                    .await
                    .group_state
                    .as_str(),
                "Stable"
            );
            coordinator.close().await;
        });
    }

    fn check_invariants(coordinator: &GroupCoordinator) {
        for (group_id, group) in coordinator.groups.borrow().iter() {
            let ids: BTreeSet<&str> = group.members.iter().map(|m| m.id.as_str()).collect();
            assert_eq!(
                ids.len(),
                group.members.len(),
                "{group_id}: duplicate member ids"
            );
            match group.state {
                GroupState::Empty => assert!(group.members.is_empty(), "{group_id}"),
                GroupState::CompletingRebalance | GroupState::Stable => {
                    let leader = group.leader.as_deref().expect("a leader");
                    assert!(ids.contains(leader), "{group_id}: leader is a member");
                    assert!(group.protocol_name.is_some());
                    assert!(group.members.iter().all(|m| m.join_waiter.is_none()));
                }
                GroupState::PreparingRebalance => {
                    assert!(group.rebalance_deadline.is_some())
                }
                GroupState::Dead => panic!("no group is kept Dead"),
            }
            if group.state == GroupState::Stable {
                assert!(group.members.iter().all(|m| m.sync_waiter.is_none()));
            }
            for member_id in group.static_members.values() {
                assert!(
                    ids.contains(member_id.as_str()),
                    "{group_id}: static map is current"
                );
            }
        }
    }

    /// Random interleavings of every request, with stale, foreign and garbage ids, generations
    /// and versions: nothing panics, invariants hold after every step, and every parked request
    /// is answered by the end.
    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    fn random_request_storms_keep_the_invariants() {
        run("storm", |dir| async move {
            let coordinator = open(&dir).await;
            let mut seed = 0x2545_f491_4f6c_dd1du64;
            let mut next = move |bound: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % bound
            };
            let mut known_ids: Vec<String> = vec![String::new(), "garbage".to_string()];
            // Spawned (possibly parked) requests report the member ids they were given here.
            let given_ids: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
            let parked = Rc::new(Cell::new(0usize));
            let spawn = |request: std::pin::Pin<Box<dyn Future<Output = String>>>| {
                let given_ids = given_ids.clone();
                let parked = parked.clone();
                parked.set(parked.get() + 1);
                glommio::spawn_local(async move {
                    let id = request.await;
                    given_ids.borrow_mut().push(id);
                    parked.set(parked.get() - 1);
                })
                .detach();
            };
            for step in 0..600 {
                let group = ["a", "b", ""][next(3) as usize];
                let mut member = known_ids[next(known_ids.len() as u64) as usize].clone();
                let mut generation = next(6) as i32 - 1;
                // Half the time, act as a well-behaved member (often the leader) would.
                if next(2) == 0 {
                    if let Some(current) = coordinator.groups.borrow().get(group) {
                        generation = current.generation_id;
                        let pick = next(current.members.len() as u64 + 1) as usize;
                        member = match (pick, current.members.get(pick)) {
                            (_, Some(m)) if next(2) == 0 => m.id.clone(),
                            _ => current.leader.clone().unwrap_or(member),
                        };
                    }
                }
                let coordinator2 = coordinator.clone();
                match next(20) {
                    0..=6 => {
                        let version = next(10) as i16;
                        let protocols: &[&str] =
                            [&["range"][..], &["range", "roundrobin"], &["sticky"], &[]]
                                [next(4) as usize];
                        let mut request = join_request(group, &member, 1_000, protocols);
                        request.rebalance_timeout_ms = 100 + next(200) as i32;
                        if next(4) == 0 {
                            request.group_instance_id =
                                Some(StrBytes::from_string(format!("i{}", next(3))));
                        }
                        spawn(Box::pin(async move {
                            let response = coordinator2.join_group(version, request).await;
                            response
                                .encode(&mut bytes::BytesMut::new(), version)
                                .unwrap();
                            response.member_id.to_string()
                        }));
                    }
                    7..=10 => {
                        let assignments = [(member.as_str(), "x")];
                        let version = next(6) as i16;
                        let mut request = SyncGroupRequest::default();
                        request.group_id = GroupId(StrBytes::from_string(group.to_string()));
                        request.generation_id = generation;
                        request.member_id = StrBytes::from_string(member.clone());
                        request.assignments = assignments
                            .iter()
                            .map(|(id, a)| {
                                let mut out = SyncGroupRequestAssignment::default();
                                out.member_id = StrBytes::from_string(id.to_string());
                                out.assignment = Bytes::from(a.to_string());
                                out
                            })
                            .collect();
                        spawn(Box::pin(async move {
                            let response = coordinator2.sync_group(version, request).await;
                            response
                                .encode(&mut bytes::BytesMut::new(), version)
                                .unwrap();
                            String::new()
                        }));
                    }
                    11..=13 => {
                        heartbeat(&coordinator, group, generation, &member).await;
                    }
                    14 => {
                        let mut request = LeaveGroupRequest::default();
                        request.group_id = GroupId(StrBytes::from_string(group.to_string()));
                        request.member_id = StrBytes::from_string(member.clone());
                        let mut identity = MemberIdentity::default();
                        identity.member_id = StrBytes::from_string(member.clone());
                        request.members = vec![identity];
                        let version = next(6) as i16;
                        coordinator.leave_group(version, request).await;
                    }
                    15 | 16 => {
                        let request = commit_request(
                            group,
                            generation,
                            &member,
                            &[("t", next(3) as i32, step)],
                        );
                        let response = coordinator.offset_commit(2 + next(8) as i16, request).await;
                        assert_eq!(commit_errors(&response).len(), 1);
                    }
                    17 => {
                        coordinator.describe_group(next(7) as i16, group).await;
                        coordinator.list_groups(next(6) as i16, &[]).await;
                    }
                    _ => glommio::timer::sleep(Duration::from_millis(next(40))).await,
                }
                // Let spawned requests run, then learn the ids they were given.
                glommio::timer::sleep(Duration::from_millis(1)).await;
                for id in given_ids.borrow_mut().drain(..) {
                    if !id.is_empty() && !known_ids.contains(&id) {
                        // Keep "" and "garbage", and the most recent ids.
                        if known_ids.len() >= 10 {
                            known_ids.remove(2);
                        }
                        known_ids.push(id);
                    }
                }
                check_invariants(&coordinator);
            }
            coordinator.close().await;
            for _ in 0..1000 {
                if parked.get() == 0 {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(parked.get(), 0, "close answers every parked request");
        });
    }

    /// Every response shape encodes in every version the broker may negotiate: a field set in a
    /// version that lacks it would make the codec refuse the response.
    #[test]
    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    fn responses_encode_in_every_version() {
        run("encode", |dir| async move {
            let (coordinator, generation, leader_id, _) = stable_pair(&dir, 5_000).await;
            let mut buffer = bytes::BytesMut::new();
            for version in 0..=9 {
                let response = coordinator
                    .join_group(version, join_request("g", &leader_id, 5_000, &["range"]))
                    .await;
                response.encode(&mut buffer, version).unwrap();
            }
            for version in 0..=5 {
                let mut request = SyncGroupRequest::default();
                request.group_id = GroupId(StrBytes::from_static_str("g"));
                request.generation_id = generation;
                request.member_id = StrBytes::from_string(leader_id.clone());
                coordinator
                    .sync_group(version, request)
                    .await
                    .encode(&mut buffer, version)
                    .unwrap();
                let mut request = LeaveGroupRequest::default();
                request.group_id = GroupId(StrBytes::from_static_str("g"));
                coordinator
                    .leave_group(version, request)
                    .await
                    .encode(&mut buffer, version)
                    .unwrap();
            }
            for version in 0..=4 {
                coordinator
                    .heartbeat(version, HeartbeatRequest::default())
                    .await
                    .encode(&mut buffer, version)
                    .unwrap();
            }
            for version in 2..=9 {
                let response = coordinator
                    .offset_commit(version, commit_request("z", -1, "", &[("t", 0, 1)]))
                    .await;
                response.encode(&mut buffer, version).unwrap();
            }
            for version in 1..=7 {
                let mut request = OffsetFetchRequest::default();
                request.group_id = GroupId(StrBytes::from_static_str("z"));
                request.topics = Some(Vec::new());
                let mut topic = OffsetFetchRequestTopic::default();
                topic.name = TopicName(StrBytes::from_static_str("t"));
                topic.partition_indexes = vec![0, 1];
                request.topics.as_mut().unwrap().push(topic);
                let response = coordinator.offset_fetch(version, request.clone()).await;
                response.encode(&mut buffer, version).unwrap();
                // An empty group id is an error, in the shape this version has for it.
                request.group_id = GroupId(StrBytes::from_static_str(""));
                let response = coordinator.offset_fetch(version, request).await;
                response.encode(&mut buffer, version).unwrap();
                let error = if version >= 2 {
                    response.error_code
                } else {
                    response.topics[0].partitions[0].error_code
                };
                assert_eq!(error, INVALID_GROUP_ID);
            }
            for version in 0..=6 {
                let mut response = kafka_protocol::messages::DescribeGroupsResponse::default();
                response.groups = vec![
                    coordinator.describe_group(version, "g").await,
                    coordinator.describe_group(version, "none").await,
                ];
                response.encode(&mut buffer, version).unwrap();
            }
            for version in 0..=5 {
                let mut response = kafka_protocol::messages::ListGroupsResponse::default();
                response.groups = coordinator.list_groups(version, &[]).await;
                response.encode(&mut buffer, version).unwrap();
            }
            coordinator.close().await;
        });
    }
}
