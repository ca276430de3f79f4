//! Every size limit of the engine in one place, with the layout facts they rest on.
//! Constants only; used on every shard. The file-format layouts (batch header, index entries)
//! stay beside their codecs in `batch.rs` and `index.rs`.

/// Block size of O_DIRECT writes and reads. Every write starts and ends on this boundary; the
/// partial last block of a segment is rewritten as the log grows.
pub const BLOCK_BYTES: usize = 4096;

/// Segment files grow by `fallocate` ahead of the writes, in steps of up to this size (as Redpanda
/// does), so that appends rarely allocate blocks on the write path. The step doubles from
/// `PREALLOCATE_STEP_MIN_BYTES` with the segment's size, so that a shard with 1,000 quiet partitions
/// does not reserve 32 GiB of disk.
pub const PREALLOCATE_STEP_BYTES: u64 = 32 << 20;
pub const PREALLOCATE_STEP_MIN_BYTES: u64 = 1 << 20;

/// One write of a partition carries at most this many bytes of batches (one batch is always
/// allowed even when larger). Measured here (weir-bench engine): 4 MiB writes reach ~1.9 GB/s raw
/// against ~1.2-1.6 GB/s for 1 MiB, one write in flight.
pub const WRITE_BYTES_MAX: usize = 4 << 20;

/// Log writes in flight on one shard, at most (see `slots.rs`). Measured with fio on this
/// machine's disk, 1,000 files written sequentially: 24 KiB writes reach 0.79 GB/s and 64 KiB
/// writes 1.5 GB/s at queue depth 32, so fewer, larger writes win; 32 keeps the device busy.
pub const WRITE_SLOTS_PER_SHARD: usize = 32;

/// Writes in flight at once, at most. With one, the device idled while each write's completion
/// was processed (ext4 converts the pre-allocated extent in a kworker that competes with the shard
/// for its core): measured with io_uring tracepoints, a 4 MiB write took 2.55 ms from submission
/// to completion inside the engine against 2.12 ms for the same write alone, and one partition
/// reached 72-80% of the raw bandwidth. With a second write queued behind it the device never
/// waits for that processing.
pub const WRITES_IN_FLIGHT_MAX: usize = 2;

/// Pause before a failed write, sync or seal (ENOSPC, EIO) is retried.
pub const WRITE_RETRY_MS: u64 = 100;

/// Read-aheads kept per log: up to two per reader catching up from disk (consumer groups,
/// followers): the rest of the window it is reading, and the read of the next one.
pub const READ_AHEADS_MAX: usize = 8;

/// A read-ahead reads at least this much, whatever the fetch asked: a Kafka consumer asks 1 MiB
/// per partition (`max.partition.fetch.bytes`), and one 1 MiB read in flight per reader left the
/// device idle between reads (weir-bench --backlog with 1 MiB fetches: 0.80-1.04 GB/s against
/// 1.07-1.13 GB/s with 8 MiB ones). A reader with larger fetches reads ahead two of its windows.
pub const READ_AHEAD_BYTES: usize = 8 << 20;

/// Read-ahead memory of one shard, at most: past it a read-ahead reads only the fetch's own
/// window, so that many partitions read at once cannot each hold `READ_AHEAD_BYTES`.
pub const READ_AHEAD_SHARD_BYTES: usize = 256 << 20;

/// A disk read for a fetch covers at most this much of the fetch's `max_bytes` (plus an index
/// interval and two blocks of slack), so a hostile `max_bytes` cannot size a read buffer.
pub const READ_FETCH_BYTES_MAX: usize = 8 * WRITE_BYTES_MAX;

/// glommio's io memory per executor: small enough that every shard fits in a default
/// RLIMIT_MEMLOCK of 8 MiB (glommio's own default of 10 MiB does not).
pub const IO_MEMORY_BYTES: usize = 512 << 10;

/// The least io memory glommio locks per executor whatever it is asked for (what the memlock
/// check must allow for).
pub const IO_MEMORY_BYTES_MIN: usize = 512 << 10;

/// Window of one read during recovery and timestamp lookups.
pub const SCAN_WINDOW_BYTES: usize = 1 << 20;

/// Positions inside a segment are stored as `u32` in the offset index.
pub const SEGMENT_BYTES_MAX: u64 = (1 << 31) - 1;

/// Smallest segment size accepted (tests use tiny segments to exercise rolling).
pub const SEGMENT_BYTES_MIN: u64 = 1024;

/// Batches remembered per idempotent producer for duplicate detection (Kafka's value).
pub const PRODUCER_BATCHES_MAX: usize = 5;

/// Largest batch the engine accepts whatever the configuration says.
pub const BATCH_BYTES_MAX: usize = 64 << 20;

/// Pooled write buffers of one size kept per shard, at most.
pub const POOL_BUFFERS_PER_SIZE_MAX: usize = 4;

/// Bytes of pooled write buffers kept per shard, at most.
pub const POOL_BYTES_MAX: usize = 32 << 20;

const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!(PREALLOCATE_STEP_BYTES.is_multiple_of(BLOCK_BYTES as u64));
const _: () = assert!(PREALLOCATE_STEP_BYTES.is_multiple_of(PREALLOCATE_STEP_MIN_BYTES));
const _: () = assert!(PREALLOCATE_STEP_MIN_BYTES.is_power_of_two());
const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64);
const _: () = assert!(BATCH_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX);
// A log's writes in flight each hold a shard write slot, and one log alone must not take them all.
const _: () = assert!(WRITES_IN_FLIGHT_MAX >= 1 && WRITES_IN_FLIGHT_MAX < WRITE_SLOTS_PER_SHARD);
const _: () = assert!(READ_AHEADS_MAX >= 1);
// The pool can keep the buffers of one log's full writes in flight (a write carries its partial
// first block besides `WRITE_BYTES_MAX`).
const _: () = assert!(POOL_BYTES_MAX >= WRITES_IN_FLIGHT_MAX * (WRITE_BYTES_MAX + BLOCK_BYTES));
const _: () = assert!(POOL_BUFFERS_PER_SIZE_MAX >= WRITES_IN_FLIGHT_MAX);
const _: () = assert!(IO_MEMORY_BYTES >= IO_MEMORY_BYTES_MIN);
const _: () = assert!(READ_FETCH_BYTES_MAX >= WRITE_BYTES_MAX);
