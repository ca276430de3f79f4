//! Broker configuration: command-line flags, the optional TOML file, and `--set key=value`
//! defaults with Kafka's names. Built once on the main thread before any shard starts; every shard
//! then holds a read-only `Arc<BrokerConfig>`.
//!
//! Per-topic configs use the same names and are interpreted here (`log_config`), so that the
//! broker defaults and the CreateTopics / AlterConfigs paths agree on one meaning.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use weir_engine::{Durability, LogConfig};

use crate::security::acl::{AuthorizerConfig, AUTHORIZER_CLASS_NAMES};
use crate::security::listener::{self, AmqpListener, KafkaListener};
use crate::security::tls::{ClientAuth, TlsSettings};

const SET_HELP: &str = "Broker and topic defaults with Kafka's names (repeatable):
  num.partitions=N              partitions of an auto-created topic (default 1)
  auto.create.topics.enable=B   create unknown topics on first Metadata request (default true)
  log.segment.bytes=N           roll a segment at this size (topic: segment.bytes, default 1 GiB)
  segment.ms=N                  roll a segment at this age (default 7 days)
  retention.ms=N                delete segments older than this, -1 = forever (default 7 days)
  retention.bytes=N             keep at most this many bytes per partition, -1 = unlimited
  flush.messages=N              1 = fsync every batch before acks=all answers (Durability::Always)
  flush.ms=N                    group commit: fsync at most every N ms (Durability::Interval)
  message.max.bytes=N           largest record batch accepted (topic: max.message.bytes)
  socket.request.max.bytes=N    largest request frame; larger closes the connection (100 MiB)
  max.connections=N             connections accepted across all shards (default 65536)
  weir.connection.max.inflight.requests=N  requests read ahead of their answers, per connection;
                                more waits (backpressure) (default 64)
  weir.connection.max.buffer.bytes=N  bytes of requests read but not answered plus answers being
                                written, per connection; more waits (backpressure); one larger
                                frame is read when nothing else is held (default 100 MiB)
  weir.tail.cache.shard.bytes=N recent batches kept in memory per shard for consumers at the
                                tail, shared out evenly over the shard's partitions, at least
                                1 MiB each (default 256 MiB)
  connection.failed.authentication.delay.ms=N  how long a failed SASL authentication waits
                                before its answer and the close (default 100)
  weir.amqp.loopback.users=A,B  AMQP users allowed only from loopback addresses (RabbitMQ's
                                loopback_users; default guest; empty = none)
  weir.metrics.objects.max=N    topics, partitions and queues /metrics names one by one, of each
                                kind, the first N by name (default 1000; see docs/metrics.md)
  log.flush.offset.checkpoint.interval.ms=N  how often a partition written to since its last
                                recovery checkpoint gets a new one, so that the start after a
                                crash scans only what came after it (default 60000)
  weir.log.checkpoint.interval.bytes=N  ... or after this many bytes written to its active
                                segment, whichever comes first (default 268435456)
  log.retention.check.interval.ms=N  how often each shard applies retention (default 300000);
                                AMQP queues delete their consumed segments at this interval,
                                at least every 10 s
  weir.queue.ack.flush.ms=N     how long a shard's queue ack store gathers acks before one
                                write and fdatasync (group commit; default 2)
  weir.share.state.fsync=BOOL   fdatasync the share-group ack store before acknowledgements are
                                answered (default false: written to the OS, as Kafka's
                                __share_group_state; a machine crash can only redeliver)
  amqp.disk.free.limit=N        free bytes on the data directory's filesystem below which AMQP
                                connections get connection.blocked and publishers are not read
                                (RabbitMQ's disk_free_limit; default 50000000)
  amqp.vm.memory.high.watermark=F  fraction (0 to 1) of the machine's memory (MemTotal) above
                                which the broker's resident memory raises the memory alarm:
                                AMQP publishers get connection.blocked and are not read
                                (RabbitMQ's vm_memory_high_watermark; default 0.4)
  amqp.vm.memory.high.watermark.absolute=N  the same limit in bytes instead of a fraction
                                (RabbitMQ's vm_memory_high_watermark.absolute); wins over
                                the fraction when both are set
  ssl.certificate.location=FILE the broker's certificate chain (PEM) for SSL/SASL_SSL listeners
                                and amqps (librdkafka's name)
  ssl.key.location=FILE         its private key (PEM: PKCS#8, PKCS#1 or SEC1)
  ssl.ca.location=FILE          CA certificates (PEM) that client certificates must chain to
  ssl.client.auth=MODE          none (default), requested (a certificate, if sent, must be
                                trusted) or required (mutual TLS)
  weir.tls.handshake.timeout.ms=N  a TLS handshake not done in this time closes the connection
                                (default 10000)";

/// `weir`: a thread-per-core Kafka-compatible log broker.
#[derive(Parser, Debug, Clone, Default)]
#[command(
    name = "weir",
    version,
    about,
    long_about = None,
    after_help = "Logging: set RUST_LOG (tracing filter syntax, e.g. RUST_LOG=debug); default info.\nSIGINT/SIGTERM stop accepting, finish in-flight requests, close the logs and exit 0."
)]
pub struct Args {
    /// Directory holding topic logs, metadata.json and consumer group state.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Kafka listener, repeatable, in Kafka's syntax: `PLAINTEXT://HOST:PORT`, `SSL://…`,
    /// `SASL_PLAINTEXT://…`, `SASL_SSL://…`, or a bare HOST:PORT (PLAINTEXT). Every shard
    /// listens on its bootstrap port (SO_REUSEPORT); shard i also on port+1+i, advertised as
    /// broker id i to the clients of that listener. Default 127.0.0.1:9092.
    #[arg(long, value_name = "[PROTOCOL://]HOST:PORT")]
    pub listen: Vec<String>,
    /// AMQP 0-9-1 listener, repeatable: `amqp://HOST:PORT`, `amqps://HOST:PORT` (TLS) or a bare
    /// HOST:PORT (amqp); every shard listens (SO_REUSEPORT). Default 127.0.0.1:5672; `none`
    /// disables AMQP.
    #[arg(long, value_name = "[amqp[s]://]HOST:PORT")]
    pub amqp_listen: Vec<String>,
    /// Prometheus metrics address (HTTP, `GET /metrics`, served by shard 0), default
    /// 127.0.0.1:9644; `none` disables it.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Host name put in Metadata responses (default: the --listen host).
    #[arg(long, value_name = "HOST")]
    pub advertised_host: Option<String>,
    /// Advertise one broker (id 0) at the bootstrap port instead of one per shard: clients then
    /// reach every partition through forwarding (single-port deployments, and measuring that path).
    #[arg(long)]
    pub advertise_bootstrap: bool,
    /// CPUs to run shards on, one pinned glommio executor each: `0-3`, `0,2,5` (default: all).
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// TOML file: `data-dir`, `listen`, `amqp-listen`, `metrics-listen`, `advertised-host`,
    /// `cpus`, and any `--set` name as a key
    /// (dotted keys such as `num.partitions = 3` work as written). Flags override the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long = "set", value_name = "KEY=VALUE", long_help = SET_HELP, help = "Broker/topic default with Kafka's name, e.g. num.partitions=3 (see --help)")]
    pub set: Vec<String>,
    /// Admin commands against a running broker (`weir exchange …`, `weir binding …`); without
    /// one, `weir` runs the broker.
    #[command(subcommand)]
    pub command: Option<crate::cli::Command>,
}

/// Everything the broker reads at start; immutable afterwards.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Kafka's listeners (at least one), in the order given.
    pub listeners: Vec<KafkaListener>,
    /// AMQP's listeners (every shard, SO_REUSEPORT); empty = AMQP disabled.
    pub amqp_listeners: Vec<AmqpListener>,
    /// Certificates and client authentication for the TLS listeners (`ssl.*`).
    pub tls: TlsSettings,
    /// The Prometheus endpoint's address (shard 0 only); `None` = no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    pub advertised_host: String,
    pub cpus: Vec<usize>,
    pub advertise_bootstrap: bool,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    /// Requests a connection reads ahead of their answers
    /// (`weir.connection.max.inflight.requests`).
    pub connection_requests_in_flight_max: usize,
    /// Bytes of request frames and answers a connection holds (`weir.connection.max.buffer.bytes`).
    pub connection_buffer_bytes_max: usize,
    /// Bytes of recent batches a shard keeps in memory for tail readers
    /// (`weir.tail.cache.shard.bytes`), divided among its partitions.
    pub tail_cache_shard_bytes: usize,
    /// How often each shard deletes segments past retention (`log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// Progress checkpoints of each partition's active segment, by time
    /// (`log.flush.offset.checkpoint.interval.ms`) and by bytes written
    /// (`weir.log.checkpoint.interval.bytes`): they bound what an open after a crash rescans.
    pub checkpoint_interval_ms: u64,
    pub checkpoint_interval_bytes: u64,
    /// Topics, partitions and queues the metrics name one by one, each kind (the first by
    /// name); the rest count only in the totals (`weir.metrics.objects.max`).
    pub metrics_objects_max: usize,
    /// How long a shard's queue ack store gathers acks before it writes and syncs them
    /// (`weir.queue.ack.flush.ms`, group commit).
    pub queue_ack_flush_ms: u64,
    /// Free bytes on the data directory's filesystem below which AMQP publishers are blocked
    /// (`amqp.disk.free.limit`, RabbitMQ's `disk_free_limit`).
    pub amqp_disk_free_limit_bytes: u64,
    /// Resident memory above which AMQP publishers are blocked (`amqp.vm.memory.high.watermark`
    /// and `.absolute`, RabbitMQ's `vm_memory_high_watermark`).
    pub amqp_memory_high_watermark: MemoryWatermark,
    /// Share groups' settings (`share.auto.offset.reset`, `group.share.*`).
    pub shares: SharesConfig,
    /// Authentication settings (`security::SecurityConfig`).
    pub security: crate::security::SecurityConfig,
    /// Topic-level defaults (topic config names) applied under every topic's own configs.
    pub topic_defaults: BTreeMap<String, String>,
    /// The ACL authorizer (`authorizer.class.name`, `super.users`,
    /// `allow.everyone.if.no.acl.found`); off by default.
    pub authorizer: Arc<AuthorizerConfig>,
}

/// RabbitMQ's `vm_memory_high_watermark`: a fraction of the machine's memory, or bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryWatermark {
    /// 0.0 ..= 1.0 of MemTotal (`amqp.vm.memory.high.watermark`).
    Relative(f64),
    /// Bytes (`amqp.vm.memory.high.watermark.absolute`).
    Absolute(u64),
}

impl Default for MemoryWatermark {
    fn default() -> MemoryWatermark {
        MemoryWatermark::Relative(AMQP_MEMORY_HIGH_WATERMARK_DEFAULT)
    }
}

/// `--cpus` (default: every CPU), checked against the broker ports each Kafka listener leaves
/// above it (one per shard).
fn cpus_for(text: Option<String>, listeners: &[KafkaListener]) -> anyhow::Result<Vec<usize>> {
    let cpus: Vec<usize> = match text {
        Some(text) => parse_cpus(&text)?,
        None => (0..std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1))
            .collect(),
    };
    if cpus.is_empty() {
        bail!("--cpus selects no CPU");
    }
    let shards = cpus.len();
    for listener in listeners {
        if listener.address.port() as usize + shards >= u16::MAX as usize {
            bail!("--listen {listener} leaves no room for {shards} broker ports");
        }
    }
    Ok(cpus)
}

/// `--listen` values (each one listener or a comma-separated list), default 127.0.0.1:9092.
fn kafka_listeners(texts: &[String]) -> anyhow::Result<Vec<KafkaListener>> {
    let mut listeners = Vec::new();
    for text in texts {
        listeners.extend(listener::parse_kafka_listeners(text).context("--listen")?);
    }
    if listeners.is_empty() {
        listeners = listener::parse_kafka_listeners("127.0.0.1:9092")?;
    }
    Ok(listeners)
}

/// `--amqp-listen` values; `none` (alone) turns AMQP off.
fn amqp_listeners(texts: &[String]) -> anyhow::Result<Vec<AmqpListener>> {
    if texts
        .iter()
        .any(|text| text.trim().eq_ignore_ascii_case("none"))
    {
        if texts.len() > 1 {
            bail!("--amqp-listen none cannot be given with other AMQP listeners");
        }
        return Ok(Vec::new());
    }
    let mut listeners = Vec::new();
    for text in texts {
        listeners.extend(listener::parse_amqp_listeners(text).context("--amqp-listen")?);
    }
    Ok(listeners)
}

/// `--amqp-listen` or `--metrics-listen` (`flag`): an address, or `none` (off).
fn parse_optional_listen(flag: &str, text: &str) -> anyhow::Result<Option<SocketAddr>> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let address = text
        .to_socket_addrs()
        .with_context(|| format!("--{flag} {text}"))?
        .next()
        .with_context(|| format!("--{flag} {text} resolves to no address"))?;
    Ok(Some(address))
}

/// Broker-level names that map to a topic-level name.
const BROKER_ALIASES: &[(&str, &str)] = &[
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
    ("log.retention.ms", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("message.max.bytes", "max.message.bytes"),
];

/// Topic configs Weir interprets; others are stored and echoed back (see docs/kafka-compat.md).
pub const TOPIC_CONFIG_NAMES: &[&str] = &[
    "segment.bytes",
    "segment.ms",
    "retention.ms",
    "retention.bytes",
    "flush.messages",
    "flush.ms",
    "max.message.bytes",
    "cleanup.policy",
];

impl BrokerConfig {
    /// The settings of the config file and the `--set` flags (which win), by Kafka name.
    fn file_and_set_values(args: &Args) -> anyhow::Result<BTreeMap<String, String>> {
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        if let Some(path) = &args.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let table: toml::Table = text
                .parse()
                .with_context(|| format!("parsing TOML config {}", path.display()))?;
            flatten_toml("", &toml::Value::Table(table), &mut values);
        }
        for item in &args.set {
            let (key, value) = item
                .split_once('=')
                .with_context(|| format!("--set {item}: expected key=value"))?;
            values.insert(key.trim().to_string(), value.trim().to_string());
        }
        Ok(values)
    }

    pub fn from_args(args: Args) -> anyhow::Result<BrokerConfig> {
        let mut values = BrokerConfig::file_and_set_values(&args)?;
        let mut take = |flag: Option<String>, key: &str| flag.or_else(|| values.remove(key));
        let data_dir = take(args.data_dir.map(|d| d.display().to_string()), "data-dir")
            .unwrap_or_else(|| "./data".into());
        // Flags win over the file; a repeated flag adds listeners.
        let mut take_list = |flags: Vec<String>, key: &str| match flags.is_empty() {
            true => take(None, key).into_iter().collect::<Vec<_>>(),
            false => flags,
        };
        let listen_texts = take_list(args.listen, "listen");
        let mut amqp_texts = take_list(args.amqp_listen, "amqp-listen");
        if amqp_texts.is_empty() {
            amqp_texts.push("127.0.0.1:5672".into());
        }
        let metrics_text =
            take(args.metrics_listen, "metrics-listen").unwrap_or_else(|| "127.0.0.1:9644".into());
        let advertised = take(args.advertised_host, "advertised-host");
        let cpus_text = take(args.cpus, "cpus");
        let advertise_bootstrap = args.advertise_bootstrap
            || values
                .remove("advertise-bootstrap")
                .map(|v| v == "true")
                .unwrap_or(false);

        let listeners = kafka_listeners(&listen_texts)?;
        let amqp_listeners = amqp_listeners(&amqp_texts)?;
        let metrics_listen = parse_optional_listen("metrics-listen", &metrics_text)?;
        let advertised_host = match advertised {
            Some(host) => host,
            None => match listeners[0].host.as_str() {
                "" | "0.0.0.0" | "[::]" => "127.0.0.1".to_string(),
                host => host.to_string(),
            },
        };
        let cpus = cpus_for(cpus_text, &listeners)?;

        let mut config = BrokerConfig {
            data_dir: PathBuf::from(data_dir),
            listeners,
            amqp_listeners,
            tls: TlsSettings::default(),
            metrics_listen,
            advertised_host,
            cpus,
            advertise_bootstrap,
            num_partitions: 1,
            auto_create_topics: true,
            socket_request_max_bytes: 100 << 20,
            max_connections: 65536,
            connection_requests_in_flight_max: 64,
            connection_buffer_bytes_max: 100 << 20,
            tail_cache_shard_bytes: TAIL_CACHE_SHARD_BYTES_DEFAULT,
            checkpoint_interval_ms: LogConfig::default().checkpoint_interval_ms,
            checkpoint_interval_bytes: LogConfig::default().checkpoint_interval_bytes,
            retention_check_interval_ms: 300_000,
            metrics_objects_max: 1000,
            queue_ack_flush_ms: QUEUE_ACK_FLUSH_MS_DEFAULT,
            amqp_disk_free_limit_bytes: AMQP_DISK_FREE_LIMIT_BYTES_DEFAULT,
            amqp_memory_high_watermark: MemoryWatermark::default(),
            shares: SharesConfig::default(),
            security: crate::security::SecurityConfig::default(),
            topic_defaults: BTreeMap::new(),
            authorizer: Arc::default(),
        };
        for (key, value) in values {
            config.set(&key, &value)?;
        }
        crate::ports::check_listeners_distinct(&config)?;
        config.check_tls_settings()?;
        Ok(config)
    }

    /// Whether any listener (Kafka or AMQP) speaks TLS.
    pub fn any_tls_listener(&self) -> bool {
        self.listeners.iter().any(|l| l.protocol.tls()) || self.amqp_listeners.iter().any(|l| l.tls)
    }

    /// A TLS listener needs a certificate and its key; mutual TLS needs the CAs to check clients
    /// against. Checked here so that a bad command line fails before anything starts (the files
    /// themselves are read by `security::tls::server_config` at start).
    fn check_tls_settings(&self) -> anyhow::Result<()> {
        if !self.any_tls_listener() {
            return Ok(());
        }
        let tls = &self.tls;
        if tls.certificate.is_none() || tls.key.is_none() {
            bail!(
                "a TLS listener (SSL://, SASL_SSL:// or amqps://) needs \
                 --set ssl.certificate.location=FILE and --set ssl.key.location=FILE (PEM)"
            );
        }
        if tls.client_auth != ClientAuth::None && tls.ca.is_none() {
            bail!(
                "ssl.client.auth={} needs --set ssl.ca.location=FILE: the CA certificates (PEM) \
                 that client certificates must chain to",
                tls.client_auth.name()
            );
        }
        Ok(())
    }

    /// Authentication settings; `false` when `key` is not one of them.
    fn set_security(&mut self, key: &str, value: &str) -> anyhow::Result<bool> {
        match key {
            "connection.failed.authentication.delay.ms" => {
                self.security.failed_authentication_delay_ms = value
                    .parse::<u64>()
                    .with_context(|| format!("{key}={value}: must be an integer >= 0"))?
            }
            "weir.amqp.loopback.users" => {
                self.security.amqp_loopback_users = value
                    .split(',')
                    .map(str::trim)
                    .filter(|user| !user.is_empty())
                    .map(String::from)
                    .collect()
            }
            "weir.sasl.required" => {
                self.security.sasl_required = value
                    .parse()
                    .with_context(|| format!("{key}={value}: not true/false"))?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The authorizer's settings, to change (a copy if a shard already holds them).
    fn authorizer(&mut self) -> &mut AuthorizerConfig {
        Arc::make_mut(&mut self.authorizer)
    }

    fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let number = || -> anyhow::Result<i64> {
            value
                .parse::<i64>()
                .with_context(|| format!("{key}={value}: not an integer"))
        };
        let positive = || -> anyhow::Result<usize> {
            usize::try_from(number()?)
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{key}={value}: must be > 0"))
        };
        match key {
            "num.partitions" => {
                self.num_partitions = i32::try_from(number()?)
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{key}={value}: must be 1..2^31"))?
            }
            "auto.create.topics.enable" => {
                self.auto_create_topics = value
                    .parse()
                    .with_context(|| format!("{key}={value}: not true/false"))?
            }
            "socket.request.max.bytes" => {
                self.socket_request_max_bytes = usize::try_from(number()?)
                    .ok()
                    .filter(|n| *n >= 64)
                    .with_context(|| format!("{key}={value}: must be >= 64"))?
            }
            "log.retention.check.interval.ms" => {
                self.retention_check_interval_ms = u64::try_from(number()?)
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{key}={value}: must be > 0"))?
            }
            "weir.metrics.objects.max" => {
                self.metrics_objects_max = usize::try_from(number()?)
                    .with_context(|| format!("{key}={value}: must be >= 0"))?
            }
            "weir.queue.ack.flush.ms" => {
                self.queue_ack_flush_ms = u64::try_from(number()?)
                    .with_context(|| format!("{key}={value}: must be >= 0"))?
            }
            key if SharesConfig::KEYS.contains(&key) => self.shares.set(key, value)?,
            key if AUTHORIZER_KEYS.contains(&key) => set_authorizer(self.authorizer(), key, value)?,
            "amqp.disk.free.limit"
            | "amqp.vm.memory.high.watermark"
            | "amqp.vm.memory.high.watermark.absolute" => self.set_alarm(key, value)?,
            "max.connections" => self.max_connections = positive()?,
            "weir.connection.max.inflight.requests" => {
                self.connection_requests_in_flight_max = positive()?
            }
            "weir.connection.max.buffer.bytes" => self.connection_buffer_bytes_max = positive()?,
            key if TlsSettings::KEYS.contains(&key) => self.tls.set(key, value)?,
            "weir.tail.cache.shard.bytes" => self.tail_cache_shard_bytes = positive()?,
            "log.flush.offset.checkpoint.interval.ms" => {
                self.checkpoint_interval_ms = positive()? as u64
            }
            "weir.log.checkpoint.interval.bytes" => {
                self.checkpoint_interval_bytes = positive()? as u64
            }
            _ if self.set_security(key, value)? => {}
            _ => self.set_topic_default(key, value)?,
        }
        Ok(())
    }

    /// The AMQP resource alarms' limits (`amqp/alarm/`), with RabbitMQ's names under `amqp.`.
    fn set_alarm(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let bytes = || -> anyhow::Result<u64> {
            value
                .parse::<u64>()
                .with_context(|| format!("{key}={value}: must be an integer >= 0"))
        };
        match key {
            "amqp.disk.free.limit" => self.amqp_disk_free_limit_bytes = bytes()?,
            "amqp.vm.memory.high.watermark" => {
                // As `rabbitmqctl set_vm_memory_high_watermark`: "a fraction between 0.0 and
                // 1.0"; 0 blocks every publisher.
                let fraction = value
                    .parse::<f64>()
                    .ok()
                    .filter(|fraction| (0.0..=1.0).contains(fraction))
                    .with_context(|| format!("{key}={value}: must be a fraction 0.0 to 1.0"))?;
                self.amqp_memory_high_watermark = MemoryWatermark::Relative(fraction)
            }
            // Settings are applied in key order, so this one comes after the fraction and wins.
            "amqp.vm.memory.high.watermark.absolute" => {
                self.amqp_memory_high_watermark = MemoryWatermark::Absolute(bytes()?)
            }
            _ => bail!("unknown setting {key} (see weir --help)"),
        }
        Ok(())
    }

    /// A topic config's broker-wide default, by its topic or its broker name.
    fn set_topic_default(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let topic_key = BROKER_ALIASES
            .iter()
            .find(|(broker, _)| *broker == key)
            .map(|(_, topic)| *topic)
            .unwrap_or(key);
        if !TOPIC_CONFIG_NAMES.contains(&topic_key) {
            bail!("unknown setting {key} (see weir --help)");
        }
        validate_topic_config(topic_key, value).map_err(anyhow::Error::msg)?;
        self.topic_defaults
            .insert(topic_key.to_string(), value.to_string());
        Ok(())
    }

    /// The value in effect for a topic config name: the topic's own, else the broker default,
    /// else Weir's built-in default. `None` for names Weir has no default for.
    pub fn effective(&self, topic: &BTreeMap<String, String>, key: &str) -> Option<(String, bool)> {
        if let Some(value) = topic.get(key) {
            return Some((value.clone(), false));
        }
        if let Some(value) = self.topic_defaults.get(key) {
            return Some((value.clone(), true));
        }
        let built_in = LogConfig::default();
        let value = match key {
            "segment.bytes" => built_in.segment_bytes.to_string(),
            "segment.ms" => built_in.segment_ms.to_string(),
            "retention.ms" => built_in.retention_ms.to_string(),
            "retention.bytes" => built_in.retention_bytes.to_string(),
            "flush.messages" => i64::MAX.to_string(),
            "flush.ms" => i64::MAX.to_string(),
            "max.message.bytes" => built_in.max_message_bytes.to_string(),
            "cleanup.policy" => "delete".to_string(),
            _ => return None,
        };
        Some((value, true))
    }

    /// The engine configuration of a topic with these per-topic configs.
    pub fn log_config(&self, topic: &BTreeMap<String, String>) -> LogConfig {
        let mut config = LogConfig {
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            checkpoint_interval_bytes: self.checkpoint_interval_bytes,
            ..LogConfig::default()
        };
        let number = |key: &str| -> Option<i64> {
            self.effective(topic, key).and_then(|(v, _)| v.parse().ok())
        };
        if let Some(n) = number("segment.bytes") {
            config.segment_bytes = n.max(1) as u64;
        }
        if let Some(n) = number("segment.ms") {
            config.segment_ms = n.max(1) as u64;
        }
        if let Some(n) = number("retention.ms") {
            config.retention_ms = n;
        }
        if let Some(n) = number("retention.bytes") {
            config.retention_bytes = n;
        }
        if let Some(n) = number("max.message.bytes") {
            config.max_message_bytes = n.clamp(0, u32::MAX as i64) as u32;
        }
        config.durability = durability(number("flush.messages"), number("flush.ms"));
        config
    }
}

/// Default of `weir.tail.cache.shard.bytes`. Why this large: consumers at the tail trail the
/// producers by the time an acknowledgement takes (10-40 ms at 0.6-1.5 GB/s), and with the old
/// fixed 1 MiB per partition they missed the cache and read the disk as fast as it was written,
/// halving what the device could write (2 producers + 2 consumers, 100 B: 6.2-6.4 M msgs/s with
/// ~590 MB/s of disk reads; 10.5-11.0 M with a cache that held them).
pub const TAIL_CACHE_SHARD_BYTES_DEFAULT: usize = 256 << 20;
/// Default of `weir.queue.ack.flush.ms`: acks need not be synchronous (a lost one is a
/// redelivery), so a short window gathers many into one write and fdatasync.
pub const QUEUE_ACK_FLUSH_MS_DEFAULT: u64 = 2;
/// Default of `amqp.disk.free.limit`: RabbitMQ's `disk_free_limit` default, 50 MB.
pub const AMQP_DISK_FREE_LIMIT_BYTES_DEFAULT: u64 = 50_000_000;
/// Default of `amqp.vm.memory.high.watermark`: RabbitMQ's `vm_memory_high_watermark` default.
pub const AMQP_MEMORY_HIGH_WATERMARK_DEFAULT: f64 = 0.4;
/// No partition's tail cache is smaller than this, however many partitions a shard holds.
pub const TAIL_CACHE_PARTITION_BYTES_MIN: usize = 1 << 20;

/// Each partition's share of its shard's tail-cache budget.
pub fn tail_cache_per_partition(shard_bytes: usize, partitions: usize) -> usize {
    (shard_bytes / partitions.max(1)).max(TAIL_CACHE_PARTITION_BYTES_MIN)
}

/// Kafka's flush settings as an engine durability policy: `flush.messages=1` syncs every batch;
/// a finite `flush.ms` is a group-commit interval; anything else leaves flushing to the OS.
fn durability(flush_messages: Option<i64>, flush_ms: Option<i64>) -> Durability {
    match (flush_messages, flush_ms) {
        (Some(n), _) if n <= 1 => Durability::Always,
        (_, Some(ms)) if (0..i64::MAX).contains(&ms) => Durability::Interval { ms: ms as u64 },
        _ => Durability::Os,
    }
}

/// Checks the value of a topic config Weir interprets; unknown names pass (stored as given).
pub fn validate_topic_config(key: &str, value: &str) -> Result<(), String> {
    let numeric = matches!(
        key,
        "segment.bytes"
            | "segment.ms"
            | "retention.ms"
            | "retention.bytes"
            | "flush.messages"
            | "flush.ms"
            | "max.message.bytes"
    );
    if numeric {
        let n: i64 = value
            .parse()
            .map_err(|_| format!("{key}={value}: not an integer"))?;
        let ok = match key {
            "retention.ms" | "retention.bytes" => n >= -1,
            "segment.bytes" => n >= 14,
            "max.message.bytes" => n >= 0,
            _ => n >= 0,
        };
        if !ok {
            return Err(format!("{key}={value}: out of range"));
        }
    }
    Ok(())
}

fn flatten_toml(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, inner) in table {
                // A `[set]` table holds the same names as top-level keys do.
                let name = if prefix.is_empty() && key == "set" {
                    String::new()
                } else if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten_toml(&name, inner, out);
            }
        }
        toml::Value::String(text) => {
            out.insert(prefix.to_string(), text.clone());
        }
        // `listen = ["PLAINTEXT://…", "SSL://…"]`: a list, as Kafka's comma-separated one.
        toml::Value::Array(items) => {
            let texts: Vec<String> = items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect();
            out.insert(prefix.to_string(), texts.join(","));
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

const AUTHORIZER_KEYS: [&str; 3] = [
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
];

/// Kafka's authorizer keys. Any of Kafka's authorizer class names (or `weir`) turns Weir's
/// authorizer on; empty leaves it off. `super.users` is `;`-separated, as in Kafka.
fn set_authorizer(config: &mut AuthorizerConfig, key: &str, value: &str) -> anyhow::Result<()> {
    match key {
        "authorizer.class.name" => {
            config.enabled = !value.is_empty();
            anyhow::ensure!(
                value.is_empty() || AUTHORIZER_CLASS_NAMES.contains(&value),
                "{key}={value}: not one of {AUTHORIZER_CLASS_NAMES:?}"
            );
        }
        "super.users" => {
            config.super_users = value
                .split(';')
                .map(str::trim)
                .filter(|user| !user.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(bad) = config.super_users.iter().find(|u| !u.starts_with("User:")) {
                anyhow::bail!("{key}={value}: '{bad}' is not User:NAME");
            }
        }
        _ => {
            config.allow_everyone_if_no_acl_found = value
                .parse()
                .with_context(|| format!("{key}={value}: not true/false"))?
        }
    }
    Ok(())
}

/// `0-3`, `0,2,5`, `0-1,4` -> sorted, deduplicated CPU list.
pub fn parse_cpus(text: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("--cpus {text}: bad CPU {s:?}"))
        };
        match part.split_once('-') {
            Some((low, high)) => {
                let (low, high) = (parse(low)?, parse(high)?);
                if low > high || high - low > 4096 {
                    bail!("--cpus {text}: bad range {part}");
                }
                cpus.extend(low..=high);
            }
            None => cpus.push(parse(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Share groups' settings, under Kafka's names: the broker's, which a group's own configs
/// (`share.*` group configs, IncrementalAlterConfigs on resource type GROUP:
/// `shares::group_configs`) override within the `min`/`max` bounds.
#[derive(Clone, Debug)]
pub struct SharesConfig {
    /// Per share partition: `group.share.record.lock.duration.ms`,
    /// `group.share.delivery.count.limit`, `group.share.partition.max.record.locks`.
    pub limits: crate::queues::QueueLimits,
    /// Where a share group starts on a partition it has never fetched: the log's start
    /// (`share.auto.offset.reset=earliest`) or its end (`latest`, Kafka's default).
    pub from_earliest: bool,
    /// Where rejected and delivery-limited records are copied (KIP-1191's
    /// `errors.deadletterqueue.topic.name`); `None`: they are only archived.
    pub dead_letter_topic: Option<String>,
    /// `weir.share.state.fsync` (false): whether the share-group ack store fdatasyncs each write
    /// before the acknowledgements it carries are answered. Off, as Kafka leaves its
    /// `__share_group_state` log to the OS (`log.flush.interval.messages` unbounded): an answered
    /// acknowledgement survives a crash of the broker, and a crash of the machine can only bring
    /// a record back (a redelivery), never lose one.
    pub state_fdatasync: bool,
    /// `group.share.session.timeout.ms` (45000): a member silent this long is gone.
    pub session_timeout_ms: u64,
    /// `group.share.heartbeat.interval.ms` (5000), told to members in every heartbeat answer.
    pub heartbeat_interval_ms: u64,
    /// The bounds of a group's `share.session.timeout.ms`, `share.heartbeat.interval.ms` and
    /// `share.record.lock.duration.ms` (`group.share.{min,max}.*`, Kafka 4.2's defaults:
    /// 45000–60000, 5000–15000, 15000–60000).
    pub session_timeout_bounds: (u64, u64),
    pub heartbeat_interval_bounds: (u64, u64),
    pub record_lock_duration_bounds: (u64, u64),
    /// The keys set on the broker (`--set`, the config file), for DescribeConfigs' sources.
    pub explicit: std::collections::BTreeSet<String>,
}

impl Default for SharesConfig {
    fn default() -> Self {
        SharesConfig {
            limits: crate::queues::QueueLimits::SHARE_GROUP,
            from_earliest: false,
            dead_letter_topic: None,
            state_fdatasync: false,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            session_timeout_bounds: (45_000, 60_000),
            heartbeat_interval_bounds: (5_000, 15_000),
            record_lock_duration_bounds: (15_000, 60_000),
            explicit: std::collections::BTreeSet::new(),
        }
    }
}

impl SharesConfig {
    /// The broker settings `set` takes.
    const KEYS: [&'static str; 14] = [
        "share.auto.offset.reset",
        "weir.share.state.fsync",
        "errors.deadletterqueue.topic.name",
        "group.share.record.lock.duration.ms",
        "group.share.delivery.count.limit",
        "group.share.partition.max.record.locks",
        "group.share.session.timeout.ms",
        "group.share.heartbeat.interval.ms",
        "group.share.min.session.timeout.ms",
        "group.share.max.session.timeout.ms",
        "group.share.min.heartbeat.interval.ms",
        "group.share.max.heartbeat.interval.ms",
        "group.share.min.record.lock.duration.ms",
        "group.share.max.record.lock.duration.ms",
    ];

    /// One setting, within the range Kafka 4.2 accepts for it.
    fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        self.explicit.insert(key.to_string());
        if key == "errors.deadletterqueue.topic.name" {
            // KIP-1191's errors.deadletterqueue.topic.name.prefix default: a DLQ is named so.
            anyhow::ensure!(
                value.starts_with("dlq.") && value.len() > 4,
                "{key}={value}: must start with dlq. (KIP-1191's prefix)"
            );
            self.dead_letter_topic = Some(value.to_string());
            return Ok(());
        }
        if key == "weir.share.state.fsync" {
            self.state_fdatasync = match value {
                "true" => true,
                "false" => false,
                _ => anyhow::bail!("{key}={value}: must be true or false"),
            };
            return Ok(());
        }
        if key == "share.auto.offset.reset" {
            self.from_earliest = match value {
                "earliest" => true,
                "latest" => false,
                _ => anyhow::bail!("{key}={value}: must be earliest or latest"),
            };
            return Ok(());
        }
        let number: i64 = value
            .parse()
            .with_context(|| format!("{key}={value}: not an integer"))?;
        let within = |low: i64, high: i64| {
            (low..=high)
                .contains(&number)
                .then_some(number)
                .with_context(|| format!("{key}={number}: must be {low}..{high}"))
        };
        match key {
            "group.share.record.lock.duration.ms" => {
                let ms = within(1_000, 3_600_000)? as u64;
                self.limits.lock_duration = Some(std::time::Duration::from_millis(ms));
            }
            "group.share.delivery.count.limit" => {
                self.limits.delivery_limit = Some(within(2, 10)? as u16);
            }
            "group.share.partition.max.record.locks" => {
                self.limits.acquired_max = within(100, 10_000)? as usize
            }
            "group.share.session.timeout.ms" => {
                self.session_timeout_ms = within(1, i32::MAX.into())? as u64
            }
            "group.share.heartbeat.interval.ms" => {
                self.heartbeat_interval_ms = within(1, i32::MAX.into())? as u64
            }
            "group.share.min.session.timeout.ms" => {
                self.session_timeout_bounds.0 = within(1, i32::MAX.into())? as u64
            }
            "group.share.max.session.timeout.ms" => {
                self.session_timeout_bounds.1 = within(1, i32::MAX.into())? as u64
            }
            "group.share.min.heartbeat.interval.ms" => {
                self.heartbeat_interval_bounds.0 = within(1, i32::MAX.into())? as u64
            }
            "group.share.max.heartbeat.interval.ms" => {
                self.heartbeat_interval_bounds.1 = within(1, i32::MAX.into())? as u64
            }
            "group.share.min.record.lock.duration.ms" => {
                self.record_lock_duration_bounds.0 = within(1_000, 3_600_000)? as u64
            }
            _ => self.record_lock_duration_bounds.1 = within(1_000, 3_600_000)? as u64,
        }
        Ok(())
    }

    /// The acquisition lock of the broker's share groups, in ms.
    pub fn lock_duration_ms(&self) -> u64 {
        self.limits
            .lock_duration
            .map_or(0, |duration| duration.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        let check =
            |text: &str, want: &[usize]| assert_eq!(parse_cpus(text).unwrap(), want, "{text}");
        check("0-3", &[0, 1, 2, 3]);
        check("0,2,5", &[0, 2, 5]);
        check("0-1,4,1", &[0, 1, 4]);
        assert!(parse_cpus("3-1").is_err());
        assert!(parse_cpus("x").is_err());
    }

    #[test]
    fn set_and_toml_merge() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:19150\"\nnum.partitions = 3\n[set]\n\"flush.ms\" = 50\n",
        )
        .unwrap();
        let args = Args {
            config: Some(file),
            set: vec![
                "log.segment.bytes=1048576".into(),
                "num.partitions=4".into(),
            ],
            cpus: Some("0".into()),
            ..Args::default()
        };
        let config = BrokerConfig::from_args(args).unwrap();
        assert_eq!(config.listeners[0].address.port(), 19150);
        assert_eq!(config.num_partitions, 4);
        let log = config.log_config(&BTreeMap::new());
        assert_eq!(log.segment_bytes, 1 << 20);
        assert_eq!(log.durability, Durability::Interval { ms: 50 });
        let mut topic = BTreeMap::new();
        topic.insert("flush.messages".to_string(), "1".to_string());
        assert_eq!(config.log_config(&topic).durability, Durability::Always);
    }

    #[test]
    fn connection_limits() {
        let config = |set: &[&str]| {
            BrokerConfig::from_args(Args {
                set: set.iter().map(|s| s.to_string()).collect(),
                cpus: Some("0".into()),
                ..Args::default()
            })
        };
        let defaults = config(&[]).unwrap();
        assert_eq!(defaults.connection_requests_in_flight_max, 64);
        assert_eq!(defaults.connection_buffer_bytes_max, 100 << 20);
        assert_eq!(defaults.tail_cache_shard_bytes, 256 << 20);
        assert_eq!(defaults.queue_ack_flush_ms, 2);
        assert_eq!(defaults.amqp_disk_free_limit_bytes, 50_000_000);
        let disk = config(&["amqp.disk.free.limit=1000000000000"]).unwrap();
        assert_eq!(disk.amqp_disk_free_limit_bytes, 1_000_000_000_000);

        let flush = config(&["weir.queue.ack.flush.ms=0"]).unwrap();
        assert_eq!(flush.queue_ack_flush_ms, 0);
        assert_eq!(
            config(&["weir.tail.cache.shard.bytes=8388608"])
                .unwrap()
                .tail_cache_shard_bytes,
            8 << 20
        );
        assert_eq!(tail_cache_per_partition(256 << 20, 1), 256 << 20);
        assert_eq!(tail_cache_per_partition(256 << 20, 8), 32 << 20);
        assert_eq!(tail_cache_per_partition(256 << 20, 500), 1 << 20);
        assert_eq!(tail_cache_per_partition(256 << 20, 0), 256 << 20);
        let set = config(&[
            "weir.connection.max.inflight.requests=2",
            "weir.connection.max.buffer.bytes=4096",
        ])
        .unwrap();
        assert_eq!(set.connection_requests_in_flight_max, 2);
        assert_eq!(set.connection_buffer_bytes_max, 4096);
        for bad in [
            "weir.connection.max.inflight.requests=0",
            "weir.connection.max.inflight.requests=-1",
            "weir.connection.max.buffer.bytes=0",
            "weir.connection.max.buffer.bytes=-5",
            "weir.connection.max.buffer.bytes=lots",
            "weir.tail.cache.shard.bytes=0",
            "weir.queue.ack.flush.ms=-1",
            "amqp.disk.free.limit=-1",
            "amqp.disk.free.limit=50MB",
        ] {
            assert!(config(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_watermarks() {
        let config = |set: &[&str]| {
            BrokerConfig::from_args(Args {
                set: set.iter().map(|s| s.to_string()).collect(),
                cpus: Some("0".into()),
                ..Args::default()
            })
        };
        let check = |set: &[&str], watermark: MemoryWatermark| {
            assert_eq!(
                config(set).unwrap().amqp_memory_high_watermark,
                watermark,
                "{set:?}"
            )
        };
        check(&[], MemoryWatermark::Relative(0.4));
        check(
            &["amqp.vm.memory.high.watermark=0.6"],
            MemoryWatermark::Relative(0.6),
        );
        check(
            &["amqp.vm.memory.high.watermark=0"],
            MemoryWatermark::Relative(0.0),
        );
        check(
            &["amqp.vm.memory.high.watermark.absolute=1"],
            MemoryWatermark::Absolute(1),
        );
        // Both set: the absolute one wins, whatever the order.
        for set in [
            [
                "amqp.vm.memory.high.watermark.absolute=1",
                "amqp.vm.memory.high.watermark=0.5",
            ],
            [
                "amqp.vm.memory.high.watermark=0.5",
                "amqp.vm.memory.high.watermark.absolute=1",
            ],
        ] {
            check(&set, MemoryWatermark::Absolute(1));
        }
        for bad in [
            "amqp.vm.memory.high.watermark=1.5",
            "amqp.vm.memory.high.watermark=-0.1",
            "amqp.vm.memory.high.watermark=NaN",
            "amqp.vm.memory.high.watermark=40%",
            "amqp.vm.memory.high.watermark.absolute=-1",
            "amqp.vm.memory.high.watermark.absolute=2GB",
        ] {
            assert!(config(&[bad]).is_err(), "{bad}");
        }
    }

    /// `Err(fragment)`: the start fails with an error containing it.
    fn check_listeners(listen: &[&str], amqp: &[&str], set: &[&str], want: Result<&str, &str>) {
        let result = BrokerConfig::from_args(Args {
            listen: listen.iter().map(|s| s.to_string()).collect(),
            amqp_listen: amqp.iter().map(|s| s.to_string()).collect(),
            set: set.iter().map(|s| s.to_string()).collect(),
            metrics_listen: Some("none".into()),
            cpus: Some("0-1".into()),
            ..Args::default()
        });
        match (result, want) {
            (Ok(config), Ok(expected)) => {
                let kafka = config.listeners.iter().map(ToString::to_string);
                let amqp_names = config.amqp_listeners.iter().map(ToString::to_string);
                let all: Vec<String> = kafka.chain(amqp_names).collect();
                assert_eq!(all.join(" "), expected, "{listen:?} {amqp:?}");
            }
            (Err(error), Err(fragment)) => {
                let message = format!("{error:#}");
                assert!(message.contains(fragment), "{listen:?} {amqp:?}: {message}");
            }
            (got, want) => panic!("{listen:?} {amqp:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn listeners_from_flags() {
        let tls = ["ssl.certificate.location=c.pem", "ssl.key.location=k.pem"];
        check_listeners(
            &[],
            &[],
            &[],
            Ok("PLAINTEXT://127.0.0.1:9092 amqp://127.0.0.1:5672"),
        );
        check_listeners(
            &["127.0.0.1:21000", "SSL://127.0.0.1:21010"],
            &["none"],
            &tls,
            Ok("PLAINTEXT://127.0.0.1:21000 SSL://127.0.0.1:21010"),
        );
        check_listeners(
            &["127.0.0.1:21000"],
            &["amqps://127.0.0.1:21020", "amqp://127.0.0.1:21021"],
            &tls,
            Ok("PLAINTEXT://127.0.0.1:21000 amqps://127.0.0.1:21020 amqp://127.0.0.1:21021"),
        );
    }

    #[test]
    fn bad_listeners_are_refused_with_clear_errors() {
        let tls = ["ssl.certificate.location=c.pem", "ssl.key.location=k.pem"];
        // Shard 1's broker port of the first listener is the second's bootstrap port.
        check_listeners(
            &["127.0.0.1:21000", "SSL://127.0.0.1:21002"],
            &["none"],
            &tls,
            Err("listeners clash on port 21002: PLAINTEXT://127.0.0.1:21000 (shard 1's broker port) and SSL://127.0.0.1:21002 (bootstrap port)"),
        );
        check_listeners(
            &["0.0.0.0:21000"],
            &["127.0.0.1:21001"],
            &[],
            Err("clash on port 21001"),
        );
        check_listeners(
            &["SSL://127.0.0.1:21000"],
            &["none"],
            &[],
            Err("needs --set ssl.certificate.location"),
        );
        check_listeners(
            &["127.0.0.1:21000"],
            &["amqps://127.0.0.1:21020"],
            &[],
            Err("needs --set ssl.certificate.location"),
        );
        let mutual = [tls[0], tls[1], "ssl.client.auth=required"];
        check_listeners(
            &["SSL://127.0.0.1:21000"],
            &["none"],
            &mutual,
            Err("needs --set ssl.ca.location"),
        );
        check_listeners(
            &["SSL://127.0.0.1:21000"],
            &["none"],
            &["ssl.client.auth=maybe"],
            Err("must be required, requested or none"),
        );
        check_listeners(
            &["TCP://127.0.0.1:21000"],
            &[],
            &[],
            Err("unknown security protocol"),
        );
        check_listeners(
            &["127.0.0.1:21000"],
            &["none", "127.0.0.1:21020"],
            &[],
            Err("cannot be given with other"),
        );
    }

    #[test]
    fn listeners_from_the_config_file() {
        // The file's list, as a TOML array (or Kafka's comma-separated string).
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weir.toml");
        std::fs::write(&file, "listen = [\"127.0.0.1:21000\", \"SSL://127.0.0.1:21010\"]\namqp-listen = \"none\"\n\"ssl.certificate.location\" = \"c.pem\"\n\"ssl.key.location\" = \"k.pem\"\n").unwrap();
        let config = BrokerConfig::from_args(Args {
            config: Some(file),
            cpus: Some("0".into()),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(config.listeners[1].to_string(), "SSL://127.0.0.1:21010");
    }

    #[test]
    fn security_settings() {
        let config = |set: &[&str]| {
            BrokerConfig::from_args(Args {
                set: set.iter().map(|s| s.to_string()).collect(),
                cpus: Some("0".into()),
                ..Args::default()
            })
        };
        let defaults = config(&[]).unwrap().security;
        assert_eq!(defaults.amqp_loopback_users, ["guest"]);
        assert_eq!(defaults.failed_authentication_delay_ms, 100);
        assert!(!defaults.sasl_required);
        let loopback = |value: &str| {
            config(&[&format!("weir.amqp.loopback.users={value}")])
                .unwrap()
                .security
                .amqp_loopback_users
        };
        assert_eq!(loopback("guest, ops ,"), ["guest", "ops"]);
        assert!(loopback("").is_empty());
        let set = config(&[
            "weir.sasl.required=true",
            "connection.failed.authentication.delay.ms=0",
        ])
        .unwrap()
        .security;
        assert!(set.sasl_required);
        assert_eq!(set.failed_authentication_delay_ms, 0);
        for bad in [
            "weir.sasl.required=yes",
            "connection.failed.authentication.delay.ms=-1",
        ] {
            assert!(config(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_setting_is_an_error() {
        let args = Args {
            set: vec!["no.such=1".into()],
            cpus: Some("0".into()),
            ..Args::default()
        };
        assert!(BrokerConfig::from_args(args).is_err());
    }
}
