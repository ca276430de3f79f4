//! Every size limit of the engine in one place, with the layout facts they rest on.
//! Constants only; used on every shard.

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
