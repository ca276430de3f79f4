//! Which partition of a destination topic a routed record goes to: Kafka's default partitioner.
//!
//! A keyed record goes to `toPositive(murmur2(key)) % partitions`, exactly as the Java client's
//! `DefaultPartitioner`/`BuiltInPartitioner` and librdkafka's `murmur2_random` compute it, so a
//! record routed through an exchange lands in the partition a client producing the same key
//! straight to the topic would pick (and per-key order holds). A record without a key (null, not
//! empty) goes round-robin over the partitions.
//!
//! Each shard keeps its own [`Partitioner`] (its round-robin counters are shard-local state);
//! nothing here is shared.

use std::collections::HashMap;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), returning the same `i32`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's `int length` mixes in the length modulo 2^32.
    let mut hash: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(number: i32) -> i32 {
    number & 0x7fff_ffff
}

/// The partition Kafka's default partitioner picks for a keyed record.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (to_positive(murmur2(key)) as u32) % partitions
}

/// Per-shard partition chooser: murmur2 for keyed records, a round-robin counter per destination
/// topic for keyless ones.
#[derive(Debug, Default)]
pub struct Partitioner {
    next_by_topic: HashMap<String, u32>,
}

impl Partitioner {
    pub fn new() -> Partitioner {
        Partitioner::default()
    }

    pub fn partition(&mut self, topic: &str, key: Option<&[u8]>, partitions: u32) -> u32 {
        assert!(partitions > 0, "a topic has at least one partition");
        match key {
            Some(key) => partition_for_key(key, partitions),
            None => {
                let next = match self.next_by_topic.get_mut(topic) {
                    Some(next) => next,
                    None => self.next_by_topic.entry(topic.to_string()).or_insert(0),
                };
                let partition = *next % partitions;
                *next = next.wrapping_add(1);
                partition
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_utils_test() {
        // The vectors of Kafka's own `UtilsTest.testMurmur2`.
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data),
                *expected,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn partitions_follow_to_positive_modulo() {
        // -790332482 & 0x7fffffff = 1357151166.
        assert_eq!(to_positive(-790332482), 1357151166);
        assert_eq!(partition_for_key(b"foobar", 1), 0);
        assert_eq!(partition_for_key(b"foobar", 7), 1357151166 % 7);
        assert_eq!(to_positive(i32::MIN), 0);
        // An empty key is a key: hashed, not round-robin.
        let mut partitioner = Partitioner::new();
        let empty = partition_for_key(b"", 5);
        for _ in 0..10 {
            assert_eq!(partitioner.partition("t", Some(b""), 5), empty);
        }
    }

    #[test]
    fn keyless_records_go_round_robin_per_topic() {
        let mut partitioner = Partitioner::new();
        let picks: Vec<u32> = (0..7)
            .map(|_| partitioner.partition("a", None, 3))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(
            partitioner.partition("b", None, 3),
            0,
            "counters are per topic"
        );
        assert_eq!(partitioner.partition("a", None, 3), 1);
    }
}
