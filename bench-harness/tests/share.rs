//! Runs the real `weir-bench --share-group` against a real `weir` broker it spawns itself and
//! checks the share mode's accounting: every record produced is acquired and acknowledged exactly
//! once by the share consumers together, and the JSON report says so.
//!
//! Needs `target/<profile>/weir` (`cargo build --bin weir`, same profile as this test); skips with
//! a message when it is missing. Ports 19940..19947: each spawned broker takes P, P+1 and P+2 (one
//! port per shard), so cases that may run at once are 4 apart.

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

/// Runs share mode and returns the JSON report and the output, asserting success.
fn run(port: u16, extra: &[&str]) -> Option<(serde_json::Value, String)> {
    let weir = weir_binary()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("result.json");
    let output = Command::new(weir_bench())
        .args(["--spawn-server", "--weir-bin"])
        .arg(&weir)
        .args(["--bootstrap", &format!("127.0.0.1:{port}")])
        .args(["--server-cpus", "0", "--json"])
        .arg(&json_path)
        .args(extra)
        .output()
        .expect("weir-bench runs");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "weir-bench failed:\n{text}");
    let json = std::fs::read_to_string(&json_path).expect("JSON written");
    Some((serde_json::from_str(&json).expect("valid JSON"), text))
}

fn check(json: &serde_json::Value, output: &str, messages: u64) {
    assert_eq!(json["produced_messages"], messages, "{output}");
    assert_eq!(json["consumed_messages_per_group"][0], messages, "{output}");
    assert_eq!(json["share_acquired_messages"], messages, "{output}");
    assert_eq!(json["share_acknowledged_messages"], messages, "{output}");
    assert_eq!(json["share_duplicate_messages"], 0, "{output}");
    assert!(
        json["errors"].as_array().is_some_and(Vec::is_empty),
        "{output}"
    );
    for field in ["consume_msgs_per_s", "consume_mb_per_s", "e2e_p99_ms"] {
        assert!(
            json[field].as_f64().unwrap_or(0.0) > 0.0,
            "{field}: {output}"
        );
    }
    assert!(json["workload"]["share"]["group"].is_string(), "{output}");
}

#[test]
fn two_share_consumers_acknowledge_every_record_once() {
    let Some((json, output)) = run(
        19940,
        &[
            "--share-group",
            "bench-share",
            "--consumers",
            "2",
            "--partitions",
            "4",
            "--messages",
            "50001",
            "--batch-bytes",
            "16384",
        ],
    ) else {
        return;
    };
    check(&json, &output, 50_001);
    assert_eq!(json["workload"]["consumers"], 2, "{output}");
}

#[test]
fn small_answers_on_one_partition_still_count_exactly() {
    // max_records below a batch's record count: answers acquire part of a batch, and the two
    // consumers interleave inside batches.
    let Some((json, output)) = run(
        19944,
        &[
            "--share-group",
            "bench-share-small",
            "--consumers",
            "2",
            "--messages",
            "20000",
            "--share-max-records",
            "37",
        ],
    ) else {
        return;
    };
    check(&json, &output, 20_000);
}
