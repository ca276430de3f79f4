//! `Offset`: a record's place in a partition (Kafka's offset), a type of its own so that it cannot
//! be mixed with the byte positions and sizes that sit beside it in segments, writes and reads.
//! Plain data; used on every shard.
//!
//! The public `Log` API keeps `i64` (what the Kafka layer speaks); the log converts at that
//! boundary.

use std::fmt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(i64);

impl Offset {
    pub const ZERO: Offset = Offset(0);

    pub const fn new(offset: i64) -> Offset {
        Offset(offset)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// The offset after this one.
    pub const fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    /// The offset `delta` records after this one.
    pub const fn plus(self, delta: i64) -> Offset {
        Offset(self.0 + delta)
    }

    /// How many records this offset lies after `base`.
    pub const fn since(self, base: Offset) -> i64 {
        self.0 - base.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
