//! DescribeCluster (v0-v1): the shards as brokers, shard 0 as controller. Needs Describe on the
//! cluster (CLUSTER_AUTHORIZATION_FAILED otherwise), as in Kafka.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_codes as code;
use super::metadata::{brokers, CLUSTER_ID};
use crate::security::acl::{Access, Operation};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    _request: DescribeClusterRequest,
    listener: usize,
    access: Access,
) -> DescribeClusterResponse {
    let mut response = DescribeClusterResponse::default();
    if version >= 1 {
        response.endpoint_type = 1;
    }
    // Kafka: Describe on the cluster.
    if !access.allows_cluster(Operation::Describe) {
        response.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        return response;
    }
    response.cluster_id = StrBytes::from_static_str(CLUSTER_ID);
    response.controller_id = BrokerId(0);
    response.brokers = brokers(shard, listener)
        .into_iter()
        .map(|broker| {
            let mut out = DescribeClusterBroker::default();
            out.broker_id = broker.node_id;
            out.host = broker.host;
            out.port = broker.port;
            out
        })
        .collect();
    response
}
