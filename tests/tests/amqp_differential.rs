//! The AMQP differential suite: every scenario in tests/clients/amqp_diff/ (pika or raw frames,
//! printing one canonical JSON outcome) runs against the test run's RabbitMQ
//! (weir_tests::rabbitmq, 127.0.0.1:5673) and against a fresh Weir, and the two outcomes must be
//! equal. The only exceptions are the rows of `KNOWN_DIFFERENCES`, each a documented difference
//! (docs/amqp-compat.md) with its reason; a row that no longer differs fails the test too, so the
//! table can only be honest.
//!
//! `WEIR_AMQP_TARGET=rabbitmq` aims the "Weir" side at RabbitMQ as well: a self-check that
//! every scenario is deterministic (used while the broker side did not speak AMQP yet).

use anyhow::{ensure, Result};
use serde_json::Value;
use weir_tests::rabbitmq::{self, AmqpTarget};
use weir_tests::{python_with_timeout, summary, BrokerOptions};

/// Differences from RabbitMQ 3.10 that Weir keeps on purpose: (scenario, JSON pointer into the
/// outcome; a difference anywhere below it is covered, reason). Keep it short; every row must
/// also be in docs/amqp-compat.md.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "priorities",
        "/ttl/expired_head",
        "an expired message at the head of a priority queue is never delivered; RabbitMQ 3.10 \
         arms no expiry timer for a message that becomes the head of a non-empty queue, and \
         delivers it",
    ),
    (
        "direct_reply_to",
        "/made_up_name",
        "a reply name the broker never issued is dropped; RabbitMQ 3.10 fails with 541",
    ),
    (
        "direct_reply_to",
        "/passive_made_up_name",
        "a reply name the broker never issued is 404; RabbitMQ 3.10 fails with 541",
    ),
    (
        "transactions",
        "/flow_off",
        "channel.flow is answered (flow-ok) and never pauses publishers",
    ),
    (
        "handshake",
        "/channel_above_max",
        "Weir enforces the channel-max the client negotiated (504); RabbitMQ only its own",
    ),
    (
        "raw_errors",
        "/heartbeat_on_channel",
        "a heartbeat on a channel other than 0 is 501 FRAME_ERROR (spec 4.2.7); RabbitMQ 505",
    ),
    (
        "raw_errors",
        "/body_longer_than_declared",
        "Weir sees the overlong body frame itself (501); RabbitMQ only the next frame (505)",
    ),
    (
        "stream",
        "/refused/bad_offset",
        "an x-stream-offset that is no offset, time or interval is 406 on the channel; RabbitMQ \
         3.10 fails with 541 on the connection",
    ),
    (
        "stream",
        "/refused/recover",
        "basic.recover of a stream's deliveries is 540 NOT_IMPLEMENTED, as nack and reject; \
         RabbitMQ 3.10 fails with 541",
    ),
    (
        "raw_errors",
        "/unknown_class",
        "an unknown method class is closed with 540; RabbitMQ drops the socket",
    ),
];

/// Gaps, not choices: features of RabbitMQ 3.10 that Weir does not implement yet (docs/
/// amqp-compat.md, "Not done yet"). Same shape and same rule as `KNOWN_DIFFERENCES`: a row that
/// stops differing fails the test, so this list can only shrink honestly.
const NOT_IMPLEMENTED_YET: &[(&str, &str, &str)] = &[];

/// A scenario prints its outcome within this (each wait inside has a 10 s deadline).
const SCENARIO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn run_scenario(scenario: &str, url: &str) -> Result<Value> {
    let script = format!("amqp_diff/{scenario}.py");
    summary(&python_with_timeout(
        &script,
        &["--url", url],
        SCENARIO_TIMEOUT,
    )?)
}

fn differential(scenario: &str) -> Result<()> {
    let reference = rabbitmq::ensure_running()?;
    let expected = run_scenario(scenario, reference.url())?;
    let self_check = rabbitmq::aims_at_rabbitmq();
    let target = AmqpTarget::start(BrokerOptions::default())?;
    let actual = run_scenario(scenario, &target.url())?;
    let mut differences = Vec::new();
    diff("", &expected, &actual, &mut differences);
    let known: Vec<_> = KNOWN_DIFFERENCES
        .iter()
        .chain(NOT_IMPLEMENTED_YET)
        .filter(|(name, _, _)| *name == scenario)
        .collect();
    let unexplained: Vec<_> = differences
        .iter()
        .filter(|difference| !known.iter().any(|(_, path, _)| covers(path, &difference.0)))
        .collect();
    let stale: Vec<_> = known
        .iter()
        .filter(|(_, path, _)| !differences.iter().any(|d| covers(path, &d.0)))
        .collect();
    ensure!(
        unexplained.is_empty(),
        "{scenario}: Weir differs from RabbitMQ at {} place(s) (fix, or document in \
         docs/amqp-compat.md and list in KNOWN_DIFFERENCES):\n{}\nRabbitMQ: {expected}\nWeir:     {actual}",
        unexplained.len(),
        render(&unexplained)
    );
    ensure!(
        self_check || stale.is_empty(),
        "{scenario}: known differences that no longer differ (remove them here and in \
         docs/amqp-compat.md): {stale:?}"
    );
    Ok(())
}

/// Whether a known difference at `known` covers a difference at `path` (same or below it).
fn covers(known: &str, path: &str) -> bool {
    path == known || path.starts_with(&format!("{known}/"))
}

/// Every place where two outcomes differ: (JSON pointer, RabbitMQ's value, Weir's value).
/// Objects with the same keys and arrays of the same length are compared member by member;
/// anything else that differs is one difference (a close where RabbitMQ answered is one line).
fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<(String, Value, Value)>) {
    match (expected, actual) {
        (Value::Object(left), Value::Object(right))
            if left.len() == right.len() && left.keys().all(|key| right.contains_key(key)) =>
        {
            for (key, left) in left {
                let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                diff(&child, left, &right[key], out);
            }
        }
        (Value::Array(left), Value::Array(right)) if left.len() == right.len() => {
            for (index, (left, right)) in left.iter().zip(right).enumerate() {
                diff(&format!("{path}/{index}"), left, right, out);
            }
        }
        _ if expected != actual => out.push((path.to_string(), expected.clone(), actual.clone())),
        _ => {}
    }
}

fn render(differences: &[&(String, Value, Value)]) -> String {
    differences
        .iter()
        .map(|(path, expected, actual)| format!("  {path}: RabbitMQ {expected}, Weir {actual}"))
        .collect::<Vec<_>>()
        .join("\n")
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        /// Every scenario with a test, for the check that no scenario file is left untested.
        const SCENARIOS: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            fn $name() -> Result<()> {
                differential(stringify!($name))
            }
        )*
    };
}

scenarios!(
    declare_errors,
    redelivery,
    prefetch,
    global_qos,
    nack_reject,
    dead_letter,
    ttl,
    max_length,
    mandatory,
    get_purge_delete,
    handshake,
    topic,
    fanout_headers,
    exchange_bindings,
    consumers,
    confirms,
    properties,
    queue_arguments,
    raw_errors,
    transactions,
    delivery_limit,
    delayed_retry,
    direct_reply_to,
    priorities,
    stream,
);

#[test]
fn every_scenario_file_has_a_test() -> Result<()> {
    let directory = weir_tests::client_path("amqp_diff");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&directory)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        // common.py and raw.py are helpers, not scenarios.
        if let Some(stem) = name.strip_suffix(".py") {
            if stem != "common" && stem != "raw" {
                files.push(stem.to_string());
            }
        }
    }
    files.sort();
    let mut listed: Vec<String> = SCENARIOS.iter().map(ToString::to_string).collect();
    listed.sort();
    ensure!(
        files == listed,
        "scenario files {files:?} != tests {listed:?}"
    );
    Ok(())
}

#[test]
fn diff_finds_every_difference_and_known_rows_cover_subtrees() {
    let expected: Value = serde_json::json!({
        "a": {"code": 404, "text": "NOT_FOUND"}, "b": [1, 2], "c": "ok", "e": {"x": 1}, "f": [3]
    });
    let actual: Value = serde_json::json!({
        "a": {"code": 406, "text": "NOT_FOUND"}, "b": [1], "c": "ok", "e": {"y": 1}, "f": [4]
    });
    let mut differences = Vec::new();
    diff("", &expected, &actual, &mut differences);
    let paths: Vec<&str> = differences.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(paths, ["/a/code", "/b", "/e", "/f/0"]);
    let mut none = Vec::new();
    diff("", &expected, &expected.clone(), &mut none);
    assert!(none.is_empty());
    assert!(covers("/a", "/a/code"));
    assert!(covers("/a/code", "/a/code"));
    assert!(!covers("/a", "/ab"));
}

#[test]
fn rabbitmq_node_is_shared_by_parallel_callers() -> Result<()> {
    // Four callers at once, as parallel tests and test binaries are: one node, one URL, and it
    // answers the AMQP protocol header (not merely a listening port).
    let urls = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..4)
            .map(|_| scope.spawn(rabbitmq::ensure_running))
            .collect();
        callers
            .into_iter()
            .map(|caller| match caller.join() {
                Ok(node) => node.map(|node| node.url().to_string()),
                Err(_) => Err(anyhow::anyhow!("a caller panicked")),
            })
            .collect::<Result<Vec<_>>>()
    })?;
    ensure!(urls.iter().all(|url| *url == urls[0]), "{urls:?}");
    if std::env::var_os("WEIR_RABBITMQ_URL").is_none() {
        ensure!(rabbitmq::speaks_amqp(rabbitmq::rabbitmq_port()?));
    }
    Ok(())
}
