//! The AMQP queues a shard owns, offered to Kafka share groups (`shares::queues`): a share
//! group member fetching a queue's log acquires ready messages in the queue's own state, as a
//! consumer beside the queue's AMQP consumers (held like a basic.get, without a consumer tag),
//! and its Accept / Release / Reject are the queue's ack / nack with requeue / reject without
//! requeue (dead-lettered through the queue's DLX). Its records come back when its share session
//! closes or it times out of its group, as an AMQP channel's do when the channel closes.
//! Priority queues (their order is not the log's) and exclusive queues (one connection's) are
//! refused.

use std::time::Instant;

use weir_engine::Offset;

use super::{find, journal, release_channel, settle, Settle};
use crate::amqp::message::now_ms;
use crate::queues::{Acquired, ConsumerId};
use crate::shares::partitions::AckType;
use crate::shares::queues::{QueueHook, QueueRefusal};

pub struct SharedQueues;

impl QueueHook for SharedQueues {
    fn is_queue(&self, topic: &str) -> bool {
        find(topic).is_some()
    }

    fn first_available(&self, topic: &str) -> Result<Option<i64>, QueueRefusal> {
        let queue = find(topic).ok_or(QueueRefusal::Unsupported)?;
        let queue = queue.borrow();
        if queue.priorities.is_some() || queue.exclusive_owner.is_some() {
            return Err(QueueRefusal::Unsupported);
        }
        Ok(queue.state.first_available().map(Offset::get))
    }

    fn acquire(
        &self,
        topic: &str,
        owner: ConsumerId,
        max: usize,
        end: i64,
    ) -> Result<Vec<Acquired>, QueueRefusal> {
        let queue_ref = find(topic).ok_or(QueueRefusal::Unsupported)?;
        let mut queue = queue_ref.borrow_mut();
        if queue.priorities.is_some() || queue.exclusive_owner.is_some() {
            return Err(QueueRefusal::Unsupported);
        }
        // TTLs first, as a basic.get does: an expired head is dead-lettered, never handed out.
        let mut dead = Vec::new();
        queue.expire_head(now_ms(), None, &mut dead);
        queue.bury(dead);
        let now = Instant::now();
        let mut handed = Vec::new();
        while handed.len() < max
            && queue
                .state
                .first_available()
                .is_some_and(|next| next.get() < end)
        {
            let Some(acquired) = queue.state.acquire_one(owner, now) else {
                break;
            };
            queue.hold(acquired.offset, None);
            handed.push(acquired);
        }
        journal(&mut queue);
        Ok(handed)
    }

    fn settle(
        &self,
        topic: &str,
        owner: ConsumerId,
        offset: i64,
        kind: AckType,
    ) -> Result<(), QueueRefusal> {
        let how = match kind {
            AckType::Gap | AckType::Accept => Settle::Ack,
            AckType::Release => Settle::Requeue,
            AckType::Reject => Settle::Discard,
            AckType::Renew => {
                // The queue's state keeps no lock for what it hands out (an AMQP delivery has
                // none): Renew only checks that the member still holds the record.
                let queue = find(topic).ok_or(QueueRefusal::Unsupported)?;
                let mut queue = queue.borrow_mut();
                let now = Instant::now();
                return queue
                    .state
                    .renew(owner, Offset::new(offset), now)
                    .map_err(|_| QueueRefusal::NotAcquired);
            }
        };
        settle(topic, owner, &[offset], how).map_err(|_| QueueRefusal::NotAcquired)
    }

    fn release(&self, topic: &str, owner: ConsumerId) {
        // As a closing channel's: requeued in order, and offered to the AMQP consumers.
        release_channel(topic, owner);
    }
}
