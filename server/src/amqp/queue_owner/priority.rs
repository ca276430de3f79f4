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
//! among equals; a lower one gets a message only when every higher one is full (`next_with_room`
//! in `mod.rs`).
//!
//! Same shard and rules as `mod.rs`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

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
    message.properties().priority().unwrap_or(0).min(max)
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
            return self.state.acquire_one(owner, now);
        };
        loop {
            let offset = ready.first_below(self.state.next_offset())?;
            let acquired = self.state.acquire_at(owner, offset, now);
            let full = self.state.counts().acquired as usize >= self.state.limits().acquired_max;
            if acquired.is_none() && full {
                return None;
            }
            // Taken, or (never expected) not available after all: either way not ready here.
            if let Some(&level) = ready.levels.get(&offset) {
                ready.ready.remove(&(Reverse(level), offset));
            }
            if acquired.is_some() {
                return acquired;
            }
        }
    }

    /// A requeued message is ready again in its place.
    pub(super) fn requeued(&mut self, offset: Offset) {
        if let Some(ready) = &mut self.priorities {
            ready.requeue(offset);
        }
    }

    /// Whether any consumer has a priority: only then does `next_with_room` compare them.
    pub(super) fn note_consumer_priorities(&mut self) {
        self.consumer_priorities = self.consumers.iter().any(|c| c.spec.priority != 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic;
    use bytes::Bytes;

    fn message(priority: Option<u8>) -> Message {
        let mut properties = basic::AMQPProperties::default();
        if let Some(priority) = priority {
            properties = properties.with_priority(priority);
        }
        Message {
            exchange: String::new(),
            routing_key: String::new(),
            raw_properties: crate::amqp::frame::encode_properties(&properties),
            body: Bytes::new(),
            stored_ms: 0,
            expiration_ms: None,
            persistent: false,
        }
    }

    fn order(ready: &Ready, next: i64) -> Vec<i64> {
        let mut copy = Ready {
            max: ready.max,
            ready: ready.ready.clone(),
            levels: ready.levels.clone(),
        };
        let mut order = Vec::new();
        while let Some(offset) = copy.first_below(Offset::new(next)) {
            copy.remove(offset);
            order.push(offset.get());
        }
        order
    }

    #[test]
    fn ready_messages_go_highest_priority_first_then_in_log_order() {
        assert!(Ready::for_queue(None).is_none());
        assert!(
            Ready::for_queue(Some(0)).is_none(),
            "one priority: log order"
        );
        let mut ready = Ready::for_queue(Some(5)).unwrap();
        // offset: priority (None counts as 0, above the maximum as the maximum)
        for (offset, priority) in [
            (0, Some(1)),
            (1, None),
            (2, Some(9)),
            (3, Some(5)),
            (4, Some(0)),
        ] {
            ready.insert(Offset::new(offset), &message(priority));
        }
        assert_eq!(order(&ready, 5), [2, 3, 0, 1, 4]);
        assert_eq!(order(&ready, 3), [2, 0, 1], "past the log end waits");
        // Taken and requeued: back in its place, not at the end of its priority.
        ready.ready.remove(&(Reverse(5), Offset::new(2)));
        ready.insert(Offset::new(5), &message(Some(5)));
        assert_eq!(order(&ready, 6), [3, 5, 0, 1, 4]);
        ready.requeue(Offset::new(2));
        assert_eq!(order(&ready, 6), [2, 3, 5, 0, 1, 4]);
        ready.remove(Offset::new(3));
        ready.purge(|offset| offset.get() == 5);
        assert_eq!(order(&ready, 6), Vec::<i64>::new());
        ready.requeue(Offset::new(5));
        assert_eq!(order(&ready, 6), [5]);
    }
}
