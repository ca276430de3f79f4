//! The controller: runs on shard 0 only and owns the one mutable copy of the metadata. Changes are
//! applied one at a time: mutate, persist (write-then-rename), broadcast the new versioned
//! snapshot to every shard's inbox, wait until every shard has installed it, then answer. So once
//! a client sees CreateTopics succeed, every shard already serves the topic.
//!
//! Core module: imports no protocol. Refusals are [`TopicError`]s; each protocol maps them to its
//! codes (Kafka's in `kafka::error_codes`).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::validate_topic_config;
use crate::metadata::{assign_shard, new_topic_id, valid_topic_name, Journal, Metadata, TopicMeta};
use crate::routing::broker::{self as routing_glue, CreateRouting, Refusal};
use crate::routing::controller::RoutingController;
use crate::routing::exchange::RoutingErrorKind;

use super::mesh::{
    reply_channel, ConfigChange, ControlJob, GroupConfigChange, ItemResults, Job, NewTopic,
};
use super::Shard;

/// Why the controller refused one item of a change; the message says why to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("unknown topic")]
    UnknownTopic,
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidConfig(String),
    /// A `weir.*` routing declaration was refused.
    #[error("{message}")]
    Routing {
        kind: RoutingErrorKind,
        message: String,
    },
    /// The change could not be made durable.
    #[error("storage error")]
    Storage,
}

impl TopicError {
    /// The message an admin response carries, if the refusal has one.
    pub fn message(&self) -> Option<String> {
        match self {
            TopicError::UnknownTopic | TopicError::Storage => None,
            other => Some(other.to_string()),
        }
    }
}

impl From<Refusal> for TopicError {
    fn from(refusal: Refusal) -> TopicError {
        TopicError::Routing {
            kind: refusal.kind,
            message: refusal.message,
        }
    }
}

fn succeeded(results: &ItemResults) -> bool {
    results.iter().any(|(_, result)| result.is_ok())
}

/// Kafka's limit on partitions per request is higher; this keeps one request's work bounded.
const PARTITIONS_MAX: i32 = 100_000;

pub async fn run(shard: Rc<Shard>, jobs: flume::Receiver<ControlJob>, initial: Metadata) {
    // Exchanges and bindings: loaded at start into `initial.routing`; the controller is their
    // single writer from here on, and `commit` broadcasts its snapshot with the metadata.
    let mut routing =
        RoutingController::from_snapshot(&shard.config.data_dir, initial.routing.clone());
    let mut journal = open_journal(&shard, &initial);
    let mut metadata = initial;
    while let Ok(job) = jobs.recv_async().await {
        let answered = answer_directly(&shard, &mut journal, &mut metadata, &mut routing, job);
        let Some(job) = answered.await else {
            continue;
        };
        let (results, validate_only, reply) = match job {
            ControlJob::CreateTopics {
                topics,
                validate_only,
                reply,
            } => {
                let results =
                    create_topics(&shard, &mut metadata, &mut routing, topics, validate_only);
                (results, validate_only, reply)
            }
            ControlJob::DeleteTopics { names, reply } => (
                delete_topics(&mut metadata, &mut routing, names),
                false,
                reply,
            ),
            ControlJob::CreatePartitions {
                items,
                validate_only,
                reply,
            } => {
                let results = create_partitions(&shard, &mut metadata, items, validate_only);
                (results, validate_only, reply)
            }
            ControlJob::AlterConfigs {
                changes,
                validate_only,
                reply,
            } => {
                let results = alter_configs(&mut metadata, &mut routing, changes, validate_only);
                (results, validate_only, reply)
            }
            ControlJob::AlterGroupConfigs {
                changes,
                validate_only,
                reply,
            } => {
                let results = alter_group_configs(&shard, &mut metadata, changes, validate_only);
                (results, validate_only, reply)
            }
            // Answered by `answer_directly`.
            _ => continue,
        };
        let changed = !validate_only && succeeded(&results);
        commit(&shard, &mut journal, &mut metadata, &routing, changed).await;
        let _ = reply.send_async(results).await;
    }
}

/// Does and answers the jobs whose answer is not per-item results (routing, ACLs, producer
/// ids); gives any other job back.
async fn answer_directly(
    shard: &Shard,
    journal: &mut Option<Journal>,
    metadata: &mut Metadata,
    routing: &mut RoutingController,
    job: ControlJob,
) -> Option<ControlJob> {
    match job {
        ControlJob::Routing { changes, reply } => {
            let result = routing_glue::apply(routing, &changes, false).map_err(TopicError::from);
            let changed = result.is_ok();
            commit(shard, journal, metadata, routing, changed).await;
            let _ = reply.send_async(result).await;
        }
        ControlJob::AlterAcls {
            create,
            delete,
            reply,
        } => {
            let (changed, deleted) = alter_acls(metadata, create, delete);
            commit(shard, journal, metadata, routing, changed).await;
            let _ = reply.send_async(deleted).await;
        }
        ControlJob::AlterUsers { changes, reply } => {
            let results = alter_users(shard, journal, metadata, routing, &changes).await;
            let _ = reply.send_async(results).await;
        }
        ControlJob::AllocateProducerId { reply } => {
            let result = allocate_producer_id(journal, metadata);
            let _ = reply.send_async(result).await;
        }
        other => return Some(other),
    }
    None
}

/// Applies user changes (SCRAM credentials) and journals them.
async fn alter_users(
    shard: &Shard,
    journal: &mut Option<Journal>,
    metadata: &mut Metadata,
    routing: &RoutingController,
    changes: &[crate::security::users::UserChange],
) -> super::mesh::UserResults {
    let mut results = crate::security::users::apply(&mut metadata.users, changes);
    let changed = results.iter().any(|(_, result)| result.is_ok());
    commit(shard, journal, metadata, routing, changed).await;
    if changed && journal.is_none() {
        // Credentials that would vanish on restart are not reported as stored.
        for (_, result) in &mut results {
            if result.is_ok() {
                *result = Err(crate::security::users::UserError::Storage);
            }
        }
    }
    results
}

/// The metadata journal over `initial`; `None` (every change refused) when it cannot be opened.
fn open_journal(shard: &Shard, initial: &Metadata) -> Option<Journal> {
    match Journal::open(&shard.config.data_dir, initial) {
        Ok(journal) => Some(journal),
        Err(error) => {
            tracing::error!(%error, "opening the metadata journal failed; changes are refused");
            None
        }
    }
}

fn delete_topics(
    metadata: &mut Metadata,
    routing: &mut RoutingController,
    names: Vec<String>,
) -> ItemResults {
    let mut results = ItemResults::new();
    for name in names {
        let exchange = routing.table().is_exchange(&name);
        let known = exchange || metadata.topics.contains_key(&name);
        // An exchange is deleted with its bindings; a topic loses the bindings to it.
        let changes = routing_glue::delete_changes(routing, &name);
        let result = if !known {
            Err(TopicError::UnknownTopic)
        } else {
            routing_glue::apply(routing, &changes, false).map_err(TopicError::from)
        };
        if result.is_ok() {
            metadata.topics.remove(&name);
        }
        results.push((name, result));
    }
    results
}

/// Makes `metadata` durable through the journal (none: it could not be opened).
fn persist(journal: &mut Option<Journal>, metadata: &Metadata) -> std::io::Result<()> {
    match journal {
        Some(journal) => journal.persist(metadata),
        None => Err(std::io::Error::other("no metadata journal")),
    }
}

fn allocate_producer_id(
    journal: &mut Option<Journal>,
    metadata: &mut Metadata,
) -> Result<i64, TopicError> {
    let id = metadata.next_producer_id;
    metadata.next_producer_id += 1;
    // Persist before answering, so that an id is never handed out twice across restarts.
    match persist(journal, metadata) {
        Ok(()) => Ok(id),
        Err(error) => {
            tracing::error!(%error, "persisting the producer id counter failed");
            Err(TopicError::Storage)
        }
    }
}

/// Persists and broadcasts the metadata when it changed.
async fn commit(
    shard: &Shard,
    journal: &mut Option<Journal>,
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
    if let Err(error) = persist(journal, metadata) {
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
    topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.clone();
            let result = create_topic(shard, metadata, routing, topic, validate_only);
            (name, result)
        })
        .collect()
}

/// One CreateTopics entry: an exchange declaration, or a topic with its bindings.
fn create_topic(
    shard: &Shard,
    metadata: &mut Metadata,
    routing: &mut RoutingController,
    topic: NewTopic,
    validate_only: bool,
) -> Result<(), TopicError> {
    // `weir.*` routing configs declare exchanges and bindings; they are not topic configs.
    let (configs, routing_configs) = routing_glue::split_configs(topic.configs);
    let plan = if valid_topic_name(&topic.name) {
        routing_glue::plan_create(routing, metadata, &topic.name, &routing_configs)?
    } else {
        CreateRouting::Topic(Vec::new())
    };
    let bindings = match plan {
        CreateRouting::Exchange(changes) => {
            // An exchange has no partitions of its own to create: it is the declaration.
            routing_glue::apply(routing, &changes, validate_only)?;
            if !validate_only {
                tracing::info!(exchange = %topic.name, "declared exchange");
            }
            return Ok(());
        }
        CreateRouting::Topic(bindings) => bindings,
    };
    let partitions = if topic.partitions == -1 {
        shard.config.num_partitions
    } else {
        topic.partitions
    };
    check_new_topic(metadata, &topic.name, partitions, &configs)?;
    // The topic's bindings (`weir.bindings`) are applied last of all checks and before the
    // topic is created, so a refused binding leaves no topic behind.
    routing_glue::apply(routing, &bindings, validate_only)?;
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
    Ok(())
}

/// The checks of a new topic, in the order their errors take precedence.
fn check_new_topic(
    metadata: &Metadata,
    name: &str,
    partitions: i32,
    configs: &BTreeMap<String, String>,
) -> Result<(), TopicError> {
    if !valid_topic_name(name) {
        return Err(TopicError::InvalidName(format!(
            "invalid topic name {name:?}"
        )));
    }
    if metadata.topics.contains_key(name) {
        return Err(TopicError::AlreadyExists(format!(
            "topic {name} already exists"
        )));
    }
    if !(1..=PARTITIONS_MAX).contains(&partitions) {
        return Err(TopicError::InvalidPartitions(format!(
            "partitions must be 1..={PARTITIONS_MAX}"
        )));
    }
    match configs
        .iter()
        .find_map(|(key, value)| validate_topic_config(key, value).err())
    {
        Some(message) => Err(TopicError::InvalidConfig(message)),
        None => Ok(()),
    }
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
            results.push((name, Err(TopicError::UnknownTopic)));
            continue;
        };
        let current = topic.partitions.len() as i32;
        if count <= current || count > PARTITIONS_MAX {
            let message = format!("topic has {current} partitions; the new count must be larger (and <= {PARTITIONS_MAX})");
            results.push((name, Err(TopicError::InvalidPartitions(message))));
            continue;
        }
        if !validate_only {
            for p in current as usize..count as usize {
                topic.partitions.push(assign_shard(&name, p, shard.count));
            }
        }
        results.push((name, Ok(())));
    }
    results
}

fn alter_configs(
    metadata: &mut Metadata,
    routing: &mut RoutingController,
    changes: Vec<ConfigChange>,
    validate_only: bool,
) -> ItemResults {
    changes
        .into_iter()
        .map(|change| {
            let topic = change.topic.clone();
            (
                topic,
                alter_config(metadata, routing, change, validate_only),
            )
        })
        .collect()
}

/// One AlterConfigs resource: routing changes first, then the topic's own configs.
fn alter_config(
    metadata: &mut Metadata,
    routing: &mut RoutingController,
    change: ConfigChange,
    validate_only: bool,
) -> Result<(), TopicError> {
    let exchange = routing.table().is_exchange(&change.topic);
    if !exchange && !metadata.topics.contains_key(&change.topic) {
        return Err(TopicError::UnknownTopic);
    }
    let invalid = change.edits.iter().find_map(|(key, value)| {
        value
            .as_ref()
            .and_then(|v| validate_topic_config(key, v).err())
    });
    if let Some(message) = invalid {
        return Err(TopicError::InvalidConfig(message));
    }
    if exchange && change.edits.iter().any(|(_, value)| value.is_some()) {
        let message = "an exchange has no log: only weir.exchange.* and weir.bindings apply";
        return Err(TopicError::InvalidConfig(message.into()));
    }
    // Routing changes first: if they are refused, nothing of this resource is applied.
    let changes = routing_glue::alter_changes(routing, &change.topic, &change.routing)?;
    routing_glue::apply(routing, &changes, validate_only)?;
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
    Ok(())
}

/// Group configs: each group's whole set after the change is validated (as Kafka validates the
/// merged set), then stored; a group left with none has no entry. A group need not exist.
fn alter_group_configs(
    shard: &Shard,
    metadata: &mut Metadata,
    changes: Vec<GroupConfigChange>,
    validate_only: bool,
) -> ItemResults {
    use crate::shares::group_configs;
    changes
        .into_iter()
        .map(|change| {
            let current = metadata.group_configs.get(&change.group);
            let configs = group_configs::edited(current, change.replace_all, &change.edits);
            let result = group_configs::validate(&shard.config.shares, &configs)
                .map_err(TopicError::InvalidConfig);
            if result.is_ok() && !validate_only {
                tracing::info!(group = %change.group, ?configs, "group configs");
                if configs.is_empty() {
                    metadata.group_configs.remove(&change.group);
                } else {
                    metadata.group_configs.insert(change.group.clone(), configs);
                }
            }
            (change.group, result)
        })
        .collect()
}

/// ACL bindings added, then removed by filter (Kafka's CreateAcls and DeleteAcls); whether the
/// set changed, and what each filter removed.
fn alter_acls(
    metadata: &mut Metadata,
    create: Vec<crate::security::acl::AclBinding>,
    delete: Vec<crate::security::acl::AclFilter>,
) -> (bool, Vec<Vec<crate::security::acl::AclBinding>>) {
    let before = metadata.acls.clone();
    for binding in create {
        tracing::info!(?binding, "ACL created");
        metadata.acls.insert(binding);
    }
    let deleted: Vec<Vec<_>> = delete
        .iter()
        .map(|filter| {
            let gone: Vec<_> = metadata
                .acls
                .iter()
                .filter(|binding| filter.matches(binding))
                .cloned()
                .collect();
            for binding in &gone {
                tracing::info!(?binding, "ACL deleted");
                metadata.acls.remove(binding);
            }
            gone
        })
        .collect();
    (before != metadata.acls, deleted)
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
                partitions: vec![crate::shard::ShardId(0)],
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
        assert_eq!(results[0].1, Ok(()));
        assert_eq!(metadata.topics["t"].configs.len(), 2);
        let results = alter_configs(
            &mut metadata,
            &mut routing,
            vec![set(vec![("flush.ms".into(), Some("x".into()))], false)],
            false,
        );
        assert!(
            matches!(results[0].1, Err(TopicError::InvalidConfig(_))),
            "{:?}",
            results[0].1
        );
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
        assert_eq!(results[0].1, Err(TopicError::UnknownTopic));
    }
}
