//! Share groups' group configs (Kafka 4.2's `share.*` group configs, resource type GROUP) with
//! confluent-kafka's AdminClient and ShareConsumer against the real broker: described with the
//! broker's values before any is set (for a group that does not exist), set and deleted with
//! incremental_alter_configs, invalid values refused with INVALID_CONFIG, applied per group (a
//! group with a 1 s lock gets a crashed member's records back at once while another group on the
//! same topic keeps the broker's 30 s; `share.auto.offset.reset=earliest` on a group while the
//! broker's is latest), and kept across a SIGKILL. Clients: `clients/group_configs.py`, and
//! `clients/share_groups.py`'s hold / take / produce scenarios.

use std::collections::BTreeSet;

use anyhow::Result;
use serde_json::{json, Value};
use weir_tests::{offset_pairs, python, summary, Broker, BrokerOptions};

/// Kafka's INVALID_CONFIG.
const INVALID_CONFIG: i64 = 40;
/// DescribeConfigs' config sources: DEFAULT_CONFIG, GROUP_CONFIG.
const DEFAULT: i64 = 5;
const GROUP: i64 = 8;

fn admin(broker: &Broker, scenario: &str, extra: &[&str]) -> Result<Value> {
    let bootstrap = broker.bootstrap();
    let mut args = vec!["--bootstrap", &bootstrap, "--scenario", scenario];
    args.extend_from_slice(extra);
    summary(&python("group_configs.py", &args)?)
}

fn share(broker: &Broker, scenario: &str, group: &str, extra: &[&str]) -> Result<Value> {
    let bootstrap = broker.bootstrap();
    let mut args = vec![
        "--bootstrap",
        &bootstrap,
        "--scenario",
        scenario,
        "--topic",
        "jobs",
        "--group",
        group,
    ];
    args.extend_from_slice(extra);
    summary(&python("share_groups.py", &args)?)
}

/// (partition, offset) → delivery count of a `take`.
fn taken(value: &Value) -> Vec<((i64, i64), i64)> {
    value["records"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some(((r[0].as_i64()?, r[1].as_i64()?), r[2].as_i64()?)))
        .collect()
}

#[test]
fn group_configs_are_validated_applied_per_group_and_survive_sigkill() -> Result<()> {
    // The broker's bounds let a group lock records for as little as 1 s (Kafka's default
    // minimum is 15 s); its own lock stays Kafka's 30 s and its auto offset reset `latest`.
    let options = BrokerOptions::default().set("group.share.min.record.lock.duration.ms", "1000");
    let mut broker = Broker::start(options)?;
    let fast = described_altered_and_refused(&broker)?;
    applied_per_group(&broker)?;
    kept_across_sigkill_and_deleted(&mut broker, &fast)
}

/// A group nobody has used, at the broker's values; two groups set; refusals store nothing.
/// Answers group `fast` as described after its change.
fn described_altered_and_refused(broker: &Broker) -> Result<Value> {
    let fresh = admin(broker, "describe", &["--group", "fresh"])?;
    let configs = &fresh["groups"]["fresh"];
    for (name, value) in [
        ("share.record.lock.duration.ms", "30000"),
        ("share.auto.offset.reset", "latest"),
        ("share.session.timeout.ms", "45000"),
        ("share.heartbeat.interval.ms", "5000"),
        ("share.isolation.level", "read_uncommitted"),
    ] {
        assert_eq!(configs[name], json!([value, DEFAULT]), "{name}: {fresh}");
    }
    let mut sets = vec![
        "fast:share.record.lock.duration.ms=1000",
        "fast:share.auto.offset.reset=earliest",
        "slow:share.auto.offset.reset=earliest",
        "slow:share.isolation.level=read_committed",
    ];
    let refused = [
        ("short", "share.record.lock.duration.ms=999"),
        ("long", "share.record.lock.duration.ms=60001"),
        ("unknown", "share.nonsense=1"),
        ("sideways", "share.auto.offset.reset=sideways"),
        ("text", "share.session.timeout.ms=soon"),
    ];
    let refused_sets: Vec<String> = refused.iter().map(|(g, c)| format!("{g}:{c}")).collect();
    sets.extend(refused_sets.iter().map(String::as_str));
    let args: Vec<&str> = sets.iter().flat_map(|set| ["--set", set]).collect();
    let altered = admin(broker, "alter", &args)?;
    let answers = &altered["answers"];
    assert_eq!(answers["fast"][0], 0, "{altered}");
    assert_eq!(answers["slow"][0], 0, "{altered}");
    for (group, _) in refused {
        assert_eq!(answers[group][0], INVALID_CONFIG, "{group}: {altered}");
    }
    let message = answers["long"][1].as_str().unwrap_or("");
    assert!(
        message.contains("group.share.max.record.lock.duration.ms"),
        "{altered}"
    );
    let set = admin(broker, "describe", &["--group", "fast", "--group", "short"])?;
    let fast = &set["groups"]["fast"];
    assert_eq!(
        fast["share.record.lock.duration.ms"],
        json!(["1000", GROUP]),
        "{set}"
    );
    assert_eq!(
        fast["share.auto.offset.reset"],
        json!(["earliest", GROUP]),
        "{set}"
    );
    assert_eq!(
        fast["share.session.timeout.ms"],
        json!(["45000", DEFAULT]),
        "{set}"
    );
    let short = &set["groups"]["short"]["share.record.lock.duration.ms"];
    assert_eq!(
        short,
        &json!(["30000", DEFAULT]),
        "refused: nothing stored: {set}"
    );
    Ok(fast.clone())
}

/// Auto offset reset and lock duration per group, on one topic.
fn applied_per_group(broker: &Broker) -> Result<()> {
    // Records produced before any member: groups with earliest see them, the broker's latest not.
    share(broker, "produce", "fast", &["--count", "20"])?;
    let late = share(broker, "take", "late", &["--idle", "2"])?;
    assert!(
        taken(&late).is_empty(),
        "latest: nothing produced before: {late}"
    );

    // A member that crashes holding records: with the group's 1 s lock they come back at once.
    let fast_held = offset_pairs(&share(broker, "hold", "fast", &[])?["held"]);
    assert!(!fast_held.is_empty());
    let fast_taken = share(broker, "take", "fast", &["--idle", "3"])?;
    let records = taken(&fast_taken);
    assert_eq!(records.len(), 20, "every record once: {fast_taken}");
    for (key, count) in &records {
        // Held: delivered a second time. (The crashed client may have acquired more than it
        // handed out, so others may be at 2 too.)
        let least = if fast_held.contains(key) { 2 } else { 1 };
        assert!(*count >= least, "{key:?}: {fast_taken}");
    }
    // The same on a group with the broker's 30 s lock: the held records stay locked.
    let slow_held = offset_pairs(&share(broker, "hold", "slow", &[])?["held"]);
    let slow_taken = share(broker, "take", "slow", &["--idle", "3"])?;
    let keys: BTreeSet<(i64, i64)> = taken(&slow_taken).into_iter().map(|(k, _)| k).collect();
    assert!(keys.len() <= 20 - slow_held.len(), "{slow_taken}");
    assert!(
        keys.is_disjoint(&slow_held),
        "locked for 30 s: {slow_taken}"
    );
    Ok(())
}

/// SIGKILL: the configs are durable; a DELETE after the restart gives back the broker's.
fn kept_across_sigkill_and_deleted(broker: &mut Broker, fast: &Value) -> Result<()> {
    broker.kill9()?;
    broker.start_again()?;
    let again = admin(broker, "describe", &["--group", "fast", "--group", "slow"])?;
    assert_eq!(&again["groups"]["fast"], fast, "{again}");
    let slow = &again["groups"]["slow"];
    assert_eq!(
        slow["share.isolation.level"],
        json!(["read_committed", GROUP]),
        "{again}"
    );
    let deletes = [
        "--set",
        "fast:share.record.lock.duration.ms",
        "--set",
        "slow:share.isolation.level",
    ];
    let deleted = admin(broker, "alter", &deletes)?;
    assert_eq!(deleted["answers"]["fast"][0], 0, "{deleted}");
    let after = admin(broker, "describe", &["--group", "fast", "--group", "slow"])?;
    let fast = &after["groups"]["fast"];
    assert_eq!(
        fast["share.record.lock.duration.ms"],
        json!(["30000", DEFAULT]),
        "{after}"
    );
    assert_eq!(
        fast["share.auto.offset.reset"],
        json!(["earliest", GROUP]),
        "{after}"
    );
    let slow = &after["groups"]["slow"];
    assert_eq!(
        slow["share.isolation.level"],
        json!(["read_uncommitted", DEFAULT]),
        "{after}"
    );
    Ok(())
}
