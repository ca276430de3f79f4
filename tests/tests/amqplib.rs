//! amqplib 2.3.1 (Node), the second-language AMQP client: publish 1,000 persistent messages on a
//! confirm channel, consume them with manual acks and prefetch 10, in order, nothing left over
//! (tests/clients/amqplib_roundtrip.js). `WEIR_AMQP_TARGET=rabbitmq` aims it at RabbitMQ.

use anyhow::Result;
use weir_tests::rabbitmq::AmqpTarget;
use weir_tests::{node, summary, BrokerOptions};

#[test]
fn amqplib_publishes_with_confirms_and_consumes_with_acks() -> Result<()> {
    let target = AmqpTarget::start(BrokerOptions::default())?;
    let result = summary(&node(
        "amqplib_roundtrip.js",
        &["--url", &target.url(), "--count", "1000"],
    )?)?;
    assert_eq!(result["published"], 1000, "{result}");
    assert_eq!(result["consumed"], 1000, "{result}");
    assert_eq!(result["redelivered"], 0, "{result}");
    Ok(())
}
