//! lapin 4.12 (Rust), the named Rust client and the one built on `amq-protocol`, the
//! codec crate the broker itself uses: a durable queue, 10,000 persistent messages published
//! with publisher confirms (every one acked), consumed with manual acks and prefetch 100: every
//! message exactly once, in order, the prefetch window respected, and one message nacked with
//! requeue that comes back flagged `redelivered`. `WEIR_AMQP_TARGET=rabbitmq` aims it at
//! RabbitMQ, to prove the test itself right.
//!
//! The client is `tests/clients/lapin`, a crate outside the workspace (its main.rs says why),
//! built here on first use into `<target>/clients`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{ensure, Result};
use serde_json::json;
use weir_tests::rabbitmq::AmqpTarget;
use weir_tests::{run, stdout_of, summary, workspace_root, BrokerOptions, CLIENT_TIMEOUT};

#[test]
fn lapin_publishes_with_confirms_and_consumes_with_acks_exactly_once_in_order() -> Result<()> {
    let client = build_client()?;
    let target = AmqpTarget::start(BrokerOptions::default())?;
    let output = run(Command::new(client).arg(target.url()), None, CLIENT_TIMEOUT)?;
    let got = summary(&output)?;
    ensure!(got == json!({"messages": 10_000}), "lapin client: {got}");
    Ok(())
}

/// `cargo build --release` of tests/clients/lapin (its own Cargo.lock, `--locked`).
fn build_client() -> Result<PathBuf> {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("clients");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(root.join("tests/clients/lapin/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target);
    stdout_of(&run(&mut build, None, CLIENT_TIMEOUT)?)?;
    Ok(target.join("release/lapin-client"))
}
