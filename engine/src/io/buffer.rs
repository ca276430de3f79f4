//! Aligned memory for direct I/O: the write buffers (`IoBuffer`, pooled per shard) and the bytes a
//! read returned (`DiskBytes`, refcounted views of one read, never copied).
//!
//! Shard: the one that allocated them; neither type is `Send`. The pool is thread-local, so each
//! shard has its own and nothing here is shared between shards.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Deref;

use glommio::io::{DmaBuffer, ReadResult};

use super::align_up;
use crate::limits::{POOL_BUFFERS_PER_SIZE_MAX, POOL_BYTES_MAX};

/// A block-aligned buffer for one O_DIRECT write (glommio's `DmaBuffer`); its length is a
/// multiple of `BLOCK_BYTES`.
pub(crate) struct IoBuffer(DmaBuffer);

impl IoBuffer {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub(crate) fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }

    pub(super) fn into_dma(self) -> DmaBuffer {
        self.0
    }

    pub(super) fn from_dma(buffer: DmaBuffer) -> IoBuffer {
        IoBuffer(buffer)
    }
}

/// Bytes read from a segment file: a refcounted view of one aligned read (glommio's
/// `ReadResult`), sliced without copying. Not `Send`: crossing shards means copying
/// (`Chunk::to_bytes`).
pub struct DiskBytes(ReadResult);

impl DiskBytes {
    pub(super) fn new(read: ReadResult) -> DiskBytes {
        DiskBytes(read)
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// `len` bytes from `offset` of these bytes, sharing the same read; `None` when out of range.
    pub fn slice(&self, offset: usize, len: usize) -> Option<DiskBytes> {
        ReadResult::slice(&self.0, offset, len).map(DiskBytes)
    }
}

impl std::fmt::Debug for DiskBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DiskBytes({} bytes)", self.0.len())
    }
}

impl Deref for DiskBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

thread_local! {
    /// Per-shard pool of aligned write buffers keyed by exact length (glommio cannot grow a
    /// trimmed `DmaBuffer` back, so a buffer is reused only for a write of the same block count;
    /// steady workloads repeat their sizes). Bounded by `POOL_BYTES_MAX`.
    static POOL: RefCell<BufferPool> = RefCell::new(BufferPool::default());
}

#[derive(Default)]
struct BufferPool {
    by_len: HashMap<usize, Vec<DmaBuffer>>,
    bytes: usize,
}

impl BufferPool {
    /// Asserts the pool within its limits after a change of the buffers of length `len`.
    fn check_invariants(&self, len: usize) {
        let kept = self.by_len.get(&len).map_or(0, Vec::len);
        check_pool(self.bytes, kept);
    }
}

/// Asserts a pool holding `bytes` in all and `kept` buffers of one length within its limits.
fn check_pool(bytes: usize, kept: usize) {
    assert!(
        bytes <= POOL_BYTES_MAX && kept <= POOL_BUFFERS_PER_SIZE_MAX,
        "the buffer pool stays within its limits: {bytes} bytes, {kept} buffers of one size"
    );
}

/// An aligned buffer of `align_up(len)` bytes, from the pool when one of that size is free.
pub(crate) fn take_buffer(len: usize) -> IoBuffer {
    let len = align_up(len as u64) as usize;
    let pooled = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let buffer = pool.by_len.get_mut(&len).and_then(Vec::pop);
        if buffer.is_some() {
            pool.bytes -= len;
            pool.check_invariants(len);
        }
        buffer
    });
    IoBuffer(pooled.unwrap_or_else(|| glommio::allocate_dma_buffer_global(len)))
}

/// Returns a buffer to the pool (dropped when the pool is full).
pub(crate) fn give_buffer(buffer: IoBuffer) {
    let buffer = buffer.0;
    let len = buffer.len();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.bytes + len > POOL_BYTES_MAX {
            return;
        }
        let list = pool.by_len.entry(len).or_default();
        if list.len() < POOL_BUFFERS_PER_SIZE_MAX {
            list.push(buffer);
            pool.bytes += len;
            pool.check_invariants(len);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::BLOCK_BYTES;

    #[test]
    fn a_full_pool_passes() {
        check_pool(POOL_BYTES_MAX, POOL_BUFFERS_PER_SIZE_MAX);
    }

    #[test]
    #[should_panic(expected = "the buffer pool stays within its limits")]
    fn a_pool_over_its_bytes_is_refused() {
        check_pool(POOL_BYTES_MAX + 1, 1);
    }

    #[test]
    #[should_panic(expected = "the buffer pool stays within its limits")]
    fn a_pool_over_its_buffers_of_one_size_is_refused() {
        check_pool(BLOCK_BYTES, POOL_BUFFERS_PER_SIZE_MAX + 1);
    }
}
