//! Consumer group coordinator (classic protocol) and committed offsets.
//!
//! A group lives on exactly one shard, `owner_shard(group_id, shards)`; every request for it is
//! forwarded there, so its state is never shared.

/// The shard that coordinates `group_id`: stable across restarts for a given shard count.
pub fn owner_shard(group_id: &str, shard_count: usize) -> usize {
    assert!(shard_count > 0);
    (crc32c::crc32c(group_id.as_bytes()) as usize) % shard_count
}

mod coordinator;

pub use coordinator::GroupCoordinator;
