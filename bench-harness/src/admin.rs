//! Cold-path admin calls over one blocking connection: ApiVersions, Metadata, CreateTopics and
//! ListOffsets, encoded with the `kafka-protocol` crate.
//!
//! Runs on the main thread before and after the measured run; a `Connection` is owned by one
//! thread at a time.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{
    create_topics_request::{self, CreatableTopic},
    list_offsets_request, metadata_request, ApiVersionsRequest, ApiVersionsResponse, BrokerId,
    CreateTopicsRequest, CreateTopicsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::tls::Stream;
use crate::wire::{
    self, API_API_VERSIONS, API_CREATE_TOPICS, API_FIND_COORDINATOR, API_LIST_OFFSETS,
    API_METADATA, API_SHARE_ACKNOWLEDGE, API_SHARE_FETCH, API_SHARE_GROUP_HEARTBEAT,
};

/// Socket timeout: a broker that stops answering fails the run instead of hanging it.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

const TOPIC_ALREADY_EXISTS: i16 = 36;

/// Opens a connection with the harness's socket settings: TCP, or TLS under `--tls`.
pub fn connect(address: &str) -> Result<Stream> {
    let stream = TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SOCKET_TIMEOUT))?;
    stream.set_write_timeout(Some(SOCKET_TIMEOUT))?;
    crate::tls::wrap(stream, address)
}

/// Waits until `address` accepts connections: a broker may open its per-shard ports a moment after
/// its bootstrap port.
pub fn wait_connectable(address: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(address) {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() >= deadline => {
                return Err(error).with_context(|| format!("connecting to {address}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A request/response connection for admin calls.
pub struct Connection {
    stream: Stream,
    correlation_id: i32,
    frame: Vec<u8>,
}

impl Connection {
    pub fn open(address: &str) -> Result<Self> {
        Ok(Connection {
            stream: connect(address)?,
            correlation_id: 0,
            frame: Vec::new(),
        })
    }

    pub fn call<Request: Encodable, Response: Decodable>(
        &mut self,
        api_key: i16,
        version: i16,
        request: &Request,
    ) -> Result<Response> {
        self.correlation_id += 1;
        let mut header = Vec::new();
        wire::begin_request(&mut header, api_key, version, self.correlation_id);
        let flexible = is_flexible(api_key, version);
        if flexible {
            // Request header v2: an empty tagged-field section after the client id.
            header.push(0);
        }
        let mut body = BytesMut::new();
        request
            .encode(&mut body, version)
            .with_context(|| format!("encoding API {api_key} v{version}"))?;
        wire::finish_request(&mut header, body.len());
        self.stream.write_all(&header)?;
        self.stream.write_all(&body)?;
        let frame = wire::read_frame(&mut self.stream, &mut self.frame)?;
        let mut response = Bytes::copy_from_slice(frame);
        ensure!(response.len() >= 4, "response without a correlation id");
        let correlation_id = response.get_i32();
        ensure!(
            correlation_id == self.correlation_id,
            "correlation id {correlation_id}, expected {}",
            self.correlation_id
        );
        if flexible {
            // Response header v1: skip its tagged-field section (we send none, expect none).
            ensure!(
                response.remaining() >= 1 && response.get_u8() == 0,
                "unexpected tagged fields in the response header"
            );
        }
        Response::decode(&mut response, version)
            .with_context(|| format!("decoding API {api_key} v{version} response"))
    }
}

/// Whether the request uses the flexible (tagged-field) headers: CreateTopics v5+ (configs longer
/// than an int16 string allows), Metadata v10+ and FindCoordinator v3 (share mode: topic ids, the
/// share group's coordinator), and the share group APIs, flexible in every version.
fn is_flexible(api_key: i16, version: i16) -> bool {
    match api_key {
        API_CREATE_TOPICS => version >= 5,
        API_METADATA => version >= 9,
        API_FIND_COORDINATOR => version >= 3,
        API_SHARE_GROUP_HEARTBEAT | API_SHARE_FETCH | API_SHARE_ACKNOWLEDGE => true,
        _ => false,
    }
}

/// Versions the broker supports, by API key.
#[derive(Debug, Clone, Default)]
pub struct ApiVersions(HashMap<i16, (i16, i16)>);

impl ApiVersions {
    pub fn range(&self, api_key: i16) -> Option<(i16, i16)> {
        self.0.get(&api_key).copied()
    }

    fn pick(&self, api_key: i16, ours: (i16, i16), name: &str) -> Result<i16> {
        wire::negotiate(ours, self.range(api_key), name)
    }
}

pub fn api_versions(connection: &mut Connection) -> Result<ApiVersions> {
    let response: ApiVersionsResponse =
        connection.call(API_API_VERSIONS, 0, &ApiVersionsRequest::default())?;
    ensure!(
        response.error_code == 0,
        "ApiVersions error {}",
        response.error_code
    );
    Ok(ApiVersions(
        response
            .api_keys
            .iter()
            .map(|key| (key.api_key, (key.min_version, key.max_version)))
            .collect(),
    ))
}

/// What the harness needs from Metadata: where every partition's leader listens.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub brokers: HashMap<i32, String>,
    pub controller: Option<i32>,
    /// Topic name -> leader broker id per partition (index = partition id); -1 = no leader.
    pub topics: HashMap<String, Vec<i32>>,
}

pub fn metadata(
    connection: &mut Connection,
    versions: &ApiVersions,
    topics: &[String],
) -> Result<Cluster> {
    let version = versions.pick(API_METADATA, (1, 8), "Metadata")?;
    let request = MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|name| {
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                })
                .collect(),
        ))
        // The field exists from v4; older versions never auto-create on Metadata.
        .with_allow_auto_topic_creation(version < 4);
    let response: MetadataResponse = connection.call(API_METADATA, version, &request)?;
    let mut cluster = Cluster {
        controller: Some(response.controller_id.0).filter(|&id| id >= 0),
        ..Cluster::default()
    };
    for broker in &response.brokers {
        cluster.brokers.insert(
            broker.node_id.0,
            format!("{}:{}", &*broker.host, broker.port),
        );
    }
    for topic in &response.topics {
        let Some(name) = &topic.name else { continue };
        if topic.error_code != 0 {
            continue;
        }
        let mut leaders = vec![-1; topic.partitions.len()];
        for partition in &topic.partitions {
            let index = partition.partition_index;
            ensure!(
                index >= 0 && (index as usize) < leaders.len(),
                "topic {} reports partition {index} of {}",
                &*name.0,
                leaders.len()
            );
            if partition.error_code == 0 {
                leaders[index as usize] = partition.leader_id.0;
            }
        }
        cluster.topics.insert(name.0.to_string(), leaders);
    }
    Ok(cluster)
}

/// Creates the topics that are missing (an existing topic is fine), then waits until Metadata shows
/// every partition of every topic with a leader the harness can reach.
pub fn ensure_topics(
    connection: &mut Connection,
    versions: &ApiVersions,
    topics: &[String],
    partitions: i32,
    configs: &[(&str, String)],
) -> Result<Cluster> {
    let cluster = metadata(connection, versions, topics)?;
    let missing: Vec<&String> = topics
        .iter()
        .filter(|name| !cluster.topics.contains_key(*name))
        .collect();
    if !missing.is_empty() {
        // Config values (10,000 bindings) outgrow the int16 strings of v0-v4.
        let ours = if configs.is_empty() { (0, 4) } else { (5, 7) };
        let version = versions.pick(API_CREATE_TOPICS, ours, "CreateTopics")?;
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                missing
                    .iter()
                    .map(|name| {
                        CreatableTopic::default()
                            .with_name(TopicName(StrBytes::from_string((*name).clone())))
                            .with_num_partitions(partitions)
                            .with_replication_factor(1)
                            .with_configs(
                                configs
                                    .iter()
                                    .map(|(name, value)| {
                                        create_topics_request::CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string((*name).to_owned()))
                                            .with_value(Some(StrBytes::from_string(value.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        // CreateTopics goes to the controller when the broker names one.
        let mut controller_connection;
        let target = match cluster.controller.and_then(|id| cluster.brokers.get(&id)) {
            Some(address) => {
                controller_connection = Connection::open(address)?;
                &mut controller_connection
            }
            None => &mut *connection,
        };
        let response: CreateTopicsResponse = target.call(API_CREATE_TOPICS, version, &request)?;
        for topic in &response.topics {
            if topic.error_code != 0 && topic.error_code != TOPIC_ALREADY_EXISTS {
                bail!(
                    "creating topic {}: error {} {}",
                    &*topic.name.0,
                    topic.error_code,
                    topic.error_message.as_deref().unwrap_or("")
                );
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cluster = metadata(connection, versions, topics)?;
        let ready = topics.iter().all(|name| {
            cluster.topics.get(name).is_some_and(|leaders| {
                !leaders.is_empty() && leaders.iter().all(|id| cluster.brokers.contains_key(id))
            })
        });
        if ready {
            return Ok(cluster);
        }
        ensure!(
            Instant::now() < deadline,
            "topics {topics:?} have no leader for every partition after 30 s: {cluster:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The latest offset (log end) of each listed partition of `topic`, asked of its leader.
pub fn latest_offsets(
    connection: &mut Connection,
    versions: &ApiVersions,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, i64>> {
    let version = versions.pick(API_LIST_OFFSETS, (1, 5), "ListOffsets")?;
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&partition| {
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(-1)
                    })
                    .collect(),
            )]);
    let response: ListOffsetsResponse = connection.call(API_LIST_OFFSETS, version, &request)?;
    let mut offsets = HashMap::new();
    for topic_response in &response.topics {
        for partition in &topic_response.partitions {
            ensure!(
                partition.error_code == 0,
                "ListOffsets {topic}/{}: error {}",
                partition.partition_index,
                partition.error_code
            );
            offsets.insert(partition.partition_index, partition.offset);
        }
    }
    for partition in partitions {
        ensure!(
            offsets.contains_key(partition),
            "ListOffsets answered no offset for {topic}/{partition}"
        );
    }
    Ok(offsets)
}

/// A topic's id (share mode: ShareFetch names topics by id), from Metadata v10+.
pub fn topic_id(
    connection: &mut Connection,
    versions: &ApiVersions,
    topic: &str,
) -> Result<uuid::Uuid> {
    let version = versions.pick(API_METADATA, (10, 12), "Metadata with topic ids")?;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
    let response: MetadataResponse = connection.call(API_METADATA, version, &request)?;
    let found = response
        .topics
        .iter()
        .find(|entry| entry.name.as_ref().is_some_and(|name| &*name.0 == topic));
    match found {
        Some(entry) if entry.error_code == 0 && !entry.topic_id.is_nil() => Ok(entry.topic_id),
        _ => bail!("Metadata v{version} gives topic {topic} no id"),
    }
}

/// The address of a group's coordinator (FindCoordinator v3, key type 0: share groups are
/// groups).
pub fn coordinator(
    connection: &mut Connection,
    versions: &ApiVersions,
    group: &str,
) -> Result<String> {
    let version = versions.pick(API_FIND_COORDINATOR, (3, 3), "FindCoordinator")?;
    let request = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(group.to_owned()))
        .with_key_type(0);
    let response: FindCoordinatorResponse =
        connection.call(API_FIND_COORDINATOR, version, &request)?;
    ensure!(
        response.error_code == 0,
        "FindCoordinator {group}: error {}",
        response.error_code
    );
    Ok(format!("{}:{}", &*response.host, response.port))
}
