//! confluent-kafka AdminClient: CreateTopics (with configs, duplicates, invalid names),
//! DescribeConfigs, IncrementalAlterConfigs, DeleteTopics; then topics and configs as they are
//! after a clean restart (tests/clients/admin.py).

use anyhow::Result;
use weir_tests::{python, summary, Broker, BrokerOptions};

#[test]
fn admin_client_creates_deletes_and_configures_topics_durably() -> Result<()> {
    let mut broker = Broker::start(BrokerOptions::default())?;
    let setup = summary(&python(
        "admin.py",
        &["--bootstrap", &broker.bootstrap(), "setup"],
    )?)?;
    assert_eq!(setup["topics"]["admin-a"], 3, "{setup}");
    assert!(setup["topics"].get("admin-b").is_none(), "{setup}");

    broker.restart()?;

    let verify = summary(&python(
        "admin.py",
        &["--bootstrap", &broker.bootstrap(), "verify"],
    )?)?;
    assert_eq!(verify["topics"]["admin-a"], 3, "{verify}");
    assert!(verify["topics"].get("admin-b").is_none(), "{verify}");
    Ok(())
}
