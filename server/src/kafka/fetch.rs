//! Fetch (v4-v12) with long polling. Partitions owned by this shard are read in place and their
//! chunks written to the socket without a copy (the response header bytes are built per request
//! around them); partitions of other shards come back over the mesh as `Bytes`.
//!
//! Long poll: when fewer than `min_bytes` are ready, wait (up to `max_wait_ms`) until any
//! partition's high watermark moves past what was seen, then read again. Errors answer at once.
//! Empty partitions carry zero-length records, never null (librdkafka rejects null).
//! Fetch sessions are not kept: every answer has session id 0, so clients send full fetches.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::FetchRequest;
use weir_engine::Chunk;

use super::codec::{write_response_header, CodecError, Piece, Response};
use super::error_codes as code;
use crate::metadata::Metadata;
use crate::partition::{self, FetchOutcome};
use crate::security::acl::{Access, Operation};
use crate::shard::mesh::{reply_channel, Job};
use crate::shard::Shard;

/// Upper bound on a long poll, whatever the client asks.
const WAIT_MAX: Duration = Duration::from_secs(30);

enum Payload {
    Local(Vec<Chunk>),
    Remote(Vec<Bytes>),
}

impl Payload {
    fn bytes(&self) -> usize {
        match self {
            Payload::Local(chunks) => chunks.iter().map(|c| c.as_slice().len()).sum(),
            Payload::Remote(parts) => parts.iter().map(Bytes::len).sum(),
        }
    }
}

struct PartitionResult {
    partition: i32,
    error_code: i16,
    high_watermark: i64,
    log_start_offset: i64,
    payload: Payload,
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    correlation_id: i32,
    request: FetchRequest,
    access: Access,
) -> Result<Response, CodecError> {
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(WAIT_MAX);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    loop {
        let results = read_all(shard, &request, &access).await;
        let total: usize = results
            .iter()
            .flat_map(|(_, parts)| parts.iter())
            .map(|p| p.payload.bytes())
            .sum();
        let any_error = results
            .iter()
            .flat_map(|(_, parts)| parts.iter())
            .any(|p| p.error_code != code::NONE);
        let now = Instant::now();
        if total >= min_bytes
            || any_error
            || now >= deadline
            || shard.shutdown.is_fired()
            || results.is_empty()
        {
            return Ok(encode(version, correlation_id, results));
        }
        wait_for_any(shard, &results, deadline - now).await;
    }
}

/// Where one partition's read stands after the dispatch of a round.
enum Source {
    Done(PartitionResult),
    Remote(i32, flume::Receiver<FetchOutcome<Bytes>>),
}

impl Source {
    fn empty(partition: i32, error_code: i16) -> Source {
        Source::Done(PartitionResult {
            partition,
            error_code,
            high_watermark: -1,
            log_start_offset: -1,
            payload: Payload::Remote(Vec::new()),
        })
    }

    async fn finish(self) -> PartitionResult {
        let (partition, answer) = match self {
            Source::Done(result) => return result,
            Source::Remote(partition, answer) => (partition, answer),
        };
        match answer.recv_async().await {
            Ok(outcome) => PartitionResult {
                partition,
                error_code: code::from_partition_result(outcome.error),
                high_watermark: outcome.high_watermark,
                log_start_offset: outcome.log_start_offset,
                payload: Payload::Remote(outcome.payload),
            },
            Err(_) => PartitionResult {
                partition,
                error_code: code::NOT_LEADER_OR_FOLLOWER,
                high_watermark: -1,
                log_start_offset: -1,
                payload: Payload::Remote(Vec::new()),
            },
        }
    }
}

async fn read_all(
    shard: &Rc<Shard>,
    request: &FetchRequest,
    access: &Access,
) -> Vec<(String, Vec<PartitionResult>)> {
    let metadata = shard.metadata();
    let mut remaining = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let mut sources: Vec<(String, Vec<Source>)> = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let mut parts = Vec::with_capacity(topic.partitions.len());
        // Kafka: Fetch needs Read on the topic (decided once per topic, cached per connection).
        let readable = access.allows_topic(Operation::Read, &name);
        for fetch in &topic.partitions {
            if !readable {
                parts.push(Source::empty(
                    fetch.partition,
                    code::TOPIC_AUTHORIZATION_FAILED,
                ));
                continue;
            }
            let max_bytes = (fetch.partition_max_bytes.max(0) as usize).min(remaining);
            let source = start_read(shard, &metadata, &name, fetch, max_bytes).await;
            if let Source::Done(result) = &source {
                remaining = remaining.saturating_sub(result.payload.bytes());
            }
            parts.push(source);
        }
        sources.push((name, parts));
    }
    let mut results = Vec::with_capacity(sources.len());
    for (name, parts) in sources {
        let mut done = Vec::with_capacity(parts.len());
        for source in parts {
            done.push(source.finish().await);
        }
        results.push((name, done));
    }
    results
}

/// Reads one partition in place when this shard owns it, else sends the read to its owner.
async fn start_read(
    shard: &Rc<Shard>,
    metadata: &Metadata,
    name: &str,
    fetch: &FetchPartition,
    max_bytes: usize,
) -> Source {
    let partition = fetch.partition;
    match metadata.owner(name, partition) {
        // Exchanges route what is produced to them and keep nothing: consume the topics
        // bound to them instead.
        None if metadata.routing.is_exchange(name) => {
            Source::empty(partition, code::INVALID_REQUEST)
        }
        None => Source::empty(partition, code::UNKNOWN_TOPIC_OR_PARTITION),
        Some(owner) if owner == shard.id => {
            let outcome =
                partition::read(shard, name, partition, fetch.fetch_offset, max_bytes).await;
            Source::Done(PartitionResult {
                partition,
                error_code: code::from_partition_result(outcome.error),
                high_watermark: outcome.high_watermark,
                log_start_offset: outcome.log_start_offset,
                payload: Payload::Local(outcome.payload),
            })
        }
        Some(owner) => {
            let (reply, answer) = reply_channel();
            let job = Job::Fetch {
                topic: name.to_string(),
                partition,
                offset: fetch.fetch_offset,
                max_bytes,
                reply,
            };
            match shard.mesh.inbox(owner).send_async(job).await {
                Ok(()) => Source::Remote(partition, answer),
                Err(_) => Source::empty(partition, code::NOT_LEADER_OR_FOLLOWER),
            }
        }
    }
}

/// Waits until any fetched partition's high watermark moves past what this round saw, or `wait`.
async fn wait_for_any(
    shard: &Rc<Shard>,
    results: &[(String, Vec<PartitionResult>)],
    wait: Duration,
) {
    let metadata = shard.metadata();
    let mut waits: Vec<Wait<'_>> = Vec::new();
    for (name, parts) in results {
        for part in parts {
            let offset = part.high_watermark;
            match metadata.owner(name, part.partition) {
                Some(owner) if owner == shard.id => {
                    if let Some(log) = shard.log(name, part.partition) {
                        waits.push(Box::pin(async move { log.wait_for_data(offset).await }));
                    }
                }
                Some(owner) => {
                    let (reply, answer) = reply_channel();
                    let job = Job::WaitForData {
                        topic: name.clone(),
                        partition: part.partition,
                        offset,
                        wait,
                        reply,
                    };
                    if shard.mesh.inbox(owner).send_async(job).await.is_ok() {
                        waits.push(Box::pin(async move {
                            let _ = answer.recv_async().await;
                        }));
                    }
                }
                None => {}
            }
        }
    }
    first_of(shard, wait, waits).await
}

/// One thing a long poll waits for.
pub type Wait<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Waits until the first of `waits` is done, `wait` has passed, or the shard shuts down: the
/// long poll of Fetch and ShareFetch.
pub async fn first_of(shard: &Shard, wait: Duration, mut waits: Vec<Wait<'_>>) {
    waits.push(Box::pin(glommio::timer::sleep(wait)));
    waits.push(Box::pin(shard.shutdown.wait()));
    futures_lite::future::poll_fn(|cx| {
        for wait in waits.iter_mut() {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// Builds the response frame by hand so that record chunks become their own pieces.
fn encode(
    version: i16,
    correlation_id: i32,
    results: Vec<(String, Vec<PartitionResult>)>,
) -> Response {
    let flexible = version >= 12;
    let mut pieces = Vec::new();
    let mut head = BytesMut::with_capacity(256);
    head.put_i32(0); // size, patched below
    write_response_header(&mut head, correlation_id, if flexible { 1 } else { 0 });
    head.put_i32(0); // throttle_time_ms
    if version >= 7 {
        head.put_i16(code::NONE);
        head.put_i32(0); // session_id: no fetch sessions
    }
    put_array_len(&mut head, results.len(), flexible);
    let mut size = 0usize;
    for (name, parts) in results {
        put_string(&mut head, &name, flexible);
        put_array_len(&mut head, parts.len(), flexible);
        for part in parts {
            head.put_i32(part.partition);
            head.put_i16(part.error_code);
            head.put_i64(part.high_watermark);
            head.put_i64(part.high_watermark); // last_stable_offset: no transactions
            if version >= 5 {
                head.put_i64(part.log_start_offset);
            }
            put_array_len(&mut head, 0, flexible); // aborted_transactions: none
            if version >= 11 {
                head.put_i32(-1); // preferred_read_replica
            }
            let records_bytes = part.payload.bytes();
            if flexible {
                put_unsigned_varint(&mut head, records_bytes as u64 + 1);
            } else {
                head.put_i32(records_bytes as i32);
            }
            if records_bytes > 0 {
                size += head.len();
                pieces.push(Piece::Bytes(head.split().freeze()));
                size += records_bytes;
                match part.payload {
                    Payload::Local(chunks) => pieces.extend(chunks.into_iter().map(Piece::Chunk)),
                    Payload::Remote(parts) => pieces.extend(parts.into_iter().map(Piece::Bytes)),
                }
            }
            if flexible {
                head.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            head.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        head.put_u8(0); // response tagged fields
    }
    size += head.len();
    pieces.push(Piece::Bytes(head.freeze()));
    let frame_size = ((size - 4) as i32).to_be_bytes();
    // The size prefix lives in the first piece, which is always encoded bytes.
    if let Some(Piece::Bytes(first)) = pieces.first_mut() {
        let mut patched = BytesMut::from(&first[..]);
        patched[0..4].copy_from_slice(&frame_size);
        *first = patched.freeze();
    }
    Response { pieces }
}

fn put_unsigned_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

fn put_array_len(out: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_unsigned_varint(out, len as u64 + 1);
    } else {
        out.put_i32(len as i32);
    }
}

fn put_string(out: &mut BytesMut, text: &str, flexible: bool) {
    if flexible {
        put_unsigned_varint(out, text.len() as u64 + 1);
    } else {
        out.put_i16(text.len() as i16);
    }
    out.put_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    /// The hand-built frame decodes with kafka-protocol's own decoder at every version.
    #[test]
    fn encoding_matches_kafka_protocol() {
        for version in 4..=12i16 {
            let results = vec![
                (
                    "topic-a".to_string(),
                    vec![
                        PartitionResult {
                            partition: 0,
                            error_code: 0,
                            high_watermark: 10,
                            log_start_offset: 0,
                            payload: Payload::Remote(vec![
                                Bytes::from_static(b"abc"),
                                Bytes::from_static(b"de"),
                            ]),
                        },
                        PartitionResult {
                            partition: 1,
                            error_code: 1,
                            high_watermark: 3,
                            log_start_offset: 2,
                            payload: Payload::Remote(vec![]),
                        },
                    ],
                ),
                ("b".to_string(), vec![]),
            ];
            let response = encode(version, 42, results);
            let mut frame = BytesMut::new();
            for piece in &response.pieces {
                frame.extend_from_slice(piece.as_slice());
            }
            let mut frame = frame.freeze();
            let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            assert_eq!(size, frame.len() - 4, "v{version}");
            let mut body = frame.split_off(4);
            let correlation = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            assert_eq!(correlation, 42);
            let _ = body.split_to(if version >= 12 { 5 } else { 4 });
            let decoded = FetchResponse::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version}: {} trailing bytes", body.len());
            assert_eq!(decoded.responses.len(), 2);
            let partitions = &decoded.responses[0].partitions;
            assert_eq!(partitions[0].records.as_deref(), Some(&b"abcde"[..]));
            assert_eq!(partitions[0].high_watermark, 10);
            assert_eq!(partitions[1].error_code, 1);
            assert_eq!(
                partitions[1].records.as_deref(),
                Some(&b""[..]),
                "empty records are zero-length, not null"
            );
            if version >= 5 {
                assert_eq!(partitions[1].log_start_offset, 2);
            }
        }
    }
}
