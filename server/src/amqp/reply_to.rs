//! Direct reply-to (RabbitMQ's `amq.rabbitmq.reply-to`): an RPC caller consumes the pseudo-queue
//! in no-ack mode, publishes a request with `reply_to = amq.rabbitmq.reply-to`, and the broker
//! rewrites that to a reply name unique to the caller's channel. A reply published to the
//! default exchange with that name as routing key goes straight to the caller's consumer: no
//! queue, no log, nothing stored (a caller that is gone loses it, as with RabbitMQ).
//!
//! A reply name is `amq.rabbitmq.reply-to.<connection>.<channel>.<key>`: the connection id (its
//! top bits are the shard that serves it, `connection.rs`), the channel, and a 128-bit random
//! key drawn when the consumer starts, so that a name cannot be guessed or reused by a later
//! consumer on the same channel.
//!
//! Each shard keeps the reply consumers of its own connections in a `thread_local!` registry,
//! mutated only there. A replier on another shard asks the caller's shard over the mesh
//! (`queue_owner::on_owner`) for the consumer's delivery sink, then sends the delivery on that
//! bounded `flume` channel itself, as a queue's owner does: no shared lock, and a full inbox
//! holds back the replier rather than growing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use amq_protocol::protocol::basic;
use amq_protocol::types::ShortString;

use super::channel::Channel;
use super::connection::Conn;
use super::error::AmqpError;
use super::message::Message;
use super::queue_owner::{on_owner, ConnectionId, Delivery, Outbound};
use crate::shard::ShardId;

/// The pseudo-queue a caller consumes from and names as `reply_to`.
pub const PSEUDO_QUEUE: &str = "amq.rabbitmq.reply-to";
/// Every reply name starts with this.
const REPLY_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// A channel's reply consumer.
#[derive(Clone)]
pub struct ReplyConsumer {
    pub tag: Arc<str>,
    /// The reply name requests from this channel carry.
    pub name: String,
}

/// What the caller's shard knows of one reply consumer.
struct Registered {
    key: String,
    tag: Arc<str>,
    sink: flume::Sender<Outbound>,
}

thread_local! {
    /// (connection, channel) → its reply consumer, for the connections this shard serves.
    static CONSUMERS: RefCell<HashMap<(ConnectionId, u16), Registered>> =
        RefCell::new(HashMap::new());
}

/// Whether `name` is the pseudo-queue or a reply name (both are never real queues).
pub fn is_reply_queue(name: &str) -> bool {
    name == PSEUDO_QUEUE || is_reply_name(name)
}

/// Whether a routing key on the default exchange is a reply name (RabbitMQ's test: the prefix).
pub fn is_reply_name(key: &str) -> bool {
    key.starts_with(REPLY_PREFIX)
}

/// basic.consume on the pseudo-queue: as RabbitMQ, only in no-ack mode and once per channel.
pub fn start(conn: &Conn, channel: &Channel, tag: Arc<str>, no_ack: bool) -> Result<(), AmqpError> {
    if !no_ack {
        return Err(AmqpError::precondition("reply consumer cannot acknowledge"));
    }
    if channel.reply_consumer.borrow().is_some() {
        return Err(AmqpError::precondition("reply consumer already set"));
    }
    let key = crate::metadata::new_topic_id();
    let name = format!("{REPLY_PREFIX}{:x}.{:x}.{key}", conn.id, channel.id);
    CONSUMERS.with(|consumers| {
        consumers.borrow_mut().insert(
            (conn.id, channel.id),
            Registered {
                key,
                tag: tag.clone(),
                sink: conn.sink.clone(),
            },
        )
    });
    *channel.reply_consumer.borrow_mut() = Some(ReplyConsumer { tag, name });
    Ok(())
}

/// The channel's reply consumer ends (basic.cancel, or the channel's end). True if it had one
/// with this tag (`None`: any tag).
pub fn stop(conn: &Conn, channel: &Channel, tag: Option<&str>) -> bool {
    let mut consumer = channel.reply_consumer.borrow_mut();
    let matches = consumer
        .as_ref()
        .is_some_and(|c| tag.is_none_or(|tag| &*c.tag == tag));
    if matches {
        consumer.take();
        CONSUMERS.with(|consumers| consumers.borrow_mut().remove(&(conn.id, channel.id)));
    }
    matches
}

/// A request's properties: `reply_to = amq.rabbitmq.reply-to` becomes the channel's reply name
/// (406 without a reply consumer, as RabbitMQ). `None`: nothing to rewrite.
pub fn rewrite_request(
    channel: &Channel,
    properties: &basic::AMQPProperties,
) -> Result<Option<basic::AMQPProperties>, AmqpError> {
    if properties.reply_to().as_ref().map(ShortString::as_str) != Some(PSEUDO_QUEUE) {
        return Ok(None);
    }
    let Some(consumer) = channel.reply_consumer.borrow().clone() else {
        return Err(AmqpError::precondition(
            "fast reply consumer does not exist",
        ));
    };
    Ok(Some(
        properties
            .clone()
            .with_reply_to(ShortString::from(consumer.name)),
    ))
}

/// Where a reply name points: (shard, connection, channel, key); `None` for a name this broker
/// could not have issued.
fn parse(name: &str, shard_count: usize) -> Option<(ShardId, ConnectionId, u16, String)> {
    let mut parts = name.strip_prefix(REPLY_PREFIX)?.splitn(3, '.');
    let connection = ConnectionId::from_str_radix(parts.next()?, 16).ok()?;
    let channel = u16::from_str_radix(parts.next()?, 16).ok()?;
    let key = parts.next()?.to_string();
    let shard = (connection >> 40) as usize;
    (shard < shard_count).then_some((ShardId(shard), connection, channel, key))
}

/// The consumer a reply name points at, asked of the caller's shard: its sink and tag.
async fn lookup(conn: &Rc<Conn>, name: &str) -> Option<(u16, Arc<str>, flume::Sender<Outbound>)> {
    let (shard, connection, channel, key) = parse(name, conn.shard.mesh.shards.len())?;
    on_owner(&conn.shard, shard, move |_, reply| {
        let found = CONSUMERS.with(|consumers| {
            consumers
                .borrow()
                .get(&(connection, channel))
                .filter(|registered| registered.key == key)
                .map(|registered| (channel, registered.tag.clone(), registered.sink.clone()))
        });
        let _ = reply.try_send(found);
    })
    .await
    .recv_async()
    .await
    .ok()
    .flatten()
}

/// queue.declare of the pseudo-queue or a reply name: as RabbitMQ, always passive; it exists
/// (0 messages, 1 consumer) while its consumer does, else 404.
pub async fn declare(conn: &Rc<Conn>, name: &str) -> Result<(u32, u32), AmqpError> {
    if name == PSEUDO_QUEUE || lookup(conn, name).await.is_some() {
        return Ok((0, 1));
    }
    Err(AmqpError::not_found(format!(
        "no queue '{name}' in vhost '/'"
    )))
}

/// A publish to the default exchange with a reply name as routing key: delivered to the
/// caller's consumer if it is still there, else dropped. The publish itself routes to no queue
/// (a mandatory one is returned, as RabbitMQ 3.10 returns it even when delivered).
pub async fn deliver(conn: &Rc<Conn>, name: &str, message: &Arc<Message>) {
    let Some((channel, consumer_tag, sink)) = lookup(conn, name).await else {
        return;
    };
    let delivery = Delivery {
        channel,
        consumer_tag,
        queue: Arc::from(PSEUDO_QUEUE),
        offset: -1,
        redelivered: false,
        no_ack: true,
        message: message.clone(),
        grant_epoch: None,
    };
    // Bounded: a caller that does not read holds back its repliers.
    let _ = sink.send_async(Outbound::Deliver(delivery)).await;
}

/// Whether a delivery from the pseudo-queue may still go out: its consumer was not cancelled.
pub fn still_consuming(channel: &Channel, tag: &str) -> bool {
    channel
        .reply_consumer
        .borrow()
        .as_ref()
        .is_some_and(|consumer| &*consumer.tag == tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_this_broker_could_issue_parse() {
        let name = format!("{REPLY_PREFIX}{:x}.{:x}.k3y.with.dots", (1u64 << 40) | 7, 5);
        assert_eq!(
            parse(&name, 2),
            Some((ShardId(1), (1 << 40) | 7, 5, "k3y.with.dots".to_string()))
        );
        assert_eq!(parse(&name, 1), None, "a shard the broker does not have");
        for bad in [
            "amq.rabbitmq.reply-to",
            "amq.rabbitmq.reply-to.",
            "amq.rabbitmq.reply-to.zz.1.k",
            "amq.rabbitmq.reply-to.1.10000.k",
            "amq.rabbitmq.reply-to.1.1",
            "other.1.1.k",
        ] {
            assert_eq!(parse(bad, 2), None, "{bad}");
        }
    }
}
