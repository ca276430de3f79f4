//! Produce (v3+): record batches are appended as received (header and CRC checked by the engine,
//! never decoded here). Partitions owned by this shard are appended in the dispatch phase;
//! others are sent to their owner in the dispatch phase, so per-connection order holds either
//! way. acks=0 gets no answer; acks=1 answers once written; acks=-1 once durable.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::codec::{decode_body, encode_response, CodecError, Request, Response};
use super::dispatch::Pending;
use super::error_codes as code;
use super::partition_ops::{self, Appended};
use crate::shard::mesh::{reply_channel, Job, ProduceOutcome};
use crate::shard::Shard;

/// Where one partition's answer comes from.
enum Outcome {
    Ready(ProduceOutcome),
    Local(Appended),
    Remote(flume::Receiver<ProduceOutcome>),
}

fn failed(error_code: i16) -> Outcome {
    Outcome::Ready(ProduceOutcome {
        error_code,
        base_offset: -1,
        log_start_offset: -1,
    })
}

/// The single place where a produce to an exchange is diverted to the router (owned by the
/// routing module). Returns `None` when `topic` is a plain topic.
async fn divert_to_exchange(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    records: &Option<Bytes>,
    acks: i16,
) -> Option<Outcome> {
    crate::routing::broker::produce(shard, topic, partition, records.as_ref(), acks)
        .await
        .map(Outcome::Remote)
}

pub async fn dispatch(shard: &Rc<Shard>, request: Request) -> Result<Pending, CodecError> {
    let body: ProduceRequest = decode_body(&request)?;
    let acks = body.acks;
    let metadata = shard.metadata();
    let mut topics = Vec::with_capacity(body.topic_data.len());
    for topic in body.topic_data {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let index = data.index;
            let outcome = if !(-1..=1).contains(&acks) {
                failed(code::INVALID_REQUIRED_ACKS)
            } else if let Some(diverted) =
                divert_to_exchange(shard, &name, index, &data.records, acks).await
            {
                diverted
            } else {
                match metadata.owner(&name, index) {
                    None => failed(code::UNKNOWN_TOPIC_OR_PARTITION),
                    Some(owner) if owner == shard.id => Outcome::Local(partition_ops::append(
                        shard,
                        &name,
                        index,
                        data.records.as_deref(),
                    )),
                    Some(owner) => {
                        let (reply, answer) = reply_channel();
                        let job = Job::Produce {
                            topic: name.clone(),
                            partition: index,
                            records: data.records,
                            acks,
                            reply,
                        };
                        match shard.mesh.shards[owner].send_async(job).await {
                            Ok(()) => Outcome::Remote(answer),
                            Err(_) => failed(code::NOT_LEADER_OR_FOLLOWER),
                        }
                    }
                }
            };
            partitions.push((index, outcome));
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
                let outcome = match outcome {
                    Outcome::Ready(outcome) => outcome,
                    Outcome::Local(appended) => partition_ops::finish_append(appended, acks).await,
                    Outcome::Remote(answer) => {
                        answer.recv_async().await.unwrap_or(ProduceOutcome {
                            error_code: code::NOT_LEADER_OR_FOLLOWER,
                            base_offset: -1,
                            log_start_offset: -1,
                        })
                    }
                };
                let mut partition = PartitionProduceResponse::default();
                partition.index = index;
                partition.error_code = outcome.error_code;
                partition.base_offset = outcome.base_offset;
                partition.log_append_time_ms = -1;
                if version >= 5 {
                    partition.log_start_offset = outcome.log_start_offset;
                }
                topic.partition_responses.push(partition);
            }
            response.responses.push(topic);
        }
        encode_response(key, version, correlation_id, &response)
            .map(|bytes| Some(Response::single(bytes)))
    }))
}
