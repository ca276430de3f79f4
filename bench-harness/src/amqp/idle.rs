//! `weir-bench amqp --idle-queues N`: many idle durable queues on one broker, the scale case of a
//! broker that holds a queue per user, device or job. Declares `NAME-idle-0 ..` durable on one
//! connection (pipelined, 1,000 declares at a time, each answered), and reports the declare rate,
//! the broker's resident memory before and after (so the memory one idle queue costs), and, with
//! `--spawn-server`, how long a clean restart takes with them and whether every one is still
//! there (passive declares). Against a broker it did not start, `--broker-pid` gives the process
//! whose memory is read, and the queues are deleted afterwards unless `--keep-queues`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::connection::Connection;
use super::workload::{AmqpArgs, AmqpWorkload};
use crate::server::{self, SpawnedServer};

/// Declares in flight at once: enough to keep the broker busy, few enough for its socket buffers.
const CHUNK: usize = 1000;

#[derive(Debug, Serialize)]
pub struct IdleResults {
    /// The broker URL without the password, and its product and version.
    pub url: String,
    pub broker: String,
    pub idle_queues: u32,
    pub declare_s: f64,
    pub declares_per_s: f64,
    /// VmRSS of the broker's process, when it is known.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_per_queue_bytes: Option<f64>,
    /// With --spawn-server: a clean stop (SIGINT), then start to every listener accepting.
    pub restart_s: Option<f64>,
    pub rss_after_restart_kib: Option<u64>,
    /// How many answered a passive declare after the restart.
    pub queues_after_restart: Option<u32>,
}

pub fn main(args: &AmqpArgs, count: u32) -> Result<()> {
    let results = run(args, count)?;
    print!("{}", table(&results));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&results)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if results
        .queues_after_restart
        .is_some_and(|found| found != count)
    {
        bail!("queues lost across the restart: {results:?}");
    }
    Ok(())
}

fn run(args: &AmqpArgs, count: u32) -> Result<IdleResults> {
    let workload = AmqpWorkload::resolve(args)?;
    let mut spawned = match args.spawn_server {
        true => Some(spawn(args, &workload)?),
        false => None,
    };
    let pid = spawned.as_ref().map(SpawnedServer::pid).or(args.broker_pid);
    let names: Vec<String> = (0..count)
        .map(|index| format!("{}-idle-{index}", args.queue))
        .collect();
    let rss_before_kib = pid.and_then(rss_kib);
    let started = Instant::now();
    let broker = declare_all(&workload, &names, false)?;
    let declare_s = started.elapsed().as_secs_f64();
    let rss_after_kib = pid.and_then(rss_kib);
    let mut results = IdleResults {
        url: workload.url.clone(),
        broker,
        idle_queues: count,
        declare_s,
        declares_per_s: f64::from(count) / declare_s,
        rss_before_kib,
        rss_after_kib,
        rss_per_queue_bytes: rss_before_kib
            .zip(rss_after_kib)
            .map(|(before, after)| (after as f64 - before as f64) * 1024.0 / f64::from(count)),
        restart_s: None,
        rss_after_restart_kib: None,
        queues_after_restart: None,
    };
    match &mut spawned {
        Some(server) => {
            results.restart_s = Some(server.restart()?.as_secs_f64());
            results.rss_after_restart_kib = rss_kib(server.pid());
            declare_all(&workload, &names, true).context("after the restart")?;
            results.queues_after_restart = Some(count);
        }
        None if !args.keep_queues => delete_all(&workload, &names)?,
        None => {}
    }
    Ok(results)
}

fn spawn(args: &AmqpArgs, workload: &AmqpWorkload) -> Result<SpawnedServer> {
    let weir_bin = match &args.weir_bin {
        Some(path) => path.clone(),
        None => server::default_weir_bin()?,
    };
    SpawnedServer::start(
        &weir_bin,
        &args.server_kafka_listen,
        &args.server_cpus,
        &args.server_set,
        Some(&workload.address()),
    )
}

/// Declares every name (passive: each must exist); answers the broker's product.
fn declare_all(workload: &AmqpWorkload, names: &[String], passive: bool) -> Result<String> {
    let mut connection = Connection::open(&workload.uri)?;
    for chunk in names.chunks(CHUNK) {
        connection.declare_queues(chunk, true, passive)?;
    }
    let product = connection.broker.product.clone();
    connection.close()?;
    Ok(product)
}

fn delete_all(workload: &AmqpWorkload, names: &[String]) -> Result<()> {
    let mut connection = Connection::open(&workload.uri)?;
    for name in names {
        connection.delete_queue(name)?;
    }
    connection.close()
}

/// The resident memory of a process, from /proc (None when it cannot be read).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn table(results: &IdleResults) -> String {
    let kib = |value: Option<u64>| value.map_or("-".to_string(), |kib| format!("{kib} KiB"));
    let mut out = format!(
        "{} idle durable queues on {} ({}): declared in {:.2} s, {:.0} declares/s\n",
        results.idle_queues, results.url, results.broker, results.declare_s, results.declares_per_s
    );
    out += &format!(
        "broker RSS before {}, after {}, per queue {}\n",
        kib(results.rss_before_kib),
        kib(results.rss_after_kib),
        results
            .rss_per_queue_bytes
            .map_or("-".to_string(), |bytes| format!("{bytes:.0} B"))
    );
    if let (Some(restart), Some(found)) = (results.restart_s, results.queues_after_restart) {
        out += &format!(
            "clean restart to listening: {restart:.2} s; {found} queues found after it; RSS {}\n",
            kib(results.rss_after_restart_kib)
        );
    }
    out
}
