//! weir-server: the thread-per-core Kafka-compatible broker.
//!
//! Module ownership (each a separate piece of work; see docs/architecture.md):
//! - `groups`: the consumer group coordinator (classic protocol) and committed offsets.
//! - `routing`: exchanges and bindings (RabbitMQ semantics) over topics.
//! - `queues`: per-message queue state (AMQP queues, Kafka share groups) and its ack store.
//! - `config`, `metadata`, `shard` (executors, mesh, controller), `kafka` (codec, connections,
//!   one handler per API): the broker core.
//!
//! `run` is the whole program: the main thread parses the configuration, loads the metadata,
//! starts one pinned glommio executor per CPU, prints the ready line, and turns SIGINT/SIGTERM
//! into a shutdown message to every shard.

pub mod allocator;
pub mod amqp;
pub mod cli;
pub mod config;
pub mod groups;
pub mod integer_hash;
pub mod kafka;
pub mod metadata;
pub mod metrics;
pub mod open_files;
pub mod partition;
pub mod ports;
pub mod queues;
pub mod record_file;
pub mod routing;
pub mod security;
pub mod shard;
pub mod shares;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use anyhow::{bail, Context};
use glommio::{LocalExecutorBuilder, Placement};
use weir_engine::io::{check_memlock, IO_MEMORY_BYTES};

pub use config::{Args, BrokerConfig};

/// Parses the command line and runs the broker until SIGINT/SIGTERM.
pub fn main_with_args() -> anyhow::Result<()> {
    use clap::Parser;
    let mut args = Args::parse();
    if let Some(command) = args.command.take() {
        return cli::run(&command);
    }
    init_tracing();
    run(BrokerConfig::from_args(args)?)
}

/// Log lines go to stdout (tracing-subscriber's default writer), coloured only when stdout is a
/// terminal and `NO_COLOR` is unset or empty (no-color.org): escape codes in a log file or a pipe
/// are noise to every reader and grep.
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stdout)
        .with_ansi(std::io::stdout().is_terminal() && !no_color)
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
pub fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let count = config.cpus.len();
    check_memlock(count, IO_MEMORY_BYTES).map_err(anyhow::Error::msg)?;
    open_files::raise_limit();
    create_data_dir(&config.data_dir)?;
    let _lock = lock_data_dir(&config.data_dir)?;
    ports::check_ports_free(&config)?;
    // Write glommio's probe file once, before shards race to create it (see engine::io).
    let probe = config.data_dir.join(".weir-probe");
    if std::fs::metadata(&probe)
        .map(|m| m.len() < 4096)
        .unwrap_or(true)
    {
        std::fs::write(&probe, vec![0u8; 4096])
            .with_context(|| format!("writing {}", probe.display()))?;
    }
    let mut metadata = metadata::load(&config.data_dir).context("loading metadata")?;
    if reassign_missing_shards(&mut metadata, count) {
        metadata::store(&config.data_dir, &metadata).context("storing metadata")?;
    }
    metadata.routing = routing::controller::RoutingController::open(&config.data_dir)
        .context("loading exchanges and bindings")?
        .snapshot();
    let metadata = Arc::new(metadata);
    // Read once, shared by every shard's TLS listeners (handshakes only, not the data path).
    let tls = match config.any_tls_listener() {
        true => Some(security::tls::server_config(&config.tls)?),
        false => None,
    };

    let (mesh, inboxes) = shard::mesh::build(count);
    let connections_total = Arc::new(AtomicUsize::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;

    let mut handles = Vec::with_capacity(count);
    for (id, (cpu, inbox)) in config.cpus.iter().copied().zip(inboxes).enumerate() {
        let start = shard::ShardStart {
            id: shard::ShardId(id),
            config: config.clone(),
            mesh: mesh.clone(),
            inbox,
            metadata: metadata.clone(),
            connections_total: connections_total.clone(),
            listeners: listeners(&config, shard::ShardId(id), tls.as_ref()),
            start_hooks: start_hooks(&config),
            stop_hooks: if !config.amqp_listeners.is_empty() {
                vec![amqp::stop_hook as shard::listener::StopHook]
            } else {
                Vec::new()
            },
            ready: ready_tx.clone(),
        };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("weir-shard-{id}"))
            .io_memory(IO_MEMORY_BYTES)
            .spawn(move || async move { shard::run(start).await })
            .map_err(|error| anyhow::anyhow!("{error}"))
            .with_context(|| format!("starting shard {id} on cpu {cpu}"))?;
        handles.push(handle);
    }
    drop(ready_tx);

    let stop_all = {
        let mesh = mesh.clone();
        move || {
            for inbox in &mesh.shards {
                let _ = inbox.send(shard::mesh::Job::Shutdown);
            }
        }
    };
    let mut failure = None;
    for _ in 0..count {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(message)) => {
                failure = Some(message);
                break;
            }
            Err(_) => {
                failure = Some("a shard stopped during start".to_string());
                break;
            }
        }
    }
    // Shards bind with SO_REUSEPORT, so a broker that started at the same moment as this one
    // (both probes passed) would share our ports silently: refuse, loudly, instead.
    if failure.is_none() {
        if let Err(error) = ports::check_ports_exclusive(&config) {
            failure = Some(format!("{error:#}"));
        }
    }
    if let Some(message) = failure {
        stop_all();
        for handle in handles {
            let _ = handle.join();
        }
        bail!("{message}");
    }
    // The start barrier (see `shard::serve`): every shard has recovered and bound its listeners,
    // so every broker port a Metadata answer names accepts; only now may any shard answer.
    for inbox in &mesh.shards {
        let _ = inbox.send(shard::mesh::Job::Open);
    }
    for listener in &config.listeners {
        let port = listener.address.port();
        tracing::info!(
            "weir ready: {} bootstrap {}:{}, shards {}, broker ports {}-{}",
            listener.protocol,
            config.advertised_host,
            port,
            count,
            port + 1,
            port + count as u16
        );
    }
    for amqp in &config.amqp_listeners {
        tracing::info!("amqp listener on {amqp} (every shard)");
    }
    if let Some(metrics) = config.metrics_listen {
        tracing::info!("prometheus metrics on http://{metrics}/metrics (shard 0)");
    }

    let mut signals = signals;
    std::thread::spawn(move || {
        let mut received = signals.forever();
        if let Some(signal) = received.next() {
            tracing::info!(
                signal,
                "shutting down: no new connections, finishing in-flight requests"
            );
            stop_all();
        }
        if received.next().is_some() {
            tracing::warn!("second signal: exiting at once");
            std::process::exit(1);
        }
    });

    let mut errors = Vec::new();
    for (id, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => errors.push(format!("shard {id}: {error:#}")),
            Err(error) => errors.push(format!("shard {id}: {error}")),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    tracing::info!("weir stopped");
    Ok(())
}

/// The start hooks: AMQP's (rebuilding queues) unless it is off, then the metrics endpoint's.
fn start_hooks(config: &BrokerConfig) -> Vec<shard::listener::StartHook> {
    let mut hooks: Vec<shard::listener::StartHook> = Vec::new();
    if !config.amqp_listeners.is_empty() {
        hooks.push(amqp::start_hook);
    }
    if config.metrics_listen.is_some() {
        hooks.push(|shard| Box::pin(async move { metrics::http::start(&shard, &METRICS) }));
    }
    hooks
}

/// What the protocols tell the metrics endpoint (the core's `metrics` names no protocol).
static METRICS: metrics::Protocols = metrics::Protocols {
    api_name: kafka::api_name,
    error_name: |error| kafka::error_codes::name(kafka::error_codes::from_partition_error(error)),
    queues: amqp::queue_owner::metrics,
    resident_bytes: || amqp::alarm::memory::resident_bytes().ok(),
};

/// Every protocol's listeners on shard `id`, in binding order: Kafka's, then AMQP's (none when
/// disabled). `tls`: the broker's TLS configuration, present when a listener needs it.
fn listeners(
    config: &BrokerConfig,
    id: shard::ShardId,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Vec<shard::listener::Listener> {
    let mut listeners = kafka::connection::listeners(config, id, tls);
    listeners.extend(amqp::listeners(config, tls));
    listeners
}

/// Creates the data dir if it is missing. A path that exists but is not a directory is named as
/// such: `create_dir_all` alone says only `File exists (os error 17)`.
pub(crate) fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if let Ok(metadata) = std::fs::metadata(dir) {
        if !metadata.is_dir() {
            bail!("data dir {} is a file, not a directory", dir.display());
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating data dir {}", dir.display()))
}

/// Holds an exclusive `flock` on `<data-dir>/.lock` for the life of the process, so that two
/// brokers never share a data directory.
pub(crate) fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "data dir {} is in use by another weir process",
            dir.display()
        );
    }
    Ok(file)
}

/// After a restart with fewer shards, partitions of shards that no longer exist move to one that
/// does (every shard reads the same data dir). Returns whether anything moved.
fn reassign_missing_shards(metadata: &mut metadata::Metadata, count: usize) -> bool {
    let mut moved = false;
    let names: Vec<String> = metadata.topics.keys().cloned().collect();
    for name in names {
        let Some(topic) = metadata.topics.get_mut(&name) else {
            continue;
        };
        for (index, owner) in topic.partitions.iter_mut().enumerate() {
            if owner.index() >= count {
                *owner = metadata::assign_shard(&name, index, count);
                moved = true;
            }
        }
    }
    if moved {
        metadata.version += 1;
    }
    moved
}
