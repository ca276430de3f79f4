//! OffsetCommit and OffsetFetch on the group's owner shard: who may commit for a group right
//! now (Kafka's fencing by generation and membership), and what a group has committed.
//!
//! Runs on the owner shard's executor. A commit answers once its records are durable in the
//! shard's offset log (`offset_store.rs`); the group is never borrowed across that wait.

use std::time::Instant;

use super::coordinator::{now_ms, valid_name, GroupCoordinator};
use super::error::GroupError;
use super::group::GroupState;
use super::offset_store::{CommittedOffset, OffsetRecord};
use super::sync::MemberGeneration;

/// One topic's partitions, each with a `T`: what is committed, what was asked, or its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPartitions<T> {
    pub name: String,
    pub partitions: Vec<(i32, T)>,
}

/// What a member commits for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCommit {
    pub offset: i64,
    /// -1 when the client sends none.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// An OffsetCommit: by a member of the current generation, or (generation -1, no member id) by
/// a client that only uses the broker to store offsets.
#[derive(Debug, Clone, Default)]
pub struct OffsetCommit {
    pub member: MemberGeneration,
    pub topics: Vec<TopicPartitions<PartitionCommit>>,
}

/// Per partition, in request order: committed (durably), or why not.
pub type CommitResults = Vec<TopicPartitions<Result<(), GroupError>>>;

/// Per partition: its committed offset, None when nothing is committed.
pub type FetchedOffsets = Vec<TopicPartitions<Option<CommittedOffset>>>;

impl GroupCoordinator {
    /// Commits every partition the member may commit, durably, and says for each whether it did.
    pub async fn commit_offsets(&self, request: OffsetCommit) -> CommitResults {
        let group_error = self.commit_error(&request.member).err();
        let timestamp_ms = now_ms();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for (partition, commit) in topic.partitions {
                let result = self.check_commit(group_error, &topic.name, partition, &commit);
                if result.is_ok() {
                    records.push(OffsetRecord {
                        group: request.member.group_id.clone(),
                        topic: topic.name.clone(),
                        partition,
                        value: CommittedOffset {
                            offset: commit.offset,
                            leader_epoch: commit.leader_epoch,
                            metadata: commit.metadata,
                            commit_timestamp_ms: timestamp_ms,
                        },
                    });
                }
                partitions.push((partition, result));
            }
            results.push(TopicPartitions {
                name: topic.name,
                partitions,
            });
        }
        if let Err(error) = self.offsets.commit(records).await {
            tracing::warn!(shard = self.shard, %error, "offset commit not durable");
            for (_, result) in results.iter_mut().flat_map(|topic| &mut topic.partitions) {
                if result.is_ok() {
                    *result = Err(GroupError::OffsetsNotDurable);
                }
            }
        }
        results
    }

    /// One partition of a commit: the group's refusal, or the partition's own.
    fn check_commit(
        &self,
        group_error: Option<GroupError>,
        topic: &str,
        partition: i32,
        commit: &PartitionCommit,
    ) -> Result<(), GroupError> {
        if let Some(error) = group_error {
            return Err(error);
        }
        if !valid_name(topic) || partition < 0 {
            return Err(GroupError::UnknownTopicOrPartition);
        }
        let metadata_bytes = commit.metadata.as_ref().map_or(0, String::len);
        if metadata_bytes > self.config.offset_metadata_bytes_max {
            return Err(GroupError::OffsetMetadataTooLarge);
        }
        Ok(())
    }

    /// Kafka's fencing for OffsetCommit: who may commit for this group right now.
    fn commit_error(&self, member: &MemberGeneration) -> Result<(), GroupError> {
        if self.closed.get() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if !valid_name(&member.group_id) {
            return Err(GroupError::InvalidGroupId);
        }
        let generation_id = member.generation_id;
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&member.group_id) else {
            // A group that only uses Kafka to store offsets (generation -1, no member).
            return if generation_id < 0 {
                Ok(())
            } else {
                Err(GroupError::IllegalGeneration)
            };
        };
        if group.is_fenced(member.instance_id.as_deref(), &member.member_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if generation_id < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        let group_generation = group.generation_id;
        let state = group.state;
        let Some(member) = group.member_mut(&member.member_id) else {
            return Err(GroupError::UnknownMember);
        };
        if generation_id != group_generation {
            return Err(GroupError::IllegalGeneration);
        }
        match state {
            GroupState::Stable | GroupState::PreparingRebalance => {
                member.session_deadline = Instant::now() + member.session_timeout;
                Ok(())
            }
            GroupState::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            GroupState::Empty => Err(GroupError::UnknownMember),
            GroupState::Dead => Err(GroupError::CoordinatorNotAvailable),
        }
    }

    /// The committed offsets of the `wanted` partitions ((topic, partitions); None: all of the
    /// group's), in the order asked; a partition with nothing committed has None.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<FetchedOffsets, GroupError> {
        if self.closed.get() {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let Some(wanted) = wanted else {
            return Ok(self.group_offsets(group_id));
        };
        Ok(wanted
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|partition| (partition, self.offsets.get(group_id, &name, partition)))
                    .collect();
                TopicPartitions { name, partitions }
            })
            .collect())
    }

    /// Everything `group_id` committed, by topic in the store's order.
    fn group_offsets(&self, group_id: &str) -> FetchedOffsets {
        let mut topics: FetchedOffsets = Vec::new();
        for (topic, partition, value) in self.offsets.group_offsets(group_id) {
            match topics.last_mut() {
                Some(last) if last.name == topic => last.partitions.push((partition, Some(value))),
                _ => topics.push(TopicPartitions {
                    name: topic,
                    partitions: vec![(partition, Some(value))],
                }),
            }
        }
        topics
    }
}
