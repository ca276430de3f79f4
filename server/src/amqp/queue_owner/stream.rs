//! Stream queues (`x-queue-type=stream`) on their owning shard: the log is the queue. Nothing is
//! held per message: each consumer (a reader) has its own task that reads the log from its
//! `x-stream-offset` on, in log order, through the engine's reads, and hands what it read to the
//! consuming connection within its prefetch. An ack only returns prefetch credit; messages stay
//! until Kafka retention (`retention.bytes` / `retention.ms` from the declare) deletes their
//! segment, never by the consumed-segment deletion of `consumed.rs`.
//!
//! Runs on the owning shard only (shard-local `thread_local!`, `Rc`, `RefCell`, no borrow
//! across an `.await`). A reader holds at most one read's worth of decoded messages
//! (`READ_BYTES`, or one batch if larger); what it delivered is in its connection's bounded inbox
//! and then with the client, so memory per consumer is bounded whatever the stream's length.
//!
//! ```text
//! x-stream-offset   starts at (log start S, log end E)
//! first             S
//! last              the first offset of the last batch below H, the high watermark
//!                   (RabbitMQ's last chunk; Kafka control batches stepped over); S if empty
//! next (default)    E
//! n (integer)       n, within S..=E
//! timestamp t       the first message stored at or after t (E if none)
//! interval "30s"    as a timestamp of now - 30 s (units Y M D h m s)
//! ```

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::types::AMQPValue;
use futures_lite::future;
use weir_engine::batch::Header;
use weir_engine::Log;

use super::{owner_of, ConsumerSpec, Delivery, Outbound, QueueSpec};
use crate::amqp::error::AmqpError;
use crate::amqp::message::{decode_batches, now_ms, Message};
use crate::amqp::names;
use crate::amqp::policy::StreamOffset;
use crate::queues::ConsumerId;
use crate::shard::signal::Signal;

/// Bytes a reader asks of the log per read: what it holds decoded and not delivered yet.
const READ_BYTES: usize = 256 << 10;
/// How many Kafka control batches (transaction markers, no message) `last` steps back over
/// before it settles for the batch it found.
const CONTROL_BATCHES_SKIPPED_MAX: usize = 16;
/// A reader woken with nothing new (the log closing at shutdown) waits this long before it
/// looks again, rather than spin.
const IDLE_WAIT: Duration = Duration::from_millis(50);

struct Stream {
    spec: QueueSpec,
    log: Log,
    readers: Vec<Rc<Reader>>,
}

/// One consumer of a stream.
struct Reader {
    spec: ConsumerSpec,
    /// Offsets delivered and not acknowledged yet (how many times each: two deliveries of one
    /// offset can be out on one channel).
    unacked: RefCell<BTreeMap<i64, u32>>,
    /// An ack sends one here: the reader may have room again.
    credit: (flume::Sender<()>, flume::Receiver<()>),
    /// Fired when the consumer is cancelled, its channel closes or the stream is deleted.
    stop: Signal,
}

impl Reader {
    fn has_room(&self) -> bool {
        let unacked: u32 = self.unacked.borrow().values().sum();
        unacked < u32::from(self.spec.prefetch.max(1))
    }
}

thread_local! {
    static STREAMS: RefCell<HashMap<Arc<str>, Stream>> = RefCell::new(HashMap::new());
}

/// Whether this shard owns stream `name`.
pub fn exists(name: &str) -> bool {
    STREAMS.with(|streams| streams.borrow().contains_key(name))
}

/// Installs the runtime of stream `name` (declared, or found at start) over its log.
pub fn install(name: &str, spec: QueueSpec, log: Option<Log>) -> Result<(), AmqpError> {
    let log =
        log.ok_or_else(|| AmqpError::internal(format!("the log of stream '{name}' is not open")))?;
    let stream = Stream {
        spec,
        log,
        readers: Vec::new(),
    };
    STREAMS.with(|streams| streams.borrow_mut().insert(Arc::from(name), stream));
    Ok(())
}

/// A redeclaration: 406 when its properties or arguments differ. Answers the messages the log
/// holds and the consumers (RabbitMQ 3.10 answers counters it refreshes every few seconds).
pub fn redeclare(name: &str, spec: &QueueSpec, passive: bool) -> Result<(u32, u32), AmqpError> {
    STREAMS.with(|streams| {
        let streams = streams.borrow();
        let Some(stream) = streams.get(name) else {
            return Ok((0, 0));
        };
        if !passive && stream.spec != *spec {
            return Err(AmqpError::precondition(format!(
                "inequivalent arg for queue '{}' in vhost '/': declared {:?}, asked {spec:?}",
                names::amqp_name(name),
                stream.spec
            )));
        }
        let messages = stream.log.high_watermark() - stream.log.log_start_offset();
        let consumers = stream.readers.len();
        Ok((
            u32::try_from(messages).unwrap_or(u32::MAX),
            u32::try_from(consumers).unwrap_or(u32::MAX),
        ))
    })
}

/// Adds a consumer reading from `start` and starts its reader.
pub fn consume(name: &str, spec: ConsumerSpec, start: StreamOffset) -> Result<(), AmqpError> {
    let reader = Rc::new(Reader {
        spec,
        unacked: RefCell::new(BTreeMap::new()),
        credit: flume::bounded(1),
        stop: Signal::default(),
    });
    let log = STREAMS.with(|streams| {
        let mut streams = streams.borrow_mut();
        let stream = streams.get_mut(name)?;
        stream.readers.push(reader.clone());
        Some(stream.log.clone())
    });
    let log = log.ok_or_else(|| super::missing(name))?;
    // Resolved now, not in the reader's task: a publish that follows the consume-ok must be
    // past a `next` consumer's start.
    let from = start_of(&log, start);
    glommio::spawn_local(read_and_deliver(log, reader, Arc::from(name), from)).detach();
    Ok(())
}

/// Where a reader starts: an offset, a time (ms) to look up in the log's time index, or the
/// last batch below an offset (`last`).
enum Start {
    Offset(i64),
    Time(i64),
    LastBatchBelow(i64),
}

fn start_of(log: &Log, start: StreamOffset) -> Start {
    let (first, end) = (log.log_start_offset(), log.log_end_offset());
    match start {
        StreamOffset::First => Start::Offset(first),
        StreamOffset::Last => match log.high_watermark() {
            visible if visible > first => Start::LastBatchBelow(visible),
            _ => Start::Offset(first),
        },
        StreamOffset::Next => Start::Offset(end),
        StreamOffset::At(offset) => Start::Offset(offset.clamp(first, end.max(first))),
        StreamOffset::Since(ms) => Start::Time(ms),
        StreamOffset::Within(ms) => {
            Start::Time(now_ms().saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX)))
        }
    }
}

async fn resolve(log: &Log, start: Start) -> i64 {
    match start {
        Start::Offset(offset) => offset,
        Start::Time(ms) => match log.offset_for_timestamp(ms).await {
            Ok(Some((offset, _))) => offset.max(log.log_start_offset()),
            _ => log.log_end_offset(),
        },
        Start::LastBatchBelow(end) => last_batch_start(log, end).await,
    }
}

/// RabbitMQ's `last`: the first offset of the last chunk. Weir's chunk is a record batch: one
/// AMQP publish, or a Kafka producer's batch of many records. A batch that holds no message (a
/// Kafka transaction's control batch) is stepped over, up to `CONTROL_BATCHES_SKIPPED_MAX`. A
/// read that fails falls back to the last message (logged).
async fn last_batch_start(log: &Log, end: i64) -> i64 {
    let first = log.log_start_offset();
    let mut holding = end - 1;
    let mut start = holding;
    for _ in 0..=CONTROL_BATCHES_SKIPPED_MAX {
        if holding < first {
            break;
        }
        let (base, control) = match batch_holding(log, holding).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(dir = %log.dir().display(), %error, "finding a stream's last batch");
                return (end - 1).max(first);
            }
        };
        start = base;
        if !control {
            break;
        }
        holding = base - 1;
    }
    start.max(first)
}

/// The base offset of the batch holding `offset`, and whether it is a control batch: a read
/// returns whole batches from the one holding the offset asked.
async fn batch_holding(log: &Log, offset: i64) -> Result<(i64, bool), String> {
    let read = log
        .read(offset, 1)
        .await
        .map_err(|error| error.to_string())?;
    let header = read
        .chunks
        .first()
        .and_then(|chunk| Header::new(chunk.as_slice()))
        .ok_or_else(|| format!("no batch holds offset {offset}"))?;
    Ok((header.base_offset(), header.is_control()))
}

/// A reader's task: reads the log from its start on and delivers each message within the
/// consumer's prefetch, until it is stopped.
async fn read_and_deliver(log: Log, reader: Rc<Reader>, queue: Arc<str>, start: Start) {
    let mut next = resolve(&log, start).await;
    let mut pending: VecDeque<(i64, Message)> = VecDeque::new();
    while !reader.stop.is_fired() {
        if pending.is_empty() {
            match read_from(&log, &reader.stop, &mut next).await {
                Some(read) => pending = read,
                None => return,
            }
        }
        while !reader.has_room() && !reader.stop.is_fired() {
            let credit = async {
                let _ = reader.credit.1.recv_async().await;
            };
            future::or(credit, reader.stop.wait()).await;
        }
        let Some((offset, message)) = pending.pop_front() else {
            continue;
        };
        if reader.stop.is_fired() {
            return;
        }
        deliver(&reader, &queue, offset, message).await;
        next = offset + 1;
    }
}

/// The messages at `next` and after that one read finds, once the log has some (`next` moves
/// past records no AMQP consumer can take); `None` once the reader is stopped.
async fn read_from(log: &Log, stop: &Signal, next: &mut i64) -> Option<VecDeque<(i64, Message)>> {
    loop {
        if log.high_watermark() <= *next {
            let at = *next;
            future::or(log.wait_for_data(at), stop.wait()).await;
            if stop.is_fired() {
                return None;
            }
            if log.high_watermark() <= *next {
                glommio::timer::sleep(IDLE_WAIT).await;
                continue;
            }
        }
        // Retention may have deleted what this reader had not read yet: it goes on from the
        // oldest message kept.
        *next = (*next).max(log.log_start_offset());
        let read = match log.read(*next, READ_BYTES).await {
            Ok(read) => read,
            Err(error) => {
                // The stream is being deleted (its reader stops), or the read failed: retry.
                tracing::warn!(dir = %log.dir().display(), %error, "reading a stream failed");
                glommio::timer::sleep(IDLE_WAIT).await;
                if stop.is_fired() {
                    return None;
                }
                continue;
            }
        };
        let from = *next;
        let mut found = VecDeque::new();
        for chunk in &read.chunks {
            match decode_batches(chunk.as_slice()) {
                Ok(messages) => found.extend(
                    messages
                        .into_iter()
                        .filter(|(offset, _)| *offset >= from && *offset < read.high_watermark),
                ),
                Err(error) => tracing::warn!(%error, "a stream record does not decode"),
            }
        }
        if found.is_empty() {
            *next += 1;
            continue;
        }
        return Some(found);
    }
}

/// Hands one message to the consumer's connection with RabbitMQ's `x-stream-offset` header (a
/// long: the message's log offset), waiting for room in its inbox.
async fn deliver(reader: &Reader, queue: &Arc<str>, offset: i64, message: Message) {
    let message = message.with_header("x-stream-offset", AMQPValue::LongLongInt(offset));
    *reader.unacked.borrow_mut().entry(offset).or_default() += 1;
    let delivery = Outbound::Deliver(Delivery {
        channel: reader.spec.channel,
        consumer_tag: reader.spec.tag.clone(),
        queue: queue.clone(),
        offset,
        redelivered: false,
        no_ack: false,
        message: Arc::new(message),
        // A stream's readers keep their own credit; the channel's global one is not asked.
        grant_epoch: None,
    });
    let send = async {
        // A connection that is gone is released by its close, which stops this reader.
        let _ = reader.spec.sink.send_async(delivery).await;
    };
    future::or(send, reader.stop.wait()).await;
}

/// Acks from `owner`: each returns one delivery's prefetch credit to the reader it came from.
pub fn settle(name: &str, owner: ConsumerId, offsets: &[i64]) {
    let readers = owned_readers(name, |reader| owner_of(&reader.spec) == owner);
    for &offset in offsets {
        let reader = readers
            .iter()
            .find(|reader| reader.unacked.borrow().contains_key(&offset));
        if let Some(reader) = reader {
            let mut unacked = reader.unacked.borrow_mut();
            if let Some(count) = unacked.get_mut(&offset) {
                *count -= 1;
                if *count == 0 {
                    unacked.remove(&offset);
                }
            }
            let _ = reader.credit.0.try_send(());
        }
    }
}

fn owned_readers(name: &str, mine: impl Fn(&Reader) -> bool) -> Vec<Rc<Reader>> {
    STREAMS.with(|streams| {
        let streams = streams.borrow();
        let Some(stream) = streams.get(name) else {
            return Vec::new();
        };
        stream.readers.iter().filter(|r| mine(r)).cloned().collect()
    })
}

/// Stops and removes the readers `gone` picks (basic.cancel, a channel's close).
pub fn stop_readers(name: &str, gone: impl Fn(&ConsumerSpec) -> bool) {
    STREAMS.with(|streams| {
        let mut streams = streams.borrow_mut();
        if let Some(stream) = streams.get_mut(name) {
            stream.readers.retain(|reader| {
                let stopped = gone(&reader.spec);
                if stopped {
                    reader.stop.fire();
                }
                !stopped
            });
        }
    });
}

/// queue.delete: every consumer is stopped and told (basic.cancel). A stream answers 0
/// messages, as RabbitMQ 3.10 does.
pub fn delete(name: &str, if_unused: bool) -> Result<u32, AmqpError> {
    STREAMS.with(|streams| {
        let mut streams = streams.borrow_mut();
        let Some(stream) = streams.get(name) else {
            return Ok(0);
        };
        if if_unused && !stream.readers.is_empty() {
            return Err(AmqpError::precondition(format!(
                "queue '{}' in use",
                names::amqp_name(name)
            )));
        }
        for reader in &stream.readers {
            reader.stop.fire();
            let _ = reader.spec.sink.try_send(Outbound::Cancel {
                channel: reader.spec.channel,
                consumer_tag: reader.spec.tag.clone(),
            });
        }
        streams.remove(name);
        Ok(0)
    })
}

/// RabbitMQ 3.10's answer to a method streams do not have (basic.get, queue.purge, nack and
/// reject): 540 NOT_IMPLEMENTED, closing the connection.
pub fn not_supported(class_id: u16, method_id: u16, method: &str, name: &str) -> AmqpError {
    AmqpError::not_implemented(
        class_id,
        method_id,
        format!(
            "{method} not supported by stream queues queue '{}' in vhost '/'",
            names::amqp_name(name)
        ),
    )
}
