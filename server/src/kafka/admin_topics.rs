//! CreateTopics, DeleteTopics, CreatePartitions and Metadata's auto-create: decoded here, applied
//! by the controller (shard 0), which answers once every shard has the new metadata.
//! Replication factor and manual assignments are accepted and ignored (one copy, Weir places
//! partitions on shards itself).

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::error_codes as code;
use crate::config::TOPIC_CONFIG_NAMES;
use crate::security::acl::{Access, Operation};
use crate::shard::mesh::{reply_channel, ControlJob, ItemResults, NewTopic, Reply};
use crate::shard::Shard;

/// Per-item results as admin responses carry them: (name, error code, message).
pub type CodedResults = Vec<(String, i16, Option<String>)>;

/// Sends a change to the controller and waits for its per-item results, in Kafka's codes.
pub async fn controller_call(
    shard: &Shard,
    names: &[String],
    job: impl FnOnce(Reply<ItemResults>) -> ControlJob,
) -> CodedResults {
    let (reply, answer) = reply_channel();
    let unavailable = || {
        names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    code::UNKNOWN_SERVER_ERROR,
                    Some("controller unavailable".to_string()),
                )
            })
            .collect()
    };
    if shard.mesh.controller.send_async(job(reply)).await.is_err() {
        return unavailable();
    }
    match answer.recv_async().await {
        Ok(results) => results
            .into_iter()
            .map(|(name, result)| {
                let (error_code, message) = code::from_topic_result(&result);
                (name, error_code, message)
            })
            .collect(),
        Err(_) => unavailable(),
    }
}

/// Creates topics with the broker defaults (Metadata auto-create). Races with other creators are
/// harmless: TOPIC_ALREADY_EXISTS just means someone else won.
pub async fn auto_create(shard: &Shard, names: Vec<String>) {
    let topics = names
        .iter()
        .map(|name| NewTopic {
            name: name.clone(),
            partitions: -1,
            configs: BTreeMap::new(),
        })
        .collect();
    controller_call(shard, &names, |reply| ControlJob::CreateTopics {
        topics,
        validate_only: false,
        reply,
    })
    .await;
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// Takes out of `request` the topics the principal may not create (Kafka: Create on the cluster,
/// or on the topic), and answers them TOPIC_AUTHORIZATION_FAILED.
fn uncreatable(request: &mut CreateTopicsRequest, access: &Access) -> Vec<CreatableTopicResult> {
    let create_all = access.allows_cluster(Operation::Create);
    let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut request.topics)
        .into_iter()
        .partition(|t| create_all || access.allows_topic(Operation::Create, &t.name));
    request.topics = allowed;
    denied
        .into_iter()
        .map(|topic| {
            let mut out = CreatableTopicResult::default();
            out.name = topic.name;
            out.error_code = code::TOPIC_AUTHORIZATION_FAILED;
            out
        })
        .collect()
}

pub async fn create_topics(
    shard: &Rc<Shard>,
    version: i16,
    mut request: CreateTopicsRequest,
    access: Access,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    response.topics = uncreatable(&mut request, &access);
    let names: Vec<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    let topics = request
        .topics
        .into_iter()
        .map(|topic| NewTopic {
            name: topic.name.0.to_string(),
            partitions: topic.num_partitions,
            configs: topic
                .configs
                .into_iter()
                .filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string())))
                .collect(),
        })
        .collect();
    let validate_only = request.validate_only;
    let results = controller_call(shard, &names, |reply| ControlJob::CreateTopics {
        topics,
        validate_only,
        reply,
    })
    .await;
    let metadata = shard.metadata();
    for (name, error_code, message) in results {
        let mut out = CreatableTopicResult::default();
        out.error_code = error_code;
        if version >= 1 {
            out.error_message = message.map(StrBytes::from_string);
        }
        if let (Some(topic), true, true) = (
            metadata.topics.get(&name),
            version >= 5,
            error_code == code::NONE,
        ) {
            if version >= 7 {
                out.topic_id = topic.uuid();
            }
            out.num_partitions = topic.partitions.len() as i32;
            out.replication_factor = 1;
            let configs = TOPIC_CONFIG_NAMES
                .iter()
                .filter_map(|key| {
                    shard
                        .config
                        .effective(&topic.configs, key)
                        .map(|(value, default)| (key, value, default))
                })
                .map(|(key, value, default)| {
                    let mut config = CreatableTopicConfigs::default();
                    config.name = text(key);
                    config.value = Some(text(&value));
                    config.config_source = if default { 5 } else { 1 };
                    config
                })
                .collect();
            out.configs = Some(configs);
        }
        out.name = TopicName(text(&name));
        response.topics.push(out);
    }
    response
}

pub async fn delete_topics(
    shard: &Rc<Shard>,
    version: i16,
    request: DeleteTopicsRequest,
    access: Access,
) -> DeleteTopicsResponse {
    let mut names: Vec<String> = if version >= 6 {
        let metadata = shard.metadata();
        request
            .topics
            .iter()
            .filter_map(|t| match &t.name {
                Some(name) => Some(name.0.to_string()),
                None => metadata
                    .topics
                    .iter()
                    .find(|(_, m)| m.uuid() == t.topic_id)
                    .map(|(n, _)| n.clone()),
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|n| n.0.to_string())
            .collect()
    };
    let mut response = DeleteTopicsResponse::default();
    // Kafka: Delete on the topic.
    names.retain(|name| {
        let allowed = access.allows_topic(Operation::Delete, name);
        if !allowed {
            let mut out = DeletableTopicResult::default();
            out.name = Some(TopicName(text(name)));
            out.error_code = code::TOPIC_AUTHORIZATION_FAILED;
            response.responses.push(out);
        }
        allowed
    });
    let before = shard.metadata();
    let job_names = names.clone();
    let results = controller_call(shard, &names, |reply| ControlJob::DeleteTopics {
        names: job_names,
        reply,
    })
    .await;
    for (name, error_code, _) in results {
        let mut out = DeletableTopicResult::default();
        if version >= 6 {
            if let Some(topic) = before.topics.get(&name) {
                out.topic_id = topic.uuid();
            }
        }
        out.name = Some(TopicName(text(&name)));
        out.error_code = error_code;
        response.responses.push(out);
    }
    response
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    _version: i16,
    mut request: CreatePartitionsRequest,
    access: Access,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    // Kafka: Alter on the topic.
    let (allowed, denied) = std::mem::take(&mut request.topics)
        .into_iter()
        .partition(|t| access.allows_topic(Operation::Alter, &t.name));
    request.topics = allowed;
    for topic in denied {
        let mut out = CreatePartitionsTopicResult::default();
        out.name = topic.name;
        out.error_code = code::TOPIC_AUTHORIZATION_FAILED;
        response.results.push(out);
    }
    let names: Vec<String> = request
        .topics
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    let items = request
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.count))
        .collect();
    let validate_only = request.validate_only;
    let results = controller_call(shard, &names, |reply| ControlJob::CreatePartitions {
        items,
        validate_only,
        reply,
    })
    .await;
    for (name, error_code, message) in results {
        let mut out = CreatePartitionsTopicResult::default();
        out.name = TopicName(text(&name));
        out.error_code = error_code;
        out.error_message = message.map(StrBytes::from_string);
        response.results.push(out);
    }
    response
}
