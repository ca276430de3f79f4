//! ApiVersions: the version table of `codec::SUPPORTED`. An unknown ApiVersions version is answered
//! in the v0 schema with UNSUPPORTED_VERSION and the table, so that the client can retry (kafka-python
//! 3 opens with v4). Tagged sections stay empty (librdkafka 2.0.2 cannot parse filled ones).

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::codec::{encode_response, CodecError, SUPPORTED};
use super::error_codes as code;
use crate::shard::Shard;

pub fn response(error_code: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    response
}

pub async fn handle(
    _shard: &Shard,
    _version: i16,
    _request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    response(code::NONE)
}

pub fn unsupported(correlation_id: i32) -> Result<Bytes, CodecError> {
    encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &response(code::UNSUPPORTED_VERSION),
    )
}
