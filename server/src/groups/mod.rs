//! Consumer group coordinator (Kafka's classic protocol) and committed offsets.
//!
//! A group lives on exactly one shard, `owner_shard(group_id, shards)`; every request for it is
//! forwarded there, so its state is never shared. Each shard runs one `GroupCoordinator`
//! (`!Send`, opened on that shard's executor) that owns:
//! - `group`: one group's membership state machine (pure data and rules);
//! - `coordinator`: the request handlers, long-polls and the session sweeper;
//! - `membership`: the rebalance state machine's transitions over one group;
//! - `offset_store`: committed offsets, durable in `<groups_dir>/offsets-<shard>.log`.

mod coordinator;
mod group;
mod membership;
mod offset_store;

pub use coordinator::{ClientInfo, GroupConfig, GroupCoordinator};
pub use offset_store::OffsetStoreError;

/// The shard that coordinates `group_id`: stable across restarts for a given shard count.
pub fn owner_shard(group_id: &str, shard_count: usize) -> usize {
    assert!(shard_count > 0);
    (crc32c::crc32c(group_id.as_bytes()) as usize) % shard_count
}
