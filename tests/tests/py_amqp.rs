//! py-amqp's own integration suite, unmodified: `t/integration/test_rmq.py` from the amqp 5.4.2
//! sdist (unpacked by tests/install-clients.sh into tests/.py-amqp/), pointed at the broker with
//! RABBITMQ_HOST / RABBITMQ_5672_TCP, and its TLS cases at Weir's `amqps://` listener
//! (RABBITMQ_5671_TCP) with the certificate files the suite expects in `t/certs/` (its own CI
//! makes them with tls-gen; here rcgen makes a CA, the broker's and a client's certificate, and
//! as the "broken" pair a client certificate of another CA). The broker requires client
//! certificates of the CA. test_tls_connect_fails names no CA file, so its client refuses the
//! broker's certificate before the broker judges the broken one (the log shows the client's
//! UnknownCA alert). The two cases that dial badssl.com are deselected: this machine reaches no
//! host outside it.
//!
//! The suite marks its tests `flaky(reruns=5)`; pytest-rerunfailures is disabled here
//! (`-p no:rerunfailures`) so that a failure that passes on a rerun still fails this test.
//! `WEIR_AMQP_TARGET=rabbitmq` aims it at RabbitMQ without TLS (`-k 'not tls'`: 12 passed, 15
//! deselected there; the node the suites share has no TLS listener).

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use rcgen::ExtendedKeyUsagePurpose;
use weir_tests::rabbitmq::AmqpTarget;
use weir_tests::{python_binary, run, stdout_of, workspace_root, BrokerOptions, CLIENT_TIMEOUT};

#[path = "support/certs.rs"]
mod certs;

/// Tests of test_rmq.py that `-k 'not tls'` keeps (counted against RabbitMQ 3.10).
const EXPECTED_PASSED_PLAIN: u64 = 12;
/// With the TLS cases: the plain ones, each again over TLS, and test_tls_connect_fails.
const EXPECTED_PASSED_TLS: u64 = 25;
/// The TLS cases that need badssl.com.
const NEEDS_INTERNET: &str = "not tls_default_certs and not tls_no_default_certs";

#[test]
fn py_amqp_integration_suite_passes_unmodified() -> Result<()> {
    let sdist = workspace_root().join("tests/.py-amqp/amqp-5.4.2");
    ensure!(
        sdist.join("t/integration/test_rmq.py").is_file(),
        "{} has no t/integration/test_rmq.py: run tests/install-clients.sh",
        sdist.display()
    );
    let target = if weir_tests::rabbitmq::aims_at_rabbitmq() {
        AmqpTarget::start(BrokerOptions::default())?
    } else {
        AmqpTarget::start(tls_options(&sdist.join("t/certs"))?)?
    };
    let (host, port) = target.host_port();
    let (filter, expected) = match &target {
        AmqpTarget::Weir(_) => (NEEDS_INTERNET, EXPECTED_PASSED_TLS),
        AmqpTarget::RabbitMq(_) => ("not tls", EXPECTED_PASSED_PLAIN),
    };
    let mut command = Command::new(python_binary()?);
    command
        .args(["-m", "pytest", "t/integration/test_rmq.py", "-k", filter])
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
    if let AmqpTarget::Weir(broker) = &target {
        command.env("RABBITMQ_5671_TCP", broker.amqps_port().to_string());
    }
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
        passed == expected && !summary.contains("failed") && !summary.contains("error"),
        "py-amqp integration suite: {summary}\n{stdout}"
    );
    Ok(())
}

/// Writes the suite's certificate files into `dir` and answers a broker with an `amqps://`
/// listener that serves the broker's certificate and requires a client certificate of the CA.
fn tls_options(dir: &Path) -> Result<BrokerOptions> {
    std::fs::create_dir_all(dir)?;
    let (ca, rogue) = (
        certs::authority("py-amqp test CA")?,
        certs::authority("rogue CA")?,
    );
    std::fs::write(dir.join("ca_certificate.pem"), ca.pem())?;
    let server = certs::issue(
        dir,
        "server",
        &ca,
        ExtendedKeyUsagePurpose::ServerAuth,
        false,
    )?;
    let client = ExtendedKeyUsagePurpose::ClientAuth;
    let (cert, key) = certs::issue(dir, "client", &ca, client.clone(), false)?;
    std::fs::rename(cert, dir.join("client_certificate.pem"))?;
    std::fs::rename(key, dir.join("client_key.pem"))?;
    let (cert, key) = certs::issue(dir, "broken", &rogue, client, false)?;
    std::fs::rename(cert, dir.join("client_certificate_broken.pem"))?;
    std::fs::rename(key, dir.join("client_key_broken.pem"))?;
    let text = |path: &Path| path.display().to_string();
    Ok(BrokerOptions::default()
        .tls_listeners()
        .set("ssl.certificate.location", &text(&server.0))
        .set("ssl.key.location", &text(&server.1))
        .set("ssl.client.auth", "required")
        .set("ssl.ca.location", &text(&dir.join("ca_certificate.pem"))))
}
