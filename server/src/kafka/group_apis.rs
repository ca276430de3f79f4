//! Group APIs (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch,
//! DescribeGroups, ListGroups): decoded on the connection's shard, sent to the group's owner shard
//! `groups::owner_shard(group, shards)` and served there by that shard's coordinator.
//! DescribeGroups is split by owner and merged; ListGroups fans out to every shard.
//!
//! The coordinator (`groups::GroupCoordinator`, one per shard) is reached through `GroupService`;
//! `Unavailable` answers COORDINATOR_NOT_AVAILABLE when the owner shard cannot be reached.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};

use super::codec::{decode_body, CodecError, Request};
use super::dispatch::{later, Peer, Pending};
use super::error_codes as code;
use crate::groups::{owner_shard, ClientInfo, GroupCoordinator};
use crate::shard::mesh::{reply_channel, Job, Reply};
use crate::shard::Shard;

/// The coordinator API the broker calls on the owner shard (the group coordinator's contract).
#[allow(async_fn_in_trait)]
pub trait GroupService {
    async fn join_group(&self, version: i16, request: JoinGroupRequest) -> JoinGroupResponse;
    async fn sync_group(&self, version: i16, request: SyncGroupRequest) -> SyncGroupResponse;
    async fn heartbeat(&self, version: i16, request: HeartbeatRequest) -> HeartbeatResponse;
    async fn leave_group(&self, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse;
    async fn offset_commit(
        &self,
        version: i16,
        request: OffsetCommitRequest,
    ) -> OffsetCommitResponse;
    async fn offset_fetch(&self, version: i16, request: OffsetFetchRequest) -> OffsetFetchResponse;
    async fn describe_group(&self, version: i16, group_id: &str) -> DescribedGroup;
    async fn list_groups(&self, version: i16, states_filter: &[String]) -> Vec<ListedGroup>;
}

/// The answer when the owner shard cannot be reached: COORDINATOR_NOT_AVAILABLE (clients retry).
pub struct Unavailable;

/// This shard's coordinator.
pub type Coordinator = GroupCoordinator;

/// Opens this shard's coordinator on `<data-dir>/groups`.
pub async fn open(shard: &Rc<Shard>) -> anyhow::Result<()> {
    let coordinator =
        GroupCoordinator::open(&shard.config.data_dir.join("groups"), shard.id.index()).await?;
    *shard.groups.borrow_mut() = Some(coordinator);
    Ok(())
}

pub async fn close(coordinator: &Coordinator) {
    coordinator.close().await;
}

impl GroupService for GroupCoordinator {
    async fn join_group(&self, version: i16, request: JoinGroupRequest) -> JoinGroupResponse {
        GroupCoordinator::join_group(self, version, request).await
    }
    async fn sync_group(&self, version: i16, request: SyncGroupRequest) -> SyncGroupResponse {
        GroupCoordinator::sync_group(self, version, request).await
    }
    async fn heartbeat(&self, version: i16, request: HeartbeatRequest) -> HeartbeatResponse {
        GroupCoordinator::heartbeat(self, version, request).await
    }
    async fn leave_group(&self, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
        GroupCoordinator::leave_group(self, version, request).await
    }
    async fn offset_commit(
        &self,
        version: i16,
        request: OffsetCommitRequest,
    ) -> OffsetCommitResponse {
        GroupCoordinator::offset_commit(self, version, request).await
    }
    async fn offset_fetch(&self, version: i16, request: OffsetFetchRequest) -> OffsetFetchResponse {
        GroupCoordinator::offset_fetch(self, version, request).await
    }
    async fn describe_group(&self, version: i16, group_id: &str) -> DescribedGroup {
        GroupCoordinator::describe_group(self, version, group_id).await
    }
    async fn list_groups(&self, version: i16, states_filter: &[String]) -> Vec<ListedGroup> {
        GroupCoordinator::list_groups(self, version, states_filter).await
    }
}

impl GroupService for Unavailable {
    async fn join_group(&self, _version: i16, _request: JoinGroupRequest) -> JoinGroupResponse {
        let mut response = JoinGroupResponse::default();
        response.error_code = code::COORDINATOR_NOT_AVAILABLE;
        response
    }
    async fn sync_group(&self, _version: i16, _request: SyncGroupRequest) -> SyncGroupResponse {
        let mut response = SyncGroupResponse::default();
        response.error_code = code::COORDINATOR_NOT_AVAILABLE;
        response
    }
    async fn heartbeat(&self, _version: i16, _request: HeartbeatRequest) -> HeartbeatResponse {
        let mut response = HeartbeatResponse::default();
        response.error_code = code::COORDINATOR_NOT_AVAILABLE;
        response
    }
    async fn leave_group(&self, _version: i16, _request: LeaveGroupRequest) -> LeaveGroupResponse {
        let mut response = LeaveGroupResponse::default();
        response.error_code = code::COORDINATOR_NOT_AVAILABLE;
        response
    }
    async fn offset_commit(
        &self,
        _version: i16,
        request: OffsetCommitRequest,
    ) -> OffsetCommitResponse {
        let mut response = OffsetCommitResponse::default();
        for topic in request.topics {
            let mut out = OffsetCommitResponseTopic::default();
            out.name = topic.name;
            for partition in topic.partitions {
                let mut answer = OffsetCommitResponsePartition::default();
                answer.partition_index = partition.partition_index;
                answer.error_code = code::COORDINATOR_NOT_AVAILABLE;
                out.partitions.push(answer);
            }
            response.topics.push(out);
        }
        response
    }
    async fn offset_fetch(&self, version: i16, request: OffsetFetchRequest) -> OffsetFetchResponse {
        let mut response = OffsetFetchResponse::default();
        if version >= 2 {
            response.error_code = code::COORDINATOR_NOT_AVAILABLE;
        }
        for topic in request.topics.unwrap_or_default() {
            let mut out = OffsetFetchResponseTopic::default();
            out.name = topic.name;
            for partition in topic.partition_indexes {
                let mut answer = OffsetFetchResponsePartition::default();
                answer.partition_index = partition;
                answer.committed_offset = -1;
                answer.error_code = code::COORDINATOR_NOT_AVAILABLE;
                out.partitions.push(answer);
            }
            response.topics.push(out);
        }
        response
    }
    async fn describe_group(&self, _version: i16, group_id: &str) -> DescribedGroup {
        let mut group = DescribedGroup::default();
        group.group_id = GroupId(kafka_protocol::protocol::StrBytes::from_string(
            group_id.to_string(),
        ));
        group.error_code = code::COORDINATOR_NOT_AVAILABLE;
        group
    }
    async fn list_groups(&self, _version: i16, _states_filter: &[String]) -> Vec<ListedGroup> {
        Vec::new()
    }
}

/// A group request as it travels to the owner shard.
pub enum GroupRequest {
    Join(JoinGroupRequest, ClientInfo),
    Sync(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    Leave(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    Describe(String),
    List(Vec<String>),
}

pub enum GroupResponse {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    Describe(DescribedGroup),
    List(Vec<ListedGroup>),
}

pub struct GroupJob {
    pub version: i16,
    pub request: GroupRequest,
    pub reply: Reply<GroupResponse>,
}

/// Runs one group request on this (the owner) shard.
async fn run_local(shard: &Shard, version: i16, request: GroupRequest) -> Option<GroupResponse> {
    let coordinator = shard.groups.borrow().clone()?;
    Some(match request {
        GroupRequest::Join(r, client) => {
            GroupResponse::Join(coordinator.join_group_from(version, &client, r).await)
        }
        GroupRequest::Sync(r) => GroupResponse::Sync(coordinator.sync_group(version, r).await),
        GroupRequest::Heartbeat(r) => {
            GroupResponse::Heartbeat(coordinator.heartbeat(version, r).await)
        }
        GroupRequest::Leave(r) => GroupResponse::Leave(coordinator.leave_group(version, r).await),
        GroupRequest::OffsetCommit(r) => {
            GroupResponse::OffsetCommit(coordinator.offset_commit(version, r).await)
        }
        GroupRequest::OffsetFetch(r) => {
            GroupResponse::OffsetFetch(coordinator.offset_fetch(version, r).await)
        }
        GroupRequest::Describe(group) => {
            GroupResponse::Describe(coordinator.describe_group(version, &group).await)
        }
        GroupRequest::List(states) => {
            GroupResponse::List(coordinator.list_groups(version, &states).await)
        }
    })
}

/// Serves a group job that another shard forwarded here.
pub async fn serve(shard: &Shard, job: GroupJob) {
    if let Some(response) = run_local(shard, job.version, job.request).await {
        let _ = job.reply.send_async(response).await;
    }
}

/// Runs a group request on shard `owner`, locally or over the mesh; `None` if it is unreachable.
async fn call(
    shard: &Shard,
    owner: usize,
    version: i16,
    request: GroupRequest,
) -> Option<GroupResponse> {
    if owner == shard.id.index() {
        return run_local(shard, version, request).await;
    }
    let (reply, answer) = reply_channel();
    shard.mesh.shards[owner]
        .send_async(Job::Group(Box::new(GroupJob {
            version,
            request,
            reply,
        })))
        .await
        .ok()?;
    answer.recv_async().await.ok()
}

macro_rules! single_group {
    ($shard:expr, $request:expr, $type:ty, $variant:ident, $response:ty $(, $extra:expr)?) => {{
        let body: $type = decode_body(&$request)?;
        let shard = $shard.clone();
        let version = $request.version;
        let owner = owner_shard(body.group_id.0.as_str(), shard.count);
        later($request.key, version, $request.correlation_id, async move {
            match call(&shard, owner, version, GroupRequest::$variant(body $(, $extra)?)).await {
                Some(GroupResponse::$variant(response)) => response,
                _ => <$response>::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE),
            }
        })
    }};
}

#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
pub fn dispatch(
    shard: &Rc<Shard>,
    request: Request,
    peer: &Peer<'_>,
) -> Result<Pending, CodecError> {
    Ok(match request.key {
        ApiKey::JoinGroup => {
            let client = ClientInfo {
                client_id: request
                    .header
                    .client_id
                    .as_ref()
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                client_host: peer.client_host.to_string(),
            };
            single_group!(
                shard,
                request,
                JoinGroupRequest,
                Join,
                JoinGroupResponse,
                client
            )
        }
        ApiKey::SyncGroup => {
            single_group!(shard, request, SyncGroupRequest, Sync, SyncGroupResponse)
        }
        ApiKey::Heartbeat => single_group!(
            shard,
            request,
            HeartbeatRequest,
            Heartbeat,
            HeartbeatResponse
        ),
        ApiKey::LeaveGroup => {
            single_group!(shard, request, LeaveGroupRequest, Leave, LeaveGroupResponse)
        }
        ApiKey::OffsetCommit => {
            let body: OffsetCommitRequest = decode_body(&request)?;
            let shard = shard.clone();
            let version = request.version;
            let owner = owner_shard(body.group_id.0.as_str(), shard.count);
            later(request.key, version, request.correlation_id, async move {
                let fallback = Unavailable.offset_commit(version, body.clone()).await;
                match call(&shard, owner, version, GroupRequest::OffsetCommit(body)).await {
                    Some(GroupResponse::OffsetCommit(response)) => response,
                    _ => fallback,
                }
            })
        }
        ApiKey::OffsetFetch => {
            let body: OffsetFetchRequest = decode_body(&request)?;
            let shard = shard.clone();
            let version = request.version;
            let owner = owner_shard(body.group_id.0.as_str(), shard.count);
            later(request.key, version, request.correlation_id, async move {
                let fallback = Unavailable.offset_fetch(version, body.clone()).await;
                match call(&shard, owner, version, GroupRequest::OffsetFetch(body)).await {
                    Some(GroupResponse::OffsetFetch(response)) => response,
                    _ => fallback,
                }
            })
        }
        ApiKey::DescribeGroups => {
            let body: DescribeGroupsRequest = decode_body(&request)?;
            let shard = shard.clone();
            let version = request.version;
            later(request.key, version, request.correlation_id, async move {
                let mut response = DescribeGroupsResponse::default();
                for group in body.groups {
                    let name = group.0.to_string();
                    let owner = owner_shard(&name, shard.count);
                    let described =
                        match call(&shard, owner, version, GroupRequest::Describe(name.clone()))
                            .await
                        {
                            Some(GroupResponse::Describe(described)) => described,
                            _ => Unavailable.describe_group(version, &name).await,
                        };
                    response.groups.push(described);
                }
                response
            })
        }
        ApiKey::ListGroups => {
            let body: ListGroupsRequest = decode_body(&request)?;
            let shard = shard.clone();
            let bootstrap = peer.bootstrap;
            let version = request.version;
            later(request.key, version, request.correlation_id, async move {
                let states: Vec<String> =
                    body.states_filter.iter().map(|s| s.to_string()).collect();
                let mut response = ListGroupsResponse::default();
                // A broker lists the groups it coordinates (clients ask every broker and merge);
                // the bootstrap port stands for the whole cluster, so it asks every shard.
                let owners = if bootstrap {
                    0..shard.count
                } else {
                    shard.id.index()..shard.id.index() + 1
                };
                for owner in owners {
                    match call(&shard, owner, version, GroupRequest::List(states.clone())).await {
                        Some(GroupResponse::List(groups)) => response.groups.extend(groups),
                        _ => response.error_code = code::COORDINATOR_NOT_AVAILABLE,
                    }
                }
                response
            })
        }
        other => {
            return Err(CodecError::UnsupportedVersion {
                key: other,
                version: request.version,
            })
        }
    })
}
