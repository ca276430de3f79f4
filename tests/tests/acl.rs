//! Kafka ACLs end to end, with confluent-kafka's AdminClient, Producer and Consumer
//! (`clients/acls.py`) and pika (`clients/amqp/acls.py`) against the release binary with its
//! authorizer on (`authorizer.class.name`) and `allow.everyone.if.no.acl.found=true`, so that
//! resources no ACL names stay open. The tests' Kafka connections are PLAINTEXT (User:ANONYMOUS)
//! and their AMQP ones log in as guest (User:guest): the ACLs below allow and deny those principals.
//!
//! Checked: create_acls / describe_acls / delete_acls; a topic denied Write refuses a produce with
//! TOPIC_AUTHORIZATION_FAILED and its end offset stays 0; a prefixed Deny Describe hides a topic
//! from Metadata; a Deny beats an Allow (a literal Deny inside a prefixed Allow); the ACLs survive
//! SIGKILL; deleting a Deny lets the produce through; a consumer of a group it may not read gets
//! GROUP_AUTHORIZATION_FAILED; raw requests (kafka-protocol, for what librdkafka does not send or
//! stops before) get their codes from ListOffsets, OffsetForLeaderEpoch, FindCoordinator,
//! InitProducerId, DescribeCluster and the share group APIs; pika gets 403 ACCESS_REFUSED on
//! declare, publish and get of a queue, and declare of an exchange, that User:guest is denied.

use anyhow::{Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::*;
use serde_json::{json, Value};
use weir_tests::{python, summary, Broker, BrokerOptions};

#[path = "support/raw_client.rs"]
mod raw_client;
use raw_client::{text, Client};

const ANONYMOUS: &str = "User:ANONYMOUS";

/// The ACLs the Kafka test creates (PERMISSION:OPERATION:PATTERN:TYPE:NAME:PRINCIPAL).
fn acls() -> Vec<String> {
    [
        // readonly: everything but Write (deny beats allow on the same literal).
        ("ALLOW", "ALL", "LITERAL", "readonly"),
        ("DENY", "WRITE", "LITERAL", "readonly"),
        // orders-*: Write by a prefixed Allow, except orders-b (a literal Deny beats it).
        ("ALLOW", "WRITE", "PREFIXED", "orders-"),
        ("DENY", "WRITE", "LITERAL", "orders-b"),
        // hidden-*: not even Describe.
        ("DENY", "DESCRIBE", "PREFIXED", "hidden-"),
    ]
    .iter()
    .map(|(permission, operation, pattern, name)| {
        format!("{permission}:{operation}:{pattern}:TOPIC:{name}:{ANONYMOUS}")
    })
    .collect()
}

fn authorizing() -> BrokerOptions {
    BrokerOptions::default()
        .set(
            "authorizer.class.name",
            "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        )
        .set("allow.everyone.if.no.acl.found", "true")
}

/// Runs `clients/acls.py`'s `scenario` with each of `topics` and `acls` as flags.
fn kafka(broker: &Broker, scenario: &str, topics: &[&str], acls: &[String]) -> Result<Value> {
    let bootstrap = broker.bootstrap();
    let mut args = vec!["--bootstrap", &bootstrap, "--scenario", scenario];
    for topic in topics {
        args.extend(["--topic", topic]);
    }
    for acl in acls {
        args.extend(["--acl", acl.as_str()]);
    }
    summary(&python("acls.py", &args)?)
}

/// The six fields `acls.py` prints for a binding spec.
fn as_fields(spec: &str) -> Value {
    let parts: Vec<&str> = spec.splitn(6, ':').collect();
    json!(parts)
}

const TOPICS: [&str; 5] = ["open", "readonly", "orders-a", "orders-b", "hidden-1"];

#[test]
fn kafka_acls_refuse_writes_hide_topics_and_survive_sigkill() -> Result<()> {
    let mut broker = Broker::start(authorizing())?;
    kafka(&broker, "create_topics", &TOPICS, &[])?;
    let acls = acls();
    kafka(&broker, "create_acls", &[], &acls)?;
    let mut expected: Vec<Value> = acls.iter().map(|spec| as_fields(spec)).collect();
    expected.sort_by_key(|value| value.to_string());
    let described = kafka(&broker, "describe_acls", &[], &[])?;
    assert_eq!(sorted(&described["acls"]), expected, "{described}");

    let writes = ["open", "readonly", "orders-a", "orders-b"];
    let produced = kafka(&broker, "produce", &writes, &[])?;
    let refused = "TOPIC_AUTHORIZATION_FAILED";
    assert_eq!(
        produced["errors"],
        json!({"open": "", "readonly": refused, "orders-a": "", "orders-b": refused}),
        "{produced}"
    );
    // Nothing refused was written.
    let ends = kafka(&broker, "offsets", &writes, &[])?;
    let after_first = json!({"open": 1, "readonly": 0, "orders-a": 1, "orders-b": 0});
    assert_eq!(ends["ends"], after_first, "{ends}");
    hidden_from_metadata(&broker)?;

    broker.kill9()?;
    broker.start_again()?;
    let described = kafka(&broker, "describe_acls", &[], &[])?;
    assert_eq!(
        sorted(&described["acls"]),
        expected,
        "after SIGKILL: {described}"
    );
    hidden_from_metadata(&broker)?;
    deleting_a_deny_lets_writes_through(&broker, &acls)
}

fn sorted(value: &Value) -> Vec<Value> {
    let mut values = value.as_array().cloned().unwrap_or_default();
    values.sort_by_key(|value| value.to_string());
    values
}

/// A full Metadata leaves out `hidden-1`; one naming it answers TOPIC_AUTHORIZATION_FAILED.
fn hidden_from_metadata(broker: &Broker) -> Result<()> {
    let metadata = kafka(broker, "metadata", &["hidden-1", "open"], &[])?;
    let listed: Vec<&str> = metadata["listed"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(listed.contains(&"open"), "{metadata}");
    assert!(!listed.contains(&"hidden-1"), "{metadata}");
    assert_eq!(
        metadata["named"],
        json!({"hidden-1": "TOPIC_AUTHORIZATION_FAILED", "open": ""}),
        "{metadata}"
    );
    Ok(())
}

/// delete_acls of the Deny on `readonly` deletes exactly it; the next produce there is stored.
fn deleting_a_deny_lets_writes_through(broker: &Broker, acls: &[String]) -> Result<()> {
    let deny = acls[1].clone();
    let deleted = kafka(broker, "delete_acls", &[], std::slice::from_ref(&deny))?;
    assert_eq!(deleted["deleted"], json!([as_fields(&deny)]), "{deleted}");
    let produced = kafka(broker, "produce", &["readonly", "orders-b"], &[])?;
    assert_eq!(
        produced["errors"],
        json!({"readonly": "", "orders-b": "TOPIC_AUTHORIZATION_FAILED"}),
        "{produced}"
    );
    let ends = kafka(broker, "offsets", &["readonly", "orders-b"], &[])?;
    assert_eq!(
        ends["ends"],
        json!({"readonly": 1, "orders-b": 0}),
        "{ends}"
    );
    Ok(())
}

/// `acls.py`'s `scenario` with `--group group` and one `--topic`.
fn kafka_in_group(broker: &Broker, scenario: &str, group: &str, topic: &str) -> Result<Value> {
    let bootstrap = broker.bootstrap();
    let args = [
        "--bootstrap",
        &bootstrap,
        "--scenario",
        scenario,
        "--group",
        group,
        "--topic",
        topic,
    ];
    summary(&python("acls.py", &args)?)
}

#[test]
fn a_group_it_may_not_read_refuses_the_consumer() -> Result<()> {
    let broker = Broker::start(authorizing())?;
    kafka(&broker, "create_topics", &["events"], &[])?;
    kafka(&broker, "produce", &["events"], &[])?;
    let denials = [format!("DENY:READ:LITERAL:GROUP:blocked:{ANONYMOUS}")];
    kafka(&broker, "create_acls", &[], &denials)?;
    let blocked = kafka_in_group(&broker, "consume", "blocked", "events")?;
    assert_eq!(
        blocked["error"],
        json!("GROUP_AUTHORIZATION_FAILED"),
        "{blocked}"
    );
    let open = kafka_in_group(&broker, "consume", "open", "events")?;
    assert_eq!(
        open["error"],
        json!(""),
        "a group no ACL names reads: {open}"
    );
    Ok(())
}

#[test]
fn amqp_gets_403_on_a_queue_its_user_is_denied() -> Result<()> {
    let broker = Broker::start(authorizing())?;
    let url = broker.amqp_url();
    summary(&python("amqp/acls.py", &[&url, "before"])?)?;
    let deny = "DENY:ALL:PREFIXED:TOPIC:locked:User:guest".to_string();
    kafka(&broker, "create_acls", &[], &[deny])?;
    let after = summary(&python("amqp/acls.py", &[&url, "after"])?)?;
    for method in ["declare", "publish", "get", "exchange"] {
        let code = &after["codes"][method];
        assert_eq!(code[0], json!(403), "{method}: {after}");
        let text = code[1].as_str().unwrap_or_default();
        assert!(text.starts_with("ACCESS_REFUSED"), "{method}: {after}");
    }
    assert_eq!(after["free"], json!("fine"), "{after}");
    Ok(())
}

/// Kafka's codes the raw requests expect.
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const INVALID_REQUEST: i16 = 42;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// ListOffsets (latest) and OffsetForLeaderEpoch of partition 0: their error codes.
fn offset_codes(client: &mut Client, topic: &str) -> Result<(i16, i16)> {
    let mut partition = list_offsets_request::ListOffsetsPartition::default();
    partition.timestamp = -1;
    let mut wanted = list_offsets_request::ListOffsetsTopic::default();
    wanted.name = TopicName(text(topic));
    wanted.partitions.push(partition);
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics.push(wanted);
    let listed = client.call(7, &request)?.topics[0].partitions[0].error_code;
    let mut partition = offset_for_leader_epoch_request::OffsetForLeaderPartition::default();
    partition.current_leader_epoch = -1;
    let mut wanted = offset_for_leader_epoch_request::OffsetForLeaderTopic::default();
    wanted.topic = TopicName(text(topic));
    wanted.partitions.push(partition);
    let mut request = OffsetForLeaderEpochRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics.push(wanted);
    let epoch = client.call(4, &request)?.topics[0].partitions[0].error_code;
    Ok((listed, epoch))
}

/// FindCoordinator v3 of `key` (type 0 group, 1 transactional id) and InitProducerId v4 with
/// transactional id `key`: their error codes.
fn coordinator_code(client: &mut Client, key: &str, key_type: i8) -> Result<i16> {
    let mut request = FindCoordinatorRequest::default();
    request.key = text(key);
    request.key_type = key_type;
    Ok(client.call(3, &request)?.error_code)
}

fn transactional_code(client: &mut Client, id: &str) -> Result<i16> {
    let mut request = InitProducerIdRequest::default();
    request.transactional_id = Some(TransactionalId(text(id)));
    request.transaction_timeout_ms = 60_000;
    request.producer_id = ProducerId(-1);
    request.producer_epoch = -1;
    Ok(client.call(4, &request)?.error_code)
}

/// ShareGroupHeartbeat (joining `group` on `topic`) and ShareGroupDescribe of `group`.
fn share_codes(client: &mut Client, group: &str, topic: &str) -> Result<(i16, i16)> {
    let mut request = ShareGroupHeartbeatRequest::default();
    request.group_id = GroupId(text(group));
    request.member_id = text("acl-member-1");
    request.subscribed_topic_names = Some(vec![TopicName(text(topic))]);
    let heartbeat = client.call(1, &request)?.error_code;
    let mut request = ShareGroupDescribeRequest::default();
    request.group_ids.push(GroupId(text(group)));
    let described = client.call(1, &request)?.groups[0].error_code;
    Ok((heartbeat, described))
}

#[test]
fn raw_requests_get_their_authorization_codes() -> Result<()> {
    let broker = Broker::start(authorizing())?;
    kafka(&broker, "create_topics", &["events", "hidden-2"], &[])?;
    let denials = [
        format!("DENY:DESCRIBE:LITERAL:TOPIC:hidden-2:{ANONYMOUS}"),
        format!("DENY:ALL:LITERAL:GROUP:blocked:{ANONYMOUS}"),
        format!("DENY:ALL:LITERAL:TRANSACTIONAL_ID:tx:{ANONYMOUS}"),
        // confluent-kafka names the Cluster resource type (4) BROKER.
        format!("DENY:DESCRIBE:LITERAL:BROKER:kafka-cluster:{ANONYMOUS}"),
        format!("DENY:ALTER:LITERAL:BROKER:kafka-cluster:{ANONYMOUS}"),
    ];
    kafka(&broker, "create_acls", &[], &denials)?;
    let mut client = Client::connect(broker.port(), "acl-test")?;
    let denied = TOPIC_AUTHORIZATION_FAILED;
    assert_eq!(offset_codes(&mut client, "hidden-2")?, (denied, denied));
    assert_eq!(offset_codes(&mut client, "events")?, (0, 0));
    assert_eq!(
        coordinator_code(&mut client, "blocked", 0)?,
        GROUP_AUTHORIZATION_FAILED
    );
    assert_eq!(coordinator_code(&mut client, "open", 0)?, 0);
    let transactional = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
    assert_eq!(coordinator_code(&mut client, "tx", 1)?, transactional);
    assert_eq!(
        coordinator_code(&mut client, "other", 1)?,
        COORDINATOR_NOT_AVAILABLE
    );
    assert_eq!(transactional_code(&mut client, "tx")?, transactional);
    // Allowed, then refused because Weir has no transactions.
    assert_eq!(transactional_code(&mut client, "other")?, INVALID_REQUEST);
    let group = GROUP_AUTHORIZATION_FAILED;
    assert_eq!(
        share_codes(&mut client, "blocked", "events")?,
        (group, group)
    );
    // A subscribed topic the member may not describe.
    let (heartbeat, _) = share_codes(&mut client, "open", "hidden-2")?;
    assert_eq!(heartbeat, TOPIC_AUTHORIZATION_FAILED);
    // librdkafka's describe_cluster sends Metadata; DescribeCluster itself:
    let cluster = client.call(0, &DescribeClusterRequest::default())?;
    assert_eq!(cluster.error_code, CLUSTER_AUTHORIZATION_FAILED);
    let cluster = CLUSTER_AUTHORIZATION_FAILED;
    assert_eq!(user_admin_codes(&mut client)?, (cluster, cluster));
    Ok(())
}

/// DescribeUserScramCredentials' and AlterUserScramCredentials' codes (Describe and Alter on the
/// cluster), the latter for a user it would create.
fn user_admin_codes(client: &mut Client) -> Result<(i16, i16)> {
    let described = client.call(0, &DescribeUserScramCredentialsRequest::default())?;
    let mut upsertion = alter_user_scram_credentials_request::ScramCredentialUpsertion::default();
    upsertion.name = text("mallory");
    upsertion.mechanism = 2;
    upsertion.iterations = 4096;
    upsertion.salt = Bytes::from_static(b"salt");
    upsertion.salted_password = Bytes::from_static(&[7; 64]);
    let mut alter = AlterUserScramCredentialsRequest::default();
    alter.upsertions.push(upsertion);
    let altered = client.call(0, &alter)?;
    let code = altered.results.first().context("no result")?.error_code;
    Ok((described.error_code, code))
}
