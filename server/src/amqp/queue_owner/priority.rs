//! Priority queues (`x-max-priority`) and consumer priorities (`x-priority`) on the queue's owner.
//!
//! A priority queue's ready messages go out highest `priority` first, in log order within a
//! priority (no priority counts as 0, one above the maximum as the maximum): `Ready` orders them
//! by (priority descending, offset), and the state hands out the one it names (`acquire_at`).
//! A requeued message goes back to its own place in that order, as in RabbitMQ, whose priority
//! queue is one FIFO per priority. The queue's head, what TTL expiry and drop-head look at, is
//! the next message to deliver, as RabbitMQ's `dropwhile` and `drop` take the first message of
//! the highest priority that has one:
//!
//! | queue              | next delivery / head              | TTL expires  | drop-head drops        |
//! |--------------------|-----------------------------------|--------------|------------------------|
//! | no `x-max-priority`| lowest ready offset               | the head     | the head (oldest)      |
//! | `x-max-priority`   | highest priority, then lowest offset | the head  | the head (the oldest of the highest priority) |
//!
//! A queue without `x-max-priority` (or with 0: one priority) has no `Ready`, and pays nothing.
//!
//! Consumers: deliveries go to the highest-priority consumers with prefetch room, round-robin
//! among equals; a lower one gets a message only when every higher one is full.
//!
//! Same shard and rules as `mod.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use amq_protocol::protocol::basic;
use weir_engine::Offset;

use super::Queue;
use crate::amqp::message::Message;
use crate::queues::{Acquired, ConsumerId};

/// The priority order of a priority queue's messages.
#[derive(Debug, Default)]
pub(super) struct Ready {
    max: u8,
    /// The ready messages, next to deliver first.
    ready: BTreeSet<(Reverse<u8>, Offset)>,
    /// The priority of every message the queue holds, ready or not.
    levels: HashMap<Offset, u8>,
}

impl Ready {
    /// The order for a queue of `max_priority`, or none when it has one priority or none.
    pub(super) fn for_queue(max_priority: Option<u8>) -> Option<Ready> {
        let max = max_priority.filter(|&max| max > 0)?;
        Some(Ready {
            max,
            ..Ready::default()
        })
    }

    /// A message the queue took in (published, or found in the log): ready.
    pub(super) fn insert(&mut self, offset: Offset, message: &Message) {
        let level = level(message, self.max);
        self.levels.insert(offset, level);
        self.ready.insert((Reverse(level), offset));
    }

    /// A message that came back (requeued): ready again, in its place.
    pub(super) fn requeue(&mut self, offset: Offset) {
        if let Some(&level) = self.levels.get(&offset) {
            self.ready.insert((Reverse(level), offset));
        }
    }

    /// A message the queue no longer holds.
    pub(super) fn remove(&mut self, offset: Offset) {
        if let Some(level) = self.levels.remove(&offset) {
            self.ready.remove(&(Reverse(level), offset));
        }
    }

    /// queue.purge: nothing is ready; what is held (`keep`) stays known.
    pub(super) fn purge(&mut self, keep: impl Fn(&Offset) -> bool) {
        self.ready.clear();
        self.levels.retain(|offset, _| keep(offset));
    }

    /// The next ready message below the log end `next` (a message past it waits behind records
    /// another path appended before it: see `publish`).
    fn first_below(&self, next: Offset) -> Option<Offset> {
        self.ready
            .iter()
            .map(|&(_, offset)| offset)
            .find(|&offset| offset < next)
    }
}

/// The priority a message has in a queue of `max` priorities: its `priority` property, 0 when
/// it has none, `max` when above.
fn level(message: &Message, max: u8) -> u8 {
    let priority = match basic::parse_properties(&message.raw_properties[..]) {
        Ok((_, properties)) => properties.priority().unwrap_or(0),
        Err(_) => 0,
    };
    priority.min(max)
}

impl Queue {
    /// The next message to deliver: what TTL expiry and drop-head take (see the module docs).
    pub(super) fn head(&self) -> Option<Offset> {
        match &self.priorities {
            None => self.state.first_available(),
            Some(ready) => ready.first_below(self.state.next_offset()),
        }
    }

    /// Hands the next message to deliver to `owner`.
    pub(super) fn acquire_next(&mut self, owner: ConsumerId, now: Instant) -> Option<Acquired> {
        let Some(ready) = &mut self.priorities else {
            return self.state.acquire(owner, 1, now).pop();
        };
        let offset = ready.first_below(self.state.next_offset())?;
        let acquired = self.state.acquire_at(owner, offset, now)?;
        if let Some(&level) = ready.levels.get(&offset) {
            ready.ready.remove(&(Reverse(level), offset));
        }
        Some(acquired)
    }

    /// A requeued message is ready again in its place.
    pub(super) fn requeued(&mut self, offset: Offset) {
        if let Some(ready) = &mut self.priorities {
            ready.requeue(offset);
        }
    }

    /// The consumer to deliver to next: of those that may take a delivery now, one of the highest
    /// priority, taking turns from `next_consumer` on.
    pub(super) fn next_with_room(&self) -> Option<usize> {
        let count = if self.spec.single_active {
            // Consumers are kept in registration order: the first is the active one.
            self.consumers.len().min(1)
        } else {
            self.consumers.len()
        };
        let has_room = |&index: &usize| {
            let consumer = &self.consumers[index];
            !consumer.waiting
                && (consumer.spec.prefetch == 0
                    || consumer.in_flight < usize::from(consumer.spec.prefetch))
        };
        let mut turns = (0..count).map(|step| (self.next_consumer + step) % count);
        if !self.consumer_priorities {
            return turns.find(has_room);
        }
        // The first in turn among the highest: `max_by_key` keeps the last of equals.
        turns
            .filter(has_room)
            .enumerate()
            .max_by_key(|&(turn, index)| (self.consumers[index].spec.priority, Reverse(turn)))
            .map(|(_, index)| index)
    }

    /// Whether any consumer has a priority: only then does `next_with_room` compare them.
    pub(super) fn note_consumer_priorities(&mut self) {
        self.consumer_priorities = self.consumers.iter().any(|c| c.spec.priority != 0);
    }
}
