//! TLS on every listener, against the real broker with real clients: confluent-kafka (librdkafka
//! 2.16) and kcat (librdkafka 2.0.2) over `SSL://`, pika over `amqps://`, plaintext clients on a
//! PLAINTEXT listener of the same broker (Metadata sends each client to its own listener's
//! ports), mutual TLS (`ssl.client.auth=required`), and bad handshakes (a plaintext client on the
//! SSL port, a stalled one) closed within `weir.tls.handshake.timeout.ms` without keeping their
//! `max.connections` slots.
//!
//! The certificates are made by the test with rcgen (a CA, a server certificate for 127.0.0.1 and
//! localhost, a client certificate, an expired one, and one from another CA); no key is committed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rcgen::ExtendedKeyUsagePurpose;
#[path = "support/certs.rs"]
mod certs;

use certs::{authority, issue};
use weir_tests::{kcat, python, stdout_of, summary, Broker, BrokerOptions};

/// The files of one test's certificates.
struct Certificates {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    expired_client: (PathBuf, PathBuf),
    /// Signed by another CA than the one the broker trusts.
    rogue_client: (PathBuf, PathBuf),
    /// That other CA.
    rogue_ca: PathBuf,
}

fn certificates() -> Result<Certificates> {
    let dir = tempfile::Builder::new().prefix("weir-tls-").tempdir()?;
    let (ca, rogue) = (authority("weir test CA")?, authority("rogue CA")?);
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem())?;
    let rogue_ca = dir.path().join("rogue-ca.pem");
    std::fs::write(&rogue_ca, rogue.pem())?;
    let path = dir.path();
    Ok(Certificates {
        ca: ca_path,
        server: issue(
            path,
            "server",
            &ca,
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
        )?,
        client: issue(
            path,
            "client",
            &ca,
            ExtendedKeyUsagePurpose::ClientAuth,
            false,
        )?,
        expired_client: issue(
            path,
            "expired",
            &ca,
            ExtendedKeyUsagePurpose::ClientAuth,
            true,
        )?,
        rogue_client: issue(
            path,
            "rogue",
            &rogue,
            ExtendedKeyUsagePurpose::ClientAuth,
            false,
        )?,
        rogue_ca,
        _dir: dir,
    })
}

/// A broker with PLAINTEXT and SSL Kafka listeners and amqp and amqps ones.
fn tls_options(certs: &Certificates) -> BrokerOptions {
    BrokerOptions::default()
        .tls_listeners()
        .set("ssl.certificate.location", &text(&certs.server.0))
        .set("ssl.key.location", &text(&certs.server.1))
}

fn text(path: &Path) -> String {
    path.display().to_string()
}

fn ports(first: u16, count: usize) -> String {
    let ports: Vec<String> = (1..=count)
        .map(|i| (first + i as u16).to_string())
        .collect();
    ports.join(",")
}

/// tls_clients.py's `kafka` mode against `bootstrap`: over SSL when `ca` is given; Metadata must
/// advertise the `shards` ports after `listener_port`.
fn confluent_round_trip(
    bootstrap: &str,
    listener_port: u16,
    shards: usize,
    ca: Option<&Path>,
    topic: &str,
) -> Result<()> {
    let listener_ports = ports(listener_port, shards);
    let mut args = vec![
        "kafka".to_string(),
        "--bootstrap".into(),
        bootstrap.into(),
        "--topic".into(),
        topic.into(),
        "--ports".into(),
        listener_ports,
    ];
    if let Some(ca) = ca {
        args.extend(["--ca".to_string(), text(ca)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    summary(&python("tls_clients.py", &args)?)?;
    Ok(())
}

/// kcat (librdkafka 2.0.2) over SSL: what it produces comes back, and reads the same in
/// plaintext.
fn kcat_round_trip(broker: &Broker, ca: &Path) -> Result<()> {
    let ca_setting = format!("ssl.ca.location={}", text(ca));
    let ssl_args = ["-X", "security.protocol=ssl", "-X", &ca_setting];
    let (ssl_bootstrap, plain_bootstrap) = (broker.ssl_bootstrap(), broker.bootstrap());
    let produce = [
        &["-b", &ssl_bootstrap, "-P", "-t", "kcat-tls"][..],
        &ssl_args,
    ]
    .concat();
    stdout_of(&kcat(&produce, b"one\ntwo\nthree\n")?)?;
    let consume = ["-C", "-e", "-q", "-t", "kcat-tls", "-o", "beginning"];
    let over_ssl = [&["-b", &ssl_bootstrap][..], &consume, &ssl_args].concat();
    ensure!(stdout_of(&kcat(&over_ssl, b"")?)? == "one\ntwo\nthree\n");
    let over_plain = [&["-b", &plain_bootstrap][..], &consume].concat();
    ensure!(stdout_of(&kcat(&over_plain, b"")?)? == "one\ntwo\nthree\n");
    Ok(())
}

#[test]
fn ssl_and_plaintext_clients_each_use_their_own_listener() -> Result<()> {
    let certs = certificates()?;
    let broker = Broker::start(tls_options(&certs))?;
    let (ssl_bootstrap, shards) = (broker.ssl_bootstrap(), broker.shards());
    confluent_round_trip(
        &ssl_bootstrap,
        broker.ssl_port(),
        shards,
        Some(&certs.ca),
        "tls-topic",
    )
    .context("confluent-kafka over SSL")?;
    confluent_round_trip(
        &broker.bootstrap(),
        broker.port(),
        shards,
        None,
        "plain-topic",
    )
    .context("confluent-kafka over PLAINTEXT beside SSL")?;
    kcat_round_trip(&broker, &certs.ca).context("kcat over SSL")?;
    let amqps = format!("127.0.0.1:{}", broker.amqps_port());
    let ca = text(&certs.ca);
    summary(&python(
        "tls_clients.py",
        &["amqp", "--bootstrap", &amqps, "--ca", &ca],
    )?)
    .context("pika over amqps")?;
    // A client that does not trust the broker's CA refuses it.
    ensure!(
        !kcat_metadata(&ssl_bootstrap, &certs.rogue_ca, None)?,
        "a client trusting another CA accepted the broker's certificate"
    );
    Ok(())
}

/// kcat's metadata request over SSL with the given client certificate, if any: whether it got
/// an answer.
fn kcat_metadata(bootstrap: &str, ca: &Path, client: Option<&(PathBuf, PathBuf)>) -> Result<bool> {
    let mut args = vec![
        "-b".to_string(),
        bootstrap.to_string(),
        "-L".into(),
        "-m".into(),
        "5".into(),
    ];
    let mut set = |setting: String| args.extend(["-X".to_string(), setting]);
    set("security.protocol=ssl".into());
    set(format!("ssl.ca.location={}", text(ca)));
    if let Some((cert, key)) = client {
        set(format!("ssl.certificate.location={}", text(cert)));
        set(format!("ssl.key.location={}", text(key)));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(kcat(&args, b"")?.status.success())
}

#[test]
fn mutual_tls_admits_only_trusted_client_certificates() -> Result<()> {
    let certs = certificates()?;
    let options = tls_options(&certs)
        .set("ssl.client.auth", "required")
        .set("ssl.ca.location", &text(&certs.ca));
    let broker = Broker::start(options)?;
    let bootstrap = broker.ssl_bootstrap();
    ensure!(
        kcat_metadata(&bootstrap, &certs.ca, Some(&certs.client))?,
        "a trusted client certificate was refused"
    );
    ensure!(
        !kcat_metadata(&bootstrap, &certs.ca, None)?,
        "a client without a certificate was admitted"
    );
    ensure!(
        !kcat_metadata(&bootstrap, &certs.ca, Some(&certs.rogue_client))?,
        "an untrusted certificate was admitted"
    );
    ensure!(
        !kcat_metadata(&bootstrap, &certs.ca, Some(&certs.expired_client))?,
        "an expired certificate was admitted"
    );
    // confluent-kafka with its certificate produces and consumes.
    let (cert, key) = (text(&certs.client.0), text(&certs.client.1));
    let ssl_ports = ports(broker.ssl_port(), broker.shards());
    let args = [
        "kafka",
        "--bootstrap",
        &bootstrap,
        "--ca",
        &text(&certs.ca),
        "--cert",
        &cert,
        "--key",
        &key,
        "--ports",
        &ssl_ports,
    ];
    summary(&python("tls_clients.py", &args)?)
        .context("confluent-kafka with a client certificate")?;
    let log = broker.log();
    ensure!(
        log.contains("TLS handshake"),
        "the refused handshakes were not logged:\n{log}"
    );
    Ok(())
}

/// Connects to `port`, sends `bytes`, and reads until the broker closes the connection; an error
/// if it has not within `guard` (a hang guard far above the handshake timeout, not a measure).
fn closed_by_broker(port: u16, bytes: &[u8], guard: Duration) -> Result<()> {
    let mut socket = TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(guard))?;
    socket.write_all(bytes)?;
    let mut buffer = [0u8; 4096];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(_) => continue, // a TLS alert, say
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(error) => return Err(error).context("the broker did not close a bad handshake"),
        }
    }
}

/// Twice `max.connections` (3) connections one after another: a slot kept by any of them would
/// stop the ones after it, and the good client at the end.
const BAD_CONNECTIONS: usize = 6;

/// A hang guard far above any handshake timeout here, not a measure.
const CLOSE_GUARD: Duration = Duration::from_secs(30);

#[test]
fn plaintext_clients_on_tls_ports_are_closed_and_free_their_slots() -> Result<()> {
    let certs = certificates()?;
    // The default handshake timeout (10 s): what closes them is the handshake failing.
    let broker = Broker::start(tls_options(&certs).set("max.connections", "3"))?;
    // An ApiVersions request, as a plaintext Kafka client opens with, and AMQP's header.
    let api_versions = [0, 0, 0, 10, 0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff];
    for _ in 0..BAD_CONNECTIONS {
        closed_by_broker(broker.ssl_port(), &api_versions, CLOSE_GUARD)
            .context("plaintext Kafka on the SSL bootstrap port")?;
        closed_by_broker(broker.ssl_port() + 1, &api_versions, CLOSE_GUARD)
            .context("plaintext Kafka on an SSL shard port")?;
        closed_by_broker(broker.amqps_port(), b"AMQP\x00\x00\x09\x01", CLOSE_GUARD)
            .context("plaintext AMQP on amqps")?;
    }
    ensure!(
        kcat_metadata(&broker.ssl_bootstrap(), &certs.ca, None)?,
        "no slot left for a good client"
    );
    let log = broker.log();
    ensure!(
        log.contains("TLS handshake: received corrupt message"),
        "no bad handshake logged:\n{log}"
    );
    ensure!(
        !log.contains("not done within weir.tls.handshake.timeout.ms"),
        "a plaintext client waited for the handshake timeout:\n{log}"
    );
    Ok(())
}

#[test]
fn stalled_handshakes_are_closed_after_the_timeout() -> Result<()> {
    let certs = certificates()?;
    let options = tls_options(&certs)
        .set("max.connections", "3")
        .set("weir.tls.handshake.timeout.ms", "300");
    let broker = Broker::start(options)?;
    // TCP connects that send nothing.
    for _ in 0..BAD_CONNECTIONS {
        closed_by_broker(broker.ssl_port(), &[], CLOSE_GUARD).context("stalled on SSL")?;
        closed_by_broker(broker.amqps_port(), &[], CLOSE_GUARD).context("stalled on amqps")?;
    }
    ensure!(
        kcat_metadata(&broker.ssl_bootstrap(), &certs.ca, None)?,
        "no slot left for a good client"
    );
    let log = broker.log();
    ensure!(
        log.contains("not done within weir.tls.handshake.timeout.ms=300"),
        "no timeout logged:\n{log}"
    );
    Ok(())
}

/// `weir user create USER --password PASSWORD --data-dir DIR` (SCRAM-SHA-512), before the broker
/// starts there.
fn create_user_offline(data_dir: &Path, user: &str, password: &str) -> Result<()> {
    let mut command = std::process::Command::new(weir_tests::broker_binary()?);
    command.args(["user", "create", user, "--password", password, "--data-dir"]);
    command.arg(data_dir);
    let output = weir_tests::run(&mut command, None, Duration::from_secs(60))?;
    ensure!(output.status.success(), "weir user create: {output:?}");
    Ok(())
}

/// kcat's metadata request over SASL_SSL with SCRAM-SHA-512: whether it got an answer.
fn kcat_sasl_ssl_metadata(bootstrap: &str, ca: &Path, user: &str, password: &str) -> Result<bool> {
    let settings = [
        "security.protocol=SASL_SSL".to_string(),
        "sasl.mechanisms=SCRAM-SHA-512".into(),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
        format!("ssl.ca.location={}", text(ca)),
    ];
    let mut args = vec!["-b", bootstrap, "-L", "-m", "5"];
    for setting in &settings {
        args.extend(["-X", setting.as_str()]);
    }
    Ok(kcat(&args, b"")?.status.success())
}

/// A `SASL_SSL://` listener asks for a SASL login over TLS (confluent-kafka and kcat with
/// SCRAM-SHA-512; a wrong password is refused), while the PLAINTEXT listener beside it asks none.
#[test]
fn sasl_ssl_listeners_need_a_login_over_tls() -> Result<()> {
    let certs = certificates()?;
    let data = tempfile::tempdir()?;
    let data_dir = data.path().join("data");
    create_user_offline(&data_dir, "alice", "alice-secret")?;
    let options = BrokerOptions {
        data_dir: Some(data_dir),
        ..tls_options(&certs)
    };
    let broker = Broker::start(options.sasl_ssl_listeners())?;
    let (bootstrap, shards, ca) = (broker.ssl_bootstrap(), broker.shards(), text(&certs.ca));
    let ports = ports(broker.ssl_port(), shards);
    let args = [
        "kafka",
        "--bootstrap",
        &bootstrap,
        "--ca",
        &ca,
        "--ports",
        &ports,
    ];
    let login = ["--sasl-user", "alice", "--sasl-password", "alice-secret"];
    let topic = ["--topic", "sasl-ssl-topic"];
    summary(&python(
        "tls_clients.py",
        &[&args[..], &login, &topic].concat(),
    )?)
    .context("confluent-kafka over SASL_SSL")?;
    ensure!(kcat_sasl_ssl_metadata(
        &bootstrap,
        &certs.ca,
        "alice",
        "alice-secret"
    )?);
    ensure!(
        !kcat_sasl_ssl_metadata(&bootstrap, &certs.ca, "alice", "wrong")?,
        "a wrong password was let in over SASL_SSL"
    );
    confluent_round_trip(
        &broker.bootstrap(),
        broker.port(),
        shards,
        None,
        "plain-beside",
    )
    .context("confluent-kafka over PLAINTEXT beside SASL_SSL")
}
