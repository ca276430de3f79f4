//! Heartbeat (v0-v4 advertised): run on the group's owner shard; the answer is an error code.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Pending};
use super::error_codes as code;
use super::group_apis::instance_id;
use crate::groups::{self, owner_shard, GroupRequest, GroupResponse, MemberGeneration};
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, request: &Request) -> Result<Pending, CodecError> {
    let body: HeartbeatRequest = decode_body(request)?;
    let version = request.version;
    let member = heartbeat_request(version, &body);
    let owner = owner_shard(&member.group_id, shard.count);
    let shard = shard.clone();
    Ok(later(
        request.key,
        version,
        request.correlation_id,
        async move {
            let error_code =
                match groups::call(&shard, owner, GroupRequest::Heartbeat(member)).await {
                    Some(GroupResponse::Heartbeat(result)) => code::from_group_result(&result),
                    _ => code::COORDINATOR_NOT_AVAILABLE,
                };
            HeartbeatResponse::default().with_error_code(error_code)
        },
    ))
}

/// The member a heartbeat of `version` speaks for (static members from v3).
pub fn heartbeat_request(version: i16, body: &HeartbeatRequest) -> MemberGeneration {
    MemberGeneration {
        group_id: body.group_id.to_string(),
        member_id: body.member_id.to_string(),
        generation_id: body.generation_id,
        instance_id: instance_id(version >= 3, &body.group_instance_id),
    }
}
