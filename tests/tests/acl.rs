//! Kafka ACLs end to end, with confluent-kafka's AdminClient, Producer and Consumer
//! (`clients/acls.py`) and pika (`clients/amqp/acls.py`) against the release binary with its
//! authorizer on (`authorizer.class.name`) and `allow.everyone.if.no.acl.found=true`, so that
//! resources no ACL names stay open. Until SASL lands every Kafka connection is User:ANONYMOUS and
//! every AMQP one User:guest: the ACLs below allow and deny those principals.
//!
//! Checked: create_acls / describe_acls / delete_acls; a topic denied Write refuses a produce with
//! TOPIC_AUTHORIZATION_FAILED and its end offset stays 0; a prefixed Deny Describe hides a topic
//! from Metadata; a Deny beats an Allow (a literal Deny inside a prefixed Allow); the ACLs survive
//! SIGKILL; deleting a Deny lets the produce through; pika gets 403 ACCESS_REFUSED on declare,
//! publish and get of a queue User:guest is denied.

use anyhow::Result;
use serde_json::{json, Value};
use weir_tests::{python, summary, Broker, BrokerOptions};

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

#[test]
fn amqp_gets_403_on_a_queue_its_user_is_denied() -> Result<()> {
    let broker = Broker::start(authorizing())?;
    let url = broker.amqp_url();
    summary(&python("amqp/acls.py", &[&url, "before"])?)?;
    let deny = "DENY:ALL:LITERAL:TOPIC:locked:User:guest".to_string();
    kafka(&broker, "create_acls", &[], &[deny])?;
    let after = summary(&python("amqp/acls.py", &[&url, "after"])?)?;
    for method in ["declare", "publish", "get"] {
        let code = &after["codes"][method];
        assert_eq!(code[0], json!(403), "{method}: {after}");
        let text = code[1].as_str().unwrap_or_default();
        assert!(text.starts_with("ACCESS_REFUSED"), "{method}: {after}");
    }
    assert_eq!(after["free"], json!("fine"), "{after}");
    Ok(())
}
