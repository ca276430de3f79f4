//! SyncGroup and Heartbeat on the group's owner shard: the leader hands out assignments, the
//! followers park until it does, and every member proves it is alive in the current generation.
//!
//! Runs on the owner shard's executor; a follower's parked SyncGroup is awaited on its one-shot
//! channel with no borrow of the group held.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use super::coordinator::{GroupCoordinator, Step};
use super::error::GroupError;
use super::group::{Group, GroupState, SyncOutcome};

/// Who is asking, and in which generation: the identity that SyncGroup, Heartbeat and
/// OffsetCommit are fenced by.
#[derive(Debug, Clone, Default)]
pub struct MemberGeneration {
    pub group_id: String,
    pub member_id: String,
    pub generation_id: i32,
    /// group.instance.id of a static member; None for a dynamic one.
    pub instance_id: Option<String>,
}

/// A SyncGroup: the leader's carries the assignments, a follower's none.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub member: MemberGeneration,
    /// The protocol type and name the member believes the group chose; None is not checked.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// (member id, assignment), from the leader.
    pub assignments: Vec<(String, Bytes)>,
}

/// A member's assignment, with the group's protocol type and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub assignment: Bytes,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
}

impl GroupCoordinator {
    /// The member's assignment for the current generation; a follower parks until the leader's
    /// SyncGroup arrives.
    pub async fn sync_group(&self, request: SyncRequest) -> Result<Synced, GroupError> {
        let (step, mut synced) = self.sync_begin(&request)?;
        synced.assignment = match step {
            Step::Done(outcome) => outcome,
            Step::Wait(receiver) => receiver
                .recv_async()
                .await
                .unwrap_or(Err(GroupError::RebalanceInProgress)),
        }?;
        Ok(synced)
    }

    /// The synchronous half of a SyncGroup: the assignment now or a parked wait for it, with
    /// the group's protocol (its assignment still empty).
    fn sync_begin(&self, request: &SyncRequest) -> Result<(Step<SyncOutcome>, Synced), GroupError> {
        if self.closed.get() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let member_id = request.member.member_id.as_str();
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&request.member.group_id) else {
            return Err(GroupError::UnknownMember);
        };
        check_sync(group, request)?;
        let synced = Synced {
            assignment: Bytes::new(),
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
        };
        let now = Instant::now();
        let step = match group.state {
            GroupState::Empty | GroupState::Dead => return Err(GroupError::UnknownMember),
            GroupState::PreparingRebalance => return Err(GroupError::RebalanceInProgress),
            GroupState::Stable => {
                let Some(member) = group.member_mut(member_id) else {
                    return Err(GroupError::UnknownMember);
                };
                member.session_deadline = now + member.session_timeout;
                Step::Done(Ok(member.assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = flume::bounded(1);
                if let Some(member) = group.member_mut(member_id) {
                    member.session_deadline = now + member.session_timeout;
                    member.sync_waiter = Some(sender);
                }
                if group.is_leader(member_id) {
                    distribute_assignments(group, &request.assignments);
                }
                Step::Wait(receiver)
            }
        };
        Ok((step, synced))
    }

    /// Kafka's heartbeat: the member's session is extended; an error tells it to rejoin.
    pub fn heartbeat(&self, request: &MemberGeneration) -> Result<(), GroupError> {
        if self.closed.get() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&request.group_id) else {
            return Err(GroupError::UnknownMember);
        };
        if group.is_fenced(request.instance_id.as_deref(), &request.member_id) {
            return Err(GroupError::FencedInstanceId);
        }
        let generation_id = group.generation_id;
        let state = group.state;
        let Some(member) = group.member_mut(&request.member_id) else {
            return Err(GroupError::UnknownMember);
        };
        if request.generation_id != generation_id {
            return Err(GroupError::IllegalGeneration);
        }
        member.session_deadline = Instant::now() + member.session_timeout;
        match state {
            GroupState::Empty | GroupState::Dead => Err(GroupError::UnknownMember),
            GroupState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }
}

/// Whether this member may sync with this group now: not fenced, a member, in the current
/// generation, and agreeing on the protocol when it names one.
fn check_sync(group: &Group, request: &SyncRequest) -> Result<(), GroupError> {
    let member = &request.member;
    if group.is_fenced(member.instance_id.as_deref(), &member.member_id) {
        return Err(GroupError::FencedInstanceId);
    }
    if group.member(&member.member_id).is_none() {
        return Err(GroupError::UnknownMember);
    }
    if member.generation_id != group.generation_id {
        return Err(GroupError::IllegalGeneration);
    }
    let mismatch = |asked: &Option<String>, current: &Option<String>| {
        asked
            .as_ref()
            .is_some_and(|asked| current.as_deref() != Some(asked.as_str()))
    };
    if mismatch(&request.protocol_type, &group.protocol_type)
        || mismatch(&request.protocol_name, &group.protocol_name)
    {
        return Err(GroupError::InconsistentProtocol);
    }
    Ok(())
}

/// The leader's SyncGroup: every member gets its assignment (empty if the leader gave none),
/// parked followers are answered, and the group is Stable.
fn distribute_assignments(group: &mut Group, assignments: &[(String, Bytes)]) {
    let assignments: HashMap<&str, &Bytes> = assignments
        .iter()
        .map(|(member_id, assignment)| (member_id.as_str(), assignment))
        .collect();
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
