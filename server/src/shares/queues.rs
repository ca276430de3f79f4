//! Share groups on a queue's log. A queue that keeps per-record state of its own (an AMQP
//! queue: its log is a topic of the same name, one partition) is not given a second one: a
//! share group fetching it acquires and settles records in the queue's own state, as one more
//! consumer beside the queue's AMQP consumers, so that each message is processed by exactly one
//! of them unless released. Every share group on a queue shares that one state (a queue is
//! consumed once, whoever consumes it).
//!
//! The core knows such queues only through this hook, which the protocol that owns them sets on
//! each shard at start (AMQP: `amqp/queue_owner/shared.rs`).

use std::cell::RefCell;
use std::rc::Rc;

use super::partitions::AckType;
use crate::queues::{Acquired, ConsumerId};

/// Why a queue refused a share group's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueRefusal {
    /// The record is not acquired by this member.
    #[error("record is not acquired by this member")]
    NotAcquired,
    /// A kind of queue share groups cannot take records from (priority or exclusive queues).
    #[error("share groups cannot consume this queue")]
    Unsupported,
}

/// What a queue offers share groups, by the queue's log (topic) name.
pub trait QueueHook {
    /// Whether `topic` is such a queue's log.
    fn is_queue(&self, topic: &str) -> bool;
    /// The lowest record ready in the queue.
    fn first_available(&self, topic: &str) -> Result<Option<i64>, QueueRefusal>;
    /// Acquires for `owner` up to `max` ready records below `end`, lowest first.
    fn acquire(
        &self,
        topic: &str,
        owner: ConsumerId,
        max: usize,
        end: i64,
    ) -> Result<Vec<Acquired>, QueueRefusal>;
    /// Accept (and Gap) acknowledge, Release requeues, Reject dead-letters (the queue's DLX),
    /// Renew checks that `owner` still holds the record (a queue's holds have no lock).
    fn settle(
        &self,
        topic: &str,
        owner: ConsumerId,
        offset: i64,
        kind: AckType,
    ) -> Result<(), QueueRefusal>;
    /// Everything `owner` holds in the queue comes back (its session closed or it timed out).
    fn release(&self, topic: &str, owner: ConsumerId);
}

thread_local! {
    static HOOK: RefCell<Option<Rc<dyn QueueHook>>> = const { RefCell::new(None) };
}

/// Sets this shard's queue hook (once, at start).
pub fn set_hook(hook: Rc<dyn QueueHook>) {
    HOOK.with(|slot| *slot.borrow_mut() = Some(hook));
}

/// The hook, when `topic` is a queue with state of its own on this shard.
pub fn queue(topic: &str) -> Option<Rc<dyn QueueHook>> {
    let hook = HOOK.with(|slot| slot.borrow().clone())?;
    hook.is_queue(topic).then_some(hook)
}
