//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (resource type 2) and
//! groups (type 32: share groups' `share.*` configs, `shares::group_configs`), with Kafka's config
//! names; broker resources (type 4) can be described, not altered at run time. Changes go through
//! the controller and reach every shard (the logs' and share partitions' owners) with the next
//! metadata, before the answer.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::admin_topics::controller_call;
use super::error_codes as code;
use crate::config::{BrokerConfig, TOPIC_CONFIG_NAMES};
use crate::routing::config::ConfigOperation;
use crate::security::acl::{Access, Operation, ResourceType, CLUSTER_NAME};
use crate::shard::mesh::{ConfigChange, ControlJob, GroupConfigChange};
use crate::shard::Shard;
use crate::shares::group_configs::{self, Kind};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const SOURCE_GROUP: i8 = 8;
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;

/// The error code when `access` may not do `operation` on config resource `kind` `name` (Kafka:
/// a topic's configs are the topic's, a group's the group's, a broker's the cluster's).
fn refused(access: &Access, operation: Operation, kind: i8, name: &str) -> Option<i16> {
    let (resource, error) = match kind {
        RESOURCE_TOPIC => (ResourceType::Topic, code::TOPIC_AUTHORIZATION_FAILED),
        RESOURCE_GROUP => (ResourceType::Group, code::GROUP_AUTHORIZATION_FAILED),
        RESOURCE_BROKER => (ResourceType::Cluster, code::CLUSTER_AUTHORIZATION_FAILED),
        _ => return None,
    };
    let name = if resource == ResourceType::Cluster {
        CLUSTER_NAME
    } else {
        name
    };
    (!access.allows(operation, resource, name)).then_some(error)
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn entry(version: i16, name: &str, value: &str, source: i8) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default();
    out.name = text(name);
    out.value = Some(text(value));
    out.config_source = source;
    if version >= 3 {
        out.config_type = if value.parse::<i64>().is_ok() {
            TYPE_LONG
        } else {
            TYPE_STRING
        };
    }
    out
}

/// A topic's own configs as DescribeConfigs lists them: every known config (its default when
/// unset) and any other config the topic carries.
fn topic_entries(
    shard: &Shard,
    version: i16,
    configs: &BTreeMap<String, String>,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<DescribeConfigsResourceResult> {
    let mut names: Vec<&str> = TOPIC_CONFIG_NAMES.to_vec();
    names.extend(
        configs
            .keys()
            .map(String::as_str)
            .filter(|k| !TOPIC_CONFIG_NAMES.contains(k)),
    );
    let mut entries = Vec::new();
    for name in names.into_iter().filter(|n| wanted(n)) {
        if let Some((value, default)) = shard.config.effective(configs, name) {
            let source = if default {
                SOURCE_DEFAULT
            } else {
                SOURCE_TOPIC
            };
            entries.push(entry(version, name, &value, source));
        }
    }
    entries
}

/// A group's configs as Kafka's DescribeConfigs lists them: every group config Weir takes, the
/// group's value (source 8, GROUP_CONFIG) or else the broker's (4 when set on the broker, else 5);
/// any group, known or not.
fn group_entries(
    shard: &Shard,
    version: i16,
    configs: Option<&BTreeMap<String, String>>,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<DescribeConfigsResourceResult> {
    let mut entries = Vec::new();
    for name in group_configs::NAMES.into_iter().filter(|n| wanted(n)) {
        let (value, source) = match configs.and_then(|c| c.get(name)) {
            Some(value) => (value.clone(), SOURCE_GROUP),
            None => match group_configs::broker_value(&shard.config.shares, name) {
                Some((value, true)) => (value, SOURCE_STATIC_BROKER),
                Some((value, false)) => (value, SOURCE_DEFAULT),
                None => continue,
            },
        };
        let mut out = entry(version, name, &value, source);
        if version >= 3 {
            out.config_type = match group_configs::kind(name) {
                Some(Kind::Boolean) => TYPE_BOOLEAN,
                Some(Kind::Int) => TYPE_INT,
                _ => TYPE_STRING,
            };
        }
        entries.push(out);
    }
    entries
}

/// Kafka's answer for a group resource without a name.
fn refuse_empty_group(result: &mut DescribeConfigsResult) {
    result.error_code = code::INVALID_REQUEST;
    result.error_message = Some(text("Group name must not be empty"));
}

/// The broker configs DescribeConfigs lists for a broker resource.
fn broker_configs(config: &BrokerConfig) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    values.insert("num.partitions".into(), config.num_partitions.to_string());
    values.insert(
        "auto.create.topics.enable".into(),
        config.auto_create_topics.to_string(),
    );
    values.insert(
        "socket.request.max.bytes".into(),
        config.socket_request_max_bytes.to_string(),
    );
    values.insert("max.connections".into(), config.max_connections.to_string());
    values.insert(
        "log.retention.check.interval.ms".into(),
        config.retention_check_interval_ms.to_string(),
    );
    values.insert(
        "weir.queue.ack.flush.ms".into(),
        config.queue_ack_flush_ms.to_string(),
    );
    for name in TOPIC_CONFIG_NAMES {
        if let Some((value, _)) = config.effective(&BTreeMap::new(), name) {
            values.insert(name.to_string(), value);
        }
    }
    values
}

pub async fn describe(
    shard: &Rc<Shard>,
    version: i16,
    request: DescribeConfigsRequest,
    access: Access,
) -> DescribeConfigsResponse {
    let metadata = shard.metadata();
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        // Null or empty keys: every config (as Kafka does).
        let wanted = |name: &str| match &resource.configuration_keys {
            Some(keys) if !keys.is_empty() => keys.iter().any(|k| k.as_str() == name),
            _ => true,
        };
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        let name = resource.resource_name.as_str();
        let kind = result.resource_type;
        let denied = refused(&access, Operation::DescribeConfigs, kind, name);
        if let Some(error) = denied {
            result.error_code = error;
            result.resource_name = resource.resource_name;
            response.results.push(result);
            continue;
        }
        match resource.resource_type {
            RESOURCE_TOPIC if metadata.routing.is_exchange(name) => {
                // An exchange has only its routing configs (type, alternate, bindings).
                let routing = crate::routing::config::describe(name, &metadata.routing);
                for (name, value) in routing.iter().filter(|(name, _)| wanted(name)) {
                    result
                        .configs
                        .push(entry(version, name, value, SOURCE_TOPIC));
                }
            }
            RESOURCE_TOPIC => match metadata.topics.get(name) {
                None => result.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
                Some(topic) => {
                    // The exchanges this topic is bound from (`weir.bindings`).
                    let routing = crate::routing::config::describe(name, &metadata.routing);
                    for (name, value) in routing.iter().filter(|(name, _)| wanted(name)) {
                        result
                            .configs
                            .push(entry(version, name, value, SOURCE_TOPIC));
                    }
                    result
                        .configs
                        .extend(topic_entries(shard, version, &topic.configs, &wanted));
                }
            },
            RESOURCE_BROKER => {
                let values = broker_configs(&shard.config);
                for (name, value) in values.iter().filter(|(n, _)| wanted(n)) {
                    result
                        .configs
                        .push(entry(version, name, value, SOURCE_STATIC_BROKER));
                }
            }
            RESOURCE_GROUP => {
                let group = resource.resource_name.as_str();
                match metadata.group_configs.get(group) {
                    _ if group.is_empty() => refuse_empty_group(&mut result),
                    configs => result.configs = group_entries(shard, version, configs, &wanted),
                }
            }
            _ => {
                result.error_code = code::INVALID_REQUEST;
                result.error_message =
                    Some(text("only topic (2), broker (4) and group (32) resources"));
            }
        }
        result.resource_name = resource.resource_name;
        response.results.push(result);
    }
    response
}

/// Applies topic and group config changes through the controller; other resource types get an
/// error.
async fn apply(
    shard: &Shard,
    resources: Vec<(i8, String, Result<ConfigChange, String>)>,
    validate_only: bool,
    access: &Access,
) -> Vec<(i8, String, i16, Option<String>)> {
    let mut answers: Vec<(i8, String, i16, Option<String>)> = Vec::new();
    let mut changes = Vec::new();
    let mut group_changes = Vec::new();
    for (kind, name, change) in resources {
        if let Some(error) = refused(access, Operation::AlterConfigs, kind, &name) {
            answers.push((kind, name, error, None));
            continue;
        }
        match (kind, change) {
            (RESOURCE_TOPIC, Ok(change)) => changes.push(change),
            (RESOURCE_TOPIC | RESOURCE_GROUP, Err(message)) => {
                answers.push((kind, name, code::INVALID_CONFIG, Some(message)))
            }
            (RESOURCE_GROUP, Ok(_)) if name.is_empty() => answers.push((
                kind,
                name,
                code::INVALID_REQUEST,
                Some("Group name must not be empty".into()),
            )),
            (RESOURCE_GROUP, Ok(change)) => match change.routing.first() {
                // `weir.*` names declare routing on topics; no group has them.
                Some((config, _)) => answers.push((
                    kind,
                    name,
                    code::INVALID_CONFIG,
                    Some(format!("Unknown group config name: {config}")),
                )),
                None => group_changes.push(GroupConfigChange {
                    group: change.topic,
                    replace_all: change.replace_all,
                    edits: change.edits,
                }),
            },
            _ => answers.push((
                kind,
                name,
                code::INVALID_REQUEST,
                Some("only topic (2) and group (32) configs can be altered".into()),
            )),
        }
    }
    if !group_changes.is_empty() {
        let names: Vec<String> = group_changes.iter().map(|c| c.group.clone()).collect();
        let results = controller_call(shard, &names, |reply| ControlJob::AlterGroupConfigs {
            changes: group_changes,
            validate_only,
            reply,
        })
        .await;
        let results = results.into_iter();
        answers
            .extend(results.map(|(name, error, message)| (RESOURCE_GROUP, name, error, message)));
    }
    if !changes.is_empty() {
        let names: Vec<String> = changes.iter().map(|c| c.topic.clone()).collect();
        let results = controller_call(shard, &names, |reply| ControlJob::AlterConfigs {
            changes,
            validate_only,
            reply,
        })
        .await;
        let results = results.into_iter();
        answers
            .extend(results.map(|(name, error, message)| (RESOURCE_TOPIC, name, error, message)));
    }
    answers
}

pub async fn alter(
    shard: &Rc<Shard>,
    _version: i16,
    request: AlterConfigsRequest,
    access: Access,
) -> AlterConfigsResponse {
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let topic = r.resource_name.to_string();
            // Routing configs given are SET; routing configs left out are kept (bindings are
            // declarations, not settings that reset to a default).
            let (routing, edits): (Vec<_>, Vec<_>) = r
                .configs
                .into_iter()
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                .partition(|(name, _)| crate::routing::config::is_routing_config(name));
            let routing = routing
                .into_iter()
                .map(|(name, value)| {
                    let operation = ConfigOperation::Set(value.unwrap_or_default());
                    (name, operation)
                })
                .collect();
            (
                r.resource_type,
                topic.clone(),
                Ok(ConfigChange {
                    topic,
                    replace_all: true,
                    edits,
                    routing,
                }),
            )
        })
        .collect();
    let mut response = AlterConfigsResponse::default();
    for (kind, name, error_code, message) in
        apply(shard, resources, request.validate_only, &access).await
    {
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = kind;
        out.resource_name = text(&name);
        out.error_code = error_code;
        out.error_message = message.map(StrBytes::from_string);
        response.responses.push(out);
    }
    response
}

pub async fn incremental_alter(
    shard: &Rc<Shard>,
    _version: i16,
    request: IncrementalAlterConfigsRequest,
    access: Access,
) -> IncrementalAlterConfigsResponse {
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let topic = r.resource_name.to_string();
            let mut edits = Vec::new();
            let mut routing = Vec::new();
            let mut error = None;
            for config in r.configs {
                if crate::routing::config::is_routing_config(config.name.as_str()) {
                    let value = config.value.as_deref();
                    match ConfigOperation::from_wire(config.config_operation, value) {
                        Ok(operation) => routing.push((config.name.to_string(), operation)),
                        Err(refused) => error = Some(refused.to_string()),
                    }
                    continue;
                }
                match config.config_operation {
                    0 => edits.push((
                        config.name.to_string(),
                        Some(config.value.map(|v| v.to_string()).unwrap_or_default()),
                    )),
                    1 => edits.push((config.name.to_string(), None)),
                    op => {
                        error = Some(format!(
                            "{}: operation {op} (APPEND/SUBTRACT) is not supported",
                            config.name.as_str()
                        ))
                    }
                }
            }
            let change = match error {
                Some(message) => Err(message),
                None => Ok(ConfigChange {
                    topic: topic.clone(),
                    replace_all: false,
                    edits,
                    routing,
                }),
            };
            (r.resource_type, topic, change)
        })
        .collect();
    let mut response = IncrementalAlterConfigsResponse::default();
    for (kind, name, error_code, message) in
        apply(shard, resources, request.validate_only, &access).await
    {
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = kind;
        out.resource_name = text(&name);
        out.error_code = error_code;
        out.error_message = message.map(StrBytes::from_string);
        response.responses.push(out);
    }
    response
}
