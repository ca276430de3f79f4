//! Share groups (KIP-932) with confluent-kafka's ShareConsumer (librdkafka 2.16's preview share
//! consumer) against the real broker: records split between members and each accepted once,
//! release and redelivery counts, reject, the delivery count limit, a crashed consumer's
//! records coming back when their locks expire, and no accepted record delivered again after a
//! SIGKILL, and pika and a share consumer splitting one AMQP queue. Scenarios are in
//! `clients/share_groups.py`.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::Value;
use weir_tests::{offset_pairs, python, summary, Broker, BrokerOptions};

/// Share partitions start at the log's start (the scenarios produce before they consume), locks
/// last 2 s (the shortest Kafka allows is 1 s), and a record goes out at most 3 times.
fn broker() -> Result<Broker> {
    Broker::start(
        BrokerOptions::default()
            .set("share.auto.offset.reset", "earliest")
            .set("group.share.record.lock.duration.ms", "2000")
            .set("group.share.delivery.count.limit", "3")
            .set("errors.deadletterqueue.topic.name", "dlq.tasks"),
    )
}

fn scenario(broker: &Broker, name: &str, extra: &[&str]) -> Result<Value> {
    let bootstrap = broker.bootstrap();
    let mut args = vec!["--bootstrap", &bootstrap, "--scenario", name];
    args.extend_from_slice(extra);
    summary(&python("share_groups.py", &args)?)
}

#[test]
fn two_share_consumers_split_100000_records_and_accept_each_once() -> Result<()> {
    let broker = broker()?;
    let result = scenario(&broker, "split", &["--count", "100000"])?;
    assert_eq!(result["accepted"], 100_000, "{result}");
    let (a, b) = (result["a"].as_u64(), result["b"].as_u64());
    assert!(
        a.unwrap_or(0) > 0 && b.unwrap_or(0) > 0,
        "both members take work: {result}"
    );
    Ok(())
}

#[test]
fn a_released_record_comes_back_with_delivery_count_2() -> Result<()> {
    let broker = broker()?;
    let result = scenario(&broker, "release", &[])?;
    assert_eq!(result["first_count"], 1, "{result}");
    assert_eq!(result["second_count"], 2, "{result}");
    Ok(())
}

#[test]
fn a_rejected_record_never_returns_and_the_delivery_limit_archives_both_to_the_dlq() -> Result<()> {
    let broker = broker()?;
    let result = scenario(&broker, "reject", &["--idle", "4", "--dlq", "dlq.tasks"])?;
    assert_eq!(result["rejected_deliveries"], 1, "{result}");
    assert_eq!(
        result["released_deliveries"],
        serde_json::json!([3]),
        "released every time, delivered group.share.delivery.count.limit=3 times: {result}"
    );
    let reasons: Vec<&str> = result["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|dead| dead[0].as_str())
        .collect();
    assert_eq!(reasons, ["delivery_limit", "rejected"], "{result}");
    for dead in result["dead_letters"].as_array().into_iter().flatten() {
        assert_eq!(dead[2], "workers", "the group in the headers: {result}");
        let offset = dead[1].as_str().unwrap_or("");
        assert!(
            dead[3].as_str().is_some_and(|v| v.starts_with("0000000")),
            "the record's own value, offset {offset}: {result}"
        );
    }
    Ok(())
}

#[test]
fn a_crashed_consumers_records_reach_another_after_the_lock_duration() -> Result<()> {
    let broker = broker()?;
    scenario(&broker, "produce", &["--count", "100"])?;
    let held = scenario(&broker, "hold", &[])?;
    let held = offset_pairs(&held["held"]);
    assert!(!held.is_empty());
    let taken = scenario(&broker, "take", &["--idle", "5"])?;
    let records = taken["records"].as_array().cloned().unwrap_or_default();
    let all: BTreeSet<(i64, i64)> = records
        .iter()
        .filter_map(|r| Some((r[0].as_i64()?, r[1].as_i64()?)))
        .collect();
    assert_eq!(all.len(), 100, "every record, once: {taken}");
    assert_eq!(records.len(), 100, "no record twice: {taken}");
    for record in &records {
        let key = (
            record[0].as_i64().unwrap_or(-1),
            record[1].as_i64().unwrap_or(-1),
        );
        let expected = if held.contains(&key) { 2 } else { 1 };
        assert_eq!(record[2], expected, "delivery count of {key:?}: {taken}");
    }
    Ok(())
}

#[test]
fn after_sigkill_no_accepted_record_is_delivered_again_and_held_ones_come_back() -> Result<()> {
    let mut broker = broker()?;
    scenario(&broker, "produce", &["--count", "1000"])?;
    let first = scenario(&broker, "accept-some", &["--accept", "300"])?;
    let accepted = offset_pairs(&first["accepted"]);
    assert_eq!(accepted.len(), 300, "{first}");
    broker.kill9()?;
    broker.start_again()?;
    let second = scenario(&broker, "take", &["--idle", "5"])?;
    let records = second["records"].as_array().cloned().unwrap_or_default();
    let taken: BTreeSet<(i64, i64)> = records
        .iter()
        .filter_map(|r| Some((r[0].as_i64()?, r[1].as_i64()?)))
        .collect();
    let again: Vec<_> = accepted.intersection(&taken).collect();
    assert!(
        again.is_empty(),
        "accepted before the kill, delivered again: {again:?}"
    );
    assert_eq!(
        taken.len(),
        700,
        "every other record after the restart: {second}"
    );
    assert_eq!(records.len(), 700, "each once: {second}");
    let held = first["held"].as_u64().unwrap_or(0) as usize;
    let redelivered = records.iter().filter(|r| r[2].as_i64() > Some(1)).count();
    assert!(held > 0, "{first}");
    assert!(
        redelivered >= held,
        "the {held} held at the kill come back counted as delivered before: {redelivered}"
    );
    Ok(())
}

#[test]
fn pika_and_a_share_consumer_on_one_queue_process_each_message_once() -> Result<()> {
    let broker = broker()?;
    let port = broker.amqp_port().to_string();
    let result = scenario(
        &broker,
        "mixed",
        &["--amqp-port", &port, "--topic", "jobs", "--count", "2000"],
    )?;
    let (pika, share) = (result["pika"].as_u64(), result["share"].as_u64());
    assert!(
        pika.unwrap_or(0) > 0 && share.unwrap_or(0) > 0,
        "both take work: {result}"
    );
    assert_eq!(pika.unwrap_or(0) + share.unwrap_or(0), 2000, "{result}");
    assert_eq!(result["left_in_queue"], 0, "{result}");
    Ok(())
}
