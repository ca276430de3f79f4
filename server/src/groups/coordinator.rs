//! The per-shard group coordinator: the API the broker calls for every group request.
//!
//! Runs on one glommio shard; it is `!Send` and is only touched from that shard's executor.
//! The broker forwards every request for group G to `owner_shard(G, shards)`, so no state is
//! shared between shards. All state sits behind `RefCell`s that are never held across an `.await`.

use std::path::Path;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse,
};

/// One shard's consumer group coordinator.
pub struct GroupCoordinator {
    shard: usize,
}

impl GroupCoordinator {
    /// Opens (or creates) this shard's group state under `groups_dir`.
    pub async fn open(groups_dir: &Path, shard: usize) -> anyhow::Result<Rc<GroupCoordinator>> {
        let _ = groups_dir;
        Ok(Rc::new(GroupCoordinator { shard }))
    }

    pub async fn join_group(&self, version: i16, req: JoinGroupRequest) -> JoinGroupResponse {
        let _ = (version, req, self.shard);
        let mut response = JoinGroupResponse::default();
        response.error_code = ResponseError::CoordinatorNotAvailable.code();
        response
    }

    pub async fn sync_group(&self, version: i16, req: SyncGroupRequest) -> SyncGroupResponse {
        let _ = (version, req);
        let mut response = SyncGroupResponse::default();
        response.error_code = ResponseError::CoordinatorNotAvailable.code();
        response
    }

    pub async fn heartbeat(&self, version: i16, req: HeartbeatRequest) -> HeartbeatResponse {
        let _ = (version, req);
        let mut response = HeartbeatResponse::default();
        response.error_code = ResponseError::CoordinatorNotAvailable.code();
        response
    }

    pub async fn leave_group(&self, version: i16, req: LeaveGroupRequest) -> LeaveGroupResponse {
        let _ = (version, req);
        let mut response = LeaveGroupResponse::default();
        response.error_code = ResponseError::CoordinatorNotAvailable.code();
        response
    }

    pub async fn offset_commit(
        &self,
        version: i16,
        req: OffsetCommitRequest,
    ) -> OffsetCommitResponse {
        let _ = (version, req);
        OffsetCommitResponse::default()
    }

    pub async fn offset_fetch(&self, version: i16, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let _ = (version, req);
        OffsetFetchResponse::default()
    }

    /// One group of a DescribeGroups request (the broker splits and merges by owner).
    pub async fn describe_group(&self, version: i16, group_id: &str) -> DescribedGroup {
        let _ = (version, group_id);
        DescribedGroup::default()
    }

    /// This shard's groups (the broker fans ListGroups out to every shard and merges).
    pub async fn list_groups(&self, version: i16, states_filter: &[String]) -> Vec<ListedGroup> {
        let _ = (version, states_filter);
        Vec::new()
    }

    pub async fn close(&self) {}
}
