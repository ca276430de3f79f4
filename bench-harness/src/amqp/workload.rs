//! `weir-bench amqp` flags and the resolved `AmqpWorkload` every other AMQP module reads. Parsed
//! once on the main thread; read-only afterwards.

use std::path::PathBuf;

use amq_protocol::uri::{AMQPScheme, AMQPUri};
use anyhow::{anyhow, ensure, Context, Result};
use serde::Serialize;

use super::frames::SEND_TIME_BYTES;
use crate::workload::{parse_duration, parse_rate, Stop};

#[derive(clap::Args, Debug, Clone)]
pub struct AmqpArgs {
    /// The broker: amqp://USER:PASS@HOST:PORT/VHOST (vhost "/" is %2f, or no path at all).
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub url: String,
    /// Queue name (with --queues N > 1, queues are NAME-0 .. NAME-{N-1}).
    #[arg(long, default_value = "weir-bench-amqp")]
    pub queue: String,
    /// Number of queues; every publisher publishes to all of them in turn.
    #[arg(long, default_value = "1")]
    pub queues: u32,
    /// Bytes per message body (the first 8 carry the send time).
    #[arg(long, default_value = "100")]
    pub message_bytes: usize,
    /// Durable queues and persistent messages (delivery-mode 2); without it, transient queues and
    /// messages (delivery-mode 1).
    #[arg(long)]
    pub durable: bool,
    /// Publisher connections (one channel each, publisher confirms on).
    #[arg(long, default_value = "1")]
    pub producers: u32,
    /// Consumer connections (one channel each); queues are shared out among them.
    #[arg(long, default_value = "1")]
    pub consumers: u32,
    /// Messages each publisher may have published and not yet confirmed.
    #[arg(long, default_value = "1000")]
    pub confirm_window: u64,
    /// basic.qos prefetch count per consumer.
    #[arg(long, default_value = "1000")]
    pub prefetch: u16,
    /// A consumer acks (multiple) after this many deliveries; at most --prefetch.
    #[arg(long, default_value = "250")]
    pub ack_every: u64,
    /// Target publish rate over all publishers in messages/s ("500k", "2M"), or "max".
    #[arg(long, default_value = "max")]
    pub rate: String,
    /// Measured duration after warm-up, e.g. 20s, 500ms, 2m (ignored with --messages).
    #[arg(long, default_value = "20s")]
    pub duration: String,
    /// Publish exactly N messages in total instead of running for a duration.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Warm-up before measuring (default 5s, or 0s with --messages).
    #[arg(long)]
    pub warmup: Option<String>,
    /// Seconds the consumers get after publishing ends to receive every message.
    #[arg(long, default_value = "30")]
    pub drain_timeout_s: u64,
    /// CPUs to pin the harness's threads to, e.g. "1", "2-3", "0,2".
    #[arg(long)]
    pub cpus: Option<String>,
    /// Publish only (the messages stay in the queues; implies --keep-queues).
    #[arg(long)]
    pub no_consume: bool,
    /// Leave messages already in the queues in place (by default the run purges them first):
    /// they are then consumed too and the count check fails.
    #[arg(long)]
    pub no_purge: bool,
    /// Keep the queues after the run (by default they are deleted).
    #[arg(long)]
    pub keep_queues: bool,
    /// Start a `weir` broker for the run, with its AMQP listener on the --url host and port.
    #[arg(long)]
    pub spawn_server: bool,
    /// The weir binary for --spawn-server (default: next to this executable).
    #[arg(long)]
    pub weir_bin: Option<PathBuf>,
    /// CPUs for the spawned server, passed to `weir --cpus`.
    #[arg(long, default_value = "0")]
    pub server_cpus: String,
    /// Extra `--set key=value` settings for the spawned server.
    #[arg(long = "server-set")]
    pub server_set: Vec<String>,
    /// The spawned server's Kafka listener (it takes this port and one per shard after it).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub server_kafka_listen: String,
    /// Idle-queue mode: declare this many durable queues (NAME-idle-0 ..) on one connection and
    /// report the declare rate, the broker's resident memory per queue (the spawned server's, or
    /// --broker-pid's) and, with --spawn-server, its clean restart time with them; no messages.
    #[arg(long)]
    pub idle_queues: Option<u32>,
    /// The broker's process id, for its memory figures (/proc/PID/status) in --idle-queues mode
    /// against a broker this tool did not start (RabbitMQ: the beam.smp process).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write throughput over time and the latency percentile curves as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// The resolved workload, recorded in the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct AmqpWorkload {
    /// The broker URL with the password left out.
    pub url: String,
    pub queues: Vec<String>,
    pub message_bytes: usize,
    /// Durable queues with persistent messages, or transient both.
    pub durable: bool,
    pub producers: u32,
    pub consumers: u32,
    pub confirm_window: u64,
    pub prefetch: u16,
    pub ack_every: u64,
    /// None = as fast as the confirm window allows.
    pub rate_msgs_per_s: Option<f64>,
    pub stop: Stop,
    pub warmup_s: f64,
    pub consume: bool,
    #[serde(skip)]
    pub uri: AMQPUri,
}

/// Refuses flag combinations that cannot run.
fn check(args: &AmqpArgs) -> Result<()> {
    ensure!(args.queues >= 1, "--queues must be at least 1");
    ensure!(args.producers >= 1, "--producers must be at least 1");
    ensure!(args.consumers >= 1, "--consumers must be at least 1");
    ensure!(
        args.confirm_window >= 1,
        "--confirm-window must be at least 1"
    );
    ensure!(
        args.prefetch >= 1,
        "--prefetch must be at least 1 (0 is unlimited: not measured here)"
    );
    ensure!(
        (1..=u64::from(args.prefetch)).contains(&args.ack_every),
        "--ack-every must be 1..=--prefetch ({}), or consumers would wait for deliveries the \
             broker holds back until they ack",
        args.prefetch
    );
    ensure!(
        args.message_bytes >= SEND_TIME_BYTES,
        "--message-bytes must be at least {SEND_TIME_BYTES} (the send time)"
    );
    Ok(())
}

impl AmqpWorkload {
    pub fn resolve(args: &AmqpArgs) -> Result<Self> {
        let uri: AMQPUri = args
            .url
            .parse()
            .map_err(|error| anyhow!("--url {}: {error}", args.url))?;
        ensure!(
            uri.scheme == AMQPScheme::AMQP,
            "--url: only amqp:// is supported (no TLS yet)"
        );
        check(args)?;
        let queues: Vec<String> = if args.queues == 1 {
            vec![args.queue.clone()]
        } else {
            (0..args.queues)
                .map(|index| format!("{}-{index}", args.queue))
                .collect()
        };
        for queue in &queues {
            super::frames::short_string(queue, "queue name")?;
        }
        let stop = match args.messages {
            Some(count) => Stop::Messages { count },
            None => Stop::Duration {
                seconds: parse_duration(&args.duration)?.as_secs_f64(),
            },
        };
        let warmup = args
            .warmup
            .as_deref()
            .unwrap_or(if args.messages.is_some() { "0s" } else { "5s" });
        // The report names the broker without the password.
        let shown = format!(
            "amqp://{}@{}:{}/{}",
            uri.authority.userinfo.username,
            uri.authority.host,
            uri.authority.port,
            if uri.vhost == "/" { "%2f" } else { &uri.vhost }
        );
        Ok(AmqpWorkload {
            url: shown,
            queues,
            message_bytes: args.message_bytes,
            durable: args.durable,
            producers: args.producers,
            consumers: args.consumers,
            confirm_window: args.confirm_window,
            prefetch: args.prefetch,
            ack_every: args.ack_every,
            rate_msgs_per_s: parse_rate(&args.rate)?,
            stop,
            warmup_s: parse_duration(warmup).context("--warmup")?.as_secs_f64(),
            consume: !args.no_consume,
            uri,
        })
    }

    /// The broker's `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.uri.authority.host, self.uri.authority.port)
    }

    /// Which queues each consumer reads: every consumer gets at least one queue and every queue at
    /// least one consumer (more consumers than queues share queues).
    pub fn consumer_queues(&self) -> Vec<Vec<String>> {
        let consumers = self.consumers as usize;
        let mut plan = vec![Vec::new(); consumers];
        for index in 0..consumers.max(self.queues.len()) {
            let queue = &self.queues[index % self.queues.len()];
            let assigned: &mut Vec<String> = &mut plan[index % consumers];
            if !assigned.contains(queue) {
                assigned.push(queue.clone());
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AmqpArgs,
    }

    fn resolve(flags: &[&str]) -> Result<AmqpWorkload> {
        let mut argv = vec!["weir-bench-amqp"];
        argv.extend_from_slice(flags);
        AmqpWorkload::resolve(&Cli::try_parse_from(argv)?.args)
    }

    #[test]
    fn url_queues_and_stop_resolve() {
        let workload = resolve(&[
            "--url",
            "amqp://bench:secret@127.0.0.1:5674/%2f",
            "--queues",
            "3",
            "--queue",
            "q",
            "--messages",
            "10",
        ])
        .unwrap();
        assert_eq!(workload.queues, ["q-0", "q-1", "q-2"]);
        assert_eq!(workload.address(), "127.0.0.1:5674");
        assert_eq!(workload.uri.vhost, "/");
        assert_eq!(workload.uri.authority.userinfo.username, "bench");
        assert_eq!(workload.url, "amqp://bench@127.0.0.1:5674/%2f");
        assert_eq!(workload.stop, Stop::Messages { count: 10 });
        assert_eq!(workload.warmup_s, 0.0);
    }

    #[test]
    fn every_queue_has_a_consumer_and_every_consumer_a_queue() {
        let sixteen = resolve(&["--queues", "16", "--consumers", "3"]).unwrap();
        let plan = sixteen.consumer_queues();
        assert_eq!(plan.iter().map(Vec::len).sum::<usize>(), 16);
        assert_eq!(plan[0].len(), 6);
        let shared = resolve(&["--queues", "2", "--consumers", "5"]).unwrap();
        let plan = shared.consumer_queues();
        assert!(plan.iter().all(|queues| queues.len() == 1));
        assert_eq!(plan[4], ["weir-bench-amqp-0"]);
    }

    #[test]
    fn impossible_workloads_are_refused() {
        for flags in [
            &["--message-bytes", "4"][..],
            &["--ack-every", "2000", "--prefetch", "1000"],
            &["--ack-every", "0"],
            &["--url", "amqps://h:5671/"],
            &["--url", "not a url"],
            &["--queues", "0"],
        ] {
            assert!(resolve(flags).is_err(), "{flags:?}");
        }
        let long = "q".repeat(300);
        assert!(resolve(&["--queue", &long]).is_err());
    }
}
