//! Runs the real `weir-bench` binary against a real `weir` broker it spawns itself and checks the
//! accounting: every message produced is acknowledged and consumed by every group, the JSON report
//! says so, and kcat (an independent client) reads the same number of records back.
//!
//! Needs `target/<profile>/weir` (`cargo build --bin weir`, same profile as this test); skips with
//! a message when it is missing. Ports 19440..19459: each spawned broker takes P, P+1 and P+2 (one port per shard), so
//! cases that may run at once are 4 apart.

use std::path::PathBuf;
use std::process::Command;

fn weir_bench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weir-bench"))
}

fn weir_binary() -> Option<PathBuf> {
    let path = weir_bench().parent()?.join("weir");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "SKIPPED: {} is not built; run `cargo build --bin weir` (same profile) first",
            path.display()
        );
        None
    }
}

struct Run {
    json: serde_json::Value,
    success: bool,
    output: String,
}

fn run(port: u16, extra: &[&str]) -> Option<Run> {
    let weir = weir_binary()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("result.json");
    let plot_path = dir.path().join("result.svg");
    let output = Command::new(weir_bench())
        .args(["--spawn-server", "--weir-bin"])
        .arg(&weir)
        .args(["--bootstrap", &format!("127.0.0.1:{port}")])
        .args(["--server-cpus", "0", "--warmup", "0s", "--json"])
        .arg(&json_path)
        .arg("--plot")
        .arg(&plot_path)
        .args(extra)
        .output()
        .expect("weir-bench runs");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(&json_path)
        .map(|text| serde_json::from_str(&text).expect("valid JSON"))
        .unwrap_or(serde_json::Value::Null);
    if output.status.success() {
        let svg = std::fs::read_to_string(&plot_path).expect("plot written");
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
        assert!(svg.contains(">produce request</text>"), "{svg}");
    }
    Some(Run {
        json,
        success: output.status.success(),
        output: text,
    })
}

fn check_counts(run: &Run, messages: u64, groups: usize) {
    assert!(run.success, "weir-bench failed:\n{}", run.output);
    assert_eq!(run.json["produced_messages"], messages, "{}", run.output);
    let consumed = run.json["consumed_messages_per_group"]
        .as_array()
        .expect("per-group counts");
    assert_eq!(consumed.len(), groups);
    for count in consumed {
        assert_eq!(count.as_u64(), Some(messages), "{}", run.output);
    }
    for field in [
        "produce_msgs_per_s",
        "produce_mb_per_s",
        "consume_msgs_per_s",
        "consume_mb_per_s",
    ] {
        assert!(
            run.json[field].as_f64().unwrap_or(0.0) > 0.0,
            "{field}: {}",
            run.output
        );
    }
    assert!(run.json["e2e_p99_ms"].as_f64().is_some(), "{}", run.output);
    assert!(run.json["workload"]["message_bytes"].as_u64().is_some());
}

#[test]
fn one_partition_every_message_is_acknowledged_and_consumed() {
    let Some(run) = run(19440, &["--messages", "200000", "--message-bytes", "100"]) else {
        return;
    };
    check_counts(&run, 200_000, 1);
    assert!(run.json["produce_p99_ms"].as_f64().is_some());
    // Every request is timed from its write to its answer; each of its records waited at least
    // that long (append -> ack), so no request outlasts the slowest record.
    let requests = &run.json["produce_request_latency"];
    assert!(
        requests["samples"].as_u64().unwrap_or(0) > 0,
        "{}",
        run.output
    );
    let request_max = requests["max_ms"].as_f64().expect("request max");
    let record_max = run.json["produce_latency"]["max_ms"].as_f64().unwrap();
    assert!(
        request_max <= record_max * 1.01,
        "request max {request_max} ms > record max {record_max} ms"
    );
    assert!(run.output.contains("request "), "{}", run.output);
}

#[test]
fn keyed_partitions_groups_and_acks_all_count_exactly() {
    let Some(run) = run(
        19444,
        &[
            "--messages",
            "100001",
            "--partitions",
            "8",
            "--producers",
            "2",
            "--consumers",
            "3",
            "--consumer-groups",
            "2",
            "--keys",
            "round-robin",
            "--acks",
            "-1",
            "--batch-bytes",
            "16384",
            "--topic",
            "keyed",
        ],
    ) else {
        return;
    };
    check_counts(&run, 100_001, 2);
}

/// `--tls` with `--spawn-server`: the broker gets an `SSL://` listener and a certificate made for
/// the run, and every connection (admin, producers with their ack readers, fetchers) speaks TLS;
/// fetches large enough to span many TLS records. Port 21440 (its own range).
#[test]
fn over_tls_every_message_is_acknowledged_and_consumed() {
    let Some(run) = run(
        21440,
        &[
            "--tls",
            "--messages",
            "100000",
            "--message-bytes",
            "100",
            "--partitions",
            "4",
            "--producers",
            "2",
            "--consumer-groups",
            "2",
            "--topic",
            "tls",
        ],
    ) else {
        return;
    };
    check_counts(&run, 100_000, 2);
}

/// One request in flight and one batch per request: the window is full most of the time, so
/// batches whose linger expired keep taking records while they wait (the accumulator path).
#[test]
fn a_full_window_keeps_batches_open_and_loses_nothing() {
    let Some(run) = run(
        19456,
        &[
            "--messages",
            "150000",
            "--partitions",
            "50",
            "--keys",
            "round-robin",
            "--max-in-flight",
            "1",
            "--max-request-bytes",
            "1",
            "--linger-ms",
            "0",
            "--topic",
            "window",
        ],
    ) else {
        return;
    };
    check_counts(&run, 150_000, 1);
}

#[test]
fn acks_zero_and_a_rate_limit_still_count_exactly() {
    let Some(run) = run(
        19448,
        &[
            "--messages",
            "20000",
            "--partitions",
            "2",
            "--acks",
            "0",
            "--rate",
            "40000",
            "--keys",
            "random",
        ],
    ) else {
        return;
    };
    check_counts(&run, 20_000, 1);
    // 20,000 messages at 40,000/s take about half a second; far less means no rate limit.
    let seconds = run.json["produce_measured_s"].as_f64().unwrap_or(0.0);
    assert!(
        seconds > 0.3,
        "rate limit not applied: {seconds} s\n{}",
        run.output
    );
}

#[test]
fn an_independent_client_reads_what_weir_bench_produced() {
    if Command::new("kcat").arg("-V").output().is_err() {
        eprintln!("SKIPPED: kcat is not installed");
        return;
    }
    let Some(weir) = weir_binary() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let port = 19452;
    let mut broker = Command::new(&weir)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--cpus", "0"])
        .args(["--metrics-listen", "none"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weir starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "weir is not listening"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = Command::new(weir_bench())
        .args(["--bootstrap", &format!("127.0.0.1:{port}")])
        .args(["--messages", "5000", "--partitions", "3", "--warmup", "0s"])
        .args(["--topic", "for-kcat", "--batch-bytes", "4096"])
        .output()
        .expect("weir-bench runs");
    let bench_ok = output.status.success();
    let kcat = Command::new("kcat")
        .args(["-b", &format!("127.0.0.1:{port}"), "-C", "-t", "for-kcat"])
        .args(["-o", "beginning", "-e", "-q", "-f", "%S\n"])
        .output()
        .expect("kcat runs");
    let _ = broker.kill();
    let _ = broker.wait();
    assert!(
        bench_ok,
        "weir-bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sizes = String::from_utf8_lossy(&kcat.stdout);
    let lines: Vec<&str> = sizes.lines().collect();
    assert_eq!(
        lines.len(),
        5000,
        "kcat stderr: {}",
        String::from_utf8_lossy(&kcat.stderr)
    );
    assert!(lines.iter().all(|size| *size == "100"));
}

/// `--broker-metrics`: weir-bench scrapes the spawned broker's Prometheus endpoint during the run,
/// and what the broker counted agrees with what the bench counted (ports 19600..19603).
#[test]
fn the_brokers_own_counts_agree_with_the_bench() {
    let Some(run) = run(
        19600,
        &[
            "--messages",
            "300000",
            "--partitions",
            "2",
            "--broker-metrics",
            "127.0.0.1:19603",
            "--broker-metrics-interval-ms",
            "100",
            "--server-set",
            "flush.messages=1",
        ],
    ) else {
        return;
    };
    check_counts(&run, 300_000, 1);
    let broker = &run.json["broker"];
    assert!(
        broker["scrapes"].as_u64().unwrap_or(0) >= 2,
        "{}",
        run.output
    );
    // The first scrape comes before the topic exists: everything after is in the difference.
    assert_eq!(broker["records_produced"], 300_000.0, "{}", run.output);
    assert_eq!(broker["records_fetched"], 300_000.0, "{}", run.output);
    assert!(
        broker["fsyncs"].as_f64().unwrap_or(0.0) >= 1.0,
        "{}",
        run.output
    );
    assert!(broker["fsync_ms_mean"].as_f64().is_some(), "{}", run.output);
    assert!(run.output.contains("broker (/metrics"), "{}", run.output);
}
