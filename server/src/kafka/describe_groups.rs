//! DescribeGroups (v0-v5 advertised): split by owner shard, each group described there, the
//! answers merged in request order and shaped for the version.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Pending};
use super::error_codes as code;
use crate::groups::{
    self, owner_shard, GroupDescription, GroupError, GroupRequest, GroupResponse, GroupState,
};
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;

pub fn handle(
    shard: &Rc<Shard>,
    request: &Request,
    access: &Access,
) -> Result<Pending, CodecError> {
    let body: DescribeGroupsRequest = decode_body(request)?;
    let version = request.version;
    let shard = shard.clone();
    let access = access.clone();
    Ok(later(
        request.key,
        version,
        request.correlation_id,
        async move {
            let mut response = DescribeGroupsResponse::default();
            for group in body.groups {
                let group_id = group.0.to_string();
                // Kafka: Describe on the group; a refused group says nothing more.
                if !access.allows_group(Operation::Describe, &group_id) {
                    let mut refused = DescribedGroup::default();
                    refused.group_id = group;
                    refused.error_code = code::GROUP_AUTHORIZATION_FAILED;
                    response.groups.push(refused);
                    continue;
                }
                let owner = owner_shard(&group_id, shard.count);
                let result =
                    match groups::call(&shard, owner, GroupRequest::Describe(group_id.clone()))
                        .await
                    {
                        Some(GroupResponse::Describe(result)) => result,
                        _ => Err(GroupError::CoordinatorNotAvailable),
                    };
                response
                    .groups
                    .push(described_group(version, group_id, result));
            }
            response
        },
    ))
}

/// One group in `version`'s layout. A group the coordinator does not know, or a share group,
/// is shown Dead, and from v6 (KIP-1043) also with GROUP_ID_NOT_FOUND and Kafka's message.
pub fn described_group(
    version: i16,
    group_id: String,
    result: Result<GroupDescription, GroupError>,
) -> DescribedGroup {
    let mut described = DescribedGroup::default();
    let description = match result {
        Ok(description) => description,
        Err(error @ (GroupError::GroupIdNotFound | GroupError::NotClassicGroup)) => {
            described.group_state = StrBytes::from_static_str(GroupState::Dead.name());
            if version >= 6 {
                described.error_code = code::GROUP_ID_NOT_FOUND;
                let message = match error {
                    GroupError::NotClassicGroup => {
                        format!("Group {group_id} is not a classic group.")
                    }
                    _ => format!("Group {group_id} not found."),
                };
                described.error_message = Some(StrBytes::from_string(message));
            }
            described.group_id = GroupId(StrBytes::from_string(group_id));
            return described;
        }
        Err(error) => {
            described.group_id = GroupId(StrBytes::from_string(group_id));
            described.error_code = code::from_group_error(error);
            return described;
        }
    };
    described.group_id = GroupId(StrBytes::from_string(description.group_id));
    described.group_state = StrBytes::from_static_str(description.state.name());
    described.protocol_type = StrBytes::from_string(description.protocol_type);
    described.protocol_data = StrBytes::from_string(description.protocol.unwrap_or_default());
    described.members = description
        .members
        .into_iter()
        .map(|member| {
            let mut out = DescribedGroupMember::default();
            out.member_id = StrBytes::from_string(member.member_id);
            if version >= 4 {
                out.group_instance_id = member.instance_id.map(StrBytes::from_string);
            }
            out.client_id = StrBytes::from_string(member.client_id);
            out.client_host = StrBytes::from_string(member.client_host);
            out.member_metadata = member.metadata;
            out.member_assignment = member.assignment;
            out
        })
        .collect();
    described
}
