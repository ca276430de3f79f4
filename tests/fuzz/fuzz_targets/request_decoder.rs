//! The broker's Kafka request decoding entry point over arbitrary frames: `codec::parse_request`
//! (header, version table), then `codec::decode_body` with the body type the dispatcher uses for
//! that API key. Every outcome must be a value or a `CodecError`, never a panic, hang or abort.
#![no_main]

use bytes::Bytes;
use kafka_protocol::messages as m;
use kafka_protocol::messages::ApiKey;
use libfuzzer_sys::fuzz_target;
use weir_server::kafka::codec::{decode_body, parse_request, Parsed, Request};

fn decode(request: &Request) {
    macro_rules! body {
        ($type:ty) => {{
            let _ = decode_body::<$type>(request);
        }};
    }
    match request.key {
        ApiKey::Produce => {
            if let Ok(produce) = decode_body::<m::ProduceRequest>(request) {
                // The produce handler hands each partition's records to the batch validator.
                for topic in &produce.topic_data {
                    for partition in &topic.partition_data {
                        if let Some(records) = &partition.records {
                            let _ = weir_engine::batch::validate(records);
                            let _ = weir_engine::batch::claimed_size(records);
                        }
                    }
                }
            }
        }
        ApiKey::Fetch => body!(m::FetchRequest),
        ApiKey::ListOffsets => body!(m::ListOffsetsRequest),
        ApiKey::Metadata => body!(m::MetadataRequest),
        ApiKey::OffsetCommit => body!(m::OffsetCommitRequest),
        ApiKey::OffsetFetch => body!(m::OffsetFetchRequest),
        ApiKey::FindCoordinator => body!(m::FindCoordinatorRequest),
        ApiKey::JoinGroup => body!(m::JoinGroupRequest),
        ApiKey::Heartbeat => body!(m::HeartbeatRequest),
        ApiKey::LeaveGroup => body!(m::LeaveGroupRequest),
        ApiKey::SyncGroup => body!(m::SyncGroupRequest),
        ApiKey::DescribeGroups => body!(m::DescribeGroupsRequest),
        ApiKey::ListGroups => body!(m::ListGroupsRequest),
        ApiKey::ApiVersions => body!(m::ApiVersionsRequest),
        ApiKey::CreateTopics => body!(m::CreateTopicsRequest),
        ApiKey::DeleteTopics => body!(m::DeleteTopicsRequest),
        ApiKey::InitProducerId => body!(m::InitProducerIdRequest),
        ApiKey::OffsetForLeaderEpoch => body!(m::OffsetForLeaderEpochRequest),
        ApiKey::DescribeConfigs => body!(m::DescribeConfigsRequest),
        ApiKey::AlterConfigs => body!(m::AlterConfigsRequest),
        ApiKey::CreatePartitions => body!(m::CreatePartitionsRequest),
        ApiKey::IncrementalAlterConfigs => body!(m::IncrementalAlterConfigsRequest),
        ApiKey::DescribeCluster => body!(m::DescribeClusterRequest),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_request(Bytes::copy_from_slice(data)) {
        Ok(Parsed::Request(request)) => decode(&request),
        Ok(Parsed::UnsupportedApiVersions { .. }) | Err(_) => {}
    }
});
