//! confluent-kafka 2.16.1 (librdkafka 2.16.0): an idempotent producer writes 100,000 records and a
//! group consumer reads every one back at its acknowledged offset; each compression codec round
//! trips (tests/clients/confluent_roundtrip.py).

use std::time::Duration;

use anyhow::Result;
use weir_tests::{python_with_timeout, summary, Broker, BrokerOptions};

fn roundtrip(topic: &str, count: usize, compression: &str) -> Result<serde_json::Value> {
    let broker = Broker::start(BrokerOptions::default().set("num.partitions", "4"))?;
    let count = count.to_string();
    let output = python_with_timeout(
        "confluent_roundtrip.py",
        &[
            "--bootstrap",
            &broker.bootstrap(),
            "--topic",
            topic,
            "--count",
            &count,
            "--compression",
            compression,
            "--idempotence",
        ],
        Duration::from_secs(300),
    )?;
    let result = summary(&output)?;
    assert_eq!(result["produced"].as_u64(), count.parse().ok(), "{result}");
    assert_eq!(result["consumed"].as_u64(), count.parse().ok(), "{result}");
    assert_eq!(result["compression"], compression, "{result}");
    let partitions = result["partitions"].as_object().map(|p| p.len());
    assert_eq!(
        partitions,
        Some(4),
        "64 keys over num.partitions=4: {result}"
    );
    Ok(result)
}

#[test]
fn idempotent_producer_100k_records_round_trip() -> Result<()> {
    let result = roundtrip("idempotent", 100_000, "none")?;
    eprintln!("idempotent 100k: {result}");
    Ok(())
}

#[test]
fn gzip_round_trips() -> Result<()> {
    roundtrip("codec-gzip", 20_000, "gzip").map(drop)
}

#[test]
fn snappy_round_trips() -> Result<()> {
    roundtrip("codec-snappy", 20_000, "snappy").map(drop)
}

#[test]
fn lz4_round_trips() -> Result<()> {
    roundtrip("codec-lz4", 20_000, "lz4").map(drop)
}

#[test]
fn zstd_round_trips() -> Result<()> {
    roundtrip("codec-zstd", 20_000, "zstd").map(drop)
}
