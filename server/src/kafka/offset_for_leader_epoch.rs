//! OffsetForLeaderEpoch (v2-v4): Weir has one leader epoch (0) per partition, so the end offset of
//! any epoch is the high watermark. Clients use this to validate positions after a leader change.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::error_codes as code;
use super::list_offsets::{lookup, refused};
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: OffsetForLeaderEpochRequest,
    access: Access,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        // Kafka: Describe on the topic, else TOPIC_AUTHORIZATION_FAILED on each partition.
        let described = access.allows_topic(Operation::Describe, &name);
        let mut out = OffsetForLeaderTopicResult::default();
        for partition in topic.partitions {
            let outcome = if described {
                lookup(shard, &name, partition.partition, -1).await
            } else {
                refused(code::TOPIC_AUTHORIZATION_FAILED)
            };
            let mut answer = EpochEndOffset::default();
            answer.partition = partition.partition;
            answer.error_code = outcome.error_code;
            answer.leader_epoch = if outcome.error_code == 0 { 0 } else { -1 };
            answer.end_offset = outcome.offset;
            out.partitions.push(answer);
        }
        out.topic = topic.topic;
        response.topics.push(out);
    }
    response
}
