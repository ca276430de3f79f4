//! JoinGroup on the group's owner shard: validating a join, handing out member ids first
//! (KIP-394), static members taking over their old place (KIP-345), and parking the request
//! until the join phase ends (`membership.rs` decides when).
//!
//! Runs on the owner shard's executor; the group is borrowed only synchronously, and a parked
//! join is awaited on its one-shot channel with no borrow held.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::coordinator::{valid_name, ClientInfo, GroupCoordinator, Step};
use super::error::GroupError;
use super::group::{Group, GroupState, JoinOutcome, Member};
use super::membership::{
    current_join_outcome, prepare_rebalance, replace_static_member, try_complete_join,
};

/// A member asking to join (or rejoin) a group.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// group.instance.id of a static member; None for a dynamic one.
    pub instance_id: Option<String>,
    pub session_timeout_ms: i32,
    /// None when the client has none to give: the session timeout stands in, as in Kafka.
    pub rebalance_timeout_ms: Option<i32>,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// KIP-394: a new dynamic member first gets its id (`MemberIdRequired`) and joins with it,
    /// so a client that dies in between leaves no ghost member behind.
    pub member_id_required: bool,
    pub client: ClientInfo,
}

impl GroupCoordinator {
    /// Joins `request`'s member to its group; parks until the join phase ends when it must.
    pub async fn join_group(&self, request: JoinRequest) -> JoinOutcome {
        let member_id = request.member_id.clone();
        match self.join_begin(request) {
            Step::Done(outcome) => outcome,
            Step::Wait(receiver) => match receiver.recv_async().await {
                Ok(outcome) => outcome,
                // The waiter was replaced by a newer JoinGroup from the same member.
                Err(_) => JoinOutcome::error(GroupError::RebalanceInProgress, &member_id),
            },
        }
    }

    fn join_begin(&self, request: JoinRequest) -> Step<JoinOutcome> {
        let member_id = request.member_id.clone();
        let error = |error| Step::Done(JoinOutcome::error(error, &member_id));
        let (session_timeout, rebalance_timeout) = match self.join_timeouts(&request) {
            Ok(timeouts) => timeouts,
            Err(refused) => return error(refused),
        };
        let now = Instant::now();
        let mut groups = self.groups.borrow_mut();
        let group = groups
            .entry(request.group_id.clone())
            .or_insert_with(Group::new);
        if group.state == GroupState::Dead {
            return error(GroupError::CoordinatorNotAvailable);
        }
        if !group.accepts(&member_id, &request.protocol_type, &request.protocols) {
            return error(GroupError::InconsistentProtocol);
        }
        let is_new = member_id.is_empty()
            || (group.member(&member_id).is_none()
                && !group.pending_members.contains_key(&member_id));
        if is_new
            && group.members.len() + group.pending_members.len() >= self.config.group_members_max
        {
            return error(GroupError::GroupMaxSizeReached);
        }
        let (sender, receiver) = flume::bounded(1);
        let member_id_required = request.member_id_required;
        let joiner = Member {
            id: request.member_id,
            instance_id: request.instance_id,
            client_id: request.client.client_id,
            client_host: request.client.client_host,
            session_timeout,
            rebalance_timeout,
            protocol_type: request.protocol_type,
            protocols: request.protocols,
            assignment: Bytes::new(),
            session_deadline: now + session_timeout,
            join_waiter: Some(sender),
            sync_waiter: None,
        };
        let answered = if member_id.is_empty() {
            self.join_new_member(group, joiner, member_id_required, now)
        } else {
            self.join_known_member(group, joiner, now)
        };
        match answered {
            Some(outcome) => Step::Done(outcome),
            None => Step::Wait(receiver),
        }
    }

    /// The session and rebalance timeouts of a join, or why it is refused before the group is
    /// looked at.
    fn join_timeouts(&self, request: &JoinRequest) -> Result<(Duration, Duration), GroupError> {
        if self.closed.get() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !valid_name(&request.group_id) {
            return Err(GroupError::InvalidGroupId);
        }
        let session_timeout = u64::try_from(request.session_timeout_ms)
            .map(Duration::from_millis)
            .map_err(|_| GroupError::InvalidSessionTimeout)?;
        if session_timeout < self.config.session_timeout_min
            || session_timeout > self.config.session_timeout_max
        {
            return Err(GroupError::InvalidSessionTimeout);
        }
        let rebalance_timeout = match request.rebalance_timeout_ms.map(u64::try_from) {
            Some(Ok(ms)) if ms > 0 => Duration::from_millis(ms),
            _ => session_timeout,
        };
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return Err(GroupError::InconsistentProtocol);
        }
        Ok((session_timeout, rebalance_timeout))
    }

    /// A join with no member id: a static member takes over its old place, a dynamic one gets
    /// its id first or joins straight away. None: the joiner waits for the join phase to end.
    fn join_new_member(
        &self,
        group: &mut Group,
        mut joiner: Member,
        member_id_required: bool,
        now: Instant,
    ) -> Option<JoinOutcome> {
        joiner.id = self.new_member_id(&joiner.client_id);
        if let Some(instance) = joiner.instance_id.clone() {
            // A static member restarting: take over the old member's place; the old id is
            // fenced from now on. In a Stable group with unchanged protocols it keeps its
            // assignment and no rebalance happens (KIP-345).
            if let Some(outcome) = replace_static_member(group, &instance, &joiner, now) {
                return Some(outcome);
            }
            if let Some(old_id) = group.static_members.get(&instance).cloned() {
                if let Some(old) = group.remove_member(&old_id, GroupError::FencedInstanceId) {
                    joiner.assignment = old.assignment;
                }
            }
            group.static_members.insert(instance, joiner.id.clone());
        } else if member_id_required {
            group
                .pending_members
                .insert(joiner.id.clone(), now + joiner.session_timeout);
            return Some(JoinOutcome::error(GroupError::MemberIdRequired, &joiner.id));
        }
        self.add_member(group, joiner, now);
        None
    }

    /// A join with a member id: a handed-out id joining, or a member rejoining.
    /// None: the joiner waits for the join phase to end.
    fn join_known_member(
        &self,
        group: &mut Group,
        joiner: Member,
        now: Instant,
    ) -> Option<JoinOutcome> {
        let member_id = joiner.id.clone();
        if group.is_fenced(joiner.instance_id.as_deref(), &member_id) {
            return Some(JoinOutcome::error(GroupError::FencedInstanceId, &member_id));
        }
        if group.pending_members.remove(&member_id).is_some() {
            if let Some(instance) = &joiner.instance_id {
                group
                    .static_members
                    .insert(instance.clone(), member_id.clone());
            }
            self.add_member(group, joiner, now);
            return None;
        }
        let Some(existing) = group.member(&member_id) else {
            return Some(JoinOutcome::error(GroupError::UnknownMember, &member_id));
        };
        let unchanged = existing.protocols == joiner.protocols;
        match group.state {
            GroupState::PreparingRebalance => {
                self.update_member(group, joiner);
                try_complete_join(group, now);
                None
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
                Some(outcome)
            }
            _ => {
                self.update_member(group, joiner);
                prepare_rebalance(group, now, self.config.initial_rebalance_delay);
                try_complete_join(group, now);
                None
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
            // `RebalanceInProgress` and the client follows the newer one.
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
}
