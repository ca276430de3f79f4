//! What survives a broker restart: committed group offsets (a consumer continues exactly after
//! them), the records, and the log end offsets (new appends continue after the old ones); and what
//! survives `kill -9` with `flush.messages=1`: every acknowledged record.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use serde_json::Value;
use weir_tests::{python, summary, Broker, BrokerOptions};

/// (partition, offset, n) triples from a summary field.
fn records(summary: &Value, field: &str) -> Result<Vec<(i64, i64, i64)>> {
    summary[field]
        .as_array()
        .with_context(|| format!("{field} in {summary}"))?
        .iter()
        .map(|r| {
            Ok((
                r[0].as_i64().context("p")?,
                r[1].as_i64().context("o")?,
                r[2].as_i64().context("n")?,
            ))
        })
        .collect()
}

fn produce(
    broker: &Broker,
    topic: &str,
    first: usize,
    count: usize,
) -> Result<Vec<(i64, i64, i64)>> {
    let output = python(
        "offsets_resume.py",
        &[
            "--bootstrap",
            &broker.bootstrap(),
            "produce",
            "--topic",
            topic,
            "--first",
            &first.to_string(),
            "--count",
            &count.to_string(),
        ],
    )?;
    records(&summary(&output)?, "acknowledged")
}

/// `phase` = "consume" (as group `group`, committing) or "read" (no group, from the beginning).
fn consume(broker: &Broker, phase: &str, topic: &str, group: &str, count: usize) -> Result<Value> {
    let output = python(
        "offsets_resume.py",
        &[
            "--bootstrap",
            &broker.bootstrap(),
            phase,
            "--topic",
            topic,
            "--group",
            group,
            "--count",
            &count.to_string(),
        ],
    )?;
    summary(&output)
}

fn last_offsets(records: &[(i64, i64, i64)]) -> BTreeMap<i64, i64> {
    let mut last = BTreeMap::new();
    for &(partition, offset, _) in records {
        let entry = last.entry(partition).or_insert(offset);
        *entry = (*entry).max(offset);
    }
    last
}

#[test]
fn committed_offsets_resume_exactly_after_a_restart() -> Result<()> {
    let mut broker = Broker::start(BrokerOptions::default().set("num.partitions", "3"))?;
    let before = produce(&broker, "resume", 0, 1000)?;
    let first = consume(&broker, "consume", "resume", "resume-group", 400)?;
    let first_records = records(&first, "consumed")?;
    assert_eq!(first_records.len(), 400);

    broker.restart()?;

    // The log survived and its end offsets too: new appends continue after the old ones.
    let after = produce(&broker, "resume", 1000, 200)?;
    let end_before = last_offsets(&before);
    for &(partition, offset, n) in &after {
        let old_end = end_before.get(&partition).copied().unwrap_or(-1);
        assert!(offset > old_end, "record {n} appended at {partition}/{offset}, at or below the pre-restart end {old_end}");
    }

    let second = consume(&broker, "consume", "resume", "resume-group", 800)?;
    let second_records = records(&second, "consumed")?;

    // OffsetFetch after the restart returns exactly what was committed before it.
    let committed_before = second["committed_before"]
        .as_object()
        .context("committed_before")?;
    let consumed_last = last_offsets(&first_records);
    for (partition, offset) in committed_before {
        let partition: i64 = partition.parse()?;
        let offset = offset.as_i64().context("offset")?;
        match consumed_last.get(&partition) {
            Some(last) => assert_eq!(
                offset,
                last + 1,
                "committed offset of partition {partition} after restart"
            ),
            None => assert!(
                offset < 0,
                "partition {partition} had no commit, OffsetFetch says {offset}"
            ),
        }
    }
    // The consumer continued exactly after the commits: no record twice, none lost.
    let mut first_in_partition: BTreeMap<i64, i64> = BTreeMap::new();
    for &(partition, offset, _) in &second_records {
        first_in_partition.entry(partition).or_insert(offset);
    }
    for (partition, offset) in &first_in_partition {
        let expected = consumed_last
            .get(partition)
            .map(|last| last + 1)
            .unwrap_or(0);
        assert_eq!(
            *offset, expected,
            "partition {partition}: first record after restart"
        );
    }
    let consumed: Vec<_> = first_records
        .iter()
        .chain(&second_records)
        .copied()
        .collect();
    let consumed_set: BTreeSet<_> = consumed.iter().copied().collect();
    assert_eq!(
        consumed_set.len(),
        consumed.len(),
        "a record was consumed twice"
    );
    let produced: BTreeSet<_> = before.iter().chain(&after).copied().collect();
    assert_eq!(
        consumed_set, produced,
        "consumed records (partition, offset, n) == acknowledged ones"
    );
    Ok(())
}

#[test]
fn acknowledged_records_survive_kill_9_with_flush_messages_1() -> Result<()> {
    let mut broker = Broker::start(
        BrokerOptions::default()
            .set("num.partitions", "3")
            .set("flush.messages", "1"),
    )?;
    let acknowledged = produce(&broker, "durable", 0, 2000)?;
    broker.kill9()?;
    broker.start_again()?;
    let read = consume(&broker, "read", "durable", "", 2000)?;
    let consumed: BTreeSet<_> = records(&read, "consumed")?.into_iter().collect();
    let acknowledged: BTreeSet<_> = acknowledged.into_iter().collect();
    assert_eq!(
        consumed, acknowledged,
        "every acknowledged record, at its offset, after kill -9"
    );
    Ok(())
}

/// Bytes the shards scanned at the last start, from their "logs recovered" lines.
fn scanned_bytes(broker: &Broker) -> Result<u64> {
    let log = broker.log_since_launch();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("logs recovered"))
        .collect();
    anyhow::ensure!(
        lines.len() == broker.shards(),
        "one line per shard: {lines:?}"
    );
    lines
        .iter()
        .map(|line| {
            let value = line
                .split("scanned_bytes=")
                .nth(1)
                .context("scanned_bytes=")?;
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            Ok(digits.parse::<u64>()?)
        })
        .sum()
}

/// Issue 14: after a crash only the tail past the last checkpoint is scanned. With a progress
/// checkpoint every 1 MiB written, the checkpoint of one active segment follows 8 MB of writes to
/// within an interval; after kill -9 the shards scan only the file past it (without progress
/// checkpoints nothing of the active segment was covered), and a clean restart scans nothing;
/// every acknowledged record is read back both times.
#[test]
fn after_kill_9_the_start_scans_only_past_the_last_progress_checkpoint() -> Result<()> {
    let mut broker = Broker::start(
        BrokerOptions::default()
            .set("num.partitions", "1")
            .set("weir.log.checkpoint.interval.bytes", "1048576"),
    )?;
    let line = format!("{}\n", "x".repeat(999));
    let input = line.repeat(8000);
    let topic = "progress";
    let produced = weir_tests::kcat(
        &[
            "-b",
            &broker.bootstrap(),
            "-P",
            "-t",
            topic,
            "-X",
            "acks=all",
        ],
        input.as_bytes(),
    )?;
    anyhow::ensure!(produced.status.success(), "kcat -P: {produced:?}");
    // The checkpoints run behind the writes: wait (at most 20 s) until one covers all but the
    // last interval (over 8,000,000 bytes of batches were written), as it must once they stop.
    let dir = broker.data_dir().join("topics").join(format!("{topic}-0"));
    let covered = || -> u64 {
        let bytes = std::fs::read(dir.join("checkpoint")).unwrap_or_default();
        bytes
            .get(20..28)
            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()))
    };
    let wanted = 8_000_000 - (1 << 20);
    for _ in 0..200 {
        if covered() >= wanted {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let covered = covered();
    assert!(covered >= wanted, "covered {covered}");
    // The file may be longer than its data (space reserved ahead): the scan reads that too.
    let file_bytes = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    broker.kill9()?;
    broker.start_again()?;
    let scanned = scanned_bytes(&broker)?;
    assert!(
        scanned <= file_bytes - covered,
        "scanned {scanned} of {file_bytes} bytes, {covered} covered"
    );
    let count = |broker: &Broker| -> Result<usize> {
        let args = ["-b", &broker.bootstrap(), "-C", "-t", topic, "-e", "-q"];
        let read = weir_tests::kcat(&args, b"")?;
        Ok(read
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| l.len() == 999)
            .count())
    };
    assert_eq!(
        count(&broker)?,
        8000,
        "every acknowledged record after kill -9"
    );
    broker.restart()?;
    assert_eq!(scanned_bytes(&broker)?, 0, "a clean restart scans nothing");
    assert_eq!(count(&broker)?, 8000);
    Ok(())
}
