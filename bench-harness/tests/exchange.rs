//! Runs the real `weir-bench --exchange` against a real `weir` broker it spawns and checks the
//! routing accounting: every record produced to the exchange reaches every destination once, the
//! JSON report carries the routed rates, and --compare-plain runs the plain topic too.
//!
//! Needs `target/<profile>/weir` (`cargo build --bin weir`, same profile as this test); skips with
//! a message when it is missing. Ports 19810..19833: each spawned broker takes P, P+1 and P+2 (one port per shard), so
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
    let output = Command::new(weir_bench())
        .args(["--spawn-server", "--weir-bin"])
        .arg(&weir)
        .args(["--bootstrap", &format!("127.0.0.1:{port}")])
        .args(["--server-cpus", "0,1", "--partitions", "2", "--json"])
        .arg(&json_path)
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
    Some(Run {
        json,
        success: output.status.success(),
        output: text,
    })
}

/// Every group read `copies` copies of each of `messages` records.
fn check_routed(run: &Run, messages: u64, copies: u64, groups: usize) {
    assert!(run.success, "weir-bench failed:\n{}", run.output);
    assert_eq!(run.json["produced_messages"], messages, "{}", run.output);
    let consumed = run.json["consumed_messages_per_group"]
        .as_array()
        .expect("per-group counts");
    assert_eq!(consumed.len(), groups, "{}", run.output);
    for count in consumed {
        assert_eq!(count.as_u64(), Some(messages * copies), "{}", run.output);
    }
    for field in ["exchange_routed_msgs_per_s", "exchange_copies_per_s"] {
        let rate = run.json[field].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0, "{field} = {rate}:\n{}", run.output);
    }
    assert!(run.json["errors"].as_array().is_some_and(Vec::is_empty));
    assert!(run.output.contains("routed"), "{}", run.output);
}

#[test]
fn topic_exchange_routes_every_record_to_every_destination() {
    let Some(run) = run(
        19810,
        &[
            "--exchange",
            "orders",
            "--bindings",
            "200",
            "--destinations",
            "3",
            "--keys",
            "round-robin",
            "--messages",
            "6000",
            "--consumer-groups",
            "2",
        ],
    ) else {
        return;
    };
    check_routed(&run, 6000, 3, 2);
    assert_eq!(run.json["workload"]["exchange"]["bindings"], 200);
    assert_eq!(
        run.json["workload"]["exchange"]["destinations"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[test]
fn fanout_headers_and_direct_exchanges_count_their_copies() {
    for (port, kind, keys) in [
        (19814, "fanout", "random"),
        (19818, "headers", "round-robin"),
        (19822, "direct", "none"),
    ] {
        let Some(run) = run(
            port,
            &[
                "--exchange",
                "ex",
                "--exchange-type",
                kind,
                "--bindings",
                "50",
                "--destinations",
                "2",
                "--keys",
                keys,
                "--messages",
                "3000",
            ],
        ) else {
            return;
        };
        check_routed(&run, 3000, 2, 1);
    }
}

#[test]
fn compare_plain_reports_the_ratio() {
    let Some(run) = run(
        19826,
        &[
            "--exchange",
            "app",
            "--bindings",
            "100",
            "--destinations",
            "2",
            "--keys",
            "round-robin",
            "--messages",
            "4000",
            "--compare-plain",
        ],
    ) else {
        return;
    };
    check_routed(&run, 4000, 2, 1);
    let plain = run.json["plain_produce_msgs_per_s"].as_f64().unwrap_or(0.0);
    let ratio = run.json["routed_to_plain_ratio"].as_f64().unwrap_or(0.0);
    assert!(plain > 0.0 && ratio > 0.0, "{}", run.output);
    assert!(run.output.contains("routed/plain"), "{}", run.output);
}

#[test]
fn direct_exchange_with_keys_is_refused() {
    let Some(run) = run(
        19830,
        &[
            "--exchange",
            "ex",
            "--exchange-type",
            "direct",
            "--keys",
            "round-robin",
            "--messages",
            "10",
        ],
    ) else {
        return;
    };
    assert!(!run.success, "{}", run.output);
    assert!(run.output.contains("--keys none"), "{}", run.output);
}
