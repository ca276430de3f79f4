//! ShareGroupHeartbeat (v1, KIP-932): a share group member joins, heartbeats and leaves on the
//! group's coordinator shard (`groups::owner_shard`, as FindCoordinator names it); a request on
//! another shard is answered NOT_COORDINATOR, so that the client looks the coordinator up again.
//! Every answer carries the member's whole assignment.
//!
//! ACLs as in Kafka (KIP-932): Read on the group (GROUP_AUTHORIZATION_FAILED) and Describe on
//! each subscribed topic (TOPIC_AUTHORIZATION_FAILED). A group id held by a classic group is
//! GROUP_ID_NOT_FOUND, "Group X is not a share group." (Kafka's one namespace of groups).

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Peer, Pending};
use super::error_codes as code;
use crate::groups::owner_shard;
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;
use crate::shares::members::{self, ClientInfo, Heartbeat};

/// Decodes the request and notes who sent it (ShareGroupDescribe shows it).
pub fn dispatch(
    shard: &Rc<Shard>,
    request: &Request,
    peer: &Peer<'_>,
    access: &Access,
) -> Result<Pending, CodecError> {
    let body: ShareGroupHeartbeatRequest = decode_body(request)?;
    if let Some((error_code, message)) = unauthorized(&body, access) {
        let response = refused(ShareGroupHeartbeatResponse::default(), error_code, message);
        let answer = std::future::ready(response);
        return Ok(later(
            request.key,
            request.version,
            request.correlation_id,
            answer,
        ));
    }
    let client = ClientInfo {
        client_id: request
            .header
            .client_id
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        client_host: peer.client_host.to_string(),
    };
    let shard = shard.clone();
    Ok(later(
        request.key,
        request.version,
        request.correlation_id,
        async move { handle(&shard, body, client) },
    ))
}

/// Why the principal may not send this heartbeat, if it may not.
fn unauthorized(
    request: &ShareGroupHeartbeatRequest,
    access: &Access,
) -> Option<(i16, &'static str)> {
    if !access.allows_group(Operation::Read, &request.group_id) {
        let message = "Not authorized to access the group.";
        return Some((code::GROUP_AUTHORIZATION_FAILED, message));
    }
    let topics = request.subscribed_topic_names.iter().flatten();
    let mut topics = topics.filter(|topic| !access.allows_topic(Operation::Describe, topic));
    topics.next().map(|_| {
        let message = "Not authorized to describe a subscribed topic.";
        (code::TOPIC_AUTHORIZATION_FAILED, message)
    })
}

fn handle(
    shard: &Rc<Shard>,
    request: ShareGroupHeartbeatRequest,
    client: ClientInfo,
) -> ShareGroupHeartbeatResponse {
    let mut response = ShareGroupHeartbeatResponse::default();
    let group = request.group_id.0.to_string();
    // The group's own `share.heartbeat.interval.ms` where it has one.
    let interval = crate::shares::group_configs::of(shard, &group).heartbeat_interval;
    response.heartbeat_interval_ms = interval.as_millis() as i32;
    if group.is_empty() {
        return refused(response, code::INVALID_GROUP_ID, "GroupId can't be empty.");
    }
    if owner_shard(&group, shard.count) != shard.id.index() {
        return refused(
            response,
            code::NOT_COORDINATOR,
            "This is not the group's coordinator.",
        );
    }
    if is_classic_group(shard, &group) {
        let message = format!("Group {group} is not a share group.");
        return refused(response, code::GROUP_ID_NOT_FOUND, &message);
    }
    let member = request.member_id.to_string();
    let heartbeat = Heartbeat {
        group_id: group.clone(),
        member_id: member.clone(),
        member_epoch: request.member_epoch,
        subscribed: request
            .subscribed_topic_names
            .map(|topics| topics.into_iter().map(|t| t.0.to_string()).collect()),
        client,
    };
    let metadata = shard.metadata();
    match members::heartbeat(&metadata, heartbeat, Instant::now()) {
        Err(error) => {
            let text = error.to_string();
            refused(response, code::from_share_group_error(error), &text)
        }
        Ok(None) => {
            // What it holds comes back when its share sessions close (the client sends its
            // last acknowledgements there, possibly after this) or their locks expire.
            response.member_id = Some(request.member_id);
            response.member_epoch = -1;
            response
        }
        Ok(Some(answer)) => {
            response.member_id = Some(request.member_id);
            response.member_epoch = answer.member_epoch;
            let mut assignment = Assignment::default();
            for (topic, partitions) in answer.assignment {
                let Some(meta) = metadata.topics.get(&topic) else {
                    continue;
                };
                let mut assigned = TopicPartitions::default();
                assigned.topic_id = meta.uuid();
                assigned.partitions = (0..partitions).collect();
                assignment.topic_partitions.push(assigned);
            }
            response.assignment = Some(assignment);
            response
        }
    }
}

/// One group id is one group, as in Kafka: an id this (the coordinator) shard holds as a
/// classic group (members, or committed offsets) is not a share group's, unless it already is
/// one (a share group's own heartbeats go on whatever the classic side holds).
fn is_classic_group(shard: &Shard, group: &str) -> bool {
    if members::is_share_group(group) {
        return false;
    }
    let coordinator = shard.groups.borrow().clone();
    coordinator.is_some_and(|coordinator| coordinator.has_group(group))
}

fn refused(
    mut response: ShareGroupHeartbeatResponse,
    error_code: i16,
    message: &str,
) -> ShareGroupHeartbeatResponse {
    response.error_code = error_code;
    response.error_message = Some(StrBytes::from_string(message.to_string()));
    response
}
