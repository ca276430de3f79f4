//! SyncGroup (v0-v5 advertised): decoded into a `groups::SyncRequest`, run on the group's owner
//! shard (a follower's request long-polls there for the leader's), shaped for the version.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Pending};
use super::error_codes as code;
use super::group_apis::instance_id;
use crate::groups::{self, owner_shard, GroupError, GroupRequest, GroupResponse, Synced};
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, request: &Request) -> Result<Pending, CodecError> {
    let body: SyncGroupRequest = decode_body(request)?;
    let version = request.version;
    let sync = sync_request(version, body);
    let owner = owner_shard(&sync.member.group_id, shard.count);
    let shard = shard.clone();
    Ok(later(
        request.key,
        version,
        request.correlation_id,
        async move {
            match groups::call(&shard, owner, GroupRequest::Sync(sync)).await {
                Some(GroupResponse::Sync(outcome)) => sync_response(version, outcome),
                _ => SyncGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE),
            }
        },
    ))
}

/// The domain sync of a request of `version`: fields the version lacks are left out.
pub fn sync_request(version: i16, body: SyncGroupRequest) -> groups::SyncRequest {
    // Only v5 names the protocol it expects, and only then is it checked.
    let checked = |field: Option<StrBytes>| field.filter(|_| version >= 5).map(|s| s.to_string());
    groups::SyncRequest {
        member: groups::MemberGeneration {
            group_id: body.group_id.to_string(),
            member_id: body.member_id.to_string(),
            generation_id: body.generation_id,
            instance_id: instance_id(version >= 3, &body.group_instance_id),
        },
        protocol_type: checked(body.protocol_type),
        protocol_name: checked(body.protocol_name),
        assignments: body
            .assignments
            .into_iter()
            .map(|assignment| (assignment.member_id.to_string(), assignment.assignment))
            .collect(),
    }
}

/// A sync's outcome in `version`'s layout.
pub fn sync_response(version: i16, outcome: Result<Synced, GroupError>) -> SyncGroupResponse {
    let mut response = SyncGroupResponse::default();
    match outcome {
        Ok(synced) => {
            response.assignment = synced.assignment;
            if version >= 5 {
                response.protocol_type = synced.protocol_type.map(StrBytes::from_string);
                response.protocol_name = synced.protocol_name.map(StrBytes::from_string);
            }
        }
        Err(error) => response.error_code = code::from_group_error(error),
    }
    response
}
