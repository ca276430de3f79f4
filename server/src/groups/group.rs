//! One consumer group's membership state (Kafka's classic protocol) and the pure rules over it.
//!
//! Owned by the coordinator of the group's shard; plain data, no I/O, no awaiting. Members that
//! long-poll (a JoinGroup waiting for the rebalance to finish, a follower's SyncGroup waiting for
//! the leader) park a one-shot sender here; the coordinator answers through it.
//!
//! ```text
//!            join (first member)             all rejoined / rebalance timeout
//!   Empty ─────────────────────► Preparing ──────────────────────────► Completing
//!     ▲                          Rebalance ◄─────────┐                 Rebalance
//!     │ last member leaves /        ▲   join, leave, │ new member, leave,    │ leader's
//!     │ expires (new generation)    │   expiry       │ expiry, leader rejoin │ SyncGroup
//!     └─────────────────────────────┴─────────── Stable ◄──────────────────────┘
//! ```
//! Dead is only reported for groups this shard does not know.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::error::GroupError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The names Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup is answered with (parked or not).
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    /// None when the member joined; with `MemberIdRequired`, `member_id` is its new id.
    pub error: Option<GroupError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members, with their metadata for the chosen protocol.
    pub members: Vec<JoinedMember>,
}

/// One member as the leader sees it in its JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

impl JoinOutcome {
    pub fn error(error: GroupError, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// What a parked SyncGroup is answered with: the member's assignment, or why not.
pub type SyncOutcome = Result<Bytes, GroupError>;

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub session_deadline: Instant,
    pub join_waiter: Option<flume::Sender<JoinOutcome>>,
    pub sync_waiter: Option<flume::Sender<SyncOutcome>>,
}

impl Member {
    pub fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// A member that is long-polling is alive even if it sends no heartbeats meanwhile; one whose
    /// request was dropped (client gone) is not, so its session can expire.
    pub fn is_parked(&self) -> bool {
        let waiting = |disconnected: Option<bool>| disconnected == Some(false);
        waiting(
            self.join_waiter
                .as_ref()
                .map(flume::Sender::is_disconnected),
        ) || waiting(
            self.sync_waiter
                .as_ref()
                .map(flume::Sender::is_disconnected),
        )
    }
}

#[derive(Debug)]
pub struct Group {
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    /// In join order: the first member becomes leader when there is none.
    pub members: Vec<Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED that have not joined yet, with their expiry.
    pub pending_members: HashMap<String, Instant>,
    /// group.instance.id -> member id, for static members.
    pub static_members: HashMap<String, String>,
    pub rebalance_started: Option<Instant>,
    pub rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group waits this long for more members.
    pub initial_delay_until: Option<Instant>,
}

impl Group {
    pub fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_started: None,
            rebalance_deadline: None,
            initial_delay_until: None,
        }
    }

    pub fn member(&self, member_id: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.id == member_id)
    }

    pub fn member_mut(&mut self, member_id: &str) -> Option<&mut Member> {
        self.members
            .iter_mut()
            .find(|member| member.id == member_id)
    }

    pub fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    /// True when `instance_id` belongs to a different member id: the caller is a zombie.
    pub fn is_fenced(&self, instance_id: Option<&str>, member_id: &str) -> bool {
        match instance_id.and_then(|instance| self.static_members.get(instance)) {
            Some(current) => current != member_id,
            None => false,
        }
    }

    /// Removes a member; answers whatever it was parked on with `error`.
    pub fn remove_member(&mut self, member_id: &str, error: GroupError) -> Option<Member> {
        let index = self
            .members
            .iter()
            .position(|member| member.id == member_id)?;
        let mut member = self.members.remove(index);
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinOutcome::error(error, member_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(Err(error));
        }
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.is_leader(member_id) {
            self.leader = None;
        }
        Some(member)
    }

    /// Whether a joiner offering `protocols` of `protocol_type` can sit in this group with the
    /// members other than `member_id` (it must share the type and at least one protocol with all).
    pub fn accepts(
        &self,
        member_id: &str,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> bool {
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|member| member.id != member_id)
            .collect();
        if others.is_empty() {
            return true;
        }
        if others
            .iter()
            .any(|member| member.protocol_type != protocol_type)
        {
            return false;
        }
        protocols
            .iter()
            .any(|(name, _)| others.iter().all(|member| member.supports(name)))
    }

    pub fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .iter()
            .map(|member| member.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Every member (and every id handed out by MEMBER_ID_REQUIRED) has sent its JoinGroup.
    pub fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.iter().all(|m| m.join_waiter.is_some())
    }
}

/// Kafka's protocol selection: among the protocols every member supports, each member votes for
/// the first of them in its own preference order; most votes wins, ties go to the candidate that
/// comes first in the first member's (the longest-standing member's) preferences.
pub fn select_protocol(members: &[Member]) -> Option<String> {
    let first = members.first()?;
    let candidates: Vec<&str> = first
        .protocols
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| members.iter().all(|member| member.supports(name)))
        .collect();
    let mut votes = vec![0usize; candidates.len()];
    for member in members {
        let choice = member
            .protocols
            .iter()
            .find_map(|(name, _)| candidates.iter().position(|candidate| candidate == name));
        if let Some(index) = choice {
            votes[index] += 1;
        }
    }
    let mut best: Option<(usize, usize)> = None;
    for (index, count) in votes.iter().enumerate() {
        if best.is_none_or(|(_, best_count)| *count > best_count) {
            best = Some((index, *count));
        }
    }
    best.map(|(index, _)| candidates[index].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            id: id.to_string(),
            instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(10),
            protocol_type: "consumer".to_string(),
            protocols: protocols
                .iter()
                .map(|name| (name.to_string(), Bytes::new()))
                .collect(),
            assignment: Bytes::new(),
            session_deadline: Instant::now(),
            join_waiter: None,
            sync_waiter: None,
        }
    }

    fn check(members: &[(&str, &[&str])], expected: Option<&str>) {
        let members: Vec<Member> = members
            .iter()
            .map(|(id, protocols)| member(id, protocols))
            .collect();
        assert_eq!(
            select_protocol(&members).as_deref(),
            expected,
            "{members:?}"
        );
    }

    #[test]
    fn protocol_selection_follows_votes_among_common_protocols() {
        check(&[("a", &["range", "roundrobin"])], Some("range"));
        check(
            &[
                ("a", &["range", "roundrobin"]),
                ("b", &["roundrobin", "range"]),
                ("c", &["roundrobin"]),
            ],
            Some("roundrobin"),
        );
        // Tie: the first member's preference wins.
        check(
            &[("a", &["range", "sticky"]), ("b", &["sticky", "range"])],
            Some("range"),
        );
        check(&[("a", &["range"]), ("b", &["sticky"])], None);
        check(&[], None);
    }

    #[test]
    fn accepts_requires_type_and_one_common_protocol() {
        let mut group = Group::new();
        group.members.push(member("a", &["range", "roundrobin"]));
        let offer = |names: &[&str]| -> Vec<(String, Bytes)> {
            names
                .iter()
                .map(|n| (n.to_string(), Bytes::new()))
                .collect()
        };
        assert!(group.accepts("b", "consumer", &offer(&["roundrobin"])));
        assert!(!group.accepts("b", "consumer", &offer(&["sticky"])));
        assert!(!group.accepts("b", "connect", &offer(&["range"])));
        // A lone member may change its own protocols.
        assert!(group.accepts("a", "connect", &offer(&["x"])));
    }
}
