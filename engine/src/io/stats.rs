//! What this shard's logs did to their files: fdatasyncs and data writes with their latency
//! (submission to completion, as the log waited for them), and reads by where they were served
//! from (the tail cache or a segment on disk). The server's metrics read it at scrape time.
//!
//! Shard: thread-local (a shard's logs all run on its one thread), so counting costs a
//! `RefCell` borrow and no atomic, lock or message.

use std::cell::RefCell;
use std::time::Instant;

/// Upper bounds of the latency buckets, in microseconds: 25 µs (a write into the device's cache)
/// to 1 s (a device in trouble).
pub const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Operations of one kind and how long they took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latencies {
    pub count: u64,
    pub micros_sum: u64,
    /// Operations per bucket of `LATENCY_BUCKETS_MICROS` (not cumulative: one count per bucket;
    /// those slower than the last bound are only in `count`).
    pub buckets: [u64; LATENCY_BUCKETS_MICROS.len()],
}

impl Latencies {
    fn record(&mut self, started: Instant) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.count += 1;
        self.micros_sum = self.micros_sum.saturating_add(micros);
        if let Some(bucket) = LATENCY_BUCKETS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
        {
            self.buckets[bucket] += 1;
        }
    }
}

/// This shard's storage operations since start.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoStats {
    /// fdatasyncs of segment files (`flush.messages=1`, `flush.ms`, seals).
    pub fsyncs: Latencies,
    /// Writes of appended data to segment files.
    pub writes: Latencies,
    /// Reads answered from the tail cache (the appended buffers, no I/O).
    pub tail_cache_reads: u64,
    /// Reads that went to a segment file.
    pub disk_reads: u64,
    /// Reads the device did for segment files (a fetch's own, read-aheads, scans) and their bytes:
    /// fewer and larger than `disk_reads` when read-ahead works.
    pub device_reads: u64,
    pub device_read_bytes: u64,
}

thread_local! {
    static STATS: RefCell<IoStats> = RefCell::new(IoStats::default());
}

/// This shard's counts so far.
pub fn snapshot() -> IoStats {
    STATS.with(|stats| *stats.borrow())
}

pub(crate) fn synced(started: Instant) {
    STATS.with(|stats| stats.borrow_mut().fsyncs.record(started));
}

pub(crate) fn written(started: Instant) {
    STATS.with(|stats| stats.borrow_mut().writes.record(started));
}

/// A device read of `bytes` from a segment file completed.
pub(crate) fn read_from_device(bytes: usize) {
    STATS.with(|stats| {
        let mut stats = stats.borrow_mut();
        stats.device_reads += 1;
        stats.device_read_bytes += bytes as u64;
    });
}

/// A read served from the tail cache (`true`) or planned on a segment file (`false`).
pub(crate) fn read_from_tail_cache(hit: bool) {
    STATS.with(|stats| {
        let mut stats = stats.borrow_mut();
        if hit {
            stats.tail_cache_reads += 1;
        } else {
            stats.disk_reads += 1;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latencies_fall_into_their_buckets() {
        let mut latencies = Latencies::default();
        latencies.record(Instant::now());
        let slow = Instant::now() - Duration::from_millis(3);
        latencies.record(slow);
        assert_eq!(latencies.count, 2);
        assert_eq!(latencies.buckets[0], 1, "{latencies:?}");
        assert_eq!(
            latencies.buckets[7], 1,
            "3 ms is under the 5 ms bound: {latencies:?}"
        );
        assert!(latencies.micros_sum >= 3_000);
    }
}
