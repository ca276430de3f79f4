//! ListOffsets (v1-v7): earliest (-2), latest (-1), by timestamp; answered by the owning shard.
//! Needs Describe on each topic (TOPIC_AUTHORIZATION_FAILED otherwise), as in Kafka.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::error_codes as code;
use crate::partition::{self, OffsetOutcome};
use crate::security::acl::{Access, Operation};
use crate::shard::mesh::{reply_channel, Job};
use crate::shard::Shard;

/// One partition's answer: error code, offset, timestamp (-1 and -1 on error).
pub struct Answer {
    pub error_code: i16,
    pub offset: i64,
    pub timestamp: i64,
}

/// A partition's answer when it is refused with `error_code`.
pub fn refused(error_code: i16) -> Answer {
    Answer {
        error_code,
        offset: -1,
        timestamp: -1,
    }
}

/// One partition's offset lookup on its owner, wherever that is.
pub async fn lookup(shard: &Rc<Shard>, topic: &str, partition: i32, timestamp: i64) -> Answer {
    let failed = refused;
    let outcome = match owner_lookup(shard, topic, partition, timestamp).await {
        Ok(outcome) => outcome,
        Err(error_code) => return failed(error_code),
    };
    match outcome {
        Ok(listed) => Answer {
            error_code: code::NONE,
            offset: listed.offset,
            timestamp: listed.timestamp,
        },
        Err(error) => failed(code::from_partition_error(error)),
    }
}

/// Runs the lookup on the partition's owner; `Err` carries a refusal before it got there.
async fn owner_lookup(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> Result<OffsetOutcome, i16> {
    let failed = Err;
    let metadata = shard.metadata();
    match metadata.owner(topic, partition) {
        // An exchange keeps no log, so it has no offsets: refused as Fetch is.
        None if metadata.routing.is_exchange(topic) => failed(code::INVALID_REQUEST),
        None => failed(code::UNKNOWN_TOPIC_OR_PARTITION),
        Some(owner) if owner == shard.id => {
            Ok(partition::list_offset(shard, topic, partition, timestamp).await)
        }
        Some(owner) => {
            let (reply, answer) = reply_channel();
            let job = Job::ListOffsets {
                topic: topic.to_string(),
                partition,
                timestamp,
                reply,
            };
            if shard.mesh.inbox(owner).send_async(job).await.is_err() {
                return failed(code::NOT_LEADER_OR_FOLLOWER);
            }
            answer
                .recv_async()
                .await
                .map_err(|_| code::NOT_LEADER_OR_FOLLOWER)
        }
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: ListOffsetsRequest,
    access: Access,
) -> ListOffsetsResponse {
    let mut response = ListOffsetsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        // Kafka: Describe on the topic, else TOPIC_AUTHORIZATION_FAILED on each partition.
        let described = access.allows_topic(Operation::Describe, &name);
        let mut out = ListOffsetsTopicResponse::default();
        for partition in topic.partitions {
            let outcome = if described {
                lookup(shard, &name, partition.partition_index, partition.timestamp).await
            } else {
                refused(code::TOPIC_AUTHORIZATION_FAILED)
            };
            let mut answer = ListOffsetsPartitionResponse::default();
            answer.partition_index = partition.partition_index;
            answer.error_code = outcome.error_code;
            answer.timestamp = outcome.timestamp;
            answer.offset = outcome.offset;
            if version >= 4 {
                answer.leader_epoch = 0;
            }
            out.partitions.push(answer);
        }
        out.name = topic.name;
        response.topics.push(out);
    }
    response
}
