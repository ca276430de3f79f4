//! The queue class: declare, bind, unbind, purge, delete. A queue is a topic of the same name
//! with one partition, created through the controller (so every shard knows it before
//! declare-ok), with its AMQP properties as `weir.queue.*` topic configs; its runtime lives on the
//! owning shard (`queue_owner.rs`). Bindings are the routing table's, the same table Kafka's
//! exchanges use.
//!
//! Runs on the connection's shard; reaches the owner with `on_owner` and the controller with
//! `ControlJob`s.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use amq_protocol::protocol::{queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};

use super::access;
use super::channel::Channel;
use super::connection::{Conn, HandleError};
use super::error::AmqpError;
use super::names;
use super::policy::{DeclareFlags, QueuePolicy, CONFIG_TYPE};
use super::queue_owner::{self, on_owner, QueueSpec};
use crate::metadata::Metadata;
use crate::routing::exchange::{Binding, Destination, RoutingErrorKind};
use crate::routing::table::Change;
use crate::security::acl::Operation;
use crate::shard::controller::TopicError;
use crate::shard::mesh::{reply_channel, ControlJob, NewTopic};
use crate::shard::{Shard, ShardId};

/// Topic configs that make a topic an AMQP queue (and carry its declared properties).
pub const CONFIG_DURABLE: &str = "weir.queue.durable";
pub const CONFIG_EXCLUSIVE: &str = "weir.queue.exclusive";
pub const CONFIG_AUTO_DELETE: &str = "weir.queue.auto-delete";
pub const CONFIG_ARGUMENTS: &str = "weir.queue.arguments";
pub const CONFIG_SINGLE_ACTIVE: &str = "weir.queue.single-active-consumer";

/// Whether topic `name` is an AMQP queue.
pub fn is_queue(metadata: &Metadata, name: &str) -> bool {
    metadata
        .topics
        .get(name)
        .is_some_and(|topic| topic.configs.contains_key(CONFIG_DURABLE))
}

/// Whether topic `name` is a stream queue (`x-queue-type=stream`).
pub fn is_stream(metadata: &Metadata, name: &str) -> bool {
    metadata.topics.get(name).is_some_and(|topic| {
        topic
            .configs
            .get(CONFIG_TYPE)
            .is_some_and(|kind| kind == "stream")
    })
}

/// A queue's declared properties, as its topic configs hold them.
pub fn spec_of(configs: &BTreeMap<String, String>) -> QueueSpec {
    let flag = |name: &str| configs.get(name).is_some_and(|value| value == "true");
    QueueSpec {
        durable: flag(CONFIG_DURABLE),
        exclusive: flag(CONFIG_EXCLUSIVE),
        auto_delete: flag(CONFIG_AUTO_DELETE),
        single_active: flag(CONFIG_SINGLE_ACTIVE),
        arguments: configs.get(CONFIG_ARGUMENTS).cloned().unwrap_or_default(),
        policy: QueuePolicy::from_configs(configs),
    }
}

pub async fn handle(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    method: queue::AMQPMethod,
) -> Result<(), HandleError> {
    let reply = match method {
        queue::AMQPMethod::Declare(declare) => {
            let nowait = declare.nowait;
            let ok = declare_queue(conn, channel, declare).await?;
            (!nowait).then_some(queue::AMQPMethod::DeclareOk(ok))
        }
        queue::AMQPMethod::Bind(bind) => {
            let nowait = bind.nowait;
            check_access(conn, channel, bind.queue.as_str()).await?;
            let binding = binding_to_queue(
                conn,
                channel,
                &bind.queue,
                &bind.exchange,
                &bind.routing_key,
                &bind.arguments,
            )?;
            super::exchange::change_routing(conn, vec![Change::AddBinding(binding)]).await?;
            (!nowait).then_some(queue::AMQPMethod::BindOk(queue::BindOk {}))
        }
        queue::AMQPMethod::Unbind(unbind) => {
            check_access(conn, channel, unbind.queue.as_str()).await?;
            let binding = binding_to_queue(
                conn,
                channel,
                &unbind.queue,
                &unbind.exchange,
                &unbind.routing_key,
                &unbind.arguments,
            )?;
            super::exchange::change_routing(conn, vec![Change::RemoveBinding(binding)]).await?;
            Some(queue::AMQPMethod::UnbindOk(queue::UnbindOk {}))
        }
        queue::AMQPMethod::Purge(purge) => {
            let nowait = purge.nowait;
            let count = purge_queue(conn, channel, purge.queue.as_str()).await?;
            (!nowait).then_some(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                message_count: count,
            }))
        }
        queue::AMQPMethod::Delete(delete) => {
            let nowait = delete.nowait;
            let count = delete_declared(conn, channel, &delete).await?;
            (!nowait).then_some(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                message_count: count,
            }))
        }
        other => {
            return Err(
                AmqpError::command_invalid(format!("unexpected queue method {other:?}")).into(),
            )
        }
    };
    if let Some(reply) = reply {
        conn.send_method(channel.id, AMQPClass::Queue(reply))
            .await?;
    }
    Ok(())
}

/// The core topic of the queue a method names (`names.rs`): an empty name means the channel's
/// last declared queue. A queue that does not exist resolves to its own name (the caller's
/// `owner` answers 404).
pub fn resolve_name(conn: &Conn, channel: &Channel, name: &str) -> Result<String, AmqpError> {
    if !name.is_empty() {
        let metadata = conn.shard.metadata();
        return Ok(names::queue_topic(&metadata, name).unwrap_or_else(|| name.to_string()));
    }
    let last = channel.last_queue.borrow();
    if last.is_empty() {
        return Err(AmqpError::not_found("no previously declared queue"));
    }
    Ok(last.clone())
}

/// The owner of the queue on core topic `topic`, or 404.
pub fn owner(conn: &Conn, topic: &str) -> Result<ShardId, AmqpError> {
    owner_in(&conn.shard.metadata(), topic)
}

/// As [`owner`], in `metadata`.
pub fn owner_in(metadata: &Metadata, topic: &str) -> Result<ShardId, AmqpError> {
    let missing = || {
        let name = names::amqp_name(topic);
        AmqpError::not_found(format!("no queue '{name}' in vhost '/'"))
    };
    if !is_queue(metadata, topic) {
        return Err(missing());
    }
    metadata.owner(topic, 0).ok_or_else(missing)
}

async fn declare_queue(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    declare: queue::Declare,
) -> Result<queue::DeclareOk, HandleError> {
    if super::reply_to::is_reply_queue(declare.queue.as_str()) {
        // As RabbitMQ: every declare of these is passive.
        let name = declare.queue.as_str();
        let (message_count, consumer_count) = super::reply_to::declare(conn, name).await?;
        return Ok(queue::DeclareOk {
            queue: name.into(),
            message_count,
            consumer_count,
        });
    }
    let name = match declare.queue.as_str() {
        "" => generated_name(),
        name if name.starts_with("amq.") && !declare.passive => {
            return Err(AmqpError::access_refused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            ))
            .into())
        }
        name => name.to_string(),
    };
    access::queue(
        conn,
        access::declaring(declare.passive),
        &acl_name(conn, &name),
    )?;
    let flags = DeclareFlags {
        durable: declare.durable,
        exclusive: declare.exclusive,
        auto_delete: declare.auto_delete,
    };
    let policy = QueuePolicy::from_arguments(&declare.arguments, flags)?;
    let spec = QueueSpec {
        durable: declare.durable,
        exclusive: declare.exclusive,
        auto_delete: declare.auto_delete,
        single_active: matches!(
            declare.arguments.inner().get("x-single-active-consumer"),
            Some(AMQPValue::Boolean(true))
        ),
        arguments: canonical_arguments(&declare.arguments),
        policy,
    };
    let topic = topic_for_declare(conn, &name, &spec, declare.passive).await?;
    let shard = owner(conn, &topic)?;
    let queue: Arc<str> = Arc::from(topic.as_str());
    let connection = conn.id;
    let passive = declare.passive;
    let answer = on_owner(&conn.shard, shard, move |shard, reply| {
        let _ = reply.try_send(queue_owner::declare(
            &shard, &queue, spec, connection, passive,
        ));
    })
    .await;
    let (message_count, consumer_count) = answer
        .recv_async()
        .await
        .map_err(|_| AmqpError::internal("the queue's shard did not answer"))??;
    if declare.exclusive && !passive {
        let mut exclusive = conn.exclusive_queues.borrow_mut();
        if !exclusive.contains(&topic) {
            exclusive.push(topic.clone());
        }
    }
    *channel.last_queue.borrow_mut() = topic;
    Ok(queue::DeclareOk {
        queue: name.into(),
        message_count,
        consumer_count,
    })
}

/// The resource a declare of queue `name` is checked on: the queue's core topic, or the one it
/// will get (`names.rs`).
fn acl_name(conn: &Conn, name: &str) -> String {
    let metadata = conn.shard.metadata();
    names::queue_topic(&metadata, name)
        .or_else(|| names::new_queue_topic(&metadata, name).ok())
        .unwrap_or_else(|| name.to_string())
}

/// The core topic of the queue `name` a declare names, created (with the queue's configs)
/// when it does not exist yet; 404 for a passive declare of a missing queue.
async fn topic_for_declare(
    conn: &Conn,
    name: &str,
    spec: &QueueSpec,
    passive: bool,
) -> Result<String, AmqpError> {
    let metadata = conn.shard.metadata();
    if let Some(topic) = names::queue_topic(&metadata, name) {
        return Ok(topic);
    }
    if passive {
        return Err(AmqpError::not_found(format!(
            "no queue '{name}' in vhost '/'"
        )));
    }
    let topic = names::new_queue_topic(&metadata, name)?;
    create_topic(conn, &topic, spec).await?;
    Ok(topic)
}

/// RabbitMQ's server-named queues: `amq.gen-` and 22 URL-safe base64 characters.
fn generated_name() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let random = uuid::Uuid::parse_str(&crate::metadata::new_topic_id())
        .unwrap_or_default()
        .as_u128();
    let suffix: String = (0..22)
        .map(|index| ALPHABET[((random >> (index * 6)) & 63) as usize] as char)
        .collect();
    format!("amq.gen-{suffix}")
}

/// The declare arguments rendered canonically (for the 406 on a redeclaration with other
/// arguments).
fn canonical_arguments(arguments: &FieldTable) -> String {
    if arguments.inner().is_empty() {
        String::new()
    } else {
        format!("{:?}", arguments.inner())
    }
}

/// Creates a queue the broker keeps for itself (a delayed exchange's hold queue), named `topic`
/// in the core, and its runtime on its owner; an existing one is kept.
pub async fn declare_internal(conn: &Conn, topic: &str, spec: QueueSpec) -> Result<(), AmqpError> {
    if !is_queue(&conn.shard.metadata(), topic) {
        create_topic(conn, topic, &spec).await?;
    }
    let shard = owner(conn, topic)?;
    let queue: Arc<str> = Arc::from(topic);
    let answer = on_owner(&conn.shard, shard, move |shard, reply| {
        let _ = reply.try_send(queue_owner::declare(&shard, &queue, spec, 0, false));
    })
    .await;
    answer
        .recv_async()
        .await
        .map_err(|_| AmqpError::internal("the queue's shard did not answer"))??;
    Ok(())
}

async fn create_topic(conn: &Conn, name: &str, spec: &QueueSpec) -> Result<(), AmqpError> {
    let mut configs = BTreeMap::new();
    configs.insert(CONFIG_DURABLE.to_string(), spec.durable.to_string());
    configs.insert(CONFIG_EXCLUSIVE.to_string(), spec.exclusive.to_string());
    configs.insert(CONFIG_AUTO_DELETE.to_string(), spec.auto_delete.to_string());
    configs.insert(CONFIG_ARGUMENTS.to_string(), spec.arguments.clone());
    configs.insert(
        CONFIG_SINGLE_ACTIVE.to_string(),
        spec.single_active.to_string(),
    );
    spec.policy.to_configs(&mut configs);
    if spec.policy.stream {
        // A stream keeps its messages: Kafka retention, from its arguments.
        spec.policy.stream_log_configs(&mut configs);
    } else {
        // A queue is consumed, not retained: Kafka's time and size retention must not drop
        // messages nobody has acknowledged yet.
        configs.insert("retention.ms".to_string(), "-1".to_string());
        configs.insert("retention.bytes".to_string(), "-1".to_string());
    }
    let (reply, answer) = reply_channel();
    let job = ControlJob::CreateTopics {
        topics: vec![NewTopic {
            name: name.to_string(),
            partitions: 1,
            configs,
        }],
        validate_only: false,
        reply,
    };
    controller(conn, job).await?;
    let results = answer
        .recv_async()
        .await
        .map_err(|_| AmqpError::internal("the controller did not answer"))?;
    match results.into_iter().next().map(|(_, result)| result) {
        Some(Ok(())) | Some(Err(TopicError::AlreadyExists(_))) => Ok(()),
        Some(Err(TopicError::Routing {
            kind: RoutingErrorKind::AlreadyExists,
            ..
        })) => Err(AmqpError::precondition(format!(
            "'{name}' is an exchange: Weir's queues and exchanges share one namespace"
        ))),
        Some(Err(TopicError::InvalidName(message))) => Err(AmqpError::precondition(format!(
            "{message}: Weir queue names are 1-249 of [a-zA-Z0-9._-]"
        ))),
        Some(Err(error)) => Err(AmqpError::internal(format!(
            "creating queue '{name}': {error}"
        ))),
        None => Err(AmqpError::internal("the controller answered nothing")),
    }
}

async fn controller(conn: &Conn, job: ControlJob) -> Result<(), AmqpError> {
    conn.shard
        .mesh
        .controller
        .send_async(job)
        .await
        .map_err(|_| AmqpError::internal("the controller is gone"))
}

/// 404 for a missing queue, 405 for another connection's exclusive queue.
async fn check_access(conn: &Rc<Conn>, channel: &Channel, name: &str) -> Result<(), AmqpError> {
    let name = resolve_name(conn, channel, name)?;
    let shard = owner(conn, &name)?;
    let queue: Arc<str> = Arc::from(name.as_str());
    let connection = conn.id;
    on_owner(&conn.shard, shard, move |_, reply| {
        let _ = reply.try_send(queue_owner::access(&queue, connection));
    })
    .await
    .recv_async()
    .await
    .map_err(|_| AmqpError::internal("the queue's shard did not answer"))?
}

fn binding_to_queue(
    conn: &Conn,
    channel: &Channel,
    queue: &amq_protocol::types::ShortString,
    exchange: &amq_protocol::types::ShortString,
    key: &amq_protocol::types::ShortString,
    arguments: &FieldTable,
) -> Result<Binding, AmqpError> {
    let name = resolve_name(conn, channel, queue.as_str())?;
    owner(conn, &name)?;
    if exchange.as_str().is_empty() {
        return Err(AmqpError::access_refused(
            "operation not permitted on the default exchange",
        ));
    }
    let source = names::exchange(&conn.shard.metadata(), exchange.as_str());
    access::queue(conn, Operation::Alter, &name)?;
    access::exchange(conn, Operation::Read, &source)?;
    let mut binding = Binding::new(&source, Destination::Topic(name), key.as_str());
    binding.arguments = super::exchange::binding_arguments(arguments);
    Ok(binding)
}

async fn purge_queue(conn: &Rc<Conn>, channel: &Channel, name: &str) -> Result<u32, AmqpError> {
    let name = resolve_name(conn, channel, name)?;
    access::queue(conn, Operation::Delete, &name)?;
    let shard = owner(conn, &name)?;
    let queue: Arc<str> = Arc::from(name.as_str());
    let connection = conn.id;
    on_owner(&conn.shard, shard, move |_, reply| {
        let purged =
            queue_owner::access(&queue, connection).and_then(|()| queue_owner::purge(&queue));
        let _ = reply.try_send(purged);
    })
    .await
    .recv_async()
    .await
    .map_err(|_| AmqpError::internal("the queue's shard did not answer"))?
}

async fn delete_declared(
    conn: &Rc<Conn>,
    channel: &Channel,
    delete: &queue::Delete,
) -> Result<u32, AmqpError> {
    let name = resolve_name(conn, channel, delete.queue.as_str())?;
    access::queue(conn, Operation::Delete, &name)?;
    let Ok(shard) = owner(conn, &name) else {
        // RabbitMQ answers delete-ok for a queue that does not exist.
        return Ok(0);
    };
    let queue: Arc<str> = Arc::from(name.as_str());
    let (if_unused, if_empty) = (delete.if_unused, delete.if_empty);
    let connection = conn.id;
    let count = on_owner(&conn.shard, shard, move |_, reply| {
        let deleted = queue_owner::access(&queue, connection)
            .and_then(|()| queue_owner::delete(&queue, if_unused, if_empty));
        let _ = reply.try_send(deleted);
    })
    .await
    .recv_async()
    .await
    .map_err(|_| AmqpError::internal("the queue's shard did not answer"))??;
    delete_topic(&conn.shard, &name).await;
    conn.exclusive_queues
        .borrow_mut()
        .retain(|queue| *queue != name);
    Ok(count)
}

/// Deletes an auto-delete queue that lost its last consumer (owner first, then its topic).
pub async fn delete_queue(shard: &Rc<Shard>, name: &str, owner: ShardId) {
    let queue: Arc<str> = Arc::from(name);
    let deleted = on_owner(shard, owner, move |_, reply| {
        let _ = reply.try_send(queue_owner::delete(&queue, false, false).is_ok());
    })
    .await
    .recv_async()
    .await;
    if deleted == Ok(true) {
        delete_topic(shard, name).await;
    }
}

/// Deletes the queue's topic (its log, and every binding to it) through the controller.
pub async fn delete_topic(shard: &Rc<Shard>, name: &str) {
    let (reply, answer) = reply_channel();
    let job = ControlJob::DeleteTopics {
        names: vec![name.to_string()],
        reply,
    };
    if shard.mesh.controller.send_async(job).await.is_ok() {
        let _ = answer.recv_async().await;
    }
}
