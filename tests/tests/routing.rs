//! Exchanges and bindings end to end with kafka-python: the routing part's own script
//! (`tests/clients/routing_e2e.py`, owned by the routing helper) starts the release binary itself,
//! declares a topic exchange `app` with `user.*` -> `email_queue` and `#` -> `audit`, headers,
//! direct and alternate exchanges, checks what each destination receives, restarts the broker and
//! checks that the bindings survived.

use anyhow::{Context, Result};
use weir_tests::{broker_binary, free_port_range, python, stdout_of};

#[test]
fn routing_e2e_script_passes_against_the_release_binary() -> Result<()> {
    let binary = broker_binary()?;
    // The script's broker uses --cpus 0-1: bootstrap P and shard ports P+1, P+2.
    let port = free_port_range(3)?.to_string();
    let output = python(
        "routing_e2e.py",
        &[
            "--weir",
            binary.to_str().context("binary path")?,
            "--port",
            &port,
        ],
    )?;
    let stdout = stdout_of(&output)?;
    assert!(
        stdout.contains("routing e2e: all passed"),
        "the script did not reach its end:\n{stdout}"
    );
    Ok(())
}
