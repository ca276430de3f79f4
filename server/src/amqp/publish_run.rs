//! Runs of publishes: complete publishes on one channel, already read from the socket, that
//! route to the same one queue are stored as one record batch with a record each, taken into
//! the queue's state at once, and confirmed together (one confirm-queue entry; the confirm
//! loop acks them with `multiple`). Per message, a publish cost a batch, an append, a state
//! update and a dispatch on the owner, and a confirm entry: most of the shard's time at load.
//!
//! Runs on the connection's shard; the run lives in `Conn::run`, never borrowed across an
//! `.await`. A run only gathers what was read already: it is stored (`flush`) before the reader
//! would wait for the socket, before any frame other than the next publish's on the same
//! channel is handled, before any publish that does not join it, and when its channel is
//! released. So no publish waits for a later one, and every other method, on any channel, sees
//! the effects of the publishes read before it, as if each had been stored on its own.
//!
//! | a publish joins the run when                        | otherwise                        |
//! |-----------------------------------------------------|----------------------------------|
//! | not in a transaction, not a reply (`reply_to.rs`),  | the run is stored first, then    |
//! | not to a delayed exchange                           | the publish as before            |
//! | it routes to exactly one queue                      | (`basic::publish_now`)           |
//! | the queue neither refuses a publish alone           |                                  |
//! | (`reject-publish`) nor reorders (`x-max-priority`)  |                                  |
//! | same channel, queue and persistence as the run, and | the run is stored, a new one     |
//! | the run is below its message and byte caps         | starts with it                   |
//!
//! A publish that errors (a missing exchange, a bad `expiration`) never joins: the run before
//! it is stored as the channel closes, exactly what storing each publish at once did.

use std::rc::Rc;
use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass};

use super::basic::Stored;
use super::channel::{Channel, Publishing};
use super::connection::Conn;
use super::error::AmqpError;
use super::frame::Frame;
use super::message::Message;
use super::policy::{CONFIG_MAX_PRIORITY, CONFIG_OVERFLOW};
use super::queue::{owner_in, CONFIG_DURABLE};
use super::queue_owner;
use crate::metadata::Metadata;
use crate::shard::Shard;

/// Publishes in one run at most: bounds the batch and the time before the first is stored.
const RUN_MESSAGES_MAX: usize = 1024;
/// Body bytes in one run at most (a single larger publish still goes, alone).
const RUN_BODY_BYTES_MAX: usize = 1 << 20;

/// Publishes read and not stored yet, all on `channel` to `destination`.
pub struct Run {
    channel: Rc<Channel>,
    metadata: Arc<Metadata>,
    destination: String,
    persistent: bool,
    /// The (exchange, routing key) whose route is `destination`, when that route did not
    /// depend on headers: a publish with the same ones is not routed again.
    routed: Option<(String, String)>,
    /// The clock read for the run's first publish: every message of a run is stored at once,
    /// so they share it (and a stream's time index finds each at its own time).
    stored_ms: i64,
    messages: Vec<Arc<Message>>,
    body_bytes: usize,
}

/// Adds `publishing` (checked, not in a transaction) to the connection's run, storing the run
/// first if it cannot join it; gives it back when it must be published alone.
pub async fn join(
    conn: &Rc<Conn>,
    channel: &Rc<Channel>,
    publishing: Publishing,
) -> Result<Option<Publishing>, AmqpError> {
    let Some(header) = publishing.header.as_ref() else {
        return Ok(Some(publishing));
    };
    let (exchange, key) = (
        publishing.publish.exchange.as_str(),
        publishing.publish.routing_key.as_str(),
    );
    let properties = &header.properties;
    let metadata = conn.shard.metadata();
    // In `publish_now`'s order: a routing error before a bad expiration.
    let route = route(conn, channel, &metadata, exchange, key, properties)?;
    if matches!(route, Route::Alone) {
        return Ok(Some(publishing));
    }
    let expiration_ms = super::message::expiration(properties)?;
    let persistent = super::message::is_persistent(properties);
    let body_bytes = publishing.body.len();
    let headerless = exchange.is_empty() || properties.headers().is_none();
    let routed = match &route {
        Route::Queue(_) => Some(headerless.then(|| (exchange.to_string(), key.to_string()))),
        Route::Run | Route::Alone => None,
    };
    if let Some(fresh) = next_run(conn, channel, metadata, route, persistent, body_bytes) {
        flush(conn).await;
        *conn.run.borrow_mut() = Some(fresh);
    }
    let Publishing {
        publish,
        header,
        body,
    } = publishing;
    let mut current = conn.run.borrow_mut();
    let (Some(header), Some(run)) = (header, current.as_mut()) else {
        return Err(AmqpError::internal("a publish lost its run"));
    };
    if let Some(routed) = routed {
        run.routed = routed;
    }
    run.body_bytes += body_bytes;
    run.messages.push(Arc::new(Message {
        exchange: publish.exchange.to_string(),
        routing_key: publish.routing_key.to_string(),
        raw_properties: header.raw_properties,
        body: body.freeze(),
        stored_ms: run.stored_ms,
        expiration_ms,
        persistent,
    }));
    Ok(None)
}

/// The run a publish to `route` must start (the current one stored first), or `None` when it
/// joins the current one: the same channel, metadata, queue and persistence, below the caps.
fn next_run(
    conn: &Conn,
    channel: &Rc<Channel>,
    metadata: Arc<Metadata>,
    route: Route,
    persistent: bool,
    body_bytes: usize,
) -> Option<Run> {
    let current = conn.run.borrow();
    let destination = match (route, current.as_ref()) {
        (Route::Queue(destination), Some(run))
            if Rc::ptr_eq(&run.channel, channel)
                && Arc::ptr_eq(&run.metadata, &metadata)
                && run.destination == destination =>
        {
            destination
        }
        (Route::Queue(destination), _) => {
            return Some(Run::new(channel, metadata, destination, persistent))
        }
        (Route::Run | Route::Alone, Some(run)) => run.destination.clone(),
        (Route::Run | Route::Alone, None) => return None,
    };
    let run = current.as_ref()?;
    let fits = run.persistent == persistent
        && run.messages.len() < RUN_MESSAGES_MAX
        && run.body_bytes + body_bytes <= RUN_BODY_BYTES_MAX;
    (!fits).then(|| Run::new(channel, metadata, destination, persistent))
}

impl Run {
    fn new(
        channel: &Rc<Channel>,
        metadata: Arc<Metadata>,
        destination: String,
        persistent: bool,
    ) -> Run {
        Run {
            channel: channel.clone(),
            metadata,
            destination,
            persistent,
            routed: None,
            stored_ms: super::message::now_ms(),
            messages: Vec::new(),
            body_bytes: 0,
        }
    }
}

/// Where a publish goes, for a run.
enum Route {
    /// Published alone (`basic::publish_now`).
    Alone,
    /// The connection's run's queue, by the run's own route: the same channel, exchange and
    /// key, and neither headers nor the metadata could route it otherwise.
    Run,
    /// This one queue: a run of its own.
    Queue(String),
}

/// Where the publish goes: the run's queue (its route reused), another one queue that takes
/// runs, or alone.
fn route(
    conn: &Conn,
    channel: &Rc<Channel>,
    metadata: &Arc<Metadata>,
    exchange: &str,
    key: &str,
    properties: &basic::AMQPProperties,
) -> Result<Route, AmqpError> {
    if exchange.is_empty() && super::reply_to::is_reply_name(key) {
        return Ok(Route::Alone);
    }
    if super::delayed::delay_of(metadata, exchange, properties).is_some() {
        return Ok(Route::Alone);
    }
    if let Some(run) = conn.run.borrow().as_ref() {
        let same_route = run
            .routed
            .as_ref()
            .is_some_and(|(e, k)| same_str(e, exchange) && same_str(k, key));
        let headerless = exchange.is_empty() || properties.headers().is_none();
        let same_run = Rc::ptr_eq(&run.channel, channel) && Arc::ptr_eq(&run.metadata, metadata);
        if same_route && headerless && same_run {
            return Ok(Route::Run);
        }
    }
    let mut destinations = super::basic::route(metadata, exchange, key, properties)?;
    match destinations.pop() {
        Some(destination) if destinations.is_empty() && takes_runs(metadata, &destination) => {
            Ok(Route::Queue(destination))
        }
        _ => Ok(Route::Alone),
    }
}

/// `a == b`, without calling `memcmp` for two empty strings. An empty `String` points at a
/// dangling address, and glibc's AVX-512 `memcmp` reads it with masked loads that take a
/// fault-suppression assist: about 100 ns a compare on the benchmark VM, against 2 ns for two
/// 15-byte strings. The default exchange is empty in nearly every publish, and this compare
/// was 5-6% of the shard's time in a one-queue run (docs/benchmarks.md).
fn same_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// Whether a queue takes runs: a queue (not a plain topic) that cannot refuse one publish of a
/// run alone (`reject-publish`) nor deliver them out of order (`x-max-priority`). The owner
/// checks the same of its runtime (`queue_owner::publish_many`). Two config lookups rather than
/// the whole policy: a publisher spreading over many queues starts a run per publish. The
/// overflow config is kept only for `reject-publish` and `reject-publish-dlx`.
fn takes_runs(metadata: &Metadata, destination: &str) -> bool {
    let Some(topic) = metadata.topics.get(destination) else {
        return false;
    };
    let configs = &topic.configs;
    configs.contains_key(CONFIG_DURABLE)
        && !configs.contains_key(CONFIG_MAX_PRIORITY)
        && !configs.contains_key(CONFIG_OVERFLOW)
}

/// Whether handling `frame` may leave the run unstored: only the next publish's frames on the
/// run's channel (and heartbeats) may.
pub fn continues(conn: &Conn, frame: &Frame) -> bool {
    let run = conn.run.borrow();
    let Some(run) = run.as_ref() else {
        return true;
    };
    let id = run.channel.id;
    match frame {
        Frame::Heartbeat(_) => true,
        Frame::Header(channel, _) | Frame::Body(channel, _) => *channel == id,
        Frame::Method(channel, _, method) => {
            *channel == id
                && matches!(
                    &**method,
                    AMQPClass::Basic(basic::AMQPMethod::Publish(publish)) if !publish.immediate
                )
        }
    }
}

/// Stores the connection's run, if it has one, and queues its confirm.
pub async fn flush(conn: &Rc<Conn>) {
    let Some(run) = conn.run.borrow_mut().take() else {
        return;
    };
    let count = run.messages.len() as u64;
    let stored = store(
        &conn.shard,
        &run.metadata,
        &run.destination,
        run.messages,
        run.persistent,
    )
    .await
    .unwrap_or_else(|error| Stored::Done(Err(error)));
    super::confirm::published_run(conn, &run.channel, count, vec![stored]).await;
}

/// Stores `messages`, in order, in queue `destination` on its owner: here directly, or on the
/// owner's shard, which answers once they are stored under the queue's durability. A refusal
/// (a full `reject-publish` queue) is the publishes' nack, not a channel error.
pub async fn store(
    shard: &Rc<Shard>,
    metadata: &Metadata,
    destination: &str,
    messages: Vec<Arc<Message>>,
    persistent: bool,
) -> Result<Stored, AmqpError> {
    let owner = owner_in(metadata, destination)?;
    let durable = persistent
        && metadata.topics.get(destination).is_some_and(|topic| {
            let durable = topic.configs.get(CONFIG_DURABLE);
            durable.is_some_and(|value| value == "true")
        });
    if owner == shard.id {
        return Ok(
            match queue_owner::publish_many(shard, destination, messages) {
                Ok((log, offset)) => Stored::Log {
                    log,
                    offset,
                    durable,
                },
                Err(error) => Stored::Done(Err(error)),
            },
        );
    }
    let name: Arc<str> = Arc::from(destination);
    let answer = queue_owner::on_owner(shard, owner, move |shard, reply| {
        let published = queue_owner::publish_many(&shard, &name, messages);
        queue_owner::reply_when_stored(published, durable, reply);
    })
    .await;
    Ok(Stored::Answer(answer))
}
