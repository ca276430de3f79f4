//! One load-generator run, on the main thread: optionally start a broker, create the topics, find
//! partition leaders, start fetchers at the log ends, start producers, print the live line, stop,
//! check that every produced message was consumed by every group, and report. Exchange mode
//! (`--exchange`): declare the destinations and the exchange, produce to the exchange, read the
//! destinations, and expect every group to read `produced × destinations` records; with
//! `--compare-plain` a plain-topic run of the same records comes first on the same broker.
//!
//! The main thread only reads shared counters while workers run; it joins every worker before it
//! builds the results.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::admin::{self, Cluster, Connection};
use crate::broker_metrics::Poller;
use crate::consumer::{self, FetcherPlan};
use crate::producer::{self, ProducerPlan, Target};
use crate::report::{human_rate, Latency, Results, SeriesPoint};
use crate::server::{self, SpawnedServer};
use crate::share::{self, SharePlan};
use crate::stats::{self, Clock, CpuPlan, FlowSnapshot, Shared};
use crate::tls;
use crate::wire::{self, FetchLimits, FetchPosition, API_FETCH, API_PRODUCE};
use crate::workload::{parse_cpus, RunArgs, ShareSpec, Stop, Workload};

pub type Worker = JoinHandle<Result<Histogram<u64>>>;
pub type LateFetchers = Box<dyn FnOnce() -> Result<Vec<Worker>>>;

/// Runs the benchmark; `Ok(results)` may still carry errors (a count mismatch, a failed thread),
/// which make the process exit non-zero after the report is written.
pub fn run(args: &RunArgs) -> Result<Results> {
    let workload = Arc::new(Workload::resolve(args)?);
    let certificates = set_up_tls(args)?;
    let mut spawned = spawn(args, certificates.as_ref())?;
    let poller = match &args.broker_metrics {
        Some(address) => Some(Poller::start(
            address,
            Duration::from_millis(args.broker_metrics_interval_ms.max(1)),
        )?),
        None => None,
    };
    let mut result = match &workload.exchange {
        Some(spec) if args.compare_plain => {
            // The same records to a plain topic first, on the same broker.
            let mut plain = (*workload).clone();
            plain.exchange = None;
            plain.topics = vec![format!("{}-plain", spec.name)];
            plain.partitions = workload.partitions;
            eprintln!("weir-bench: plain run on topic {}", plain.topics[0]);
            match run_against_broker(args, Arc::new(plain)) {
                Ok(plain_results) => {
                    print!("{}", crate::report::table(&plain_results));
                    eprintln!("weir-bench: exchange run on {}", spec.name);
                    run_against_broker(args, workload).map(|mut results| {
                        results.set_plain(&plain_results);
                        results
                    })
                }
                Err(error) => Err(error),
            }
        }
        _ => run_against_broker(args, workload),
    };
    if let Some(poller) = poller {
        let view = poller.finish();
        if let Ok(results) = &mut result {
            match view {
                Ok(view) => results.broker = Some(view),
                Err(error) => results.errors.push(format!("broker metrics: {error:#}")),
            }
        }
    }
    if let Some(server) = &mut spawned {
        if !server.is_running() {
            eprintln!(
                "weir-bench: the spawned weir exited during the run; its log:\n{}",
                server.log_tail()
            );
        }
    }
    result
}

/// The broker of --spawn-server, started with the settings the run needs.
fn spawn(
    args: &RunArgs,
    certificates: Option<&tls::RunCertificates>,
) -> Result<Option<SpawnedServer>> {
    if !args.spawn_server {
        return Ok(None);
    }
    let weir_bin = match &args.weir_bin {
        Some(path) => path.clone(),
        None => server::default_weir_bin()?,
    };
    let mut settings = args.server_set.clone();
    // Share consumers join after producing: from `latest` they would see nothing.
    if args.share_group.is_some()
        && !settings
            .iter()
            .any(|setting| setting.starts_with("share.auto.offset.reset="))
    {
        settings.push("share.auto.offset.reset=earliest".to_owned());
    }
    if let Some(address) = &args.broker_metrics {
        settings.push(format!("metrics-listen={address}"));
    }
    let listen = match certificates {
        Some(certificates) => {
            settings.extend(certificates.server_settings());
            format!("SSL://{}", args.bootstrap)
        }
        None => args.bootstrap.clone(),
    };
    Ok(Some(SpawnedServer::start(
        &weir_bin,
        &listen,
        &args.server_cpus,
        &settings,
        None,
    )?))
}

/// `--tls`: every connection speaks TLS from here on. Answers the certificates made for a
/// spawned broker when no `--tls-ca` was given (kept until the run ends).
fn set_up_tls(args: &RunArgs) -> Result<Option<tls::RunCertificates>> {
    if !args.tls {
        return Ok(None);
    }
    match &args.tls_ca {
        Some(ca) => tls::install(ca).map(|()| None),
        None if args.spawn_server => {
            let certificates = tls::run_certificates()?;
            tls::install(&certificates.ca)?;
            Ok(Some(certificates))
        }
        None => bail!("--tls needs --tls-ca (or --spawn-server, which makes its own)"),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
fn run_against_broker(args: &RunArgs, workload: Arc<Workload>) -> Result<Results> {
    let mut connection = Connection::open(&args.bootstrap)?;
    let versions = admin::api_versions(&mut connection).context("ApiVersions")?;
    let produce_version = wire::negotiate(
        wire::PRODUCE_VERSIONS,
        versions.range(API_PRODUCE),
        "Produce",
    )?;
    let fetch_version = wire::negotiate(wire::FETCH_VERSIONS, versions.range(API_FETCH), "Fetch")?;
    if let Some(spec) = &workload.exchange {
        // Destinations first: the exchange's bindings name them.
        admin::ensure_topics(
            &mut connection,
            &versions,
            &spec.destinations,
            workload.partitions as i32,
            &[],
        )?;
        admin::ensure_topics(
            &mut connection,
            &versions,
            std::slice::from_ref(&spec.name),
            workload.partitions as i32,
            &[
                ("weir.exchange.type", spec.exchange_type.name().to_owned()),
                ("weir.exchange.bindings", spec.bindings_config()),
            ],
        )
        .with_context(|| format!("declaring exchange {}", spec.name))?;
    }
    let cluster = admin::ensure_topics(
        &mut connection,
        &versions,
        &workload.topics,
        workload.partitions as i32,
        &[],
    )?;
    let all = all_targets(&workload, &cluster)?;
    // Exchange mode: produce to the exchange (topic 0), consume the destinations (the rest).
    let (produce_to, targets): (Vec<_>, Vec<_>) = if workload.exchange.is_some() {
        all.iter().partition(|&&((topic, _), _)| topic == 0)
    } else {
        (all.clone(), all)
    };
    let copies = workload
        .exchange
        .as_ref()
        .map_or(1, |spec| spec.copies_per_record());
    let broker_ids: Vec<i32> = {
        let mut ids: Vec<i32> = produce_to.iter().map(|target| target.1).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let broker_addresses: Vec<String> = broker_ids
        .iter()
        .map(|id| cluster.brokers[id].clone())
        .collect();
    for address in &broker_addresses {
        admin::wait_connectable(address, Duration::from_secs(10))?;
    }
    let producer_targets: Vec<Target> = produce_to
        .iter()
        .map(|&((topic, partition), leader)| Target {
            topic,
            partition,
            broker: broker_ids.binary_search(&leader).unwrap_or(0),
        })
        .collect();

    // Consumers start at the current log ends, so that they read exactly this run's messages.
    let start_offsets = log_end_offsets(&workload, &cluster, &targets, &versions)?;

    let cpus = Arc::new(CpuPlan::new(match &args.cpus {
        Some(list) => parse_cpus(list)?,
        None => Vec::new(),
    }));
    let clock = Clock::new();
    let warmup_ns = (workload.warmup_s * 1e9) as u64;
    let mut shared = Shared::new(clock, warmup_ns, workload.consumer_groups as usize);
    shared.copies_per_message = copies;
    let shared = Arc::new(shared);
    let stop_consumers = Arc::new(AtomicBool::new(false));

    let ledger = Arc::new(share::Ledger::default());
    let share_consumers = match &workload.share {
        Some(spec) => Some(share_spawner(
            &mut connection,
            &versions,
            SharePlans {
                spec: spec.clone(),
                workload: workload.clone(),
                cluster: cluster.clone(),
                targets: targets.clone(),
                start_offsets: start_offsets.clone(),
                shared: shared.clone(),
                ledger: ledger.clone(),
                cpus: cpus.clone(),
                stop: stop_consumers.clone(),
            },
        )?),
        None => None,
    };
    // Fetchers start before the first message, or (with --backlog) once producing is over.
    let spawn_fetchers = {
        let workload = workload.clone();
        let shared = shared.clone();
        let cpus = cpus.clone();
        let stop_consumers = stop_consumers.clone();
        let brokers = cluster.brokers.clone();
        move || -> Result<Vec<Worker>> {
            let mut fetchers: Vec<Worker> = Vec::new();
            for group in 0..workload.consumer_groups as usize {
                for consumer in 0..workload.consumers as usize {
                    // (leader, topic) -> positions
                    let mut assigned: BTreeMap<(i32, usize), Vec<FetchPosition>> = BTreeMap::new();
                    for (index, &((topic, partition), leader)) in targets.iter().enumerate() {
                        if index % workload.consumers as usize == consumer {
                            assigned
                                .entry((leader, topic))
                                .or_default()
                                .push(FetchPosition {
                                    partition,
                                    offset: start_offsets[index],
                                });
                        }
                    }
                    for ((leader, topic), positions) in assigned {
                        fetchers.push(consumer::spawn(FetcherPlan {
                            group,
                            name: format!("fetch-g{group}-c{consumer}-b{leader}"),
                            address: brokers[&leader].clone(),
                            topic: workload.topics[topic].clone(),
                            positions,
                            fetch_version,
                            limits: FetchLimits {
                                max_wait_ms: 100,
                                min_bytes: 1,
                                max_bytes: workload.fetch_max_bytes,
                                partition_max_bytes: workload.fetch_partition_max_bytes,
                            },
                            payload_bytes: workload.payload_bytes(),
                            shared: shared.clone(),
                            cpus: cpus.clone(),
                            stop: stop_consumers.clone(),
                        })?);
                    }
                }
            }
            Ok(fetchers)
        }
    };
    let (fetchers, late_fetchers): (Vec<Worker>, Option<LateFetchers>) =
        if let Some(spawn) = share_consumers {
            // Share consumers read the backlog: the records are all there before the first fetch.
            (Vec::new(), Some(spawn))
        } else if args.backlog {
            (Vec::new(), Some(Box::new(spawn_fetchers)))
        } else {
            (spawn_fetchers()?, None)
        };

    let producers = start_producers(
        &workload,
        &producer_targets,
        &broker_addresses,
        produce_version,
        &shared,
        &cpus,
    )?;
    let monitor = monitor(
        &MonitorPlan::new(
            workload.stop,
            workload.warmup_s,
            workload.payload_bytes(),
            args.drain_timeout_s,
        ),
        &shared,
        producers,
        fetchers,
        late_fetchers,
        &stop_consumers,
    );
    let (mut errors, outcome) = match monitor {
        Ok(outcome) => (Vec::new(), outcome),
        Err(error) => return Err(error),
    };
    if let Some(error) = shared.first_error() {
        errors.push(error);
    }
    let produced = shared.produced.messages.load(Relaxed);
    let consumed: Vec<u64> = shared
        .consumed
        .iter()
        .map(|flow| flow.messages.load(Relaxed))
        .collect();
    for (group, &count) in consumed.iter().enumerate() {
        if count != produced * copies {
            errors.push(format!(
                "count mismatch: group {group} consumed {count} messages, the broker acknowledged \
                 {produced} x {copies} cop(ies) each"
            ));
        }
    }
    let errors_before = shared.produce_errors.load(Relaxed);
    if errors_before > 0 {
        errors.push(format!("{errors_before} messages refused by the broker"));
    }

    let payload = workload.payload_bytes() as f64;
    let measured = outcome.measured(&shared);
    Ok(Results {
        workload: (*workload).clone(),
        bootstrap: args.bootstrap.clone(),
        produce_version,
        fetch_version,
        produce_measured_s: measured.produce_s,
        consume_measured_s: measured.consume_s,
        produce_msgs_per_s: measured.produce_msgs_per_s,
        produce_mb_per_s: measured.produce_msgs_per_s * payload / 1e6,
        consume_msgs_per_s: measured.consume_msgs_per_s,
        consume_mb_per_s: measured.consume_msgs_per_s * payload / 1e6,
        produce_p50_ms: outcome.produce_latency.p50_ms,
        produce_p99_ms: outcome.produce_latency.p99_ms,
        e2e_p50_ms: outcome.e2e_latency.p50_ms,
        e2e_p99_ms: outcome.e2e_latency.p99_ms,
        produce_latency: outcome.produce_latency.clone(),
        produce_request_latency: outcome.request_latency.clone(),
        e2e_latency: outcome.e2e_latency.clone(),
        produced_messages: produced,
        consumed_messages_per_group: consumed,
        series: outcome.series.clone(),
        errors,
        exchange_routed_msgs_per_s: workload
            .exchange
            .as_ref()
            .map(|_| measured.produce_msgs_per_s),
        exchange_copies_per_s: workload
            .exchange
            .as_ref()
            .filter(|_| workload.consumer_groups > 0)
            .map(|_| measured.consume_msgs_per_s),
        plain_produce_msgs_per_s: None,
        routed_to_plain_ratio: None,
        share_acquired_messages: workload
            .share
            .as_ref()
            .map(|_| ledger.acquired.load(Relaxed)),
        share_acknowledged_messages: workload
            .share
            .as_ref()
            .map(|_| ledger.acknowledged.load(Relaxed)),
        share_duplicate_messages: workload
            .share
            .as_ref()
            .map(|_| ledger.duplicates.load(Relaxed)),
        share_round_trips: workload
            .share
            .as_ref()
            .map(|_| ledger.round_trips.load(Relaxed)),
        share_round_trip_us_mean: workload.share.as_ref().and_then(|_| ledger.round_trip_us()),
        share_client_us_mean: workload.share.as_ref().and_then(|_| ledger.client_us()),
        broker: None,
    })
}

/// What share mode needs to start its consumers once producing is over.
struct SharePlans {
    spec: ShareSpec,
    workload: Arc<Workload>,
    cluster: Cluster,
    targets: Vec<((usize, i32), i32)>,
    start_offsets: Vec<i64>,
    shared: Arc<Shared>,
    ledger: Arc<share::Ledger>,
    cpus: Arc<CpuPlan>,
    stop: Arc<AtomicBool>,
}

/// Looks up the topic's id and the group's coordinator now; the returned closure starts the
/// share consumers, each with every partition (KIP-932: members share partitions).
fn share_spawner(
    connection: &mut Connection,
    versions: &admin::ApiVersions,
    plans: SharePlans,
) -> Result<LateFetchers> {
    let topic = plans.workload.topics[0].clone();
    let topic_id = admin::topic_id(connection, versions, &topic)?;
    let coordinator = admin::coordinator(connection, versions, &plans.spec.group)?;
    let partitions: BTreeMap<i32, (String, i64)> = plans
        .targets
        .iter()
        .zip(&plans.start_offsets)
        .map(|(&((_, partition), leader), &start)| {
            (partition, (plans.cluster.brokers[&leader].clone(), start))
        })
        .collect();
    Ok(Box::new(move || {
        (0..plans.workload.consumers as usize)
            .map(|index| {
                share::spawn(SharePlan {
                    group: plans.spec.group.clone(),
                    name: format!("share-c{index}"),
                    coordinator: coordinator.clone(),
                    topic: topic.clone(),
                    topic_id,
                    partitions: partitions.clone(),
                    max_records: plans.spec.max_records,
                    max_bytes: plans.workload.fetch_partition_max_bytes,
                    payload_bytes: plans.workload.payload_bytes(),
                    shared: plans.shared.clone(),
                    ledger: plans.ledger.clone(),
                    cpus: plans.cpus.clone(),
                    stop: plans.stop.clone(),
                })
            })
            .collect()
    }))
}

/// Every (topic index, partition) with its leader id, in topic then partition order.
fn all_targets(workload: &Workload, cluster: &Cluster) -> Result<Vec<((usize, i32), i32)>> {
    let mut targets = Vec::new();
    for (topic_index, name) in workload.topics.iter().enumerate() {
        let Some(leaders) = cluster.topics.get(name) else {
            bail!("topic {name} is missing from Metadata");
        };
        if leaders.len() != workload.partitions as usize {
            eprintln!(
                "weir-bench: topic {name} exists with {} partitions (asked for {}); using {}",
                leaders.len(),
                workload.partitions,
                leaders.len()
            );
        }
        for (partition, &leader) in leaders.iter().enumerate() {
            targets.push(((topic_index, partition as i32), leader));
        }
    }
    Ok(targets)
}

/// The log end of every target, asked of each partition's leader, in `targets` order.
fn log_end_offsets(
    workload: &Workload,
    cluster: &Cluster,
    targets: &[((usize, i32), i32)],
    versions: &admin::ApiVersions,
) -> Result<Vec<i64>> {
    let mut offsets = vec![0; targets.len()];
    if workload.consumer_groups == 0 {
        return Ok(offsets);
    }
    let mut by_leader_topic: BTreeMap<(i32, usize), Vec<(usize, i32)>> = BTreeMap::new();
    for (index, &((topic, partition), leader)) in targets.iter().enumerate() {
        by_leader_topic
            .entry((leader, topic))
            .or_default()
            .push((index, partition));
    }
    let mut connections: BTreeMap<i32, Connection> = BTreeMap::new();
    for ((leader, topic), partitions) in by_leader_topic {
        let connection = match connections.entry(leader) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                entry.insert(Connection::open(&cluster.brokers[&leader])?)
            }
        };
        let ids: Vec<i32> = partitions.iter().map(|&(_, partition)| partition).collect();
        let latest = admin::latest_offsets(connection, versions, &workload.topics[topic], &ids)?;
        for (index, partition) in partitions {
            offsets[index] = latest[&partition];
        }
    }
    Ok(offsets)
}

fn start_producers(
    workload: &Arc<Workload>,
    targets: &[Target],
    brokers: &[String],
    produce_version: i16,
    shared: &Arc<Shared>,
    cpus: &Arc<CpuPlan>,
) -> Result<Vec<Worker>> {
    let producers = workload.producers as u64;
    let mut handles = Vec::new();
    for index in 0..producers {
        let (quota, stop_at_ns) = match workload.stop {
            Stop::Messages { count } => {
                // Split exactly: the first producers take the remainder.
                let share = count / producers + u64::from(index < count % producers);
                (Some(share), None)
            }
            Stop::Duration { seconds } => {
                (None, Some(((workload.warmup_s + seconds) * 1e9) as u64))
            }
        };
        if quota == Some(0) {
            continue;
        }
        // Each producer talks only to the leaders of its partitions: remap broker slots.
        handles.push(producer::spawn(ProducerPlan {
            index: index as usize,
            workload: workload.clone(),
            targets: targets.to_vec(),
            brokers: brokers.to_vec(),
            produce_version,
            quota,
            rate_msgs_per_s: workload.rate_msgs_per_s.map(|rate| rate / producers as f64),
            stop_at_ns,
            shared: shared.clone(),
            cpus: cpus.clone(),
        })?);
    }
    Ok(handles)
}

/// What the monitor needs to know of a workload (Kafka or AMQP).
pub struct MonitorPlan {
    payload_bytes: f64,
    /// Warm-up plus duration, for the live line (None: a --messages run).
    planned_s: Option<f64>,
    drain_timeout_s: u64,
    /// What the live line calls the sending side ("produce", "publish").
    pub send_name: &'static str,
}

impl MonitorPlan {
    pub fn new(stop: Stop, warmup_s: f64, payload_bytes: u64, drain_timeout_s: u64) -> Self {
        MonitorPlan {
            payload_bytes: payload_bytes as f64,
            planned_s: match stop {
                Stop::Duration { seconds } => Some(warmup_s + seconds),
                Stop::Messages { .. } => None,
            },
            drain_timeout_s,
            send_name: "produce",
        }
    }
}

/// What the monitor saw: the snapshots that bound the measured windows, the time series, and the
/// merged histograms.
pub struct Outcome {
    /// Backlog mode: when consuming started, and the counts then.
    consume_start: Option<(u64, FlowSnapshot)>,
    measure_start: Option<(u64, FlowSnapshot, FlowSnapshot)>,
    produce_end_ns: u64,
    produced_at_end: FlowSnapshot,
    pub series: Vec<SeriesPoint>,
    pub produce_latency: Latency,
    pub request_latency: Latency,
    pub e2e_latency: Latency,
}

pub struct Measured {
    pub produce_s: f64,
    pub consume_s: f64,
    pub produce_msgs_per_s: f64,
    pub consume_msgs_per_s: f64,
}

impl Outcome {
    pub fn measured(&self, shared: &Shared) -> Measured {
        let whole_run = (0, FlowSnapshot::default(), FlowSnapshot::default());
        let (start_ns, produced_start, consumed_start) = match self.measure_start {
            // Producing ended before the warm-up did (a short --messages run): measure it all.
            Some((start_ns, ..)) if start_ns >= self.produce_end_ns => whole_run,
            Some(start) => start,
            None => whole_run,
        };
        let produce_s = (self.produce_end_ns.saturating_sub(start_ns)) as f64 / 1e9;
        let consumed_now = consumed_total(shared);
        let consume_end_ns = shared
            .consume_end_ns
            .iter()
            .map(|end| end.load(Relaxed))
            .max()
            .unwrap_or(0);
        let (consume_start_ns, consumed_start) =
            self.consume_start.unwrap_or((start_ns, consumed_start));
        let consume_s = consume_end_ns.saturating_sub(consume_start_ns) as f64 / 1e9;
        let rate = |messages: u64, seconds: f64| {
            if seconds > 0.0 {
                messages as f64 / seconds
            } else {
                0.0
            }
        };
        Measured {
            produce_s,
            consume_s,
            produce_msgs_per_s: rate(
                self.produced_at_end.messages - produced_start.messages,
                produce_s,
            ),
            consume_msgs_per_s: rate(
                consumed_now
                    .messages
                    .saturating_sub(consumed_start.messages),
                consume_s,
            ),
        }
    }
}

fn consumed_total(shared: &Shared) -> FlowSnapshot {
    let mut total = FlowSnapshot::default();
    for flow in &shared.consumed {
        let snapshot = flow.snapshot();
        total.messages += snapshot.messages;
        total.bytes += snapshot.bytes;
        total.latency_sum_us += snapshot.latency_sum_us;
        total.latency_samples += snapshot.latency_samples;
    }
    total
}

const TICK: Duration = Duration::from_millis(100);
const SERIES_INTERVAL_NS: u64 = 1_000_000_000;

/// Watches the run from the main thread: series points, the live line, the warm-up boundary, the
/// end of producing and the consumers' drain; joins every worker.
#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
pub fn monitor(
    plan: &MonitorPlan,
    shared: &Arc<Shared>,
    producers: Vec<Worker>,
    mut fetchers: Vec<Worker>,
    late_fetchers: Option<LateFetchers>,
    stop_consumers: &AtomicBool,
) -> Result<Outcome> {
    let clock = shared.clock;
    let live = std::io::stderr().is_terminal();
    let payload = plan.payload_bytes;
    let mut series = Vec::new();
    let mut last_ns = 0u64;
    let mut last_produced = shared.produced.snapshot();
    let mut last_consumed = consumed_total(shared);
    // Without warm-up the window starts at the clock origin, before the first message.
    let mut measure_start = (shared.measure_from_ns == 0)
        .then(|| (0, FlowSnapshot::default(), FlowSnapshot::default()));
    let planned_s = plan.planned_s;
    let mut tick = |producing: bool, force: bool, series: &mut Vec<SeriesPoint>| {
        let now_ns = clock.now_ns();
        if measure_start.is_none() && now_ns >= shared.measure_from_ns {
            measure_start = Some((now_ns, shared.produced.snapshot(), consumed_total(shared)));
        }
        let interval_ns = now_ns.saturating_sub(last_ns);
        if interval_ns == 0 || (!force && interval_ns < SERIES_INTERVAL_NS) {
            return;
        }
        let produced = shared.produced.snapshot();
        let consumed = consumed_total(shared);
        let seconds = (now_ns - last_ns) as f64 / 1e9;
        let produce_rate = (produced.messages - last_produced.messages) as f64 / seconds;
        let consume_rate = (consumed.messages - last_consumed.messages) as f64 / seconds;
        series.push(SeriesPoint {
            t_s: now_ns as f64 / 1e9,
            produce_msgs_per_s: produce_rate,
            produce_mb_per_s: produce_rate * payload / 1e6,
            consume_msgs_per_s: consume_rate,
            consume_mb_per_s: consume_rate * payload / 1e6,
        });
        if live {
            let elapsed = now_ns as f64 / 1e9;
            let phase = if !producing {
                "draining".to_owned()
            } else if now_ns < shared.measure_from_ns {
                "warm-up".to_owned()
            } else {
                match planned_s {
                    Some(total) => format!("{:.0}s left", (total - elapsed).max(0.0)),
                    None => "running".to_owned(),
                }
            };
            let latency =
                |value: Option<f64>| value.map_or("-".to_owned(), |ms| format!("{ms:.2}ms"));
            eprint!(
                "\r\x1b[2K[{elapsed:5.1}s {phase}] {} {}/s {:.0} MB/s ack avg {} | consume {}/s e2e avg {}",
                plan.send_name,
                human_rate(produce_rate),
                produce_rate * payload / 1e6,
                latency(produced.average_latency_ms_since(&last_produced)),
                human_rate(consume_rate),
                latency(consumed.average_latency_ms_since(&last_consumed)),
            );
        }
        last_ns = now_ns;
        last_produced = produced;
        last_consumed = consumed;
    };

    while producers.iter().any(|handle| !handle.is_finished()) {
        tick(true, false, &mut series);
        std::thread::sleep(TICK);
    }
    let mut produce_histogram = stats::new_histogram();
    for handle in producers {
        let part = join(handle)?;
        if let Some(part) = part {
            produce_histogram.add(part).context("merging histograms")?;
        }
    }
    let produce_end_ns = shared.produce_end_ns.load(Relaxed);
    let produced_at_end = shared.produced.snapshot();
    shared.producers_done.store(true, Relaxed);
    let mut consume_start = None;
    if let Some(spawn) = late_fetchers {
        // Backlog mode: consumption is measured alone, from now to the last message read.
        consume_start = Some((clock.now_ns(), consumed_total(shared)));
        fetchers = spawn()?;
    }

    let drain_deadline_ns = clock.now_ns() + plan.drain_timeout_s * 1_000_000_000;
    while fetchers.iter().any(|handle| !handle.is_finished()) {
        if clock.now_ns() >= drain_deadline_ns {
            stop_consumers.store(true, Relaxed);
        }
        tick(false, false, &mut series);
        std::thread::sleep(TICK);
    }
    // The last, possibly partial, interval.
    tick(false, true, &mut series);
    if live {
        eprintln!();
    }
    let mut e2e_histogram = stats::new_histogram();
    for handle in fetchers {
        if let Some(part) = join(handle)? {
            e2e_histogram.add(part).context("merging histograms")?;
        }
    }
    if measure_start.is_none() {
        eprintln!("weir-bench: the run ended before the warm-up did; measuring the whole run");
    }
    Ok(Outcome {
        consume_start,
        measure_start,
        produce_end_ns,
        produced_at_end,
        series,
        produce_latency: Latency::from_histogram(&produce_histogram),
        request_latency: shared
            .request_latency
            .lock()
            .map(|histogram| Latency::from_histogram(&histogram))
            .unwrap_or_default(),
        e2e_latency: Latency::from_histogram(&e2e_histogram),
    })
}

/// Joins a worker. Its error was already recorded in `Shared` (and is reported), so a failed
/// worker contributes no histogram rather than ending the report early.
fn join(handle: Worker) -> Result<Option<Histogram<u64>>> {
    match handle.join() {
        Ok(Ok(histogram)) => Ok(Some(histogram)),
        Ok(Err(_)) => Ok(None),
        Err(_) => bail!("a worker thread panicked"),
    }
}
