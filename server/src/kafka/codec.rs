//! Kafka wire framing: request header parsing, the supported version table, and response
//! encoding. Pure functions over bytes (no I/O, no shard state), so they can be fuzzed.
//!
//! Runs on whichever shard owns the connection. Decoding is zero-copy: the frame is one `Bytes`
//! and every `Bytes` field of a decoded request (record batches) is a slice of it.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use weir_engine::Chunk;

/// The API versions Weir answers. Ranges keep the old non-flexible versions (KafkaJS speaks no
/// flexible versions) and stop before versions that need features Weir lacks (topic ids in
/// Produce/Fetch, batched OffsetFetch).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareGroupDescribe, 1, 1),
    (ApiKey::ShareFetch, 1, 2),
    (ApiKey::ShareAcknowledge, 1, 2),
    (ApiKey::DescribeShareGroupOffsets, 0, 0),
    (ApiKey::AlterShareGroupOffsets, 0, 0),
    (ApiKey::DeleteShareGroupOffsets, 0, 0),
    // v0 is followed by bare SASL tokens instead of SaslAuthenticate (librdkafka 2.0 checks
    // that v0 is offered before it uses SCRAM at all).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
];

pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {0} bytes is shorter than a request header")]
    Short(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("{key:?} version {version} is not supported")]
    UnsupportedVersion { key: ApiKey, version: i16 },
    #[error("malformed {key:?} v{version}: {reason}")]
    Malformed {
        key: ApiKey,
        version: i16,
        reason: String,
    },
    /// A request other than ApiVersions and the SASL ones before authentication on a SASL
    /// listener: the connection is closed, as Kafka closes it.
    #[error("{0:?} before SASL authentication")]
    Unauthenticated(ApiKey),
    #[error("encoding {key:?} v{version} failed: {reason}")]
    Encode {
        key: ApiKey,
        version: i16,
        reason: String,
    },
}

/// A request whose header is parsed; `body` is the rest of the frame.
pub struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// What `parse_request` found.
pub enum Parsed {
    Request(Request),
    /// An ApiVersions request of a version Weir does not know: answered in the v0 schema.
    UnsupportedApiVersions {
        correlation_id: i32,
    },
}

fn be_i16(frame: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([frame[at], frame[at + 1]])
}

/// Parses the request header of one frame (without its 4-byte size prefix).
pub fn parse_request(mut frame: Bytes) -> Result<Parsed, CodecError> {
    if frame.len() < 8 {
        return Err(CodecError::Short(frame.len()));
    }
    let key_code = be_i16(&frame, 0);
    let version = be_i16(&frame, 2);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(key_code).map_err(|_| CodecError::UnknownApiKey(key_code))?;
    let Some((min, max)) = supported_range(key) else {
        return Err(CodecError::UnknownApiKey(key_code));
    };
    if version < min || version > max {
        if key == ApiKey::ApiVersions {
            return Ok(Parsed::UnsupportedApiVersions { correlation_id });
        }
        return Err(CodecError::UnsupportedVersion { key, version });
    }
    let header = decode_guarded(key, version, || {
        RequestHeader::decode(&mut frame, key.request_header_version(version))
    })?;
    Ok(Parsed::Request(Request {
        key,
        version,
        correlation_id,
        header,
        body: frame,
    }))
}

/// Runs a kafka-protocol decoder, turning both its errors and any panic on hostile input into a
/// `CodecError`, so that bad bytes close one connection and nothing else.
fn decode_guarded<T>(
    key: ApiKey,
    version: i16,
    decode: impl FnOnce() -> anyhow::Result<T>,
) -> Result<T, CodecError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(CodecError::Malformed {
            key,
            version,
            reason: error.to_string(),
        }),
        Err(_) => Err(CodecError::Malformed {
            key,
            version,
            reason: "decoder panicked".into(),
        }),
    }
}

/// Decodes a request body of type `T`; trailing bytes are tolerated as Kafka does.
pub fn decode_body<T: Decodable>(request: &Request) -> Result<T, CodecError> {
    let mut body = request.body.clone();
    decode_guarded(request.key, request.version, || {
        T::decode(&mut body, request.version)
    })
}

/// Encodes a complete response frame: size prefix, response header, body.
pub fn encode_response<T: Encodable + HeaderVersion>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, CodecError> {
    // ApiVersions answers always carry header v0 so that a client that sent a version we do not
    // know can still read the correlation id.
    let header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        T::header_version(version)
    };
    let fail = |error: anyhow::Error| CodecError::Encode {
        key,
        version,
        reason: error.to_string(),
    };
    let size = body.compute_size(version).map_err(fail)?;
    let mut out = BytesMut::with_capacity(4 + 5 + size);
    out.put_i32(0);
    write_response_header(&mut out, correlation_id, header_version);
    body.encode(&mut out, version).map_err(fail)?;
    let length = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&length.to_be_bytes());
    Ok(out.freeze())
}

/// Response header v0 is the correlation id; v1 adds an (empty) tagged-field section.
pub fn write_response_header(out: &mut BytesMut, correlation_id: i32, header_version: i16) {
    out.put_i32(correlation_id);
    if header_version >= 1 {
        out.put_u8(0);
    }
}

/// One part of a response frame: encoded bytes, or a chunk of a partition log written to the
/// socket as it is (the zero-copy fetch path).
pub enum Piece {
    Bytes(Bytes),
    Chunk(Chunk),
}

impl Piece {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Piece::Bytes(bytes) => bytes,
            Piece::Chunk(chunk) => chunk.as_slice(),
        }
    }
}

/// A complete response frame, size prefix included, as a list of pieces.
pub struct Response {
    pub pieces: Vec<Piece>,
}

impl Response {
    pub fn single(bytes: Bytes) -> Response {
        Response {
            pieces: vec![Piece::Bytes(bytes)],
        }
    }

    /// Bytes on the wire, size prefix included.
    pub fn wire_bytes(&self) -> usize {
        self.pieces.iter().map(|piece| piece.as_slice().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsResponse;
    use kafka_protocol::protocol::StrBytes;

    fn frame(key: i16, version: i16, tail: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(key);
        out.put_i16(version);
        out.put_i32(77);
        out.put_slice(tail);
        out.freeze()
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let check = |bytes: Bytes| match parse_request(bytes) {
            Err(_) => {}
            Ok(Parsed::UnsupportedApiVersions { .. }) => {}
            Ok(Parsed::Request(request)) => {
                let _ = decode_body::<kafka_protocol::messages::ProduceRequest>(&request);
            }
        };
        check(Bytes::new());
        check(Bytes::from_static(&[0, 0, 0]));
        check(frame(999, 0, &[]));
        check(frame(0, 3, &[0xff, 0xff]));
        check(frame(0, 3, &[0x00, 0x05, b'a']));
        check(frame(0, 200, &[]));
        for length in 0..64 {
            check(frame(0, 9, &vec![0xff; length]));
        }
    }

    #[test]
    fn hostile_array_counts_do_not_allocate_what_they_claim() {
        // Found by the request_decoder fuzz target: DescribeConfigs v1 whose resource count is
        // 0x7fffffff made kafka-protocol reserve 189 GB and the failed allocation aborted the
        // broker. The vendored kafka-protocol bounds the capacity by the bytes left.
        let oom = [0u8, 32, 0, 1, 4, 0, 0, 0, 0, 0, 2, 0, 0, 0];
        let Ok(Parsed::Request(request)) = parse_request(Bytes::copy_from_slice(&oom)) else {
            panic!("the header is valid");
        };
        assert!(decode_body::<kafka_protocol::messages::DescribeConfigsRequest>(&request).is_err());
        let mut huge = frame(32, 1, &[0xff, 0xff]); // empty client id
        huge.truncate(8);
        let mut huge = BytesMut::from(&huge[..]);
        huge.put_i16(0);
        huge.put_i32(i32::MAX);
        let Ok(Parsed::Request(request)) = parse_request(huge.freeze()) else {
            panic!("the header is valid");
        };
        assert!(decode_body::<kafka_protocol::messages::DescribeConfigsRequest>(&request).is_err());
    }

    #[test]
    fn unknown_api_versions_version_is_flagged() {
        assert!(matches!(
            parse_request(frame(18, 99, &[])),
            Ok(Parsed::UnsupportedApiVersions { correlation_id: 77 })
        ));
        assert!(matches!(
            parse_request(frame(0, 2, &[])),
            Err(CodecError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn api_versions_header_is_v0() {
        let response = ApiVersionsResponse::default();
        let bytes = encode_response(ApiKey::ApiVersions, 3, 5, &response).unwrap();
        assert_eq!(&bytes[4..8], &5i32.to_be_bytes());
        assert_eq!(
            i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
            bytes.len() - 4
        );
    }

    /// Encodes `message` at `version`, decodes it back, and checks it survived.
    fn round_trip<M>(message: &M, version: i16) -> Bytes
    where
        M: Encodable + Decodable + PartialEq + std::fmt::Debug,
    {
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes, version).unwrap();
        assert_eq!(bytes.len(), message.compute_size(version).unwrap());
        let bytes = bytes.freeze();
        let decoded = M::decode(&mut bytes.clone(), version).unwrap();
        assert_eq!(&decoded, message, "v{version}");
        bytes
    }

    #[test]
    fn share_fetch_v2_carries_the_acquire_mode_and_the_renew_flag() {
        use kafka_protocol::messages::share_fetch_request::{
            AcknowledgementBatch, FetchPartition, FetchTopic,
        };
        use kafka_protocol::messages::{ShareFetchRequest, ShareFetchResponse};
        let batch = AcknowledgementBatch::default()
            .with_first_offset(3)
            .with_last_offset(5)
            .with_acknowledge_types(vec![4]);
        let partition = FetchPartition::default()
            .with_partition_index(2)
            .with_acknowledgement_batches(vec![batch]);
        let topic = FetchTopic::default()
            .with_topic_id(uuid::Uuid::from_u128(7))
            .with_partitions(vec![partition]);
        let v1 = ShareFetchRequest::default()
            .with_member_id(Some(StrBytes::from_static_str("m")))
            .with_share_session_epoch(3)
            .with_max_bytes(0)
            .with_topics(vec![topic]);
        let v1_bytes = round_trip(&v1, 1);
        let v2 = v1
            .clone()
            .with_share_acquire_mode(1)
            .with_is_renew_ack(true);
        let v2_bytes = round_trip(&v2, 2);
        // Both new fields sit after BatchSize: two bytes more, the rest unchanged.
        assert_eq!(v2_bytes.len(), v1_bytes.len() + 2);
        let after_batch_size = 1 + 2 + 4 * 6; // null group, "m", six int32s
        assert_eq!(&v2_bytes[after_batch_size..after_batch_size + 2], &[1, 1]);
        assert_eq!(
            &v2_bytes[after_batch_size + 2..],
            &v1_bytes[after_batch_size..]
        );
        // Version 1 has neither field: set, they cannot be encoded; decoded, they are the defaults.
        assert!(v2.encode(&mut BytesMut::new(), 1).is_err());
        let decoded = ShareFetchRequest::decode(&mut v1_bytes.clone(), 1).unwrap();
        assert_eq!(
            (decoded.share_acquire_mode, decoded.is_renew_ack),
            (0, false)
        );
        // The response has no new field in version 2.
        let response = ShareFetchResponse::default().with_acquisition_lock_timeout_ms(2000);
        assert_eq!(round_trip(&response, 1), round_trip(&response, 2));
        assert!(ShareFetchRequest::decode(&mut v2_bytes.clone(), 3).is_err());
    }

    #[test]
    fn share_acknowledge_v2_carries_the_renew_flag_and_the_lock_duration() {
        use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareAcknowledgeResponse};
        let v1 = ShareAcknowledgeRequest::default()
            .with_member_id(Some(StrBytes::from_static_str("m")))
            .with_share_session_epoch(4);
        let v1_bytes = round_trip(&v1, 1);
        let v2 = v1.clone().with_is_renew_ack(true);
        let v2_bytes = round_trip(&v2, 2);
        // IsRenewAck follows ShareSessionEpoch.
        assert_eq!(v2_bytes.len(), v1_bytes.len() + 1);
        assert_eq!(v2_bytes[1 + 2 + 4], 1);
        assert!(v2.encode(&mut BytesMut::new(), 1).is_err());
        // AcquisitionLockTimeoutMs (version 2+, ignorable) follows ErrorMessage; version 1
        // leaves it out.
        let response = ShareAcknowledgeResponse::default().with_acquisition_lock_timeout_ms(2000);
        let response_v2 = round_trip(&response, 2);
        let mut response_v1 = BytesMut::new();
        response.encode(&mut response_v1, 1).unwrap();
        assert_eq!(response_v2.len(), response_v1.len() + 4);
        assert_eq!(&response_v2[7..11], &2000i32.to_be_bytes());
        let decoded = ShareAcknowledgeResponse::decode(&mut response_v1.freeze(), 1).unwrap();
        assert_eq!(decoded.acquisition_lock_timeout_ms, 0);
    }
}
