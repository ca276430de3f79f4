//! Queues on the log: the per-message state of a queue partition (an AMQP queue, or one
//! partition of a Kafka share group, KIP-932) beside the Weir log that holds its messages, and its
//! durable ack store. One machinery, two front doors: AMQP's deliver / ack / nack / reject and
//! KIP-932's acquire / Accept / Release / Reject / Renew map onto the same operations.
//!
//! Core module: imports no protocol (`server/tests/tidy.rs`). Everything here runs on the shard
//! that owns the queue's log: `QueueState` is plain `&mut self` data, the `AckStore` is `!Send`
//! (`Rc`/`RefCell`, no borrow held across an `.await`), one per shard.
//!
//! - `state.rs`: `QueueState`, the pure state machine (available → acquired → acknowledged /
//!   archived), its limits and its journal of durable changes.
//! - `leases.rs`: the acquired records as runs (offsets acquired together by one owner with one
//!   deadline and count: one entry, split only where part of it is settled or renewed).
//! - `done_set.rs`: the finished offsets as a floor plus ranges above it (O(log n) acks far
//!   ahead of the floor).
//! - `ack_store.rs`: the shard's append-only, checksummed, group-committed file of journal
//!   entries, compacted past a threshold; restores every queue's `QueueSnapshot` on open.
//! - `model_tests.rs`: the proptest model of `QueueState`, through the ack store's encoding.
//!   Every new durable queue state joins it. The process-level SIGKILL test of the store is
//!   `server/tests/ack_store_kill.rs`; the file format is in `docs/storage-format.md`.
//!
//! How a protocol layer drives it: open the shard's `AckStore` once; per queue, build the state
//! with `QueueState::restore(store.snapshot(&key), log_end, ..)` (or `QueueState::new` for a new
//! queue); call `on_appended` as the log grows; after each batch of operations hand
//! `take_journal()` to `store.record(&key, ..)`; delete log segments wholly below both
//! `store.durable_floor(&key)` and `state.floor()` (`amqp/consumed.rs` says why both); close the
//! store at a clean shutdown, which writes what is queued.

pub mod ack_store;
pub mod done_set;
mod leases;
#[cfg(test)]
mod model_tests;
pub mod state;

pub use ack_store::{AckStore, AckStoreError, AckStoreOptions, QueueKey};
pub use state::{
    Acquired, AcquiredRun, ArchiveReason, ConsumerId, Durability, JournalEntry, QueueCounts,
    QueueError, QueueLimits, QueueSnapshot, QueueState, ReturnOutcome, Returned,
};
