//! Group requests as they travel between shards, and the coordinator's place in a shard: open
//! and close it with the shard, serve the group jobs forwarded to it, and `call` a group's owner
//! shard from whichever shard a request arrived on.
//!
//! Core: requests and answers are the domain types of `groups/` (every message is `Send`); a
//! protocol decodes its wire requests into these and shapes the answers back. A request for
//! group G runs on `owner_shard(G)`, locally or through that shard's mesh inbox.

use std::rc::Rc;

use super::coordinator::GroupCoordinator;
use super::describe::{GroupDescription, GroupListing};
use super::error::GroupError;
use super::group::JoinOutcome;
use super::join::JoinRequest;
use super::leave::LeavingMember;
use super::offsets::{CommitResults, FetchedOffsets, OffsetCommit, TopicPartitions};
use super::sync::{MemberGeneration, SyncRequest, Synced};
use crate::shard::mesh::{reply_channel, Job, Reply};
use crate::shard::Shard;

/// A group request, as it travels to the group's owner shard.
pub enum GroupRequest {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(MemberGeneration),
    Leave {
        group_id: String,
        members: Vec<LeavingMember>,
    },
    OffsetCommit(OffsetCommit),
    OffsetFetch {
        group_id: String,
        /// (topic, partitions); None asks for everything the group committed.
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    Describe(String),
    /// ListGroups of one shard, with its states filter.
    List(Vec<String>),
}

/// The answer to a `GroupRequest`, variant for variant.
pub enum GroupResponse {
    Join(JoinOutcome),
    Sync(Result<Synced, GroupError>),
    Heartbeat(Result<(), GroupError>),
    Leave(Result<Vec<Result<(), GroupError>>, GroupError>),
    OffsetCommit(CommitResults),
    OffsetFetch(Result<FetchedOffsets, GroupError>),
    Describe(Result<GroupDescription, GroupError>),
    List(Vec<GroupListing>),
}

/// A group request forwarded over the mesh, with the channel its answer goes back on.
pub struct GroupJob {
    pub request: GroupRequest,
    pub reply: Reply<GroupResponse>,
}

/// Opens this shard's coordinator on `<data-dir>/groups`.
pub async fn open(shard: &Rc<Shard>) -> anyhow::Result<()> {
    let coordinator =
        GroupCoordinator::open(&shard.config.data_dir.join("groups"), shard.id.index()).await?;
    *shard.groups.borrow_mut() = Some(coordinator);
    Ok(())
}

/// Closes this shard's coordinator: parked requests are answered, queued commits made durable.
pub async fn close(shard: &Shard) {
    let coordinator = shard.groups.borrow_mut().take();
    if let Some(coordinator) = coordinator {
        coordinator.close().await;
    }
}

/// Runs one group request on this (the owner) shard; None once its coordinator is closed.
async fn run_local(shard: &Shard, request: GroupRequest) -> Option<GroupResponse> {
    let coordinator = shard.groups.borrow().clone()?;
    if let Some(refusal) = share_group_refusal(&request) {
        return Some(refusal);
    }
    Some(match request {
        GroupRequest::Join(join) => GroupResponse::Join(coordinator.join_group(join).await),
        GroupRequest::Sync(sync) => GroupResponse::Sync(coordinator.sync_group(sync).await),
        GroupRequest::Heartbeat(member) => GroupResponse::Heartbeat(coordinator.heartbeat(&member)),
        GroupRequest::Leave { group_id, members } => {
            GroupResponse::Leave(coordinator.leave_group(&group_id, &members))
        }
        GroupRequest::OffsetCommit(commit) => {
            GroupResponse::OffsetCommit(coordinator.commit_offsets(commit).await)
        }
        GroupRequest::OffsetFetch { group_id, topics } => {
            GroupResponse::OffsetFetch(coordinator.fetch_offsets(&group_id, topics))
        }
        GroupRequest::Describe(group_id) => {
            GroupResponse::Describe(coordinator.describe_group(&group_id))
        }
        GroupRequest::List(states) => GroupResponse::List(coordinator.list_groups(&states)),
    })
}

/// One group id is one group (Kafka's GroupMetadataManager): the id of a share group, which
/// `shares::members` holds on this same shard, is not a classic group's. Kafka's answers then:
/// JoinGroup INCONSISTENT_GROUP_PROTOCOL with no member id; SyncGroup, Heartbeat and LeaveGroup
/// UNKNOWN_MEMBER_ID; OffsetCommit and DescribeGroups "not found" (`NotClassicGroup`).
/// OffsetFetch goes ahead: a share group commits nothing here, so it finds no offset, as Kafka.
fn share_group_refusal(request: &GroupRequest) -> Option<GroupResponse> {
    let is_share = crate::shares::members::is_share_group;
    match request {
        GroupRequest::Join(join) if is_share(&join.group_id) => Some(GroupResponse::Join(
            JoinOutcome::error(GroupError::InconsistentProtocol, ""),
        )),
        GroupRequest::Sync(sync) if is_share(&sync.member.group_id) => {
            Some(GroupResponse::Sync(Err(GroupError::UnknownMember)))
        }
        GroupRequest::Heartbeat(member) if is_share(&member.group_id) => {
            Some(GroupResponse::Heartbeat(Err(GroupError::UnknownMember)))
        }
        GroupRequest::Leave { group_id, .. } if is_share(group_id) => {
            Some(GroupResponse::Leave(Err(GroupError::UnknownMember)))
        }
        GroupRequest::OffsetCommit(commit) if is_share(&commit.member.group_id) => {
            let refused = |topic: &TopicPartitions<_>| TopicPartitions {
                name: topic.name.clone(),
                partitions: (topic.partitions.iter())
                    .map(|(partition, _)| (*partition, Err(GroupError::NotClassicGroup)))
                    .collect(),
            };
            let results = commit.topics.iter().map(refused).collect();
            Some(GroupResponse::OffsetCommit(results))
        }
        GroupRequest::Describe(group_id) if is_share(group_id) => {
            Some(GroupResponse::Describe(Err(GroupError::NotClassicGroup)))
        }
        _ => None,
    }
}

/// Serves a group job that another shard forwarded here.
pub async fn serve(shard: &Shard, job: GroupJob) {
    if let Some(response) = run_local(shard, job.request).await {
        let _ = job.reply.send_async(response).await;
    }
}

/// Runs a group request on shard `owner`, locally or over the mesh; None if it is unreachable
/// (its inbox closed, or its coordinator closed before answering).
pub async fn call(shard: &Shard, owner: usize, request: GroupRequest) -> Option<GroupResponse> {
    if owner == shard.id.index() {
        return run_local(shard, request).await;
    }
    let (reply, answer) = reply_channel();
    shard.mesh.shards[owner]
        .send_async(Job::Group(Box::new(GroupJob { request, reply })))
        .await
        .ok()?;
    answer.recv_async().await.ok()
}
