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
use super::offsets::{CommitResults, FetchedOffsets, OffsetCommit};
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
