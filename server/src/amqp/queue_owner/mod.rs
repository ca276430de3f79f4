//! The AMQP queues this shard owns: each queue's log (a topic of the same name, one partition,
//! owned by the shard `metadata::assign_shard` chose), its per-message state, its consumers, and
//! the dispatch loop that hands ready messages to consumers round-robin within their prefetch.
//!
//! Runs on the owning shard only; everything here is shard-local (`thread_local!`, `Rc`,
//! `RefCell`, no borrow across an `.await`). Other shards reach a queue with [`on_owner`]: a
//! closure sent on the mesh (`Job::Run`), answered on a one-slot channel. Deliveries go to the
//! consuming connection's bounded `flume` inbox, wherever that connection lives: a delivery
//! crosses shards over a lock-free channel, never through a shared lock.
//!
//! A message is available to consumers as soon as it is appended, before its write completes
//! (as RabbitMQ delivers before its fsync): a basic.get after a publish on the same channel sees
//! it. A crash can then take back an offset a consumer saw; the ack store's restore drops acks
//! beyond the log's end, so a new message at a reused offset is never taken as acknowledged.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use weir_engine::Offset;

use super::dead_letter::Reason;
use super::error::AmqpError;
use super::message::{now_ms, Message};
use super::policy::{QueuePolicy, StreamOffset};
use crate::integer_hash::IntegerMap;
use crate::queues::{
    AckStore, AckStoreOptions, ConsumerId, Durability, QueueKey, QueueSnapshot, QueueState,
    ReturnOutcome,
};
use crate::shard::mesh::{reply_channel, Job, Reply};
use crate::shard::signal::Signal;
use crate::shard::{Shard, ShardId};

/// A connection's id, unique in the process: the shard in the top bits, a counter below.
pub type ConnectionId = u64;

/// The state machine's owner key for one channel of one connection.
pub fn owner_key(connection: ConnectionId, channel: u16) -> ConsumerId {
    ConsumerId((connection << 16) | u64::from(channel))
}

/// What a queue sends a consuming connection.
pub enum Outbound {
    Deliver(Delivery),
    /// The queue was deleted under the consumer: basic.cancel from the server.
    Cancel {
        channel: u16,
        consumer_tag: Arc<str>,
    },
    /// A consumer on a channel with a global prefetch has ready messages and no credit: it
    /// asks its channel for up to `count` (`channel_credit.rs`).
    Want {
        channel: u16,
        consumer_tag: Arc<str>,
        count: u32,
    },
    /// Credit a grant gave that the queue could not use, back to the channel.
    Unused {
        channel: u16,
        epoch: u64,
        count: u32,
    },
}

/// One message handed to a consumer.
pub struct Delivery {
    pub channel: u16,
    pub consumer_tag: Arc<str>,
    pub queue: Arc<str>,
    pub offset: i64,
    pub redelivered: bool,
    pub no_ack: bool,
    pub message: Arc<Message>,
    /// The epoch of the channel credit this delivery used (a consumer under a global
    /// prefetch); `None` for consumers without one.
    pub grant_epoch: Option<u64>,
}

/// A basic.get answer.
pub struct Got {
    pub offset: i64,
    pub redelivered: bool,
    pub message: Arc<Message>,
    /// Ready messages left after this one.
    pub message_count: u32,
}

/// A consumer as basic.consume asks for it.
#[derive(Clone)]
pub struct ConsumerSpec {
    pub connection: ConnectionId,
    pub channel: u16,
    pub tag: Arc<str>,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Unacknowledged deliveries at once; 0 = no limit (the state's cap still holds).
    pub prefetch: u16,
    /// `x-priority`: deliveries go to the highest-priority consumers with room (`priority.rs`).
    pub priority: i64,
    /// `x-stream-offset`: where a consumer of a stream starts (`stream.rs`).
    pub stream_offset: StreamOffset,
    pub sink: flume::Sender<Outbound>,
    /// Its channel has a global prefetch: each delivery needs channel credit.
    pub channel_limited: bool,
}

/// A queue's declared properties, compared on redeclaration (406 when they differ).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    /// `x-single-active-consumer`: only the longest-registered consumer gets deliveries; the
    /// next takes over when it cancels or its channel closes (RabbitMQ's rule).
    pub single_active: bool,
    /// The declare arguments, rendered canonically.
    pub arguments: String,
    /// What the arguments ask for (TTL, length limits, dead-lettering, expiry).
    pub policy: QueuePolicy,
}

/// What acknowledging a delivery does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Requeue,
    Discard,
}

struct Consumer {
    spec: ConsumerSpec,
    in_flight: usize,
    /// A delivery waits for room in the connection's inbox; no more until it is in.
    waiting: bool,
    /// Channel credit: whether deliveries need it, and what a grant left (`credit.rs`).
    credit: credit::Credit,
}

struct Queue {
    name: Arc<str>,
    spec: QueueSpec,
    /// The connection that declared an exclusive queue.
    exclusive_owner: Option<ConnectionId>,
    state: QueueState,
    /// Messages not finished yet, by offset.
    messages: BTreeMap<Offset, Arc<Message>>,
    consumers: Vec<Consumer>,
    next_consumer: usize,
    /// Some consumer has an `x-priority` other than 0.
    consumer_priorities: bool,
    /// `x-max-priority`: the priority order of the ready messages (`priority.rs`).
    priorities: Option<priority::Ready>,
    /// Acquired offsets and the consumer (tag) they went to; `None` for basic.get.
    held: IntegerMap<Offset, Option<Arc<str>>>,
    had_consumer: bool,
    /// Fired when the queue is deleted: its log follower stops.
    stop: Rc<Signal>,
    shard: Rc<Shard>,
    /// Body bytes of `messages`, and of those held: ready bytes are the difference.
    message_bytes: u64,
    held_bytes: u64,
    /// The deadline (ms) of the TTL timer armed for the head, if one is.
    expiry_armed: Option<i64>,
    /// A message here may expire: the queue has a TTL, or one came with its own.
    may_expire: bool,
    /// The last declare, consume, cancel or get: `x-expires` counts from here.
    last_used: Instant,
    /// Messages taken in, handed to consumers (and basic.get), and acknowledged, for the
    /// metrics (`rabbitmq_queue_messages_*_total`).
    published: u64,
    delivered: u64,
    acked: u64,
}

pub mod credit;
mod limits;
mod priority;
pub mod shared;
pub mod stream;

type QueueRef = Rc<RefCell<Queue>>;

thread_local! {
    static QUEUES: RefCell<HashMap<Arc<str>, QueueRef>> = RefCell::new(HashMap::new());
    /// The shard's durable ack state (`queues::AckStore`), opened at start.
    static ACKS: RefCell<Option<Rc<AckStore>>> = const { RefCell::new(None) };
}

/// Opens this shard's ack store (`<data-dir>/queues/acks-<shard>.log`) before any queue is
/// rebuilt.
pub async fn open_ack_store(shard: &Shard) -> anyhow::Result<()> {
    let dir = shard.config.data_dir.join("queues");
    let options = AckStoreOptions {
        flush_delay: std::time::Duration::from_millis(shard.config.queue_ack_flush_ms),
        ..AckStoreOptions::default()
    };
    let store = AckStore::open(&dir, shard.id.index(), options)
        .await
        .map_err(|error| anyhow::anyhow!("opening the queue ack store: {error}"))?;
    ACKS.with(|acks| *acks.borrow_mut() = Some(store));
    Ok(())
}

pub(super) fn ack_store() -> Option<Rc<AckStore>> {
    ACKS.with(|acks| acks.borrow().clone())
}

/// The durable state the ack store holds for queue `name`.
pub fn durable_snapshot(name: &str) -> Option<QueueSnapshot> {
    ack_store()?.snapshot(&QueueKey::new(name, 0))
}

/// Hands what the state journaled to the ack store (group-committed; acks need not be
/// synchronous: a lost one means a redelivery).
fn journal(queue: &mut Queue) {
    if !queue.spec.durable {
        return;
    }
    let entries = queue.state.take_journal();
    if entries.is_empty() {
        return;
    }
    if let Some(store) = ack_store() {
        if let Err(error) = store.record(&QueueKey::new(&*queue.name, 0), entries) {
            tracing::warn!(queue = %queue.name, %error, "recording acks failed");
        }
    }
}

fn find(name: &str) -> Option<QueueRef> {
    QUEUES.with(|queues| queues.borrow().get(name).cloned())
}

fn missing(name: &str) -> AmqpError {
    AmqpError::not_found(format!("no queue '{name}' in vhost '/'"))
}

/// Runs `work` on shard `owner` (at once when that is this shard) and returns where its answer
/// comes. A closed mesh drops the reply sender: the receiver then reports disconnection.
pub async fn on_owner<T, F>(shard: &Rc<Shard>, owner: ShardId, work: F) -> flume::Receiver<T>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>, Reply<T>) + Send + 'static,
{
    let (reply, answer) = reply_channel();
    if owner == shard.id {
        work(shard.clone(), reply);
    } else {
        let job = Job::Run(Box::new(move |shard| work(shard, reply)));
        let _ = shard.mesh.inbox(owner).send_async(job).await;
    }
    answer
}

/// Creates the queue's runtime on its owner, or checks a redeclaration against it. Answers
/// (ready messages, consumers).
pub fn declare(
    shard: &Rc<Shard>,
    name: &str,
    spec: QueueSpec,
    connection: ConnectionId,
    passive: bool,
) -> Result<(u32, u32), AmqpError> {
    access(name, connection)?;
    if stream::exists(name) {
        return stream::redeclare(name, &spec, passive);
    }
    if let Some(queue) = find(name) {
        let mut queue = queue.borrow_mut();
        queue.last_used = Instant::now();
        if !passive && queue.spec != spec {
            return Err(AmqpError::precondition(format!(
                "inequivalent arg for queue '{name}' in vhost '/': declared {:?}, asked {spec:?}",
                queue.spec
            )));
        }
        return Ok(counts(&queue));
    }
    if passive {
        return Err(missing(name));
    }
    if spec.policy.stream {
        stream::install(name, spec, shard.log(name, 0))?;
        return Ok((0, 0));
    }
    let exclusive_owner = spec.exclusive.then_some(connection);
    let end = Offset::new(shard.log(name, 0).map_or(0, |log| log.high_watermark()));
    let durability = if spec.durable {
        Durability::Durable
    } else {
        Durability::Transient
    };
    let state = QueueState::new(end, end, limits::of(&spec.policy), durability);
    install(shard, name, spec, exclusive_owner, BTreeMap::new(), state);
    if let Some(queue) = find(name) {
        journal(&mut queue.borrow_mut());
    }
    Ok((0, 0))
}

fn counts(queue: &Queue) -> (u32, u32) {
    let ready = u32::try_from(queue.state.counts().ready).unwrap_or(u32::MAX);
    (ready, queue.consumers.len() as u32)
}

/// Installs a queue runtime with its state and unfinished messages.
fn install(
    shard: &Rc<Shard>,
    name: &str,
    spec: QueueSpec,
    exclusive_owner: Option<ConnectionId>,
    messages: BTreeMap<Offset, Arc<Message>>,
    state: QueueState,
) {
    let log = shard.log(name, 0);
    let stop = Rc::new(Signal::default());
    let name: Arc<str> = Arc::from(name);
    let may_expire = spec.policy.message_ttl_ms.is_some()
        || messages
            .values()
            .any(|message| message.expiration_ms.is_some());
    let message_bytes = messages.values().map(|m| m.body.len() as u64).sum();
    let expires = spec.policy.expires_ms;
    let mut priorities = priority::Ready::for_queue(spec.policy.max_priority);
    if let Some(ready) = &mut priorities {
        for (&offset, message) in &messages {
            ready.insert(offset, message);
        }
    }
    let queue = Queue {
        name: name.clone(),
        spec,
        exclusive_owner,
        state,
        messages,
        consumers: Vec::new(),
        next_consumer: 0,
        consumer_priorities: false,
        priorities,
        held: IntegerMap::default(),
        had_consumer: false,
        stop: stop.clone(),
        shard: shard.clone(),
        message_bytes,
        held_bytes: 0,
        expiry_armed: None,
        may_expire,
        last_used: Instant::now(),
        published: 0,
        delivered: 0,
        acked: 0,
    };
    let queue = Rc::new(RefCell::new(queue));
    if let Some(log) = log {
        follow(queue.clone(), log, stop);
    }
    if let Some(expires) = expires {
        limits::watch_unused(queue.clone(), std::time::Duration::from_millis(expires));
    }
    limits::arm_expiry(&queue);
    QUEUES.with(|queues| queues.borrow_mut().insert(name, queue));
}

/// Takes in records that reach the queue's log by other paths than an AMQP publish (a Kafka
/// producer writing to the queue's topic, or to an exchange bound to it): waits for the log to
/// grow past what the state knows, decodes the new records as messages and offers them. AMQP
/// publishes advance the state at append, so for them this task only waits.
fn follow(queue: QueueRef, log: weir_engine::Log, stop: Rc<Signal>) {
    glommio::spawn_local(async move {
        loop {
            let next = queue.borrow().state.next_offset().get();
            futures_lite::future::or(log.wait_for_data(next), stop.wait()).await;
            // A closed log wakes every wait at once and will never grow: at shutdown, 100,000
            // queues' followers polling their closed logs kept the shard busy for minutes.
            if stop.is_fired() || log.is_closed() {
                return;
            }
            // AMQP publishes advance the state as they append: what they wrote is known
            // already and is not read back.
            let known = queue.borrow().state.next_offset().get();
            if log.high_watermark() <= known {
                if known == next {
                    // Woken without new data (the log closing, say): do not spin.
                    glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
                }
                continue;
            }
            let Ok(read) = log.read(known, 1 << 20).await else {
                return;
            };
            let mut found = Vec::new();
            for chunk in &read.chunks {
                match super::message::decode_batches(chunk.as_slice()) {
                    Ok(messages) => found.extend(messages),
                    Err(error) => tracing::warn!(%error, "a queue record does not decode"),
                }
            }
            take_in(&queue, found, read.high_watermark);
        }
    })
    .detach();
}

/// Adds records read from the log (those the state does not know yet) and offers them.
fn take_in(queue_ref: &QueueRef, found: Vec<(i64, Message)>, high_watermark: i64) {
    let known = queue_ref.borrow().state.next_offset();
    {
        let mut queue = queue_ref.borrow_mut();
        let mut end = known;
        for (offset, message) in found {
            let offset = Offset::new(offset);
            if offset < known || offset.get() >= high_watermark {
                continue;
            }
            if !queue.messages.contains_key(&offset) {
                queue.insert_message(offset, Arc::new(message));
            }
            end = end.max(offset.next());
        }
        if end > known {
            queue.state.on_appended(end);
        }
    }
    // With the records found, those an AMQP publish left behind a gap are taken in too.
    let end = queue_ref.borrow().state.next_offset();
    schedule_held(queue_ref, known, end);
    dispatch(queue_ref);
}

/// A hold queue's messages in `from..to`, just taken into its state, join its delayed
/// exchange's timer (`delayed.rs`): the timer follows the queue, whatever path appended them.
/// Outside any borrow: scheduling may start the timer's task.
fn schedule_held(queue_ref: &QueueRef, from: Offset, to: Offset) {
    let (shard, name, held) = {
        let queue = queue_ref.borrow();
        if from >= to || !super::delayed::is_hold_queue(&queue.name) {
            return;
        }
        let messages = queue.messages.range(from..to);
        let held: Vec<(Offset, Arc<Message>)> = messages
            .map(|(&offset, message)| (offset, message.clone()))
            .collect();
        (queue.shard.clone(), queue.name.clone(), held)
    };
    for (offset, message) in held {
        super::delayed::schedule_held(&shard, &name, offset, &message);
    }
}

/// Installs a durable queue found at start: its state from the ack store (or, when it has none,
/// everything in the log unfinished and possibly delivered), its unfinished messages from the
/// log (`messages`, whose end is `next`). Answers how many messages are unfinished.
pub fn recover(
    shard: &Rc<Shard>,
    name: &str,
    spec: QueueSpec,
    messages: Vec<(i64, Message)>,
    start: i64,
    next: i64,
) -> usize {
    let next = Offset::new(next);
    let mut snapshot = durable_snapshot(name).unwrap_or(QueueSnapshot {
        floor: Offset::new(start),
        done: Vec::new(),
        delivered_below: next,
        delivery_counts: Vec::new(),
    });
    snapshot.floor = super::consumed::restored_floor(name, snapshot.floor, Offset::new(start));
    let finished = |offset: Offset| {
        offset < snapshot.floor
            || snapshot
                .done
                .iter()
                .any(|&(from, to)| from <= offset && offset < to)
    };
    // A delayed exchange's held messages do not expire while held: their TTL counts in the
    // queues they are routed to once due, as with RabbitMQ's plugin.
    let holds = super::delayed::is_hold_queue(name);
    let messages: BTreeMap<Offset, Arc<Message>> = messages
        .into_iter()
        .map(|(offset, message)| (Offset::new(offset), message))
        .filter(|(offset, _)| !finished(*offset))
        .map(|(offset, mut message)| {
            if holds {
                message.expiration_ms = None;
            }
            (offset, Arc::new(message))
        })
        .collect();
    let state = QueueState::restore(
        &snapshot,
        next,
        limits::of(&spec.policy),
        Durability::Durable,
    );
    let unfinished = messages.len();
    install(shard, name, spec, None, messages, state);
    unfinished
}

/// Every queue of this shard: its name, whether it is durable, and its floor (every offset
/// below it is finished). For deleting consumed segments (`consumed.rs`).
pub(super) fn floors() -> Vec<(Arc<str>, bool, Offset)> {
    QUEUES.with(|queues| {
        let queues = queues.borrow();
        let floor_of = |(name, queue): (&Arc<str>, &QueueRef)| {
            let queue = queue.borrow();
            (name.clone(), queue.spec.durable, queue.state.floor())
        };
        queues.iter().map(floor_of).collect()
    })
}

/// The metrics of this shard's queues (streams have no per-message state and are left out).
pub fn metrics() -> Vec<crate::metrics::gather::QueueStats> {
    QUEUES.with(|queues| {
        queues
            .borrow()
            .values()
            .map(|queue| {
                let queue = queue.borrow();
                let counts = queue.state.counts();
                crate::metrics::gather::QueueStats {
                    name: queue.name.to_string(),
                    ready: counts.ready,
                    unacked: counts.acquired,
                    consumers: queue.consumers.len() as u64,
                    published: queue.published,
                    delivered: queue.delivered,
                    acked: queue.acked,
                }
            })
            .collect()
    })
}

/// Whether this shard has the queue's runtime.
pub fn exists(name: &str) -> bool {
    find(name).is_some() || stream::exists(name)
}

/// Appends `message` to the queue's log and offers it to consumers; answers the log and the
/// message's offset, for `wait_stored`. A full `reject-publish` queue refuses it (the
/// publisher's confirm is a nack).
pub fn publish(
    shard: &Shard,
    name: &str,
    message: Arc<Message>,
) -> Result<(weir_engine::Log, i64), AmqpError> {
    if stream::exists(name) {
        // A stream's readers follow its log: appending is all.
        let log = shard.log(name, 0).ok_or_else(|| missing(name))?;
        let appended = append(&log, name, &message)?;
        return Ok((log, appended.base_offset));
    }
    let queue = find(name).ok_or_else(|| missing(name))?;
    queue.borrow().admit(&message)?;
    let log = shard.log(name, 0).ok_or_else(|| missing(name))?;
    let appended = append(&log, name, &message)?;
    let offset = Offset::new(appended.base_offset);
    let taken_in = {
        let mut queue = queue.borrow_mut();
        queue.insert_message(offset, message);
        // Records another path appended before this one (a Kafka producer) leave a gap the log
        // follower fills once they are written; until then this message waits behind them.
        let taken_in = offset == queue.state.next_offset();
        if taken_in {
            queue.state.on_appended(offset.next());
        }
        taken_in
    };
    if taken_in {
        schedule_held(&queue, offset, offset.next());
    }
    limits::dispatch_fresh(&queue, offset);
    Ok((log, offset.get()))
}

/// Appends a run of messages to the queue's log as one batch (`publish_run.rs`) and offers
/// them to consumers with one state update; answers the log and the last message's offset.
/// The connection's shard sends runs only to queues that neither refuse a publish
/// (`reject-publish`) nor order by priority: their messages are then taken in exactly as one
/// publish each would be. Should the queue have been redeclared otherwise meanwhile, each
/// message goes alone and a refusal nacks the whole run (a nack may name stored messages).
pub fn publish_many(
    shard: &Shard,
    name: &str,
    messages: Vec<Arc<Message>>,
) -> Result<(weir_engine::Log, i64), AmqpError> {
    assert!(!messages.is_empty(), "a run holds at least one publish");
    let count = messages.len() as i64;
    if stream::exists(name) {
        let log = shard.log(name, 0).ok_or_else(|| missing(name))?;
        let appended = append_all(&log, name, &messages)?;
        return Ok((log, appended.base_offset + count - 1));
    }
    let queue = find(name).ok_or_else(|| missing(name))?;
    if !queue.borrow().takes_runs() {
        let mut last = Ok(None);
        for message in messages {
            let stored = publish(shard, name, message).map(Some);
            last = last.and(stored);
        }
        return last?.ok_or_else(|| missing(name));
    }
    let log = shard.log(name, 0).ok_or_else(|| missing(name))?;
    let base = Offset::new(append_all(&log, name, &messages)?.base_offset);
    let end = Offset::new(base.get() + count);
    {
        let mut queue = queue.borrow_mut();
        for (offset, message) in (base.get()..).zip(messages) {
            queue.insert_message(Offset::new(offset), message);
        }
        // As in `publish`: behind a gap another path left, the follower fills it first.
        if base == queue.state.next_offset() {
            queue.state.on_appended(end);
        }
    }
    if queue.borrow().state.next_offset() >= end {
        schedule_held(&queue, base, end);
    }
    limits::dispatch_fresh(&queue, base);
    Ok((log, end.get() - 1))
}

impl Queue {
    /// Whether a run of publishes may be taken in at once: no publish can be refused on its
    /// own and no priority reorders them.
    fn takes_runs(&self) -> bool {
        let policy = &self.spec.policy;
        let limited = policy.max_length.is_some() || policy.max_length_bytes.is_some();
        self.priorities.is_none()
            && !(limited && policy.overflow != super::policy::Overflow::DropHead)
    }
}

/// Resolves once `offset` of a queue's log is stored: written, or on the device when `durable`.
/// Answers `reply` once a publish on the owner (`publish`, `publish_many`) is stored under
/// `durable`, from a task of its own, or at once with its refusal.
pub fn reply_when_stored(
    published: Result<(weir_engine::Log, i64), AmqpError>,
    durable: bool,
    reply: Reply<Result<(), AmqpError>>,
) {
    match published {
        Ok((log, offset)) => {
            glommio::spawn_local(async move {
                let stored = wait_stored(&log, offset, durable).await;
                let _ = reply.send_async(stored).await;
            })
            .detach();
        }
        Err(error) => {
            let _ = reply.try_send(Err(error));
        }
    }
}

pub async fn wait_stored(
    log: &weir_engine::Log,
    offset: i64,
    durable: bool,
) -> Result<(), AmqpError> {
    let stored = if durable {
        log.wait_durable(offset).await
    } else {
        log.wait_written(offset).await
    };
    stored.map_err(|error| AmqpError::internal(format!("storing a message: {error}")))
}

/// The batch is built once and handed to the engine as it is (no copy on the way).
fn append(
    log: &weir_engine::Log,
    name: &str,
    message: &Message,
) -> Result<weir_engine::Appended, AmqpError> {
    let batch = message.to_batch();
    let bytes = batch.len();
    let appended = log
        .append(batch)
        .map_err(|error| AmqpError::internal(format!("storing to queue '{name}': {error:?}")))?;
    crate::metrics::appended(name, bytes, 1);
    Ok(appended)
}

fn append_all(
    log: &weir_engine::Log,
    name: &str,
    messages: &[Arc<Message>],
) -> Result<weir_engine::Appended, AmqpError> {
    let batch = super::message::to_batch(messages);
    let bytes = batch.len();
    let appended = log
        .append(batch)
        .map_err(|error| AmqpError::internal(format!("storing to queue '{name}': {error:?}")))?;
    crate::metrics::appended(name, bytes, messages.len() as u64);
    Ok(appended)
}

/// Acquires the message at `offset` for `owner` out of order (a delayed exchange takes its
/// held messages by due time, `delayed.rs`); `None` if it is not available.
pub fn take(name: &str, owner: ConsumerId, offset: Offset) -> Option<Arc<Message>> {
    let queue = find(name)?;
    let mut queue = queue.borrow_mut();
    let message = queue.messages.get(&offset).cloned()?;
    queue.state.acquire_at(owner, offset, Instant::now())?;
    queue.hold(offset, None);
    journal(&mut queue);
    Some(message)
}

/// Every unfinished message of the queue, by offset (a delayed exchange's held messages, to
/// schedule again after a restart).
pub fn unfinished(name: &str) -> Vec<(Offset, Arc<Message>)> {
    find(name).map_or_else(Vec::new, |queue| {
        let queue = queue.borrow();
        let messages = queue.messages.iter();
        messages
            .map(|(&offset, message)| (offset, message.clone()))
            .collect()
    })
}

/// 405 when `name` is another connection's exclusive queue: RabbitMQ refuses every queue
/// method (declare, bind, unbind, purge, delete, consume, get) from other connections. A queue
/// that does not exist passes (each method answers that its own way).
pub fn access(name: &str, connection: ConnectionId) -> Result<(), AmqpError> {
    let Some(queue) = find(name) else {
        return Ok(());
    };
    let owner = queue.borrow().exclusive_owner;
    match owner {
        Some(owner) if owner != connection => Err(AmqpError::resource_locked(format!(
            "cannot obtain exclusive access to locked queue '{name}' in vhost '/'"
        ))),
        _ => Ok(()),
    }
}

/// Adds a consumer (basic.consume) and starts delivering to it.
pub fn consume(name: &str, spec: ConsumerSpec) -> Result<(), AmqpError> {
    if stream::exists(name) {
        let start = spec.stream_offset;
        return stream::consume(name, spec, start);
    }
    let queue = find(name).ok_or_else(|| missing(name))?;
    access(name, spec.connection)?;
    {
        let mut queue = queue.borrow_mut();
        if queue.consumers.iter().any(|c| c.spec.exclusive)
            || (spec.exclusive && !queue.consumers.is_empty())
        {
            return Err(AmqpError::access_refused(format!(
                "queue '{name}' in vhost '/' in exclusive use"
            )));
        }
        queue.had_consumer = true;
        queue.last_used = Instant::now();
        let credit = credit::Credit::new(spec.channel_limited);
        queue.consumers.push(Consumer {
            spec,
            in_flight: 0,
            waiting: false,
            credit,
        });
        queue.note_consumer_priorities();
    }
    dispatch(&queue);
    Ok(())
}

/// Removes a consumer (basic.cancel). Its unacknowledged deliveries stay with its channel.
/// Answers whether an auto-delete queue lost its last consumer (the caller deletes it).
pub fn cancel(name: &str, owner: ConsumerId, tag: &str) -> bool {
    stream::stop_readers(name, |c| owner_of(c) == owner && &*c.tag == tag);
    let Some(queue) = find(name) else {
        return false;
    };
    let mut queue = queue.borrow_mut();
    queue.last_used = Instant::now();
    queue
        .consumers
        .retain(|c| !(owner_of(&c.spec) == owner && &*c.spec.tag == tag));
    queue.note_consumer_priorities();
    queue.spec.auto_delete && queue.had_consumer && queue.consumers.is_empty()
}

fn owner_of(spec: &ConsumerSpec) -> ConsumerId {
    owner_key(spec.connection, spec.channel)
}

/// basic.get: the next ready message, acquired by `owner` (and finished at once if `no_ack`).
pub fn get(name: &str, owner: ConsumerId, no_ack: bool) -> Result<Option<Got>, AmqpError> {
    if stream::exists(name) {
        return Err(stream::not_supported(60, 70, "basic.get", name));
    }
    let queue_ref = find(name).ok_or_else(|| missing(name))?;
    let got = {
        let mut queue = queue_ref.borrow_mut();
        queue.last_used = Instant::now();
        let mut dead = Vec::new();
        queue.expire_head(now_ms(), None, &mut dead);
        queue.bury(dead);
        let got = get_in(&mut queue, owner, no_ack);
        journal(&mut queue);
        got
    };
    limits::arm_expiry(&queue_ref);
    Ok(got)
}

/// The message as this delivery (the `delivery_count`th) hands it out: a quorum queue's carry
/// `x-delivery-count`, a copy with its properties re-encoded; any other queue's go as stored.
fn as_delivered(queue: &Queue, message: Arc<Message>, delivery_count: u16) -> Arc<Message> {
    if !queue.spec.policy.quorum {
        return message;
    }
    Arc::new(message.with_delivery_count(delivery_count.saturating_sub(1)))
}

fn get_in(queue: &mut Queue, owner: ConsumerId, no_ack: bool) -> Option<Got> {
    let acquired = queue.acquire_next(owner, Instant::now())?;
    let offset = acquired.offset;
    let Some(message) = queue.messages.get(&offset).cloned() else {
        // A record without a message cannot be: drop it rather than hand out nothing.
        let _ = queue.state.accept(owner, offset);
        return None;
    };
    let message = as_delivered(queue, message, acquired.delivery_count);
    queue.delivered += 1;
    if no_ack {
        let _ = queue.state.accept(owner, offset);
        queue.remove_message(offset);
    } else {
        queue.hold(offset, None);
    }
    Some(Got {
        offset: offset.get(),
        redelivered: acquired.redelivered,
        message,
        message_count: counts(queue).0,
    })
}

/// Acknowledges, requeues or discards deliveries `owner` holds, then delivers what that frees.
pub fn settle(
    name: &str,
    owner: ConsumerId,
    offsets: &[i64],
    how: Settle,
) -> Result<(), AmqpError> {
    if stream::exists(name) {
        // Only acks reach here (`basic.rs` refuses nack and reject on a stream).
        stream::settle(name, owner, offsets);
        return Ok(());
    }
    let Some(queue) = find(name) else {
        // Deleted meanwhile: nothing left to settle.
        return Ok(());
    };
    let result = {
        let mut queue = queue.borrow_mut();
        let mut dead = Vec::new();
        let result = settle_in(&mut queue, owner, offsets, how, &mut dead);
        journal(&mut queue);
        queue.bury(dead);
        result
    };
    dispatch(&queue);
    result
}

fn settle_in(
    queue: &mut Queue,
    owner: ConsumerId,
    offsets: &[i64],
    how: Settle,
    dead: &mut Vec<(Arc<Message>, Reason)>,
) -> Result<(), AmqpError> {
    if how == Settle::Ack {
        return ack_all(queue, owner, offsets);
    }
    for &offset in offsets {
        let offset = Offset::new(offset);
        let died = match how {
            Settle::Ack => queue.state.accept(owner, offset).map(|()| None),
            Settle::Requeue => queue
                .state
                .release(owner, offset)
                .map(|outcome| match outcome {
                    ReturnOutcome::Requeued => {
                        queue.requeued(offset);
                        None
                    }
                    ReturnOutcome::Archived(_) => Some(Reason::DeliveryLimit),
                }),
            Settle::Discard => queue
                .state
                .reject(owner, offset)
                .map(|()| Some(Reason::Rejected)),
        };
        let died = died
            .map_err(|error| AmqpError::precondition(format!("unknown delivery tag: {error}")))?;
        queue.credit_back(offset, owner);
        let finished = how == Settle::Ack || died.is_some();
        if finished {
            if let (Some(message), Some(reason)) = (queue.remove_message(offset), died) {
                dead.push((message, reason));
            }
        }
    }
    Ok(())
}

/// Acks go to the state all at once (`QueueState::accept_all`): an ack `multiple` names a run
/// of consecutive offsets, which the state finishes as one range.
fn ack_all(queue: &mut Queue, owner: ConsumerId, offsets: &[i64]) -> Result<(), AmqpError> {
    let offsets: Vec<Offset> = offsets.iter().map(|&offset| Offset::new(offset)).collect();
    let (accepted, result) = queue.state.accept_all(owner, &offsets);
    queue.acked += accepted as u64;
    for &offset in &offsets[..accepted] {
        queue.credit_back(offset, owner);
        queue.remove_message(offset);
    }
    result.map_err(|error| AmqpError::precondition(format!("unknown delivery tag: {error}")))
}

impl Queue {
    /// A held offset came back from `owner`: its consumer may take one more.
    fn credit_back(&mut self, offset: Offset, owner: ConsumerId) {
        if let Some(Some(tag)) = self.unhold(offset) {
            if let Some(consumer) = self
                .consumers
                .iter_mut()
                .find(|c| owner_of(&c.spec) == owner && c.spec.tag == tag)
            {
                consumer.in_flight = consumer.in_flight.saturating_sub(1);
            }
        }
    }
}

/// A channel closed: its consumers go and every delivery it held comes back, in order, flagged
/// redelivered. Answers whether an auto-delete queue lost its last consumer.
pub fn release_channel(name: &str, owner: ConsumerId) -> bool {
    stream::stop_readers(name, |c| owner_of(c) == owner);
    let Some(queue) = find(name) else {
        return false;
    };
    let emptied = {
        let mut queue = queue.borrow_mut();
        let before = queue.consumers.len();
        queue.consumers.retain(|c| owner_of(&c.spec) != owner);
        queue.note_consumer_priorities();
        if before > queue.consumers.len() {
            queue.last_used = Instant::now();
        }
        let mut dead = Vec::new();
        for returned in queue.state.release_owner(owner) {
            queue.unhold(returned.offset);
            match returned.outcome {
                ReturnOutcome::Requeued => queue.requeued(returned.offset),
                ReturnOutcome::Archived(_) => {
                    if let Some(message) = queue.remove_message(returned.offset) {
                        dead.push((message, Reason::DeliveryLimit));
                    }
                }
            }
        }
        queue.bury(dead);
        journal(&mut queue);
        queue.spec.auto_delete && queue.had_consumer && before > 0 && queue.consumers.is_empty()
    };
    dispatch(&queue);
    emptied
}

/// queue.purge: drops every ready message; how many.
pub fn purge(name: &str) -> Result<u32, AmqpError> {
    if stream::exists(name) {
        return Err(stream::not_supported(50, 30, "queue.purge", name));
    }
    let queue = find(name).ok_or_else(|| missing(name))?;
    let mut queue = queue.borrow_mut();
    let purged = queue.state.purge();
    let Queue {
        messages,
        held,
        priorities,
        ..
    } = &mut *queue;
    messages.retain(|offset, _| held.contains_key(offset));
    if let Some(ready) = priorities {
        ready.purge(|offset| held.contains_key(offset));
    }
    queue.message_bytes = queue.messages.values().map(|m| m.body.len() as u64).sum();
    journal(&mut queue);
    Ok(u32::try_from(purged).unwrap_or(u32::MAX))
}

/// queue.delete on the owner: checks `if_unused`/`if_empty`, cancels the consumers (they are
/// told), forgets the runtime. Answers the messages it held; the caller deletes the topic.
pub fn delete(name: &str, if_unused: bool, if_empty: bool) -> Result<u32, AmqpError> {
    if stream::exists(name) {
        return stream::delete(name, if_unused);
    }
    let Some(queue) = find(name) else {
        return Ok(0);
    };
    let queue = queue.borrow();
    if if_unused && !queue.consumers.is_empty() {
        return Err(AmqpError::precondition(format!("queue '{name}' in use")));
    }
    let count = queue.state.counts().total;
    if if_empty && count > 0 {
        return Err(AmqpError::precondition(format!("queue '{name}' not empty")));
    }
    for consumer in &queue.consumers {
        let _ = consumer.spec.sink.try_send(Outbound::Cancel {
            channel: consumer.spec.channel,
            consumer_tag: consumer.spec.tag.clone(),
        });
    }
    let durable = queue.spec.durable;
    queue.stop.fire();
    drop(queue);
    QUEUES.with(|queues| queues.borrow_mut().remove(name));
    if let (true, Some(store)) = (durable, ack_store()) {
        if let Err(error) = store.forget(&QueueKey::new(name, 0)) {
            tracing::warn!(queue = name, %error, "forgetting a deleted queue's acks failed");
        }
    }
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

/// Drops what expired or overflows at the head, then hands ready messages to consumers with
/// room, round-robin, until either runs out.
fn dispatch(queue_ref: &QueueRef) {
    {
        let mut queue = queue_ref.borrow_mut();
        let mut dead = Vec::new();
        queue.expire_head(now_ms(), None, &mut dead);
        queue.drop_over_limit(&mut dead);
        dispatch_ready(queue_ref, &mut queue);
        credit::ask(&mut queue);
        journal(&mut queue);
        queue.bury(dead);
    }
    limits::arm_expiry(queue_ref);
}

fn dispatch_ready(queue_ref: &QueueRef, queue: &mut Queue) {
    let now = Instant::now();
    while queue.state.counts().ready > 0 {
        let Some(index) = queue.next_with_room() else {
            return;
        };
        let owner = owner_of(&queue.consumers[index].spec);
        let Some(acquired) = queue.acquire_next(owner, now) else {
            return;
        };
        let offset = acquired.offset;
        let Some(message) = queue.messages.get(&offset).cloned() else {
            let _ = queue.state.accept(owner, offset);
            continue;
        };
        let message = as_delivered(queue, message, acquired.delivery_count);
        let grant_epoch = queue.consumers[index].credit.take_one();
        // The fields, not the whole spec: cloning it per delivery cost two atomic counts (its
        // tag and its sink) each way.
        let spec = &queue.consumers[index].spec;
        let (tag, no_ack) = (spec.tag.clone(), spec.no_ack);
        let delivery = Delivery {
            channel: spec.channel,
            consumer_tag: tag.clone(),
            queue: queue.name.clone(),
            offset: offset.get(),
            redelivered: acquired.redelivered,
            no_ack,
            message,
            grant_epoch,
        };
        if no_ack {
            let _ = queue.state.accept(owner, offset);
            queue.remove_message(offset);
        } else {
            queue.consumers[index].in_flight += 1;
            queue.hold(offset, Some(tag.clone()));
        }
        queue.next_consumer = index + 1;
        queue.delivered += 1;
        let sink = &queue.consumers[index].spec.sink;
        match sink.try_send(Outbound::Deliver(delivery)) {
            Ok(()) => {}
            Err(flume::TrySendError::Full(delivery)) => {
                let sink = sink.clone();
                queue.consumers[index].waiting = true;
                wait_for_room(queue_ref.clone(), sink, delivery, owner, tag);
            }
            // The connection is gone; its close releases what it held.
            Err(flume::TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Sends a delivery that found the consumer's inbox full once there is room, then resumes
/// dispatching (backpressure from a slow consumer, not growth).
fn wait_for_room(
    queue: QueueRef,
    sink: flume::Sender<Outbound>,
    delivery: Outbound,
    owner: ConsumerId,
    tag: Arc<str>,
) {
    glommio::spawn_local(async move {
        let _ = sink.send_async(delivery).await;
        {
            let mut queue = queue.borrow_mut();
            if let Some(consumer) = queue
                .consumers
                .iter_mut()
                .find(|c| owner_of(&c.spec) == owner && c.spec.tag == tag)
            {
                consumer.waiting = false;
            }
        }
        dispatch(&queue);
    })
    .detach();
}

impl Consumer {
    /// Room under its own prefetch (basic.qos global=false).
    fn has_own_room(&self) -> bool {
        self.spec.prefetch == 0 || self.in_flight < usize::from(self.spec.prefetch)
    }
}

impl Queue {
    /// The consumer to deliver to next: of those that may take a delivery now, one of the highest
    /// priority, taking turns from `next_consumer` on.
    fn next_with_room(&self) -> Option<usize> {
        let count = if self.spec.single_active {
            // Consumers are kept in registration order: the first is the active one.
            self.consumers.len().min(1)
        } else {
            self.consumers.len()
        };
        let has_room = |&index: &usize| {
            let consumer = &self.consumers[index];
            !consumer.waiting && consumer.has_own_room() && consumer.credit.may_deliver()
        };
        let mut turns = (0..count).map(|step| (self.next_consumer + step) % count);
        if !self.consumer_priorities {
            return turns.find(has_room);
        }
        // The first in turn among the highest: `max_by_key` keeps the last of equals.
        turns
            .filter(has_room)
            .enumerate()
            .max_by_key(|&(turn, index)| (self.consumers[index].spec.priority, Reverse(turn)))
            .map(|(_, index)| index)
    }
}
