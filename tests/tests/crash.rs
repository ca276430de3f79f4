//! Crash suite: a raw-protocol producer (acks=-1, exact acknowledgements) writes to topics with
//! `always` durability (`flush.messages=1`, tiny segments so that rolls are frequent, one with
//! `retention.bytes` so that retention deletes segments meanwhile) and `interval` durability
//! (`flush.ms`), and commits consumer group offsets; the real `weir` binary (2 shards) is killed
//! with SIGKILL at random moments and restarted on the same data dir. After every restart:
//! - every acknowledged record is present exactly once, at the offset its ack gave, in order; the
//!   offsets of each partition are contiguous from its log start (so the log continues from the
//!   right offset) and each log start only grows;
//! - every acknowledged group offset commit is what OffsetFetch returns (or a later commit that
//!   was in flight at the kill);
//! - every topic declared before the kill exists with its partitions and configs;
//! - every exchange declared before the kill exists with its type and bindings: each round
//!   declares one (CreateTopics with `weir.exchange.type` and a binding to that round's topic) and
//!   adds a second binding with IncrementalAlterConfigs (APPEND) timed to land near the kill. An
//!   acknowledged binding must be there after the restart; an unacknowledged one may or may not,
//!   but what a restart shows must stay. A record produced to the round's exchange after the
//!   restart must reach the round's topic (the routing table was rebuilt, not just the configs).
//!
//! - share-group acknowledgement state (`crash/share.rs`): no record whose acceptance was
//!   answered is delivered again; every record acquired but not acknowledged at the kill, and
//!   every other unaccepted one, comes back.
//!
//! Short form: 20 kills. `WEIR_SOAK=1`: 200 kills (or `WEIR_CRASH_KILLS=N`). The random seed is
//! printed; `WEIR_CRASH_SEED=N` replays a run. Ports: three consecutive free ones from the harness.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use weir_engine::batch::{build_batch, BatchSpec, RecordSpec};

#[path = "crash/share.rs"]
mod share;

/// Bootstrap port P (shard ports P+1, P+2): a free run from the harness, one per test binary,
/// so that a copy of this suite running in another worktree never shares a port with this one.
fn port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| weir_tests::free_port_range(3).expect("3 free ports"))
}
const PARTITIONS: i32 = 4;
const GROUP: &str = "crash-group";

/// The topics written, with their configs. Every topic has 4 partitions spread over both shards.
const TOPICS: &[(&str, &[(&str, &str)])] = &[
    (
        "crash-always",
        &[("flush.messages", "1"), ("segment.bytes", "4096")],
    ),
    (
        "crash-retention",
        &[
            ("flush.messages", "1"),
            ("segment.bytes", "2048"),
            ("retention.bytes", "8192"),
        ],
    ),
    (
        "crash-interval",
        &[("flush.ms", "50"), ("segment.bytes", "4096")],
    ),
];

/// Retention checked every 200 ms; share partitions start at the log's start (the share part
/// produces before its first fetch).
const SETTINGS: [&str; 4] = [
    "--set",
    "log.retention.check.interval.ms=200",
    "--set",
    "share.auto.offset.reset=earliest",
];

struct Broker {
    child: Child,
}

impl Broker {
    /// Starts weir on `dir` (retention checked every 200 ms) and waits for its ready line.
    ///
    /// Retries in two known cases, and counts them for the report:
    /// - weir refuses to start because its port still accepts connections: after a SIGKILL the
    ///   kernel tears down the dead process's io_uring (and the listening sockets it holds)
    ///   asynchronously, so for a moment the old listener still completes handshakes and weir's
    ///   own "port in use" probe trips;
    /// - weir hangs during start (no ready line within `START_TIMEOUT`): an open bug seen right
    ///   after a SIGKILL, see docs/reliability.md. The hung broker is killed with SIGKILL too
    ///   (one more crash for recovery to survive). Two hangs in a row fail the test.
    fn start(dir: &Path, starts: &mut Starts) -> Broker {
        let mut hung_in_a_row = 0;
        for _ in 0..200 {
            match Broker::try_start(dir) {
                Started::Ready(broker) => return broker,
                Started::PortBusy => {
                    starts.refused += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Started::Hung => {
                    starts.hung += 1;
                    hung_in_a_row += 1;
                    assert!(
                        hung_in_a_row < 2,
                        "weir hung twice in a row starting on {}",
                        dir.display()
                    );
                }
            }
        }
        panic!("weir did not start on {} after 200 tries", dir.display());
    }

    fn try_start(dir: &Path) -> Started {
        let mut child = Command::new(weir_tests::broker_binary().expect("the weir binary"))
            .args(["--data-dir", dir.to_str().unwrap()])
            .args([
                "--listen",
                &format!("127.0.0.1:{}", port()),
                "--cpus",
                "0-1",
                "--amqp-listen",
                "none",
                "--metrics-listen",
                "none",
            ])
            .args(SETTINGS)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The broker's log goes to <data dir>.log for diagnosis (it is kept next to the data).
        let log_path = dir.with_extension("log");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let _ = writeln!(log, "---- weir pid {} started", child.id());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stdout_log = log.try_clone().unwrap();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if line.contains("weir ready") {
                    let _ = ready_tx.send(());
                }
                let _ = writeln!(stdout_log, "{line}");
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let (error_tx, error_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut error = String::new();
            let _ = stderr.read_to_string(&mut error);
            let _ = error_tx.send(error);
        });
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(()) => Started::Ready(Broker { child }),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                let error = error_rx.recv().unwrap_or_default();
                let _ = writeln!(log, "{error}");
                assert!(
                    error.contains("is in use"),
                    "weir refused to start on {} (recovery failed?): {error}",
                    dir.display()
                );
                Started::PortBusy
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = writeln!(log, "---- no ready line in {START_TIMEOUT:?}");
                let _ = writeln!(log, "{}", where_it_hangs(child.id()));
                let _ = writeln!(log, "---- SIGKILL");
                println!(
                    "weir pid {} hung while starting; killed (see {})",
                    child.id(),
                    log_path.display()
                );
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
                Started::Hung
            }
        }
    }

    fn kill9(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Every `weir` process on the machine with its arguments: a failure that looks like lost
/// metadata can be a second broker on the same port (SO_REUSEPORT shares it silently).
fn weir_processes() -> String {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|byte| *byte == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect();
        if args
            .first()
            .is_some_and(|program| program.ends_with("/weir"))
        {
            found.push(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                args.join(" ")
            ));
        }
    }
    found.join("; ")
}

/// Where a hung broker's threads are, for its log: each thread's kernel stack and wait channel
/// (`/proc`, needs root) and, when gdb is installed, every thread's backtrace.
fn where_it_hangs(pid: u32) -> String {
    let mut report = String::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path();
            let read = |name: &str| std::fs::read_to_string(path.join(name)).unwrap_or_default();
            report.push_str(&format!(
                "---- thread {} ({}) wchan {}\n{}",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                read("wchan"),
                read("stack")
            ));
        }
    }
    let gdb = Command::new("timeout")
        .args(["60", "gdb", "-p", &pid.to_string(), "-batch", "-ex"])
        .arg("thread apply all bt")
        .output();
    if let Ok(output) = gdb {
        report.push_str("---- gdb: thread apply all bt\n");
        report.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    report
}

enum Started {
    Ready(Broker),
    PortBusy,
    Hung,
}

/// Restarts that did not succeed at once, by cause.
#[derive(Default)]
struct Starts {
    refused: usize,
    hung: usize,
}

/// xorshift64*: reproducible kill timing from a printed seed.
struct Random(u64);
impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

struct Client {
    stream: TcpStream,
    next_id: i32,
}

impl Client {
    fn connect() -> std::io::Result<Client> {
        Client::connect_to(port())
    }

    /// To one shard's own port (`port() + 1 + shard`).
    fn connect_to(port: u16) -> std::io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(15)))?;
        stream.set_write_timeout(Some(Duration::from_secs(15)))?;
        stream.set_nodelay(true)?;
        Ok(Client { stream, next_id: 1 })
    }

    /// One request, one answer; any I/O or decoding failure is an error (the broker died).
    fn call<R: Request>(&mut self, version: i16, request: &R) -> std::io::Result<R::Response> {
        let key = ApiKey::try_from(R::KEY).unwrap();
        let correlation_id = self.next_id;
        self.next_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(text("crash-test"));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, key.request_header_version(version))
            .unwrap();
        request.encode(&mut frame, version).unwrap();
        let size = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&frame)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        let mut body = Bytes::from(body);
        let bad = |e: anyhow::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        let header =
            ResponseHeader::decode(&mut body, R::Response::header_version(version)).map_err(bad)?;
        assert_eq!(header.correlation_id, correlation_id);
        R::Response::decode(&mut body, version).map_err(bad)
    }
}

fn create_topic(client: &mut Client, name: &str, configs: &[(&str, &str)]) {
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(text(name));
    topic.num_partitions = PARTITIONS;
    topic.replication_factor = 1;
    for (key, value) in configs {
        let mut config = CreatableTopicConfig::default();
        config.name = text(key);
        config.value = Some(text(value));
        topic.configs.push(config);
    }
    let mut request = CreateTopicsRequest::default();
    request.topics.push(topic);
    request.timeout_ms = 5000;
    let response = client.call(5, &request).unwrap();
    assert_eq!(response.topics[0].error_code, 0, "creating {name}");
}

/// What the producer knows: acknowledged records by (topic, partition) -> offset -> value, and
/// group offset commits acknowledged / attempted per partition of `crash-always`.
#[derive(Default)]
struct Acked {
    records: HashMap<(String, i32), BTreeMap<i64, String>>,
    commits_acked: HashMap<i32, i64>,
    commits_attempted: HashMap<i32, i64>,
    produce_attempts: u64,
    produce_failures: u64,
    commits_total: u64,
}

fn produce(
    client: &mut Client,
    topic: &str,
    partition: i32,
    values: &[String],
) -> std::io::Result<(i16, i64)> {
    let records: Vec<RecordSpec> = values
        .iter()
        .map(|value| RecordSpec {
            value: Some(value.as_bytes()),
            ..RecordSpec::default()
        })
        .collect();
    produce_records(client, topic, partition, &records)
}

fn produce_records(
    client: &mut Client,
    topic: &str,
    partition: i32,
    records: &[RecordSpec],
) -> std::io::Result<(i16, i64)> {
    let batch = build_batch(&BatchSpec::default(), records).freeze();
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(batch);
    let mut topic_data = TopicProduceData::default();
    topic_data.name = TopicName(text(topic));
    topic_data.partition_data.push(data);
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data.push(topic_data);
    let response = client.call(7, &request)?;
    let answer = &response.responses[0].partition_responses[0];
    Ok((answer.error_code, answer.base_offset))
}

fn commit(client: &mut Client, partition: i32, offset: i64) -> std::io::Result<i16> {
    let mut entry = OffsetCommitRequestPartition::default();
    entry.partition_index = partition;
    entry.committed_offset = offset;
    let mut topic = OffsetCommitRequestTopic::default();
    topic.name = TopicName(text("crash-always"));
    topic.partitions.push(entry);
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(text(GROUP));
    request.generation_id_or_member_epoch = -1;
    request.topics.push(topic);
    let response = client.call(7, &request)?;
    Ok(response.topics[0].partitions[0].error_code)
}

/// Produces until `stop`, one request at a time, never resending a batch whose answer was lost
/// (so a record is in the log at most once). Every 4th acked batch commits a group offset.
fn producer(acked: Arc<Mutex<Acked>>, stop: Arc<AtomicBool>) {
    let mut client: Option<Client> = None;
    let mut sequence = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(connected) = client.as_mut() else {
            match Client::connect() {
                Ok(c) => client = Some(c),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            continue;
        };
        sequence += 1;
        let (topic, _) = TOPICS[(sequence % TOPICS.len() as u64) as usize];
        let partition = ((sequence / TOPICS.len() as u64) % PARTITIONS as u64) as i32;
        let count = 1 + (sequence % 5) as usize;
        let values: Vec<String> = (0..count)
            .map(|i| format!("{topic}/{partition}/{sequence}.{i}"))
            .collect();
        acked.lock().unwrap().produce_attempts += 1;
        match produce(connected, topic, partition, &values) {
            Ok((0, base)) => {
                let mut state = acked.lock().unwrap();
                let log = state
                    .records
                    .entry((topic.to_string(), partition))
                    .or_default();
                for (i, value) in values.into_iter().enumerate() {
                    assert!(
                        log.insert(base + i as i64, value).is_none(),
                        "offset reused"
                    );
                }
                drop(state);
                if topic == "crash-always" && sequence.is_multiple_of(4) {
                    let offset = base + count as i64;
                    acked
                        .lock()
                        .unwrap()
                        .commits_attempted
                        .insert(partition, offset);
                    match commit(connected, partition, offset) {
                        Ok(0) => {
                            let mut state = acked.lock().unwrap();
                            state.commits_acked.insert(partition, offset);
                            state.commits_total += 1;
                        }
                        Ok(code) => panic!("OffsetCommit error {code}"),
                        Err(_) => client = None,
                    }
                }
            }
            Ok((code, _)) => panic!(
                "produce to {topic}/{partition} failed with error {code}; weir processes: {}",
                weir_processes()
            ),
            Err(_) => {
                acked.lock().unwrap().produce_failures += 1;
                client = None;
            }
        }
    }
}

/// Every batch of a partition from its log start: (log start, high watermark, offset -> value).
fn read_partition(
    client: &mut Client,
    topic: &str,
    partition: i32,
) -> (i64, i64, BTreeMap<i64, String>) {
    let mut values = BTreeMap::new();
    let mut offset = 0;
    let mut log_start = None;
    let mut restarts = 0;
    loop {
        let mut fetch = FetchPartition::default();
        fetch.partition = partition;
        fetch.fetch_offset = offset;
        fetch.partition_max_bytes = 1 << 20;
        let mut fetch_topic = FetchTopic::default();
        fetch_topic.topic = TopicName(text(topic));
        fetch_topic.partitions.push(fetch);
        let mut request = FetchRequest::default();
        request.max_wait_ms = 0;
        request.min_bytes = 0;
        request.max_bytes = 8 << 20;
        request.session_epoch = -1;
        request.topics.push(fetch_topic);
        let response = client.call(11, &request).unwrap();
        let data = &response.responses[0].partitions[0];
        if data.error_code == 1 {
            // OFFSET_OUT_OF_RANGE: retention moved the start (also possible mid-read: the
            // producer keeps writing and retention runs every 200 ms); read again from there.
            restarts += 1;
            assert!(
                restarts < 100,
                "{topic}/{partition}: retention outran the reader"
            );
            offset = data.log_start_offset.max(offset + 1);
            log_start = None;
            values.clear();
            continue;
        }
        assert_eq!(data.error_code, 0, "fetch {topic}/{partition} at {offset}");
        let start = *log_start.get_or_insert(data.log_start_offset.max(offset));
        let mut records = data.records.clone().unwrap_or_default();
        let mut got_any = false;
        while records.has_remaining() {
            let set = RecordBatchDecoder::decode(&mut records).expect("stored batch decodes");
            for record in set.records {
                if record.offset < start {
                    continue;
                }
                let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                let expected_offset = start + values.len() as i64;
                assert_eq!(
                    record.offset, expected_offset,
                    "{topic}/{partition}: offsets are not contiguous"
                );
                values.insert(record.offset, value);
                offset = record.offset + 1;
                got_any = true;
            }
        }
        if offset >= data.high_watermark || !got_any {
            assert_eq!(
                offset, data.high_watermark,
                "{topic}/{partition}: stopped before the high watermark"
            );
            return (start, data.high_watermark, values);
        }
    }
}

struct Checked {
    records: usize,
}

/// The invariants after a restart; `log_starts` carries each partition's log start across calls.
/// `acked` is a snapshot taken after the restart; `live` is the producer's state, which keeps
/// moving during the check (so it bounds what may be found from above).
fn verify(
    acked: &Acked,
    live: &Mutex<Acked>,
    log_starts: &mut HashMap<(String, i32), i64>,
    round: usize,
) -> Checked {
    let mut client = Client::connect().unwrap();
    let mut checked = 0;
    for (topic, _) in TOPICS {
        for partition in 0..PARTITIONS {
            let key = (topic.to_string(), partition);
            let (start, high_watermark, log) = read_partition(&mut client, topic, partition);
            let previous = log_starts.insert(key.clone(), start).unwrap_or(0);
            assert!(start >= previous, "{key:?}: log start went back");
            let mut seen = std::collections::HashSet::new();
            for value in log.values() {
                assert!(seen.insert(value), "{key:?}: {value} stored twice");
            }
            let Some(expected) = acked.records.get(&key) else {
                continue;
            };
            if let Some((last, _)) = expected.last_key_value() {
                assert!(
                    high_watermark > *last,
                    "round {round} {key:?}: acked offset {last} lost (high watermark {high_watermark})"
                );
            }
            for (offset, value) in expected.range(start..) {
                assert_eq!(
                    log.get(offset),
                    Some(value),
                    "round {round} {key:?}: acked record at offset {offset}"
                );
                checked += 1;
            }
        }
    }
    // Group offsets.
    let mut wanted = OffsetFetchRequestTopic::default();
    wanted.name = TopicName(text("crash-always"));
    wanted.partition_indexes = (0..PARTITIONS).collect();
    let mut request = OffsetFetchRequest::default();
    request.group_id = GroupId(text(GROUP));
    request.topics = Some(vec![wanted]);
    let response = client.call(7, &request).unwrap();
    assert_eq!(response.error_code, 0);
    let live = live.lock().unwrap();
    for answer in &response.topics[0].partitions {
        let index = answer.partition_index;
        let acked_offset = acked.commits_acked.get(&index).copied().unwrap_or(-1);
        let attempted = live.commits_attempted.get(&index).copied().unwrap_or(-1);
        assert!(
            answer.committed_offset >= acked_offset && answer.committed_offset <= attempted.max(acked_offset),
            "round {round} partition {index}: committed offset {} but acked {acked_offset}, attempted {attempted}",
            answer.committed_offset
        );
    }
    Checked { records: checked }
}

/// Topics declared so far exist with their partitions, and their configs survived.
fn verify_declarations(declared: &[String]) {
    let mut client = Client::connect().unwrap();
    let mut all = MetadataRequest::default();
    all.topics = None; // null: every topic
    let metadata = client.call(9, &all).unwrap();
    let topics: HashMap<String, usize> = metadata
        .topics
        .iter()
        .filter_map(|t| {
            t.name
                .as_ref()
                .map(|n| (n.0.to_string(), t.partitions.len()))
        })
        .collect();
    for name in declared
        .iter()
        .map(String::as_str)
        .chain(TOPICS.iter().map(|t| t.0))
    {
        // The whole answer, should it fail: which broker answered, and what it holds.
        let known: Vec<&String> = topics.keys().take(40).collect();
        assert_eq!(
            topics.get(name),
            Some(&(PARTITIONS as usize)),
            "topic {name} lost; the answering broker (cluster {:?}, controller {}, brokers {:?}) \
             knows {} topics: {known:?}; weir processes: {}",
            metadata.cluster_id,
            metadata.controller_id.0,
            metadata
                .brokers
                .iter()
                .map(|b| (b.node_id.0, b.port))
                .collect::<Vec<_>>(),
            topics.len(),
            weir_processes()
        );
    }
    let mut resource = DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = text("crash-retention");
    let mut request = DescribeConfigsRequest::default();
    request.resources.push(resource);
    let response = client.call(4, &request).unwrap();
    let configs: HashMap<String, Option<String>> = response.results[0]
        .configs
        .iter()
        .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
        .collect();
    assert_eq!(configs["retention.bytes"].as_deref(), Some("8192"));
    assert_eq!(configs["segment.bytes"].as_deref(), Some("2048"));
    assert_eq!(configs["flush.messages"].as_deref(), Some("1"));
}

/// Where a binding added near a kill stands: known present (acknowledged, or seen after a
/// restart), known absent (not acknowledged and not seen), or not known yet.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Present,
    Absent,
    Unknown,
}

/// One round's exchange: `exchange-N` of a type that cycles through all four, bound at creation
/// to `declared-N`, plus a binding to `routed` added by IncrementalAlterConfigs near the kill.
struct DeclaredExchange {
    name: String,
    kind: &'static str,
    /// `weir.exchange.bindings` element given at creation.
    created: String,
    /// Element appended near the kill, and what is known of it.
    appended: String,
    appended_fate: Fate,
    /// Routing key and headers of a record that `created` routes to `declared-N`.
    check_key: String,
    check_headers: Vec<(String, String)>,
}

impl DeclaredExchange {
    fn new(round: usize) -> DeclaredExchange {
        let kinds = ["direct", "topic", "fanout", "headers"];
        let kind = kinds[round % kinds.len()];
        let (created, appended, check_key, check_headers) = match kind {
            "direct" => (
                format!("=to-declared-{round}"),
                format!("=to-routed-{round}"),
                format!("to-declared-{round}"),
                vec![],
            ),
            "topic" => (
                format!("=check.{round}.*"),
                "=#.routed".to_string(),
                format!("check.{round}.now"),
                vec![],
            ),
            "fanout" => (String::new(), String::new(), String::new(), vec![]),
            _ => (
                format!("=x-match=all&round={round}"),
                "=x-match=any&kind=routed&other=x".to_string(),
                String::new(),
                vec![("round".to_string(), round.to_string())],
            ),
        };
        DeclaredExchange {
            name: format!("exchange-{round}"),
            kind,
            created: format!("topic:declared-{round}{created}"),
            appended: format!("topic:routed{appended}"),
            appended_fate: Fate::Unknown,
            check_key,
            check_headers,
        }
    }

    fn declare(&self, client: &mut Client) {
        let mut topic = CreatableTopic::default();
        topic.name = TopicName(text(&self.name));
        topic.num_partitions = -1;
        topic.replication_factor = -1;
        for (key, value) in [
            ("weir.exchange.type", self.kind),
            ("weir.exchange.bindings", self.created.as_str()),
        ] {
            let mut config = CreatableTopicConfig::default();
            config.name = text(key);
            config.value = Some(text(value));
            topic.configs.push(config);
        }
        let mut request = CreateTopicsRequest::default();
        request.topics.push(topic);
        request.timeout_ms = 5000;
        let response = client.call(5, &request).unwrap();
        let answer = &response.topics[0];
        assert_eq!(
            answer.error_code, 0,
            "declaring {}: {:?}",
            self.name, answer.error_message
        );
    }

    /// IncrementalAlterConfigs APPEND of the second binding; `true` when acknowledged.
    fn append_binding(&self, client: &mut Client) -> bool {
        let mut config = AlterableConfig::default();
        config.name = text("weir.exchange.bindings");
        config.config_operation = 2; // APPEND
        config.value = Some(text(&self.appended));
        let mut resource = AlterConfigsResource::default();
        resource.resource_type = 2;
        resource.resource_name = text(&self.name);
        resource.configs.push(config);
        let mut request = IncrementalAlterConfigsRequest::default();
        request.resources.push(resource);
        match client.call(0, &request) {
            Ok(response) => {
                let answer = &response.responses[0];
                assert_eq!(
                    answer.error_code, 0,
                    "appending to {}: {:?}",
                    self.name, answer.error_message
                );
                true
            }
            Err(_) => false, // killed before the answer
        }
    }
}

/// A `weir.exchange.bindings` list as a set of elements, headers arguments in a fixed order.
fn binding_elements(list: &str) -> std::collections::BTreeSet<String> {
    list.split(',')
        .map(str::trim)
        .filter(|element| !element.is_empty())
        .map(|element| match element.split_once('=') {
            Some((head, binding)) if binding.contains('&') => {
                let mut pairs: Vec<&str> = binding.split('&').collect();
                pairs.sort_unstable();
                format!("{head}={}", pairs.join("&"))
            }
            _ => element.to_string(),
        })
        .collect()
}

/// Counts for the report: appended bindings acknowledged before the kill, not acknowledged and
/// found after the restart anyway, not acknowledged and absent; routed records checked.
#[derive(Default)]
struct ExchangeCounts {
    appends_acked: usize,
    appends_unacked_present: usize,
    appends_unacked_absent: usize,
    routed_checks: usize,
}

/// Every declared exchange exists with its type and bindings (DescribeConfigs); settles the fate
/// of bindings whose append was not acknowledged.
#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
fn verify_exchanges(exchanges: &mut [DeclaredExchange], counts: &mut ExchangeCounts, round: usize) {
    let mut client = Client::connect().unwrap();
    let mut request = DescribeConfigsRequest::default();
    for exchange in exchanges.iter() {
        let mut resource = DescribeConfigsResource::default();
        resource.resource_type = 2;
        resource.resource_name = text(&exchange.name);
        request.resources.push(resource);
    }
    let response = client.call(4, &request).unwrap();
    assert_eq!(response.results.len(), exchanges.len());
    for (exchange, result) in exchanges.iter_mut().zip(&response.results) {
        assert_eq!(result.resource_name.as_str(), exchange.name);
        assert_eq!(
            result.error_code, 0,
            "round {round}: describing {}: {:?}",
            exchange.name, result.error_message
        );
        let configs: HashMap<String, String> = result
            .configs
            .iter()
            .map(|c| {
                let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                (c.name.to_string(), value)
            })
            .collect();
        assert_eq!(
            configs.get("weir.exchange.type").map(String::as_str),
            Some(exchange.kind),
            "round {round}: exchange {} lost or changed type",
            exchange.name
        );
        let found = binding_elements(
            configs
                .get("weir.exchange.bindings")
                .map_or("", String::as_str),
        );
        let created = binding_elements(&exchange.created);
        let appended = binding_elements(&exchange.appended);
        assert!(
            created.is_subset(&found),
            "round {round}: {}: binding {:?} (acknowledged at creation) lost; found {found:?}",
            exchange.name,
            exchange.created
        );
        let present = appended.is_subset(&found);
        let mut expected = created.clone();
        if present {
            expected.extend(appended.iter().cloned());
        }
        assert_eq!(
            found, expected,
            "round {round}: {}: bindings other than declared",
            exchange.name
        );
        match (exchange.appended_fate, present) {
            (Fate::Present, false) => panic!(
                "round {round}: {}: binding {:?} lost (acknowledged or seen before)",
                exchange.name, exchange.appended
            ),
            (Fate::Absent, true) => panic!(
                "round {round}: {}: binding {:?} appeared after it was absent",
                exchange.name, exchange.appended
            ),
            (Fate::Unknown, true) => {
                counts.appends_unacked_present += 1;
                exchange.appended_fate = Fate::Present;
            }
            (Fate::Unknown, false) => {
                counts.appends_unacked_absent += 1;
                exchange.appended_fate = Fate::Absent;
            }
            _ => {}
        }
    }
}

/// A record produced to the round's exchange reaches the round's topic through the binding made
/// at creation.
fn verify_route(exchange: &DeclaredExchange, round: usize, counts: &mut ExchangeCounts) {
    let mut client = Client::connect().unwrap();
    let value = format!("routed-check-{round}");
    let headers: Vec<(&str, &[u8])> = exchange
        .check_headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let record = RecordSpec {
        key: (!exchange.check_key.is_empty()).then_some(exchange.check_key.as_bytes()),
        value: Some(value.as_bytes()),
        headers: &headers,
        ..RecordSpec::default()
    };
    let (code, _) = produce_records(&mut client, &exchange.name, 0, &[record]).unwrap();
    assert_eq!(code, 0, "round {round}: produce to {}", exchange.name);
    let topic = format!("declared-{round}");
    let found = (0..PARTITIONS).any(|partition| {
        read_partition(&mut client, &topic, partition)
            .2
            .values()
            .any(|stored| *stored == value)
    });
    assert!(
        found,
        "round {round}: a record produced to {} did not reach {topic}",
        exchange.name
    );
    counts.routed_checks += 1;
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
fn acknowledged_data_survives_sigkill() {
    let soak = std::env::var("WEIR_SOAK").is_ok_and(|v| v == "1");
    let kills: usize = std::env::var("WEIR_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if soak { 200 } else { 20 });
    let seed: u64 = std::env::var("WEIR_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash suite: {kills} kills, seed {seed} (WEIR_CRASH_SEED to replay)");
    let mut random = Random(seed);
    // Kept when the test fails (a panic skips the removal at the end), for diagnosis.
    let dir = tempfile::tempdir().unwrap().keep();
    println!(
        "data dir: {}, broker log: {}",
        dir.display(),
        dir.with_extension("log").display()
    );
    let mut starts = Starts::default();
    let mut broker = Broker::start(dir.as_path(), &mut starts);
    {
        let mut client = Client::connect().unwrap();
        for (name, configs) in TOPICS {
            create_topic(&mut client, name, configs);
        }
        create_topic(&mut client, "routed", &[]);
        create_topic(&mut client, share::TOPIC, &[("flush.messages", "1")]);
    }
    let mut shares = share::ShareLedger::new(&mut Client::connect().unwrap());
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || producer(acked, stop))
    };
    let mut log_starts = HashMap::new();
    let mut declared: Vec<String> = Vec::new();
    let mut exchanges: Vec<DeclaredExchange> = Vec::new();
    let mut exchange_counts = ExchangeCounts::default();
    let started = Instant::now();
    let mut records_verified = 0;
    for round in 0..kills {
        // A topic declared in this round must outlive the kill that ends it.
        let name = format!("declared-{round}");
        create_topic(
            &mut Client::connect().unwrap(),
            &name,
            &[("segment.bytes", "1048576")],
        );
        declared.push(name);
        let exchange = DeclaredExchange::new(round);
        exchange.declare(&mut Client::connect().unwrap());
        let kill_after_ms = 50 + random.below(if soak { 1500 } else { 450 });
        // Share acknowledgements: some answered, some sent up to 40 ms before the kill.
        let accepting = shares.before_kill(round, kill_after_ms.saturating_sub(random.below(40)));
        // The second binding is sent up to 40 ms before the kill (or just after: then it fails),
        // so some kills land while the controller persists it.
        let append_after_ms = kill_after_ms.saturating_sub(random.below(40));
        let appending = {
            let mut client = Client::connect().unwrap();
            let exchange = DeclaredExchange::new(round);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(append_after_ms));
                exchange.append_binding(&mut client)
            })
        };
        exchanges.push(exchange);
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        broker.kill9();
        if appending.join().unwrap() {
            exchange_counts.appends_acked += 1;
            exchanges.last_mut().unwrap().appended_fate = Fate::Present;
        }
        broker = Broker::start(dir.as_path(), &mut starts);
        let snapshot = {
            let acked = acked.lock().unwrap();
            Acked {
                records: acked.records.clone(),
                commits_acked: acked.commits_acked.clone(),
                commits_attempted: acked.commits_attempted.clone(),
                produce_attempts: acked.produce_attempts,
                produce_failures: acked.produce_failures,
                commits_total: acked.commits_total,
            }
        };
        let checked = verify(&snapshot, &acked, &mut log_starts, round);
        verify_declarations(&declared);
        verify_exchanges(&mut exchanges, &mut exchange_counts, round);
        verify_route(exchanges.last().unwrap(), round, &mut exchange_counts);
        shares.verify(round, accepting);
        records_verified += checked.records;
    }
    stop.store(true, Ordering::Relaxed);
    producer_thread.join().unwrap();
    let acked = acked.lock().unwrap();
    let total: usize = acked.records.values().map(BTreeMap::len).sum();
    let retention_start: i64 = log_starts
        .iter()
        .filter(|((topic, _), _)| topic == "crash-retention")
        .map(|(_, start)| *start)
        .sum();
    println!(
        "crash suite: {kills} SIGKILLs survived in {:.1}s; {total} records acknowledged, \
         {records_verified} record checks after restarts, {} produce requests ({} unanswered at a \
         kill), {} group commits acknowledged, crash-retention log starts sum {retention_start}, \
         {} restarts refused while the dead broker's port still accepted, {} starts hung; \
         {kills} exchanges declared, appended bindings {} acknowledged / {} unacknowledged but \
         present / {} unacknowledged and absent, {} routed records checked; share group: {} \
         records accepted, {} held at a kill and delivered again",
        started.elapsed().as_secs_f64(),
        acked.produce_attempts,
        acked.produce_failures,
        acked.commits_total,
        starts.refused,
        starts.hung,
        exchange_counts.appends_acked,
        exchange_counts.appends_unacked_present,
        exchange_counts.appends_unacked_absent,
        exchange_counts.routed_checks,
        shares.accepted(),
        shares.redelivered,
    );
    assert!(shares.redelivered > 0, "no share record was held at a kill");
    assert!(total > 0 && records_verified > 0);
    assert!(retention_start > 0, "retention never deleted a segment");
    broker.kill9();
    let _ = std::fs::remove_dir_all(&dir);
    // The broker log is kept when the test fails (a panic skips this) or a start hung (it holds
    // where the hung broker's threads were).
    if starts.hung == 0 {
        let _ = std::fs::remove_file(dir.as_path().with_extension("log"));
    } else {
        println!(
            "broker log kept: {}",
            dir.as_path().with_extension("log").display()
        );
    }
}
