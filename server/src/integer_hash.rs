//! `IntegerMap`: a `HashMap` for the per-message and per-frame maps keyed by small integers
//! (a connection's channels by id, a queue's held offsets, its consumers' leases by owner).
//! The standard SipHash cost about 4% of the shard's time in a one-queue AMQP run
//! (docs/benchmarks.md); one multiply per key does the same work here.
//!
//! Plain data, no shared state. Not for keys a client chooses freely: a multiply hash has no
//! seed, so a client could pick keys that collide. The keys here are the broker's own (offsets,
//! consumer ids) or bounded by the broker (channel ids up to `channel_max`), so the worst a
//! client can do is slow its own connection's lookups. Routing hashes a batch's record keys with
//! it too, with the number of keys bounded (`routing/records.rs`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by integers (or newtypes over them), hashed with `IntegerHasher`.
pub type IntegerMap<K, V> = HashMap<K, V, BuildHasherDefault<IntegerHasher>>;

/// rustc-hash's (FxHash v2) multiply-rotate: each word is mixed in with one multiply; the rotate
/// in `finish` brings the best-mixed high bits down to where hashbrown takes its bucket index,
/// while its 7-bit tag comes from the top.
#[derive(Clone, Copy, Default)]
pub struct IntegerHasher {
    hash: u64,
}

const MULTIPLIER: u64 = 0xf135_7aea_2e62_a9c5;

impl IntegerHasher {
    fn add(&mut self, word: u64) {
        self.hash = self.hash.wrapping_add(word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for IntegerHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only reached by keys that are not plain integers; correct, if slower.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u16(&mut self, value: u16) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn write_i64(&mut self, value: i64) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.hash.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_a_std_map_holds() {
        let mut map: IntegerMap<i64, i64> = IntegerMap::default();
        for key in (-1_000..100_000).step_by(7) {
            map.insert(key, key * 2);
        }
        for key in (-1_000..100_000).step_by(7) {
            assert_eq!(map.get(&key), Some(&(key * 2)));
            assert_eq!(map.get(&(key + 1)), None);
        }
        map.retain(|key, _| key % 2 == 0);
        assert!(map.keys().all(|key| key % 2 == 0));
    }

    #[test]
    fn consecutive_keys_spread_over_the_bucket_bits() {
        // hashbrown takes the bucket from the low bits and the tag from the top 7: both must
        // vary (an identity hash would give one tag to every small key).
        let hash = |key: u64| {
            let mut hasher = IntegerHasher::default();
            hasher.write_u64(key);
            hasher.finish()
        };
        let low: std::collections::HashSet<u64> = (0..1_024).map(|key| hash(key) & 1_023).collect();
        let top: std::collections::HashSet<u64> = (0..1_024).map(|key| hash(key) >> 57).collect();
        assert!(low.len() > 600, "{} distinct bucket indexes", low.len());
        assert!(top.len() > 64, "{} distinct tags", top.len());
    }
}
