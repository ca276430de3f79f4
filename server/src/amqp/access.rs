//! ACLs for AMQP. Weir's queues are logs and its exchanges live beside topics in the core's one
//! namespace, so AMQP names its resources as Kafka does those: a queue is the Topic resource of
//! its log (its core topic, the queue's own name unless `names.rs` stored it under an alias), an
//! exchange the Topic resource of its core name. An ACL on topic `orders` so governs a Kafka
//! producer and an AMQP publisher to queue `orders` alike.
//!
//! | AMQP method                               | operation | resource                       |
//! |-------------------------------------------|-----------|--------------------------------|
//! | queue.declare, exchange.declare           | Create    | the queue, the exchange        |
//! | the same with `passive`                   | Describe  | the queue, the exchange        |
//! | queue.delete, queue.purge, exchange.delete| Delete    | the queue, the exchange        |
//! | queue.bind/unbind, exchange.bind/unbind   | Alter     | the destination                |
//! |                                           | Read      | the source exchange            |
//! | basic.publish                             | Write     | the exchange; the queue for    |
//! |                                           |           | the default exchange           |
//! | basic.consume, basic.get                  | Read      | the queue                      |
//!
//! A refusal is 403 ACCESS_REFUSED on the channel, with RabbitMQ's wording. Runs on the
//! connection's shard, over its read-only metadata; with the authorizer off every check is one
//! branch.

use super::connection::Conn;
use super::error::AmqpError;
use crate::security::acl::{Access, Operation};

/// What this connection may do now (its principal, the current bindings).
fn access(conn: &Conn) -> Access {
    let shard = &conn.shard;
    Access::new(
        &shard.config.authorizer,
        shard.metadata(),
        &conn.session,
        &conn.peer_host,
    )
}

/// 403 unless the connection's principal may do `operation` on topic resource `topic`; `what`
/// names it for the message ("queue 'orders'").
pub fn check(conn: &Conn, operation: Operation, topic: &str, what: &str) -> Result<(), AmqpError> {
    if access(conn).allows_topic(operation, topic) {
        return Ok(());
    }
    let user = conn.session.principal();
    Err(AmqpError::access_refused(format!(
        "access to {what} in vhost '/' refused for user '{}' ({operation:?})",
        user.name()
    )))
}

/// `check` on the queue of core topic `topic`.
pub fn queue(conn: &Conn, operation: Operation, topic: &str) -> Result<(), AmqpError> {
    let what = format!("queue '{}'", super::names::amqp_name(topic));
    check(conn, operation, topic, &what)
}

/// `check` on the exchange of core name `core`.
pub fn exchange(conn: &Conn, operation: Operation, core: &str) -> Result<(), AmqpError> {
    let what = format!("exchange '{}'", super::names::amqp_name(core));
    check(conn, operation, core, &what)
}

/// A declare's operation: Create, or Describe for a passive one.
pub fn declaring(passive: bool) -> Operation {
    if passive {
        Operation::Describe
    } else {
        Operation::Create
    }
}

/// basic.publish's check: Write on the exchange, or on the queue the default exchange names.
pub fn publish(conn: &Conn, exchange: &str, routing_key: &str) -> Result<(), AmqpError> {
    // The publish path pays one branch when the authorizer is off.
    if !conn.shard.config.authorizer.enabled {
        return Ok(());
    }
    let metadata = conn.shard.metadata();
    if exchange.is_empty() {
        let topic = super::names::queue_topic(&metadata, routing_key);
        return queue(conn, Operation::Write, &topic.unwrap_or(routing_key.into()));
    }
    let core = super::names::exchange(&metadata, exchange);
    self::exchange(conn, Operation::Write, &core)
}
