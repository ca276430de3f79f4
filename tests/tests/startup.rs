//! Start-up against the real binary: what a new user sees when the data dir or a port is wrong,
//! what the log looks like when it is not a terminal, and that no port answers Metadata before
//! every broker it names accepts connections.
//!
//! Runs on the test threads; each case starts its own `weir` process (at most one broker of the
//! harness at a time, see `weir_tests::Broker`), on ports from `weir_tests::free_port_range`.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use weir_engine::batch::{build_batch, BatchSpec, RecordSpec};
use weir_tests::{Broker, BrokerOptions};

#[path = "support/raw_client.rs"]
mod raw_client;
use raw_client::{text, Client};

/// Runs the binary with `args` until it exits (each case here makes it refuse to start).
fn weir(args: &[&str]) -> Output {
    Command::new(weir_tests::broker_binary().expect("the weir binary"))
        .args(args)
        // These runs test Kafka's ports; AMQP's default 5672 may be another program's.
        .args(["--amqp-listen", "none"])
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running weir")
}

/// The start-up error (stderr) of a run that must have failed.
fn refusal(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("{stderr}");
    assert!(!output.status.success(), "weir started: {stderr}");
    stderr
}

#[test]
fn a_data_dir_that_is_a_file_is_named_as_such() {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let port = weir_tests::free_port_range(2).unwrap();
    let stderr = refusal(&weir(&[
        "--data-dir",
        file.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cpus",
        "0",
        "--metrics-listen",
        "none",
    ]));
    assert!(
        stderr.contains(&format!(
            "data dir {} is a file, not a directory",
            file.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_port_held_by_another_program_names_that_program() {
    let port = weir_tests::free_port_range(2).unwrap();
    // Listening but never accepting: connects still complete (the kernel's accept queue), as
    // they would for any server.
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let stderr = refusal(&weir(&[
        "--data-dir",
        temp.path().join("data").to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cpus",
        "0",
        "--metrics-listen",
        "none",
    ]));
    let this_test = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert!(
        stderr.contains(&format!(
            "port {port} is in use: 127.0.0.1:{port} is already in use by another process (pid {}, \
             `{}`), not a Weir broker",
            std::process::id(),
            this_test.trim_end()
        )),
        "{stderr}"
    );
}

#[test]
fn a_port_held_by_another_weir_broker_says_so() {
    let broker = Broker::start(BrokerOptions::default().cpus("0")).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let stderr = refusal(&weir(&[
        "--data-dir",
        temp.path().join("data").to_str().unwrap(),
        "--listen",
        &broker.bootstrap(),
        "--cpus",
        "0",
        "--metrics-listen",
        "none",
    ]));
    let held = format!(
        "port {} is in use: {} is held by another Weir broker (pid ",
        broker.port(),
        broker.bootstrap()
    );
    assert!(stderr.contains(&held), "{stderr}");
}

/// The harness writes the broker's stdout and stderr to a file: no terminal, so no colour codes.
#[test]
fn the_log_has_no_colour_codes_when_it_is_not_a_terminal() {
    let mut broker = Broker::start(BrokerOptions::default().cpus("0")).unwrap();
    broker.stop().unwrap();
    let log = broker.log();
    assert!(log.contains("weir ready"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "ANSI escape codes in the log:\n{log:?}"
    );
}

/// Segments written to the slow shard's partition: each produce is its own segment, and a shard
/// recovers its segments one by one, so this shard opens its ports well after the other one.
const SLOW_SEGMENTS: usize = 3000;
const SLOW_TOPIC: &str = "slow-recovery";

/// Creates `SLOW_TOPIC` (2 partitions, one per shard, the smallest segments) and fills the
/// partition shard 1 owns with `SLOW_SEGMENTS` segments.
fn fill_one_shard(broker: &Broker) -> Result<()> {
    let mut client = Client::connect(broker.port(), "startup-test")?;
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(text(SLOW_TOPIC));
    topic.num_partitions = 2;
    topic.replication_factor = 1;
    let mut config = CreatableTopicConfig::default();
    config.name = text("segment.bytes");
    config.value = Some(text("1024"));
    topic.configs.push(config);
    let mut request = CreateTopicsRequest::default();
    request.topics.push(topic);
    request.timeout_ms = 5000;
    let created = client.call(5, &request)?;
    ensure!(created.topics[0].error_code == 0, "creating: {created:?}");
    let metadata = client.call(4, &all_topics())?;
    let partition = metadata
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .find(|partition| partition.leader_id.0 == 1)
        .context("a partition led by broker 1")?
        .partition_index;
    let value = vec![b'x'; 4096];
    let record = RecordSpec {
        value: Some(&value),
        ..RecordSpec::default()
    };
    for _ in 0..SLOW_SEGMENTS {
        let mut data = PartitionProduceData::default();
        data.index = partition;
        data.records = Some(build_batch(&BatchSpec::default(), &[record]).freeze());
        let mut topic_data = TopicProduceData::default();
        topic_data.name = TopicName(text(SLOW_TOPIC));
        topic_data.partition_data.push(data);
        let mut produce = ProduceRequest::default();
        produce.acks = 1;
        produce.timeout_ms = 10_000;
        produce.topic_data.push(topic_data);
        let answer = client.call(7, &produce)?;
        let code = answer.responses[0].partition_responses[0].error_code;
        ensure!(code == 0, "produce answered error {code}");
    }
    Ok(())
}

/// Metadata for every topic (a null list; an empty one names none).
fn all_topics() -> MetadataRequest {
    let mut request = MetadataRequest::default();
    request.topics = None;
    request
}

/// One probe of a starting broker: `None` when the bootstrap port does not answer Metadata yet,
/// otherwise the broker ports that answer named and whether each accepted a connection.
fn probe(bootstrap: u16) -> Option<Vec<(i32, bool)>> {
    let mut client = Client::connect(bootstrap, "startup-probe").ok()?;
    let answer = client.call(4, &MetadataRequest::default()).ok()?;
    let brokers = answer
        .brokers
        .iter()
        .map(|broker| {
            let port = broker.port as u16;
            let accepted = TcpStream::connect(("127.0.0.1", port)).is_ok();
            (port as i32, accepted)
        })
        .collect();
    Some(brokers)
}

/// A clean restart in which shard 1 recovers thousands of segments while shard 0 has almost
/// nothing: from the moment the process starts, the bootstrap port is polled, and every Metadata
/// answer's brokers are connected to. Before the start barrier, shard 0 answered while shard 1's
/// port still refused (what librdkafka logged as `Connection refused`).
#[test]
fn no_port_answers_metadata_before_every_broker_it_names_accepts() -> Result<()> {
    let mut broker = Broker::start(BrokerOptions::default().cpus("0-1"))?;
    fill_one_shard(&broker)?;
    broker.stop()?;
    broker.launch()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut answers, mut refused_brokers, mut unanswered) = (0, Vec::new(), 0);
    // Until the broker says it is ready and a probe after that has been answered: the window
    // being tested is before the ready line, the last answer checks the probe itself.
    loop {
        let ready = broker.log_since_launch().contains("weir ready");
        match probe(broker.port()) {
            None => unanswered += 1,
            Some(brokers) => {
                answers += 1;
                ensure!(brokers.len() == 2, "two brokers named: {brokers:?}");
                refused_brokers.extend(brokers.into_iter().filter(|(_, accepted)| !accepted));
                if ready {
                    break;
                }
            }
        }
        ensure!(
            Instant::now() < deadline,
            "no Metadata answer after the ready line"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("{answers} Metadata answers, {unanswered} probes unanswered");
    assert!(
        refused_brokers.is_empty(),
        "Metadata named broker ports that refused connections ({} times): {:?}",
        refused_brokers.len(),
        &refused_brokers[..refused_brokers.len().min(5)]
    );
    broker.wait_ready()?;
    Ok(())
}
