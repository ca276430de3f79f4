//! Kafka wire framing and the hot-path codecs the harness builds itself: Produce (v3..=8) and
//! Fetch (v4..=11), the non-flexible versions every Kafka-compatible broker still serves.
//!
//! Used by producer, acknowledgement-reader and fetcher threads; each owns its own buffers and
//! socket, nothing here is shared. Encoders append to reused `Vec<u8>`s; decoders borrow the
//! received frame and treat it as hostile (every read is bounds-checked and returns an error).

use std::io::{IoSlice, Read, Write};

use anyhow::{bail, ensure, Context, Result};

pub const API_PRODUCE: i16 = 0;
pub const API_FETCH: i16 = 1;
pub const API_LIST_OFFSETS: i16 = 2;
pub const API_METADATA: i16 = 3;
pub const API_API_VERSIONS: i16 = 18;
pub const API_CREATE_TOPICS: i16 = 19;
pub const API_FIND_COORDINATOR: i16 = 10;
pub const API_SHARE_GROUP_HEARTBEAT: i16 = 76;
pub const API_SHARE_FETCH: i16 = 78;
pub const API_SHARE_ACKNOWLEDGE: i16 = 79;

/// Version ranges the harness can speak, as (api key, min, max).
pub const PRODUCE_VERSIONS: (i16, i16) = (3, 8);
pub const FETCH_VERSIONS: (i16, i16) = (4, 11);

/// The largest response frame the harness accepts; anything bigger is a protocol error.
pub const FRAME_BYTES_MAX: usize = 256 << 20;

pub const CLIENT_ID: &str = "weir-bench";

/// Starts a request frame in `buf` (cleared): size placeholder and request header v1.
pub fn begin_request(buf: &mut Vec<u8>, api_key: i16, version: i16, correlation_id: i32) {
    buf.clear();
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&api_key.to_be_bytes());
    buf.extend_from_slice(&version.to_be_bytes());
    buf.extend_from_slice(&correlation_id.to_be_bytes());
    put_string(buf, CLIENT_ID);
}

/// Patches the size prefix once the frame is complete, `extra_bytes` being payload sent
/// separately (iovecs) after `buf`.
pub fn finish_request(buf: &mut [u8], extra_bytes: usize) {
    let size = (buf.len() - 4 + extra_bytes) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
}

pub fn put_string(buf: &mut Vec<u8>, value: &str) {
    buf.extend_from_slice(&(value.len() as i16).to_be_bytes());
    buf.extend_from_slice(value.as_bytes());
}

/// Reads one response frame (size prefix stripped) into the front of `buf` and returns it. The
/// buffer only grows, so that steady-state fetches never zero-fill megabytes before reading them.
pub fn read_frame<'a>(stream: &mut impl Read, buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
    let mut size = [0u8; 4];
    stream
        .read_exact(&mut size)
        .context("reading a response size")?;
    let size = i32::from_be_bytes(size);
    ensure!(
        size >= 4 && size as usize <= FRAME_BYTES_MAX,
        "response frame of {size} bytes is out of range"
    );
    let size = size as usize;
    if buf.len() < size {
        buf.resize(size, 0);
    }
    stream
        .read_exact(&mut buf[..size])
        .context("reading a response body")?;
    Ok(&buf[..size])
}

/// Writes every slice completely (std's `write_all_vectored` is not stable).
pub fn write_all_vectored(stream: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> Result<()> {
    while !slices.is_empty() {
        let written = stream.write_vectored(slices).context("writing a request")?;
        ensure!(written > 0, "the connection closed while writing");
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// A bounds-checked reader over a received frame.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, position: 0 }
    }

    pub fn take(&mut self, count: usize) -> Result<&'a [u8]> {
        let end = self
            .position
            .checked_add(count)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            bail!(
                "response truncated: wanted {count} bytes at {} of {}",
                self.position,
                self.bytes.len()
            );
        };
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into()?))
    }

    /// A nullable string, returned as bytes (names are compared as bytes).
    pub fn string(&mut self) -> Result<Option<&'a [u8]>> {
        let length = self.i16()?;
        if length < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(length as usize)?))
    }

    /// A nullable `BYTES` field (i32 length).
    pub fn bytes(&mut self) -> Result<Option<&'a [u8]>> {
        let length = self.i32()?;
        if length < 0 {
            return Ok(None);
        }
        Ok(Some(self.take(length as usize)?))
    }

    /// An array length; null arrays count as empty. Bounded by the bytes left so that a hostile
    /// count cannot make a caller loop for long.
    pub fn array_length(&mut self) -> Result<usize> {
        let length = self.i32()?;
        if length < 0 {
            return Ok(0);
        }
        ensure!(
            length as usize <= self.bytes.len() - self.position,
            "array of {length} elements cannot fit in the response"
        );
        Ok(length as usize)
    }
}

/// The fixed part of a Produce request (v3..=8 share one schema).
pub struct ProduceHeader {
    pub version: i16,
    pub correlation_id: i32,
    pub acks: i16,
    pub timeout_ms: i32,
}

/// One batch of a Produce request; its bytes travel separately (writev).
#[derive(Debug, Clone, Copy)]
pub struct ProduceEntry {
    pub topic: usize,
    pub partition: i32,
    pub batch_bytes: usize,
}

/// Writes a Produce request's framing into `framing` (cleared): everything but the batch bytes.
/// `entries` must be sorted by topic, a partition at most once. `cuts[i]` is where batch `i` goes:
/// the request is `framing[..cuts[0]] batch0 framing[cuts[0]..cuts[1]] batch1 ...`.
pub fn encode_produce_framing(
    framing: &mut Vec<u8>,
    cuts: &mut Vec<usize>,
    header: &ProduceHeader,
    topic_names: &[String],
    entries: &[ProduceEntry],
) {
    assert!(
        entries
            .windows(2)
            .all(|pair| pair[0].topic <= pair[1].topic),
        "produce entries are grouped by topic"
    );
    let topic_count = if entries.is_empty() {
        0
    } else {
        1 + entries
            .windows(2)
            .filter(|pair| pair[0].topic != pair[1].topic)
            .count()
    };
    begin_request(framing, API_PRODUCE, header.version, header.correlation_id);
    framing.extend_from_slice(&(-1i16).to_be_bytes()); // transactional_id: null
    framing.extend_from_slice(&header.acks.to_be_bytes());
    framing.extend_from_slice(&header.timeout_ms.to_be_bytes());
    framing.extend_from_slice(&(topic_count as i32).to_be_bytes());
    cuts.clear();
    let mut batch_bytes_total = 0;
    for group in entries.chunk_by(|left, right| left.topic == right.topic) {
        put_string(framing, &topic_names[group[0].topic]);
        framing.extend_from_slice(&(group.len() as i32).to_be_bytes());
        for entry in group {
            framing.extend_from_slice(&entry.partition.to_be_bytes());
            framing.extend_from_slice(&(entry.batch_bytes as i32).to_be_bytes());
            cuts.push(framing.len());
            batch_bytes_total += entry.batch_bytes;
        }
    }
    finish_request(framing, batch_bytes_total);
}

/// One partition of a produce response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducePartitionResult {
    pub partition: i32,
    pub error_code: i16,
    pub base_offset: i64,
}

/// Parses a produce response body (after the correlation id), visiting every partition.
pub fn parse_produce_response(
    body: &[u8],
    version: i16,
    mut visit: impl FnMut(&[u8], ProducePartitionResult),
) -> Result<()> {
    let mut cursor = Cursor::new(body);
    for _ in 0..cursor.array_length()? {
        let topic = cursor.string()?.unwrap_or_default();
        for _ in 0..cursor.array_length()? {
            let partition = cursor.i32()?;
            let error_code = cursor.i16()?;
            let base_offset = cursor.i64()?;
            cursor.i64()?; // log_append_time
            if version >= 5 {
                cursor.i64()?; // log_start_offset
            }
            if version >= 8 {
                for _ in 0..cursor.array_length()? {
                    cursor.i32()?;
                    cursor.string()?;
                }
                cursor.string()?; // error_message
            }
            visit(
                topic,
                ProducePartitionResult {
                    partition,
                    error_code,
                    base_offset,
                },
            );
        }
    }
    cursor.i32()?; // throttle_time_ms
    Ok(())
}

/// One partition to fetch.
#[derive(Debug, Clone, Copy)]
pub struct FetchPosition {
    pub partition: i32,
    pub offset: i64,
}

pub struct FetchLimits {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
}

/// A complete Fetch request frame for the partitions of one topic (one connection fetches the
/// partitions of one topic it was assigned; multi-topic runs use one fetcher per topic).
pub fn encode_fetch(
    buf: &mut Vec<u8>,
    version: i16,
    correlation_id: i32,
    limits: &FetchLimits,
    topic: &str,
    positions: &[FetchPosition],
) {
    begin_request(buf, API_FETCH, version, correlation_id);
    buf.extend_from_slice(&(-1i32).to_be_bytes()); // replica_id: a consumer
    buf.extend_from_slice(&limits.max_wait_ms.to_be_bytes());
    buf.extend_from_slice(&limits.min_bytes.to_be_bytes());
    buf.extend_from_slice(&limits.max_bytes.to_be_bytes());
    buf.push(0); // isolation_level: read uncommitted
    if version >= 7 {
        buf.extend_from_slice(&0i32.to_be_bytes()); // session_id: no session
        buf.extend_from_slice(&(-1i32).to_be_bytes()); // session_epoch: full fetch
    }
    buf.extend_from_slice(&1i32.to_be_bytes());
    put_string(buf, topic);
    buf.extend_from_slice(&(positions.len() as i32).to_be_bytes());
    for position in positions {
        buf.extend_from_slice(&position.partition.to_be_bytes());
        if version >= 9 {
            buf.extend_from_slice(&(-1i32).to_be_bytes()); // current_leader_epoch
        }
        buf.extend_from_slice(&position.offset.to_be_bytes());
        if version >= 5 {
            buf.extend_from_slice(&(-1i64).to_be_bytes()); // log_start_offset
        }
        buf.extend_from_slice(&limits.partition_max_bytes.to_be_bytes());
    }
    if version >= 7 {
        buf.extend_from_slice(&0i32.to_be_bytes()); // forgotten_topics_data
    }
    if version >= 11 {
        put_string(buf, ""); // rack_id
    }
    finish_request(buf, 0);
}

/// One partition of a fetch response, borrowing the frame.
#[derive(Debug, Clone, Copy)]
pub struct FetchPartitionData<'a> {
    pub partition: i32,
    pub error_code: i16,
    pub records: &'a [u8],
}

/// Parses a fetch response body (after the correlation id). Returns the top-level error code.
pub fn parse_fetch_response<'a>(
    body: &'a [u8],
    version: i16,
    mut visit: impl FnMut(&'a [u8], FetchPartitionData<'a>) -> Result<()>,
) -> Result<i16> {
    let mut cursor = Cursor::new(body);
    cursor.i32()?; // throttle_time_ms
    let mut top_error = 0;
    if version >= 7 {
        top_error = cursor.i16()?;
        cursor.i32()?; // session_id
    }
    for _ in 0..cursor.array_length()? {
        let topic = cursor.string()?.unwrap_or_default();
        for _ in 0..cursor.array_length()? {
            let partition = cursor.i32()?;
            let error_code = cursor.i16()?;
            cursor.i64()?; // high_watermark
            cursor.i64()?; // last_stable_offset
            if version >= 5 {
                cursor.i64()?; // log_start_offset
            }
            for _ in 0..cursor.array_length()? {
                cursor.i64()?;
                cursor.i64()?;
            }
            if version >= 11 {
                cursor.i32()?; // preferred_read_replica
            }
            let records = cursor.bytes()?.unwrap_or_default();
            visit(
                topic,
                FetchPartitionData {
                    partition,
                    error_code,
                    records,
                },
            )?;
        }
    }
    Ok(top_error)
}

/// Picks the highest version both sides speak.
pub fn negotiate(ours: (i16, i16), theirs: Option<(i16, i16)>, api: &str) -> Result<i16> {
    let Some((their_min, their_max)) = theirs else {
        bail!("the broker does not support the {api} API");
    };
    let version = ours.1.min(their_max);
    ensure!(
        version >= ours.0 && version >= their_min,
        "no common {api} version: harness speaks {}..={}, broker {their_min}..={their_max}",
        ours.0,
        ours.1
    );
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_request_frames_and_sizes_correctly() {
        let limits = FetchLimits {
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: 1 << 20,
            partition_max_bytes: 1 << 16,
        };
        for version in 4..=11 {
            let mut buf = Vec::new();
            let positions = [FetchPosition {
                partition: 3,
                offset: 42,
            }];
            encode_fetch(&mut buf, version, 7, &limits, "t", &positions);
            let size = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            assert_eq!(size, buf.len() - 4);
            assert_eq!(i16::from_be_bytes(buf[4..6].try_into().unwrap()), API_FETCH);
            assert_eq!(i16::from_be_bytes(buf[6..8].try_into().unwrap()), version);
            assert_eq!(i32::from_be_bytes(buf[8..12].try_into().unwrap()), 7);
        }
    }

    fn fetch_response(version: i16, records: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&0i32.to_be_bytes());
        if version >= 7 {
            body.extend_from_slice(&0i16.to_be_bytes());
            body.extend_from_slice(&0i32.to_be_bytes());
        }
        body.extend_from_slice(&1i32.to_be_bytes());
        put_string(&mut body, "t");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&5i32.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&99i64.to_be_bytes());
        body.extend_from_slice(&99i64.to_be_bytes());
        if version >= 5 {
            body.extend_from_slice(&0i64.to_be_bytes());
        }
        body.extend_from_slice(&(-1i32).to_be_bytes());
        if version >= 11 {
            body.extend_from_slice(&(-1i32).to_be_bytes());
        }
        body.extend_from_slice(&(records.len() as i32).to_be_bytes());
        body.extend_from_slice(records);
        body
    }

    #[test]
    fn fetch_response_parses_for_every_version_and_truncation_is_an_error() {
        for version in 4..=11 {
            let body = fetch_response(version, b"abc");
            let mut seen = Vec::new();
            let top = parse_fetch_response(&body, version, |topic, data| {
                seen.push((topic.to_vec(), data.partition, data.records));
                Ok(())
            })
            .unwrap();
            assert_eq!(top, 0);
            assert_eq!(seen, vec![(b"t".to_vec(), 5, &b"abc"[..])]);
            for cut in 0..body.len() {
                assert!(parse_fetch_response(&body[..cut], version, |_, _| Ok(())).is_err());
            }
        }
    }

    #[test]
    fn produce_response_parses_errors_per_partition() {
        for version in 3..=8 {
            let mut body = Vec::new();
            body.extend_from_slice(&1i32.to_be_bytes());
            put_string(&mut body, "t");
            body.extend_from_slice(&2i32.to_be_bytes());
            for (partition, error) in [(0i32, 0i16), (1, 6)] {
                body.extend_from_slice(&partition.to_be_bytes());
                body.extend_from_slice(&error.to_be_bytes());
                body.extend_from_slice(&10i64.to_be_bytes());
                body.extend_from_slice(&(-1i64).to_be_bytes());
                if version >= 5 {
                    body.extend_from_slice(&0i64.to_be_bytes());
                }
                if version >= 8 {
                    body.extend_from_slice(&0i32.to_be_bytes());
                    body.extend_from_slice(&(-1i16).to_be_bytes());
                }
            }
            body.extend_from_slice(&0i32.to_be_bytes());
            let mut results = Vec::new();
            parse_produce_response(&body, version, |_, result| results.push(result)).unwrap();
            assert_eq!(results.len(), 2);
            assert_eq!(results[1].error_code, 6);
            assert!(parse_produce_response(&body[..body.len() - 1], version, |_, _| {}).is_err());
        }
    }

    /// Splits a request frame into its header and body with the independent codec.
    fn decode_header(frame: &[u8]) -> (kafka_protocol::messages::RequestHeader, bytes::Bytes) {
        use kafka_protocol::protocol::Decodable;
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size, frame.len() - 4);
        let mut body = bytes::Bytes::copy_from_slice(&frame[4..]);
        let header = kafka_protocol::messages::RequestHeader::decode(&mut body, 1).unwrap();
        (header, body)
    }

    #[test]
    fn independent_codec_reads_our_produce_requests() {
        use kafka_protocol::messages::ProduceRequest;
        use kafka_protocol::protocol::Decodable;
        let names = vec!["alpha".to_owned(), "beta".to_owned()];
        let entries = [
            ProduceEntry {
                topic: 0,
                partition: 0,
                batch_bytes: 3,
            },
            ProduceEntry {
                topic: 0,
                partition: 4,
                batch_bytes: 5,
            },
            ProduceEntry {
                topic: 1,
                partition: 2,
                batch_bytes: 1,
            },
        ];
        let batches: [&[u8]; 3] = [b"abc", b"defgh", b"i"];
        for version in PRODUCE_VERSIONS.0..=PRODUCE_VERSIONS.1 {
            let header = ProduceHeader {
                version,
                correlation_id: 9,
                acks: -1,
                timeout_ms: 1234,
            };
            let (mut framing, mut cuts) = (Vec::new(), Vec::new());
            encode_produce_framing(&mut framing, &mut cuts, &header, &names, &entries);
            let mut frame = Vec::new();
            let mut start = 0;
            for (cut, batch) in cuts.iter().zip(batches) {
                frame.extend_from_slice(&framing[start..*cut]);
                frame.extend_from_slice(batch);
                start = *cut;
            }
            frame.extend_from_slice(&framing[start..]);
            let (request_header, mut body) = decode_header(&frame);
            assert_eq!(request_header.request_api_key, API_PRODUCE);
            assert_eq!(request_header.request_api_version, version);
            assert_eq!(request_header.correlation_id, 9);
            let request = ProduceRequest::decode(&mut body, version).unwrap();
            assert!(body.is_empty());
            assert_eq!((request.acks, request.timeout_ms), (-1, 1234));
            assert!(request.transactional_id.is_none());
            let mut seen = Vec::new();
            for topic in &request.topic_data {
                for partition in &topic.partition_data {
                    let records = partition.records.clone().unwrap();
                    seen.push((topic.name.0.to_string(), partition.index, records.to_vec()));
                }
            }
            assert_eq!(
                seen,
                vec![
                    ("alpha".to_owned(), 0, b"abc".to_vec()),
                    ("alpha".to_owned(), 4, b"defgh".to_vec()),
                    ("beta".to_owned(), 2, b"i".to_vec()),
                ]
            );
        }
    }

    #[test]
    fn independent_codec_reads_our_fetch_requests() {
        use kafka_protocol::messages::FetchRequest;
        use kafka_protocol::protocol::Decodable;
        let limits = FetchLimits {
            max_wait_ms: 250,
            min_bytes: 1,
            max_bytes: 1 << 24,
            partition_max_bytes: 1 << 20,
        };
        let positions = [
            FetchPosition {
                partition: 0,
                offset: 17,
            },
            FetchPosition {
                partition: 3,
                offset: 0,
            },
        ];
        for version in FETCH_VERSIONS.0..=FETCH_VERSIONS.1 {
            let mut frame = Vec::new();
            encode_fetch(&mut frame, version, 5, &limits, "topic-a", &positions);
            let (header, mut body) = decode_header(&frame);
            assert_eq!(
                (header.request_api_key, header.correlation_id),
                (API_FETCH, 5)
            );
            let request = FetchRequest::decode(&mut body, version).unwrap();
            assert!(body.is_empty(), "v{version} left {} bytes", body.len());
            assert_eq!((request.max_wait_ms, request.max_bytes), (250, 1 << 24));
            assert_eq!(request.replica_id.0, -1);
            assert_eq!(request.topics.len(), 1);
            assert_eq!(&*request.topics[0].topic.0, "topic-a");
            let partitions: Vec<(i32, i64, i32)> = request.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition, p.fetch_offset, p.partition_max_bytes))
                .collect();
            assert_eq!(partitions, vec![(0, 17, 1 << 20), (3, 0, 1 << 20)]);
        }
    }

    #[test]
    fn we_read_independently_encoded_responses() {
        use kafka_protocol::messages::{fetch_response, produce_response, TopicName};
        use kafka_protocol::messages::{FetchResponse, ProduceResponse};
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let name = TopicName(StrBytes::from_static_str("t"));
        for version in FETCH_VERSIONS.0..=FETCH_VERSIONS.1 {
            let response = FetchResponse::default().with_responses(vec![
                fetch_response::FetchableTopicResponse::default()
                    .with_topic(name.clone())
                    .with_partitions(vec![
                        fetch_response::PartitionData::default()
                            .with_partition_index(2)
                            .with_high_watermark(10)
                            .with_records(Some(bytes::Bytes::from_static(b"xyz"))),
                        fetch_response::PartitionData::default()
                            .with_partition_index(3)
                            .with_error_code(1)
                            .with_records(None),
                    ]),
            ]);
            let mut body = bytes::BytesMut::new();
            response.encode(&mut body, version).unwrap();
            let mut seen = Vec::new();
            parse_fetch_response(&body, version, |topic, data| {
                seen.push((
                    topic.to_vec(),
                    data.partition,
                    data.error_code,
                    data.records.to_vec(),
                ));
                Ok(())
            })
            .unwrap();
            assert_eq!(
                seen,
                vec![
                    (b"t".to_vec(), 2, 0, b"xyz".to_vec()),
                    (b"t".to_vec(), 3, 1, Vec::new())
                ]
            );
        }
        for version in PRODUCE_VERSIONS.0..=PRODUCE_VERSIONS.1 {
            let response = ProduceResponse::default().with_responses(vec![
                produce_response::TopicProduceResponse::default()
                    .with_name(name.clone())
                    .with_partition_responses(vec![
                        produce_response::PartitionProduceResponse::default()
                            .with_index(1)
                            .with_base_offset(77),
                        produce_response::PartitionProduceResponse::default()
                            .with_index(2)
                            .with_error_code(6)
                            .with_error_message(Some(StrBytes::from_static_str("not leader"))),
                    ]),
            ]);
            let mut body = bytes::BytesMut::new();
            response.encode(&mut body, version).unwrap();
            let mut seen = Vec::new();
            parse_produce_response(&body, version, |_, result| seen.push(result)).unwrap();
            assert_eq!(seen.len(), 2);
            assert_eq!((seen[0].partition, seen[0].base_offset), (1, 77));
            assert_eq!((seen[1].partition, seen[1].error_code), (2, 6));
        }
    }

    #[test]
    fn hostile_array_length_is_rejected() {
        let body = [0x7f, 0xff, 0xff, 0xff];
        assert!(parse_produce_response(&body, 3, |_, _| {}).is_err());
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        assert_eq!(negotiate((3, 8), Some((0, 11)), "Produce").unwrap(), 8);
        assert_eq!(negotiate((3, 8), Some((3, 5)), "Produce").unwrap(), 5);
        assert!(negotiate((3, 8), Some((9, 11)), "Produce").is_err());
        assert!(negotiate((3, 8), None, "Produce").is_err());
    }
}
