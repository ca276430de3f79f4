//! py-amqp's own integration suite, unmodified: `t/integration/test_rmq.py` from the amqp 5.4.2
//! sdist (unpacked by tests/install-clients.sh into tests/.py-amqp/), pointed at the broker with
//! RABBITMQ_HOST / RABBITMQ_5672_TCP, TLS cases deselected (`-k 'not tls'`) until Weir has TLS.
//!
//! The suite marks its tests `flaky(reruns=5)`; pytest-rerunfailures is disabled here
//! (`-p no:rerunfailures`) so that a failure that passes on a rerun still fails this test.
//! `WEIR_AMQP_TARGET=rabbitmq` aims it at RabbitMQ (12 passed, 15 deselected there).

use std::process::Command;

use anyhow::{ensure, Context, Result};
use weir_tests::rabbitmq::AmqpTarget;
use weir_tests::{python_binary, run, stdout_of, workspace_root, BrokerOptions, CLIENT_TIMEOUT};

/// Tests of test_rmq.py that `-k 'not tls'` keeps (counted against RabbitMQ 3.10).
const EXPECTED_PASSED: u64 = 12;

#[test]
fn py_amqp_integration_suite_passes_unmodified() -> Result<()> {
    let sdist = workspace_root().join("tests/.py-amqp/amqp-5.4.2");
    ensure!(
        sdist.join("t/integration/test_rmq.py").is_file(),
        "{} has no t/integration/test_rmq.py: run tests/install-clients.sh",
        sdist.display()
    );
    let target = AmqpTarget::start(BrokerOptions::default())?;
    let (host, port) = target.host_port();
    let mut command = Command::new(python_binary()?);
    command
        .args(["-m", "pytest", "t/integration/test_rmq.py", "-k", "not tls"])
        .args([
            "-p",
            "no:rerunfailures",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:warnings",
        ])
        .args(["-q", "-rA"])
        .current_dir(&sdist)
        .env("RABBITMQ_HOST", host)
        .env("RABBITMQ_5672_TCP", port.to_string());
    let stdout = stdout_of(&run(&mut command, None, CLIENT_TIMEOUT)?)?;
    let summary = stdout
        .lines()
        .rev()
        .find(|line| line.contains(" passed"))
        .with_context(|| format!("no pytest summary line\n{stdout}"))?;
    let passed: u64 = summary
        .split_whitespace()
        .zip(summary.split_whitespace().skip(1))
        .find(|(_, word)| word.starts_with("passed"))
        .and_then(|(count, _)| count.parse().ok())
        .with_context(|| format!("no passed count in {summary:?}"))?;
    ensure!(
        passed == EXPECTED_PASSED && !summary.contains("failed") && !summary.contains("error"),
        "py-amqp integration suite: {summary}\n{stdout}"
    );
    Ok(())
}
