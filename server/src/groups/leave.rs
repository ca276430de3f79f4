//! LeaveGroup on the group's owner shard: members (or static instances) leave, and the group
//! rebalances without them.
//!
//! Runs on the owner shard's executor; synchronous.

use std::time::Instant;

use super::coordinator::GroupCoordinator;
use super::error::GroupError;
use super::membership::{after_members_removed, try_complete_join};

/// One member leaving: by member id, or by group.instance.id (then the member id, if given,
/// must be the instance's current one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeavingMember {
    pub member_id: String,
    pub instance_id: Option<String>,
}

impl GroupCoordinator {
    /// Removes `leaving` from `group_id`: one result per member, in order, or one refusal for
    /// the whole request when the coordinator is closing.
    pub fn leave_group(
        &self,
        group_id: &str,
        leaving: &[LeavingMember],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if self.closed.get() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id) else {
            return Ok(vec![Err(GroupError::UnknownMember); leaving.len()]);
        };
        let mut removed_any = false;
        let results = leaving
            .iter()
            .map(|member| {
                let target = match &member.instance_id {
                    Some(instance) => match group.static_members.get(instance) {
                        Some(current)
                            if member.member_id.is_empty() || *current == member.member_id =>
                        {
                            current.clone()
                        }
                        Some(_) => return Err(GroupError::FencedInstanceId),
                        None => return Err(GroupError::UnknownMember),
                    },
                    None => member.member_id.clone(),
                };
                if group
                    .remove_member(&target, GroupError::UnknownMember)
                    .is_some()
                {
                    removed_any = true;
                    Ok(())
                } else if group.pending_members.remove(&target).is_some() {
                    Ok(())
                } else {
                    Err(GroupError::UnknownMember)
                }
            })
            .collect();
        if removed_any {
            after_members_removed(group, Instant::now(), self.config.initial_rebalance_delay);
        } else {
            try_complete_join(group, Instant::now());
        }
        Ok(results)
    }
}
