//! Bad clients against the real `weir` binary: garbage bytes, a 2 GiB length prefix, frames cut
//! mid-way, unknown api keys, every API with truncated bodies, 1,000 idle connections, a client
//! that never reads its answers, and a produce of 1,000,000 tiny records in one batch. After each
//! case the broker must still serve a well-behaved kcat client (produce, then consume back), and
//! its peak RSS (VmHWM) must stay bounded; the figure is printed for docs/reliability.md.
//!
//! One broker (2 shards on CPUs 0-1, three free ports from the harness) serves every case in
//! order, so that a case that leaks or wedges something shows up in the cases after it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use weir_engine::batch::{build_batch, BatchSpec, RecordSpec};

/// Bootstrap port P (shard ports P+1, P+2): a free run from the harness, one per test binary,
/// so that a copy of this suite running in another worktree never shares a port with this one.
fn port() -> u16 {
    static PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *PORT.get_or_init(|| weir_tests::free_port_range(3).expect("3 free ports"))
}
/// Peak RSS allowed over the whole suite. The broker's floor is a few tens of MiB; the largest
/// single allocation a client can cause is one frame (socket.request.max.bytes, set to 32 MiB here)
/// plus its copy into the log's write buffers.
const PEAK_RSS_KIB_MAX: u64 = 768 << 10;

struct Broker {
    child: Child,
    _dir: tempfile::TempDir,
}

/// Both tests use the same ports: one at a time.
static PORTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Broker {
    fn start(extra: &[&str]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        Broker::start_in(dir, extra)
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Broker {
        let mut child = Command::new(weir_tests::broker_binary().expect("the weir binary"))
            .args(["--data-dir", dir.path().to_str().unwrap()])
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
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("weir exited before it was ready")
                .unwrap();
            if line.contains("weir ready") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Broker { child, _dir: dir }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn assert_alive(&mut self, case: &str) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "weir died during case {case}"
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect() -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// True when the broker closed the connection (reads end or fail) within the read timeout.
fn closed_by_broker(stream: &mut TcpStream) -> bool {
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer to an earlier frame
            Err(error) => {
                return !matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn frame(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> BytesMut {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(text("hostile-test"));
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, key.request_header_version(version))
        .unwrap();
    body.encode(&mut out, version).unwrap();
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    out
}

fn call<R: Request>(stream: &mut TcpStream, version: i16, request: &R) -> R::Response {
    let key = ApiKey::try_from(R::KEY).unwrap();
    stream.write_all(&frame(key, version, 7, request)).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    R::Response::decode(&mut body, version).unwrap()
}

fn create_topic(name: &str, configs: &[(&str, &str)]) {
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(text(name));
    topic.num_partitions = 2;
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
    let response = call(&mut connect(), 5, &request);
    assert_eq!(response.topics[0].error_code, 0, "creating {name}");
}

fn produce_request(topic: &str, records: Bytes) -> ProduceRequest {
    let mut data = PartitionProduceData::default();
    data.index = 0;
    data.records = Some(records);
    let mut topic_data = TopicProduceData::default();
    topic_data.name = TopicName(text(topic));
    topic_data.partition_data.push(data);
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 30_000;
    request.topic_data.push(topic_data);
    request
}

/// Runs kcat with a deadline; its stdout.
fn kcat(args: &[&str], input: &str) -> String {
    let mut child = Command::new("kcat")
        .args(["-b", &format!("127.0.0.1:{}", port())])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat is installed (apt-get install kcat)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kcat {args:?} did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "kcat {args:?}: {:?}", output);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A well-behaved client still works: kcat produces one message (acks=all) and reads the whole
/// topic back.
fn assert_serves_kcat(broker: &mut Broker, case: &str, round: usize) {
    broker.assert_alive(case);
    let message = format!("after-{case}-{round}");
    kcat(
        &["-P", "-t", "well-behaved", "-p", "0", "-X", "acks=all"],
        &format!("{message}\n"),
    );
    let consumed = kcat(
        &[
            "-C",
            "-t",
            "well-behaved",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
        ],
        "",
    );
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), round + 1, "after {case}: {consumed}");
    assert_eq!(lines.last().copied(), Some(message.as_str()));
    println!(
        "case {case:<28} ok; VmRSS {} KiB, VmHWM {} KiB",
        broker.status_kib("VmRSS:"),
        broker.status_kib("VmHWM:")
    );
}

fn garbage_bytes() {
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut junk = vec![0u8; 64 << 10];
    for byte in junk.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let mut stream = connect();
    let _ = stream.write_all(&junk); // the broker may close before reading it all
    assert!(closed_by_broker(&mut stream));
    // Plain text (an HTTP client on the wrong port).
    let mut stream = connect();
    let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: weir\r\n\r\n");
    assert!(closed_by_broker(&mut stream));
}

fn huge_length_prefix() {
    for prefix in [0x7fff_ffffu32, 0x8000_0000, 0xffff_ffff] {
        let mut stream = connect();
        stream.write_all(&prefix.to_be_bytes()).unwrap();
        let _ = stream.write_all(&[0u8; 1024]);
        assert!(closed_by_broker(&mut stream), "prefix {prefix:#x}");
    }
}

fn frames_cut_midway() {
    let request = MetadataRequest::default();
    let whole = frame(ApiKey::Metadata, 9, 1, &request);
    // The client goes away inside the size prefix and inside the body.
    for cut in [2, 4, 6, whole.len() - 1] {
        let mut stream = connect();
        stream.write_all(&whole[..cut]).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        assert!(closed_by_broker(&mut stream), "cut at {cut}");
    }
    // A client that stalls inside a frame and stays connected holds one connection, nothing more.
    let mut stalled = connect();
    stalled.write_all(&[0, 0, 0x10, 0, 1, 2, 3]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(stalled);
}

fn unknown_api_keys() {
    for key in [999i16, -1, 57, 68, i16::MAX] {
        let mut stream = connect();
        let mut bytes = BytesMut::new();
        bytes.put_i32(10);
        bytes.put_i16(key);
        bytes.put_i16(0);
        bytes.put_i32(5);
        bytes.put_i16(-1); // null client id
        stream.write_all(&bytes).unwrap();
        assert!(closed_by_broker(&mut stream), "api key {key}");
    }
    // A known key at a version outside the supported range.
    let mut stream = connect();
    stream
        .write_all(&frame(ApiKey::Produce, 0, 1, &EmptyBody))
        .unwrap();
    assert!(closed_by_broker(&mut stream));
}

/// Every API the broker advertises, at its lowest and highest version, with the body cut at
/// every length. Each frame is well-formed (its size prefix matches), only the body is short.
fn truncated_bodies() -> usize {
    let mut api_stream = connect();
    let versions = call(&mut api_stream, 3, &ApiVersionsRequest::default());
    let batch = build_batch(
        &BatchSpec::default(),
        &[RecordSpec {
            value: Some(b"v"),
            ..RecordSpec::default()
        }],
    )
    .freeze();
    let mut frames = 0;
    for api in &versions.api_keys {
        let key = ApiKey::try_from(api.api_key).unwrap();
        for version in [api.min_version, api.max_version] {
            let body = sample_body(key, version, &batch);
            let full = body.len();
            let header_only = frame(key, version, 1, &EmptyBody);
            for cut in 0..full {
                // One connection per frame: the client half-closes after it, so the broker sees
                // the short body, answers or rejects it, and must then close the connection.
                let mut bytes = BytesMut::new();
                bytes.put_i32((header_only.len() - 4 + cut) as i32);
                bytes.put_slice(&header_only[4..]);
                bytes.put_slice(&body[..cut]);
                let mut stream = connect();
                stream.write_all(&bytes).unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                assert!(
                    closed_by_broker(&mut stream),
                    "{key:?} v{version} cut at {cut} of {full}"
                );
                frames += 1;
            }
        }
    }
    frames
}

/// Encodes nothing: the request header alone.
struct EmptyBody;
impl Encodable for EmptyBody {
    fn encode<B: bytes::BufMut>(&self, _: &mut B, _: i16) -> anyhow::Result<()> {
        Ok(())
    }
    fn compute_size(&self, _: i16) -> anyhow::Result<usize> {
        Ok(0)
    }
}

/// A plausible request body of every supported API (a default one, with some fields set so that
/// the body has nested arrays to cut).
fn sample_body(key: ApiKey, version: i16, batch: &Bytes) -> BytesMut {
    let mut out = BytesMut::new();
    let topic = TopicName(text("well-behaved"));
    macro_rules! encode {
        ($value:expr) => {{
            let _ = $value.encode(&mut out, version);
        }};
    }
    match key {
        ApiKey::Produce => encode!(produce_request("well-behaved", batch.clone())),
        ApiKey::Fetch => {
            let mut partition = fetch_request::FetchPartition::default();
            partition.partition_max_bytes = 1 << 20;
            let mut fetch_topic = fetch_request::FetchTopic::default();
            fetch_topic.topic = topic;
            fetch_topic.partitions.push(partition);
            let mut request = FetchRequest::default();
            request.topics.push(fetch_topic);
            encode!(request)
        }
        ApiKey::Metadata => {
            let mut request = MetadataRequest::default();
            let mut wanted = metadata_request::MetadataRequestTopic::default();
            wanted.name = Some(topic);
            request.topics = Some(vec![wanted]);
            encode!(request)
        }
        ApiKey::CreateTopics => {
            let mut request = CreateTopicsRequest::default();
            let mut creatable = CreatableTopic::default();
            creatable.name = TopicName(text("hostile-created"));
            creatable.num_partitions = 1;
            creatable.replication_factor = 1;
            request.topics.push(creatable);
            encode!(request)
        }
        ApiKey::ListOffsets => encode!(ListOffsetsRequest::default()),
        ApiKey::OffsetCommit => encode!(OffsetCommitRequest::default()),
        ApiKey::OffsetFetch => encode!(OffsetFetchRequest::default()),
        ApiKey::FindCoordinator => encode!(FindCoordinatorRequest::default()),
        ApiKey::JoinGroup => encode!(JoinGroupRequest::default()),
        ApiKey::Heartbeat => encode!(HeartbeatRequest::default()),
        ApiKey::LeaveGroup => encode!(LeaveGroupRequest::default()),
        ApiKey::SyncGroup => encode!(SyncGroupRequest::default()),
        ApiKey::DescribeGroups => encode!(DescribeGroupsRequest::default()),
        ApiKey::ListGroups => encode!(ListGroupsRequest::default()),
        ApiKey::ApiVersions => encode!(ApiVersionsRequest::default()),
        ApiKey::DeleteTopics => encode!(DeleteTopicsRequest::default()),
        ApiKey::InitProducerId => encode!(InitProducerIdRequest::default()),
        ApiKey::OffsetForLeaderEpoch => encode!(OffsetForLeaderEpochRequest::default()),
        ApiKey::DescribeConfigs => encode!(DescribeConfigsRequest::default()),
        ApiKey::AlterConfigs => encode!(AlterConfigsRequest::default()),
        ApiKey::CreatePartitions => encode!(CreatePartitionsRequest::default()),
        ApiKey::IncrementalAlterConfigs => encode!(IncrementalAlterConfigsRequest::default()),
        ApiKey::DescribeCluster => encode!(DescribeClusterRequest::default()),
        _ => share_sample_body(key, version, &mut out),
    }
    out
}

/// `sample_body` of the share-group admin APIs.
fn share_sample_body(key: ApiKey, version: i16, out: &mut BytesMut) {
    let topic = TopicName(text("well-behaved"));
    macro_rules! encode {
        ($value:expr) => {{
            let _ = $value.encode(out, version);
        }};
    }
    match key {
        ApiKey::ShareGroupDescribe => {
            let mut request = ShareGroupDescribeRequest::default();
            request.group_ids.push(GroupId(text("hostile-share")));
            encode!(request)
        }
        ApiKey::DescribeShareGroupOffsets => {
            let mut wanted =
                describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup::default();
            wanted.group_id = GroupId(text("hostile-share"));
            let mut request = DescribeShareGroupOffsetsRequest::default();
            request.groups.push(wanted);
            encode!(request)
        }
        ApiKey::AlterShareGroupOffsets => {
            let mut partition =
                alter_share_group_offsets_request::AlterShareGroupOffsetsRequestPartition::default(
                );
            partition.start_offset = 1;
            let mut altered =
                alter_share_group_offsets_request::AlterShareGroupOffsetsRequestTopic::default();
            altered.topic_name = topic;
            altered.partitions.push(partition);
            let mut request = AlterShareGroupOffsetsRequest::default();
            request.group_id = GroupId(text("hostile-share"));
            request.topics.push(altered);
            encode!(request)
        }
        ApiKey::DeleteShareGroupOffsets => {
            let mut deleted =
                delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic::default();
            deleted.topic_name = topic;
            let mut request = DeleteShareGroupOffsetsRequest::default();
            request.group_id = GroupId(text("hostile-share"));
            request.topics.push(deleted);
            encode!(request)
        }
        _ => {}
    }
}

/// Array counts far beyond the frame (found by the request_decoder fuzz target: a 14-byte
/// DescribeConfigs aborted the broker on a 189 GB allocation), in a flexible and a classic API.
fn huge_array_counts() {
    let classic = [0u8, 32, 0, 1, 0, 0, 0, 9, 0, 0, 0x7f, 0xff, 0xff, 0xff];
    // Metadata v12 (flexible): compact topics array with a varint count near u32::MAX.
    let flexible = [
        0u8, 3, 0, 12, 0, 0, 0, 9, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x0f,
    ];
    for body in [&classic[..], &flexible[..]] {
        let mut stream = connect();
        let mut bytes = BytesMut::new();
        bytes.put_i32(body.len() as i32);
        bytes.put_slice(body);
        stream.write_all(&bytes).unwrap();
        assert!(closed_by_broker(&mut stream));
    }
}

fn idle_connections(broker: &mut Broker) -> Vec<TcpStream> {
    let idle: Vec<TcpStream> = (0..1000).map(|_| connect()).collect();
    assert_serves_kcat(broker, "1000-idle-open", 5);
    idle
}

/// Pipelines Metadata requests without ever reading an answer until the broker stops reading
/// (backpressure: bounded in-flight requests and socket buffers), while kcat is served.
fn never_reads_answers(broker: &mut Broker) -> TcpStream {
    let mut stream = connect();
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut request = MetadataRequest::default();
    request.topics = None; // all topics: a large answer
    let one = frame(ApiKey::Metadata, 9, 1, &request);
    let mut sent = 0usize;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if stream.write_all(&one).is_err() {
            break; // the broker stopped reading: backpressure reached the client
        }
        sent += 1;
    }
    println!("non-reading client: {sent} requests written before the broker stopped reading");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "no backpressure"
    );
    assert_serves_kcat(broker, "client-never-reads", 6);
    stream
}

fn million_tiny_records() {
    create_topic("million", &[("max.message.bytes", "33554432")]);
    let empty = RecordSpec {
        value: Some(b""),
        ..RecordSpec::default()
    };
    let records = vec![empty; 1_000_000];
    let batch = build_batch(&BatchSpec::default(), &records).freeze();
    println!("one batch of 1,000,000 records: {} bytes", batch.len());
    let mut stream = connect();
    let response = call(&mut stream, 7, &produce_request("million", batch.clone()));
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0, "{partition:?}");
    assert_eq!(partition.base_offset, 0);
    // Past the topic's max.message.bytes the same batch is refused with MESSAGE_TOO_LARGE (10).
    create_topic("million-small", &[]);
    let response = call(&mut stream, 7, &produce_request("million-small", batch));
    assert_eq!(response.responses[0].partition_responses[0].error_code, 10);
    // The log continues after the million records.
    let next = build_batch(&BatchSpec::default(), &[empty]).freeze();
    let response = call(&mut stream, 7, &produce_request("million", next));
    assert_eq!(
        response.responses[0].partition_responses[0].base_offset,
        1_000_000
    );
}

#[test]
fn bad_clients_leave_the_broker_serving_with_bounded_memory() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut broker = Broker::start(&["--set", "socket.request.max.bytes=33554432"]);
    create_topic("well-behaved", &[]);
    assert_serves_kcat(&mut broker, "baseline", 0);
    let baseline_kib = broker.status_kib("VmHWM:");

    garbage_bytes();
    assert_serves_kcat(&mut broker, "garbage-bytes", 1);
    huge_length_prefix();
    assert_serves_kcat(&mut broker, "2GiB-length-prefix", 2);
    frames_cut_midway();
    unknown_api_keys();
    huge_array_counts();
    assert_serves_kcat(&mut broker, "cut-frames+unknown-keys+huge-arrays", 3);
    let frames = truncated_bodies();
    println!("truncated bodies: {frames} frames sent");
    assert_serves_kcat(&mut broker, "truncated-bodies", 4);
    let idle = idle_connections(&mut broker);
    let stuck = never_reads_answers(&mut broker);
    drop(idle);
    drop(stuck);
    million_tiny_records();
    assert_serves_kcat(&mut broker, "1M-records-in-one-batch", 7);

    let peak_kib = broker.status_kib("VmHWM:");
    println!("weir peak RSS (VmHWM): baseline {baseline_kib} KiB, after the suite {peak_kib} KiB");
    assert!(
        peak_kib < PEAK_RSS_KIB_MAX,
        "peak RSS {peak_kib} KiB is not bounded"
    );
}

/// Reads one answer and checks its correlation id.
fn read_answer<R: Request>(
    stream: &mut TcpStream,
    version: i16,
    correlation_id: i32,
) -> R::Response {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).unwrap();
    assert_eq!(
        header.correlation_id, correlation_id,
        "answers in request order"
    );
    R::Response::decode(&mut body, version).unwrap()
}

/// The next offset of a partition (ListOffsets, latest), on a connection of its own.
fn high_watermark(topic: &str, partition: i32) -> i64 {
    let mut wanted = list_offsets_request::ListOffsetsPartition::default();
    wanted.partition_index = partition;
    wanted.timestamp = -1;
    let mut wanted_topic = list_offsets_request::ListOffsetsTopic::default();
    wanted_topic.name = TopicName(text(topic));
    wanted_topic.partitions.push(wanted);
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics.push(wanted_topic);
    let response = call(&mut connect(), 1, &request);
    response.topics[0].partitions[0].offset
}

/// What the broker had taken from a pipelining client while its answers were held up.
struct HeldUp {
    /// Produces appended (partition 0's high watermark) while a long poll held the answers.
    appended: i64,
    /// Bytes the client managed to write meanwhile (the broker's reads plus socket buffers).
    written_bytes: usize,
    /// The broker's VmRSS growth meanwhile.
    rss_growth_kib: u64,
}

/// One connection sends a Fetch that long-polls (up to `WAIT_MS`) on an empty partition, then
/// pipelines `count` produces of one `value_bytes` record each to partition 0 from a second
/// thread. Answers are in request order, so nothing is answered until the Fetch is; what the
/// broker reads meanwhile is bounded only by the connection limits. After measuring, kcat must be
/// served meanwhile; then every answer must arrive, in order, every produce acknowledged at the
/// next offset.
#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
fn pipeline_behind_long_poll(
    broker: &mut Broker,
    case: &str,
    topic: &str,
    count: i32,
    value_bytes: usize,
) -> HeldUp {
    const WAIT_MS: i32 = 8000;
    let rss_before_kib = broker.status_kib("VmRSS:");
    let mut stream = connect();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut poll = fetch_request::FetchPartition::default();
    poll.partition = 1;
    poll.partition_max_bytes = 1 << 20;
    let mut poll_topic = fetch_request::FetchTopic::default();
    poll_topic.topic = TopicName(text(topic));
    poll_topic.partitions.push(poll);
    let mut fetch = FetchRequest::default();
    fetch.max_wait_ms = WAIT_MS;
    fetch.min_bytes = 1;
    fetch.max_bytes = 1 << 20;
    fetch.session_epoch = -1;
    fetch.topics.push(poll_topic);
    stream
        .write_all(&frame(ApiKey::Fetch, 11, 0, &fetch))
        .unwrap();

    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sender = stream.try_clone().unwrap();
    sender
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let sending = {
        let written = written.clone();
        let topic = topic.to_string();
        std::thread::spawn(move || {
            for correlation_id in 1..=count {
                let value = vec![correlation_id as u8; value_bytes];
                let record = RecordSpec {
                    value: Some(&value),
                    ..RecordSpec::default()
                };
                let batch = build_batch(&BatchSpec::default(), &[record]).freeze();
                let bytes = frame(
                    ApiKey::Produce,
                    7,
                    correlation_id,
                    &produce_request(&topic, batch),
                );
                for chunk in bytes.chunks(64 << 10) {
                    sender.write_all(chunk).unwrap();
                    written.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(2000));
    let held = HeldUp {
        appended: high_watermark(topic, 0),
        written_bytes: written.load(std::sync::atomic::Ordering::Relaxed),
        rss_growth_kib: broker.status_kib("VmRSS:").saturating_sub(rss_before_kib),
    };
    println!(
        "{case}: while the long poll held the answers: {} of {count} produces appended, \
         {} KiB written by the client, broker VmRSS +{} KiB",
        held.appended,
        held.written_bytes >> 10,
        held.rss_growth_kib
    );
    assert_serves_kcat_meanwhile(broker, case);
    assert!(
        started.elapsed() < Duration::from_millis(WAIT_MS as u64 - 1000),
        "kcat took too long to show it was served while the answers were held"
    );

    let answer = read_answer::<FetchRequest>(&mut stream, 11, 0);
    assert_eq!(answer.responses[0].partitions[0].error_code, 0);
    for correlation_id in 1..=count {
        let answer = read_answer::<ProduceRequest>(&mut stream, 7, correlation_id);
        let partition = &answer.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0, "produce {correlation_id}");
        assert_eq!(partition.base_offset, (correlation_id - 1) as i64);
    }
    sending.join().unwrap();
    assert_eq!(high_watermark(topic, 0), count as i64);
    held
}

/// kcat produces and consumes on its own topic while another connection is held up.
fn assert_serves_kcat_meanwhile(broker: &mut Broker, case: &str) {
    broker.assert_alive(case);
    let message = format!("meanwhile-{case}");
    kcat(
        &["-P", "-t", "meanwhile", "-p", "0", "-X", "acks=all"],
        &format!("{message}\n"),
    );
    let consumed = kcat(
        &["-C", "-t", "meanwhile", "-p", "0", "-o", "-1", "-e", "-q"],
        "",
    );
    assert_eq!(consumed.lines().last(), Some(message.as_str()), "{case}");
}

/// `weir.connection.max.inflight.requests` and `weir.connection.max.buffer.bytes` bite: with the
/// answers of a pipelining client held up, the broker reads only what they allow (so the client's
/// requests wait in socket buffers, not in the broker's memory), serves other clients meanwhile,
/// and then answers every request, in order.
#[test]
fn connection_limits_hold_back_a_pipelining_client() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    {
        let mut broker = Broker::start(&["--set", "weir.connection.max.inflight.requests=2"]);
        create_topic("inflight", &[]);
        let held = pipeline_behind_long_poll(&mut broker, "inflight-2", "inflight", 20, 100);
        // The Fetch and one produce are the two requests in flight.
        assert!(
            held.appended <= 1,
            "in-flight limit 2: {} appended",
            held.appended
        );
    }
    {
        let mut broker = Broker::start(&["--set", "weir.connection.max.buffer.bytes=2097152"]);
        create_topic("buffered", &[("max.message.bytes", "8388608")]);
        let held = pipeline_behind_long_poll(&mut broker, "buffer-2MiB", "buffered", 64, 1 << 20);
        // 1 MiB frames in a 2 MiB budget next to the Fetch: one is read ahead, the next waits.
        assert!(
            held.appended <= 1,
            "buffer 2 MiB: {} appended",
            held.appended
        );
        assert!(
            held.rss_growth_kib < 24 << 10,
            "buffer 2 MiB: broker RSS grew {} KiB",
            held.rss_growth_kib
        );
        // One frame larger than the whole budget is still read, once nothing else is held.
        let value = vec![9u8; 3 << 20];
        let record = RecordSpec {
            value: Some(&value),
            ..RecordSpec::default()
        };
        let batch = build_batch(&BatchSpec::default(), &[record]).freeze();
        let response = call(&mut connect(), 7, &produce_request("buffered", batch));
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!((partition.error_code, partition.base_offset), (0, 64));
    }
}

/// Connection limits of 0, negative or not a number stop the broker at start with a message
/// naming the setting, from `--set` and from the TOML file alike.
#[test]
fn connection_limits_are_validated_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("weir.toml");
    std::fs::write(&toml, "weir.connection.max.buffer.bytes = 0\n").unwrap();
    let toml = toml.to_str().unwrap();
    let cases: [&[&str]; 5] = [
        &["--set", "weir.connection.max.inflight.requests=0"],
        &["--set", "weir.connection.max.inflight.requests=-3"],
        &["--set", "weir.connection.max.buffer.bytes=0"],
        &["--set", "weir.connection.max.buffer.bytes=many"],
        &["--config", toml],
    ];
    for args in cases {
        let output = Command::new(weir_tests::broker_binary().expect("the weir binary"))
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args([
                "--listen",
                "127.0.0.1:1",
                "--cpus",
                "0",
                "--amqp-listen",
                "none",
                "--metrics-listen",
                "none",
            ])
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(
            stderr.contains("weir.connection.max."),
            "{args:?}: {stderr}"
        );
        println!("{args:?}: {}", stderr.lines().next().unwrap_or_default());
    }
}

/// A listening socket with SO_REUSEPORT on 127.0.0.1:`port` whose accept queue is full, so that
/// connects to it time out: weir's connect probe sees the port as free and binds beside it, as it
/// would beside a broker that starts at the same moment.
fn silent_reuseport_listener(port: u16) -> (std::os::fd::OwnedFd, Vec<TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor owned here; the address is a valid sockaddr_in.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let one: libc::c_int = 1;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0);
        let mut address: libc::sockaddr_in = std::mem::zeroed();
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        address.sin_port = port.to_be();
        address.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let bound = libc::bind(
            fd,
            &address as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(bound, 0, "binding {port}");
        assert_eq!(libc::listen(fd, 0), 0);
        std::os::fd::OwnedFd::from_raw_fd(fd)
    };
    // Fill the accept queue: later connects get no answer.
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let filling: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&target, Duration::from_millis(200)).ok())
        .collect();
    (fd, filling)
}

/// Another process listening on the broker's port with SO_REUSEPORT (which a connect probe cannot
/// always see) makes the broker refuse to start rather than share connections with it.
#[test]
fn a_second_listener_on_the_port_stops_the_start() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let (_listener, _filling) = silent_reuseport_listener(port());
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(weir_tests::broker_binary().expect("the weir binary"))
        .args(["--data-dir", dir.path().to_str().unwrap()])
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
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{}", stderr.lines().next().unwrap_or_default());
    assert!(
        !output.status.success(),
        "weir started beside another listener"
    );
    assert!(
        stderr.contains("is in use: another process listens on"),
        "{stderr}"
    );
}

struct Mount(PathBuf);

impl Mount {
    /// A size-limited tmpfs at `path`; `None` where mounting is not permitted (not root).
    fn tmpfs(path: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Mount(path.into()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn fetch_values(stream: &mut TcpStream, topic: &str) -> Vec<Bytes> {
    let mut values = Vec::new();
    let mut offset = 0;
    loop {
        let mut partition = fetch_request::FetchPartition::default();
        partition.fetch_offset = offset;
        partition.partition_max_bytes = 4 << 20;
        let mut fetch_topic = fetch_request::FetchTopic::default();
        fetch_topic.topic = TopicName(text(topic));
        fetch_topic.partitions.push(partition);
        let mut request = FetchRequest::default();
        request.max_bytes = 4 << 20;
        request.session_epoch = -1;
        request.topics.push(fetch_topic);
        let response = call(stream, 11, &request);
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0);
        let mut records = data.records.clone().unwrap_or_default();
        let before = values.len();
        while bytes::Buf::has_remaining(&records) {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut records).unwrap();
            for record in set.records {
                assert_eq!(record.offset, values.len() as i64);
                values.push(record.value.unwrap());
            }
        }
        offset = values.len() as i64;
        if offset >= data.high_watermark || values.len() == before {
            return values;
        }
    }
}

/// Disk full: on a 64 MiB tmpfs, produces get KAFKA_STORAGE_ERROR (56), everything acknowledged
/// before reads back intact, and writes are accepted again (at the next offset) once space returns.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
fn disk_full_gives_storage_error_and_recovers() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let outer = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(&outer.path().join("mnt"), "64m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    // Space that is given back later.
    let filler = mount.0.join("filler");
    std::fs::write(&filler, vec![7u8; 16 << 20]).unwrap();
    let data = tempfile::tempdir_in(&mount.0).unwrap();
    let mut broker = Broker::start_in(data, &[]);
    create_topic(
        "full",
        &[("flush.messages", "1"), ("segment.bytes", "8388608")],
    );
    let mut stream = connect();
    let mut acked: Vec<Bytes> = Vec::new();
    let mut storage_error = None;
    for round in 0..400u32 {
        let value = vec![(round % 251) as u8; 256 << 10];
        let record = RecordSpec {
            value: Some(&value),
            ..RecordSpec::default()
        };
        let batch = build_batch(&BatchSpec::default(), &[record]).freeze();
        let response = call(&mut stream, 7, &produce_request("full", batch));
        let answer = &response.responses[0].partition_responses[0];
        if answer.error_code != 0 {
            storage_error = Some(answer.error_code);
            break;
        }
        assert_eq!(answer.base_offset, acked.len() as i64);
        acked.push(Bytes::from(value));
    }
    println!(
        "disk full after {} acknowledged 256 KiB records",
        acked.len()
    );
    assert_eq!(
        storage_error,
        Some(56),
        "KAFKA_STORAGE_ERROR once the disk is full"
    );
    // Still full: still an error, not a hang or a crash.
    let small = build_batch(
        &BatchSpec::default(),
        &[RecordSpec {
            value: Some(b"x"),
            ..RecordSpec::default()
        }],
    )
    .freeze();
    let response = call(&mut stream, 7, &produce_request("full", small.clone()));
    let still_full = response.responses[0].partition_responses[0].error_code;
    println!("produce while still full: error {still_full}");
    broker.assert_alive("disk-full");
    assert_eq!(
        fetch_values(&mut stream, "full"),
        acked,
        "acknowledged records intact"
    );

    std::fs::remove_file(&filler).unwrap();
    let mut resumed = None;
    for _ in 0..50 {
        let response = call(&mut stream, 7, &produce_request("full", small.clone()));
        let answer = &response.responses[0].partition_responses[0];
        if answer.error_code == 0 {
            resumed = Some(answer.base_offset);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let resumed = resumed.expect("writes resume once space returns");
    assert!(
        resumed >= acked.len() as i64,
        "the log continues after the acknowledged records"
    );
    let values = fetch_values(&mut stream, "full");
    assert_eq!(
        &values[..acked.len()],
        &acked[..],
        "acknowledged records intact after resuming"
    );
    assert_eq!(values.last().map(|v| &v[..]), Some(&b"x"[..]));
    drop(broker);
}
