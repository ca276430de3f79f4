//! Shards: one pinned glommio executor per configured CPU. Each shard owns the logs of its
//! partitions, a read-only copy of the metadata, its listeners and connections. Nothing mutable is
//! shared between shards; cross-shard work is a `Job` on the mesh (`mesh.rs`).
//!
//! Everything in `Shard` is `!Send` and lives on its own executor; `RefCell` borrows are never
//! held across an `.await`.

mod bounded_join;
pub mod controller;
pub mod listener;
pub mod mesh;
pub mod signal;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use glommio::net::TcpListener;
use serde::{Deserialize, Serialize};
use weir_engine::{Log, LogConfig};

use crate::config::BrokerConfig;
use crate::metadata::{partition_dir, Metadata};
use crate::partition::{self, FetchOutcome};
use listener::Listener;
use mesh::{Inbox, Job, Mesh};
use signal::Signal;

/// How long shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on how long a lost cross-thread wake-up can stall a shard.
const TICK: Duration = Duration::from_millis(50);
/// Logs a shard opens at once when a metadata snapshot gives it new partitions (at start: every
/// one it owns). Each open awaits a few io_uring round trips (open, size, scan read); in
/// sequence, 100,000 queues' logs took 8.6 s of a restart, most of it waiting. The bound keeps
/// the descriptors and scan buffers of opens in flight small beside the descriptor budget.
const LOG_OPENS_IN_FLIGHT_MAX: usize = 64;

/// A shard's index: 0 to the shard count, the index of its executor, its mesh inbox and (unless
/// `--advertise-bootstrap`) its Kafka broker id. Persisted as a plain number in `metadata.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub usize);

impl ShardId {
    pub fn index(self) -> usize {
        self.0
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

pub struct Shard {
    pub id: ShardId,
    pub count: usize,
    pub config: Arc<BrokerConfig>,
    pub mesh: Mesh,
    metadata: RefCell<Arc<Metadata>>,
    /// Open logs of the partitions this shard owns: topic -> partition index -> log.
    logs: RefCell<HashMap<String, Vec<Option<Log>>>>,
    /// How many partitions the installed metadata gives this shard (its tail-cache split).
    owned_partitions: Cell<usize>,
    /// Logs opened and the bytes their recovery scanned (past their checkpoints), for the
    /// start-up line.
    recovered: Cell<(usize, u64)>,
    pub shutdown: Signal,
    /// Fired by `Job::Open` once every shard is ready: the start barrier its listeners wait at.
    open: Signal,
    /// Live connections on this shard (for the shutdown drain).
    pub connections: Cell<usize>,
    /// Live connections on all shards (for `max.connections`); an atomic counter, not a lock.
    pub connections_total: Arc<AtomicUsize>,
    pub groups: RefCell<Option<Rc<crate::groups::GroupCoordinator>>>,
}

/// What a new metadata snapshot changes for one shard.
#[derive(Default)]
struct TopicChanges {
    /// Topics created or changed, and whether their configs changed.
    touched: Vec<(String, bool)>,
    /// Topics deleted (or deleted and created again): their logs go.
    gone: Vec<String>,
    /// Partitions this shard owns in the new snapshot.
    owned: usize,
}

impl Shard {
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// The log of a partition this shard owns.
    pub fn log(&self, topic: &str, partition: i32) -> Option<Log> {
        let logs = self.logs.borrow();
        let index = usize::try_from(partition).ok()?;
        logs.get(topic)?.get(index)?.clone()
    }

    /// Calls `visit(topic, partition, log)` for every open log of this shard (no await: the
    /// logs cannot change meanwhile).
    pub fn for_each_log(&self, mut visit: impl FnMut(&str, i32, &Log)) {
        for (topic, partitions) in self.logs.borrow().iter() {
            for (index, log) in partitions.iter().enumerate() {
                if let Some(log) = log {
                    visit(topic, index as i32, log);
                }
            }
        }
    }

    /// Broker id = shard id; its port on Kafka listener `listener` (an index into
    /// `config.listeners`) = that listener's bootstrap port + 1 + shard.
    pub fn broker_port(&self, listener: usize, shard: ShardId) -> u16 {
        self.config.listeners[listener].address.port() + 1 + shard.index() as u16
    }

    /// The brokers Metadata advertises: one per shard; with `--advertise-bootstrap` a single
    /// broker 0 at the bootstrap port (clients key brokers by address too, and librdkafka 2.0
    /// merges brokers that share one, so several ids at one port would strand partitions).
    pub fn advertised_broker_count(&self) -> usize {
        if self.config.advertise_bootstrap {
            1
        } else {
            self.count
        }
    }

    /// The broker id Metadata and FindCoordinator give for what shard `shard` owns.
    pub fn advertised_broker(&self, shard: ShardId) -> usize {
        if self.config.advertise_bootstrap {
            0
        } else {
            shard.index()
        }
    }

    /// The port of advertised broker `broker` on Kafka listener `listener`: clients are sent to
    /// the ports of the listener they came in through, as Kafka advertises the matching listener
    /// (an SSL client is never sent to a plaintext port).
    pub fn advertised_port(&self, listener: usize, broker: usize) -> u16 {
        if self.config.advertise_bootstrap {
            self.config.listeners[listener].address.port()
        } else {
            self.broker_port(listener, ShardId(broker))
        }
    }

    /// Installs a newer metadata snapshot: deletes the logs of topics that are gone, opens the
    /// logs this shard now owns, applies changed topic configs. Older snapshots are ignored.
    /// Costs what changed, not the number of topics (the snapshots share their unchanged parts).
    pub async fn apply_metadata(&self, next: Arc<Metadata>) {
        let previous = self.metadata();
        if next.version < previous.version {
            return;
        }
        let changes = self.topic_changes(&previous, &next);
        self.delete_logs(&changes.gone).await;
        // The shard's tail-cache budget, shared evenly: a shard with few partitions keeps enough
        // for consumers that trail the producers by tens of milliseconds.
        let budget = self.config.tail_cache_shard_bytes;
        let tail_cache = crate::config::tail_cache_per_partition(budget, changes.owned);
        let tail_cache_changed = tail_cache
            != crate::config::tail_cache_per_partition(budget, self.owned_partitions.get());
        self.owned_partitions.set(changes.owned);
        let touched: Vec<(String, bool)> = if tail_cache_changed {
            next.topics
                .keys()
                .map(|name| (name.clone(), true))
                .collect()
        } else {
            changes.touched
        };
        let mut opens = Vec::new();
        for (name, configs_changed) in touched {
            let Some(topic) = next.topics.get(&name) else {
                continue;
            };
            let config = LogConfig {
                tail_cache_bytes: tail_cache,
                ..self.config.log_config(&topic.configs)
            };
            for (index, owner) in topic.partitions.iter().enumerate() {
                if *owner != self.id {
                    continue;
                }
                match self.log(&name, index as i32) {
                    Some(log) if configs_changed => log.set_config(config.clone()),
                    Some(_) => {}
                    None => opens.push((name.clone(), index, config.clone())),
                }
            }
        }
        // Each partition's log is its own directory: the opens are independent, and the order
        // they finish in does not matter (each fills its own slot).
        let opens = opens
            .iter()
            .map(|(name, index, config)| self.open_log(name, *index, config));
        bounded_join::join_bounded(opens, LOG_OPENS_IN_FLIGHT_MAX).await;
        *self.metadata.borrow_mut() = next;
    }

    /// What differs between two snapshots, walking only their unshared parts.
    fn topic_changes(&self, previous: &Metadata, next: &Metadata) -> TopicChanges {
        use imbl::ordmap::DiffItem;
        let owned_in = |topic: &crate::metadata::TopicMeta| {
            topic.partitions.iter().filter(|o| **o == self.id).count()
        };
        let mut changes = TopicChanges {
            owned: self.owned_partitions.get(),
            ..TopicChanges::default()
        };
        for item in previous.topics.diff(&next.topics) {
            match item {
                DiffItem::Add(name, topic) => {
                    changes.owned += owned_in(topic);
                    changes.touched.push((name.clone(), false));
                }
                DiffItem::Update {
                    old: (_, old),
                    new: (name, topic),
                } => {
                    changes.owned = changes.owned + owned_in(topic) - owned_in(old);
                    // A topic deleted and created again under its name: a new log.
                    if old.id != topic.id {
                        changes.gone.push(name.clone());
                    }
                    changes
                        .touched
                        .push((name.clone(), old.configs != topic.configs));
                }
                DiffItem::Remove(name, old) => {
                    changes.owned -= owned_in(old);
                    changes.gone.push(name.clone());
                }
            }
        }
        changes
    }

    /// Deletes the logs of the topics `gone`.
    async fn delete_logs(&self, gone: &[String]) {
        let mut doomed = Vec::new();
        {
            let mut logs = self.logs.borrow_mut();
            for name in gone {
                if let Some(partitions) = logs.remove(name) {
                    doomed.extend(partitions.into_iter().flatten());
                }
            }
        }
        for log in doomed {
            if let Err(error) = log.delete().await {
                tracing::warn!(shard = %self.id, %error, "deleting a partition log failed");
            }
        }
    }

    /// Opens the log of partition `index` of `name`, which this shard has none of yet.
    async fn open_log(&self, name: &str, index: usize, config: &LogConfig) {
        let partition = index as i32;
        let dir = partition_dir(&self.config.data_dir, name, partition);
        match Log::open(&dir, config.clone()).await {
            Ok(log) => {
                let (count, bytes) = self.recovered.get();
                self.recovered
                    .set((count + 1, bytes + log.recovery_scanned_bytes()));
                let mut logs = self.logs.borrow_mut();
                let slots = logs.entry(name.to_string()).or_default();
                if slots.len() <= index {
                    slots.resize(index + 1, None);
                }
                // Snapshots are applied one at a time (the job loop awaits each), and a snapshot
                // opens each partition once: no other open of it was in flight.
                assert!(slots[index].is_none(), "a partition's log opened twice");
                slots[index] = Some(log);
            }
            Err(error) => {
                tracing::error!(shard = %self.id, topic = %name, partition, %error, "opening a partition log failed")
            }
        }
    }

    /// Applies `retention.ms` / `retention.bytes` to every log of this shard, one at a time.
    async fn enforce_retention(&self) {
        let logs: Vec<Log> = self
            .logs
            .borrow()
            .values()
            .flat_map(|partitions| partitions.iter().flatten().cloned())
            .collect();
        for log in logs {
            if let Err(error) = log.enforce_retention().await {
                tracing::warn!(shard = %self.id, dir = %log.dir().display(), %error, "retention failed");
            }
            glommio::yield_if_needed().await;
        }
    }

    async fn close_logs(&self) {
        let logs: Vec<Log> = self
            .logs
            .borrow_mut()
            .drain()
            .flat_map(|(_, partitions)| partitions.into_iter().flatten())
            .collect();
        for log in logs {
            if let Err(error) = log.close().await {
                tracing::warn!(shard = %self.id, %error, "closing a partition log failed");
            }
        }
    }
}

/// What the main thread hands each shard.
pub struct ShardStart {
    pub id: ShardId,
    pub config: Arc<BrokerConfig>,
    pub mesh: Mesh,
    pub inbox: Inbox,
    pub metadata: Arc<Metadata>,
    pub connections_total: Arc<AtomicUsize>,
    /// The protocols' listeners, bound on this shard in order.
    pub listeners: Vec<Listener>,
    /// The protocols' start work (e.g. rebuilding queues from their logs), run in order once
    /// the shard's logs are open and its job loop runs, before its listeners accept.
    pub start_hooks: Vec<listener::StartHook>,
    /// The protocols' shutdown work (e.g. persisting what is queued for a group commit), run in
    /// order once the shard's connections have drained and before its logs close; its job loop
    /// still serves other shards meanwhile.
    pub stop_hooks: Vec<listener::StopHook>,
    pub ready: std::sync::mpsc::Sender<Result<ShardId, String>>,
}

/// The body of one shard's executor: prepare storage, open logs, listen, serve until shutdown.
pub async fn run(start: ShardStart) -> anyhow::Result<()> {
    let id = start.id;
    let ready = start.ready.clone();
    // Every task of the shard runs in a latency-sensitive queue (tasks inherit the queue of the
    // task that spawns them). glommio 0.9 can lose a wake-up coming from another thread (flume
    // channels of the mesh, the signal thread) when it races with the reactor going to sleep: it
    // does not re-check its foreign-wake queue after announcing sleep. For tasks of a
    // latency-sensitive queue it always signals the eventfd, which closes that window.
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::default(),
        glommio::Latency::Matters(Duration::from_millis(10)),
        "weir-shard",
    );
    let body = glommio::spawn_local_into(serve(start), queue)
        .map_err(|error| anyhow::anyhow!("spawning the shard task: {error}"))?;
    // Belt and braces for that race: a slow tick bounds any stall. It lasts as long as the
    // shard, not only until shutdown: closing groups, shares and logs still awaits other shards
    // (a shard with 50,000 logs once never finished its shutdown, parked in the reactor).
    let tick = glommio::spawn_local_into(
        async {
            loop {
                glommio::timer::sleep(TICK).await;
            }
        },
        queue,
    )
    .map_err(|error| anyhow::anyhow!("spawning the shard's tick: {error}"))?;
    let result = body.await;
    // Dropping a glommio task cancels it.
    drop(tick);
    if let Err(error) = &result {
        let _ = ready.send(Err(format!("shard {id}: {error:#}")));
    }
    result
}

async fn serve(start: ShardStart) -> anyhow::Result<()> {
    let ShardStart {
        id,
        config,
        mesh,
        inbox,
        metadata,
        connections_total,
        listeners,
        start_hooks,
        stop_hooks,
        ready,
    } = start;
    weir_engine::io::prepare_data_dir(&config.data_dir)
        .await
        .with_context(|| format!("preparing data dir {}", config.data_dir.display()))?;
    let count = mesh.shards.len();
    weir_engine::io::set_segment_files_budget(crate::open_files::segment_files_budget(count));
    let shard = Rc::new(Shard {
        id,
        count,
        config: config.clone(),
        mesh,
        metadata: RefCell::new(Arc::new(Metadata::default())),
        logs: RefCell::new(HashMap::new()),
        owned_partitions: Cell::new(0),
        recovered: Cell::new((0, 0)),
        shutdown: Signal::default(),
        open: Signal::default(),
        connections: Cell::new(0),
        connections_total,
        groups: RefCell::new(None),
    });
    shard.apply_metadata(metadata.clone()).await;
    let (logs, scanned_bytes) = shard.recovered.get();
    tracing::info!(shard = %id, logs, scanned_bytes, "logs recovered");
    crate::groups::open(&shard).await?;
    crate::shares::open(&shard).await?;

    glommio::spawn_local(job_loop(shard.clone(), inbox.jobs)).detach();
    if let Some(control) = inbox.control {
        glommio::spawn_local(controller::run(shard.clone(), control, (*metadata).clone())).detach();
    }
    for hook in start_hooks {
        hook(shard.clone()).await?;
    }
    crate::shares::start(&shard).await;
    let bound = bind(listeners)?;
    let _ = ready.send(Ok(id));
    // The start barrier: no listener accepts before every shard is ready (`Job::Open`), since any
    // shard's Metadata names every shard's broker port. Bound but not yet accepting, a socket
    // completes connects into its accept queue; they are answered once the barrier opens.
    futures_lite::future::or(shard.open.wait(), shard.shutdown.wait()).await;
    let accepting = accept(&shard, bound);
    spawn_housekeeping(&shard);
    shard.shutdown.wait().await;
    for accept in accepting {
        accept.await;
    }
    drain_connections(&shard).await;
    crate::groups::close(&shard).await;
    crate::shares::close().await;
    for hook in stop_hooks {
        hook(shard.clone()).await;
    }
    shard.close_logs().await;
    tracing::debug!(shard = %id, "shard stopped");
    Ok(())
}

/// Binds every listener, all before any accepts, so that a taken port fails the start.
fn bind(listeners: Vec<Listener>) -> anyhow::Result<Vec<(TcpListener, Listener)>> {
    let mut bound = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let address = listener.address;
        let socket = TcpListener::bind(address)
            .map_err(std::io::Error::from)
            .with_context(|| format!("binding {} {address}", listener.name))?;
        bound.push((socket, listener));
    }
    Ok(bound)
}

/// Starts the accept loop of every bound listener.
fn accept(shard: &Rc<Shard>, bound: Vec<(TcpListener, Listener)>) -> Vec<glommio::Task<()>> {
    bound
        .into_iter()
        .map(|(socket, listener)| {
            glommio::spawn_local(listener::accept_loop(shard.clone(), socket, listener))
        })
        .collect()
}

/// The shard's background tasks: the retention timer and the allocator's collector (the
/// wake-up tick is `run`'s).
fn spawn_housekeeping(shard: &Rc<Shard>) {
    crate::allocator::spawn_collector(shard);
    let retention = shard.clone();
    glommio::spawn_local(async move {
        let interval = Duration::from_millis(retention.config.retention_check_interval_ms);
        loop {
            futures_lite::future::or(glommio::timer::sleep(interval), retention.shutdown.wait())
                .await;
            if retention.shutdown.is_fired() {
                return;
            }
            retention.enforce_retention().await;
        }
    })
    .detach();
}

/// Gives live connections up to `DRAIN_TIMEOUT` to finish their in-flight requests.
async fn drain_connections(shard: &Shard) {
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while shard.connections.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if shard.connections.get() > 0 {
        tracing::warn!(
            shard = %shard.id,
            connections = shard.connections.get(),
            "shutdown drain timed out"
        );
    }
}

/// Serves this shard's inbox. Produce appends happen here, in arrival order; anything that waits
/// (durability, long polls, reads) runs as its own task so the inbox keeps moving.
async fn job_loop(shard: Rc<Shard>, jobs: flume::Receiver<Job>) {
    while let Ok(job) = jobs.recv_async().await {
        match job {
            Job::Shutdown => shard.shutdown.fire(),
            Job::Open => shard.open.fire(),
            Job::Metadata { metadata, done } => {
                shard.apply_metadata(metadata).await;
                let _ = done.send(());
            }
            Job::Produce {
                topic,
                partition,
                records,
                durable,
                reply,
            } => {
                let appended = partition::append(&shard, &topic, partition, records);
                glommio::spawn_local(async move {
                    let outcome = partition::finish_append(appended, durable).await;
                    let _ = reply.send_async(outcome).await;
                })
                .detach();
            }
            Job::Run(work) => work(shard.clone()),
            Job::Group(job) => {
                let shard = shard.clone();
                glommio::spawn_local(async move { crate::groups::serve(&shard, *job).await })
                    .detach();
            }
            job => {
                glommio::spawn_local(serve_read(shard.clone(), job)).detach();
            }
        }
    }
}

/// The jobs that read or wait: each runs as its own task, so the inbox keeps moving.
async fn serve_read(shard: Rc<Shard>, job: Job) {
    match job {
        Job::Fetch {
            topic,
            partition,
            offset,
            max_bytes,
            reply,
        } => fetch_for_peer(shard, topic, partition, offset, max_bytes, reply).await,
        Job::WaitForData {
            topic,
            partition,
            offset,
            wait,
            reply,
        } => {
            partition::wait_for_data(&shard, &topic, partition, offset, wait).await;
            let _ = reply.send_async(()).await;
        }
        Job::ListOffsets {
            topic,
            partition,
            timestamp,
            reply,
        } => {
            let outcome = partition::list_offset(&shard, &topic, partition, timestamp).await;
            let _ = reply.send_async(outcome).await;
        }
        // Served in arrival order by `job_loop` itself.
        Job::Shutdown
        | Job::Open
        | Job::Metadata { .. }
        | Job::Produce { .. }
        | Job::Group(_)
        | Job::Run(_) => {}
    }
}

/// A read another shard forwarded: the one place chunks are copied, since they cross shards.
async fn fetch_for_peer(
    shard: Rc<Shard>,
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    reply: mesh::Reply<FetchOutcome<Bytes>>,
) {
    let outcome = partition::read(&shard, &topic, partition, offset, max_bytes).await;
    let copied = FetchOutcome {
        error: outcome.error,
        high_watermark: outcome.high_watermark,
        log_start_offset: outcome.log_start_offset,
        payload: outcome
            .payload
            .iter()
            .map(|chunk| chunk.to_bytes())
            .collect(),
    };
    let _ = reply.send_async(copied).await;
}

/// Counts a connection against `max.connections`; false when the broker is full.
pub fn admit_connection(shard: &Shard) -> bool {
    let previous = shard.connections_total.fetch_add(1, Ordering::AcqRel);
    if previous >= shard.config.max_connections {
        shard.connections_total.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    shard.connections.set(shard.connections.get() + 1);
    true
}

pub fn release_connection(shard: &Shard) {
    shard.connections_total.fetch_sub(1, Ordering::AcqRel);
    shard.connections.set(shard.connections.get() - 1);
}
