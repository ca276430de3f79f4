//! Share groups (KIP-932) through raw protocol requests against the real binary: what no client
//! this suite has sends (librdkafka 2.16 has no share-group admin API: ShareGroupDescribe, the
//! share-group offset APIs, ListGroups' "share" type), and hostile requests on the share data
//! path, each of which must be answered with its error and leave the connection usable.
//!
//! Requests are encoded with kafka-protocol, as in `hostile.rs`; the header's client id is
//! `share-admin-test`, which ShareGroupDescribe must show back.

use anyhow::{ensure, Context, Result};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic,
};
use kafka_protocol::messages::*;
use weir_engine::batch::{build_batch, BatchSpec, RecordSpec};
use weir_tests::{python, summary, Broker, BrokerOptions};

#[path = "support/raw_client.rs"]
mod raw_client;
use raw_client::{text, Client};

const CLIENT_ID: &str = "share-admin-test";

fn create_topic(client: &mut Client, name: &str, partitions: i32) -> Result<()> {
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(text(name));
    topic.num_partitions = partitions;
    topic.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics.push(topic);
    request.timeout_ms = 5000;
    let response = client.call(5, &request)?;
    ensure!(response.topics[0].error_code == 0, "creating {name}");
    Ok(())
}

fn topic_id(client: &mut Client, name: &str) -> Result<uuid::Uuid> {
    let mut wanted = metadata_request::MetadataRequestTopic::default();
    wanted.name = Some(TopicName(text(name)));
    let mut request = MetadataRequest::default();
    request.topics = Some(vec![wanted]);
    let response = client.call(12, &request)?;
    Ok(response.topics[0].topic_id)
}

fn produce(client: &mut Client, topic: &str, partition: i32, count: usize) -> Result<()> {
    let record = RecordSpec {
        value: Some(b"v"),
        ..RecordSpec::default()
    };
    let batch = build_batch(&BatchSpec::default(), &vec![record; count]).freeze();
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
    ensure!(response.responses[0].partition_responses[0].error_code == 0);
    Ok(())
}

fn heartbeat(
    client: &mut Client,
    group: &str,
    member: &str,
    epoch: i32,
    topics: Option<&[&str]>,
) -> Result<ShareGroupHeartbeatResponse> {
    let mut request = ShareGroupHeartbeatRequest::default();
    request.group_id = GroupId(text(group));
    request.member_id = text(member);
    request.member_epoch = epoch;
    request.subscribed_topic_names =
        topics.map(|topics| topics.iter().map(|t| TopicName(text(t))).collect());
    client.call(1, &request)
}

fn describe(client: &mut Client, groups: &[&str]) -> Result<ShareGroupDescribeResponse> {
    let mut request = ShareGroupDescribeRequest::default();
    request.group_ids = groups.iter().map(|g| GroupId(text(g))).collect();
    client.call(1, &request)
}

/// (group id, protocol type, state, type) of every group ListGroups v5 lists.
fn list(client: &mut Client, states: &[&str], types: &[&str]) -> Result<Vec<[String; 4]>> {
    let mut request = ListGroupsRequest::default();
    request.states_filter = states.iter().map(|s| text(s)).collect();
    request.types_filter = types.iter().map(|t| text(t)).collect();
    let response = client.call(5, &request)?;
    ensure!(response.error_code == 0, "{response:?}");
    Ok(response
        .groups
        .iter()
        .map(|g| {
            [
                g.group_id.to_string(),
                g.protocol_type.to_string(),
                g.group_state.to_string(),
                g.group_type.to_string(),
            ]
        })
        .collect())
}

/// Joins `member` to `group` on whichever shard coordinates it: the others answer
/// NOT_COORDINATOR (16) and keep serving. Answers the coordinator's port.
fn join_on_coordinator(broker: &Broker, group: &str, member: &str, topic: &str) -> Result<u16> {
    let mut coordinator = None;
    for port in broker.shard_ports() {
        let mut client = Client::connect(port, CLIENT_ID)?;
        let answer = heartbeat(&mut client, group, member, 0, Some(&[topic]))?;
        match answer.error_code {
            0 => coordinator = Some(port),
            16 => {
                // Still usable: a request it can serve.
                let listed = list(&mut client, &[], &["share"])?;
                ensure!(listed.iter().all(|g| g[0] != group), "{listed:?}");
            }
            other => anyhow::bail!("heartbeat on port {port}: error {other}"),
        }
    }
    coordinator.context("no shard coordinates the group")
}

#[test]
fn share_groups_are_described_and_listed_from_any_shard() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default().cpus("0-1"))?;
    let mut admin = Client::connect(broker.port(), CLIENT_ID)?;
    create_topic(&mut admin, "orders", 3)?;
    let coordinator = join_on_coordinator(&broker, "g1", "m1", "orders")?;
    let other = broker
        .shard_ports()
        .into_iter()
        .find(|&port| port != coordinator)
        .context("two shards")?;

    // Described from the shard that does not coordinate it: forwarded.
    let mut client = Client::connect(other, CLIENT_ID)?;
    let response = describe(&mut client, &["g1", "missing", ""])?;
    let [g1, missing, empty] = &response.groups[..] else {
        anyhow::bail!("three groups: {response:?}");
    };
    assert_eq!((g1.error_code, g1.group_state.as_str()), (0, "Stable"));
    assert_eq!((g1.group_epoch, g1.assignment_epoch), (1, 1));
    assert_eq!(g1.assignor_name.as_str(), "simple");
    let member = &g1.members[0];
    assert_eq!(member.member_id.as_str(), "m1");
    assert_eq!(member.member_epoch, 1);
    assert_eq!(member.client_id.as_str(), CLIENT_ID);
    assert_eq!(member.client_host.as_str(), "/127.0.0.1");
    assert_eq!(member.subscribed_topic_names[0].as_str(), "orders");
    let assigned = &member.assignment.topic_partitions[0];
    assert_eq!(assigned.topic_name.as_str(), "orders");
    assert_eq!(assigned.topic_id, topic_id(&mut admin, "orders")?);
    assert_eq!(assigned.partitions, vec![0, 1, 2]);
    assert_eq!(missing.error_code, 69, "GROUP_ID_NOT_FOUND");
    assert_eq!(empty.error_code, 24, "INVALID_GROUP_ID");

    let g1_row = |state: &str| {
        [
            "g1".to_string(),
            "share".to_string(),
            state.to_string(),
            "share".to_string(),
        ]
    };
    assert_eq!(list(&mut admin, &[], &["share"])?, vec![g1_row("Stable")]);
    assert_eq!(list(&mut admin, &["STABLE"], &[])?, vec![g1_row("Stable")]);
    assert!(list(&mut admin, &[], &["classic"])?.is_empty());
    assert!(list(&mut admin, &["Empty"], &["share"])?.is_empty());

    // The classic DescribeGroups does not know share groups (Kafka 4.2: Dead; from v6 also
    // GROUP_ID_NOT_FOUND).
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![GroupId(text("g1"))];
    let classic = admin.call(5, &request)?;
    assert_eq!(classic.groups[0].group_state.as_str(), "Dead");

    // The last member leaves: the group stays, Empty.
    let mut on_coordinator = Client::connect(coordinator, CLIENT_ID)?;
    let left = heartbeat(&mut on_coordinator, "g1", "m1", -1, None)?;
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    let response = describe(&mut admin, &["g1"])?;
    assert_eq!(response.groups[0].group_state.as_str(), "Empty");
    assert!(response.groups[0].members.is_empty());
    assert_eq!(
        list(&mut admin, &["empty"], &["Share"])?,
        vec![g1_row("Empty")]
    );
    Ok(())
}

/// A share group's state outlives its members and a restart (Kafka persists it): once its
/// last member has left and the broker restarted, ListGroups still lists it, Empty, from the
/// bootstrap port, whichever shard keeps its partition's state, and ShareGroupDescribe
/// describes it (Empty, no members; GROUP_ID_NOT_FOUND before); a fresh member then gets the
/// records it had not accepted.
#[test]
fn an_empty_share_group_is_listed_after_a_restart() -> Result<()> {
    let options = BrokerOptions::default()
        .cpus("0-1")
        .set("share.auto.offset.reset", "earliest");
    let mut broker = Broker::start(options)?;
    let mut admin = Client::connect(broker.port(), CLIENT_ID)?;
    create_topic(&mut admin, "chores", 1)?;
    produce(&mut admin, "chores", 0, 3)?;
    let topic = topic_id(&mut admin, "chores")?;
    let coordinator = join_on_coordinator(&broker, "g-dormant", "m1", "chores")?;
    let mut leader = Client::connect(leader_port(&mut admin, "chores", 0)?, CLIENT_ID)?;
    let answer = share_fetch(&mut leader, ("g-dormant", topic), 0, &[])?;
    assert_eq!(answer.error_code, 0, "{answer:?}");
    let answer = share_fetch(&mut leader, ("g-dormant", topic), 1, &[(0, 0, vec![1])])?;
    assert_eq!(answer.error_code, 0, "{answer:?}");
    let mut on_coordinator = Client::connect(coordinator, CLIENT_ID)?;
    heartbeat(&mut on_coordinator, "g-dormant", "m1", -1, None)?;
    let row = ["g-dormant", "share", "Empty", "share"].map(String::from);
    assert_eq!(list(&mut admin, &[], &["share"])?, vec![row.clone()]);

    broker.restart()?;
    let mut admin = Client::connect(broker.port(), CLIENT_ID)?;
    assert_eq!(list(&mut admin, &[], &["share"])?, vec![row.clone()]);
    assert_eq!(list(&mut admin, &["Empty"], &[])?, vec![row]);
    assert!(list(&mut admin, &["Stable"], &["share"])?.is_empty());
    // Described as Kafka describes an existing group without members: Empty, no members; its
    // epochs start over at 0 (Weir does not persist membership, docs/kafka-compat.md).
    let described = describe(&mut admin, &["g-dormant"])?;
    let group = &described.groups[0];
    assert_eq!(group.error_code, 0, "{described:?}");
    assert_eq!(group.group_state.as_str(), "Empty");
    assert_eq!((group.group_epoch, group.assignment_epoch), (0, 0));
    assert!(group.members.is_empty());
    // The classic DescribeGroups: not a classic group (Dead; v6 would add GROUP_ID_NOT_FOUND).
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![GroupId(text("g-dormant"))];
    let classic = admin.call(5, &request)?;
    assert_eq!(classic.groups[0].group_state.as_str(), "Dead");

    join_on_coordinator(&broker, "g-dormant", "m2", "chores")?;
    let described = describe(&mut admin, &["g-dormant"])?;
    assert_eq!(described.groups[0].group_state.as_str(), "Stable");
    assert_eq!(described.groups[0].group_epoch, 1, "{described:?}");
    let mut leader = Client::connect(leader_port(&mut admin, "chores", 0)?, CLIENT_ID)?;
    let answer = share_fetch_as(&mut leader, ("g-dormant", "m2"), topic, 0)?;
    let partition = &answer.responses[0].partitions[0];
    let acquired: Vec<(i64, i64)> = partition
        .acquired_records
        .iter()
        .map(|r| (r.first_offset, r.last_offset))
        .collect();
    assert_eq!(
        acquired,
        vec![(1, 2)],
        "offset 0 stays accepted: {answer:?}"
    );
    Ok(())
}

/// A share group on an AMQP queue's log keeps no state of its own (the queue's state serves it,
/// `shares/queues.rs`), yet it exists as one on a topic does: after a restart with no members
/// it is listed, Empty, and described (before, a restart forgot it).
#[test]
fn a_share_group_on_an_amqp_queue_is_listed_and_described_after_a_restart() -> Result<()> {
    let options = BrokerOptions::default().set("share.auto.offset.reset", "earliest");
    let mut broker = Broker::start(options)?;
    let port = broker.amqp_port().to_string();
    let bootstrap = broker.bootstrap();
    let args = [
        "--bootstrap",
        &bootstrap,
        "--scenario",
        "mixed",
        "--amqp-port",
        &port,
        "--topic",
        "queued-jobs",
        "--group",
        "queue-workers",
        "--count",
        "200",
        "--idle",
        "0.5",
    ];
    let result = summary(&python("share_groups.py", &args)?)?;
    assert_eq!(result["left_in_queue"], 0, "{result}");
    let row = ["queue-workers", "share", "Empty", "share"].map(String::from);
    let mut admin = Client::connect(broker.port(), CLIENT_ID)?;
    assert_eq!(list(&mut admin, &[], &["share"])?, vec![row.clone()]);

    broker.restart()?;
    let mut admin = Client::connect(broker.port(), CLIENT_ID)?;
    assert_eq!(list(&mut admin, &[], &["share"])?, vec![row]);
    let described = describe(&mut admin, &["queue-workers"])?;
    let group = &described.groups[0];
    assert_eq!(group.error_code, 0, "{described:?}");
    assert_eq!(group.group_state.as_str(), "Empty");
    Ok(())
}

/// A classic JoinGroup (v5) of `group`: (error, member id).
fn classic_join(client: &mut Client, group: &str) -> Result<(i16, String)> {
    let mut protocol = join_group_request::JoinGroupRequestProtocol::default();
    protocol.name = text("range");
    protocol.metadata = bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0]);
    let mut request = JoinGroupRequest::default();
    request.group_id = GroupId(text(group));
    request.session_timeout_ms = 10_000;
    request.rebalance_timeout_ms = 10_000;
    request.protocol_type = text("consumer");
    request.protocols.push(protocol);
    let response = client.call(5, &request)?;
    Ok((response.error_code, response.member_id.to_string()))
}

/// A simple (generation -1) OffsetCommit of `topic` 0 for `group`: the partition's error.
fn classic_commit(client: &mut Client, group: &str, topic: &str) -> Result<i16> {
    let mut partition = offset_commit_request::OffsetCommitRequestPartition::default();
    partition.committed_offset = 1;
    let mut committed = offset_commit_request::OffsetCommitRequestTopic::default();
    committed.name = TopicName(text(topic));
    committed.partitions.push(partition);
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(text(group));
    request.generation_id_or_member_epoch = -1;
    request.topics.push(committed);
    let response = client.call(7, &request)?;
    Ok(response.topics[0].partitions[0].error_code)
}

/// One group id is one group, as in Kafka's GroupMetadataManager: the classic APIs refuse a share
/// group's id (JoinGroup INCONSISTENT_GROUP_PROTOCOL, OffsetCommit GROUP_ID_NOT_FOUND, Heartbeat
/// UNKNOWN_MEMBER_ID), ShareGroupHeartbeat and ShareGroupDescribe refuse a classic group's
/// ("Group X is not a share group."), and ListGroups shows each id once, with its type.
#[test]
fn share_and_classic_groups_share_one_namespace() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default().cpus("0-1"))?;
    let mut admin = Client::connect(broker.port(), CLIENT_ID)?;
    create_topic(&mut admin, "namespaced", 2)?;
    join_on_coordinator(&broker, "shared-id", "m1", "namespaced")?;

    assert_eq!(classic_join(&mut admin, "shared-id")?, (23, String::new()));
    assert_eq!(classic_commit(&mut admin, "shared-id", "namespaced")?, 69);
    let mut beat = HeartbeatRequest::default();
    beat.group_id = GroupId(text("shared-id"));
    beat.member_id = text("m1");
    beat.generation_id = 1;
    assert_eq!(admin.call(4, &beat)?.error_code, 25, "UNKNOWN_MEMBER_ID");
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![GroupId(text("shared-id"))];
    let classic = admin.call(5, &request)?;
    assert_eq!(classic.groups[0].group_state.as_str(), "Dead");

    // A classic group (a simple one: committed offsets, no members) keeps its id the same way.
    assert_eq!(classic_commit(&mut admin, "classic-id", "namespaced")?, 0);
    for port in broker.shard_ports() {
        let mut client = Client::connect(port, CLIENT_ID)?;
        let answer = heartbeat(&mut client, "classic-id", "m1", 0, Some(&["namespaced"]))?;
        assert!(
            matches!(answer.error_code, 69 | 16),
            "GROUP_ID_NOT_FOUND on the coordinator, NOT_COORDINATOR elsewhere: {answer:?}"
        );
        if answer.error_code == 69 {
            let message = answer.error_message.as_ref().map(|m| m.to_string());
            assert_eq!(
                message.as_deref(),
                Some("Group classic-id is not a share group.")
            );
        }
    }
    let described = describe(&mut admin, &["classic-id"])?;
    assert_eq!(described.groups[0].error_code, 69, "{described:?}");

    let mut rows = list(&mut admin, &[], &[])?;
    rows.sort();
    let expected = [
        ["classic-id", "", "Empty", "classic"].map(String::from),
        ["shared-id", "share", "Stable", "share"].map(String::from),
    ];
    assert_eq!(rows, expected);
    Ok(())
}

/// The same namespace with confluent-kafka 2.16.1 (`share_namespace.py`): a classic Consumer
/// with a live share group's id sees INCONSISTENT_GROUP_PROTOCOL and its commit
/// GROUP_ID_NOT_FOUND; a ShareConsumer with a classic group's id gets librdkafka's fatal
/// GROUP_ID_NOT_FOUND and no record, while the share group's own consumer gets every record.
#[test]
fn confluent_consumers_cannot_take_the_other_kinds_group_id() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default())?;
    let bootstrap = broker.bootstrap();
    let result = summary(&python("share_namespace.py", &["--bootstrap", &bootstrap])?)?;
    let names = |errors: &[&str]| serde_json::json!(errors);
    assert_eq!(
        result["classic_errors"],
        names(&["INCONSISTENT_GROUP_PROTOCOL"]),
        "{result}"
    );
    assert_eq!(result["commit"], "GROUP_ID_NOT_FOUND", "{result}");
    assert_eq!(
        result["intruder_errors"],
        names(&["GROUP_ID_NOT_FOUND"]),
        "{result}"
    );
    assert_eq!(result["intruder_got"], 0, "{result}");
    assert_eq!(result["owner_got"], 10, "{result}");
    assert_eq!(result["owner_errors"], names(&[]), "{result}");
    Ok(())
}

/// A ShareFetch of partition 0 of `topic` by member m1 in session `epoch`, with `acks` for it.
fn share_fetch(
    client: &mut Client,
    (group, topic): (&str, uuid::Uuid),
    epoch: i32,
    acks: &[(i64, i64, Vec<i8>)],
) -> Result<ShareFetchResponse> {
    share_fetch_with_acks(client, (group, "m1"), topic, epoch, acks)
}

/// A ShareFetch of partition 0 of `topic` by `member`, in session `epoch`.
fn share_fetch_as(
    client: &mut Client,
    member: (&str, &str),
    topic: uuid::Uuid,
    epoch: i32,
) -> Result<ShareFetchResponse> {
    share_fetch_with_acks(client, member, topic, epoch, &[])
}

fn share_fetch_with_acks(
    client: &mut Client,
    (group, member): (&str, &str),
    topic: uuid::Uuid,
    epoch: i32,
    acks: &[(i64, i64, Vec<i8>)],
) -> Result<ShareFetchResponse> {
    let mut partition = FetchPartition::default();
    partition.partition_index = 0;
    partition.acknowledgement_batches = acks
        .iter()
        .map(|(first, last, types)| {
            let mut batch = AcknowledgementBatch::default();
            batch.first_offset = *first;
            batch.last_offset = *last;
            batch.acknowledge_types = types.clone();
            batch
        })
        .collect();
    let mut fetched = FetchTopic::default();
    fetched.topic_id = topic;
    fetched.partitions.push(partition);
    let mut request = ShareFetchRequest::default();
    request.group_id = Some(GroupId(text(group)));
    request.member_id = Some(text(member));
    request.share_session_epoch = epoch;
    request.max_wait_ms = 500;
    request.max_records = 100;
    request.max_bytes = 1 << 20;
    request.topics.push(fetched);
    client.call(1, &request)
}

/// (error, acknowledge error) of the answer's one partition.
fn partition_codes(response: &ShareFetchResponse) -> Result<(i16, i16)> {
    let partition = response
        .responses
        .first()
        .and_then(|topic| topic.partitions.first())
        .with_context(|| format!("no partition in {response:?}"))?;
    Ok((partition.error_code, partition.acknowledge_error_code))
}

#[test]
fn hostile_share_requests_are_answered_and_the_connection_stays_usable() -> Result<()> {
    let broker = Broker::start(
        BrokerOptions::default()
            .cpus("0")
            .set("share.auto.offset.reset", "earliest"),
    )?;
    let mut client = Client::connect(broker.port(), CLIENT_ID)?;
    create_topic(&mut client, "jobs", 1)?;
    produce(&mut client, "jobs", 0, 5)?;
    let topic = topic_id(&mut client, "jobs")?;
    let joined = heartbeat(&mut client, "g", "m1", 0, Some(&["jobs"]))?;
    assert_eq!((joined.error_code, joined.member_epoch), (0, 1));

    // ShareGroupHeartbeat: no member id, an epoch the member never had, an unknown member.
    assert_eq!(
        heartbeat(&mut client, "g", "", 0, Some(&["jobs"]))?.error_code,
        42
    );
    assert_eq!(heartbeat(&mut client, "g", "m1", 7, None)?.error_code, 110);
    assert_eq!(
        heartbeat(&mut client, "g", "nobody", 1, None)?.error_code,
        25
    );

    // ShareFetch without a session, and a session opened with acknowledgements.
    let answer = share_fetch(&mut client, ("g", topic), 3, &[])?;
    assert_eq!(answer.error_code, 122, "SHARE_SESSION_NOT_FOUND");
    let answer = share_fetch(&mut client, ("g", topic), 0, &[(0, 0, vec![1])])?;
    assert_eq!(answer.error_code, 42, "INVALID_REQUEST");
    let unknown = uuid::Uuid::from_u128(0x5eed);
    assert_eq!(
        share_fetch(&mut client, ("g", unknown), 0, &[])?.error_code,
        100
    );

    // A session that acquires the five records, accepts offset 0, then acknowledges it again.
    let answer = share_fetch(&mut client, ("g", topic), 0, &[])?;
    assert_eq!(answer.error_code, 0);
    let acquired = &answer.responses[0].partitions[0].acquired_records;
    assert_eq!((acquired[0].first_offset, acquired[0].last_offset), (0, 4));
    let answer = share_fetch(&mut client, ("g", topic), 1, &[(0, 0, vec![1])])?;
    assert_eq!(partition_codes(&answer)?, (0, 0));
    let answer = share_fetch(&mut client, ("g", topic), 2, &[(0, 0, vec![1])])?;
    assert_eq!(partition_codes(&answer)?.1, 121, "INVALID_RECORD_STATE");
    let answer = share_fetch(&mut client, ("g", topic), 3, &[(2, 1, vec![1])])?;
    assert_eq!(partition_codes(&answer)?.1, 42, "last before first");
    let answer = share_fetch(&mut client, ("g", topic), 4, &[(1, 3, vec![1, 1])])?;
    assert_eq!(
        partition_codes(&answer)?.1,
        42,
        "two types for three offsets"
    );
    let answer = share_fetch(&mut client, ("g", topic), 99, &[])?;
    assert_eq!(answer.error_code, 123, "INVALID_SHARE_SESSION_EPOCH");

    // Still serving on the same connection: the out-of-step session gave its records back,
    // so a new one acquires the four not accepted.
    let answer = share_fetch(&mut client, ("g", topic), 0, &[])?;
    assert_eq!(answer.error_code, 0);
    let acquired = &answer.responses[0].partitions[0].acquired_records;
    assert_eq!((acquired[0].first_offset, acquired[0].last_offset), (1, 4));
    assert_eq!(heartbeat(&mut client, "g", "m1", 1, None)?.error_code, 0);
    Ok(())
}

/// The port of the shard that leads `topic`'s `partition` (share fetches are served there).
fn leader_port(client: &mut Client, topic: &str, partition: usize) -> Result<u16> {
    let mut wanted = metadata_request::MetadataRequestTopic::default();
    wanted.name = Some(TopicName(text(topic)));
    let mut request = MetadataRequest::default();
    request.topics = Some(vec![wanted]);
    let response = client.call(12, &request)?;
    let leader = response.topics[0].partitions[partition].leader_id;
    let broker = response.brokers.iter().find(|b| b.node_id == leader);
    Ok(broker.context("the leader is a listed broker")?.port as u16)
}

fn describe_offsets(
    client: &mut Client,
    group: &str,
    topics: Option<&[(&str, &[i32])]>,
) -> Result<Vec<(String, i32, i64, i16)>> {
    let mut wanted =
        describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup::default();
    wanted.group_id = GroupId(text(group));
    wanted.topics = topics.map(|topics| {
        topics
            .iter()
            .map(|(name, partitions)| {
                let mut topic =
                    describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestTopic::default();
                topic.topic_name = TopicName(text(name));
                topic.partitions = partitions.to_vec();
                topic
            })
            .collect()
    });
    let mut request = DescribeShareGroupOffsetsRequest::default();
    request.groups.push(wanted);
    let response = client.call(0, &request)?;
    let group = &response.groups[0];
    ensure!(group.error_code == 0, "{group:?}");
    let mut rows = Vec::new();
    for topic in &group.topics {
        for p in &topic.partitions {
            let row = (
                topic.topic_name.to_string(),
                p.partition_index,
                p.start_offset,
                p.error_code,
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// (top-level error, per-partition errors) of an AlterShareGroupOffsets of `topic`.
fn alter_offsets(
    client: &mut Client,
    group: &str,
    topic: &str,
    starts: &[(i32, i64)],
) -> Result<(i16, Vec<i16>)> {
    let mut altered =
        alter_share_group_offsets_request::AlterShareGroupOffsetsRequestTopic::default();
    altered.topic_name = TopicName(text(topic));
    for &(partition_index, start_offset) in starts {
        let mut partition =
            alter_share_group_offsets_request::AlterShareGroupOffsetsRequestPartition::default();
        partition.partition_index = partition_index;
        partition.start_offset = start_offset;
        altered.partitions.push(partition);
    }
    let mut request = AlterShareGroupOffsetsRequest::default();
    request.group_id = GroupId(text(group));
    request.topics.push(altered);
    let response = client.call(0, &request)?;
    let codes = response
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect();
    Ok((response.error_code, codes))
}

/// (top-level error, per-topic errors) of a DeleteShareGroupOffsets of `topics`.
fn delete_offsets(client: &mut Client, group: &str, topics: &[&str]) -> Result<(i16, Vec<i16>)> {
    let mut request = DeleteShareGroupOffsetsRequest::default();
    request.group_id = GroupId(text(group));
    for name in topics {
        let mut topic =
            delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic::default();
        topic.topic_name = TopicName(text(name));
        request.topics.push(topic);
    }
    let response = client.call(0, &request)?;
    let codes = response.responses.iter().map(|t| t.error_code).collect();
    Ok((response.error_code, codes))
}

#[test]
fn share_group_offsets_are_described_altered_and_deleted() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default().cpus("0-1"))?;
    let mut admin = Client::connect(broker.port(), CLIENT_ID)?;
    create_topic(&mut admin, "events", 2)?;
    produce(&mut admin, "events", 0, 10)?;
    let both: &[(&str, &[i32])] = &[("events", &[0, 1]), ("nope", &[0])];
    let row = |topic: &str, partition, start| (topic.to_string(), partition, start, 0);
    let never = vec![
        row("events", 0, -1),
        row("events", 1, -1),
        row("nope", 0, -1),
    ];
    assert_eq!(describe_offsets(&mut admin, "og", Some(both))?, never);

    // Not while the group has a member.
    let coordinator = join_on_coordinator(&broker, "og", "m1", "events")?;
    assert_eq!(alter_offsets(&mut admin, "og", "events", &[(0, 4)])?.0, 68);
    assert_eq!(delete_offsets(&mut admin, "og", &["events"])?.0, 68);

    // Set, then read back (also through a null topic list), out-of-range offsets refused.
    let mut on_coordinator = Client::connect(coordinator, CLIENT_ID)?;
    assert_eq!(
        heartbeat(&mut on_coordinator, "og", "m1", -1, None)?.error_code,
        0
    );
    let starts = [(0, 4), (1, 0), (1, 99), (0, -5), (7, 0)];
    let altered = alter_offsets(&mut admin, "og", "events", &starts)?;
    assert_eq!(altered, (0, vec![0, 0, 1, 1, 3]));
    let set = vec![row("events", 0, 4), row("events", 1, 0), row("nope", 0, -1)];
    assert_eq!(describe_offsets(&mut admin, "og", Some(both))?, set);
    assert_eq!(describe_offsets(&mut admin, "og", None)?, set[..2].to_vec());

    // A member fetches from the start offset set.
    let rejoined = heartbeat(&mut on_coordinator, "og", "m2", 0, Some(&["events"]))?;
    assert_eq!(rejoined.error_code, 0);
    let mut leader = Client::connect(leader_port(&mut admin, "events", 0)?, CLIENT_ID)?;
    let events = topic_id(&mut admin, "events")?;
    let mut request_as = |epoch| share_fetch_as(&mut leader, ("og", "m2"), events, epoch);
    let answer = request_as(0)?;
    let acquired = &answer.responses[0].partitions[0].acquired_records;
    assert_eq!(
        (acquired[0].first_offset, acquired[0].last_offset),
        (4, 9),
        "{answer:?}"
    );
    assert_eq!(
        heartbeat(&mut on_coordinator, "og", "m2", -1, None)?.error_code,
        0
    );

    // Deleted: never fetched again, as far as the group knows.
    assert_eq!(
        delete_offsets(&mut admin, "og", &["events", "nope"])?,
        (0, vec![0, 3])
    );
    assert_eq!(describe_offsets(&mut admin, "og", Some(both))?, never);
    assert_eq!(delete_offsets(&mut admin, "og", &["events"])?, (0, vec![3]));
    Ok(())
}

/// confluent-kafka 2.16.1's AdminClient against ListGroups v5 with a share group live: its
/// list_consumer_groups keeps only consumer protocol types (as against Kafka 4.2), so it lists
/// the classic group with its type and leaves the share group out; the older list_groups shows
/// the share group (ListGroups lists it; DescribeGroups calls it Dead, not a classic group).
#[test]
fn confluent_admin_lists_groups_beside_a_share_group() -> Result<()> {
    let broker = Broker::start(BrokerOptions::default())?;
    let bootstrap = broker.bootstrap();
    let result = summary(&python("share_admin.py", &["--bootstrap", &bootstrap])?)?;
    let classic = serde_json::json!([["classic-admins", "CLASSIC", "EMPTY"]]);
    assert_eq!(result["every"], classic, "{result}");
    assert_eq!(result["classic_only"], classic, "{result}");
    let old = result["list_groups"].as_array().context("list_groups")?;
    assert!(
        old.contains(&serde_json::json!(["share-admins", "", "Dead"])),
        "{result}"
    );
    Ok(())
}

/// KIP-1222's Renew (acknowledge type 4) at ShareFetch / ShareAcknowledge v2, which no client
/// of this suite sends (librdkafka 2.16's ShareConsumer has no Renew): `share_renew.py` writes
/// the requests byte by byte from Kafka 4.2's message definitions. With 2 s locks, a member
/// renews its records twice, holding them past two lock durations while another member gets
/// nothing; then the other gets them with delivery count 2; refused renewals answer Kafka's
/// errors; Renew then Accept settles each record once; a group with the group config
/// `share.renew.acknowledge.enable=false` cannot renew. Then on an AMQP queue's log, where the
/// queue's state keeps no lock: Renew checks the holder, and an accept settles for AMQP too.
#[test]
fn renew_acknowledgements_extend_locks() -> Result<()> {
    let broker = Broker::start(
        BrokerOptions::default()
            .cpus("0")
            .set("group.share.record.lock.duration.ms", "2000")
            .set("share.auto.offset.reset", "earliest"),
    )?;
    let bootstrap = broker.bootstrap();
    let amqp = broker.amqp_port().to_string();
    let args = [
        "--bootstrap",
        &bootstrap,
        "--lock-ms",
        "2000",
        "--amqp-port",
        &amqp,
    ];
    let result = summary(&python("share_renew.py", &args)?)?;
    let held = result["held_for_locks"]
        .as_f64()
        .context("held_for_locks")?;
    assert!(held > 2.0, "{result}");
    assert_eq!(result["queue"]["acquired"], 2, "{result}");
    Ok(())
}

/// Kafka's batch-optimized acquisition (`SharePartition.acquire`): a fetch starts only below the
/// partition's lock limit (`group.share.partition.max.record.locks`), takes the room left at
/// most, and finishes the producer batch it started even past the limit and `max_records`, so a
/// batch is sent once. Meanwhile another member gets nothing; once the first accepts, the next
/// batch goes.
#[test]
fn a_batch_past_the_lock_limit_is_acquired_whole_and_then_the_limit_holds() -> Result<()> {
    let broker = Broker::start(
        BrokerOptions::default()
            .cpus("0")
            .set("group.share.partition.max.record.locks", "100")
            .set("share.auto.offset.reset", "earliest"),
    )?;
    let mut client = Client::connect(broker.port(), CLIENT_ID)?;
    create_topic(&mut client, "batches", 1)?;
    produce(&mut client, "batches", 0, 150)?;
    produce(&mut client, "batches", 0, 50)?;
    let topic = topic_id(&mut client, "batches")?;
    for member in ["m1", "m2"] {
        let joined = heartbeat(&mut client, "g", member, 0, Some(&["batches"]))?;
        assert_eq!(joined.error_code, 0, "{member} joins");
    }
    let acquired = |answer: &ShareFetchResponse| -> Vec<(i64, i64)> {
        let partitions = answer.responses.iter().flat_map(|t| &t.partitions);
        let ranges = partitions.flat_map(|p| &p.acquired_records);
        ranges.map(|r| (r.first_offset, r.last_offset)).collect()
    };
    // max_records 100, lock limit 100: the whole first batch of 150.
    let first = share_fetch(&mut client, ("g", topic), 0, &[])?;
    assert_eq!(acquired(&first), [(0, 149)]);
    // 150 held, over the limit: m2 acquires nothing (its long poll ends empty).
    let other = share_fetch_as(&mut client, ("g", "m2"), topic, 0)?;
    assert_eq!(acquired(&other), []);
    // m1 accepts them; the same request acquires the next batch, whole.
    let next = share_fetch(&mut client, ("g", topic), 1, &[(0, 149, vec![1])])?;
    assert_eq!(partition_codes(&next)?, (0, 0));
    assert_eq!(acquired(&next), [(150, 199)]);
    Ok(())
}
