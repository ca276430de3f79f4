//! The rebalance state machine's transitions over one `Group`: starting a rebalance, ending the
//! join phase, a static member taking over its old place, and the join answer a member gets.
//!
//! Runs on the group's owner shard, called by the coordinator with the group borrowed; pure and
//! synchronous (parked requests are answered through their one-shot senders, never awaited).

use std::time::{Duration, Instant};

use super::error::GroupError;
use super::group::{select_protocol, Group, GroupState, JoinOutcome, JoinedMember, Member};

/// A known static member rejoining a Stable group with the same protocols takes over its old
/// entry under `joiner.id` (new id, same place and assignment). None when a rebalance is needed.
pub(super) fn replace_static_member(
    group: &mut Group,
    instance: &str,
    joiner: &Member,
    now: Instant,
) -> Option<JoinOutcome> {
    if group.state != GroupState::Stable {
        return None;
    }
    let old_id = group.static_members.get(instance)?.clone();
    let old = group.member_mut(&old_id)?;
    if old.protocols != joiner.protocols || old.protocol_type != joiner.protocol_type {
        return None;
    }
    // Anything the old incarnation still has parked is answered as fenced.
    if let Some(waiter) = old.join_waiter.take() {
        let _ = waiter.send(JoinOutcome::error(GroupError::FencedInstanceId, &old_id));
    }
    if let Some(waiter) = old.sync_waiter.take() {
        let _ = waiter.send(Err(GroupError::FencedInstanceId));
    }
    old.id = joiner.id.clone();
    old.client_id = joiner.client_id.clone();
    old.client_host = joiner.client_host.clone();
    old.session_timeout = joiner.session_timeout;
    old.rebalance_timeout = joiner.rebalance_timeout;
    old.session_deadline = now + joiner.session_timeout;
    group
        .static_members
        .insert(instance.to_string(), joiner.id.clone());
    if group.is_leader(&old_id) {
        group.leader = Some(joiner.id.clone());
    }
    Some(current_join_outcome(group, &joiner.id))
}

/// Starts a rebalance: members must rejoin within the rebalance timeout. Followers parked in
/// SyncGroup are told `RebalanceInProgress`.
pub(super) fn prepare_rebalance(group: &mut Group, now: Instant, initial_delay: Duration) {
    if group.state == GroupState::CompletingRebalance {
        for member in &mut group.members {
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(Err(GroupError::RebalanceInProgress));
            }
        }
    }
    let rebalance_timeout = group.max_rebalance_timeout();
    group.initial_delay_until =
        (group.state == GroupState::Empty).then(|| now + initial_delay.min(rebalance_timeout));
    group.state = GroupState::PreparingRebalance;
    group.rebalance_started = Some(now);
    group.rebalance_deadline = Some(now + rebalance_timeout);
}

pub(super) fn after_members_removed(group: &mut Group, now: Instant, initial_delay: Duration) {
    match group.state {
        GroupState::Stable | GroupState::CompletingRebalance => {
            prepare_rebalance(group, now, initial_delay)
        }
        _ => {}
    }
    try_complete_join(group, now);
}

/// Ends the join phase when every member has rejoined (after the initial delay), or when the
/// rebalance timeout has passed (members that did not rejoin are dropped).
pub(super) fn try_complete_join(group: &mut Group, now: Instant) {
    if group.state != GroupState::PreparingRebalance {
        return;
    }
    let delay_over = group.initial_delay_until.is_none_or(|until| now >= until);
    let timed_out = group
        .rebalance_deadline
        .is_some_and(|deadline| now >= deadline);
    if !(timed_out || (delay_over && group.all_joined())) {
        return;
    }
    let missing: Vec<String> = group
        .members
        .iter()
        .filter(|member| member.join_waiter.is_none())
        .map(|member| member.id.clone())
        .collect();
    for member_id in &missing {
        group.remove_member(member_id, GroupError::UnknownMember);
    }
    group.generation_id = group.generation_id.wrapping_add(1);
    group.rebalance_started = None;
    group.rebalance_deadline = None;
    group.initial_delay_until = None;
    if group.members.is_empty() {
        group.state = GroupState::Empty;
        group.protocol_name = None;
        group.leader = None;
        return;
    }
    group.protocol_type = group.members.first().map(|m| m.protocol_type.clone());
    group.protocol_name = select_protocol(&group.members);
    assert!(
        group.protocol_name.is_some(),
        "joins are refused unless every member shares a protocol"
    );
    if group
        .leader
        .as_ref()
        .is_none_or(|leader| group.member(leader).is_none())
    {
        group.leader = group.members.first().map(|m| m.id.clone());
    }
    group.state = GroupState::CompletingRebalance;
    let member_ids: Vec<String> = group.members.iter().map(|m| m.id.clone()).collect();
    for member_id in member_ids {
        let outcome = current_join_outcome(group, &member_id);
        if let Some(member) = group.member_mut(&member_id) {
            member.session_deadline = now + member.session_timeout;
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(outcome);
            }
        }
    }
}

pub(super) fn current_join_outcome(group: &Group, member_id: &str) -> JoinOutcome {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members = if group.is_leader(member_id) {
        group
            .members
            .iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m.metadata(&protocol),
            })
            .collect()
    } else {
        Vec::new()
    };
    JoinOutcome {
        error: None,
        generation_id: group.generation_id,
        protocol_type: group.protocol_type.clone(),
        protocol_name: group.protocol_name.clone(),
        leader: group.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members,
    }
}
