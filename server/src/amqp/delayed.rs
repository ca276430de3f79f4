//! RabbitMQ's `x-delayed-message` exchange (the delayed-message plugin), kept on the log.
//!
//! A delayed exchange `E` routes with its `x-delayed-type` (`ExchangeType::Delayed*`). A message
//! that reaches it asking for a delay (a positive integer `x-delay` header; a Kafka record's
//! header holds the decimal text, `routing::delayed`) is *held*: appended to `E`'s hold queue, a
//! durable queue `amq.weir.delayed.<E>` (a log and ack state like any queue's, so it is stored,
//! confirmed and recovered as a durable queue's messages are), and routed through `E`'s bindings
//! once due, with `x-delay` set to minus the delay, as the plugin does. It reaches `E` by any
//! path that routes: published to `E` ([`hold`]), or routed to it through an exchange-to-exchange
//! binding, a Kafka produce or a dead-letter exchange (the routing table stops at `E` and names
//! its hold queue as the destination). The due time is absolute: the record's timestamp (the
//! broker's clock when an AMQP publish was stored; a Kafka record's own timestamp) plus
//! `x-delay`, so a restart neither loses a held message nor moves its time (the plugin's #72 and
//! #133).
//!
//! Each hold queue has a timer on the shard that owns its log: a min-heap of (due ms, offset)
//! and one task that sleeps until the earliest due time (or until an earlier one arrives). The
//! timer follows the queue, not a publish path: the queue's owner schedules every message its
//! state takes in, appended by an AMQP publish or found in the log by its follower
//! (`queue_owner::publish`, `take_in`), and every unfinished one at start ([`resume`]). When
//! messages are due it takes them from the queue out of order (`queue_owner::take`), routes and
//! stores each where `E`'s bindings say, waits until every destination stored it, then
//! acknowledges it in the hold queue. The acknowledgement is the record that routing happened:
//! a crash after the destinations stored a message but before the ack store's next group commit
//! (`queue_ack_flush_ms`) routes it again after the restart (at-least-once); once the ack is
//! durable it is never routed again.
//!
//! Runs on the hold queue's owner shard (`thread_local!`, `Rc`, no borrow across an `.await`).
//! Other shards reach it with `queue_owner::on_owner`, whose bounded mesh send waits (never
//! drops) when the owner is busy.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::routing::delayed::{delay_ms_of_text, DELAY_MS_MAX};
pub use crate::routing::delayed::{hold_queue, is_hold_queue, X_DELAY};
use amq_protocol::protocol::basic;
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use weir_engine::Offset;

use super::basic::Stored;
use super::error::AmqpError;
use super::message::{now_ms, Message};
use super::queue::owner_in;
use super::queue_owner::{self, on_owner, QueueSpec, Settle};
use crate::metadata::Metadata;
use crate::queues::ConsumerId;
use crate::shard::Shard;

/// The declare argument naming the type that routes a due message.
pub const X_DELAYED_TYPE: &str = "x-delayed-type";
/// The plugin's refusal of a missing or unknown `x-delayed-type`.
pub const INVALID_DELAYED_TYPE: &str =
    "Invalid argument, 'x-delayed-type' must be an existing exchange type";
/// The owner key the timer acquires held messages under; no connection has it (connection ids
/// carry their shard in the top bits, far below this).
const TIMER: ConsumerId = ConsumerId(u64::MAX);
/// Due messages routed in one step; their stores proceed together (one group commit).
const DUE_BATCH_MAX: usize = 256;
/// How long a message whose destinations failed to store it waits before it is tried again.
const RETRY_MS: i64 = 1_000;

/// The spec of every hold queue: durable, so that it is rebuilt at start.
pub fn hold_spec() -> QueueSpec {
    QueueSpec {
        durable: true,
        exclusive: false,
        auto_delete: false,
        single_active: false,
        arguments: String::new(),
        policy: super::policy::QueuePolicy::default(),
    }
}

/// The delay a publish to `exchange` (an AMQP name) asks for: `Some` when the exchange is
/// delayed and `x-delay` is a positive integer; absent, zero, negative or not an integer routes
/// at once (as the plugin).
pub fn delay_of(
    metadata: &Metadata,
    exchange: &str,
    properties: &basic::AMQPProperties,
) -> Option<i64> {
    if exchange.is_empty() {
        return None;
    }
    let core = super::names::exchange(metadata, exchange);
    let declared = metadata.routing.exchange(&core)?;
    if !declared.kind.is_delayed() {
        return None;
    }
    requested_delay(properties)
}

/// The delay a published message asks for wherever it is routed: a positive integer `x-delay`
/// (cut at the plugin's maximum); absent, zero, negative or not an integer asks for none.
pub fn requested_delay(properties: &basic::AMQPProperties) -> Option<i64> {
    let headers = properties.headers().as_ref()?;
    let delay = integer(headers.inner().get(X_DELAY)?)?;
    (delay > 0).then_some(delay.min(DELAY_MS_MAX))
}

/// The delay of a message in a hold queue, which asked for one to get there: an integer, or
/// the decimal text a Kafka record's header carries (its AMQP form is a long string).
fn held_delay(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongString(text) => delay_ms_of_text(text.as_bytes()),
        other => integer(other),
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    })
}

/// Holds `message` (published to delayed exchange `exchange`, a core name) in the exchange's hold
/// queue; answers where its store is reported (the publisher's confirm waits for it). Its due
/// time is read back from the stored message (`schedule_held`), as after a restart.
pub async fn hold(
    shard: &Rc<Shard>,
    metadata: &Metadata,
    exchange: &str,
    message: Arc<Message>,
    persistent: bool,
) -> Result<Stored, AmqpError> {
    let queue: Arc<str> = Arc::from(hold_queue(exchange).as_str());
    let owner = owner_in(metadata, &queue)?;
    Ok(Stored::Answer(
        on_owner(shard, owner, move |shard, reply| {
            // The queue's owner schedules it once it is taken in (`schedule_held`).
            let published = queue_owner::publish(&shard, &queue, message);
            queue_owner::reply_when_stored(published, persistent, reply);
        })
        .await,
    ))
}

/// Schedules a message hold queue `queue` took in (on the queue's owner): at its timestamp plus
/// its `x-delay`, at once if that has passed.
pub fn schedule_held(shard: &Rc<Shard>, queue: &Arc<str>, offset: Offset, message: &Message) {
    let delay = message
        .properties()
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(X_DELAY).and_then(held_delay))
        .unwrap_or(0)
        .clamp(0, DELAY_MS_MAX);
    schedule(
        shard,
        queue,
        message.stored_ms.saturating_add(delay),
        offset,
    );
}

/// One hold queue's timer: held offsets by due time.
#[derive(Default)]
struct Timer {
    due: RefCell<BinaryHeap<Reverse<(i64, Offset)>>>,
    /// Woken when an entry is added (it may be due earlier than the one slept for).
    wake: Option<flume::Sender<()>>,
}

thread_local! {
    static TIMERS: RefCell<HashMap<Arc<str>, Rc<Timer>>> = RefCell::new(HashMap::new());
}

/// Adds a held message to its queue's timer, starting the timer task if there is none.
fn schedule(shard: &Rc<Shard>, queue: &Arc<str>, due_ms: i64, offset: Offset) {
    let existing = TIMERS.with(|timers| timers.borrow().get(queue).cloned());
    // Started outside the borrow: glommio may poll a spawned task at once, and it reads TIMERS.
    let timer = existing.unwrap_or_else(|| start_timer(shard.clone(), queue.clone()));
    timer.due.borrow_mut().push(Reverse((due_ms, offset)));
    if let Some(wake) = &timer.wake {
        let _ = wake.try_send(());
    }
}

fn start_timer(shard: Rc<Shard>, queue: Arc<str>) -> Rc<Timer> {
    let (wake, woken) = flume::bounded(1);
    let timer = Rc::new(Timer {
        due: RefCell::default(),
        wake: Some(wake),
    });
    TIMERS.with(|timers| timers.borrow_mut().insert(queue.clone(), timer.clone()));
    glommio::spawn_local(run_timer(shard, queue, timer.clone(), woken)).detach();
    timer
}

/// The timer task: sleeps until the earliest due time, routes what is due, until its queue is
/// forgotten (its exchange was deleted). A queue declared again under the same name gets a new
/// timer: this one must not take that queue's messages by its stale offsets.
async fn run_timer(
    shard: Rc<Shard>,
    queue: Arc<str>,
    timer: Rc<Timer>,
    woken: flume::Receiver<()>,
) {
    loop {
        let current = TIMERS.with(|timers| {
            let timers = timers.borrow();
            timers.get(&queue).is_some_and(|t| Rc::ptr_eq(t, &timer))
        });
        if !current {
            return;
        }
        let next = timer.due.borrow().peek().map(|Reverse((due, _))| *due);
        let now = now_ms();
        match next {
            Some(due) if due <= now => route_due(&shard, &queue, &timer).await,
            Some(due) => {
                let sleep = glommio::timer::sleep(Duration::from_millis((due - now) as u64));
                futures_lite::future::or(sleep, async {
                    let _ = woken.recv_async().await;
                })
                .await;
            }
            None => {
                if woken.recv_async().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Routes up to `DUE_BATCH_MAX` due messages: takes each from the hold queue, stores it in its
/// destinations, and once all stored acknowledges it (a failed one goes back for a retry).
async fn route_due(shard: &Rc<Shard>, queue: &Arc<str>, timer: &Timer) {
    let metadata = shard.metadata();
    let mut routed = Vec::new();
    let now = now_ms();
    // Due messages route from the exchange that held them, whichever exchange they were
    // published to (an exchange-to-exchange binding led them here, or a Kafka produce).
    let exchange = metadata.routing.held_by(queue).map(str::to_string);
    while routed.len() < DUE_BATCH_MAX {
        let due = {
            let mut heap = timer.due.borrow_mut();
            match heap.peek() {
                Some(Reverse((due, _))) if *due <= now => heap.pop().map(|Reverse(entry)| entry),
                _ => None,
            }
        };
        let Some((due_ms, offset)) = due else {
            break;
        };
        let Some(held) = queue_owner::take(queue, TIMER, offset) else {
            // Finished already (routed before a restart and acknowledged), or gone.
            continue;
        };
        let stores = match &exchange {
            Some(exchange) => route_one(shard, &metadata, exchange, &held, now).await,
            // The exchange is gone (its hold queue goes with it): nothing to route through.
            None => Vec::new(),
        };
        routed.push((due_ms, offset, stores));
    }
    for (due_ms, offset, stores) in routed {
        let mut settle = Settle::Ack;
        for stored in stores {
            if stored.wait().await.is_err() {
                tracing::warn!(queue = %queue, offset = offset.get(), "a due message was not stored; retrying");
                settle = Settle::Requeue;
            }
        }
        if settle == Settle::Requeue {
            timer
                .due
                .borrow_mut()
                .push(Reverse((due_ms.max(now + RETRY_MS), offset)));
        }
        let _ = queue_owner::settle(queue, TIMER, &[offset.get()], settle);
    }
}

/// Stores one due message where its delayed exchange (a core name) routes it now, with no delay
/// asked (it was served); no binding matching drops it (as RabbitMQ drops an unroutable
/// message).
async fn route_one(
    shard: &Rc<Shard>,
    metadata: &Metadata,
    exchange: &str,
    held: &Message,
    now: i64,
) -> Vec<Stored> {
    let properties = held.properties();
    let delivered = Arc::new(due_message(held, &properties, now));
    let key = &held.routing_key;
    let destinations = match super::basic::route_core(metadata, exchange, key, &properties, false) {
        Ok(destinations) => destinations,
        Err(_) => return Vec::new(),
    };
    let mut stores = Vec::with_capacity(destinations.len());
    for destination in &destinations {
        let persistent = delivered.persistent;
        match super::basic::store(shard, metadata, destination, &delivered, persistent).await {
            Ok(stored) => stores.push(stored),
            Err(error) => tracing::warn!(%destination, %error, "routing a due message"),
        }
    }
    stores
}

/// The held message as it is routed once due: `x-delay` negated (the plugin's mark of a message
/// that was delayed), stored now (TTLs count from here), its own expiration read again.
fn due_message(held: &Message, properties: &basic::AMQPProperties, now: i64) -> Message {
    let mut headers = properties.headers().clone().unwrap_or_default();
    negate_delay(&mut headers);
    let properties = properties.clone().with_headers(headers);
    Message {
        raw_properties: super::frame::encode_properties(&properties),
        stored_ms: now,
        expiration_ms: super::message::expiration(&properties).ok().flatten(),
        ..held.clone()
    }
}

fn negate_delay(headers: &mut FieldTable) {
    let Some(delay) = headers.inner().get(X_DELAY).and_then(held_delay) else {
        return;
    };
    let negated = match i32::try_from(-delay) {
        Ok(small) => AMQPValue::LongInt(small),
        Err(_) => AMQPValue::LongLongInt(-delay),
    };
    headers.insert(ShortString::from(X_DELAY), negated);
}

/// Schedules every message a rebuilt hold queue holds (at start, after `queue_owner::recover`):
/// at its original due time, or at once if that passed while the broker was down.
pub fn resume(shard: &Rc<Shard>, queue: &str) {
    let queue: Arc<str> = Arc::from(queue);
    for (offset, message) in queue_owner::unfinished(&queue) {
        schedule_held(shard, &queue, offset, &message);
    }
}

/// Drops a hold queue's timer (its exchange was deleted; its held messages go with the queue)
/// and wakes its task to end.
pub fn forget(queue: &str) {
    let timer = TIMERS.with(|timers| timers.borrow_mut().remove(queue));
    if let Some(wake) = timer.as_ref().and_then(|timer| timer.wake.as_ref()) {
        let _ = wake.try_send(());
    }
}

/// Deletes delayed exchange `exchange`'s hold queue (its timer, runtime and log): the messages it
/// held are dropped with the exchange.
pub async fn drop_held(shard: &Rc<Shard>, exchange: &str) {
    let queue = hold_queue(exchange);
    let metadata = shard.metadata();
    let Ok(owner) = owner_in(&metadata, &queue) else {
        return;
    };
    let name: Arc<str> = Arc::from(queue.as_str());
    let deleted = on_owner(shard, owner, move |_, reply| {
        let deleted = queue_owner::delete(&name, false, false).is_ok();
        forget(&name);
        let _ = reply.try_send(deleted);
    })
    .await
    .recv_async()
    .await;
    if deleted == Ok(true) {
        super::queue::delete_topic(shard, &queue).await;
    }
}
