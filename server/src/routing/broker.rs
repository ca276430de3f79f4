//! Where routing meets the broker core: produce diversion, the controller's handling of `weir.*`
//! configs, and exchanges in Metadata. The broker's handlers call these at one place each.
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
use super::partitioner::Partitioner;
use super::router::route_produce;
use super::table::{Change, RoutingTable};
use crate::kafka::error_codes as code;
use crate::kafka::partition_ops;
use crate::metadata::Metadata;
use crate::shard::mesh::{reply_channel, Job, ProduceOutcome};
use crate::shard::Shard;

thread_local! {
    static PARTITIONER: RefCell<Partitioner> = RefCell::new(Partitioner::new());
    static UNROUTABLE_RECORDS: Cell<u64> = const { Cell::new(0) };
}

/// Records this shard dropped because no binding took them (RabbitMQ's unroutable messages).
pub fn unroutable_records() -> u64 {
    UNROUTABLE_RECORDS.with(Cell::get)
}

fn outcome(error_code: i16) -> ProduceOutcome {
    ProduceOutcome {
        error_code,
        base_offset: -1,
        log_start_offset: -1,
    }
}

fn ready(outcome: ProduceOutcome) -> flume::Receiver<ProduceOutcome> {
    let (reply, answer) = reply_channel();
    // A fresh one-slot channel: this send cannot fail or block.
    let _ = reply.try_send(outcome);
    answer
}

/// Routes one partition of a produce request naming an exchange. `None` when `topic` is not an
/// exchange (the caller appends as usual); otherwise the receiver of the partition's answer.
///
/// The destination appends are issued here, in the caller's dispatch phase (local appends at once,
/// remote ones queued on the owners' bounded inboxes, whose fullness is backpressure), so the
/// records of one connection reach each destination in produce order. The answer comes when every
/// destination has answered as `acks` asks (-1: durable), with the first error if any failed.
/// An exchange has no log, so the answer carries base offset -1.
pub async fn produce(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    records: Option<&Bytes>,
    acks: i16,
) -> Option<flume::Receiver<ProduceOutcome>> {
    let metadata = shard.metadata();
    if !metadata.routing.is_exchange(topic) {
        return None;
    }
    if usize::try_from(partition).map_or(true, |partition| partition >= shard.count) {
        return Some(ready(outcome(code::UNKNOWN_TOPIC_OR_PARTITION)));
    }
    let Some(records) = records else {
        return Some(ready(outcome(code::CORRUPT_MESSAGE)));
    };
    let partition_count = |name: &str| {
        metadata
            .topics
            .get(name)
            .and_then(|meta| u32::try_from(meta.partitions.len()).ok())
    };
    let routed = PARTITIONER.with(|partitioner| {
        route_produce(
            &metadata.routing,
            topic,
            records,
            partition_count,
            &mut partitioner.borrow_mut(),
        )
    });
    let routed = match routed {
        Ok(routed) => routed,
        Err(error) => {
            tracing::debug!(exchange = topic, %error, "produce to exchange refused");
            return Some(ready(outcome(error.kafka_code())));
        }
    };
    if routed.unroutable_records > 0 {
        UNROUTABLE_RECORDS.with(|count| count.set(count.get() + routed.unroutable_records));
        tracing::debug!(
            exchange = topic,
            records = routed.unroutable_records,
            "unroutable records dropped"
        );
    }

    enum Pending {
        Local(partition_ops::Appended),
        Remote(flume::Receiver<ProduceOutcome>),
    }
    let mut pending = Vec::with_capacity(routed.batches.len());
    for (destination, batch) in routed.batches {
        let index = destination.partition as i32;
        match metadata.owner(&destination.topic, index) {
            None => pending.push(Pending::Remote(ready(outcome(
                code::UNKNOWN_TOPIC_OR_PARTITION,
            )))),
            Some(owner) if owner == shard.id => pending.push(Pending::Local(
                partition_ops::append(shard, &destination.topic, index, Some(&batch)),
            )),
            Some(owner) => {
                let (reply, answer) = reply_channel();
                let job = Job::Produce {
                    topic: destination.topic,
                    partition: index,
                    records: Some(batch),
                    acks,
                    reply,
                };
                let sent = shard.mesh.shards[owner].send_async(job).await;
                pending.push(Pending::Remote(match sent {
                    Ok(()) => answer,
                    Err(_) => ready(outcome(code::NOT_LEADER_OR_FOLLOWER)),
                }));
            }
        }
    }
    let (reply, answer) = reply_channel();
    glommio::spawn_local(async move {
        let mut combined = outcome(code::NONE);
        for destination in pending {
            let result = match destination {
                Pending::Local(appended) => partition_ops::finish_append(appended, acks).await,
                Pending::Remote(answer) => answer
                    .recv_async()
                    .await
                    .unwrap_or(outcome(code::NOT_LEADER_OR_FOLLOWER)),
            };
            if combined.error_code == code::NONE && result.error_code != code::NONE {
                combined.error_code = result.error_code;
            }
        }
        let _ = reply.send_async(combined).await;
    })
    .detach();
    Some(answer)
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

/// Applies routing changes on the controller, or only checks them when `validate_only`.
/// Returns the Kafka error code and message on refusal.
pub fn apply(
    routing: &mut RoutingController,
    changes: &[Change],
    validate_only: bool,
) -> Result<(), (i16, String)> {
    if changes.is_empty() {
        return Ok(());
    }
    if validate_only {
        let mut scratch: RoutingTable = routing.table().clone();
        return scratch
            .apply(changes)
            .map(|_| ())
            .map_err(|error| (error.error.kafka_code(), error.error.to_string()));
    }
    routing.apply(changes).map(|_| ()).map_err(|error| {
        if matches!(error, super::controller::ControllerError::Store(_)) {
            tracing::error!(%error, "persisting routing declarations failed");
        }
        (error.kafka_code(), error.to_string())
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
) -> Result<CreateRouting, (i16, String)> {
    let pairs: Vec<(&str, Option<&str>)> = configs
        .iter()
        .map(|(name, value)| (name.as_str(), Some(value.as_str())))
        .collect();
    let plan = config::plan_create(name, &pairs, routing.table())
        .map_err(|error| (error.kafka_code(), error.to_string()))?;
    let taken = if plan.exchange {
        metadata.topics.contains_key(name).then_some("a topic")
    } else {
        routing.table().is_exchange(name).then_some("an exchange")
    };
    if let Some(what) = taken {
        return Err((
            code::TOPIC_ALREADY_EXISTS,
            format!("{name} already exists as {what}"),
        ));
    }
    if plan.exchange {
        if routing.table().is_exchange(name) {
            return Err((
                code::TOPIC_ALREADY_EXISTS,
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
) -> Result<Vec<Change>, (i16, String)> {
    let operations: Vec<(&str, ConfigOperation)> = operations
        .iter()
        .map(|(config, operation)| (config.as_str(), operation.clone()))
        .collect();
    config::plan_alter(name, &operations, routing.table())
        .map_err(|error| (error.kafka_code(), error.to_string()))
}
