//! What a queue's policy (`policy.rs`) does on its owner: message TTL (`x-message-ttl`, the
//! `expiration` property), length limits (`x-max-length`, `x-max-length-bytes` with
//! `x-overflow`), the delivery limit, and `x-expires`; the messages these finish go to
//! `dead_letter.rs`.
//!
//! | rule            | when                                   | what goes                      |
//! |-----------------|----------------------------------------|--------------------------------|
//! | TTL             | the head's deadline passed (timer, or  | the head, while it is expired  |
//! |                 | any dispatch or get)                   | (reason `expired`)             |
//! | drop-head       | ready messages or bytes over the limit | the head, until within (`maxlen`) |
//! | reject-publish  | the new message would pass the limit   | the new one: nack (`-dlx`: dead-lettered) |
//! | delivery limit  | a message returns after N+1 deliveries | it (`delivery_limit`)          |
//! | x-expires       | no consumer and no use for that long   | the queue (not dead-lettered)  |
//!
//! Only the head expires, as in RabbitMQ: a message with a long TTL ahead of short ones keeps
//! them until it goes. A message is offered to waiting consumers before its TTL is looked at,
//! so TTL 0 reaches a consumer that can take it at once and nobody else.
//!
//! Same shard and rules as `mod.rs`: no borrow across an `.await`.

use std::sync::Arc;
use std::time::Duration;

use weir_engine::Offset;

use super::{dispatch_ready, journal, Queue, QueueRef};
use crate::amqp::dead_letter::{self, Reason};
use crate::amqp::error::AmqpError;
use crate::amqp::message::{now_ms, Message};
use crate::amqp::names::amqp_name;
use crate::amqp::policy::{Overflow, QueuePolicy};
use crate::queues::QueueLimits;

/// The state machine's limits for a queue with `policy`. RabbitMQ's `x-delivery-limit` N
/// allows N returns, so N + 1 deliveries.
pub(super) fn of(policy: &QueuePolicy) -> QueueLimits {
    QueueLimits {
        delivery_limit: policy
            .delivery_limit
            .map(|limit| u16::try_from(limit.saturating_add(1)).unwrap_or(u16::MAX)),
        ..QueueLimits::AMQP
    }
}

impl Queue {
    pub(super) fn insert_message(&mut self, offset: Offset, mut message: Arc<Message>) {
        // A delayed exchange's held messages do not expire while held, however they got here:
        // their TTL counts in the queues they are routed to once due, as with the plugin.
        if message.expiration_ms.is_some() && super::super::delayed::is_hold_queue(&self.name) {
            message = Arc::new(Message {
                expiration_ms: None,
                ..(*message).clone()
            });
        }
        self.may_expire |= message.expiration_ms.is_some();
        self.message_bytes += message.body.len() as u64;
        self.published += 1;
        if let Some(ready) = &mut self.priorities {
            ready.insert(offset, &message);
        }
        if let Some(replaced) = self.messages.insert(offset, message) {
            self.message_bytes -= replaced.body.len() as u64;
        }
    }

    pub(super) fn remove_message(&mut self, offset: Offset) -> Option<Arc<Message>> {
        let removed = self.messages.remove(&offset)?;
        if let Some(ready) = &mut self.priorities {
            ready.remove(offset);
        }
        self.message_bytes -= removed.body.len() as u64;
        Some(removed)
    }

    /// `offset` is acquired by the consumer `tag` (`None`: basic.get).
    pub(super) fn hold(&mut self, offset: Offset, tag: Option<Arc<str>>) {
        if let Some(message) = self.messages.get(&offset) {
            self.held_bytes += message.body.len() as u64;
        }
        self.held.insert(offset, tag);
    }

    /// `offset` is no longer acquired; answers who held it. Before `remove_message`.
    pub(super) fn unhold(&mut self, offset: Offset) -> Option<Option<Arc<str>>> {
        let tag = self.held.remove(&offset)?;
        if let Some(message) = self.messages.get(&offset) {
            self.held_bytes -= message.body.len() as u64;
        }
        Some(tag)
    }

    fn ready_bytes(&self) -> u64 {
        self.message_bytes.saturating_sub(self.held_bytes)
    }

    /// Whether the queue takes `message` (a full `reject-publish` queue does not).
    pub(super) fn admit(&self, message: &Arc<Message>) -> Result<(), AmqpError> {
        let policy = &self.spec.policy;
        let ready = self.state.counts().ready;
        if !policy.refuses(ready, self.ready_bytes(), message.body.len() as u64) {
            return Ok(());
        }
        if policy.overflow == Overflow::RejectPublishDlx {
            self.bury(vec![(message.clone(), Reason::Maxlen)]);
        }
        Err(AmqpError::precondition(format!(
            "queue '{}' is full (x-overflow {:?})",
            amqp_name(&self.name),
            policy.overflow
        )))
    }

    /// When `message` expires here (ms since the epoch), if it does.
    fn deadline(&self, message: &Message) -> Option<i64> {
        let ttl = match (self.spec.policy.message_ttl_ms, message.expiration_ms) {
            (Some(queue), Some(own)) => queue.min(own),
            (queue, own) => queue.or(own)?,
        };
        Some(
            message
                .stored_ms
                .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        )
    }

    fn head_deadline(&self) -> Option<i64> {
        let head = self.head()?;
        self.deadline(self.messages.get(&head)?)
    }

    /// Archives the head while it has expired, stopping at `keep` (a message not yet offered
    /// to consumers); the expired go to `dead`.
    pub(super) fn expire_head(
        &mut self,
        now_ms: i64,
        keep: Option<Offset>,
        dead: &mut Vec<(Arc<Message>, Reason)>,
    ) {
        if !self.may_expire {
            return;
        }
        while let Some(head) = self.head() {
            let expired = self
                .messages
                .get(&head)
                .and_then(|message| self.deadline(message))
                .is_some_and(|deadline| deadline <= now_ms);
            if !expired || Some(head) == keep || self.state.archive_available(head).is_err() {
                return;
            }
            if let Some(message) = self.remove_message(head) {
                dead.push((message, Reason::Expired));
            }
        }
    }

    /// drop-head: archives the oldest ready messages while the queue is over its limits.
    pub(super) fn drop_over_limit(&mut self, dead: &mut Vec<(Arc<Message>, Reason)>) {
        let policy = &self.spec.policy;
        if policy.max_length.is_none() && policy.max_length_bytes.is_none() {
            return;
        }
        while self
            .spec
            .policy
            .over_limit(self.state.counts().ready, self.ready_bytes())
        {
            let Some(head) = self.head() else {
                return;
            };
            if self.state.archive_available(head).is_err() {
                return;
            }
            if let Some(message) = self.remove_message(head) {
                dead.push((message, Reason::Maxlen));
            }
        }
    }

    /// Dead-letters `dead` through this queue's dead-letter exchange (a task of its own).
    pub(super) fn bury(&self, dead: Vec<(Arc<Message>, Reason)>) {
        if !dead.is_empty() {
            let name = amqp_name(&self.name);
            dead_letter::publish(&self.shard, &name, &self.spec.policy, dead);
        }
    }
}

/// After a publish appended `fresh`: offers it (and whatever else is ready) to consumers
/// before TTLs are looked at, then expires and trims the head.
pub(super) fn dispatch_fresh(queue_ref: &QueueRef, fresh: Offset) {
    {
        let mut queue = queue_ref.borrow_mut();
        let mut dead = Vec::new();
        let now = now_ms();
        queue.expire_head(now, Some(fresh), &mut dead);
        dispatch_ready(queue_ref, &mut queue);
        queue.expire_head(now, None, &mut dead);
        queue.drop_over_limit(&mut dead);
        journal(&mut queue);
        queue.bury(dead);
    }
    arm_expiry(queue_ref);
}

/// Arms a timer for the head's deadline unless one as early is armed; when it fires, a
/// dispatch expires the head and arms the next. A timer made stale by a later one only
/// dispatches once more.
pub(super) fn arm_expiry(queue_ref: &QueueRef) {
    let deadline = {
        let mut queue = queue_ref.borrow_mut();
        if !queue.may_expire || queue.stop.is_fired() {
            return;
        }
        let Some(deadline) = queue.head_deadline() else {
            return;
        };
        if queue.expiry_armed.is_some_and(|armed| armed <= deadline) {
            return;
        }
        queue.expiry_armed = Some(deadline);
        deadline
    };
    let queue = queue_ref.clone();
    glommio::spawn_local(async move {
        let wait = u64::try_from(deadline.saturating_sub(now_ms())).unwrap_or(0);
        glommio::timer::sleep(Duration::from_millis(wait)).await;
        {
            let mut queue = queue.borrow_mut();
            if queue.expiry_armed == Some(deadline) {
                queue.expiry_armed = None;
            }
            if queue.stop.is_fired() {
                return;
            }
        }
        super::dispatch(&queue);
    })
    .detach();
}

/// `x-expires`: deletes the queue (not dead-lettering its messages, as RabbitMQ) once it has
/// had no consumer and no declare, consume, cancel or get for `expires`.
pub(super) fn watch_unused(queue: QueueRef, expires: Duration) {
    glommio::spawn_local(async move {
        loop {
            let (idle_for, in_use) = {
                let queue = queue.borrow();
                if queue.stop.is_fired() {
                    return;
                }
                (queue.last_used.elapsed(), !queue.consumers.is_empty())
            };
            if !in_use && idle_for >= expires {
                break;
            }
            let wait = if in_use { expires } else { expires - idle_for };
            glommio::timer::sleep(wait.max(Duration::from_millis(1))).await;
        }
        let (shard, name) = {
            let queue = queue.borrow();
            (queue.shard.clone(), queue.name.clone())
        };
        tracing::debug!(queue = %name, "x-expires: deleting the unused queue");
        let owner = shard.id;
        crate::amqp::queue::delete_queue(&shard, &name, owner).await;
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_delivery_limit_n_allows_n_returns() {
        let policy = QueuePolicy {
            delivery_limit: Some(2),
            ..QueuePolicy::default()
        };
        assert_eq!(of(&policy).delivery_limit, Some(3));
        assert_eq!(of(&QueuePolicy::default()).delivery_limit, None);
    }
}
