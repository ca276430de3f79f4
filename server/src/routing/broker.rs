//! Where routing meets the broker core: produce to an exchange, the controller's handling of `weir.*`
//! configs, and exchanges in Metadata. The broker's handlers call these at one place each.
//!
//! Core module: imports no protocol; refusals are domain errors the protocol layer maps.
//!
//! Shards: `produce` runs on whichever shard received the produce request, with that shard's
//! metadata snapshot (which carries its routing table copy, `Metadata::routing`); the controller
//! functions run on the controller shard only, against the single `RoutingController`.
//! Shard-local state (the keyless round-robin counters, the unroutable count) lives in thread
//! locals: a shard is one thread, so they are never shared.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::Bytes;

use super::config::{self, ConfigOperation};
use super::controller::RoutingController;
use super::exchange::RoutingErrorKind;
use super::partitioner::Partitioner;
use super::router::{route_produce, RouteError, RoutedProduce};
use super::table::{Change, RoutingTable};
use crate::metadata::Metadata;
use crate::partition::{PartitionError, PendingAppend};
use crate::shard::mesh::reply_channel;
use crate::shard::Shard;

thread_local! {
    static PARTITIONER: RefCell<Partitioner> = RefCell::new(Partitioner::new());
    static UNROUTABLE_RECORDS: Cell<u64> = const { Cell::new(0) };
}

/// Records this shard dropped because no binding took them (RabbitMQ's unroutable messages).
pub fn unroutable_records() -> u64 {
    UNROUTABLE_RECORDS.with(Cell::get)
}

/// Why a produce to an exchange failed: routing refused the records, or a destination partition
/// failed (the first one that did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeProduceError {
    Refused(RoutingErrorKind),
    Partition(PartitionError),
}

/// The answer to one partition of a produce to an exchange. An exchange has no log, so there is
/// no base offset to report.
pub type ExchangeOutcome = Result<(), ExchangeProduceError>;

fn ready(outcome: ExchangeOutcome) -> flume::Receiver<ExchangeOutcome> {
    let (reply, answer) = reply_channel();
    // A fresh one-slot channel: this send cannot fail or block.
    let _ = reply.try_send(outcome);
    answer
}

fn partition_failed(error: PartitionError) -> flume::Receiver<ExchangeOutcome> {
    ready(Err(ExchangeProduceError::Partition(error)))
}

/// Routes one partition of a produce request naming an exchange (the caller has checked that
/// `exchange` is one, in `metadata`); returns the receiver of the partition's answer.
///
/// The destination appends are issued here, in the caller's dispatch phase (local appends at once,
/// remote ones queued on the owners' bounded inboxes, whose fullness is backpressure), so the
/// records of one connection reach each destination in produce order. The answer comes when every
/// destination has answered as `durable` asks, with the first error if any failed.
pub async fn produce(
    shard: &Rc<Shard>,
    metadata: &Metadata,
    exchange: &str,
    partition: i32,
    records: Option<&Bytes>,
    durable: bool,
) -> flume::Receiver<ExchangeOutcome> {
    if usize::try_from(partition).map_or(true, |partition| partition >= shard.count) {
        return partition_failed(PartitionError::UnknownPartition);
    }
    let Some(records) = records else {
        return partition_failed(PartitionError::CorruptBatch);
    };
    let routed = match route(metadata, exchange, records) {
        Ok(routed) => routed,
        Err(error) => {
            tracing::debug!(exchange, %error, "produce to exchange refused");
            return ready(Err(ExchangeProduceError::Refused(error.kind())));
        }
    };
    let mut pending = Vec::with_capacity(routed.batches.len());
    for (destination, batch) in routed.batches {
        let index = destination.partition as i32;
        pending.push(
            PendingAppend::issue(
                shard,
                metadata,
                &destination.topic,
                index,
                Some(crate::partition::owned_records(batch)),
                durable,
            )
            .await,
        );
    }
    let (reply, answer) = reply_channel();
    glommio::spawn_local(async move {
        let mut combined = Ok(());
        for destination in pending {
            let outcome = destination.finish(durable).await;
            if let (Ok(()), Some(error)) = (combined, outcome.error) {
                combined = Err(ExchangeProduceError::Partition(error));
            }
        }
        let _ = reply.send_async(combined).await;
    })
    .detach();
    answer
}

/// Splits `records` per destination partition with this shard's partitioner, and counts what no
/// binding took.
fn route(
    metadata: &Metadata,
    exchange: &str,
    records: &Bytes,
) -> Result<RoutedProduce, RouteError> {
    let partition_count = |name: &str| {
        metadata
            .topics
            .get(name)
            .and_then(|meta| u32::try_from(meta.partitions.len()).ok())
    };
    let routed = PARTITIONER.with(|partitioner| {
        route_produce(
            &metadata.routing,
            exchange,
            records,
            partition_count,
            &mut partitioner.borrow_mut(),
        )
    })?;
    if routed.unroutable_records > 0 {
        UNROUTABLE_RECORDS.with(|count| count.set(count.get() + routed.unroutable_records));
        tracing::debug!(
            exchange,
            records = routed.unroutable_records,
            "unroutable records dropped"
        );
    }
    Ok(routed)
}

/// The partition leaders an exchange shows in Metadata: one partition per shard, led by it, so
/// producers spread over the cores and every shard routes what it receives.
pub fn exchange_partition_leaders(shard_count: usize) -> impl Iterator<Item = (i32, i32)> {
    (0..shard_count).map(|shard| (shard as i32, shard as i32))
}

/// Splits CreateTopics configs into Kafka ones (stored with the topic) and routing ones.
pub fn split_configs(
    configs: BTreeMap<String, String>,
) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let mut kafka = BTreeMap::new();
    let mut routing = Vec::new();
    for (name, value) in configs {
        if config::is_routing_config(&name) {
            routing.push((name, value));
        } else {
            kafka.insert(name, value);
        }
    }
    (kafka, routing)
}

/// A refused routing change as the controller reports it: the kind of refusal and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RoutingErrorKind,
    pub message: String,
}

impl Refusal {
    fn new(kind: RoutingErrorKind, message: String) -> Refusal {
        Refusal { kind, message }
    }
}

/// Applies routing changes on the controller, or only checks them when `validate_only`.
pub fn apply(
    routing: &mut RoutingController,
    changes: &[Change],
    validate_only: bool,
) -> Result<(), Refusal> {
    if changes.is_empty() {
        return Ok(());
    }
    if validate_only {
        let mut scratch: RoutingTable = routing.table().clone();
        return scratch
            .apply(changes)
            .map(|_| ())
            .map_err(|error| Refusal::new(error.error.kind(), error.error.to_string()));
    }
    routing.apply(changes).map(|_| ()).map_err(|error| {
        if matches!(error, super::controller::ControllerError::Store(_)) {
            tracing::error!(%error, "persisting routing declarations failed");
        }
        Refusal::new(error.kind(), error.to_string())
    })
}

/// What the controller does with a CreateTopics entry's routing configs.
pub enum CreateRouting {
    /// The entry declares an exchange: apply these changes instead of creating a topic.
    Exchange(Vec<Change>),
    /// A topic, with these bindings to add once it is created (possibly none).
    Topic(Vec<Change>),
}

/// Reads the routing configs of one CreateTopics entry against the authoritative table.
pub fn plan_create(
    routing: &RoutingController,
    metadata: &Metadata,
    name: &str,
    configs: &[(String, String)],
) -> Result<CreateRouting, Refusal> {
    let pairs: Vec<(&str, Option<&str>)> = configs
        .iter()
        .map(|(name, value)| (name.as_str(), Some(value.as_str())))
        .collect();
    let plan = config::plan_create(name, &pairs, routing.table())
        .map_err(|error| Refusal::new(error.kind(), error.to_string()))?;
    let taken = if plan.exchange {
        metadata.topics.contains_key(name).then_some("a topic")
    } else {
        routing.table().is_exchange(name).then_some("an exchange")
    };
    if let Some(what) = taken {
        return Err(Refusal::new(
            RoutingErrorKind::AlreadyExists,
            format!("{name} already exists as {what}"),
        ));
    }
    if plan.exchange {
        if routing.table().is_exchange(name) {
            return Err(Refusal::new(
                RoutingErrorKind::AlreadyExists,
                format!("exchange {name} already exists"),
            ));
        }
        Ok(CreateRouting::Exchange(plan.changes))
    } else {
        Ok(CreateRouting::Topic(plan.changes))
    }
}

/// The changes a deleted name means: an exchange is deleted with its bindings; a deleted topic
/// loses the bindings to it.
pub fn delete_changes(routing: &RoutingController, name: &str) -> Vec<Change> {
    if routing.table().is_exchange(name) {
        vec![Change::DeleteExchange {
            name: name.to_string(),
        }]
    } else {
        vec![Change::ForgetTopic {
            name: name.to_string(),
        }]
    }
}

/// The changes IncrementalAlterConfigs/AlterConfigs operations on routing configs mean.
pub fn alter_changes(
    routing: &RoutingController,
    name: &str,
    operations: &[(String, ConfigOperation)],
) -> Result<Vec<Change>, Refusal> {
    let operations: Vec<(&str, ConfigOperation)> = operations
        .iter()
        .map(|(config, operation)| (config.as_str(), operation.clone()))
        .collect();
    config::plan_alter(name, &operations, routing.table())
        .map_err(|error| Refusal::new(error.kind(), error.to_string()))
}
