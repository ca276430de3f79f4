//! LeaveGroup (v0-v4 advertised): one member before v3, a batch of members (by id or
//! group.instance.id) from v3; run on the group's owner shard, shaped for the version.

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Pending};
use super::error_codes as code;
use super::group_apis::instance_id;
use crate::groups::{self, owner_shard, GroupError, GroupRequest, GroupResponse, LeavingMember};
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, request: &Request) -> Result<Pending, CodecError> {
    let body: LeaveGroupRequest = decode_body(request)?;
    let version = request.version;
    let group_id = body.group_id.to_string();
    let members = leaving_members(version, &body);
    let owner = owner_shard(&group_id, shard.count);
    let shard = shard.clone();
    Ok(later(
        request.key,
        version,
        request.correlation_id,
        async move {
            let leave = GroupRequest::Leave {
                group_id,
                members: members.clone(),
            };
            match groups::call(&shard, owner, leave).await {
                Some(GroupResponse::Leave(results)) => leave_response(version, &members, results),
                _ => LeaveGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE),
            }
        },
    ))
}

/// Who leaves: the request's members from v3, its one member id before.
pub fn leaving_members(version: i16, body: &LeaveGroupRequest) -> Vec<LeavingMember> {
    if version < 3 {
        return vec![LeavingMember {
            member_id: body.member_id.to_string(),
            instance_id: None,
        }];
    }
    body.members
        .iter()
        .map(|member| LeavingMember {
            member_id: member.member_id.to_string(),
            instance_id: instance_id(true, &member.group_instance_id),
        })
        .collect()
}

/// A leave's results in `version`'s layout: per member from v3 (a refusal of the whole request
/// goes on the top level and on every member), the one member's result before.
pub fn leave_response(
    version: i16,
    members: &[LeavingMember],
    results: Result<Vec<Result<(), GroupError>>, GroupError>,
) -> LeaveGroupResponse {
    let mut response = LeaveGroupResponse::default();
    let results = match results {
        Ok(results) => results,
        Err(error) => {
            response.error_code = code::from_group_error(error);
            vec![Err(error); members.len()]
        }
    };
    if version < 3 {
        if let Some(first) = results.first() {
            response.error_code = code::from_group_result(first);
        }
        return response;
    }
    response.members = members
        .iter()
        .zip(results)
        .map(|(leaving, result)| {
            let mut member = MemberResponse::default();
            member.member_id = StrBytes::from_string(leaving.member_id.clone());
            member.group_instance_id = leaving.instance_id.clone().map(StrBytes::from_string);
            member.error_code = code::from_group_result(&result);
            member
        })
        .collect();
    response
}
