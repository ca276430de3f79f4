//! Runs the real `weir-bench amqp` binary against a real AMQP 0-9-1 broker and checks its report
//! and its accounting: every confirmed message is consumed exactly once, the JSON has the
//! figures, and messages the run did not publish make it fail.
//!
//! The broker: `WEIR_BENCH_AMQP_URL` (e.g. a RabbitMQ at amqp://guest:guest@127.0.0.1:5674/%2f)
//! when set; otherwise a `weir` spawned by `weir-bench --spawn-server` (its AMQP listener on
//! 1947x-1948x, its Kafka ports 10 above; cases that may run at once are 4 ports apart), which
//! needs `target/<profile>/weir` built with AMQP. Nothing is skipped: without either, the tests
//! fail and say why.

use std::path::PathBuf;
use std::process::Command;

fn weir_bench() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weir-bench"))
}

/// The broker under test.
enum Broker {
    Url(String),
    /// The weir binary, started per run by `--spawn-server` (or by the test).
    Weir(PathBuf),
}

fn broker() -> Broker {
    if let Ok(url) = std::env::var("WEIR_BENCH_AMQP_URL") {
        return Broker::Url(url);
    }
    let weir = weir_bench()
        .parent()
        .map(|dir| dir.join("weir"))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no broker: set WEIR_BENCH_AMQP_URL to an AMQP broker, or build weir (`cargo \
                 build --release --bin weir`) next to weir-bench"
            )
        });
    Broker::Weir(weir)
}

fn local_url(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// The flags that point weir-bench at the broker: the URL, or a weir it spawns with its AMQP
/// listener on `port` and its Kafka ports from `port + 10`.
fn broker_flags(port: u16) -> Vec<String> {
    match broker() {
        Broker::Url(url) => vec!["--url".into(), url],
        Broker::Weir(weir) => vec![
            "--spawn-server".into(),
            "--weir-bin".into(),
            weir.display().to_string(),
            "--url".into(),
            local_url(port),
            "--server-kafka-listen".into(),
            format!("127.0.0.1:{}", port + 10),
        ],
    }
}

/// A weir started by the test itself, for a case that needs one broker across two runs; killed
/// (by its own pid) on drop.
struct TestWeir {
    child: std::process::Child,
    _data: tempfile::TempDir,
}

impl TestWeir {
    fn start(weir: &std::path::Path, port: u16) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        let child = Command::new(weir)
            .arg("--data-dir")
            .arg(data.path())
            .args([
                "--cpus",
                "0",
                "--listen",
                &format!("127.0.0.1:{}", port + 10),
            ])
            .args(["--amqp-listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "none"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("weir starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "weir does not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        TestWeir { child, _data: data }
    }
}

impl Drop for TestWeir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn queue_name(test: &str) -> String {
    format!("weir-bench-test-{test}-{}", std::process::id())
}

struct Run {
    json: serde_json::Value,
    success: bool,
    output: String,
    svg: Option<String>,
}

fn run(port: u16, extra: &[&str]) -> Run {
    run_with(broker_flags(port), extra)
}

fn run_with(broker: Vec<String>, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("result.json");
    let plot_path = dir.path().join("result.svg");
    let output = Command::new(weir_bench())
        .arg("amqp")
        .args(broker)
        .arg("--json")
        .arg(&json_path)
        .arg("--plot")
        .arg(&plot_path)
        .args(["--drain-timeout-s", "20"])
        .args(extra)
        .output()
        .expect("weir-bench runs");
    let output_text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let json = std::fs::read_to_string(&json_path)
        .map(|text| serde_json::from_str(&text).expect("valid JSON"))
        .unwrap_or(serde_json::Value::Null);
    Run {
        json,
        success: output.status.success(),
        output: output_text,
        svg: std::fs::read_to_string(&plot_path).ok(),
    }
}

/// A successful run's report: exact counts, positive rates, latencies and the workload.
fn check_report(run: &Run, messages: u64) {
    assert!(run.success, "weir-bench amqp failed:\n{}", run.output);
    let json = &run.json;
    assert_eq!(json["published_messages"], messages, "{}", run.output);
    assert_eq!(json["consumed_messages"], messages, "{}", run.output);
    assert_eq!(json["nacked_messages"], 0, "{}", run.output);
    assert_eq!(json["redelivered_messages"], 0, "{}", run.output);
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(0));
    for field in [
        "publish_msgs_per_s",
        "publish_mb_per_s",
        "consume_msgs_per_s",
        "consume_mb_per_s",
        "publish_confirm_p99_ms",
        "e2e_p99_ms",
    ] {
        assert!(
            json[field].as_f64().unwrap_or(0.0) > 0.0,
            "{field}: {}",
            run.output
        );
    }
    // Every message was timed on both sides.
    assert_eq!(json["publish_confirm_latency"]["samples"], messages);
    assert_eq!(json["e2e_latency"]["samples"], messages);
    assert!(json["publish_confirm_p50_ms"].as_f64() <= json["publish_confirm_p99_ms"].as_f64());
    assert!(!json["broker"].as_str().unwrap_or("").trim().is_empty());
    let svg = run.svg.as_deref().expect("plot written");
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
    assert!(svg.contains(">publish confirm</text>"), "{svg}");
    assert!(run.output.contains("publish ") && run.output.contains("consume "));
}

#[test]
fn transient_one_queue_every_confirmed_message_is_consumed_once() {
    let queue = queue_name("transient");
    let run = run(
        19470,
        &[
            "--queue",
            &queue,
            "--messages",
            "30000",
            "--message-bytes",
            "100",
            "--rate",
            "20k",
        ],
    );
    check_report(&run, 30_000);
    // 30,000 messages at 20,000/s take 1.5 s; far less means no rate limit.
    let seconds = run.json["publish_measured_s"].as_f64().unwrap_or(0.0);
    assert!(seconds >= 1.3, "published in {seconds} s at --rate 20k");
    assert_eq!(run.json["workload"]["rate_msgs_per_s"], 20_000.0);
    let workload = &run.json["workload"];
    assert_eq!(workload["queues"], serde_json::json!([queue]));
    assert_eq!(workload["message_bytes"], 100);
    assert_eq!(workload["durable"], false);
    assert_eq!(workload["stop"]["messages"]["count"], 30_000);
    // The report names the broker but not the password.
    let url = workload["url"].as_str().expect("url");
    assert!(
        url.starts_with("amqp://") && !url.contains(":guest@"),
        "{url}"
    );
}

#[test]
fn durable_sixteen_queues_1k_bodies_many_connections_count_exactly() {
    let queue = queue_name("durable");
    let run = run(
        19474,
        &[
            "--queue",
            &queue,
            "--queues",
            "16",
            "--durable",
            "--message-bytes",
            "1024",
            "--messages",
            "16001",
            "--producers",
            "2",
            "--consumers",
            "3",
            "--confirm-window",
            "64",
            "--prefetch",
            "50",
            "--ack-every",
            "7",
        ],
    );
    check_report(&run, 16_001);
    let workload = &run.json["workload"];
    assert_eq!(workload["queues"].as_array().map(Vec::len), Some(16));
    assert_eq!(workload["durable"], true);
    assert_eq!(workload["message_bytes"], 1024);
}

/// One broker that outlives a run: the URL given, or a weir the test starts on `port`.
fn lasting_broker(port: u16) -> (Vec<String>, Option<TestWeir>) {
    let (url, weir) = match broker() {
        Broker::Url(url) => (url, None),
        Broker::Weir(weir) => (local_url(port), Some(TestWeir::start(&weir, port))),
    };
    (vec!["--url".to_owned(), url], weir)
}

/// A queue that exists with other settings (durable, the run asks for transient) stops the run
/// before it starts, with the broker's reply code, instead of a hang or a half-run.
#[test]
fn a_queue_declared_with_other_settings_is_a_clear_error() {
    let queue = queue_name("redeclare");
    let (flags, _weir) = lasting_broker(19482);
    let durable = run_with(
        flags.clone(),
        &[
            "--queue",
            &queue,
            "--durable",
            "--messages",
            "10",
            "--no-consume",
        ],
    );
    assert!(durable.success, "{}", durable.output);
    let transient = run_with(flags.clone(), &["--queue", &queue, "--messages", "10"]);
    assert!(!transient.success, "{}", transient.output);
    assert!(
        transient.output.contains("406") && transient.output.contains(&queue),
        "{}",
        transient.output
    );
    // The durable run then consumes the 10 left and deletes the queue.
    let cleanup = run_with(
        flags,
        &[
            "--queue",
            &queue,
            "--durable",
            "--messages",
            "5",
            "--no-purge",
        ],
    );
    assert!(!cleanup.success, "{}", cleanup.output);
    assert_eq!(cleanup.json["published_messages"], 5, "{}", cleanup.output);
}

/// Messages already in the queue (published by an earlier `--no-consume` run, not purged with
/// `--no-purge`) are delivered on top of this run's: the count check must fail the run.
#[test]
fn messages_the_run_did_not_publish_fail_the_count_check() {
    let queue = queue_name("extra");
    // The backlog must outlive the first run: against weir, one broker for both runs.
    let (flags, _weir) = lasting_broker(19478);
    let before = run_with(
        flags.clone(),
        &["--queue", &queue, "--messages", "300", "--no-consume"],
    );
    assert!(before.success, "the backlog run failed:\n{}", before.output);
    assert_eq!(before.json["published_messages"], 300);
    assert_eq!(before.json["consumed_messages"], 0);
    let run = run_with(
        flags,
        &["--queue", &queue, "--messages", "1000", "--no-purge"],
    );
    assert!(
        !run.success,
        "a run that received 300 messages it never published passed:\n{}",
        run.output
    );
    let errors = run.json["errors"].to_string();
    assert!(
        errors.contains("count mismatch") || errors.contains("still holds"),
        "{errors}\n{}",
        run.output
    );
    assert_eq!(run.json["published_messages"], 1000);
    let received = run.json["consumed_messages"].as_u64().unwrap_or(0);
    assert!(received >= 1000, "{}", run.output);
    assert!(run.output.contains("ERROR: "), "{}", run.output);
}

/// `--idle-queues`: every queue declared is counted, the memory figures come from the broker's
/// process, and (with a spawned weir) every queue is still there after the clean restart the
/// tool makes; against another broker the queues are deleted afterwards.
#[test]
fn idle_queues_are_declared_measured_and_kept_across_a_restart() {
    let queue = queue_name("idle");
    let run = run(19486, &["--idle-queues", "1500", "--queue", &queue]);
    assert!(
        run.success,
        "weir-bench amqp --idle-queues failed:\n{}",
        run.output
    );
    let json = &run.json;
    assert_eq!(json["idle_queues"], 1500, "{}", run.output);
    assert!(json["declares_per_s"]
        .as_f64()
        .is_some_and(|rate| rate > 0.0));
    if let Broker::Weir(_) = broker() {
        let (before, after) = (&json["rss_before_kib"], &json["rss_after_kib"]);
        assert!(
            before
                .as_u64()
                .is_some_and(|b| after.as_u64().is_some_and(|a| a > b)),
            "1,500 queues cost no memory? {}",
            run.output
        );
        assert_eq!(json["queues_after_restart"], 1500, "{}", run.output);
        assert!(json["restart_s"].as_f64().is_some_and(|s| s > 0.0));
    }
}
