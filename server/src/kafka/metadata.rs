//! Metadata: brokers are the shards (broker id i at port listen+1+i), each partition's leader is
//! its owning shard. Unknown topics are created on first use when `auto.create.topics.enable`
//! (and the request allows it), as the classic client examples assume.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::admin_topics::auto_create;
use super::error_codes as code;
use crate::metadata::{valid_topic_name, Metadata};
use crate::security::acl::{Access, Operation};
use crate::shard::{Shard, ShardId};

pub const CLUSTER_ID: &str = "weir";

/// `listener`: the Kafka listener the client came in through (see `brokers`).
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    request: MetadataRequest,
    listener: usize,
    access: Access,
) -> MetadataResponse {
    // v0: an empty list means all topics; v1+: null means all, empty means none. v10+ may name
    // a topic by its id alone (librdkafka's share consumer resolves its assignment so).
    let mut unknown_ids = Vec::new();
    let wanted: Option<Vec<String>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => {
            let known = shard.metadata();
            let mut names = Vec::with_capacity(topics.len());
            for t in topics {
                match (t.name, t.topic_id) {
                    (Some(name), _) => names.push(name.0.to_string()),
                    (None, id) if id.is_nil() => {}
                    (None, id) => match known.topics.iter().find(|(_, m)| m.uuid() == id) {
                        Some((name, _)) => names.push(name.clone()),
                        None => unknown_ids.push(id),
                    },
                }
            }
            Some(names)
        }
    };
    let allow_create = version < 4 || request.allow_auto_topic_creation;
    let mut metadata = shard.metadata();
    if let Some(names) = &wanted {
        // Kafka: auto-creation needs Create on the cluster or on the topic (and Describe, for
        // the topic to be answered at all).
        let may_create_all = access.allows_cluster(Operation::Create);
        let missing: Vec<String> = names
            .iter()
            .filter(|n| {
                !metadata.topics.contains_key(*n)
                    && !metadata.routing.is_exchange(n)
                    && valid_topic_name(n)
                    && access.allows_topic(Operation::Describe, n)
                    && (may_create_all || access.allows_topic(Operation::Create, n))
            })
            .cloned()
            .collect();
        if !missing.is_empty() && allow_create && shard.config.auto_create_topics {
            auto_create(shard, missing).await;
            metadata = shard.metadata();
        }
    }
    let mut response = MetadataResponse::default();
    response.brokers = brokers(shard, listener);
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    }
    response.controller_id = BrokerId(0);
    response.topics = match wanted {
        None => metadata
            .topics
            .keys()
            .chain(metadata.routing.exchanges().map(|exchange| &exchange.name))
            // Kafka lists only the topics the principal may describe.
            .filter(|name| access.allows_topic(Operation::Describe, name))
            .map(|name| topic(shard, &metadata, name, version))
            .collect(),
        Some(names) => names
            .iter()
            .map(
                |name| match access.allows_topic(Operation::Describe, name) {
                    true => topic(shard, &metadata, name, version),
                    false => denied(name),
                },
            )
            .chain(unknown_ids.into_iter().map(unknown_id))
            .collect(),
    };
    response
}

/// A topic the principal may not describe, whether it exists or not (Kafka's answer: nothing
/// about it leaks).
fn denied(name: &str) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(StrBytes::from_string(name.to_string())));
    out.error_code = code::TOPIC_AUTHORIZATION_FAILED;
    out
}

/// A topic asked for by an id no topic has.
fn unknown_id(id: uuid::Uuid) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.topic_id = id;
    out.error_code = code::UNKNOWN_TOPIC_ID;
    out
}

/// The brokers at their ports on Kafka listener `listener`, the one the client came in through.
pub fn brokers(shard: &Shard, listener: usize) -> Vec<MetadataResponseBroker> {
    (0..shard.advertised_broker_count())
        .map(|id| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(id as i32);
            broker.host = StrBytes::from_string(shard.config.advertised_host.clone());
            broker.port = shard.advertised_port(listener, id) as i32;
            broker
        })
        .collect()
}

fn topic(shard: &Shard, metadata: &Metadata, name: &str, version: i16) -> MetadataResponseTopic {
    let mut out = MetadataResponseTopic::default();
    out.name = Some(TopicName(StrBytes::from_string(name.to_string())));
    if metadata.routing.is_exchange(name) {
        // An exchange looks like a topic with one partition per shard, each led by its shard,
        // so that producers spread over the cores; each shard routes what it receives.
        out.partitions = crate::routing::broker::exchange_partition_leaders(shard.count)
            .map(|(index, leader)| {
                let leader = BrokerId(shard.advertised_broker(ShardId(leader as usize)) as i32);
                partition(index, leader, version)
            })
            .collect();
        return out;
    }
    let Some(meta) = metadata.topics.get(name) else {
        out.error_code = if valid_topic_name(name) {
            code::UNKNOWN_TOPIC_OR_PARTITION
        } else {
            code::INVALID_TOPIC_EXCEPTION
        };
        return out;
    };
    if version >= 10 {
        out.topic_id = meta.uuid();
    }
    out.partitions = meta
        .partitions
        .iter()
        .enumerate()
        .map(|(index, owner)| {
            let leader = BrokerId(shard.advertised_broker(*owner) as i32);
            partition(index as i32, leader, version)
        })
        .collect();
    out
}

fn partition(index: i32, leader: BrokerId, version: i16) -> MetadataResponsePartition {
    let mut partition = MetadataResponsePartition::default();
    partition.partition_index = index;
    partition.leader_id = leader;
    if version >= 7 {
        partition.leader_epoch = 0;
    }
    partition.replica_nodes = vec![leader];
    partition.isr_nodes = vec![leader];
    partition
}
