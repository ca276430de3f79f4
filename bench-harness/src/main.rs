//! weir-bench: Kafka-protocol and AMQP 0-9-1 load generator and in-process storage benchmark.
//!
//! `weir-bench [flags]` runs the Kafka load generator (see `workload.rs` for the flags; with
//! `--share-group` its consumers are KIP-932 share consumers, `share.rs`);
//! `weir-bench amqp [flags]` the AMQP one (`amqp/`); `weir-bench engine` runs the storage benchmark; `weir-bench encode` measures the client's own
//! batch-building rate; `weir-bench loopback` measures the machine's TCP bandwidth over loopback;
//! `weir-bench peer-chart` draws Weir's and Apache Iggy's latency curves on one chart.
//! Threads: the main thread orchestrates and reports; producers, their ack readers and fetchers
//! are plain OS threads with blocking sockets (see `producer.rs`, `consumer.rs`).

use anyhow::Context;
use clap::{Parser, Subcommand};

mod admin;
mod amqp;
mod batch;
mod broker_metrics;
mod consumer;
mod encode_bench;
mod engine_bench;
mod extent_bench;
mod loopback_bench;
mod peer_chart;
mod producer;
mod report;
mod run;
mod server;
mod shard_stream;
mod share;
mod stats;
mod tls;
mod wire;
mod workload;

#[derive(Parser)]
#[command(
    name = "weir-bench",
    about = "Benchmarks for Weir and any Kafka-compatible or AMQP 0-9-1 broker",
    args_conflicts_with_subcommands = true,
    // Scripts append to a common flag list: the last occurrence of a flag wins.
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: workload::RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// In-process storage benchmark: appends RecordBatch v2 batches to the engine, pinned to one core.
    Engine(engine_bench::EngineArgs),
    /// The load generator's raw batch-encoding rate (RecordBatch v2 + CRC32C), one thread.
    Encode(encode_bench::EncodeArgs),
    /// The machine's TCP bandwidth over 127.0.0.1 (the ceiling for a broker and its clients on one machine).
    Loopback(loopback_bench::LoopbackArgs),
    /// AMQP 0-9-1 load generator: publish with confirms and consume with manual acks, against any
    /// AMQP broker (--url) or a weir it starts (--spawn-server).
    Amqp(amqp::AmqpArgs),
    /// Weir's produce latency curves (from --json files) and Apache Iggy's per-batch latency
    /// (from iggy-bench's report.json) on one log-log chart, as an SVG.
    PeerChart(peer_chart::PeerChartArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Engine(args)) => engine_bench::run(args),
        Some(Command::Encode(args)) => encode_bench::run(args),
        Some(Command::Loopback(args)) => loopback_bench::run(args),
        Some(Command::Amqp(args)) => amqp::main(&args),
        Some(Command::PeerChart(args)) => peer_chart::run(&args),
        None => load(&cli.run),
    }
}

fn load(args: &workload::RunArgs) -> anyhow::Result<()> {
    let results = run::run(args)?;
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
        anyhow::bail!("the run failed: {}", results.errors.join("; "));
    }
    Ok(())
}
