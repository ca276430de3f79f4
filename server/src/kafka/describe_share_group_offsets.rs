//! DescribeShareGroupOffsets (v0, KIP-932): each partition's share-partition start offset, read
//! on the partition's owner shard (`shares::offsets`). As in Kafka 4.2, a partition the group
//! never fetched, of a topic or partition that does not exist, shows start offset -1 without
//! an error; a null topic list asks for every partition the group has a state for.

use std::rc::Rc;

use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{
    DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::error_codes as code;
use super::share_acknowledge::TopicIds;
use crate::partition::PartitionError;
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;
use crate::shares::offsets;

/// What a share partition without a state shows (Kafka's `UNINITIALIZED_START_OFFSET`).
const NO_START_OFFSET: i64 = -1;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DescribeShareGroupOffsetsRequest,
    access: Access,
) -> DescribeShareGroupOffsetsResponse {
    let mut response = DescribeShareGroupOffsetsResponse::default();
    for group in request.groups {
        // Kafka: Describe on the group; topics the principal may not Describe are left out.
        if !access.allows_group(Operation::Describe, &group.group_id) {
            let mut refused = DescribeShareGroupOffsetsResponseGroup::default();
            refused.group_id = group.group_id;
            refused.error_code = code::GROUP_AUTHORIZATION_FAILED;
            response.groups.push(refused);
            continue;
        }
        let mut described = describe_group(shard, group).await;
        described
            .topics
            .retain(|topic| access.allows_topic(Operation::Describe, &topic.topic_name));
        response.groups.push(described);
    }
    response
}

async fn describe_group(
    shard: &Rc<Shard>,
    request: DescribeShareGroupOffsetsRequestGroup,
) -> DescribeShareGroupOffsetsResponseGroup {
    let mut described = DescribeShareGroupOffsetsResponseGroup::default();
    let group = request.group_id.0.to_string();
    described.group_id = request.group_id;
    if group.is_empty() {
        described.error_code = code::INVALID_GROUP_ID;
        return described;
    }
    let wanted = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic_name.0.to_string(), t.partitions))
            .collect(),
        None => every_partition(shard, &group).await,
    };
    let ids = TopicIds::new(&shard.metadata());
    for (topic, partitions) in wanted {
        let mut out = DescribeShareGroupOffsetsResponseTopic::default();
        out.topic_id = ids.id(&topic).unwrap_or_default();
        for partition in partitions {
            let found = offsets::start_offset(shard, &group, (&topic, partition)).await;
            out.partitions.push(described_partition(partition, found));
        }
        out.topic_name = TopicName(StrBytes::from_string(topic));
        described.topics.push(out);
    }
    described
}

fn described_partition(
    partition: i32,
    found: Result<Option<i64>, PartitionError>,
) -> DescribeShareGroupOffsetsResponsePartition {
    let mut out = DescribeShareGroupOffsetsResponsePartition::default();
    out.partition_index = partition;
    (out.start_offset, out.leader_epoch) = (NO_START_OFFSET, -1);
    match found {
        // Weir's partitions have one leader for life: epoch 0, as Metadata reports it.
        Ok(Some(start)) => (out.start_offset, out.leader_epoch) = (start, 0),
        Ok(None) | Err(PartitionError::UnknownPartition) => {}
        Err(error) => {
            out.error_code = code::from_partition_error(error);
            out.error_message = Some(StrBytes::from_string(error.to_string()));
        }
    }
    out
}

/// (topic, partitions) of every share partition the group has a state for, by name, in order.
async fn every_partition(shard: &Rc<Shard>, group: &str) -> Vec<(String, Vec<i32>)> {
    let metadata = shard.metadata();
    let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
    for (topic_id, partition) in offsets::partitions_of(shard, group).await {
        // A topic deleted since has no name to show.
        let name = metadata.topics.iter().find(|(_, t)| t.id == topic_id);
        if let Some((name, _)) = name {
            by_topic.entry(name.clone()).or_default().push(partition);
        }
    }
    by_topic
        .into_iter()
        .map(|(topic, mut partitions)| {
            partitions.sort_unstable();
            (topic, partitions)
        })
        .collect()
}
