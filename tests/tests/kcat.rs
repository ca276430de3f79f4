//! kcat 1.7.1 (librdkafka 2.0.2, the old-client check) against the real broker: metadata lists
//! every shard as a broker with valid partition leaders; lines produced with `-P` come back from
//! `-C -e` exactly, in order, with their keys.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use weir_tests::{kcat, stdout_of, Broker, BrokerOptions};

/// Everything in `topic` from the beginning to the current end, as kcat prints it (`extra` picks
/// partitions and the format).
fn consume_all(bootstrap: &str, topic: &str, extra: &[&str]) -> Result<String> {
    let mut args = vec![
        "-b",
        bootstrap,
        "-C",
        "-e",
        "-q",
        "-t",
        topic,
        "-o",
        "beginning",
    ];
    args.extend_from_slice(extra);
    stdout_of(&kcat(&args, b"")?)
}

#[test]
fn metadata_lists_every_shard_as_a_broker_with_valid_leaders() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default().set("num.partitions", "4"))?;
    let bootstrap = broker.bootstrap();
    // Producing to a new topic auto-creates it with num.partitions.
    let produced = kcat(&["-b", &bootstrap, "-P", "-t", "meta-topic"], b"one\n")?;
    stdout_of(&produced)?;

    let output = kcat(&["-b", &bootstrap, "-L", "-J", "-t", "meta-topic"], b"")?;
    let metadata: Value = serde_json::from_str(&stdout_of(&output)?).context("kcat -L -J")?;
    let brokers: BTreeMap<i64, String> = metadata["brokers"]
        .as_array()
        .context("brokers")?
        .iter()
        .map(|b| {
            (
                b["id"].as_i64().unwrap_or(-1),
                b["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected: BTreeMap<i64, String> = broker
        .shard_ports()
        .iter()
        .enumerate()
        .map(|(shard, port)| (shard as i64, format!("127.0.0.1:{port}")))
        .collect();
    assert_eq!(
        brokers, expected,
        "one broker per shard, on port P+1+shard\n{metadata:#}"
    );
    assert!(
        brokers.len() >= 2,
        "this suite expects at least 2 shards (cores)"
    );

    let topics = metadata["topics"].as_array().context("topics")?;
    assert_eq!(topics.len(), 1, "{metadata:#}");
    assert_eq!(topics[0]["topic"], "meta-topic");
    assert!(topics[0].get("error").is_none(), "{metadata:#}");
    let partitions = topics[0]["partitions"].as_array().context("partitions")?;
    let ids: Vec<i64> = partitions
        .iter()
        .map(|p| p["partition"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(
        ids.iter().copied().collect::<BTreeSet<_>>(),
        (0..4).collect(),
        "{metadata:#}"
    );
    for partition in partitions {
        let leader = partition["leader"].as_i64().unwrap_or(-1);
        assert!(
            brokers.contains_key(&leader),
            "leader {leader} is not a listed broker: {partition}"
        );
    }
    Ok(())
}

#[test]
fn lines_produced_to_one_partition_come_back_exactly_in_order() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default())?;
    let bootstrap = broker.bootstrap();
    let count = 2000;
    let lines: Vec<String> = (0..count)
        .map(|n| format!("line {n} of the kcat test: {}", "z".repeat(n % 97)))
        .collect();
    let input = lines
        .iter()
        .map(|line| format!("{line}\n"))
        .collect::<String>();
    let produced = kcat(
        &["-b", &bootstrap, "-P", "-t", "lines", "-p", "0"],
        input.as_bytes(),
    )?;
    stdout_of(&produced)?;

    let consumed: Vec<(u64, String)> =
        consume_all(&bootstrap, "lines", &["-p", "0", "-f", "%o\t%s\n"])?
            .lines()
            .map(|line| {
                let (offset, value) = line.split_once('\t').context("offset\\tvalue")?;
                Ok((offset.parse()?, value.to_string()))
            })
            .collect::<Result<_>>()?;
    let expected: Vec<(u64, String)> = lines
        .into_iter()
        .enumerate()
        .map(|(n, line)| (n as u64, line))
        .collect();
    assert_eq!(consumed.len(), expected.len());
    assert_eq!(consumed, expected, "offsets 0..N and every line, in order");
    Ok(())
}

#[test]
fn keyed_lines_keep_their_keys_and_order_per_partition() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default().set("num.partitions", "4"))?;
    let bootstrap = broker.bootstrap();
    let count = 3000;
    let input: String = (0..count)
        .map(|n| format!("user-{}:event {n}\n", n % 17))
        .collect();
    let produced = kcat(
        &["-b", &bootstrap, "-P", "-t", "keyed", "-K", ":"],
        input.as_bytes(),
    )?;
    stdout_of(&produced)?;

    let mut records = Vec::new();
    for line in consume_all(&bootstrap, "keyed", &["-f", "%p\t%o\t%k\t%s\n"])?.lines() {
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        ensure!(fields.len() == 4, "bad kcat line {line:?}");
        let n: usize = fields[3].strip_prefix("event ").context("value")?.parse()?;
        records.push((
            fields[0].parse::<i32>()?,
            fields[1].parse::<i64>()?,
            fields[2].to_string(),
            n,
        ));
    }
    assert_eq!(records.len(), count, "every record once");
    let mut seen: Vec<usize> = records.iter().map(|r| r.3).collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..count).collect::<Vec<_>>(),
        "every event once, none other"
    );
    for (partition, offset, key, n) in &records {
        assert_eq!(
            key,
            &format!("user-{}", n % 17),
            "key of event {n} at {partition}/{offset}"
        );
    }
    let mut per_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, i32> = BTreeMap::new();
    for (partition, offset, key, n) in &records {
        per_partition
            .entry(*partition)
            .or_default()
            .push((*offset, *n));
        let first = *partition_of_key.entry(key.clone()).or_insert(*partition);
        assert_eq!(first, *partition, "key {key} spread over partitions");
    }
    for (partition, entries) in &per_partition {
        let offsets: Vec<i64> = entries.iter().map(|e| e.0).collect();
        assert_eq!(
            offsets,
            (0..entries.len() as i64).collect::<Vec<_>>(),
            "partition {partition}: offsets 0..n in order"
        );
        assert!(
            entries.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {partition}: production order"
        );
    }
    assert!(
        per_partition.len() > 1,
        "17 keys over 4 partitions used only {:?}",
        per_partition.keys()
    );
    Ok(())
}

/// Consumers at the tail are served from memory: a partition alone on its shard keeps the shard's
/// whole tail-cache budget (256 MiB by default), so 8 MiB just produced comes back without a
/// disk read. With the budget set to 1 MiB the same consume reads the disk: the setting bites.
#[test]
fn recent_records_are_served_from_the_tail_cache() -> Result<()> {
    let value = "v".repeat(1000);
    let input: String = (0..8000).map(|n| format!("{n:06} {value}\n")).collect();
    let mut read_from_disk = Vec::new();
    for budget in [None, Some("1048576")] {
        let mut options = BrokerOptions::default();
        if let Some(budget) = budget {
            options = options.set("weir.tail.cache.shard.bytes", budget);
        }
        let broker = Broker::start(options)?;
        let bootstrap = broker.bootstrap();
        let produced = kcat(
            &["-b", &bootstrap, "-P", "-t", "tail", "-p", "0"],
            input.as_bytes(),
        )?;
        stdout_of(&produced)?;
        let before = broker.storage_read_bytes()?;
        assert_eq!(
            consume_all(&bootstrap, "tail", &["-p", "0"])?
                .lines()
                .count(),
            8000,
            "every record read"
        );
        read_from_disk.push(broker.storage_read_bytes()? - before);
    }
    assert!(
        read_from_disk[0] < 1 << 20,
        "default budget: {} bytes read from disk for 8 MB just produced",
        read_from_disk[0]
    );
    assert!(
        read_from_disk[1] >= 4 << 20,
        "1 MiB budget: only {} bytes read from disk",
        read_from_disk[1]
    );
    Ok(())
}
