//! OffsetFetch (v1-v7 advertised): the committed offsets of one group, fetched on its owner
//! shard as a domain result (`groups::FetchedOffsets`) and shaped per layout: one group at the
//! top level (v1-v7), or the groups array (v8+).
//!
//! v8+ is not advertised (the codec caps OffsetFetch at v7), but it is routed right: each group
//! of the array is asked of its own owner shard, not the top-level group id (empty in v8+).

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Pending};
use super::error_codes as code;
use crate::groups::{
    self, owner_shard, CommittedOffset, FetchedOffsets, GroupError, GroupRequest, GroupResponse,
};
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;

/// (topic, partitions) asked for; None asks for everything the group committed.
pub type Wanted = Option<Vec<(String, Vec<i32>)>>;

pub fn handle(
    shard: &Rc<Shard>,
    request: &Request,
    access: &Access,
) -> Result<Pending, CodecError> {
    let body: OffsetFetchRequest = decode_body(request)?;
    let version = request.version;
    let shard = shard.clone();
    let access = access.clone();
    Ok(later(
        request.key,
        version,
        request.correlation_id,
        async move {
            if version >= 8 {
                return fetch_groups(&shard, body.groups, &access).await;
            }
            let group_id = body.group_id.to_string();
            let wanted = wanted(body.topics.as_deref().map(|topics| {
                topics
                    .iter()
                    .map(|topic| (&topic.name, topic.partition_indexes.as_slice()))
            }));
            // Kafka: Describe on the group, and on each topic answered.
            if !access.allows_group(Operation::Describe, &group_id) {
                let denied = code::GROUP_AUTHORIZATION_FAILED;
                return refused(version, &wanted, denied, version < 2);
            }
            let mut response = match fetch(&shard, group_id, wanted.clone()).await {
                Some(result) => fetch_response(version, &wanted, result),
                None => refused(version, &wanted, code::COORDINATOR_NOT_AVAILABLE, true),
            };
            hide_undescribable(&mut response, wanted.is_none(), &access);
            response
        },
    ))
}

/// Topics the principal may not describe: left out of an answer for all topics (as Kafka), and
/// TOPIC_AUTHORIZATION_FAILED on each partition asked for by name.
fn hide_undescribable(response: &mut OffsetFetchResponse, all: bool, access: &Access) {
    if !access.enabled() {
        return;
    }
    response.topics.retain_mut(|topic| {
        if access.allows_topic(Operation::Describe, &topic.name) {
            return true;
        }
        for partition in &mut topic.partitions {
            partition.committed_offset = -1;
            partition.metadata = None;
            partition.error_code = code::TOPIC_AUTHORIZATION_FAILED;
        }
        !all
    });
}

/// The requested partitions in domain terms.
fn wanted<'a>(topics: Option<impl Iterator<Item = (&'a TopicName, &'a [i32])>>) -> Wanted {
    topics.map(|topics| {
        topics
            .map(|(name, partitions)| (name.to_string(), partitions.to_vec()))
            .collect()
    })
}

/// One group's offsets from its owner shard; None when that shard cannot be reached.
async fn fetch(
    shard: &Shard,
    group_id: String,
    topics: Wanted,
) -> Option<Result<FetchedOffsets, GroupError>> {
    let owner = owner_shard(&group_id, shard.count);
    match groups::call(shard, owner, GroupRequest::OffsetFetch { group_id, topics }).await {
        Some(GroupResponse::OffsetFetch(result)) => Some(result),
        _ => None,
    }
}

/// v8+: every group of the array from its own owner shard.
async fn fetch_groups(
    shard: &Shard,
    requested: Vec<OffsetFetchRequestGroup>,
    access: &Access,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    for group in requested {
        if !access.allows_group(Operation::Describe, &group.group_id) {
            let mut refused = OffsetFetchResponseGroup::default();
            refused.group_id = group.group_id;
            refused.error_code = code::GROUP_AUTHORIZATION_FAILED;
            response.groups.push(refused);
            continue;
        }
        let wanted = wanted(group.topics.as_deref().map(|topics| {
            topics
                .iter()
                .map(|topic| (&topic.name, topic.partition_indexes.as_slice()))
        }));
        let result = fetch(shard, group.group_id.to_string(), wanted)
            .await
            .unwrap_or(Err(GroupError::CoordinatorNotAvailable));
        response
            .groups
            .push(group_response(group.group_id.to_string(), result));
    }
    response
}

/// One group's offsets in the v1-v7 layout.
pub fn fetch_response(
    version: i16,
    wanted: &Wanted,
    result: Result<FetchedOffsets, GroupError>,
) -> OffsetFetchResponse {
    let topics = match result {
        Ok(topics) => topics,
        // v1 has no top-level error: it goes on every requested partition.
        Err(error) => return refused(version, wanted, code::from_group_error(error), version < 2),
    };
    let mut response = OffsetFetchResponse::default();
    response.topics = topics
        .into_iter()
        .map(|topic| {
            let mut out = OffsetFetchResponseTopic::default();
            out.name = TopicName(StrBytes::from_string(topic.name));
            out.partitions = topic
                .partitions
                .into_iter()
                .map(|(index, value)| {
                    let mut partition = OffsetFetchResponsePartition::default();
                    partition.partition_index = index;
                    let (offset, leader_epoch, metadata) = offset_fields(value);
                    partition.committed_offset = offset;
                    // Leader epochs are answered from v5.
                    partition.committed_leader_epoch = if version >= 5 { leader_epoch } else { -1 };
                    partition.metadata = Some(metadata);
                    partition
                })
                .collect();
            out
        })
        .collect();
    response
}

/// A v1-v7 answer that carries only `error_code`: at the top level (v2+) and, when
/// `on_partitions`, on every requested partition.
fn refused(
    version: i16,
    wanted: &Wanted,
    error_code: i16,
    on_partitions: bool,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 2 {
        response.error_code = error_code;
    }
    if !on_partitions {
        return response;
    }
    response.topics = wanted
        .iter()
        .flatten()
        .map(|(name, partitions)| {
            let mut out = OffsetFetchResponseTopic::default();
            out.name = TopicName(StrBytes::from_string(name.clone()));
            out.partitions = partitions
                .iter()
                .map(|index| {
                    let mut partition = OffsetFetchResponsePartition::default();
                    partition.partition_index = *index;
                    partition.committed_offset = -1;
                    partition.error_code = error_code;
                    partition
                })
                .collect();
            out
        })
        .collect();
    response
}

/// One group of the v8+ groups array.
pub fn group_response(
    group_id: String,
    result: Result<FetchedOffsets, GroupError>,
) -> OffsetFetchResponseGroup {
    let mut out = OffsetFetchResponseGroup::default();
    out.group_id = GroupId(StrBytes::from_string(group_id));
    let topics = match result {
        Ok(topics) => topics,
        Err(error) => {
            out.error_code = code::from_group_error(error);
            return out;
        }
    };
    out.topics = topics
        .into_iter()
        .map(|topic| {
            let mut out = OffsetFetchResponseTopics::default();
            out.name = TopicName(StrBytes::from_string(topic.name));
            out.partitions = topic
                .partitions
                .into_iter()
                .map(|(index, value)| {
                    let mut partition = OffsetFetchResponsePartitions::default();
                    partition.partition_index = index;
                    let (offset, leader_epoch, metadata) = offset_fields(value);
                    partition.committed_offset = offset;
                    partition.committed_leader_epoch = leader_epoch;
                    partition.metadata = Some(metadata);
                    partition
                })
                .collect();
            out
        })
        .collect();
    out
}

/// (offset, leader epoch, metadata) as every layout carries them: -1, -1 and "" when nothing is
/// committed.
fn offset_fields(value: Option<CommittedOffset>) -> (i64, i32, StrBytes) {
    match value {
        Some(value) => (
            value.offset,
            value.leader_epoch,
            StrBytes::from_string(value.metadata.unwrap_or_default()),
        ),
        None => (-1, -1, StrBytes::default()),
    }
}
