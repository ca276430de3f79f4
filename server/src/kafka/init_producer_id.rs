//! InitProducerId (v0-v4): unique producer ids from a persistent counter on the controller.
//! Idempotent dedup itself is done by the engine per partition. A producer that asks to bump its
//! epoch (v3+, KIP-360) keeps its id with epoch+1. Transactions are not supported.
//!
//! ACLs as in Kafka: a transactional id needs Write on it (TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
//! checked before Weir refuses transactions); an idempotent producer needs IdempotentWrite on the
//! cluster or Write on some topic (CLUSTER_AUTHORIZATION_FAILED).

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::error_codes as code;
use crate::security::acl::{Access, Operation, ResourceType};
use crate::shard::mesh::{reply_channel, ControlJob};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    _version: i16,
    request: InitProducerIdRequest,
    access: Access,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    if let Some(id) = request
        .transactional_id
        .as_ref()
        .filter(|id| !id.0.is_empty())
    {
        let writable = access.allows(Operation::Write, ResourceType::TransactionalId, &id.0);
        response.error_code = if writable {
            code::INVALID_REQUEST
        } else {
            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        };
        return response;
    }
    if !access.allows_cluster(Operation::IdempotentWrite)
        && !access.allows_some(Operation::Write, ResourceType::Topic)
    {
        response.error_code = code::CLUSTER_AUTHORIZATION_FAILED;
        return response;
    }
    if request.producer_id.0 >= 0 && (0..i16::MAX - 1).contains(&request.producer_epoch) {
        response.producer_id = request.producer_id;
        response.producer_epoch = request.producer_epoch + 1;
        return response;
    }
    let (reply, answer) = reply_channel();
    let allocated = match shard
        .mesh
        .controller
        .send_async(ControlJob::AllocateProducerId { reply })
        .await
    {
        Ok(()) => answer
            .recv_async()
            .await
            .map_or(Err(code::COORDINATOR_NOT_AVAILABLE), |allocated| {
                allocated.map_err(|error| code::from_topic_error(&error))
            }),
        Err(_) => Err(code::COORDINATOR_NOT_AVAILABLE),
    };
    match allocated {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(error_code) => response.error_code = error_code,
    }
    response
}
