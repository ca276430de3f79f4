//! The share-group offset admin APIs in domain terms (KIP-932's DescribeShareGroupOffsets,
//! AlterShareGroupOffsets, DeleteShareGroupOffsets), from whichever shard a request reached:
//! the group's membership is asked on its coordinator shard, each partition's state is read or
//! changed on the partition's owner shard (`partitions.rs`), over the mesh.
//!
//! A share partition's "start offset" is its state's floor: every record below it is
//! acknowledged or archived. Altering and deleting need a group without members, checked on the
//! coordinator first; a member joining between that check and the partitions' change is not
//! refused (Kafka serializes both on its coordinator; Weir's state lives on other shards).

use std::rc::Rc;

use crate::groups::owner_shard;
use crate::partition::PartitionError;
use crate::shard::{Shard, ShardId};

use super::members;
use super::partitions::{self, SharePartitionId};
use crate::shard::mesh::on_shard;

/// Why a whole request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffsetsError {
    #[error("the group has members")]
    NonEmptyGroup,
    /// The id is a classic group's (one id is one group, as in Kafka).
    #[error("the group is not a share group")]
    NotShareGroup,
    #[error("the coordinator is stopping")]
    CoordinatorNotAvailable,
}

/// Altering and deleting offsets need a share group with no members. A group the coordinator
/// does not know passes (an admin may set offsets before any member came), and with `adopt`
/// (AlterShareGroupOffsets) it is known from then on, Empty, as the state it gets is a share
/// group's.
pub async fn check_empty(shard: &Rc<Shard>, group: &str, adopt: bool) -> Result<(), OffsetsError> {
    let owner = ShardId(owner_shard(group, shard.count));
    let wanted = group.to_string();
    let checked = on_shard(shard, owner, move |shard| {
        if members::has_members(&wanted) {
            return Err(OffsetsError::NonEmptyGroup);
        }
        let classic = shard.groups.borrow().clone();
        let is_classic = classic.is_some_and(|classic| classic.has_group(&wanted));
        if is_classic && !members::is_share_group(&wanted) {
            return Err(OffsetsError::NotShareGroup);
        }
        if adopt {
            members::adopt([wanted]);
        }
        Ok(())
    });
    checked
        .await
        .unwrap_or(Err(OffsetsError::CoordinatorNotAvailable))
}

/// Runs `work` on the owner shard of `topic`'s `partition` with the share partition's id.
async fn on_owner<T: Send + 'static>(
    shard: &Rc<Shard>,
    group: &str,
    (topic, partition): (&str, i32),
    work: impl FnOnce(&Shard, &SharePartitionId) -> Result<T, PartitionError> + Send + 'static,
) -> Result<T, PartitionError> {
    let owner = shard
        .metadata()
        .owner(topic, partition)
        .ok_or(PartitionError::UnknownPartition)?;
    let id = SharePartitionId {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
    };
    on_shard(shard, owner, move |shard| work(shard, &id))
        .await
        .unwrap_or(Err(PartitionError::Closed))
}

/// The partition's start offset; `None` when the group never fetched it.
pub async fn start_offset(
    shard: &Rc<Shard>,
    group: &str,
    partition: (&str, i32),
) -> Result<Option<i64>, PartitionError> {
    on_owner(shard, group, partition, partitions::start_offset).await
}

/// Starts the group's share partition afresh at `start`, durably.
pub async fn start_at(
    shard: &Rc<Shard>,
    group: &str,
    partition: (&str, i32),
    start: i64,
) -> Result<(), PartitionError> {
    on_owner(shard, group, partition, move |shard, id| {
        partitions::start_at(shard, id, start)
    })
    .await?;
    synced(shard, partition).await
}

/// Forgets the group's share partition, durably; answers whether it had a state.
pub async fn forget(
    shard: &Rc<Shard>,
    group: &str,
    partition: (&str, i32),
) -> Result<bool, PartitionError> {
    let existed = on_owner(shard, group, partition, partitions::forget).await?;
    // Until the forget is durable a fetch would find the old state in the store again.
    synced(shard, partition).await?;
    Ok(existed)
}

/// Waits on the partition's owner until its share ack store has written what was queued.
async fn synced(shard: &Rc<Shard>, partition: (&str, i32)) -> Result<(), PartitionError> {
    let owner = shard
        .metadata()
        .owner(partition.0, partition.1)
        .ok_or(PartitionError::UnknownPartition)?;
    let (reply, answer) = crate::shard::mesh::reply_channel();
    let sent = on_shard(shard, owner, move |_| {
        glommio::spawn_local(async move {
            let _ = reply.send_async(partitions::sync().await).await;
        })
        .detach();
    })
    .await;
    if sent.is_none() {
        return Err(PartitionError::Closed);
    }
    answer
        .recv_async()
        .await
        .unwrap_or(Err(PartitionError::Closed))
}

/// (topic id, partition) of every share partition of `group` with a state, on every shard.
pub async fn partitions_of(shard: &Rc<Shard>, group: &str) -> Vec<(String, i32)> {
    let mut found = Vec::new();
    for index in 0..shard.count {
        let wanted = group.to_string();
        let listed = on_shard(shard, ShardId(index), move |_| {
            partitions::of_group(&wanted)
        });
        found.extend(listed.await.unwrap_or_default());
    }
    found
}
