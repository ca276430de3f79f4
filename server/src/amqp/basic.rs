//! The basic class: qos, consume, cancel, publish (routing through the shared table, mandatory
//! returns), deliver (the connection's delivery task), get, ack / nack / reject, recover.
//!
//! Runs on the connection's shard. Queues are reached on their owner (`queue_owner.rs`);
//! deliveries come back over the connection's bounded `flume` inbox from whichever shard owns
//! the queue. Delivery tags are per channel; the channel maps each to (queue, offset).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass};
use bytes::BytesMut;

use super::channel::{Channel, Publishing, QueueAt, Unacked};
use super::connection::{Conn, HandleError};
use super::error::{AmqpError, NO_ROUTE};
use super::exchange::value_text;
use super::frame;
use super::message::Message;
use super::policy::StreamOffset;
use super::queue::{is_queue, is_stream, owner, resolve_name};
use super::queue_owner::{
    self, on_owner, owner_key, stream, ConsumerSpec, Delivery, Outbound, Settle,
};
use crate::metadata::Metadata;
use crate::partition::PendingAppend;
use crate::security::acl::Operation;
use crate::shard::Shard;

/// The answer a publish waits for before its confirm: stored (or not) in one destination.
pub enum Stored {
    /// A queue on this shard: stored once its log has `offset` written (`durable`: on the
    /// device). Waited on the log itself, without a task or a channel per message.
    Log {
        log: weir_engine::Log,
        offset: i64,
        durable: bool,
    },
    /// Another shard, or a plain topic, answers here.
    Answer(flume::Receiver<Result<(), AmqpError>>),
    /// Answered already.
    Done(Result<(), AmqpError>),
}

impl Stored {
    pub async fn wait(self) -> Result<(), AmqpError> {
        match self {
            Stored::Log {
                log,
                offset,
                durable,
            } => queue_owner::wait_stored(&log, offset, durable).await,
            Stored::Answer(answer) => answer.recv_async().await.unwrap_or_else(|_| Err(gone())),
            Stored::Done(stored) => stored,
        }
    }

    /// Whether it is stored by now (`Some(true)`), failed (`Some(false)`) or not yet (`None`),
    /// without waiting.
    pub async fn settled(&mut self) -> Option<bool> {
        match self {
            Stored::Log {
                log,
                offset,
                durable,
            } => {
                let wait = queue_owner::wait_stored(log, *offset, *durable);
                futures_lite::future::poll_once(wait)
                    .await
                    .map(|stored| stored.is_ok())
            }
            Stored::Answer(answer) => {
                let stored = match answer.try_recv() {
                    Ok(stored) => stored,
                    Err(flume::TryRecvError::Empty) => return None,
                    Err(flume::TryRecvError::Disconnected) => Err(gone()),
                };
                let ok = stored.is_ok();
                *self = Stored::Done(stored);
                Some(ok)
            }
            Stored::Done(stored) => Some(stored.is_ok()),
        }
    }
}

fn gone() -> AmqpError {
    AmqpError::internal("the queue's shard is gone")
}

pub async fn handle(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    method: basic::AMQPMethod,
) -> Result<(), HandleError> {
    match method {
        basic::AMQPMethod::Publish(publish) => {
            conn.published.set(true);
            if publish.immediate {
                return Err(AmqpError::not_implemented(60, 40, "immediate=true").into());
            }
            *channel.content.borrow_mut() = Some(Publishing {
                publish,
                header: None,
                body: Default::default(),
            });
            Ok(())
        }
        basic::AMQPMethod::Qos(qos) => set_qos(conn, channel, qos).await,
        basic::AMQPMethod::Consume(consume) => start_consumer(conn, channel, consume).await,
        basic::AMQPMethod::Cancel(cancel) => cancel_consumer(conn, channel, cancel).await,
        basic::AMQPMethod::Get(get) => get_one(conn, channel, get).await,
        basic::AMQPMethod::Ack(ack) => {
            let taken = take_tags(channel, ack.delivery_tag, ack.multiple)?;
            settle_or_hold(conn, channel, taken, Settle::Ack).await;
            Ok(())
        }
        basic::AMQPMethod::Nack(nack) => {
            let taken = take_tags(channel, nack.delivery_tag, nack.multiple)?;
            refuse_on_streams(conn, &taken, 120)?;
            settle_or_hold(conn, channel, taken, requeue_or_discard(nack.requeue)).await;
            Ok(())
        }
        basic::AMQPMethod::Reject(reject) => {
            let taken = take_tags(channel, reject.delivery_tag, false)?;
            refuse_on_streams(conn, &taken, 90)?;
            settle_or_hold(conn, channel, taken, requeue_or_discard(reject.requeue)).await;
            Ok(())
        }
        basic::AMQPMethod::Recover(basic::Recover { requeue: false })
        | basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue: false }) => {
            // As RabbitMQ: redelivering to the same consumer only is not implemented (540).
            Err(AmqpError::not_implemented(60, 110, "requeue=false").into())
        }
        basic::AMQPMethod::Recover(_) | basic::AMQPMethod::RecoverAsync(_) => {
            let taken: Vec<_> = std::mem::take(&mut *channel.unacked.borrow_mut())
                .into_iter()
                .collect();
            let method_id = if matches!(method, basic::AMQPMethod::Recover(_)) {
                110
            } else {
                100
            };
            refuse_on_streams(conn, &taken, method_id)?;
            settle_all(conn, channel, taken, Settle::Requeue).await;
            if matches!(method, basic::AMQPMethod::Recover(_)) {
                let ok = basic::AMQPMethod::RecoverOk(basic::RecoverOk {});
                conn.send_method(channel.id, AMQPClass::Basic(ok)).await?;
            }
            Ok(())
        }
        other => {
            Err(AmqpError::command_invalid(format!("unexpected basic method {other:?}")).into())
        }
    }
}

/// RabbitMQ 3.10: global=false sets the prefetch of consumers started later and lifts any
/// global limit; global=true sets the channel's shared limit (`channel_credit.rs`).
async fn set_qos(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    qos: basic::Qos,
) -> Result<(), HandleError> {
    if qos.global {
        super::channel_credit::set_limit(conn, channel, qos.prefetch_count).await;
    } else {
        channel.prefetch.set(qos.prefetch_count);
        super::channel_credit::set_limit(conn, channel, 0).await;
    }
    let ok = basic::AMQPMethod::QosOk(basic::QosOk {});
    conn.send_method(channel.id, AMQPClass::Basic(ok)).await?;
    Ok(())
}

fn requeue_or_discard(requeue: bool) -> Settle {
    if requeue {
        Settle::Requeue
    } else {
        Settle::Discard
    }
}

/// In tx mode settlements wait for tx.commit (`tx.rs`); otherwise they go now.
async fn settle_or_hold(
    conn: &Rc<Conn>,
    channel: &Channel,
    taken: Vec<(u64, Unacked)>,
    how: Settle,
) {
    if let Some(taken) = super::tx::hold_settle(channel, taken, how) {
        settle_all(conn, channel, taken, how).await;
    }
}

/// The deliveries `tag` names: itself, or with `multiple` every one up to it (0 = all), with
/// their tags (a rolled-back transaction puts them back).
fn take_tags(
    channel: &Channel,
    tag: u64,
    multiple: bool,
) -> Result<Vec<(u64, Unacked)>, AmqpError> {
    let mut unacked = channel.unacked.borrow_mut();
    if multiple {
        if tag != 0 && !unacked.contains_key(&tag) {
            return Err(AmqpError::precondition(format!(
                "unknown delivery tag {tag}"
            )));
        }
        let keep = if tag == 0 {
            std::collections::BTreeMap::new()
        } else {
            unacked.split_off(&(tag + 1))
        };
        let taken = std::mem::replace(&mut *unacked, keep);
        return Ok(taken.into_iter().collect());
    }
    unacked
        .remove(&tag)
        .map(|one| vec![(tag, one)])
        .ok_or_else(|| AmqpError::precondition(format!("unknown delivery tag {tag}")))
}

/// Settles deliveries on their queues' owners, one message per queue. Not awaited: acks need
/// no answer, and the owner applies them in arrival order.
pub async fn settle_all(
    conn: &Rc<Conn>,
    channel: &Channel,
    taken: Vec<(u64, Unacked)>,
    how: Settle,
) {
    let counted = taken.iter().filter(|(_, unacked)| unacked.counted).count();
    let by_queue = group_by_queue(taken);
    let owner = owner_key(conn.id, channel.id);
    for (queue, offsets) in by_queue {
        let name = queue.name.clone();
        let _ = on_owner(&conn.shard, queue.shard, move |_, reply| {
            let _ = reply.try_send(queue_owner::settle(&name, owner, &offsets, how));
        })
        .await;
    }
    // After the settles: a queue that gets credit has taken the ack in first.
    let counted = u32::try_from(counted).unwrap_or(u32::MAX);
    super::channel_credit::settled(conn, channel, counted).await;
}

/// The offsets of `taken` by queue, in order within each. An ack `multiple` of one consumer
/// names one queue over and over: while the queue is the previous one's (the same `Arc`, as
/// `put_delivery` cloned it) it is not hashed again; hashing each queue name was a visible share
/// of an ack's cost.
fn group_by_queue(taken: Vec<(u64, Unacked)>) -> Vec<(QueueAt, Vec<i64>)> {
    let mut groups: Vec<(QueueAt, Vec<i64>)> = Vec::new();
    let mut index: HashMap<Arc<str>, usize> = HashMap::new();
    let mut last: Option<usize> = None;
    for (_, unacked) in taken {
        let at = match last {
            Some(at) if Arc::ptr_eq(&groups[at].0.name, &unacked.queue.name) => at,
            _ => *index.entry(unacked.queue.name.clone()).or_insert_with(|| {
                groups.push((unacked.queue.clone(), Vec::new()));
                groups.len() - 1
            }),
        };
        groups[at].1.push(unacked.offset);
        last = Some(at);
    }
    groups
}

async fn start_consumer(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    consume: basic::Consume,
) -> Result<(), HandleError> {
    let tag = consumer_tag(channel, consume.consumer_tag.as_str())?;
    if consume.queue.as_str() == super::reply_to::PSEUDO_QUEUE {
        super::reply_to::start(conn, channel, tag.clone(), consume.no_ack)?;
        return consume_ok(conn, channel, &tag, consume.nowait).await;
    }
    let name = resolve_name(conn, channel, consume.queue.as_str())?;
    refuse_hold_queue(&name)?;
    super::access::queue(conn, Operation::Read, &name)?;
    let shard = owner(conn, &name)?;
    let queue = QueueAt {
        name: Arc::from(name.as_str()),
        shard,
    };
    let spec = ConsumerSpec {
        connection: conn.id,
        channel: channel.id,
        tag: tag.clone(),
        no_ack: consume.no_ack,
        exclusive: consume.exclusive,
        prefetch: channel.prefetch.get(),
        priority: super::policy::consumer_priority(&consume.arguments)?,
        stream_offset: stream_consumer(conn, channel, &name, &consume)?,
        sink: conn.sink.clone(),
        channel_limited: channel.credit.borrow().limited(),
    };
    channel.gated.borrow_mut().insert(tag.clone(), Vec::new());
    channel
        .consumers
        .borrow_mut()
        .insert(tag.to_string(), queue.clone());
    channel.touch(&queue);
    let queue_name = queue.name.clone();
    let answer = on_owner(&conn.shard, shard, move |_, reply| {
        let _ = reply.try_send(queue_owner::consume(&queue_name, spec));
    })
    .await;
    let consumed = answer
        .recv_async()
        .await
        .map_err(|_| AmqpError::internal("the queue's shard did not answer"))
        .and_then(|result| result);
    if let Err(error) = consumed {
        channel.gated.borrow_mut().remove(&tag);
        channel.consumers.borrow_mut().remove(&*tag);
        return Err(error.into());
    }
    consume_ok(conn, channel, &tag, consume.nowait).await?;
    // Deliveries that came before the consume-ok, in order; the gate closes once empty.
    loop {
        let next = {
            let mut gated = channel.gated.borrow_mut();
            match gated.get_mut(&tag) {
                Some(waiting) if !waiting.is_empty() => Some(waiting.remove(0)),
                _ => {
                    gated.remove(&tag);
                    None
                }
            }
        };
        let Some(delivery) = next else {
            return Ok(());
        };
        deliver(conn, channel, delivery).await?;
    }
}

/// Where a consumer of a stream starts; what RabbitMQ 3.10 refuses first: no basic.qos
/// prefetch (406), then an automatic-ack consumer (540). Any other queue: unused.
fn stream_consumer(
    conn: &Conn,
    channel: &Channel,
    name: &str,
    consume: &basic::Consume,
) -> Result<StreamOffset, AmqpError> {
    if !is_stream(&conn.shard.metadata(), name) {
        return Ok(StreamOffset::Next);
    }
    if channel.prefetch.get() == 0 {
        return Err(AmqpError::precondition(format!(
            "consumer prefetch count is not set for 'queue '{}' in vhost '/''",
            super::names::amqp_name(name)
        )));
    }
    if consume.no_ack {
        let method = "automatic acknowledgement";
        return Err(stream::not_supported(60, 20, method, name));
    }
    super::policy::stream_offset(&consume.arguments)
}

/// RabbitMQ 3.10 closes the connection (540) for a nack or reject of a stream's delivery (and
/// fails a basic.recover of one with 541; Weir answers it as a nack).
fn refuse_on_streams(
    conn: &Conn,
    taken: &[(u64, Unacked)],
    method_id: u16,
) -> Result<(), AmqpError> {
    let method = match method_id {
        100 | 110 => "basic.recover",
        _ => "basic.nack and basic.reject",
    };
    let metadata = conn.shard.metadata();
    match taken
        .iter()
        .find(|(_, unacked)| is_stream(&metadata, &unacked.queue.name))
    {
        Some((_, unacked)) => Err(stream::not_supported(
            60,
            method_id,
            method,
            &unacked.queue.name,
        )),
        None => Ok(()),
    }
}

/// A delayed exchange's hold queue is the broker's: a consumer there would take held messages
/// before they are due (403, as for any `amq.*` queue a client may not use).
fn refuse_hold_queue(name: &str) -> Result<(), AmqpError> {
    if super::delayed::is_hold_queue(name) {
        return Err(AmqpError::access_refused(format!(
            "queue '{name}' holds a delayed exchange's messages"
        )));
    }
    Ok(())
}

/// The client's consumer tag, or a generated one; 530 if the channel already uses it (for a
/// queue or for `amq.rabbitmq.reply-to`).
fn consumer_tag(channel: &Channel, asked: &str) -> Result<Arc<str>, AmqpError> {
    let tag: Arc<str> = match asked {
        "" => Arc::from(format!("amq.ctag-{}", crate::metadata::new_topic_id()).as_str()),
        tag => Arc::from(tag),
    };
    let reply_tag = channel
        .reply_consumer
        .borrow()
        .as_ref()
        .map(|c| c.tag.clone());
    if channel.consumers.borrow().contains_key(&*tag) || reply_tag.as_deref() == Some(&*tag) {
        return Err(AmqpError::not_allowed(format!(
            "attempt to reuse consumer tag '{tag}'"
        )));
    }
    Ok(tag)
}

async fn consume_ok(
    conn: &Conn,
    channel: &Channel,
    tag: &str,
    nowait: bool,
) -> Result<(), HandleError> {
    if !nowait {
        let ok = basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
            consumer_tag: tag.into(),
        });
        conn.send_method(channel.id, AMQPClass::Basic(ok)).await?;
    }
    Ok(())
}

async fn cancel_consumer(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    cancel: basic::Cancel,
) -> Result<(), HandleError> {
    let tag = cancel.consumer_tag.as_str().to_string();
    super::reply_to::stop(conn, channel, Some(&tag));
    let queue = channel.consumers.borrow_mut().remove(&tag);
    if let Some(queue) = queue {
        let owner = owner_key(conn.id, channel.id);
        let name = queue.name.clone();
        let cancelled_tag = tag.clone();
        let emptied = on_owner(&conn.shard, queue.shard, move |_, reply| {
            let _ = reply.try_send(queue_owner::cancel(&name, owner, &cancelled_tag));
        })
        .await
        .recv_async()
        .await;
        if emptied == Ok(true) {
            super::queue::delete_queue(&conn.shard, &queue.name, queue.shard).await;
        }
    }
    if !cancel.nowait {
        let ok = basic::AMQPMethod::CancelOk(basic::CancelOk {
            consumer_tag: tag.into(),
        });
        conn.send_method(channel.id, AMQPClass::Basic(ok)).await?;
    }
    Ok(())
}

async fn get_one(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    get: basic::Get,
) -> Result<(), HandleError> {
    let name = resolve_name(conn, channel, get.queue.as_str())?;
    refuse_hold_queue(&name)?;
    super::access::queue(conn, Operation::Read, &name)?;
    let shard = owner(conn, &name)?;
    let queue = QueueAt {
        name: Arc::from(name.as_str()),
        shard,
    };
    let owner = owner_key(conn.id, channel.id);
    let (queue_name, no_ack, connection) = (queue.name.clone(), get.no_ack, conn.id);
    let got = on_owner(&conn.shard, shard, move |_, reply| {
        let got = queue_owner::access(&queue_name, connection)
            .and_then(|()| queue_owner::get(&queue_name, owner, no_ack));
        let _ = reply.try_send(got);
    })
    .await
    .recv_async()
    .await
    .map_err(|_| AmqpError::internal("the queue's shard did not answer"))??;
    let Some(got) = got else {
        let empty = basic::AMQPMethod::GetEmpty(basic::GetEmpty {});
        conn.send_method(channel.id, AMQPClass::Basic(empty))
            .await?;
        return Ok(());
    };
    let tag = channel.take_tag();
    if !no_ack {
        channel.touch(&queue);
        channel.unacked.borrow_mut().insert(
            tag,
            Unacked {
                queue,
                offset: got.offset,
                counted: false,
            },
        );
    }
    let ok = basic::AMQPMethod::GetOk(basic::GetOk {
        delivery_tag: tag,
        redelivered: got.redelivered,
        exchange: got.message.exchange.as_str().into(),
        routing_key: got.message.routing_key.as_str().into(),
        message_count: got.message_count,
    });
    send_with_content(conn, channel.id, ok, &got.message).await
}

async fn send_with_content(
    conn: &Conn,
    channel: u16,
    method: basic::AMQPMethod,
    message: &Message,
) -> Result<(), HandleError> {
    let mut out = BytesMut::new();
    frame::put_method(&mut out, channel, AMQPClass::Basic(method));
    frame::put_content(
        &mut out,
        channel,
        &message.raw_properties,
        &message.body,
        conn.frame_max.get(),
    );
    conn.send(out.freeze()).await?;
    Ok(())
}

/// Bytes of deliveries the delivery task gathers before it hands them to the writer.
const DELIVERIES_BYTES_MAX: usize = 64 << 10;

/// The connection's delivery task: turns what queues send into basic.deliver (or a server
/// cancel) on the right channel, assigning delivery tags. Deliveries already waiting in the
/// inbox are written into one buffer and sent to the writer at once: one allocation and one
/// hop for many messages rather than per message.
pub async fn deliveries(conn: Rc<Conn>, inbox: flume::Receiver<Outbound>) {
    let mut out = BytesMut::new();
    while let Ok(first) = inbox.recv_async().await {
        let mut next = Some(first);
        while let Some(outbound) = next.take() {
            match outbound {
                Outbound::Deliver(delivery) => deliver_waiting(&conn, delivery, &mut out),
                Outbound::Cancel {
                    channel,
                    consumer_tag,
                } => {
                    // After the deliveries before it, as the queue sent them.
                    let sent = flush(&conn, &mut out).await;
                    if sent.is_err() || server_cancel(&conn, channel, &consumer_tag).await.is_err()
                    {
                        return;
                    }
                }
                credit => channel_credit(&conn, credit).await,
            }
            if out.len() < DELIVERIES_BYTES_MAX {
                next = inbox.try_recv().ok();
            }
        }
        if flush(&conn, &mut out).await.is_err() {
            return;
        }
    }
}

/// A queue asks for its channel's credit or gives back what it could not use.
async fn channel_credit(conn: &Rc<Conn>, outbound: Outbound) {
    use super::channel_credit::{unused, wanted};
    let id = match &outbound {
        Outbound::Want { channel, .. } | Outbound::Unused { channel, .. } => *channel,
        Outbound::Deliver(_) | Outbound::Cancel { .. } => return,
    };
    // A channel that is gone or closing released its consumers: nothing to grant.
    let Some(channel) = conn.channel(id).filter(|channel| !channel.closing.get()) else {
        return;
    };
    match outbound {
        Outbound::Want {
            consumer_tag,
            count,
            ..
        } => wanted(conn, &channel, consumer_tag, count).await,
        Outbound::Unused { epoch, count, .. } => unused(conn, &channel, epoch, count).await,
        Outbound::Deliver(_) | Outbound::Cancel { .. } => {}
    }
}

async fn flush(conn: &Conn, out: &mut BytesMut) -> Result<(), HandleError> {
    if !out.is_empty() {
        conn.send(out.split().freeze()).await?;
    }
    Ok(())
}

/// One delivery from the inbox: written to `out`, held behind its consumer's consume-ok, or
/// dropped with its channel.
fn deliver_waiting(conn: &Conn, delivery: Delivery, out: &mut BytesMut) {
    let Some(channel) = conn.channel(delivery.channel) else {
        // The channel is gone: its close gave the delivery back to the queue.
        return;
    };
    if channel.closing.get() {
        return;
    }
    if &*delivery.queue == super::reply_to::PSEUDO_QUEUE
        && !super::reply_to::still_consuming(&channel, &delivery.consumer_tag)
    {
        return;
    }
    if let Some(waiting) = channel.gated.borrow_mut().get_mut(&delivery.consumer_tag) {
        waiting.push(delivery);
        return;
    }
    put_delivery(conn, &channel, delivery, out);
}

async fn deliver(conn: &Conn, channel: &Channel, delivery: Delivery) -> Result<(), HandleError> {
    let mut out = BytesMut::new();
    put_delivery(conn, channel, delivery, &mut out);
    conn.send(out.freeze()).await?;
    Ok(())
}

/// Assigns the delivery its tag (remembered until acknowledged) and writes its frames.
fn put_delivery(conn: &Conn, channel: &Channel, delivery: Delivery, out: &mut BytesMut) {
    let tag = channel.take_tag();
    if !delivery.no_ack {
        let queue = channel
            .consumers
            .borrow()
            .get(&*delivery.consumer_tag)
            .cloned();
        let queue = match queue {
            Some(queue) => queue,
            // Cancelled meanwhile: the delivery still goes out (as RabbitMQ's in-flight ones
            // do) and is acknowledged against its queue's owner, which the metadata names.
            None => QueueAt {
                shard: conn
                    .shard
                    .metadata()
                    .owner(&delivery.queue, 0)
                    .unwrap_or(conn.shard.id),
                name: delivery.queue.clone(),
            },
        };
        channel.unacked.borrow_mut().insert(
            tag,
            Unacked {
                queue,
                offset: delivery.offset,
                counted: true,
            },
        );
    }
    super::channel_credit::delivered(channel, delivery.grant_epoch, delivery.no_ack);
    let message = &delivery.message;
    let method = frame::DeliverFields {
        consumer_tag: &delivery.consumer_tag,
        delivery_tag: tag,
        redelivered: delivery.redelivered,
        exchange: &message.exchange,
        routing_key: &message.routing_key,
    };
    frame::put_deliver(out, channel.id, &method);
    let frame_max = conn.frame_max.get();
    frame::put_content(
        out,
        channel.id,
        &message.raw_properties,
        &message.body,
        frame_max,
    );
}

async fn server_cancel(conn: &Conn, channel: u16, tag: &str) -> Result<(), HandleError> {
    let Some(open) = conn.channel(channel) else {
        return Ok(());
    };
    if open.consumers.borrow_mut().remove(tag).is_none() {
        return Ok(());
    }
    let cancel = basic::AMQPMethod::Cancel(basic::Cancel {
        consumer_tag: tag.into(),
        nowait: true,
    });
    conn.send_method(channel, AMQPClass::Basic(cancel)).await?;
    Ok(())
}

/// A complete publish: checked, then held for tx.commit in tx mode, or else published now and
/// confirmed once stored when the channel is in confirm mode.
pub async fn publish(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    mut publishing: Publishing,
) -> Result<(), HandleError> {
    let Some(header) = publishing.header.as_mut() else {
        return Err(AmqpError::unexpected_frame("content without a header").into());
    };
    check_user_id(conn, &header.properties)?;
    let (exchange, key) = (
        publishing.publish.exchange.as_str(),
        publishing.publish.routing_key.as_str(),
    );
    // A reply to a direct reply-to caller goes to no queue, as RabbitMQ lets it.
    if !(exchange.is_empty() && super::reply_to::is_reply_name(key)) {
        super::access::publish(conn, exchange, key)?;
    }
    if let Some(properties) = super::reply_to::rewrite_request(channel, &header.properties)? {
        header.raw_properties = frame::encode_properties(&properties);
        header.properties = properties;
    }
    if channel.tx.borrow().is_some() {
        // What RabbitMQ refuses at publish time inside a transaction too: a missing exchange,
        // a bad expiration.
        let (exchange, key) = (
            &publishing.publish.exchange,
            &publishing.publish.routing_key,
        );
        route(
            &conn.shard.metadata(),
            exchange.as_str(),
            key.as_str(),
            &header.properties,
        )?;
        super::message::expiration(&header.properties)?;
    }
    let Some(publishing) = super::tx::hold_publish(channel, publishing)? else {
        return Ok(());
    };
    let Some(publishing) = super::publish_run::join(conn, channel, publishing).await? else {
        return Ok(());
    };
    // Alone: the run read before it is stored first, so that it keeps its place.
    super::publish_run::flush(conn).await;
    let stored = publish_now(conn, channel, publishing).await?;
    super::confirm::published(conn, channel, stored).await;
    Ok(())
}

/// Routes and stores a checked publish, returns it if mandatory and unroutable; answers where
/// each destination's store will be reported. A reply (the default exchange, a reply name as
/// routing key) goes to its caller and routes to no queue (`reply_to.rs`).
pub async fn publish_now(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    publishing: Publishing,
) -> Result<Vec<Stored>, HandleError> {
    let Publishing {
        publish,
        header,
        body,
    } = publishing;
    let Some(header) = header else {
        return Err(AmqpError::unexpected_frame("content without a header").into());
    };
    let metadata = conn.shard.metadata();
    let exchange = publish.exchange.as_str();
    let key = publish.routing_key.as_str();
    let reply = exchange.is_empty() && super::reply_to::is_reply_name(key);
    let delay_ms = super::delayed::delay_of(&metadata, exchange, &header.properties);
    let destinations = if reply || delay_ms.is_some() {
        Vec::new()
    } else {
        route(&metadata, exchange, key, &header.properties)?
    };
    let persistent = super::message::is_persistent(&header.properties);
    let message = Arc::new(Message {
        exchange: exchange.to_string(),
        routing_key: key.to_string(),
        raw_properties: header.raw_properties,
        body: body.freeze(),
        stored_ms: super::message::now_ms(),
        expiration_ms: super::message::expiration(&header.properties)?,
        persistent,
    });
    if reply {
        super::reply_to::deliver(conn, key, &message).await;
    }
    let mut stored = Vec::with_capacity(destinations.len());
    if delay_ms.is_some() {
        let core = super::names::exchange(&metadata, exchange);
        let held = Arc::new(Message {
            // Its TTL counts where it is routed once due, not while held.
            expiration_ms: None,
            ..(*message).clone()
        });
        let shard = &conn.shard;
        stored.push(super::delayed::hold(shard, &metadata, &core, held, persistent).await?);
    }
    for destination in &destinations {
        stored.push(store(&conn.shard, &metadata, destination, &message, persistent).await?);
    }
    // A held message routes to nothing now: with mandatory it comes back at once, as the plugin
    // returns it (it cannot know where it will go when due). So does one held only by delayed
    // exchanges it reached through exchange-to-exchange bindings.
    let routed = destinations
        .iter()
        .any(|d| !super::delayed::is_hold_queue(d));
    if !routed && publish.mandatory {
        let returned = basic::AMQPMethod::Return(basic::Return {
            reply_code: NO_ROUTE,
            reply_text: "NO_ROUTE".into(),
            exchange: publish.exchange.clone(),
            routing_key: publish.routing_key.clone(),
        });
        send_with_content(conn, channel.id, returned, &message).await?;
    }
    Ok(stored)
}

/// As RabbitMQ: a user-id property must name the connection's user (406 otherwise), so that
/// consumers can trust it.
fn check_user_id(conn: &Conn, properties: &basic::AMQPProperties) -> Result<(), AmqpError> {
    let Some(user) = properties.user_id() else {
        return Ok(());
    };
    let principal = conn.session.principal();
    if user.as_str() == principal.name() {
        return Ok(());
    }
    Err(AmqpError::precondition(format!(
        "user_id property set to '{}' but authenticated user was '{}'",
        user.as_str(),
        principal.name()
    )))
}

/// The topics a message goes to: the default exchange names a queue by the routing key; any
/// other exchange routes through the shared table, where a delayed exchange holds a message
/// that asks for a delay (its hold queue is then a destination).
pub fn route(
    metadata: &Metadata,
    exchange: &str,
    key: &str,
    properties: &basic::AMQPProperties,
) -> Result<Vec<String>, AmqpError> {
    if exchange.is_empty() {
        return Ok(super::names::queue_topic(metadata, key)
            .into_iter()
            .collect());
    }
    let core = super::names::exchange(metadata, exchange);
    let delayed = super::delayed::requested_delay(properties).is_some();
    route_core(metadata, &core, key, properties, delayed)
        .map_err(|_| AmqpError::not_found(format!("no exchange '{exchange}' in vhost '/'")))
}

/// As `route`, from exchange `core` (the table's name); `delayed`: whether a delayed exchange
/// holds the message. Topics the metadata does not know are left out.
pub fn route_core(
    metadata: &Metadata,
    core: &str,
    key: &str,
    properties: &basic::AMQPProperties,
    delayed: bool,
) -> Result<Vec<String>, AmqpError> {
    let texts: Vec<(String, Option<Vec<u8>>)> = properties
        .headers()
        .as_ref()
        .map(|headers| {
            headers
                .inner()
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_string(),
                        value_text(value).map(String::into_bytes),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let headers: Vec<(&str, Option<&[u8]>)> = texts
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_deref()))
        .collect();
    let topics = metadata
        .routing
        .route_delayed(core, Some(key.as_bytes()), &headers, delayed)
        .map_err(|_| AmqpError::not_found(format!("no exchange '{core}' in vhost '/'")))?;
    Ok(topics
        .into_iter()
        .filter(|topic| metadata.topics.contains_key(*topic))
        .map(str::to_string)
        .collect())
}

/// Stores the message in one destination: a queue on its owner, or a plain Kafka topic (the
/// partition chosen by the routing key's hash, as Kafka clients do).
pub async fn store(
    shard: &Rc<Shard>,
    metadata: &Metadata,
    destination: &str,
    message: &Arc<Message>,
    persistent: bool,
) -> Result<Stored, AmqpError> {
    if is_queue(metadata, destination) {
        let messages = vec![message.clone()];
        return super::publish_run::store(shard, metadata, destination, messages, persistent).await;
    }
    let partitions = metadata
        .topics
        .get(destination)
        .map_or(1, |topic| topic.partitions.len().max(1));
    let partition = crate::routing::partitioner::partition_for_key(
        message.routing_key.as_bytes(),
        partitions as u32,
    );
    let batch = message.to_batch();
    let pending = PendingAppend::issue(
        shard,
        metadata,
        destination,
        partition as i32,
        Some(batch),
        persistent,
    )
    .await;
    let (reply, answer) = crate::shard::mesh::reply_channel();
    glommio::spawn_local(async move {
        let outcome = pending.finish(persistent).await;
        let result = match outcome.error {
            None => Ok(()),
            Some(error) => Err(AmqpError::internal(format!(
                "storing to a topic: {error:?}"
            ))),
        };
        let _ = reply.send_async(result).await;
    })
    .detach();
    Ok(Stored::Answer(answer))
}
