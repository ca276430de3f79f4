//! Produce (v3+): record batches are appended as received (header and CRC checked by the engine,
//! never decoded here). Partitions owned by this shard are appended in the dispatch phase;
//! others are sent to their owner in the dispatch phase, so per-connection order holds either
//! way. acks=0 gets no answer; acks=1 answers once written; acks=-1 once durable.
//!
//! Each topic name is looked up once in the shard's metadata snapshot: a plain topic goes straight
//! to the core's partition append (`partition::PendingAppend`); only an exchange goes through
//! `routing::broker::produce`.

use std::ops::Range;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

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
    records: Option<BytesMut>,
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
            records.map(BytesMut::freeze).as_ref(),
            durable,
        )
        .await;
        return Outcome::Exchange(answer);
    }
    Outcome::Partition(PendingAppend::issue(shard, metadata, topic, index, records, durable).await)
}

/// One partition of a produce request, decoded: its index, and where its records lie in the
/// request body (`None`: no records), or the refusal decided before anything is appended.
struct PartitionPlan {
    index: i32,
    records: Result<Option<Range<usize>>, i16>,
}

/// Each topic's name and its partitions' plans, in request order.
type TopicPlans = Vec<(String, Vec<PartitionPlan>)>;

/// Decodes a produce request into its acks and per-topic plans, with the ACL checks done. Every
/// `Bytes` the decoder made from the body is dropped on return, so the caller holds the body's
/// only reference and can take the records out of it without copying (`take_records`).
fn plan(request: &Request, access: &Access) -> Result<(i16, TopicPlans), CodecError> {
    let body: ProduceRequest = decode_body(request)?;
    // Weir has no transactions: a transactional id only needs its Write, as in Kafka.
    let transactional_denied = body
        .transactional_id
        .as_ref()
        .is_some_and(|id| !access.allows(Operation::Write, ResourceType::TransactionalId, &id.0));
    let mut topics = Vec::with_capacity(body.topic_data.len());
    for topic in body.topic_data {
        let name = topic.name.0.to_string();
        // Kafka: Write on the topic; a denied topic appends nothing.
        let refusal = if transactional_denied {
            Some(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        } else {
            (!access.allows_topic(Operation::Write, &name))
                .then_some(code::TOPIC_AUTHORIZATION_FAILED)
        };
        let partitions = topic.partition_data.into_iter().map(|data| PartitionPlan {
            index: data.index,
            records: match refusal {
                Some(error_code) => Err(error_code),
                None => Ok(data.records.map(|r| range_within(&request.body, &r))),
            },
        });
        topics.push((name, partitions.collect()));
    }
    Ok((body.acks, topics))
}

/// Where `part` (a slice the decoder took from `body`) lies in `body`.
fn range_within(body: &Bytes, part: &Bytes) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
    start..start + part.len()
}

/// The records of each range of `body` as owned, mutable buffers. When `body` is the only
/// reference to the frame (the connection handed it over and the decoder's slices are gone) and
/// every range is at least half of it, these are pieces of the frame itself, split without
/// copying; otherwise each is a copy.
///
/// Why half: a piece keeps the whole frame allocated for as long as it lives in a partition's
/// tail cache, which counts only the piece's bytes. A small piece of a large frame (one of many
/// partitions in a request, on a partition whose cache turns over slowly) could pin many times
/// its size; at half or more the memory held is at most twice what the cache counts, and in the
/// common case (one batch per request) about the same.
fn take_records(body: Bytes, ranges: &[Range<usize>]) -> Vec<BytesMut> {
    let ordered = ranges.windows(2).all(|pair| pair[0].end <= pair[1].start)
        && ranges.last().is_none_or(|last| last.end <= body.len());
    let large = ranges.iter().all(|range| range.len() * 2 >= body.len());
    let owned = if ordered && large {
        body.try_into_mut()
    } else {
        Err(body)
    };
    match owned {
        Ok(mut rest) => {
            let mut at = 0;
            let mut pieces = Vec::with_capacity(ranges.len());
            for range in ranges {
                rest.advance(range.start - at);
                pieces.push(rest.split_to(range.len()));
                at = range.end;
            }
            pieces
        }
        Err(body) => ranges
            .iter()
            .map(|range| match body.get(range.clone()) {
                Some(bytes) => BytesMut::from(bytes),
                // Not a slice of the body: cannot happen with kafka-protocol's decoder, which
                // slices; an empty buffer is refused as a corrupt batch, not a panic.
                None => BytesMut::new(),
            })
            .collect(),
    }
}

pub async fn dispatch(
    shard: &Rc<Shard>,
    request: Request,
    access: &Access,
) -> Result<Pending, CodecError> {
    let (acks, plans) = plan(&request, access)?;
    let (key, version, correlation_id) = (request.key, request.version, request.correlation_id);
    // The header's strings are slices of the frame too: drop them before taking the records.
    let body = request.body;
    drop(request.header);
    let ranges: Vec<Range<usize>> = plans
        .iter()
        .flat_map(|(_, partitions)| partitions.iter())
        .filter_map(|p| p.records.as_ref().ok().cloned().flatten())
        .collect();
    let mut records = take_records(body, &ranges).into_iter();
    let metadata = shard.metadata();
    let mut topics = Vec::with_capacity(plans.len());
    for (name, partitions) in plans {
        let mut outcomes = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let outcome = match partition.records {
                Err(error_code) => Outcome::Refused(error_code),
                Ok(range) => {
                    let data = range.and_then(|_| records.next());
                    issue(shard, &metadata, &name, partition.index, data, acks).await
                }
            };
            outcomes.push((partition.index, outcome));
        }
        topics.push((TopicName(StrBytes::from_string(name)), outcomes));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as the connection hands it over (`Bytes` from the `Vec` it read into) and the
    /// ranges of its records; returns the pieces and whether each is the frame's own memory.
    fn check(frame_bytes: usize, ranges: &[Range<usize>], keep_a_slice: bool, want_same: bool) {
        let frame: Vec<u8> = (0..frame_bytes).map(|i| i as u8).collect();
        let body = Bytes::from(frame.clone());
        let base = body.as_ptr() as usize;
        // A decoder slice still alive (as the header's strings would be) forces copies.
        let kept = keep_a_slice.then(|| body.slice(0..1));
        let pieces = take_records(body, ranges);
        assert_eq!(pieces.len(), ranges.len());
        for (piece, range) in pieces.iter().zip(ranges) {
            assert_eq!(&piece[..], &frame[range.clone()]);
            let same = piece.as_ptr() as usize == base + range.start;
            assert_eq!(same, want_same, "{range:?}");
        }
        drop(kept);
    }

    #[test]
    fn records_are_taken_from_the_frame_without_copying() {
        check(1000, std::slice::from_ref(&(10..600)), false, true);
        check(1000, &[0..500, 500..1000], false, true);
        check(1000, &[], false, true);
        // Small pieces of a large frame would keep it allocated: copied.
        check(1000, &[10..400, 400..900, 950..1000], false, false);
        check(1000, std::slice::from_ref(&(10..400)), false, false);
        // Another reference to the frame is alive: copied.
        check(1000, std::slice::from_ref(&(10..600)), true, false);
        // Out of order or past the end: copied where they lie, never a panic.
        check(1000, &[500..1000, 0..500], false, false);
    }

    #[test]
    fn a_range_outside_the_body_becomes_an_empty_buffer() {
        let pieces = take_records(Bytes::from(vec![1u8; 10]), &[0..5, 5..20]);
        assert_eq!(&pieces[0][..], &[1u8; 5]);
        assert!(pieces[1].is_empty());
    }

    #[test]
    fn pieces_are_independent_buffers() {
        let body = Bytes::from(vec![0u8; 64]);
        let mut pieces = take_records(body, &[0..32, 32..64]);
        pieces[0][..8].copy_from_slice(&7i64.to_be_bytes());
        assert_eq!(&pieces[1][..8], &[0u8; 8]);
    }
}
