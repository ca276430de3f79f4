//! JoinGroup (v0-v7 advertised): decoded into a `groups::JoinRequest`, run on the group's owner
//! shard, and its `JoinOutcome` shaped for the request's version.

use std::rc::Rc;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Peer, Pending};
use super::error_codes as code;
use super::group_apis::instance_id;
use crate::groups::{self, owner_shard, ClientInfo, GroupRequest, GroupResponse, JoinOutcome};
use crate::shard::Shard;

pub fn handle(
    shard: &Rc<Shard>,
    request: &Request,
    peer: &Peer<'_>,
) -> Result<Pending, CodecError> {
    let body: JoinGroupRequest = decode_body(request)?;
    let version = request.version;
    let client = ClientInfo {
        client_id: request
            .header
            .client_id
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        client_host: peer.client_host.to_string(),
    };
    let join = join_request(version, body, client);
    let owner = owner_shard(&join.group_id, shard.count);
    let shard = shard.clone();
    Ok(later(
        request.key,
        version,
        request.correlation_id,
        async move {
            match groups::call(&shard, owner, GroupRequest::Join(join)).await {
                Some(GroupResponse::Join(outcome)) => join_response(version, outcome),
                _ => JoinGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE),
            }
        },
    ))
}

/// The domain join of a request of `version`: fields the version lacks are left out.
pub fn join_request(
    version: i16,
    body: JoinGroupRequest,
    client: ClientInfo,
) -> groups::JoinRequest {
    groups::JoinRequest {
        group_id: body.group_id.to_string(),
        member_id: body.member_id.to_string(),
        instance_id: instance_id(version >= 5, &body.group_instance_id),
        session_timeout_ms: body.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: (version >= 1).then_some(body.rebalance_timeout_ms),
        protocol_type: body.protocol_type.to_string(),
        protocols: body
            .protocols
            .into_iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata))
            .collect(),
        // KIP-394 (v4): a new member gets its id first and joins again with it.
        member_id_required: version >= 4,
        client,
    }
}

/// A join's outcome in `version`'s layout.
pub fn join_response(version: i16, outcome: JoinOutcome) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = outcome.error.map_or(code::NONE, code::from_group_error);
    response.generation_id = outcome.generation_id;
    if version >= 7 {
        response.protocol_type = outcome.protocol_type.map(StrBytes::from_string);
        response.protocol_name = outcome.protocol_name.map(StrBytes::from_string);
    } else {
        // Not nullable before v7.
        response.protocol_name = Some(StrBytes::from_string(
            outcome.protocol_name.unwrap_or_default(),
        ));
    }
    response.leader = StrBytes::from_string(outcome.leader);
    response.member_id = StrBytes::from_string(outcome.member_id);
    response.members = outcome
        .members
        .into_iter()
        .map(|joined| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = StrBytes::from_string(joined.member_id);
            if version >= 5 {
                member.group_instance_id = joined.instance_id.map(StrBytes::from_string);
            }
            member.metadata = joined.metadata;
            member
        })
        .collect();
    response
}
