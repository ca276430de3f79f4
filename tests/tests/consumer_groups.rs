//! Consumer groups with real clients: two groups (`email-service`, `analytics-service`, kafka-python)
//! each receive every `user-signups` event; two confluent-kafka members of one group split 6
//! partitions, then one leaves and the other takes over after the committed offsets.

use anyhow::Result;
use weir_tests::{python, summary, Broker, BrokerOptions};

#[test]
fn two_groups_each_receive_every_user_signup() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default().set("num.partitions", "3"))?;
    let result = summary(&python(
        "groups_fanout.py",
        &["--bootstrap", &broker.bootstrap(), "--count", "1000"],
    )?)?;
    assert_eq!(result["produced"], 1000, "{result}");
    assert_eq!(result["email_service"], 1000, "{result}");
    assert_eq!(result["analytics_service"], 1000, "{result}");
    assert_eq!(
        result["partitions"], 3,
        "events spread over num.partitions=3: {result}"
    );
    Ok(())
}

#[test]
fn two_members_split_six_partitions_then_one_takes_over() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default())?;
    let per_partition = 50;
    let result = summary(&python(
        "group_split.py",
        &[
            "--bootstrap",
            &broker.bootstrap(),
            "--per-partition",
            &per_partition.to_string(),
        ],
    )?)?;
    let share_a = result["share_a"].as_array().map(Vec::len).unwrap_or(0);
    let share_b = result["share_b"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        share_a > 0 && share_b > 0 && share_a + share_b == 6,
        "{result}"
    );
    let phase_one_a = result["phase_one_a"].as_u64().unwrap_or(0);
    let phase_one_b = result["phase_one_b"].as_u64().unwrap_or(0);
    assert_eq!(phase_one_a, share_a as u64 * per_partition, "{result}");
    assert_eq!(phase_one_b, share_b as u64 * per_partition, "{result}");
    assert_eq!(result["phase_two_a"], 6 * per_partition, "{result}");
    Ok(())
}
