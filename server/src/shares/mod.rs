//! Share groups (KIP-932, "queues for Kafka") in domain terms: members of a share group take
//! records of the same partitions cooperatively, each record acquired by one member under a
//! time-limited lock and settled one by one (accept, release, reject). Core: no wire types or
//! codes; `kafka/share_*.rs` decode, map codes and shape each answer.
//!
//! - `members.rs`: a group's membership on its coordinator shard (`groups::owner_shard`, as a
//!   classic group): member epochs, subscriptions, the assignment (every member gets every
//!   partition of the topics it subscribes to), the session-timeout sweep.
//! - `partitions.rs`: a share partition's per-record state on the shard owning the partition's
//!   log: the queues' `QueueState` (one machinery with AMQP queues) with KIP-932's limits,
//!   persisted in the shard's own ack store (`<data-dir>/shares/acks-<shard>.log`).
//! - `queues.rs`: share groups on an AMQP queue's log take records from the queue's own state
//!   (a hook the AMQP layer sets), beside its AMQP consumers.
//! - `dead_letter.rs`: copies of rejected and delivery-limited records to a dead-letter topic
//!   (KIP-1191).
//! - `offsets.rs`: the share-group offset admin APIs (start offsets read, set, forgotten),
//!   across the coordinator and the partitions' owner shards.
//! - `group_configs.rs`: a group's own `share.*` configs (Kafka's group configs), over the
//!   broker's settings, from the metadata every shard holds.
//! - `sessions.rs`: share sessions (KIP-932's fetch sessions), per member, on each shard that
//!   leads partitions the member fetches.
//!
//! A share partition's state only ever lives on the partition's owner shard, and share fetches
//! and acknowledgements are served only there (other shards answer NOT_LEADER_OR_FOLLOWER), so
//! nothing about a record's state crosses shards but a departed member's release.

use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::Duration;

use crate::queues::ConsumerId;
use crate::shard::Shard;

pub mod dead_letter;
pub mod group_configs;
pub mod members;
pub mod offsets;
pub mod partitions;
pub mod queues;
pub mod sessions;

/// KIP-932's `group.share.session.timeout.ms` default: a member silent this long is gone (the
/// broker's is `SharesConfig::session_timeout_ms`, a group's own `share.session.timeout.ms`:
/// `group_configs`).
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// Opens the shard's share state (its ack store) and starts the member sweep.
pub async fn open(shard: &Rc<Shard>) -> anyhow::Result<()> {
    partitions::open_store(shard).await?;
    members::spawn_sweeper(shard.clone());
    Ok(())
}

/// Once every shard's job loop runs (the coordinators answer over the mesh), and before the
/// start barrier: the coordinators learn the share groups with state on this shard
/// (`members::announce`), so no request can find a group unknown that a restart kept.
pub async fn start(shard: &Rc<Shard>) {
    members::announce(shard).await;
}

/// A clean shutdown, once the shard's connections are gone (share requests for a partition are
/// served only on its owner shard, so none can come after): persists what is queued.
pub async fn close() {
    partitions::close_store().await;
}

/// The state machine's owner key for a member: a 64-bit hash of its id (members choose their
/// own ids, UUIDs in practice; the state only needs them distinct within one partition).
pub fn member_key(member_id: &str) -> ConsumerId {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    member_id.hash(&mut hasher);
    ConsumerId(hasher.finish())
}
