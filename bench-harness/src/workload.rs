//! The workload: command-line flags (OpenMessaging Benchmark style), presets, and the resolved
//! `Workload` every other module reads. Parsed once on the main thread; read-only afterwards.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use crate::batch::VALUE_TIMESTAMP_BYTES;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Kafka's 2014 "2 million writes per second" shape: 100-byte records, one producer, one
    /// partition, acks=1.
    #[value(name = "kafka-2014")]
    #[serde(rename = "kafka-2014")]
    Kafka2014,
    /// OpenMessaging Benchmark's 1 KiB workload: 1 KiB records, 16 partitions.
    #[value(name = "omb-1kb")]
    #[serde(rename = "omb-1kb")]
    Omb1kb,
    /// 1,000 partitions, 100-byte records, keyed round-robin across partitions.
    ManyPartitions,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Keys {
    /// No key; sticky partitioning: each batch fills one partition, the next batch the next one.
    None,
    /// An 8-byte key per record; records go to partitions in turn.
    RoundRobin,
    /// An 8-byte random key per record; each record goes to a random partition.
    Random,
}

/// Exchange types (docs/routing.md), for `--exchange-type`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExchangeType {
    #[default]
    Topic,
    Direct,
    Fanout,
    Headers,
}

impl ExchangeType {
    pub fn name(self) -> &'static str {
        match self {
            ExchangeType::Topic => "topic",
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Headers => "headers",
        }
    }
}

/// Exchange mode: the exchange the producers write to and the destination topics the consumers
/// read, each record reaching every destination once.
#[derive(Debug, Clone, Serialize)]
pub struct ExchangeSpec {
    pub name: String,
    pub exchange_type: ExchangeType,
    /// Bindings declared on the exchange (matching and non-matching).
    pub bindings: u32,
    pub destinations: Vec<String>,
}

impl ExchangeSpec {
    /// Copies of every record the destinations receive.
    pub fn copies_per_record(&self) -> u64 {
        self.destinations.len() as u64
    }

    /// The `weir.exchange.bindings` list: bindings that never match the produced records, then one
    /// matching binding per destination, `bindings` in all (fanout: every binding matches, so only
    /// the destinations' bindings exist).
    pub fn bindings_config(&self) -> String {
        let destinations = self.destinations.len();
        let non_matching = (self.bindings as usize).saturating_sub(destinations);
        let mut list: Vec<String> = Vec::with_capacity(non_matching + destinations);
        if self.exchange_type != ExchangeType::Fanout {
            for index in 0..non_matching {
                let destination = &self.destinations[index % destinations];
                list.push(match self.exchange_type {
                    // The produced keys are 8 raw bytes (or null): never a dotted word list that
                    // starts with this literal word.
                    ExchangeType::Topic => format!("topic:{destination}=tenant-{index}.orders.*"),
                    ExchangeType::Direct => format!("topic:{destination}=tenant-{index}"),
                    // The produced records carry no headers, so any criterion fails.
                    ExchangeType::Headers => {
                        format!("topic:{destination}=x-match=all&tenant=t{index}")
                    }
                    ExchangeType::Fanout => unreachable!("fanout has no non-matching bindings"),
                });
            }
        }
        for destination in &self.destinations {
            list.push(match self.exchange_type {
                ExchangeType::Topic => format!("topic:{destination}=#"),
                // A null key routes as the empty key (--keys none is enforced for direct).
                ExchangeType::Direct => format!("topic:{destination}="),
                ExchangeType::Fanout => format!("topic:{destination}"),
                // No criteria under x-match=all: matches every record.
                ExchangeType::Headers => format!("topic:{destination}=x-match=all"),
            });
        }
        list.join(",")
    }
}

/// The load generator's flags. Workload flags are optional so that a preset can fill them; an
/// explicit flag always wins over the preset.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Bootstrap broker address.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Workload preset; explicit flags override its values.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Topic name (with --topics N > 1, topics are NAME-0 .. NAME-{N-1}).
    #[arg(long)]
    pub topic: Option<String>,
    /// Number of topics.
    #[arg(long)]
    pub topics: Option<u32>,
    /// Partitions per topic (used when the tool creates the topic).
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Bytes per record value (the first 8 carry the send time).
    #[arg(long)]
    pub message_bytes: Option<usize>,
    /// Producer threads; each writes to every partition.
    #[arg(long)]
    pub producers: Option<u32>,
    /// Consumers per consumer group; a group's partitions are split among its consumers.
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Consumer groups; every group reads every message.
    #[arg(long)]
    pub consumer_groups: Option<u32>,
    /// Maximum bytes of one record batch.
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    /// How long a non-full batch may wait for more records, in ms (fractions allowed; 0 sends
    /// what each pass of the producer loop appended, at most 1,024 records).
    #[arg(long)]
    pub linger_ms: Option<f64>,
    /// 0, 1 or -1 (all).
    #[arg(long, allow_hyphen_values = true)]
    pub acks: Option<i16>,
    #[arg(long, value_enum)]
    pub keys: Option<Keys>,
    /// Target produce rate over all producers in messages/s, or "max".
    #[arg(long)]
    pub rate: Option<String>,
    /// Measured duration after warm-up, e.g. 20s, 500ms, 2m (ignored with --messages).
    #[arg(long)]
    pub duration: Option<String>,
    /// Produce exactly N messages in total instead of running for a duration.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Warm-up before measuring (default 5s, or 0s with --messages); warm-up messages are counted
    /// but not measured.
    #[arg(long)]
    pub warmup: Option<String>,
    /// Produce requests in flight (sent, not yet answered) per connection [default: 5, Kafka's
    /// max.in.flight.requests.per.connection].
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Most batch bytes in one Produce request (at least one batch goes) [default: 1 MiB, Kafka's
    /// max.request.size].
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// Fetch max_bytes per request.
    #[arg(long)]
    pub fetch_max_bytes: Option<i32>,
    /// Fetch max_bytes per partition.
    #[arg(long)]
    pub fetch_partition_max_bytes: Option<i32>,
    /// Seconds the consumers get after producing ends to read every message.
    #[arg(long, default_value = "30")]
    pub drain_timeout_s: u64,
    /// CPUs to pin the harness's threads to, e.g. "1", "2-3", "0,2".
    #[arg(long)]
    pub cpus: Option<String>,
    /// Start a `weir` broker for the run (temporary data dir, --server-cpus).
    #[arg(long)]
    pub spawn_server: bool,
    /// The weir binary for --spawn-server (default: next to this executable).
    #[arg(long)]
    pub weir_bin: Option<std::path::PathBuf>,
    /// CPUs for the spawned server, passed to `weir --cpus`.
    #[arg(long, default_value = "0")]
    pub server_cpus: String,
    /// Extra `--set key=value` settings for the spawned server.
    #[arg(long = "server-set")]
    pub server_set: Vec<String>,
    /// Scrape the broker's Prometheus endpoint (HOST:PORT, weir's --metrics-listen) during the
    /// run and report what the broker counted beside the client's figures. With --spawn-server,
    /// the spawned weir serves its metrics there.
    #[arg(long)]
    pub broker_metrics: Option<String>,
    /// How often --broker-metrics scrapes.
    #[arg(long, default_value = "1000")]
    pub broker_metrics_interval_ms: u64,
    /// Speak TLS to the broker (its `SSL://` listener at --bootstrap), trusting --tls-ca. With
    /// --spawn-server and no --tls-ca, the spawned broker gets an SSL listener and a certificate
    /// made for the run.
    #[arg(long)]
    pub tls: bool,
    /// The CA file (PEM) the broker's certificate chains to, for --tls.
    #[arg(long, requires = "tls")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write throughput over time and the latency percentile curves as SVG.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
    /// Produce first, then consume the backlog: consume throughput measured alone (end-to-end
    /// latency then includes the wait).
    #[arg(long)]
    pub backlog: bool,
    /// Skip consuming (produce-only run).
    #[arg(long)]
    pub no_consume: bool,
    /// Exchange mode: declare this exchange with --bindings bindings routing every record to
    /// --destinations topics, produce to it, and consume every routed copy from the destinations.
    #[arg(long)]
    pub exchange: Option<String>,
    #[arg(long, value_enum, default_value = "topic")]
    pub exchange_type: ExchangeType,
    /// Bindings on the exchange; all but one per destination never match.
    #[arg(long, default_value = "10000")]
    pub bindings: u32,
    /// Destination topics (EXCHANGE-dest-0 ..), each with --partitions partitions.
    #[arg(long, default_value = "4")]
    pub destinations: u32,
    /// Exchange mode: first run the same records against a plain topic (EXCHANGE-plain) and
    /// report routed/plain.
    #[arg(long)]
    pub compare_plain: bool,
    /// Share mode (KIP-932): produce the records first, then --consumers share consumers of this
    /// share group consume and acknowledge (Accept) every record once.
    #[arg(long)]
    pub share_group: Option<String>,
    /// Share mode: ShareFetch max_records (KIP-932's batch of records per answer).
    #[arg(long, default_value = "500")]
    pub share_max_records: i32,
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// Produce for warm-up plus this many seconds.
    Duration { seconds: f64 },
    /// Produce exactly this many messages in total.
    Messages { count: u64 },
}

/// The resolved workload, recorded in the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub preset: Option<Preset>,
    pub topics: Vec<String>,
    pub partitions: u32,
    pub message_bytes: usize,
    pub producers: u32,
    pub consumers: u32,
    pub consumer_groups: u32,
    pub batch_bytes: usize,
    pub linger_ms: f64,
    pub acks: i16,
    pub keys: Keys,
    /// None = as fast as possible.
    pub rate_msgs_per_s: Option<f64>,
    pub stop: Stop,
    pub warmup_s: f64,
    pub max_in_flight: usize,
    pub max_request_bytes: usize,
    pub fetch_max_bytes: i32,
    pub fetch_partition_max_bytes: i32,
    /// Exchange mode: `topics` is then `[exchange]` followed by the destinations.
    pub exchange: Option<ExchangeSpec>,
    /// Share mode: the share group and ShareFetch max_records.
    pub share: Option<ShareSpec>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShareSpec {
    pub group: String,
    pub max_records: i32,
}

struct Defaults {
    partitions: u32,
    message_bytes: usize,
    producers: u32,
    keys: Keys,
}

fn preset_defaults(preset: Option<Preset>) -> Defaults {
    match preset {
        None | Some(Preset::Kafka2014) => Defaults {
            partitions: 1,
            message_bytes: 100,
            producers: 1,
            keys: Keys::None,
        },
        Some(Preset::Omb1kb) => Defaults {
            partitions: 16,
            message_bytes: 1024,
            producers: 1,
            keys: Keys::None,
        },
        Some(Preset::ManyPartitions) => Defaults {
            partitions: 1000,
            message_bytes: 100,
            producers: 1,
            keys: Keys::RoundRobin,
        },
    }
}

/// Parses "20s", "500ms", "2m", "1.5s" or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, scale) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else if let Some(number) = text.strip_suffix('h') {
        (number, 3600.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("duration {text:?} is not like 20s, 500ms or 2m"))?;
    ensure!(
        value.is_finite() && value >= 0.0,
        "duration {text:?} is negative"
    );
    Ok(Duration::from_secs_f64(value * scale))
}

/// Parses "max" or a positive message rate, with optional k/M suffix ("500k", "2.5M").
pub fn parse_rate(text: &str) -> Result<Option<f64>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("max") {
        return Ok(None);
    }
    let (number, scale) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1e3),
        Some('M') => (&text[..text.len() - 1], 1e6),
        _ => (text, 1.0),
    };
    let rate: f64 = number
        .parse()
        .with_context(|| format!("rate {text:?} is not \"max\" or a number like 500k"))?;
    ensure!(rate.is_finite() && rate > 0.0, "rate {text:?} must be > 0");
    Ok(Some(rate * scale))
}

/// Parses a CPU list: "1", "0,2", "2-3", "0-1,4".
pub fn parse_cpus(text: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        match part.split_once('-') {
            Some((low, high)) => {
                let low: usize = low.parse().with_context(|| format!("cpu list {text:?}"))?;
                let high: usize = high.parse().with_context(|| format!("cpu list {text:?}"))?;
                ensure!(low <= high, "cpu range {part:?} is backwards");
                cpus.extend(low..=high);
            }
            None => cpus.push(part.parse().with_context(|| format!("cpu list {text:?}"))?),
        }
    }
    ensure!(!cpus.is_empty(), "cpu list {text:?} is empty");
    Ok(cpus)
}

impl Workload {
    #[expect(
        clippy::too_many_lines,
        reason = "over 70 lines before the limit; split, then drop this"
    )]
    pub fn resolve(args: &RunArgs) -> Result<Workload> {
        let defaults = preset_defaults(args.preset);
        let topic = args
            .topic
            .clone()
            .unwrap_or_else(|| "weir-bench".to_owned());
        let topic_count = args.topics.unwrap_or(1);
        ensure!(topic_count >= 1, "--topics must be at least 1");
        ensure!(
            !args.compare_plain || args.exchange.is_some(),
            "--compare-plain needs --exchange"
        );
        let exchange = match &args.exchange {
            Some(name) => {
                ensure!(args.destinations >= 1, "--destinations must be at least 1");
                ensure!(
                    args.topics.is_none() && args.topic.is_none(),
                    "--exchange replaces --topic/--topics"
                );
                Some(ExchangeSpec {
                    name: name.clone(),
                    exchange_type: args.exchange_type,
                    bindings: args.bindings.max(args.destinations),
                    destinations: (0..args.destinations)
                        .map(|index| format!("{name}-dest-{index}"))
                        .collect(),
                })
            }
            None => None,
        };
        let topics = if let Some(spec) = &exchange {
            std::iter::once(spec.name.clone())
                .chain(spec.destinations.iter().cloned())
                .collect()
        } else if topic_count == 1 {
            vec![topic]
        } else {
            (0..topic_count)
                .map(|index| format!("{topic}-{index}"))
                .collect()
        };
        let message_bytes = args.message_bytes.unwrap_or(defaults.message_bytes);
        ensure!(
            message_bytes >= VALUE_TIMESTAMP_BYTES,
            "--message-bytes must be at least {VALUE_TIMESTAMP_BYTES} (the send timestamp)"
        );
        let acks = args.acks.unwrap_or(1);
        ensure!(matches!(acks, -1..=1), "--acks must be 0, 1 or -1");
        let stop = match (args.messages, &args.duration) {
            (Some(count), _) => {
                ensure!(count > 0, "--messages must be > 0");
                Stop::Messages { count }
            }
            (None, duration) => Stop::Duration {
                seconds: parse_duration(duration.as_deref().unwrap_or("20s"))?.as_secs_f64(),
            },
        };
        let workload = Workload {
            preset: args.preset,
            topics,
            partitions: args.partitions.unwrap_or(defaults.partitions),
            message_bytes,
            producers: args.producers.unwrap_or(defaults.producers),
            consumers: args.consumers.unwrap_or(1),
            consumer_groups: if args.no_consume {
                0
            } else {
                args.consumer_groups.unwrap_or(1)
            },
            batch_bytes: args.batch_bytes.unwrap_or(512 << 10),
            linger_ms: args.linger_ms.unwrap_or(1.0),
            acks,
            keys: args.keys.unwrap_or(defaults.keys),
            rate_msgs_per_s: parse_rate(args.rate.as_deref().unwrap_or("max"))?,
            stop,
            // A --messages run measures every message unless told otherwise.
            warmup_s: parse_duration(
                args.warmup
                    .as_deref()
                    .unwrap_or(if args.messages.is_some() { "0s" } else { "5s" }),
            )?
            .as_secs_f64(),
            max_in_flight: args.max_in_flight.unwrap_or(5),
            max_request_bytes: args.max_request_bytes.unwrap_or(1 << 20),
            fetch_max_bytes: args.fetch_max_bytes.unwrap_or(32 << 20),
            fetch_partition_max_bytes: args.fetch_partition_max_bytes.unwrap_or(8 << 20),
            exchange,
            share: args.share_group.clone().map(|group| ShareSpec {
                group,
                max_records: args.share_max_records,
            }),
        };
        workload.check()?;
        Ok(workload)
    }

    fn check(&self) -> Result<()> {
        if let Some(spec) = &self.exchange {
            ensure!(
                spec.exchange_type != ExchangeType::Direct || self.keys == Keys::None,
                "--exchange-type direct needs --keys none (records then route by the empty key)"
            );
        }
        if let Some(share) = &self.share {
            ensure!(
                self.exchange.is_none() && self.topics.len() == 1,
                "--share-group reads one plain topic (no --exchange, --topics 1)"
            );
            ensure!(
                self.consumer_groups == 1,
                "--share-group is the one group (--consumer-groups 1)"
            );
            ensure!(
                share.max_records >= 1,
                "--share-max-records must be at least 1"
            );
        }
        ensure!(self.partitions >= 1, "--partitions must be at least 1");
        ensure!(self.producers >= 1, "--producers must be at least 1");
        ensure!(
            self.consumer_groups == 0 || self.consumers >= 1,
            "--consumers must be at least 1"
        );
        ensure!(
            self.max_in_flight >= 1,
            "--max-in-flight must be at least 1"
        );
        let one_record = crate::batch::BATCH_HEADER_BYTES
            + crate::batch::record_bytes(0, Some(8), self.message_bytes);
        ensure!(
            self.batch_bytes >= one_record,
            "--batch-bytes {} cannot hold one {}-byte record ({one_record} bytes with headers)",
            self.batch_bytes,
            self.message_bytes
        );
        if self.fetch_partition_max_bytes < self.batch_bytes as i32 {
            bail!(
                "--fetch-partition-max-bytes {} is smaller than --batch-bytes {}",
                self.fetch_partition_max_bytes,
                self.batch_bytes
            );
        }
        Ok(())
    }

    /// Bytes per message counted in MB/s figures: the record value, as OMB counts payload.
    pub fn payload_bytes(&self) -> u64 {
        self.message_bytes as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_rates_and_cpus_parse() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_rate("max").unwrap(), None);
        assert_eq!(parse_rate("500k").unwrap(), Some(500_000.0));
        assert_eq!(parse_rate("2.5M").unwrap(), Some(2_500_000.0));
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_cpus("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_cpus("3-1").is_err());
    }

    #[test]
    fn preset_names_are_the_documented_ones() {
        use clap::ValueEnum;
        for (name, preset) in [
            ("kafka-2014", Preset::Kafka2014),
            ("omb-1kb", Preset::Omb1kb),
            ("many-partitions", Preset::ManyPartitions),
        ] {
            assert_eq!(Preset::from_str(name, false), Ok(preset));
            assert_eq!(
                serde_json::to_string(&preset).unwrap(),
                format!("\"{name}\"")
            );
        }
    }

    #[test]
    fn presets_fill_and_flags_override() {
        let args = RunArgs {
            preset: Some(Preset::Omb1kb),
            producers: Some(2),
            ..RunArgs::default()
        };
        let workload = Workload::resolve(&args).unwrap();
        assert_eq!(
            (
                workload.partitions,
                workload.message_bytes,
                workload.producers
            ),
            (16, 1024, 2)
        );
        let args = RunArgs {
            preset: Some(Preset::ManyPartitions),
            ..RunArgs::default()
        };
        assert_eq!(Workload::resolve(&args).unwrap().partitions, 1000);
        let args = RunArgs {
            topics: Some(3),
            topic: Some("t".into()),
            messages: Some(10),
            ..RunArgs::default()
        };
        let workload = Workload::resolve(&args).unwrap();
        assert_eq!(workload.topics, vec!["t-0", "t-1", "t-2"]);
        assert_eq!(workload.stop, Stop::Messages { count: 10 });
    }

    #[test]
    fn impossible_workloads_are_refused() {
        for args in [
            RunArgs {
                message_bytes: Some(4),
                ..RunArgs::default()
            },
            RunArgs {
                acks: Some(2),
                ..RunArgs::default()
            },
            RunArgs {
                batch_bytes: Some(100),
                ..RunArgs::default()
            },
        ] {
            assert!(Workload::resolve(&args).is_err());
        }
    }

    #[test]
    fn exchange_bindings_hold_n_elements_with_one_match_per_destination() {
        let spec = |exchange_type| ExchangeSpec {
            name: "app".to_owned(),
            exchange_type,
            bindings: 10,
            destinations: vec!["d0".to_owned(), "d1".to_owned()],
        };
        let topic = spec(ExchangeType::Topic).bindings_config();
        let elements: Vec<&str> = topic.split(',').collect();
        assert_eq!(elements.len(), 10);
        assert_eq!(&elements[8..], ["topic:d0=#", "topic:d1=#"]);
        assert_eq!(elements[0], "topic:d0=tenant-0.orders.*");
        assert_eq!(elements[1], "topic:d1=tenant-1.orders.*");
        assert_eq!(
            spec(ExchangeType::Fanout).bindings_config(),
            "topic:d0,topic:d1"
        );
        let headers = spec(ExchangeType::Headers).bindings_config();
        assert!(headers.ends_with("topic:d0=x-match=all,topic:d1=x-match=all"));
        let direct = spec(ExchangeType::Direct).bindings_config();
        assert!(direct.ends_with("topic:d0=,topic:d1="));
        assert_eq!(spec(ExchangeType::Topic).copies_per_record(), 2);
    }
}
