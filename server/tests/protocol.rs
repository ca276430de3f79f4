//! Protocol details no client library exercises, against the real `weir` binary over raw TCP:
//! ApiVersions fallback, bad frames, acks=0, forwarding through the bootstrap port, error codes,
//! long polls, clean shutdown and metadata persistence. Requests are encoded with kafka-protocol.
//!
//! Every test uses its own data dir and ports (19110-19199) and 2 shards on CPUs 0-1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

struct Broker {
    child: Child,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Broker {
    fn start(port: u16, extra: &[&str]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = Broker::start_in(dir.path(), port, extra);
        broker._dir = Some(dir);
        broker
    }

    fn start_in(dir: &std::path::Path, port: u16, extra: &[&str]) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--cpus",
                "0-1",
                "--amqp-listen",
                "none",
                // Tests run side by side: none may take the default metrics port.
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
                assert!(
                    line.contains(&format!("broker ports {}-{}", port + 1, port + 2)),
                    "{line}"
                );
                break;
            }
        }
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Broker {
            child,
            port,
            _dir: None,
        }
    }

    fn connect(&self, port_offset: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.port + port_offset)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client { stream, next_id: 1 }
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    stream: TcpStream,
    next_id: i32,
}

impl Client {
    fn send_raw(&mut self, key: ApiKey, version: i16, body: &impl Encodable) -> i32 {
        let correlation_id = self.next_id;
        self.next_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_static_str("protocol-test"));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header
            .encode(&mut frame, key.request_header_version(version))
            .unwrap();
        body.encode(&mut frame, version).unwrap();
        let size = (frame.len() - 4) as i32;
        frame[0..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&frame).unwrap();
        correlation_id
    }

    /// Reads one response frame: (correlation id, rest).
    fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size)?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let key = ApiKey::try_from(R::KEY).unwrap();
        let correlation_id = self.send_raw(key, version, request);
        let mut frame = self.read_frame().unwrap();
        let header =
            ResponseHeader::decode(&mut frame, R::Response::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        R::Response::decode(&mut frame, version).unwrap()
    }

    /// True when the broker closed the connection.
    fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn create_topic(client: &mut Client, name: &str, partitions: i32) {
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(text(name));
    topic.num_partitions = partitions;
    topic.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics.push(topic);
    request.timeout_ms = 5000;
    let response = client.call(5, &request);
    assert_eq!(
        response.topics[0].error_code, 0,
        "{:?}",
        response.topics[0].error_message
    );
    assert_eq!(response.topics[0].num_partitions, partitions);
}

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, value)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i as i64,
            key: None,
            value: Some(Bytes::from(value.to_string())),
            headers: Default::default(),
        })
        .collect();
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    out.freeze()
}

fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    let mut data = PartitionProduceData::default();
    data.index = partition;
    data.records = Some(records);
    let mut topic_data = TopicProduceData::default();
    topic_data.name = TopicName(text(topic));
    topic_data.partition_data.push(data);
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 5000;
    request.topic_data.push(topic_data);
    request
}

fn produce(client: &mut Client, topic: &str, partition: i32, records: Bytes) -> (i16, i64) {
    let response = client.call(7, &produce_request(topic, partition, 1, records));
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    let mut fetch = FetchPartition::default();
    fetch.partition = partition;
    fetch.fetch_offset = offset;
    fetch.partition_max_bytes = 1 << 20;
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = TopicName(text(topic));
    fetch_topic.partitions.push(fetch);
    let mut request = FetchRequest::default();
    request.max_wait_ms = max_wait_ms;
    request.min_bytes = 1;
    request.max_bytes = 50 << 20;
    request.session_epoch = -1;
    request.topics.push(fetch_topic);
    request
}

/// (error, high watermark, values)
fn fetch(
    client: &mut Client,
    version: i16,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> (i16, i64, Vec<String>) {
    let response = client.call(
        version,
        &fetch_request(topic, partition, offset, max_wait_ms),
    );
    let data = &response.responses[0].partitions[0];
    let mut records = data.records.clone().expect("records are never null");
    let mut values = Vec::new();
    while records.has_remaining() {
        for record in RecordBatchDecoder::decode(&mut records).unwrap().records {
            values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
    }
    (data.error_code, data.high_watermark, values)
}

#[test]
fn api_versions_fallback_and_bad_frames() {
    let broker = Broker::start(19110, &[]);
    let mut client = broker.connect(0);

    // An ApiVersions version the broker does not know: a v0-schema answer with error 35.
    let correlation_id = 99;
    client
        .stream
        .write_all(&[0, 0, 0, 10, 0, 18, 0, 99, 0, 0, 0, 99, 0xff, 0xff])
        .unwrap();
    let mut frame = client.read_frame().unwrap();
    assert_eq!(frame.get_i32(), correlation_id);
    let response = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(response.error_code, 35);
    assert!(response
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16 && k.min_version == 3));

    // Known versions, including v3/v4 (flexible request, v0 response header).
    for version in [0, 1, 2, 3, 4] {
        let response = client.call(version, &ApiVersionsRequest::default());
        assert_eq!(response.error_code, 0, "v{version}");
        assert!(response
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Fetch as i16));
    }

    // A frame larger than socket.request.max.bytes closes that connection only.
    let mut big = broker.connect(0);
    big.stream.write_all(&(200i32 << 20).to_be_bytes()).unwrap();
    assert!(big.is_closed());
    // Garbage inside a frame, a short frame, a negative size, an unknown API key.
    for junk in [
        &[0, 0, 0, 12, 0, 0, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8][..],
        &[0, 0, 0, 2, 0, 0],
        &[0xff, 0xff, 0xff, 0xf0],
        &[0, 0, 0, 8, 3, 231, 0, 0, 0, 0, 0, 1],
    ] {
        let mut bad = broker.connect(0);
        bad.stream.write_all(junk).unwrap();
        assert!(bad.is_closed(), "{junk:?}");
    }
    // A truncated frame followed by a hang-up.
    let mut cut = broker.connect(0);
    cut.stream.write_all(&[0, 0, 0, 100, 0, 18, 0, 0]).unwrap();
    drop(cut);
    // Unsupported (not ApiVersions) version: closed.
    let mut old = broker.connect(0);
    old.send_raw(ApiKey::Produce, 2, &ApiVersionsRequest::default());
    assert!(old.is_closed());

    // Tiny frames whose arrays claim billions of elements (the decoder reserves before it
    // reads): the connection closes, the broker lives.
    let huge_arrays: [&[u8]; 3] = [
        // Metadata v1, topics: i32 0x7fffffff
        &[0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        // Produce v7: transactional id null, acks 1, timeout 0, topics: i32 0x7fffffff
        &[
            0, 0, 0, 7, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff,
            0xff,
        ],
        // Metadata v9 (flexible): client id null, no tags, topics: uvarint 0xffffffff
        &[
            0, 3, 0, 9, 0, 0, 0, 3, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f,
        ],
    ];
    for body in huge_arrays {
        let mut hostile = broker.connect(0);
        hostile
            .stream
            .write_all(&(body.len() as i32).to_be_bytes())
            .unwrap();
        hostile.stream.write_all(body).unwrap();
        assert!(hostile.is_closed(), "{body:?}");
    }

    // The first connection is unaffected.
    let response = client.call(12, &MetadataRequest::default());
    assert_eq!(response.brokers.len(), 2);
    assert_eq!(broker.stop().code(), Some(0));
}

#[test]
fn produce_and_fetch_forwarded_through_every_port() {
    let broker = Broker::start(19120, &[]);
    let mut admin = broker.connect(0);
    create_topic(&mut admin, "spread", 4);
    let metadata = admin.call(9, &MetadataRequest::default().with_topics(None));
    let leaders: Vec<i32> = metadata.topics[0]
        .partitions
        .iter()
        .map(|p| p.leader_id.0)
        .collect();
    assert!(
        leaders.contains(&0) && leaders.contains(&1),
        "partitions spread over both shards: {leaders:?}"
    );

    // Every port (bootstrap, broker 0, broker 1) accepts every partition: forwarding.
    for (round, port_offset) in [0u16, 1, 2].into_iter().enumerate() {
        let mut client = broker.connect(port_offset);
        for partition in 0..4 {
            let value = format!("r{round}p{partition}");
            let (error, base) = produce(&mut client, "spread", partition, batch(&[&value, "x"]));
            assert_eq!(
                (error, base),
                (0, 2 * round as i64),
                "port +{port_offset} partition {partition}"
            );
        }
    }
    for port_offset in [0u16, 1, 2] {
        let mut client = broker.connect(port_offset);
        for version in [4, 11, 12] {
            for partition in 0..4 {
                let (error, high_watermark, values) =
                    fetch(&mut client, version, "spread", partition, 0, 0);
                assert_eq!((error, high_watermark), (0, 6));
                assert_eq!(
                    values,
                    vec![
                        format!("r0p{partition}"),
                        "x".into(),
                        format!("r1p{partition}"),
                        "x".into(),
                        format!("r2p{partition}"),
                        "x".into()
                    ]
                );
                // At the end: zero-length records, not null.
                let (error, _, values) = fetch(&mut client, version, "spread", partition, 6, 0);
                assert_eq!((error, values.len()), (0, 0));
                let (error, _, _) = fetch(&mut client, version, "spread", partition, 99, 0);
                assert_eq!(error, 1, "OFFSET_OUT_OF_RANGE");
            }
        }
    }
    // ListOffsets: earliest, latest, by timestamp.
    let mut request = ListOffsetsRequest::default();
    let mut topic = kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default();
    topic.name = TopicName(text("spread"));
    for (partition, timestamp) in [(0, -2), (1, -1), (2, 1_700_000_000_000)] {
        let mut p = kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = timestamp;
        topic.partitions.push(p);
    }
    request.topics.push(topic);
    let response = admin.call(5, &request);
    let offsets: Vec<i64> = response.topics[0]
        .partitions
        .iter()
        .map(|p| p.offset)
        .collect();
    assert_eq!(offsets, vec![0, 6, 0]);
    assert_eq!(broker.stop().code(), Some(0));
}

#[test]
fn acks_zero_gets_no_answer_and_errors_have_codes() {
    let broker = Broker::start(
        19130,
        &[
            "--set",
            "message.max.bytes=2000",
            "--set",
            "auto.create.topics.enable=false",
        ],
    );
    let mut client = broker.connect(0);
    create_topic(&mut client, "t", 2);

    // acks=0: no response; the next answer on the connection is the Metadata one.
    client.send_raw(
        ApiKey::Produce,
        7,
        &produce_request("t", 0, 0, batch(&["quiet"])),
    );
    let response = client.call(1, &MetadataRequest::default().with_topics(None));
    assert_eq!(response.topics.len(), 1);
    // acks=0 promises nothing about visibility: long-poll until the write lands.
    let (_, high_watermark, values) = fetch(&mut client, 11, "t", 0, 0, 10_000);
    assert_eq!((high_watermark, values), (1, vec!["quiet".to_string()]));

    // Unknown topic / partition.
    assert_eq!(produce(&mut client, "nope", 0, batch(&["a"])).0, 3);
    assert_eq!(produce(&mut client, "t", 7, batch(&["a"])).0, 3);
    assert_eq!(fetch(&mut client, 11, "nope", 0, 0, 0).0, 3);
    // auto-create disabled: Metadata reports the topic unknown.
    let mut request = MetadataRequest::default();
    let mut wanted = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    wanted.name = Some(TopicName(text("nope")));
    request.topics = Some(vec![wanted]);
    request.allow_auto_topic_creation = true;
    assert_eq!(client.call(9, &request).topics[0].error_code, 3);
    // Bad CRC: CORRUPT_MESSAGE.
    let mut corrupt = BytesMut::from(&batch(&["a", "b"])[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(produce(&mut client, "t", 1, corrupt.freeze()).0, 2);
    // Not even a batch: CORRUPT_MESSAGE.
    assert_eq!(
        produce(&mut client, "t", 1, Bytes::from_static(b"garbage")).0,
        2
    );
    // Larger than message.max.bytes: MESSAGE_TOO_LARGE.
    let big = "x".repeat(5000);
    assert_eq!(produce(&mut client, "t", 1, batch(&[&big])).0, 10);
    // Bad acks.
    let response = client.call(7, &produce_request("t", 1, 5, batch(&["a"])));
    assert_eq!(response.responses[0].partition_responses[0].error_code, 21);
    // Nothing of the above reached the log.
    let (_, high_watermark, values) = fetch(&mut client, 11, "t", 1, 0, 0);
    assert_eq!(high_watermark, 0, "{values:?}");
    assert_eq!(broker.stop().code(), Some(0));
}

#[test]
fn long_poll_wakes_on_produce_from_another_shard() {
    let broker = Broker::start(19140, &[]);
    let mut admin = broker.connect(0);
    create_topic(&mut admin, "wait", 2);
    for partition in 0..2 {
        // The consumer talks to broker 0, the producer to broker 1: one side is always forwarded.
        let mut consumer = broker.connect(1);
        let correlation_id = consumer.send_raw(
            ApiKey::Fetch,
            11,
            &fetch_request("wait", partition, 0, 10_000),
        );
        std::thread::sleep(Duration::from_millis(200));
        let mut producer = broker.connect(2);
        assert_eq!(
            produce(&mut producer, "wait", partition, batch(&["woke"])).0,
            0
        );
        let mut frame = consumer.read_frame().unwrap();
        assert_eq!(frame.get_i32(), correlation_id);
        let response = FetchResponse::decode(&mut frame, 11).unwrap();
        let records = response.responses[0].partitions[0].records.clone().unwrap();
        assert!(!records.is_empty(), "partition {partition}: woke with data");
    }
    assert_eq!(broker.stop().code(), Some(0));
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
fn topics_configs_and_producer_ids_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let producer_id;
    {
        let broker = Broker::start_in(dir.path(), 19150, &[]);
        let mut client = broker.connect(0);
        create_topic(&mut client, "kept", 3);
        // Auto-create through Metadata.
        let mut request = MetadataRequest::default();
        let mut wanted =
            kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
        wanted.name = Some(TopicName(text("auto")));
        request.topics = Some(vec![wanted]);
        request.allow_auto_topic_creation = true;
        let response = client.call(9, &request);
        assert_eq!(
            (
                response.topics[0].error_code,
                response.topics[0].partitions.len()
            ),
            (0, 1)
        );
        // A topic config.
        let mut alter = IncrementalAlterConfigsRequest::default();
        let mut resource = kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource::default();
        resource.resource_type = 2;
        resource.resource_name = text("kept");
        let mut config =
            kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig::default();
        config.name = text("flush.messages");
        config.value = Some(text("1"));
        resource.configs.push(config);
        alter.resources.push(resource);
        let altered = client.call(1, &alter);
        assert_eq!(
            altered.responses[0].error_code, 0,
            "{:?}",
            altered.responses[0]
        );
        // Producer ids are unique.
        let first = client.call(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60000),
        );
        let second = client.call(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60000),
        );
        assert_eq!(first.error_code, 0);
        assert_ne!(first.producer_id, second.producer_id);
        producer_id = second.producer_id.0;
        assert_eq!(broker.stop().code(), Some(0));
    }
    let broker = Broker::start_in(dir.path(), 19150, &[]);
    let mut client = broker.connect(0);
    let metadata = client.call(12, &MetadataRequest::default().with_topics(None));
    let mut names: Vec<(String, usize)> = metadata
        .topics
        .iter()
        .map(|t| (t.name.clone().unwrap().0.to_string(), t.partitions.len()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![("auto".to_string(), 1), ("kept".to_string(), 3)]
    );
    let mut describe = DescribeConfigsRequest::default();
    let mut resource =
        kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default();
    resource.resource_type = 2;
    resource.resource_name = text("kept");
    describe.resources.push(resource);
    let response = client.call(4, &describe);
    let flush = response.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == "flush.messages")
        .unwrap_or_else(|| panic!("{:?}", response.results[0]));
    assert_eq!(flush.value.as_ref().map(|v| v.as_str()), Some("1"));
    assert_eq!(flush.config_source, 1);
    let next = client.call(
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60000),
    );
    assert!(
        next.producer_id.0 > producer_id,
        "producer ids keep growing across restarts"
    );
    // Delete; recreate with a different count.
    let mut delete = DeleteTopicsRequest::default();
    delete.topic_names.push(TopicName(text("kept")));
    assert_eq!(client.call(4, &delete).responses[0].error_code, 0);
    create_topic(&mut client, "kept", 2);
    assert_eq!(broker.stop().code(), Some(0));
}

#[test]
fn retention_runs_on_every_shard() {
    let broker = Broker::start(19160, &["--set", "log.retention.check.interval.ms=100"]);
    let mut client = broker.connect(0);
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(text("short"));
    topic.num_partitions = 2;
    topic.replication_factor = 1;
    for (name, value) in [("retention.ms", "500"), ("segment.bytes", "1024")] {
        let mut config =
            kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default();
        config.name = text(name);
        config.value = Some(text(value));
        topic.configs.push(config);
    }
    let mut request = CreateTopicsRequest::default();
    request.topics.push(topic);
    assert_eq!(client.call(5, &request).topics[0].error_code, 0);
    let value = "v".repeat(300);
    for partition in 0..2 {
        for _ in 0..20 {
            assert_eq!(
                produce(&mut client, "short", partition, batch(&[&value])).0,
                0
            );
        }
    }
    // Old segments go once they are older than retention.ms (record timestamps are from 2023).
    let earliest = |client: &mut Client, partition: i32| {
        let mut request = ListOffsetsRequest::default();
        let mut topic = kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default();
        topic.name = TopicName(text("short"));
        let mut p = kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default();
        p.partition_index = partition;
        p.timestamp = -2;
        topic.partitions.push(p);
        request.topics.push(topic);
        client.call(5, &request).topics[0].partitions[0].offset
    };
    for partition in 0..2 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while earliest(&mut client, partition) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "partition {partition}: retention never ran"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(broker.stop().code(), Some(0));
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
fn group_requests_reach_the_coordinator_shard_from_any_port() {
    let broker = Broker::start(19170, &[]);
    let group = "forwarded-group";
    let mut bootstrap = broker.connect(0);
    let mut find = FindCoordinatorRequest::default();
    find.key = text(group);
    let found = bootstrap.call(3, &find);
    assert_eq!(found.error_code, 0);
    let owner = found.node_id.0 as u16;
    assert_eq!(found.port, (broker.port + 1 + owner) as i32);
    let other = 1 - owner;

    // JoinGroup through the shard that does NOT coordinate the group: forwarded, so the
    // coordinator's answer (MEMBER_ID_REQUIRED with an id, KIP-394), not COORDINATOR_NOT_AVAILABLE.
    let mut wrong = broker.connect(1 + other);
    let mut join = JoinGroupRequest::default();
    join.group_id = GroupId(text(group));
    join.session_timeout_ms = 10_000;
    join.rebalance_timeout_ms = 10_000;
    join.member_id = text("");
    join.group_instance_id = None;
    join.protocol_type = text("consumer");
    let mut protocol =
        kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default();
    protocol.name = text("range");
    protocol.metadata = Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0]);
    join.protocols.push(protocol);
    let joined = wrong.call(5, &join);
    assert_eq!(joined.error_code, 79, "MEMBER_ID_REQUIRED");
    assert!(!joined.member_id.is_empty());

    // OffsetCommit / OffsetFetch through the wrong shard too (simple commit, generation -1).
    let mut commit = OffsetCommitRequest::default();
    commit.group_id = GroupId(text("committer"));
    commit.generation_id_or_member_epoch = -1;
    commit.member_id = text("");
    commit.group_instance_id = None;
    let mut topic =
        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic::default();
    topic.name = TopicName(text("some-topic"));
    let mut partition =
        kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition::default();
    partition.partition_index = 0;
    partition.committed_offset = 42;
    partition.committed_metadata = None;
    topic.partitions.push(partition);
    commit.topics.push(topic);
    for port_offset in [0u16, 1, 2] {
        let mut client = broker.connect(port_offset);
        let committed = client.call(7, &commit);
        assert_eq!(
            committed.topics[0].partitions[0].error_code, 0,
            "port +{port_offset}"
        );
        let mut fetch = OffsetFetchRequest::default();
        fetch.group_id = GroupId(text("committer"));
        let mut wanted =
            kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default();
        wanted.name = TopicName(text("some-topic"));
        wanted.partition_indexes = vec![0];
        fetch.topics = Some(vec![wanted]);
        let fetched = client.call(7, &fetch);
        assert_eq!(
            fetched.topics[0].partitions[0].committed_offset, 42,
            "port +{port_offset}"
        );
    }

    // ListGroups: a broker port lists its own groups; the bootstrap port lists every shard's.
    let listed = |client: &mut Client| -> Vec<String> {
        let mut names: Vec<String> = client
            .call(3, &ListGroupsRequest::default())
            .groups
            .iter()
            .map(|g| g.group_id.0.to_string())
            .collect();
        names.sort();
        names
    };
    let all = listed(&mut bootstrap);
    assert!(
        all.contains(&group.to_string()) && all.contains(&"committer".to_string()),
        "{all:?}"
    );
    let mut per_broker: Vec<String> = Vec::new();
    for port_offset in [1u16, 2] {
        per_broker.extend(listed(&mut broker.connect(port_offset)));
    }
    per_broker.sort();
    assert_eq!(
        per_broker, all,
        "each group is listed by exactly one broker"
    );
    assert_eq!(broker.stop().code(), Some(0));
}

#[test]
fn advertise_bootstrap_is_one_broker_reached_by_forwarding() {
    let broker = Broker::start(19180, &["--advertise-bootstrap"]);
    let mut client = broker.connect(0);
    create_topic(&mut client, "single", 4);
    let metadata = client.call(9, &MetadataRequest::default().with_topics(None));
    assert_eq!(metadata.brokers.len(), 1);
    assert_eq!(
        (metadata.brokers[0].node_id.0, metadata.brokers[0].port),
        (0, broker.port as i32)
    );
    assert!(metadata.topics[0]
        .partitions
        .iter()
        .all(|p| p.leader_id.0 == 0));
    for partition in 0..4 {
        assert_eq!(
            produce(&mut client, "single", partition, batch(&["one"])).0,
            0
        );
        assert_eq!(
            fetch(&mut client, 11, "single", partition, 0, 0).2,
            vec!["one".to_string()]
        );
    }
    assert_eq!(broker.stop().code(), Some(0));
}
