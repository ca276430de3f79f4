//! FindCoordinator (v0-v4): a group's coordinator is the broker (shard) `groups::owner_shard`.
//! Transaction coordinators do not exist in Weir (COORDINATOR_NOT_AVAILABLE).

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::error_codes as code;
use crate::groups::owner_shard;
use crate::security::acl::{Access, Operation, ResourceType};
use crate::shard::Shard;
use crate::shard::ShardId;

/// Kafka's key types: a group, a transactional id.
const GROUP_KEY: i8 = 0;
const TRANSACTION_KEY: i8 = 1;

/// (error, node id, host, port) for one key.
/// `listener`: the Kafka listener the client came in through, whose ports are advertised.
fn locate(
    shard: &Shard,
    key: &str,
    key_type: i8,
    access: &Access,
    listener: usize,
) -> (i16, i32, StrBytes, i32) {
    let failed = |error_code| (error_code, -1, StrBytes::default(), -1);
    // Kafka: Describe on the group or the transactional id, before anything else.
    match key_type {
        GROUP_KEY if !access.allows_group(Operation::Describe, key) => {
            return failed(code::GROUP_AUTHORIZATION_FAILED)
        }
        TRANSACTION_KEY
            if !access.allows(Operation::Describe, ResourceType::TransactionalId, key) =>
        {
            return failed(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
        }
        GROUP_KEY => {}
        _ => return failed(code::COORDINATOR_NOT_AVAILABLE),
    }
    let owner = shard.advertised_broker(ShardId(owner_shard(key, shard.count)));
    (
        code::NONE,
        owner as i32,
        StrBytes::from_string(shard.config.advertised_host.clone()),
        shard.advertised_port(listener, owner) as i32,
    )
}

pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: FindCoordinatorRequest,
    listener: usize,
    access: Access,
) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        for key in request.coordinator_keys {
            let (error_code, node, host, port) =
                locate(shard, key.as_str(), request.key_type, &access, listener);
            let mut coordinator = Coordinator::default();
            coordinator.key = key;
            coordinator.node_id = BrokerId(node);
            coordinator.host = host;
            coordinator.port = port;
            coordinator.error_code = error_code;
            response.coordinators.push(coordinator);
        }
        return response;
    }
    let (error_code, node, host, port) = locate(
        shard,
        request.key.as_str(),
        request.key_type,
        &access,
        listener,
    );
    response.error_code = error_code;
    response.node_id = BrokerId(node);
    response.host = host;
    response.port = port;
    response
}
