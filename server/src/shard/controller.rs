//! The controller: runs on shard 0 only and owns the one mutable copy of the metadata. Changes are
//! applied one at a time: mutate, persist (write-then-rename), broadcast the new versioned
//! snapshot to every shard's inbox, wait until every shard has installed it, then answer. So once
//! a client sees CreateTopics succeed, every shard already serves the topic.

use std::rc::Rc;
use std::sync::Arc;

use crate::config::validate_topic_config;
use crate::kafka::error_codes as code;
use crate::metadata::{assign_shard, new_topic_id, store, valid_topic_name, Metadata, TopicMeta};
use crate::routing::broker::{self as routing_glue, CreateRouting};
use crate::routing::controller::RoutingController;

use super::mesh::{reply_channel, ConfigChange, ControlJob, ItemResults, Job, NewTopic};
use super::Shard;

/// Kafka's limit on partitions per request is higher; this keeps one request's work bounded.
const PARTITIONS_MAX: i32 = 100_000;

pub async fn run(shard: Rc<Shard>, jobs: flume::Receiver<ControlJob>, initial: Metadata) {
    // Exchanges and bindings: loaded at start into `initial.routing`; the controller is their
    // single writer from here on, and `commit` broadcasts its snapshot with the metadata.
    let mut routing =
        RoutingController::from_snapshot(&shard.config.data_dir, initial.routing.clone());
    let mut metadata = initial;
    while let Ok(job) = jobs.recv_async().await {
        match job {
            ControlJob::CreateTopics {
                topics,
                validate_only,
                reply,
            } => {
                let results =
                    create_topics(&shard, &mut metadata, &mut routing, topics, validate_only);
                commit(
                    &shard,
                    &mut metadata,
                    &routing,
                    !validate_only && results.iter().any(|r| r.1 == 0),
                )
                .await;
                let _ = reply.send_async(results).await;
            }
            ControlJob::DeleteTopics { names, reply } => {
                let mut results = ItemResults::new();
                for name in names {
                    let exchange = routing.table().is_exchange(&name);
                    let known = exchange || metadata.topics.contains_key(&name);
                    // An exchange is deleted with its bindings; a topic loses the bindings to it.
                    let changes = routing_glue::delete_changes(&routing, &name);
                    let result = if !known {
                        Err((code::UNKNOWN_TOPIC_OR_PARTITION, None))
                    } else {
                        routing_glue::apply(&mut routing, &changes, false)
                            .map_err(|(error, message)| (error, Some(message)))
                    };
                    match result {
                        Ok(()) => {
                            metadata.topics.remove(&name);
                            results.push((name, code::NONE, None));
                        }
                        Err((error, message)) => results.push((name, error, message)),
                    }
                }
                commit(
                    &shard,
                    &mut metadata,
                    &routing,
                    results.iter().any(|r| r.1 == 0),
                )
                .await;
                let _ = reply.send_async(results).await;
            }
            ControlJob::CreatePartitions {
                items,
                validate_only,
                reply,
            } => {
                let results = create_partitions(&shard, &mut metadata, items, validate_only);
                commit(
                    &shard,
                    &mut metadata,
                    &routing,
                    !validate_only && results.iter().any(|r| r.1 == 0),
                )
                .await;
                let _ = reply.send_async(results).await;
            }
            ControlJob::AlterConfigs {
                changes,
                validate_only,
                reply,
            } => {
                let results = alter_configs(&mut metadata, &mut routing, changes, validate_only);
                commit(
                    &shard,
                    &mut metadata,
                    &routing,
                    !validate_only && results.iter().any(|r| r.1 == 0),
                )
                .await;
                let _ = reply.send_async(results).await;
            }
            ControlJob::AllocateProducerId { reply } => {
                let id = metadata.next_producer_id;
                metadata.next_producer_id += 1;
                // Persist before answering, so that an id is never handed out twice across restarts.
                let result = match store(&shard.config.data_dir, &metadata) {
                    Ok(()) => Ok(id),
                    Err(error) => {
                        tracing::error!(%error, "persisting the producer id counter failed");
                        Err(code::KAFKA_STORAGE_ERROR)
                    }
                };
                let _ = reply.send_async(result).await;
            }
        }
    }
}

/// Persists and broadcasts the metadata when it changed.
async fn commit(
    shard: &Shard,
    metadata: &mut Metadata,
    routing: &RoutingController,
    changed: bool,
) {
    if !changed {
        return;
    }
    metadata.version += 1;
    // The routing table was persisted by its own store when it changed; it travels with this
    // snapshot so that every shard sees topics and bindings change together.
    metadata.routing = routing.snapshot();
    if let Err(error) = store(&shard.config.data_dir, metadata) {
        tracing::error!(%error, "persisting metadata failed; the change lives until restart");
    }
    let snapshot = Arc::new(metadata.clone());
    let mut waits = Vec::with_capacity(shard.mesh.shards.len());
    for inbox in &shard.mesh.shards {
        let (done, wait) = reply_channel();
        if inbox
            .send_async(Job::Metadata {
                metadata: snapshot.clone(),
                done,
            })
            .await
            .is_ok()
        {
            waits.push(wait);
        }
    }
    for wait in waits {
        let _ = wait.recv_async().await;
    }
}

fn create_topics(
    shard: &Shard,
    metadata: &mut Metadata,
    routing: &mut RoutingController,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> ItemResults {
    let mut results = ItemResults::new();
    for topic in topics {
        // `weir.*` routing configs declare exchanges and bindings; they are not topic configs.
        let (configs, routing_configs) = routing_glue::split_configs(topic.configs);
        let plan = if valid_topic_name(&topic.name) {
            routing_glue::plan_create(routing, metadata, &topic.name, &routing_configs)
        } else {
            Ok(CreateRouting::Topic(Vec::new()))
        };
        let bindings = match plan {
            Err((error, message)) => {
                results.push((topic.name, error, Some(message)));
                continue;
            }
            Ok(CreateRouting::Exchange(changes)) => {
                // An exchange has no partitions of its own to create: it is the declaration.
                match routing_glue::apply(routing, &changes, validate_only) {
                    Ok(()) => {
                        if !validate_only {
                            tracing::info!(exchange = %topic.name, "declared exchange");
                        }
                        results.push((topic.name, code::NONE, None));
                    }
                    Err((error, message)) => results.push((topic.name, error, Some(message))),
                }
                continue;
            }
            Ok(CreateRouting::Topic(bindings)) => bindings,
        };
        let partitions = if topic.partitions == -1 {
            shard.config.num_partitions
        } else {
            topic.partitions
        };
        let invalid_config = configs
            .iter()
            .find_map(|(key, value)| validate_topic_config(key, value).err());
        let error = if !valid_topic_name(&topic.name) {
            Some((
                code::INVALID_TOPIC_EXCEPTION,
                format!("invalid topic name {:?}", topic.name),
            ))
        } else if metadata.topics.contains_key(&topic.name) {
            Some((
                code::TOPIC_ALREADY_EXISTS,
                format!("topic {} already exists", topic.name),
            ))
        } else if !(1..=PARTITIONS_MAX).contains(&partitions) {
            Some((
                code::INVALID_PARTITIONS,
                format!("partitions must be 1..={PARTITIONS_MAX}"),
            ))
        } else {
            invalid_config.map(|message| (code::INVALID_CONFIG, message))
        };
        // The topic's bindings (`weir.bindings`) are applied last of all checks and before the
        // topic is created, so a refused binding leaves no topic behind.
        let error = error.or_else(|| routing_glue::apply(routing, &bindings, validate_only).err());
        match error {
            Some((error, message)) => results.push((topic.name, error, Some(message))),
            None => {
                if !validate_only {
                    let owners = (0..partitions as usize)
                        .map(|p| assign_shard(&topic.name, p, shard.count))
                        .collect();
                    metadata.topics.insert(
                        topic.name.clone(),
                        TopicMeta {
                            id: new_topic_id(),
                            partitions: owners,
                            configs,
                        },
                    );
                    tracing::info!(topic = %topic.name, partitions, "created topic");
                }
                results.push((topic.name, code::NONE, None));
            }
        }
    }
    results
}

fn create_partitions(
    shard: &Shard,
    metadata: &mut Metadata,
    items: Vec<(String, i32)>,
    validate_only: bool,
) -> ItemResults {
    let mut results = ItemResults::new();
    for (name, count) in items {
        let Some(topic) = metadata.topics.get_mut(&name) else {
            results.push((name, code::UNKNOWN_TOPIC_OR_PARTITION, None));
            continue;
        };
        let current = topic.partitions.len() as i32;
        if count <= current || count > PARTITIONS_MAX {
            let message = format!("topic has {current} partitions; the new count must be larger (and <= {PARTITIONS_MAX})");
            results.push((name, code::INVALID_PARTITIONS, Some(message)));
            continue;
        }
        if !validate_only {
            for p in current as usize..count as usize {
                topic.partitions.push(assign_shard(&name, p, shard.count));
            }
        }
        results.push((name, code::NONE, None));
    }
    results
}

fn alter_configs(
    metadata: &mut Metadata,
    routing: &mut RoutingController,
    changes: Vec<ConfigChange>,
    validate_only: bool,
) -> ItemResults {
    let mut results = ItemResults::new();
    for change in changes {
        let exchange = routing.table().is_exchange(&change.topic);
        if !exchange && !metadata.topics.contains_key(&change.topic) {
            results.push((change.topic, code::UNKNOWN_TOPIC_OR_PARTITION, None));
            continue;
        }
        let invalid = change.edits.iter().find_map(|(key, value)| {
            value
                .as_ref()
                .and_then(|v| validate_topic_config(key, v).err())
        });
        if let Some(message) = invalid {
            results.push((change.topic, code::INVALID_CONFIG, Some(message)));
            continue;
        }
        if exchange && change.edits.iter().any(|(_, value)| value.is_some()) {
            let message = "an exchange has no log: only weir.exchange.* and weir.bindings apply";
            results.push((change.topic, code::INVALID_CONFIG, Some(message.into())));
            continue;
        }
        // Routing changes first: if they are refused, nothing of this resource is applied.
        let routed = routing_glue::alter_changes(routing, &change.topic, &change.routing)
            .and_then(|changes| routing_glue::apply(routing, &changes, validate_only));
        if let Err((error, message)) = routed {
            results.push((change.topic, error, Some(message)));
            continue;
        }
        if let (false, Some(topic)) = (validate_only, metadata.topics.get_mut(&change.topic)) {
            if change.replace_all {
                topic.configs.clear();
            }
            for (key, value) in change.edits {
                match value {
                    Some(value) => topic.configs.insert(key, value),
                    None => topic.configs.remove(&key),
                };
            }
        }
        results.push((change.topic, code::NONE, None));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alter_configs_edits_and_replaces() {
        let mut metadata = Metadata::default();
        metadata.topics.insert(
            "t".into(),
            TopicMeta {
                id: new_topic_id(),
                partitions: vec![0],
                configs: Default::default(),
            },
        );
        let directory = tempfile::tempdir().unwrap();
        let mut routing = RoutingController::open(directory.path()).unwrap();
        let set = |edits: Vec<(String, Option<String>)>, replace_all| ConfigChange {
            topic: "t".into(),
            replace_all,
            edits,
            routing: Vec::new(),
        };
        let results = alter_configs(
            &mut metadata,
            &mut routing,
            vec![set(
                vec![
                    ("flush.ms".into(), Some("5".into())),
                    ("a".into(), Some("b".into())),
                ],
                false,
            )],
            false,
        );
        assert_eq!(results[0].1, code::NONE);
        assert_eq!(metadata.topics["t"].configs.len(), 2);
        let results = alter_configs(
            &mut metadata,
            &mut routing,
            vec![set(vec![("flush.ms".into(), Some("x".into()))], false)],
            false,
        );
        assert_eq!(results[0].1, code::INVALID_CONFIG);
        alter_configs(
            &mut metadata,
            &mut routing,
            vec![set(vec![("a".into(), None)], false)],
            false,
        );
        assert_eq!(metadata.topics["t"].configs.len(), 1);
        alter_configs(&mut metadata, &mut routing, vec![set(vec![], true)], false);
        assert!(metadata.topics["t"].configs.is_empty());
        let results = alter_configs(
            &mut metadata,
            &mut routing,
            vec![ConfigChange {
                topic: "nope".into(),
                replace_all: false,
                edits: vec![],
                routing: Vec::new(),
            }],
            false,
        );
        assert_eq!(results[0].1, code::UNKNOWN_TOPIC_OR_PARTITION);
    }
}
