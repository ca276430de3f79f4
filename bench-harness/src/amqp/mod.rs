//! `weir-bench amqp`: an AMQP 0-9-1 load generator for any broker (`--url`), or for a `weir` it
//! starts (`--spawn-server`). Publishers publish with confirms (at most `--confirm-window`
//! unconfirmed each) to one or more queues through the default exchange; consumers consume them
//! at the same time with manual acks (`--prefetch`, one `multiple` ack every `--ack-every`).
//! The report has the Kafka mode's table, JSON and plot; every confirmed message must be
//! delivered exactly once (a mismatch, a nack or a message left in a queue fails the run).
//!
//! Threads, as in the Kafka mode: the main thread declares and purges the queues, opens every
//! connection (so that consumers are registered before the first publish), then only watches
//! shared counters (`run::monitor`) and joins the workers; each publisher is a writer thread plus
//! a confirm-reader thread, each consumer one thread. Plain OS threads with blocking sockets
//! rather than glommio: one core keeps up with ~1M small messages/s of framing per thread, and
//! a run uses few connections, so an executor would add no throughput, only a second runtime.

mod connection;
mod consumer;
mod frames;
mod idle;
mod publisher;
mod report;
mod workload;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::run::{self, MonitorPlan, Worker};
use crate::server::{self, SpawnedServer};
use crate::stats::{Clock, CpuPlan, Shared};
use crate::workload::{parse_cpus, Stop};
use connection::Connection;
pub use workload::AmqpArgs;
use workload::AmqpWorkload;

/// Runs `weir-bench amqp`: prints the table, writes `--json` and `--plot`, and fails when the
/// run had errors (after writing the report).
pub fn main(args: &AmqpArgs) -> Result<()> {
    if let Some(count) = args.idle_queues {
        return idle::main(args, count);
    }
    let results = run(args)?;
    print!("{}", report::table(&results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report::svg(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !results.errors.is_empty() {
        bail!("the run failed: {}", results.errors.join("; "));
    }
    Ok(())
}

fn run(args: &AmqpArgs) -> Result<report::AmqpResults> {
    let workload = Arc::new(AmqpWorkload::resolve(args)?);
    let mut spawned = if args.spawn_server {
        let weir_bin = match &args.weir_bin {
            Some(path) => path.clone(),
            None => server::default_weir_bin()?,
        };
        Some(SpawnedServer::start(
            &weir_bin,
            &args.server_kafka_listen,
            &args.server_cpus,
            &args.server_set,
            Some(&workload.address()),
        )?)
    } else {
        None
    };
    let result = run_against_broker(args, &workload);
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

fn run_against_broker(
    args: &AmqpArgs,
    workload: &Arc<AmqpWorkload>,
) -> Result<report::AmqpResults> {
    let broker = prepare_queues(workload, !args.no_purge)?;
    let cpus = Arc::new(CpuPlan::new(match &args.cpus {
        Some(list) => parse_cpus(list)?,
        None => Vec::new(),
    }));
    let warmup_ns = (workload.warmup_s * 1e9) as u64;
    let shared = Arc::new(Shared::new(Clock::new(), warmup_ns, 1));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let consumers = if workload.consume {
        start_consumers(workload, &shared, &cpus, &stop_consumers)?
    } else {
        Vec::new()
    };
    let publishers = start_publishers(workload, &shared, &cpus)?;
    let mut monitor_plan = MonitorPlan::new(
        workload.stop,
        workload.warmup_s,
        workload.message_bytes as u64,
        args.drain_timeout_s,
    );
    monitor_plan.send_name = "publish";
    let outcome = run::monitor(
        &monitor_plan,
        &shared,
        publishers,
        consumers,
        None,
        &stop_consumers,
    )?;
    let mut errors: Vec<String> = shared.first_error().into_iter().collect();
    errors.extend(count_errors(workload, &shared));
    if workload.consume {
        errors.extend(finish_queues(workload, !args.keep_queues));
    }
    let measured = outcome.measured(&shared);
    let payload = workload.message_bytes as f64;
    Ok(report::AmqpResults {
        workload: (**workload).clone(),
        broker,
        publish_measured_s: measured.produce_s,
        consume_measured_s: measured.consume_s,
        publish_msgs_per_s: measured.produce_msgs_per_s,
        publish_mb_per_s: measured.produce_msgs_per_s * payload / 1e6,
        consume_msgs_per_s: measured.consume_msgs_per_s,
        consume_mb_per_s: measured.consume_msgs_per_s * payload / 1e6,
        publish_confirm_p50_ms: outcome.produce_latency.p50_ms,
        publish_confirm_p99_ms: outcome.produce_latency.p99_ms,
        e2e_p50_ms: outcome.e2e_latency.p50_ms,
        e2e_p99_ms: outcome.e2e_latency.p99_ms,
        publish_confirm_latency: outcome.produce_latency,
        e2e_latency: outcome.e2e_latency,
        published_messages: shared.produced.messages.load(Relaxed),
        nacked_messages: shared.produce_errors.load(Relaxed),
        consumed_messages: shared.consumed[0].messages.load(Relaxed),
        redelivered_messages: shared.redelivered.load(Relaxed),
        series: outcome.series,
        errors,
    })
}

/// Declares every queue (durable or not, as the workload says) and, with `purge`, empties it,
/// so that the consumers receive exactly this run's messages. Returns the broker's product name.
fn prepare_queues(workload: &AmqpWorkload, purge: bool) -> Result<String> {
    let mut connection = Connection::open(&workload.uri)?;
    for queue in &workload.queues {
        let ready = connection
            .declare_queue(queue, workload.durable, false)
            .with_context(|| {
                format!(
                    "declaring queue {queue} (durable: {}); a queue of that name with other \
                     settings must be deleted first",
                    workload.durable
                )
            })?;
        // Only a queue with messages is purged: a broker without queue.purge still runs.
        if purge && ready > 0 {
            let purged = connection.purge_queue(queue)?;
            if purged > 0 {
                eprintln!("weir-bench: purged {purged} messages left in queue {queue}");
            }
        }
    }
    let product = connection.broker.product.clone();
    connection.close()?;
    Ok(product)
}

/// Opens each consumer's connection, sets its prefetch, registers its consumers, and starts its
/// thread.
fn start_consumers(
    workload: &AmqpWorkload,
    shared: &Arc<Shared>,
    cpus: &Arc<CpuPlan>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<Worker>> {
    let mut workers = Vec::new();
    for (index, queues) in workload.consumer_queues().into_iter().enumerate() {
        let mut connection = Connection::open(&workload.uri)?;
        connection.set_prefetch(workload.prefetch)?;
        let mut consumer_tags = Vec::new();
        for queue in &queues {
            let tag = format!("weir-bench-{index}-{queue}");
            connection
                .consume(queue, &tag)
                .with_context(|| format!("consuming {queue}"))?;
            consumer_tags.push(tag);
        }
        workers.push(consumer::spawn(consumer::ConsumerPlan {
            index,
            connection,
            consumer_tags,
            ack_every: workload.ack_every,
            payload_bytes: workload.message_bytes as u64,
            shared: shared.clone(),
            cpus: cpus.clone(),
            stop: stop.clone(),
        })?);
    }
    Ok(workers)
}

/// Opens each publisher's connection in confirm mode and starts its threads, with its share of
/// `--messages` or the stop time.
fn start_publishers(
    workload: &Arc<AmqpWorkload>,
    shared: &Arc<Shared>,
    cpus: &Arc<CpuPlan>,
) -> Result<Vec<Worker>> {
    let publishers = u64::from(workload.producers);
    let mut workers = Vec::new();
    for index in 0..publishers {
        let (quota, stop_at_ns) = match workload.stop {
            Stop::Messages { count } => {
                // Split exactly: the first publishers take the remainder.
                let share = count / publishers + u64::from(index < count % publishers);
                (Some(share), None)
            }
            Stop::Duration { seconds } => {
                (None, Some(((workload.warmup_s + seconds) * 1e9) as u64))
            }
        };
        if quota == Some(0) {
            continue;
        }
        let mut connection = Connection::open(&workload.uri)?;
        connection.select_confirms()?;
        workers.push(publisher::spawn(publisher::PublisherPlan {
            index: index as usize,
            connection,
            workload: workload.clone(),
            quota,
            stop_at_ns,
            shared: shared.clone(),
            cpus: cpus.clone(),
        })?);
    }
    Ok(workers)
}

/// Nacks, and (when consuming) any difference between what the broker confirmed and what the
/// consumers received.
fn count_errors(workload: &AmqpWorkload, shared: &Shared) -> Vec<String> {
    let mut errors = Vec::new();
    let published = shared.produced.messages.load(Relaxed);
    let nacked = shared.produce_errors.load(Relaxed);
    if nacked > 0 {
        errors.push(format!("{nacked} messages nacked by the broker"));
    }
    let consumed = shared.consumed[0].messages.load(Relaxed);
    if workload.consume && consumed != published {
        errors.push(format!(
            "count mismatch: the consumers received {consumed} messages, the broker confirmed \
             {published}"
        ));
    }
    errors
}

/// After a consuming run: every queue must be empty (a message left behind was confirmed but
/// never delivered, or predates the run); then the queues are deleted unless kept.
fn finish_queues(workload: &AmqpWorkload, delete: bool) -> Vec<String> {
    let mut errors = Vec::new();
    let mut check = || -> Result<()> {
        let mut connection = Connection::open(&workload.uri)?;
        for queue in &workload.queues {
            let ready = connection.declare_queue(queue, workload.durable, true)?;
            if ready > 0 {
                errors.push(format!(
                    "queue {queue} still holds {ready} ready messages after the run"
                ));
            }
            if delete {
                connection.delete_queue(queue)?;
            }
        }
        connection.close()
    };
    if let Err(error) = check() {
        errors.push(format!("checking the queues after the run: {error:#}"));
    }
    errors
}
