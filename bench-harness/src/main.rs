//! weir-bench: Kafka-protocol load generator and in-process storage benchmark.

use clap::{Parser, Subcommand};

mod engine_bench;

#[derive(Parser)]
#[command(
    name = "weir-bench",
    about = "Benchmarks for Weir and any Kafka-compatible broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// In-process storage benchmark: appends RecordBatch v2 batches to the engine, pinned to one core.
    Engine(engine_bench::EngineArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Engine(args) => engine_bench::run(args),
    }
}
