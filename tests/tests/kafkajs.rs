//! kafkajs 2.2.4 (no flexible versions) produces and consumes with a group
//! (tests/clients/kafkajs_roundtrip.js).

use anyhow::Result;
use weir_tests::{node, summary, Broker, BrokerOptions};

#[test]
fn kafkajs_produces_and_consumes_every_record() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default().set("num.partitions", "3"))?;
    let result = summary(&node(
        "kafkajs_roundtrip.js",
        &[
            "--bootstrap",
            &broker.bootstrap(),
            "--count",
            "1000",
            "--partitions",
            "3",
        ],
    )?)?;
    assert_eq!(result["produced"], 1000, "{result}");
    assert_eq!(result["consumed"], 1000, "{result}");
    Ok(())
}
