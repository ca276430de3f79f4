//! kafka-python 3.0.12, the classic example with no configuration: a KafkaProducer sends JSON to
//! `my_topic`, a KafkaConsumer of `my_group` from earliest reads all of it; a later consumer of the
//! group resumes after the committed offsets (tests/clients/kafka_python_classic.py).

use anyhow::Result;
use weir_tests::{python, summary, Broker, BrokerOptions};

#[test]
fn classic_producer_and_group_consumer_with_no_configuration() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default())?;
    let result = summary(&python(
        "kafka_python_classic.py",
        &["--bootstrap", &broker.bootstrap(), "--count", "1000"],
    )?)?;
    assert_eq!(result["produced"], 1050, "{result}");
    assert_eq!(result["consumed_first"], 1000, "{result}");
    assert_eq!(result["consumed_after_commit"], 50, "{result}");
    Ok(())
}
