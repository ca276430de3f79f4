//! AlterShareGroupOffsets (v0, KIP-932): sets the start offset of share partitions of a group
//! without members (else NON_EMPTY_GROUP), each on the partition's owner shard
//! (`shares::offsets`): the partition starts afresh there, as Kafka initializes it. Per
//! partition: UNKNOWN_TOPIC_OR_PARTITION for a topic or partition that does not exist (as
//! Kafka), OFFSET_OUT_OF_RANGE for a start offset below 0 or past the log's end (Weir's own).

use std::rc::Rc;

use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_codes as code;
use super::share_acknowledge::TopicIds;
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;
use crate::shares::offsets::{self, OffsetsError};

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: AlterShareGroupOffsetsRequest,
    access: Access,
) -> AlterShareGroupOffsetsResponse {
    let mut response = AlterShareGroupOffsetsResponse::default();
    let group = request.group_id.0.to_string();
    // Kafka: Read on the group, Read on each topic.
    if !access.allows_group(Operation::Read, &group) {
        response.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return response;
    }
    if let Some((error_code, message)) = refusal_of(shard, &group, true).await {
        response.error_code = error_code;
        response.error_message = message;
        return response;
    }
    let ids = TopicIds::new(&shard.metadata());
    for topic in request.topics {
        let name = topic.topic_name.0.to_string();
        let mut out = AlterShareGroupOffsetsResponseTopic::default();
        out.topic_id = ids.id(&name).unwrap_or_default();
        let readable = access.allows_topic(Operation::Read, &name);
        for partition in topic.partitions {
            let index = partition.partition_index;
            let mut result = AlterShareGroupOffsetsResponsePartition::default();
            result.partition_index = index;
            if !readable {
                result.error_code = code::TOPIC_AUTHORIZATION_FAILED;
                out.partitions.push(result);
                continue;
            }
            let done = offsets::start_at(shard, &group, (&name, index), partition.start_offset);
            if let Err(error) = done.await {
                result.error_code = code::from_partition_error(error);
                result.error_message = Some(StrBytes::from_string(error.to_string()));
            }
            out.partitions.push(result);
        }
        out.topic_name = topic.topic_name;
        response.responses.push(out);
    }
    response
}

/// Why Alter or DeleteShareGroupOffsets refuses `group` as a whole (an empty id, members, a
/// classic group's id, no coordinator): the error code and Kafka's message; `None` when it may
/// go ahead, and then with `adopt` (Alter) the group is known from now on.
pub async fn refusal_of(
    shard: &Rc<Shard>,
    group: &str,
    adopt: bool,
) -> Option<(i16, Option<StrBytes>)> {
    if group.is_empty() {
        return Some((code::INVALID_GROUP_ID, None));
    }
    let error = offsets::check_empty(shard, group, adopt).await.err()?;
    let message = StrBytes::from_string(refusal(error, group));
    Some((code::from_offsets_error(error), Some(message)))
}

/// Kafka's message for a group with members, or the coordinator's absence.
fn refusal(error: OffsetsError, group: &str) -> String {
    match error {
        OffsetsError::NonEmptyGroup => format!("The group {group} is not empty."),
        OffsetsError::NotShareGroup => format!("Group {group} is not a share group."),
        OffsetsError::CoordinatorNotAvailable => error.to_string(),
    }
}
