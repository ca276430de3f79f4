//! A 1,000-partition topic: created with the AdminClient, every partition led by a listed broker
//! (and every shard leading some), 5 records produced to each and all consumed back
//! (tests/clients/many_partitions.py).

use std::time::Duration;

use anyhow::Result;
use weir_tests::{python_with_timeout, summary, Broker, BrokerOptions};

#[test]
fn thousand_partitions_create_produce_consume() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default())?;
    let result = summary(&python_with_timeout(
        "many_partitions.py",
        &[
            "--bootstrap",
            &broker.bootstrap(),
            "--partitions",
            "1000",
            "--per-partition",
            "5",
        ],
        Duration::from_secs(300),
    )?)?;
    assert_eq!(result["partitions"], 1000, "{result}");
    assert_eq!(result["produced"], 5000, "{result}");
    assert_eq!(result["consumed"], 5000, "{result}");
    let shards: Vec<String> = (0..broker.shards()).map(|s| s.to_string()).collect();
    let leaders = result["leaders_by_broker"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut leading: Vec<String> = leaders.keys().cloned().collect();
    leading.sort();
    assert_eq!(
        leading, shards,
        "partitions spread over every shard: {result}"
    );
    let total: u64 = leaders.values().filter_map(|v| v.as_u64()).sum();
    assert_eq!(total, 1000, "{result}");
    Ok(())
}
