//! OffsetForLeaderEpoch (v2-v4): Weir has one leader epoch (0) per partition, so the end offset of
//! any epoch is the high watermark. Clients use this to validate positions after a leader change.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::list_offsets::lookup;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in request.topics {
        let name = topic.topic.0.to_string();
        let mut out = OffsetForLeaderTopicResult::default();
        for partition in topic.partitions {
            let outcome = lookup(shard, &name, partition.partition, -1).await;
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
