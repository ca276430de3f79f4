//! `weir-test-rabbitmq start|stop|url`: the test run's RabbitMQ node (see weir_tests::rabbitmq),
//! for tests/run.sh, which starts it before `cargo test` and stops it after, and for developers.

use anyhow::{bail, Result};
use weir_tests::rabbitmq;

fn main() -> Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "start" | "url" => {
            let node = rabbitmq::ensure_running()?;
            println!("{}", node.url());
        }
        "stop" => rabbitmq::stop()?,
        _ => bail!("usage: weir-test-rabbitmq start|stop|url"),
    }
    Ok(())
}
