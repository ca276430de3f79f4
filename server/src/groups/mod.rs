//! Consumer group coordinator (Kafka's classic group protocol, in domain terms) and committed
//! offsets. Core: no protocol's wire types or codes; requests and answers are the plain types
//! below, refusals are `GroupError`, and the Kafka layer (`kafka/group_apis.rs` and the files
//! beside it) decodes, maps codes and shapes each API version's answer.
//!
//! A group lives on exactly one shard, `owner_shard(group_id, shards)`; every request for it is
//! forwarded there (`job.rs`), so its state is never shared. Each shard runs one
//! `GroupCoordinator` (`!Send`, opened on that shard's executor) made of:
//! - `group`: one group's membership state machine (pure data and rules);
//! - `membership`: the rebalance state machine's transitions over one group;
//! - `coordinator`: the coordinator's state, lifecycle and session sweeper;
//! - `join`, `sync` (SyncGroup, Heartbeat), `leave`, `offsets` (commit, fetch), `describe`
//!   (describe, list): one request's handling each;
//! - `offset_store`: committed offsets, durable in `<groups_dir>/offsets-<shard>.log`;
//! - `job`: the requests and answers that travel between shards, and `call`/`serve`.

mod coordinator;
mod describe;
mod error;
mod group;
mod job;
mod join;
mod leave;
mod membership;
mod offset_store;
mod offsets;
mod sync;
#[cfg(test)]
mod tests;

pub use coordinator::{ClientInfo, GroupConfig, GroupCoordinator};
pub use describe::{DescribedMember, GroupDescription, GroupListing};
pub use error::GroupError;
pub use group::{GroupState, JoinOutcome, JoinedMember};
pub use job::{call, close, open, serve, GroupJob, GroupRequest, GroupResponse};
pub use join::JoinRequest;
pub use leave::LeavingMember;
pub use offset_store::{CommittedOffset, OffsetStoreError};
pub use offsets::{CommitResults, FetchedOffsets, OffsetCommit, PartitionCommit, TopicPartitions};
pub use sync::{MemberGeneration, SyncRequest, Synced};

/// The shard that coordinates `group_id`: stable across restarts for a given shard count.
pub fn owner_shard(group_id: &str, shard_count: usize) -> usize {
    assert!(shard_count > 0);
    (crc32c::crc32c(group_id.as_bytes()) as usize) % shard_count
}
