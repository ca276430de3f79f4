//! OffsetCommit (v2-v8 advertised): decoded into a `groups::OffsetCommit`, committed durably on
//! the group's owner shard, and answered per partition in request order.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Pending};
use super::error_codes as code;
use super::group_apis::instance_id;
use crate::groups::{
    self, owner_shard, CommitResults, GroupRequest, GroupResponse, MemberGeneration,
    PartitionCommit, TopicPartitions,
};
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;

pub fn handle(
    shard: &Rc<Shard>,
    request: &Request,
    access: &Access,
) -> Result<Pending, CodecError> {
    let mut body: OffsetCommitRequest = decode_body(request)?;
    let version = request.version;
    // Kafka: Read on the group (else every partition is refused), and Read on each topic.
    let (key, correlation_id) = (request.key, request.correlation_id);
    if !access.allows_group(Operation::Read, &body.group_id) {
        let refusal = refused(&body, code::GROUP_AUTHORIZATION_FAILED);
        return Ok(later(
            key,
            version,
            correlation_id,
            std::future::ready(refusal),
        ));
    }
    let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut body.topics)
        .into_iter()
        .partition(|topic| access.allows_topic(Operation::Read, &topic.name));
    body.topics = denied;
    let denied = refused(&body, code::TOPIC_AUTHORIZATION_FAILED).topics;
    body.topics = allowed;
    let fallback = refused(&body, code::COORDINATOR_NOT_AVAILABLE);
    let commit = commit_request(version, body);
    let owner = owner_shard(&commit.member.group_id, shard.count);
    let shard = shard.clone();
    Ok(later(
        request.key,
        version,
        request.correlation_id,
        async move {
            let mut response =
                match groups::call(&shard, owner, GroupRequest::OffsetCommit(commit)).await {
                    Some(GroupResponse::OffsetCommit(results)) => commit_response(results),
                    _ => fallback,
                };
            response.topics.extend(denied);
            response
        },
    ))
}

/// The domain commit of a request of `version`: fields the version lacks are left out.
pub fn commit_request(version: i16, body: OffsetCommitRequest) -> groups::OffsetCommit {
    groups::OffsetCommit {
        member: MemberGeneration {
            group_id: body.group_id.to_string(),
            member_id: body.member_id.to_string(),
            generation_id: body.generation_id_or_member_epoch,
            instance_id: instance_id(version >= 7, &body.group_instance_id),
        },
        topics: body
            .topics
            .into_iter()
            .map(|topic| TopicPartitions {
                name: topic.name.to_string(),
                partitions: topic
                    .partitions
                    .into_iter()
                    .map(|partition| {
                        let commit = PartitionCommit {
                            offset: partition.committed_offset,
                            // Leader epochs arrive with v6.
                            leader_epoch: if version >= 6 {
                                partition.committed_leader_epoch
                            } else {
                                -1
                            },
                            metadata: partition.committed_metadata.map(|m| m.to_string()),
                        };
                        (partition.partition_index, commit)
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Per-partition results, in the one layout every advertised version shares.
pub fn commit_response(results: CommitResults) -> OffsetCommitResponse {
    let mut response = OffsetCommitResponse::default();
    response.topics = results
        .into_iter()
        .map(|topic| {
            let errors = topic
                .partitions
                .iter()
                .map(|(partition, result)| (*partition, code::from_group_result(result)));
            response_topic(topic.name, errors)
        })
        .collect();
    response
}

/// `error_code` on every partition: COORDINATOR_NOT_AVAILABLE when the owner shard cannot be
/// reached (clients find the coordinator again), or an authorization failure.
fn refused(body: &OffsetCommitRequest, error_code: i16) -> OffsetCommitResponse {
    let mut response = OffsetCommitResponse::default();
    response.topics = body
        .topics
        .iter()
        .map(|topic| {
            let errors = topic
                .partitions
                .iter()
                .map(|partition| (partition.partition_index, error_code));
            response_topic(topic.name.to_string(), errors)
        })
        .collect();
    response
}

fn response_topic(
    name: String,
    errors: impl Iterator<Item = (i32, i16)>,
) -> OffsetCommitResponseTopic {
    let mut topic = OffsetCommitResponseTopic::default();
    topic.name = TopicName(StrBytes::from_string(name));
    topic.partitions = errors
        .map(|(partition_index, error_code)| {
            let mut partition = OffsetCommitResponsePartition::default();
            partition.partition_index = partition_index;
            partition.error_code = error_code;
            partition
        })
        .collect();
    topic
}
