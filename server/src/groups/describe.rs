//! DescribeGroups and ListGroups on one shard: what this shard's coordinator knows of a group,
//! and which groups it coordinates (the broker splits and merges across shards).
//!
//! Runs on the shard's executor; reads only.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::coordinator::{state_of, GroupCoordinator};
use super::error::GroupError;
use super::group::GroupState;

/// One group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    /// Empty for a group that only has committed offsets.
    pub protocol_type: String,
    /// The chosen protocol; Kafka shows it (and member metadata and assignments) only once the
    /// group is Stable.
    pub protocol: Option<String>,
    pub members: Vec<DescribedMember>,
}

/// One member of a described group; metadata and assignment are empty unless the group is
/// Stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// One group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

impl GroupCoordinator {
    /// One group; `GroupIdNotFound` when this shard knows nothing of it.
    pub fn describe_group(&self, group_id: &str) -> Result<GroupDescription, GroupError> {
        if self.closed.get() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let groups = self.groups.borrow();
        let state = state_of(&groups, &self.offsets, group_id);
        if state == GroupState::Dead {
            return Err(GroupError::GroupIdNotFound);
        }
        let mut description = GroupDescription {
            group_id: group_id.to_string(),
            state,
            protocol_type: String::new(),
            protocol: None,
            members: Vec::new(),
        };
        let Some(group) = groups.get(group_id) else {
            return Ok(description);
        };
        description.protocol_type = group.protocol_type.clone().unwrap_or_default();
        description.protocol = (group.state == GroupState::Stable)
            .then(|| group.protocol_name.clone())
            .flatten();
        description.members = group
            .members
            .iter()
            .map(|member| {
                let (metadata, assignment) = match &description.protocol {
                    Some(protocol) => (member.metadata(protocol), member.assignment.clone()),
                    None => (Bytes::new(), Bytes::new()),
                };
                DescribedMember {
                    member_id: member.id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    metadata,
                    assignment,
                }
            })
            .collect();
        Ok(description)
    }

    /// Whether this shard holds `group_id` as a classic group (members, or committed offsets):
    /// ShareGroupHeartbeat refuses such an id, as Kafka's one namespace of groups does.
    pub fn has_group(&self, group_id: &str) -> bool {
        let groups = self.groups.borrow();
        state_of(&groups, &self.offsets, group_id) != GroupState::Dead
    }

    /// This shard's groups, by id. `states_filter` matches state names case-insensitively;
    /// empty means all. Nothing while the coordinator is closing.
    pub fn list_groups(&self, states_filter: &[String]) -> Vec<GroupListing> {
        if self.closed.get() {
            return Vec::new();
        }
        let groups = self.groups.borrow();
        let mut ids: BTreeSet<String> = groups.keys().cloned().collect();
        ids.extend(self.offsets.groups());
        ids.into_iter()
            .filter_map(|group_id| {
                let state = state_of(&groups, &self.offsets, &group_id);
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
                let protocol_type = groups
                    .get(&group_id)
                    .and_then(|group| group.protocol_type.clone())
                    .unwrap_or_default();
                Some(GroupListing {
                    group_id,
                    protocol_type,
                    state,
                })
            })
            .collect()
    }
}
