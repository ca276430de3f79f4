//! Group APIs (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch,
//! DescribeGroups, ListGroups): the Kafka side of the consumer group coordinator.
//!
//! Each API has its own file beside this one that decodes the request into the domain types of
//! `groups/`, sends it to the group's owner shard (`groups::call`, over the mesh when the owner is
//! another shard) and shapes the domain answer for the request's version; `GroupError`s become
//! Kafka codes only in `error_codes::from_group_error`. An owner shard that cannot be reached is
//! answered with COORDINATOR_NOT_AVAILABLE (clients look for the coordinator again).
//! DescribeGroups is split by owner and merged; ListGroups fans out to every shard.

use std::rc::Rc;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use super::codec::{CodecError, Request};
use super::dispatch::{Peer, Pending};
use super::{
    describe_groups, heartbeat, join_group, leave_group, list_groups, offset_commit, offset_fetch,
    sync_group,
};
use crate::shard::Shard;

pub fn dispatch(
    shard: &Rc<Shard>,
    request: Request,
    peer: &Peer<'_>,
) -> Result<Pending, CodecError> {
    match request.key {
        ApiKey::JoinGroup => join_group::handle(shard, &request, peer),
        ApiKey::SyncGroup => sync_group::handle(shard, &request),
        ApiKey::Heartbeat => heartbeat::handle(shard, &request),
        ApiKey::LeaveGroup => leave_group::handle(shard, &request),
        ApiKey::OffsetCommit => offset_commit::handle(shard, &request),
        ApiKey::OffsetFetch => offset_fetch::handle(shard, &request),
        ApiKey::DescribeGroups => describe_groups::handle(shard, &request),
        ApiKey::ListGroups => list_groups::handle(shard, &request, peer),
        other => Err(CodecError::UnsupportedVersion {
            key: other,
            version: request.version,
        }),
    }
}

/// A static member's group.instance.id, when the request's version has the field and it is set
/// (an empty one means a dynamic member).
pub fn instance_id(supported: bool, field: &Option<StrBytes>) -> Option<String> {
    if !supported {
        return None;
    }
    field
        .as_ref()
        .map(|id| id.to_string())
        .filter(|id| !id.is_empty())
}
