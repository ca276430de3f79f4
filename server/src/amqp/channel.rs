//! Channels of one connection: open / close / flow, the per-channel state (delivery tags and the
//! deliveries they name, consumers, confirm mode, content being assembled), routing of each
//! method to its class's file, and what a channel's end does: every delivery it held goes back
//! to its queue (in order, flagged redelivered), its consumers are cancelled.
//!
//! Lives on the connection's shard; `RefCell`s are never borrowed across an `.await`.
//!
//! Errors: a channel error (404, 403, 405, 406) closes the channel with `channel.close` and the
//! broker then discards the channel's frames until `close-ok`; connection errors (503, 504,
//! 505, 540, ...) go up to `connection.rs`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use amq_protocol::protocol::{basic, channel, AMQPClass};
use bytes::{Bytes, BytesMut};

use super::connection::{Conn, HandleError};
use super::error::{AmqpError, Scope};
use super::frame::{ContentHeader, BODY_BYTES_MAX};
use super::queue_owner::{self, on_owner, owner_key, Delivery};
use crate::shard::ShardId;

const CLASS_BASIC: u16 = 60;

/// A queue and the shard that owns it.
#[derive(Clone, Debug)]
pub struct QueueAt {
    pub name: Arc<str>,
    pub shard: ShardId,
}

/// A delivery not yet acknowledged, by its delivery tag.
pub struct Unacked {
    pub queue: QueueAt,
    pub offset: i64,
    /// A consumer's delivery: counts against the channel's global prefetch until settled
    /// (basic.get answers do not, as RabbitMQ).
    pub counted: bool,
}

/// A basic.publish whose content is arriving.
pub struct Publishing {
    pub publish: basic::Publish,
    /// Boxed as the frame decoder made it: its properties are most of a publish's size, and a
    /// publish is moved by value through several `async fn`s on its way to the log (each move
    /// a `memmove`, 4-5% of the shard's time before it was boxed).
    pub header: Option<Box<ContentHeader>>,
    pub body: Body,
}

/// A publish's body as its frames come: a body in one frame (the usual case) is kept as read,
/// a slice of the connection's payload chunk, without a copy; more frames are joined.
#[derive(Default)]
pub enum Body {
    #[default]
    Empty,
    One(Bytes),
    Joined(BytesMut),
}

impl Body {
    pub(crate) fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(bytes) => bytes.len(),
            Body::Joined(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, frame: Bytes) {
        *self = match std::mem::take(self) {
            Body::Empty => Body::One(frame),
            Body::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + frame.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&frame);
                Body::Joined(joined)
            }
            Body::Joined(mut joined) => {
                joined.extend_from_slice(&frame);
                Body::Joined(joined)
            }
        };
    }

    pub fn freeze(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(bytes) => bytes,
            Body::Joined(bytes) => bytes.freeze(),
        }
    }
}

pub struct Channel {
    pub id: u16,
    /// The broker sent channel.close and waits for close-ok.
    pub closing: Cell<bool>,
    /// basic.qos prefetch-count for consumers started from now on (0 = unlimited).
    pub prefetch: Cell<u16>,
    /// basic.qos global=true: the limit shared by all its consumers (`channel_credit.rs`).
    pub credit: RefCell<super::channel_credit::ChannelCredit>,
    next_tag: Cell<u64>,
    pub unacked: RefCell<BTreeMap<u64, Unacked>>,
    /// Consumer tag → its queue.
    pub consumers: RefCell<HashMap<String, QueueAt>>,
    /// Consumers whose consume-ok is not written yet: their deliveries wait here so that no
    /// basic.deliver precedes the consume-ok.
    pub gated: RefCell<HashMap<Arc<str>, Vec<Delivery>>>,
    /// Queues that may hold deliveries of this channel (released when it ends).
    pub touched: RefCell<HashMap<Arc<str>, ShardId>>,
    pub confirms: RefCell<Option<super::confirm::Confirms>>,
    pub content: RefCell<Option<Publishing>>,
    /// The last queue declared on the channel (an empty queue name means it).
    pub last_queue: RefCell<String>,
    /// tx.select was sent: publishes and acks wait here for tx.commit (`tx.rs`).
    pub tx: RefCell<Option<super::tx::Transaction>>,
    /// The channel's consumer of `amq.rabbitmq.reply-to` (`reply_to.rs`).
    pub reply_consumer: RefCell<Option<super::reply_to::ReplyConsumer>>,
    /// Counts the channel in `rabbitmq_channels` while it lives.
    _gauge: crate::metrics::ChannelGauge,
}

impl Channel {
    fn new(id: u16) -> Channel {
        Channel {
            id,
            closing: Cell::new(false),
            prefetch: Cell::new(0),
            credit: RefCell::default(),
            next_tag: Cell::new(1),
            unacked: RefCell::new(BTreeMap::new()),
            consumers: RefCell::new(HashMap::new()),
            gated: RefCell::new(HashMap::new()),
            touched: RefCell::new(HashMap::new()),
            confirms: RefCell::new(None),
            content: RefCell::new(None),
            last_queue: RefCell::new(String::new()),
            tx: RefCell::new(None),
            reply_consumer: RefCell::new(None),
            _gauge: crate::metrics::ChannelGauge::new(),
        }
    }

    /// The next delivery tag (1, 2, ...).
    pub fn take_tag(&self) -> u64 {
        let tag = self.next_tag.get();
        self.next_tag.set(tag + 1);
        tag
    }

    pub fn touch(&self, queue: &QueueAt) {
        self.touched
            .borrow_mut()
            .insert(queue.name.clone(), queue.shard);
    }
}

/// A method on channel `id` (not 0).
pub async fn handle_method(
    conn: &Rc<Conn>,
    id: u16,
    method_number: u16,
    method: AMQPClass,
) -> Result<(), HandleError> {
    let channel_max = conn.channel_max.get();
    let opening = matches!(method, AMQPClass::Channel(channel::AMQPMethod::Open(_)));
    // Two limits, in this order. RabbitMQ's: how many channels are open, checked at
    // channel.open and answered with 530 NOT_ALLOWED, which is what a client that opens channel
    // after channel sees first. Then the spec's: a channel id is in 1..=channel-max (504;
    // RabbitMQ does not check it, see docs/amqp-compat.md).
    let open_count = conn.channels.borrow().len();
    if opening && open_count >= usize::from(channel_max) && conn.channel(id).is_none() {
        return Err(AmqpError::not_allowed(format!(
            "number of channels opened ({open_count}) has reached the negotiated channel_max \
             ({channel_max})"
        ))
        .into());
    }
    if id > channel_max {
        return Err(AmqpError::channel_error(format!(
            "channel {id} above channel_max {channel_max}"
        ))
        .into());
    }
    let class_id = method.get_amqp_class_id();
    let Some(channel) = conn.channel(id) else {
        if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = method {
            conn.channels
                .borrow_mut()
                .insert(id, Rc::new(Channel::new(id)));
            let ok = channel::AMQPMethod::OpenOk(channel::OpenOk {});
            conn.send_method(id, AMQPClass::Channel(ok)).await?;
            return Ok(());
        }
        return Err(
            AmqpError::channel_error(format!("expected 'channel.open' on channel {id}"))
                .at(class_id, method_number)
                .into(),
        );
    };
    match method {
        AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) if channel.closing.get() => {
            conn.channels.borrow_mut().remove(&id);
            return Ok(());
        }
        AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
            conn.channels.borrow_mut().remove(&id);
            release(conn, &channel).await;
            let ok = channel::AMQPMethod::CloseOk(channel::CloseOk {});
            conn.send_method(id, AMQPClass::Channel(ok)).await?;
            return Ok(());
        }
        // After the broker's channel.close, frames are discarded until close-ok.
        _ if channel.closing.get() => return Ok(()),
        _ => {}
    }
    if channel.content.borrow().is_some() {
        return Err(AmqpError::unexpected_frame(format!(
            "expected content on channel {id}, got a method"
        ))
        .at(class_id, method_number)
        .into());
    }
    let handled = dispatch(conn, &channel, method).await;
    settle_errors(conn, &channel, handled, class_id, method_number).await
}

/// Closes the channel on a channel error; passes connection errors up.
async fn settle_errors(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    handled: Result<(), HandleError>,
    class_id: u16,
    method_number: u16,
) -> Result<(), HandleError> {
    match handled {
        Err(HandleError::Amqp(error)) => {
            let error = if error.class_id == 0 {
                error.at(class_id, method_number)
            } else {
                error
            };
            if error.scope == Scope::Connection {
                return Err(HandleError::Amqp(error));
            }
            close_channel(conn, channel, error).await
        }
        other => other,
    }
}

async fn dispatch(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    method: AMQPClass,
) -> Result<(), HandleError> {
    match method {
        AMQPClass::Channel(channel::AMQPMethod::Flow(flow)) => {
            // Weir never pauses a channel's publishers and answers what it was asked.
            let ok = channel::AMQPMethod::FlowOk(channel::FlowOk {
                active: flow.active,
            });
            conn.send_method(channel.id, AMQPClass::Channel(ok)).await?;
            Ok(())
        }
        AMQPClass::Channel(channel::AMQPMethod::Open(_)) => Err(AmqpError::channel_error(format!(
            "second 'channel.open' seen on channel {}",
            channel.id
        ))
        .into()),
        AMQPClass::Channel(_) => {
            Err(AmqpError::command_invalid("unexpected channel method").into())
        }
        AMQPClass::Exchange(method) => super::exchange::handle(conn, channel, method).await,
        AMQPClass::Queue(method) => super::queue::handle(conn, channel, method).await,
        AMQPClass::Basic(method) => super::basic::handle(conn, channel, method).await,
        AMQPClass::Confirm(method) => super::confirm::handle(conn, channel, method).await,
        AMQPClass::Tx(method) => super::tx::handle(conn, channel, method).await,
        AMQPClass::Access(_) => {
            Err(AmqpError::not_implemented(30, 10, "access.request is not implemented").into())
        }
        AMQPClass::Connection(_) => {
            Err(AmqpError::command_invalid("connection method on a channel other than 0").into())
        }
    }
}

/// The broker closes `channel` for `error`: channel.close is sent, its deliveries go back.
pub async fn close_channel(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    error: AmqpError,
) -> Result<(), HandleError> {
    channel.closing.set(true);
    release(conn, channel).await;
    let close = channel::AMQPMethod::Close(channel::Close {
        reply_code: error.code,
        reply_text: error.reply_text().into(),
        class_id: error.class_id,
        method_id: error.method_id,
    });
    conn.send_method(channel.id, AMQPClass::Channel(close))
        .await?;
    Ok(())
}

/// A content header on channel `id`.
pub async fn handle_header(
    conn: &Rc<Conn>,
    id: u16,
    header: Box<ContentHeader>,
) -> Result<(), HandleError> {
    let channel = content_channel(conn, id)?;
    if channel.closing.get() {
        return Ok(());
    }
    if header.body_size > BODY_BYTES_MAX {
        let expected = channel
            .content
            .borrow()
            .as_ref()
            .is_some_and(|p| p.header.is_none());
        if expected {
            channel.content.borrow_mut().take();
            let error = AmqpError::precondition(format!(
                "message size {} is larger than configured max size {BODY_BYTES_MAX}",
                header.body_size
            ))
            .at(CLASS_BASIC, 40);
            return close_channel(conn, &channel, error).await;
        }
    }
    let complete = {
        let mut content = channel.content.borrow_mut();
        let Some(publishing) = content.as_mut().filter(|p| p.header.is_none()) else {
            return Err(AmqpError::unexpected_frame(format!(
                "content header on channel {id} without a basic.publish"
            ))
            .into());
        };
        if header.class_id != CLASS_BASIC {
            return Err(
                AmqpError::unexpected_frame("content header of a class other than basic").into(),
            );
        }
        let empty = header.body_size == 0;
        publishing.header = Some(header);
        if empty {
            content.take()
        } else {
            None
        }
    };
    publish_complete(conn, &channel, complete).await
}

/// A content body frame on channel `id`.
pub async fn handle_body(conn: &Rc<Conn>, id: u16, body: Bytes) -> Result<(), HandleError> {
    let channel = content_channel(conn, id)?;
    if channel.closing.get() {
        return Ok(());
    }
    let complete = {
        let mut content = channel.content.borrow_mut();
        let Some(publishing) = content.as_mut() else {
            return Err(AmqpError::unexpected_frame(format!(
                "content body on channel {id} without a basic.publish"
            ))
            .into());
        };
        let Some(expected) = publishing.header.as_ref().map(|h| h.body_size) else {
            return Err(AmqpError::unexpected_frame("content body before its header").into());
        };
        if (publishing.body.len() + body.len()) as u64 > expected {
            return Err(AmqpError::frame(format!(
                "content body longer than the {expected} bytes its header declared"
            ))
            .into());
        }
        publishing.body.push(body);
        if publishing.body.len() as u64 == expected {
            content.take()
        } else {
            None
        }
    };
    publish_complete(conn, &channel, complete).await
}

fn content_channel(conn: &Conn, id: u16) -> Result<Rc<Channel>, HandleError> {
    conn.channel(id).ok_or_else(|| {
        AmqpError::channel_error(format!("content frame on unopened channel {id}")).into()
    })
}

async fn publish_complete(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    complete: Option<Publishing>,
) -> Result<(), HandleError> {
    let Some(publishing) = complete else {
        return Ok(());
    };
    let handled = super::basic::publish(conn, channel, publishing).await;
    settle_errors(conn, channel, handled, CLASS_BASIC, 40).await
}

/// What a channel's end does: its consumers are cancelled and every delivery it held goes back
/// to its queue. Auto-delete queues that lose their last consumer are deleted.
pub async fn release(conn: &Rc<Conn>, channel: &Rc<Channel>) {
    // Publishes read before the end are stored, as they were when each was stored at once.
    super::publish_run::flush(conn).await;
    channel.unacked.borrow_mut().clear();
    channel.consumers.borrow_mut().clear();
    channel.gated.borrow_mut().clear();
    channel.content.borrow_mut().take();
    channel.confirms.borrow_mut().take();
    channel.tx.borrow_mut().take();
    super::reply_to::stop(conn, channel, None);
    let touched: Vec<(Arc<str>, ShardId)> = channel.touched.borrow_mut().drain().collect();
    let owner = owner_key(conn.id, channel.id);
    for (name, shard) in touched {
        let queue = name.clone();
        let answer = on_owner(&conn.shard, shard, move |_, reply| {
            let _ = reply.try_send(queue_owner::release_channel(&queue, owner));
        })
        .await;
        if answer.recv_async().await == Ok(true) {
            super::queue::delete_queue(&conn.shard, &name, shard).await;
        }
    }
}

/// The connection ended: every channel ends, then its exclusive queues are deleted.
pub async fn close_all(conn: &Rc<Conn>) {
    super::publish_run::flush(conn).await;
    let channels: Vec<Rc<Channel>> = conn.channels.borrow_mut().drain().map(|(_, c)| c).collect();
    for channel in channels {
        release(conn, &channel).await;
    }
    let exclusive: Vec<String> = conn.exclusive_queues.borrow_mut().drain(..).collect();
    for name in exclusive {
        let metadata = conn.shard.metadata();
        if let Some(shard) = metadata.owner(&name, 0) {
            let queue: Arc<str> = Arc::from(name.as_str());
            let _ = on_owner(&conn.shard, shard, move |_, reply| {
                let _ = reply.try_send(queue_owner::delete(&queue, false, false).is_ok());
            })
            .await
            .recv_async()
            .await;
            super::queue::delete_topic(&conn.shard, &name).await;
        }
    }
}
