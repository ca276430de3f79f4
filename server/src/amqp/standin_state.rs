//! A stand-in for `queues::state::QueueState` (branch issue-queues), with the subset of its API
//! the AMQP layer uses and the same names, until that branch is merged; then `queue_owner.rs`
//! switches its one `use` and this file goes. Pure, shard-local, no I/O.
//!
//! Not durable: it keeps no journal, so acknowledgements are lost on restart (every unfinished
//! message of a durable queue comes back, flagged redelivered).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use weir_engine::Offset;

/// Most records acquired at once per queue (as `queues::state::ACQUIRED_RECORDS_MAX`).
pub const ACQUIRED_RECORDS_MAX: usize = 65_536;

/// The acquiring party: AMQP packs (connection, channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConsumerId(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquired {
    pub offset: Offset,
    pub delivery_count: u16,
    pub redelivered: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("offset {offset} is not acquired")]
    NotAcquired { offset: Offset },
    #[error("offset {offset} is acquired by another consumer")]
    AcquiredByOther { offset: Offset },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub ready: u64,
    pub acquired: u64,
    pub total: u64,
}

#[derive(Debug)]
pub struct QueueState {
    next: Offset,
    /// Available offsets with their deliveries so far.
    available: BTreeMap<Offset, u16>,
    acquired: BTreeMap<Offset, (ConsumerId, u16)>,
    /// Offsets `on_appended` has already made available (below it: known).
    known: Offset,
    /// Unfinished offsets below this count as delivered once (a restart's conservative flag).
    delivered_below: Offset,
}

impl QueueState {
    /// A queue whose log holds `offsets` (unfinished), ends at `next`; offsets below
    /// `delivered_below` may have been delivered before (a restart).
    pub fn restore(offsets: &BTreeSet<Offset>, next: Offset, delivered_below: Offset) -> Self {
        let available = offsets
            .iter()
            .map(|&offset| (offset, u16::from(offset < delivered_below)))
            .collect();
        QueueState {
            next,
            available,
            acquired: BTreeMap::new(),
            known: next,
            delivered_below,
        }
    }

    /// The log's end as last reported by `on_appended`.
    pub fn next_offset(&self) -> Offset {
        self.next
    }

    pub fn on_appended(&mut self, next: Offset) {
        assert!(next >= self.next, "queue log end moved back");
        while self.known < next {
            self.available.insert(self.known, 0);
            self.known = self.known.next();
        }
        self.next = next;
    }

    pub fn counts(&self) -> QueueCounts {
        let ready = self.available.len() as u64;
        let acquired = self.acquired.len() as u64;
        QueueCounts {
            ready,
            acquired,
            total: ready + acquired,
        }
    }

    pub fn acquire(&mut self, owner: ConsumerId, max: usize, _now: Instant) -> Vec<Acquired> {
        let room = ACQUIRED_RECORDS_MAX.saturating_sub(self.acquired.len());
        let mut out = Vec::new();
        while out.len() < max.min(room) {
            let Some((offset, count)) = self.available.pop_first() else {
                break;
            };
            let delivery_count = count.saturating_add(1);
            self.acquired.insert(offset, (owner, delivery_count));
            out.push(Acquired {
                offset,
                delivery_count,
                redelivered: count > 0 || offset < self.delivered_below,
            });
        }
        out
    }

    fn unhold(&mut self, owner: ConsumerId, offset: Offset) -> Result<u16, QueueError> {
        match self.acquired.get(&offset) {
            None => Err(QueueError::NotAcquired { offset }),
            Some((holder, _)) if *holder != owner => Err(QueueError::AcquiredByOther { offset }),
            Some(&(_, count)) => {
                self.acquired.remove(&offset);
                Ok(count)
            }
        }
    }

    pub fn accept(&mut self, owner: ConsumerId, offset: Offset) -> Result<(), QueueError> {
        self.unhold(owner, offset).map(|_| ())
    }

    pub fn reject(&mut self, owner: ConsumerId, offset: Offset) -> Result<(), QueueError> {
        self.unhold(owner, offset).map(|_| ())
    }

    pub fn release(&mut self, owner: ConsumerId, offset: Offset) -> Result<(), QueueError> {
        let count = self.unhold(owner, offset)?;
        self.available.insert(offset, count);
        Ok(())
    }

    /// Returns every offset `owner` holds to the queue; the offsets returned.
    pub fn release_owner(&mut self, owner: ConsumerId) -> Vec<Offset> {
        let held: Vec<Offset> = self
            .acquired
            .iter()
            .filter(|(_, (holder, _))| *holder == owner)
            .map(|(offset, _)| *offset)
            .collect();
        for offset in &held {
            if let Some((_, count)) = self.acquired.remove(offset) {
                self.available.insert(*offset, count);
            }
        }
        held
    }

    /// Archives every available record; how many.
    pub fn purge(&mut self) -> u64 {
        let count = self.available.len() as u64;
        self.available.clear();
        count
    }
}
