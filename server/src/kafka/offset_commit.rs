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
use crate::shard::Shard;

pub fn handle(shard: &Rc<Shard>, request: &Request) -> Result<Pending, CodecError> {
    let body: OffsetCommitRequest = decode_body(request)?;
    let version = request.version;
    let fallback = unavailable(&body);
    let commit = commit_request(version, body);
    let owner = owner_shard(&commit.member.group_id, shard.count);
    let shard = shard.clone();
    Ok(later(
        request.key,
        version,
        request.correlation_id,
        async move {
            match groups::call(&shard, owner, GroupRequest::OffsetCommit(commit)).await {
                Some(GroupResponse::OffsetCommit(results)) => commit_response(results),
                _ => fallback,
            }
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

/// The answer when the owner shard cannot be reached: COORDINATOR_NOT_AVAILABLE on every
/// partition (clients find the coordinator again).
fn unavailable(body: &OffsetCommitRequest) -> OffsetCommitResponse {
    let mut response = OffsetCommitResponse::default();
    response.topics = body
        .topics
        .iter()
        .map(|topic| {
            let errors = topic
                .partitions
                .iter()
                .map(|partition| (partition.partition_index, code::COORDINATOR_NOT_AVAILABLE));
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
