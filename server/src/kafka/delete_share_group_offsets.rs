//! DeleteShareGroupOffsets (v0, KIP-932): forgets the share-partition state of whole topics of
//! a group without members (else NON_EMPTY_GROUP), each partition on its owner shard
//! (`shares::offsets`); the group's next fetch starts them as `share.auto.offset.reset` says.
//! As in Kafka 4.2, a topic that does not exist, or that the group has no state for, is
//! UNKNOWN_TOPIC_OR_PARTITION.

use std::rc::Rc;

use kafka_protocol::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic;
use kafka_protocol::messages::{DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse};
use kafka_protocol::protocol::StrBytes;

use super::alter_share_group_offsets::refusal_of;
use super::error_codes as code;
use crate::partition::PartitionError;
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;
use crate::shares::offsets;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: DeleteShareGroupOffsetsRequest,
    access: Access,
) -> DeleteShareGroupOffsetsResponse {
    let mut response = DeleteShareGroupOffsetsResponse::default();
    let group = request.group_id.0.to_string();
    // Kafka: Delete on the group, Read on each topic.
    if !access.allows_group(Operation::Delete, &group) {
        response.error_code = code::GROUP_AUTHORIZATION_FAILED;
        return response;
    }
    if let Some((error_code, message)) = refusal_of(shard, &group, false).await {
        response.error_code = error_code;
        response.error_message = message;
        return response;
    }
    for topic in request.topics {
        let name = topic.topic_name.0.to_string();
        let mut out = DeleteShareGroupOffsetsResponseTopic::default();
        let metadata = shard.metadata();
        if !access.allows_topic(Operation::Read, &name) {
            out.error_code = code::TOPIC_AUTHORIZATION_FAILED;
            out.topic_name = topic.topic_name;
            response.responses.push(out);
            continue;
        }
        let Some(meta) = metadata.topics.get(&name) else {
            out.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
            out.topic_name = topic.topic_name;
            response.responses.push(out);
            continue;
        };
        out.topic_id = meta.uuid();
        let count = meta.partitions.len() as i32;
        match forget_topic(shard, &group, &name, count).await {
            Ok(true) => {}
            Ok(false) => {
                out.error_code = code::UNKNOWN_TOPIC_OR_PARTITION;
                out.error_message = Some(StrBytes::from_static_str(
                    "There is no offset information to delete.",
                ));
            }
            Err(error) => {
                out.error_code = code::from_partition_error(error);
                out.error_message = Some(StrBytes::from_string(error.to_string()));
            }
        }
        out.topic_name = topic.topic_name;
        response.responses.push(out);
    }
    response
}

/// Forgets every partition of the topic; answers whether any had a state.
async fn forget_topic(
    shard: &Rc<Shard>,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<bool, PartitionError> {
    let mut any = false;
    for partition in 0..partitions {
        any |= offsets::forget(shard, group, (topic, partition)).await?;
    }
    Ok(any)
}
