//! Idempotent-producer state of one partition: per producer id, its epoch and the sequence ranges
//! and offsets of its last 5 batches. Lives on the log's shard; updated synchronously by `append`
//! (so pipelined resends are recognised before they reach the disk) and rebuilt on open by
//! replaying batch headers.
//!
//! ```text
//! incoming (epoch e, first seq s, last seq l)      state (epoch E, last batches)
//! producer id -1                                   -> not idempotent, append
//! unknown producer id                              -> append, start tracking (state may have been
//!                                                     lost to retention; Kafka also accepts)
//! e < E                                            -> InvalidProducerEpoch
//! e > E, s != 0                                    -> OutOfOrderSequence (expected 0)
//! e > E, s == 0                                    -> new epoch, forget old batches, append
//! e == E, (s, l) equals a remembered batch         -> duplicate: answer its offsets, append nothing
//! e == E, s == last l + 1 (wrapping at i32::MAX)   -> append
//! e == E, otherwise                                -> OutOfOrderSequence
//! ```

use std::collections::{HashMap, VecDeque};

use crate::limits::PRODUCER_BATCHES_MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Clone, Debug)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<ProducerBatch>,
}

/// What `check` decided for a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerCheck {
    Append,
    Duplicate(ProducerBatch),
    OutOfOrder { expected: i32 },
    Fenced { current: i16 },
}

#[derive(Clone, Debug, Default)]
pub struct ProducerTable {
    producers: HashMap<i64, ProducerEntry>,
}

/// Last sequence of a batch: sequences wrap from i32::MAX to 0, as in Kafka.
pub fn last_sequence(first_sequence: i32, last_offset_delta: i32) -> i32 {
    ((first_sequence as i64 + last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

impl ProducerTable {
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_sequence: i32,
        last_sequence: i32,
    ) -> ProducerCheck {
        let Some(entry) = self.producers.get(&producer_id) else {
            return ProducerCheck::Append;
        };
        if epoch < entry.epoch {
            return ProducerCheck::Fenced {
                current: entry.epoch,
            };
        }
        if epoch > entry.epoch {
            return if first_sequence == 0 {
                ProducerCheck::Append
            } else {
                ProducerCheck::OutOfOrder { expected: 0 }
            };
        }
        if let Some(batch) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == first_sequence && b.last_sequence == last_sequence)
        {
            return ProducerCheck::Duplicate(*batch);
        }
        match entry.batches.back() {
            Some(last) if first_sequence != next_sequence(last.last_sequence) => {
                ProducerCheck::OutOfOrder {
                    expected: next_sequence(last.last_sequence),
                }
            }
            _ => ProducerCheck::Append,
        }
    }

    /// Records an appended batch (also used to replay headers on open).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: ProducerBatch) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::new(),
            });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
    }

    /// Every producer's epoch and remembered batches, ending before offset `end` (for a
    /// checkpoint of the log up to `end`), ordered by producer id.
    pub fn snapshot(&self, end: i64) -> Vec<(i64, i16, Vec<ProducerBatch>)> {
        let mut entries: Vec<_> = self
            .producers
            .iter()
            .map(|(id, entry)| {
                let batches = entry.batches.iter().filter(|b| b.last_offset < end);
                (*id, entry.epoch, batches.copied().collect())
            })
            .collect();
        entries.sort_unstable_by_key(|(id, _, _)| *id);
        entries
    }

    /// Puts back a producer's state from a checkpoint (`snapshot`); keeps the newest batches.
    pub fn restore(&mut self, producer_id: i64, epoch: i16, batches: &[ProducerBatch]) {
        let keep = batches.len().saturating_sub(PRODUCER_BATCHES_MAX);
        let entry = ProducerEntry {
            epoch,
            batches: batches[keep..].iter().copied().collect(),
        };
        self.producers.insert(producer_id, entry);
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i32, last: i32, base: i64) -> ProducerBatch {
        ProducerBatch {
            first_sequence: first,
            last_sequence: last,
            base_offset: base,
            last_offset: base + (last - first) as i64,
        }
    }

    #[test]
    fn truth_table() {
        let mut table = ProducerTable::default();
        assert_eq!(
            table.check(1, 0, 7, 9),
            ProducerCheck::Append,
            "unknown producer"
        );
        table.record(1, 0, batch(0, 2, 0));
        table.record(1, 0, batch(3, 3, 3));
        assert_eq!(table.check(1, 0, 4, 5), ProducerCheck::Append);
        assert_eq!(
            table.check(1, 0, 0, 2),
            ProducerCheck::Duplicate(batch(0, 2, 0))
        );
        assert_eq!(
            table.check(1, 0, 3, 3),
            ProducerCheck::Duplicate(batch(3, 3, 3))
        );
        assert_eq!(
            table.check(1, 0, 6, 6),
            ProducerCheck::OutOfOrder { expected: 4 }
        );
        assert_eq!(
            table.check(1, 0, 1, 2),
            ProducerCheck::OutOfOrder { expected: 4 }
        );
        assert_eq!(
            table.check(1, 1, 4, 4),
            ProducerCheck::OutOfOrder { expected: 0 }
        );
        assert_eq!(table.check(1, 1, 0, 0), ProducerCheck::Append);
        table.record(1, 1, batch(0, 0, 4));
        assert_eq!(
            table.check(1, 0, 4, 4),
            ProducerCheck::Fenced { current: 1 }
        );
        assert_eq!(
            table.check(1, 1, 0, 0),
            ProducerCheck::Duplicate(batch(0, 0, 4))
        );
    }

    #[test]
    fn remembers_five_batches_and_wraps() {
        let mut table = ProducerTable::default();
        for i in 0..7 {
            table.record(9, 0, batch(i, i, i as i64));
        }
        assert_eq!(
            table.check(9, 0, 1, 1),
            ProducerCheck::OutOfOrder { expected: 7 }
        );
        assert_eq!(
            table.check(9, 0, 2, 2),
            ProducerCheck::Duplicate(batch(2, 2, 2))
        );
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        table.record(9, 0, batch(i32::MAX - 1, i32::MAX, 7));
        assert_eq!(table.check(9, 0, 0, 0), ProducerCheck::Append);
    }
}
