//! SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and the user store against the real broker with
//! real clients: the first user made offline (`weir user create --data-dir`), more through
//! confluent-kafka's AdminClient and `weir user`; confluent-kafka with SCRAM-SHA-512, kafka-python
//! with PLAIN, kafkajs with SCRAM-SHA-256 and kcat with SCRAM-SHA-512 producing and consuming; a
//! wrong password refused with nothing delivered; a deleted credential refused without a
//! restart; users kept across a SIGKILL. Raw protocol: nothing but ApiVersions and the SASL
//! requests before authentication (anything else closes the connection, and writes nothing),
//! Kafka's SASL error codes, and 10,000 failed authentications with the broker's memory read
//! before and after while a real client keeps working. AMQP: pika with a store user, with guest,
//! a wrong password refused with 403, and guest refused from a non-loopback address.
//! Clients: `clients/sasl.py`, `clients/kafkajs_sasl.js`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use serde_json::Value;
use weir_engine::batch::{build_batch, BatchSpec, RecordSpec};
use weir_tests::{broker_binary, kcat, node, python, stdout_of, summary, Broker, BrokerOptions};

const ADMIN: (&str, &str) = ("admin", "admin-secret");
const ILLEGAL_SASL_STATE: i16 = 34;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// A broker whose Kafka listeners require SASL, with the first user (`admin`, SCRAM-SHA-512)
/// made offline in its data directory before it starts. `dir` must outlive the broker.
fn sasl_broker(dir: &Path, sets: &[(&str, &str)]) -> Result<Broker> {
    let data_dir = dir.join("data");
    weir(
        &[
            "user",
            "create",
            ADMIN.0,
            "--password",
            ADMIN.1,
            "--data-dir",
        ],
        &[data_dir.to_str().context("path")?],
    )?;
    let mut options = BrokerOptions {
        data_dir: Some(data_dir),
        ..BrokerOptions::default()
    }
    .cpus("0-1")
    .set("weir.sasl.required", "true");
    for (key, value) in sets {
        options = options.set(key, value);
    }
    Broker::start(options)
}

/// Runs the `weir` binary (its CLI); its stdout.
fn weir(args: &[&str], more: &[&str]) -> Result<String> {
    let output = weir_tests::run(
        Command::new(broker_binary()?).args(args).args(more),
        None,
        Duration::from_secs(60),
    )?;
    ensure!(
        output.status.success(),
        "weir {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout_of(&output)
}

fn sasl_py(broker: &Broker, scenario: &str, args: &[&str]) -> Result<Value> {
    let bootstrap = broker.bootstrap();
    let mut all = vec!["--bootstrap", &bootstrap, "--scenario", scenario];
    all.extend_from_slice(args);
    summary(&python("sasl.py", &all)?)
}

/// `user` with `password` and `mechanism`, made by confluent-kafka's AdminClient
/// authenticated as the admin.
fn create_user(broker: &Broker, user: &str, password: &str, mechanism: &str) -> Result<Value> {
    let args = [
        "--user",
        user,
        "--password",
        password,
        "--mechanism",
        mechanism,
        "--sasl-user",
        ADMIN.0,
        "--sasl-password",
        ADMIN.1,
    ];
    sasl_py(broker, "create", &args)
}

fn kcat_scram(
    broker: &Broker,
    (user, password): (&str, &str),
    args: &[&str],
    input: &[u8],
) -> Result<String> {
    let bootstrap = broker.bootstrap();
    let username = format!("sasl.username={user}");
    let secret = format!("sasl.password={password}");
    let mut all = vec![
        "-b",
        &bootstrap,
        "-X",
        "security.protocol=SASL_PLAINTEXT",
        "-X",
        "sasl.mechanisms=SCRAM-SHA-512",
        "-X",
        &username,
        "-X",
        &secret,
    ];
    all.extend_from_slice(args);
    let output = kcat(&all, input)?;
    ensure!(
        output.status.success(),
        "kcat: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout_of(&output)
}

#[test]
fn real_clients_authenticate_with_scram_and_plain() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = sasl_broker(dir.path(), &[])?;
    let made = create_user(&broker, "alice", "alice-secret", "SCRAM-SHA-512")?;
    assert_eq!(made["iterations"], serde_json::json!([4096]), "{made}");
    create_user(&broker, "bob", "bob-secret", "SCRAM-SHA-256")?;
    every_client_authenticates(&broker)?;
    wrong_and_deleted_credentials_are_refused(&broker)?;

    // Users made through the admin API and offline survive a SIGKILL, deletions too.
    broker.kill9()?;
    broker.start_again()?;
    let bob = [
        "--user",
        "bob",
        "--password",
        "bob-secret",
        "--mechanism",
        "SCRAM-SHA-256",
        "--topic",
        "after-kill",
    ];
    assert_eq!(sasl_py(&broker, "roundtrip", &bob)?["records"], 20);
    let admin = ["--user", ADMIN.0, "--password", ADMIN.1, "--topic", "admin"];
    assert_eq!(sasl_py(&broker, "roundtrip", &admin)?["records"], 20);
    assert_eq!(
        weir_online(&broker, &["user", "list"])?,
        "admin\tSCRAM-SHA-512 (iterations 4096)\nbob\tSCRAM-SHA-256 (iterations 4096)\n"
    );
    Ok(())
}

/// `weir ARGS --bootstrap B --sasl-user admin --sasl-password …`: the CLI against the running
/// broker, authenticated as the admin.
fn weir_online(broker: &Broker, args: &[&str]) -> Result<String> {
    let bootstrap = broker.bootstrap();
    let login = [
        "--bootstrap",
        &bootstrap,
        "--sasl-user",
        ADMIN.0,
        "--sasl-password",
        ADMIN.1,
    ];
    weir(args, &login)
}

/// confluent-kafka (SCRAM-SHA-512), kafka-python (PLAIN), kafkajs (SCRAM-SHA-256) and kcat
/// (SCRAM-SHA-512, librdkafka 2.0) each produce and consume; a user made by `weir user create`
/// on the running broker logs in at once.
fn every_client_authenticates(broker: &Broker) -> Result<()> {
    let alice = ["--user", "alice", "--password", "alice-secret"];
    let roundtrip = sasl_py(
        broker,
        "roundtrip",
        &[&alice[..], &["--topic", "scram512"]].concat(),
    )?;
    assert_eq!(roundtrip["records"], 20, "{roundtrip}");
    let plain = [&alice[..], &["--mechanism", "PLAIN", "--topic", "plain"]].concat();
    assert_eq!(sasl_py(broker, "python", &plain)?["records"], 20);
    let bootstrap = broker.bootstrap();
    let kafkajs = node(
        "kafkajs_sasl.js",
        &[
            "--bootstrap",
            &bootstrap,
            "--user",
            "bob",
            "--password",
            "bob-secret",
            "--mechanism",
            "scram-sha-256",
        ],
    )?;
    assert_eq!(summary(&kafkajs)?["records"], 20);
    kcat_scram(
        broker,
        ("alice", "alice-secret"),
        &["-P", "-t", "kcat-scram"],
        b"one\ntwo\n",
    )?;
    weir_online(
        broker,
        &["user", "create", "dave", "--password", "dave-secret"],
    )?;
    let consumed = kcat_scram(
        broker,
        ("dave", "dave-secret"),
        &["-C", "-t", "kcat-scram", "-o", "beginning", "-c", "2", "-e"],
        b"",
    )?;
    assert_eq!(consumed, "one\ntwo\n");
    Ok(())
}

/// A wrong password delivers nothing; deleting a user (AdminClient, `weir user delete`) refuses
/// its next login without a restart.
fn wrong_and_deleted_credentials_are_refused(broker: &Broker) -> Result<()> {
    let wrong = sasl_py(
        broker,
        "refused",
        &[
            "--user",
            "alice",
            "--password",
            "nope",
            "--topic",
            "refused",
        ],
    )?;
    assert!(
        wrong["error"]
            .as_str()
            .unwrap_or("")
            .contains("Authentication failed"),
        "{wrong}"
    );
    let delete_alice = [
        "--user",
        "alice",
        "--sasl-user",
        ADMIN.0,
        "--sasl-password",
        ADMIN.1,
    ];
    sasl_py(broker, "delete", &delete_alice)?;
    let alice = ["--user", "alice", "--password", "alice-secret"];
    sasl_py(
        broker,
        "refused",
        &[&alice[..], &["--topic", "refused"]].concat(),
    )?;
    weir_online(broker, &["user", "delete", "dave"])?;
    let dave = [
        "--user",
        "dave",
        "--password",
        "dave-secret",
        "--topic",
        "refused",
    ];
    sasl_py(broker, "refused", &dave)?;
    Ok(())
}

fn connect(broker: &Broker) -> Result<TcpStream> {
    let stream = TcpStream::connect(broker.bootstrap())?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(stream)
}

fn frame(key: ApiKey, version: i16, body: &impl Encodable) -> BytesMut {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, key.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    out
}

/// The answer to `request`, or `None` when the broker closed the connection instead.
fn call<R: Request>(stream: &mut TcpStream, version: i16, request: &R) -> Option<R::Response> {
    let key = ApiKey::try_from(R::KEY).ok()?;
    stream.write_all(&frame(key, version, request)).ok()?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).ok()?;
    let mut body = Bytes::from(body);
    ResponseHeader::decode(&mut body, R::Response::header_version(version)).ok()?;
    R::Response::decode(&mut body, version).ok()
}

fn handshake(stream: &mut TcpStream, mechanism: &str) -> Option<SaslHandshakeResponse> {
    let mut request = SaslHandshakeRequest::default();
    request.mechanism = StrBytes::from_string(mechanism.to_string());
    call(stream, 1, &request)
}

fn authenticate(stream: &mut TcpStream, bytes: &[u8]) -> Option<SaslAuthenticateResponse> {
    let mut request = SaslAuthenticateRequest::default();
    request.auth_bytes = Bytes::copy_from_slice(bytes);
    call(stream, 2, &request)
}

fn produce_one(topic: &str) -> ProduceRequest {
    let record = RecordSpec {
        value: Some(b"intruder"),
        ..RecordSpec::default()
    };
    let batch = build_batch(&BatchSpec::default(), &[record]);
    let mut data = PartitionProduceData::default();
    data.records = Some(batch.freeze());
    let mut topic_data = TopicProduceData::default();
    topic_data.name = TopicName(StrBytes::from_string(topic.to_string()));
    topic_data.partition_data.push(data);
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 5000;
    request.topic_data.push(topic_data);
    request
}

#[test]
fn unauthenticated_connections_may_only_authenticate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = sasl_broker(dir.path(), &[])?;
    let admin = [
        "--user",
        ADMIN.0,
        "--password",
        ADMIN.1,
        "--topic",
        "guarded",
        "--count",
        "5",
    ];
    sasl_py(&broker, "roundtrip", &admin)?;
    other_requests_close_the_connection(&broker)?;
    sasl_states_answer_kafkas_codes(&broker)?;
    handshake_v0_takes_bare_tokens(&broker)?;

    // PLAIN succeeds on a raw connection, and the next request is served at once.
    let mut stream = connect(&broker)?;
    handshake(&mut stream, "PLAIN").context("answer")?;
    let ok = authenticate(&mut stream, b"\0admin\0admin-secret").context("answer")?;
    assert_eq!(ok.error_code, 0, "{:?}", ok.error_message);
    assert!(call(&mut stream, 12, &MetadataRequest::default()).is_some());
    Ok(())
}

/// Before authentication: ApiVersions is answered; Produce, Metadata and the admin API close the
/// connection unanswered and write nothing; a frame over 512 KiB closes it before it is read.
fn other_requests_close_the_connection(broker: &Broker) -> Result<()> {
    let mut stream = connect(broker)?;
    let versions = call(&mut stream, 3, &ApiVersionsRequest::default()).context("ApiVersions")?;
    assert!(versions
        .api_keys
        .iter()
        .any(|k| k.api_key == 36 && k.max_version == 2));
    assert!(
        call(&mut stream, 9, &produce_one("guarded")).is_none(),
        "Produce was answered"
    );
    let mut stream = connect(broker)?;
    assert!(
        call(&mut stream, 12, &MetadataRequest::default()).is_none(),
        "Metadata answered"
    );
    let mut stream = connect(broker)?;
    let describe = DescribeUserScramCredentialsRequest::default();
    assert!(
        call(&mut stream, 0, &describe).is_none(),
        "DescribeUserScramCredentials answered"
    );
    let consumed = kcat_scram(
        broker,
        ADMIN,
        &["-C", "-t", "guarded", "-o", "beginning", "-e"],
        b"",
    )?;
    assert_eq!(consumed.lines().count(), 5, "{consumed}");

    // Kafka's sasl.server.max.receive.size: an unauthenticated 1 MiB frame is not buffered.
    let mut stream = connect(broker)?;
    stream.write_all(&(1i32 << 20).to_be_bytes())?;
    stream.write_all(&[0u8; 4096])?;
    let mut rest = [0u8; 1];
    assert!(
        !matches!(stream.read(&mut rest), Ok(n) if n > 0),
        "an oversized unauthenticated frame was answered"
    );
    Ok(())
}

/// Kafka's codes: authenticate before a handshake, an unknown mechanism, a second handshake.
fn sasl_states_answer_kafkas_codes(broker: &Broker) -> Result<()> {
    let mut stream = connect(broker)?;
    let early = authenticate(&mut stream, b"\0admin\0admin-secret").context("answer")?;
    assert_eq!(early.error_code, ILLEGAL_SASL_STATE);
    let mut stream = connect(broker)?;
    let unknown = handshake(&mut stream, "GSSAPI").context("answer")?;
    assert_eq!(unknown.error_code, UNSUPPORTED_SASL_MECHANISM);
    let offered: Vec<&str> = unknown.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(offered, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]);
    let mut stream = connect(broker)?;
    let first = handshake(&mut stream, "PLAIN").context("answer")?;
    assert_eq!(first.error_code, 0);
    let second = handshake(&mut stream, "PLAIN").context("answer")?;
    assert_eq!(second.error_code, ILLEGAL_SASL_STATE);
    Ok(())
}

/// SaslHandshake v0 (pre-1.0 clients): the tokens follow as bare size-prefixed frames, the
/// answers too; a wrong password closes the connection without an answer.
fn handshake_v0_takes_bare_tokens(broker: &Broker) -> Result<()> {
    let bare_token = |stream: &mut TcpStream, token: &[u8]| -> Option<Vec<u8>> {
        stream.write_all(&(token.len() as i32).to_be_bytes()).ok()?;
        stream.write_all(token).ok()?;
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).ok()?;
        let mut answer = vec![0u8; i32::from_be_bytes(size) as usize];
        stream.read_exact(&mut answer).ok()?;
        Some(answer)
    };
    let mut request = SaslHandshakeRequest::default();
    request.mechanism = StrBytes::from_static_str("PLAIN");
    let mut stream = connect(broker)?;
    let answer = call(&mut stream, 0, &request).context("handshake v0")?;
    assert_eq!(answer.error_code, 0);
    let ok = bare_token(&mut stream, b"\0admin\0admin-secret").context("PLAIN token")?;
    assert!(ok.is_empty(), "PLAIN answers an empty token");
    assert!(call(&mut stream, 12, &MetadataRequest::default()).is_some());

    let mut stream = connect(broker)?;
    call(&mut stream, 0, &request).context("handshake v0")?;
    assert!(bare_token(&mut stream, b"\0admin\0wrong").is_none());
    Ok(())
}

/// One failed SCRAM-SHA-512 authentication on a fresh connection: the answer, then the close.
fn fail_once(address: &str) -> Result<()> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    handshake(&mut stream, "SCRAM-SHA-512").context("handshake")?;
    let first = authenticate(&mut stream, b"n,,n=admin,r=hostilenonce").context("first")?;
    let server_first = String::from_utf8_lossy(&first.auth_bytes).to_string();
    let nonce = server_first
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let proof = "p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
    let last =
        authenticate(&mut stream, format!("c=biws,{nonce},{proof}").as_bytes()).context("final")?;
    ensure!(
        last.error_code == SASL_AUTHENTICATION_FAILED,
        "code {}",
        last.error_code
    );
    let mut rest = [0u8; 1];
    ensure!(
        matches!(stream.read(&mut rest), Ok(0)),
        "connection left open"
    );
    Ok(())
}

fn rss_kib(broker: &Broker) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.pid()?))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// `attempts` failed authentications from `THREADS` connections at a time.
fn attack(address: &str, attempts: usize) -> Result<()> {
    const THREADS: usize = 100;
    let attackers: Vec<_> = (0..THREADS)
        .map(|_| {
            let address = address.to_string();
            std::thread::spawn(move || {
                (0..attempts / THREADS).try_for_each(|_| fail_once(&address))
            })
        })
        .collect();
    for attacker in attackers {
        attacker
            .join()
            .map_err(|_| anyhow::anyhow!("attacker panicked"))??;
    }
    Ok(())
}

#[test]
fn ten_thousand_failed_authentications_cost_bounded_memory() -> Result<()> {
    const ATTEMPTS: usize = 10_000;
    let dir = tempfile::tempdir()?;
    // A shorter failure delay than Kafka's 100 ms, so that the 10,000 fit the suite's budget.
    let broker = sasl_broker(
        dir.path(),
        &[("connection.failed.authentication.delay.ms", "40")],
    )?;
    let address = broker.bootstrap();
    // Warm up at the same concurrency (each open connection holds its read buffer), so that the
    // baseline already counts what 100 connections at a time take.
    attack(&address, 1_000)?;
    let before_kib = rss_kib(&broker)?;
    let started = std::time::Instant::now();
    let attackers = std::thread::spawn(move || attack(&address, ATTEMPTS));
    // A real client produces and consumes meanwhile.
    let admin = [
        "--user",
        ADMIN.0,
        "--password",
        ADMIN.1,
        "--topic",
        "meanwhile",
    ];
    let meanwhile = sasl_py(&broker, "roundtrip", &admin);
    attackers
        .join()
        .map_err(|_| anyhow::anyhow!("attack panicked"))??;
    let after_kib = rss_kib(&broker)?;
    println!(
        "{ATTEMPTS} failed SCRAM authentications in {:?}: VmRSS {before_kib} KiB before, \
         {after_kib} KiB after",
        started.elapsed()
    );
    assert_eq!(meanwhile?["records"], 20);
    assert!(
        after_kib < before_kib + (4 << 10),
        "RSS grew from {before_kib} to {after_kib} KiB"
    );
    Ok(())
}

/// This machine's first non-loopback IPv4 address, if it has one.
fn non_loopback_address() -> Option<String> {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let field = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    Some(field.split('/').next()?.to_string())
}

#[test]
fn amqp_logins_use_the_same_store() -> Result<()> {
    let broker = Broker::start(
        BrokerOptions {
            amqp_host: Some("0.0.0.0".into()),
            ..BrokerOptions::default()
        }
        .cpus("0-1"),
    )?;
    sasl_py(
        &broker,
        "create",
        &["--user", "carol", "--password", "carol-secret"],
    )?;
    let amqp = broker.amqp_addr();
    let login = |user: &str, password: &str, address: &str| -> Result<Value> {
        sasl_py(
            &broker,
            "pika",
            &["--amqp", address, "--user", user, "--password", password],
        )
    };
    assert_eq!(login("carol", "carol-secret", &amqp)?["accepted"], true);
    assert_eq!(login("guest", "guest", &amqp)?["accepted"], true);
    let wrong = login("carol", "nope", &amqp)?;
    assert_eq!(wrong["accepted"], false);
    assert!(
        wrong["reply"].as_str().unwrap_or("").contains("403"),
        "{wrong}"
    );
    match non_loopback_address() {
        Some(ip) => {
            let remote = format!("{ip}:{}", broker.amqp_port());
            let guest = login("guest", "guest", &remote)?;
            assert_eq!(guest["accepted"], false, "guest from {ip}");
            assert!(
                guest["reply"]
                    .as_str()
                    .unwrap_or("")
                    .contains("can only connect via localhost"),
                "{guest}"
            );
            assert_eq!(login("carol", "carol-secret", &remote)?["accepted"], true);
        }
        None => {
            println!("no non-loopback address on this machine: guest's loopback rule not checked")
        }
    }
    Ok(())
}
