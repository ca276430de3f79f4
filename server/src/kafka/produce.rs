//! Produce (v3+): record batches are appended as received (header and CRC checked by the engine,
//! never decoded here). Partitions owned by this shard are appended in the dispatch phase;
//! others are sent to their owner in the dispatch phase, so per-connection order holds either
//! way. acks=0 gets no answer; acks=1 answers once written; acks=-1 once durable.
//!
//! Each topic name is looked up once in the shard's metadata snapshot: a plain topic goes straight
//! to the core's partition append (`partition::PendingAppend`); only an exchange goes through
//! `routing::broker::produce`.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::codec::{decode_body, encode_response, CodecError, Request, Response};
use super::dispatch::Pending;
use super::error_codes as code;
use crate::metadata::Metadata;
use crate::partition::PendingAppend;
use crate::routing::broker::ExchangeOutcome;
use crate::security::acl::{Access, Operation, ResourceType};
use crate::shard::Shard;

/// Where one partition's answer comes from.
enum Outcome {
    /// Refused before anything was appended.
    Refused(i16),
    /// A plain topic's partition, local or remote.
    Partition(PendingAppend),
    /// An exchange: routing splits the records over the bound topics.
    Exchange(flume::Receiver<ExchangeOutcome>),
}

/// One partition's answer: error code, base offset, log start offset.
type Answer = (i16, i64, i64);

impl Outcome {
    async fn answer(self, durable: bool) -> Answer {
        match self {
            Outcome::Refused(error_code) => (error_code, -1, -1),
            Outcome::Partition(pending) => {
                let outcome = pending.finish(durable).await;
                (
                    code::from_partition_result(outcome.error),
                    outcome.base_offset,
                    outcome.log_start_offset,
                )
            }
            Outcome::Exchange(answer) => {
                let error_code = answer
                    .recv_async()
                    .await
                    .map_or(code::NOT_LEADER_OR_FOLLOWER, code::from_exchange_outcome);
                (error_code, -1, -1)
            }
        }
    }
}

/// Issues one partition's append: the topic's name is looked up once in `metadata`; a plain
/// topic goes straight to its partition, only an exchange goes through routing.
async fn issue(
    shard: &Rc<Shard>,
    metadata: &Metadata,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
    acks: i16,
) -> Outcome {
    if !(-1..=1).contains(&acks) {
        return Outcome::Refused(code::INVALID_REQUIRED_ACKS);
    }
    let durable = acks == -1;
    if metadata.routing.is_exchange(topic) {
        let answer = crate::routing::broker::produce(
            shard,
            metadata,
            topic,
            index,
            records.as_ref(),
            durable,
        )
        .await;
        return Outcome::Exchange(answer);
    }
    Outcome::Partition(PendingAppend::issue(shard, metadata, topic, index, records, durable).await)
}

pub async fn dispatch(
    shard: &Rc<Shard>,
    request: Request,
    access: &Access,
) -> Result<Pending, CodecError> {
    let body: ProduceRequest = decode_body(&request)?;
    // Weir has no transactions: a transactional id only needs its Write, as in Kafka.
    let transactional_denied = body
        .transactional_id
        .as_ref()
        .is_some_and(|id| !access.allows(Operation::Write, ResourceType::TransactionalId, &id.0));
    let acks = body.acks;
    let metadata = shard.metadata();
    let mut topics = Vec::with_capacity(body.topic_data.len());
    for topic in body.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        // Kafka: Write on the topic; a denied topic appends nothing.
        let refusal = if transactional_denied {
            Some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        } else {
            (!access.allows_topic(Operation::Write, &name))
                .then_some(code::TOPIC_AUTHORIZATION_FAILED)
        };
        for data in topic.partition_data {
            if let Some(error_code) = refusal {
                partitions.push((data.index, Outcome::Refused(error_code)));
                continue;
            }
            let outcome = issue(shard, &metadata, &name, data.index, data.records, acks).await;
            partitions.push((data.index, outcome));
        }
        topics.push((topic.name, partitions));
    }
    let (key, version, correlation_id) = (request.key, request.version, request.correlation_id);
    Ok(Box::pin(async move {
        if acks == 0 {
            // No answer; the appends were issued in the dispatch phase.
            return Ok(None);
        }
        let mut response = ProduceResponse::default();
        for (name, partitions) in topics {
            let mut topic = TopicProduceResponse::default();
            topic.name = name;
            for (index, outcome) in partitions {
                let (error_code, base_offset, log_start_offset) = outcome.answer(acks == -1).await;
                let mut partition = PartitionProduceResponse::default();
                partition.index = index;
                partition.error_code = error_code;
                partition.base_offset = base_offset;
                partition.log_append_time_ms = -1;
                if version >= 5 {
                    partition.log_start_offset = log_start_offset;
                }
                topic.partition_responses.push(partition);
            }
            response.responses.push(topic);
        }
        encode_response(key, version, correlation_id, &response)
            .map(|bytes| Some(Response::single(bytes)))
    }))
}
