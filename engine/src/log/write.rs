//! One write's I/O: pre-allocation, the write itself (split in two when it rewrites a block on
//! disk), and the retry of a short write.
//!
//! Shard: the log's owner; runs as a future owned by the writer (`Flight`), touching no log state,
//! so a write in flight never holds a borrow of the log.

use std::path::Path;

use super::plan::{WriteJob, WriteJobResult};
use crate::io::{give_buffer, take_buffer, IoBuffer, SegmentFile};
use crate::limits::BLOCK_BYTES;
use crate::LogError;

/// Reserves blocks up to `step_end` (a 32 MiB step) or, when the device cannot hold that much,
/// just up to `write_end`, so that pre-allocation alone never makes a near-full disk refuse writes.
pub(super) async fn preallocate(
    file: &SegmentFile,
    step_end: u64,
    write_end: u64,
) -> Result<u64, LogError> {
    match file.preallocate(step_end).await {
        Err(LogError::StorageFull) => {
            file.preallocate(write_end).await?;
            Ok(write_end)
        }
        other => other.map(|()| step_end),
    }
}

pub(super) fn short_write(path: &Path, written: usize, expected: usize) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("short write: {written} of {expected} bytes")),
    }
}

/// Runs one planned write: pre-allocation, then the write (its rewritten first block beside the
/// rest, in the same reactor turn). Returns the outcome, the body buffer for the pool, and what
/// pre-allocation reserved.
pub(super) async fn run_write(
    mut job: WriteJob,
) -> (Result<(), LogError>, Option<IoBuffer>, WriteJobResult) {
    let head_bytes = job.head.as_ref().map_or(0, IoBuffer::len);
    let write_end = job.aligned_start + (head_bytes + job.buffer.len()) as u64;
    if let Some(size) = job.allocate_to {
        match preallocate(&job.file, size, write_end).await {
            Ok(allocated) => job.allocate_to = Some(allocated),
            Err(e) => {
                if let Some(head) = job.head {
                    give_buffer(head);
                }
                return (Err(e), Some(job.buffer), WriteJobResult { allocated: None });
            }
        }
    }
    let allocated = WriteJobResult {
        allocated: job.allocate_to,
    };
    let expected = job.buffer.len();
    let body_at = job.aligned_start + head_bytes as u64;
    let ((result, buffer), head_result) = match job.head.take() {
        None => (job.file.write(job.buffer, body_at).await, Ok(())),
        Some(head) => {
            // Both go out in the same reactor turn; they do not overlap.
            let ((head_result, head), body) = futures_lite::future::zip(
                job.file.write(head, job.aligned_start),
                job.file.write(job.buffer, body_at),
            )
            .await;
            if let Some(head) = head {
                give_buffer(head);
            }
            let head_result = match head_result {
                Ok(written) if written == head_bytes => Ok(()),
                Ok(written) => Err(short_write(&job.path, written, head_bytes)),
                Err(e) => Err(e),
            };
            (body, head_result)
        }
    };
    if let Err(e) = head_result {
        return (Err(e), buffer, allocated);
    }
    let result = match result {
        Ok(written) if written == expected => Ok(()),
        Ok(written) => {
            let rest = (body_at, written, expected);
            finish_short_write(&job.file, &job.path, buffer.as_ref(), rest).await
        }
        Err(e) => Err(e),
    };
    (result, buffer, allocated)
}

/// A device that fills up part-way through a write reports the bytes it took; the rest, written
/// again, gives the reason (ENOSPC: StorageFull), or succeeds.
async fn finish_short_write(
    file: &SegmentFile,
    path: &Path,
    buffer: Option<&IoBuffer>,
    (body_at, written, expected): (u64, usize, usize),
) -> Result<(), LogError> {
    let rest = match buffer {
        Some(buffer) if written > 0 && written % BLOCK_BYTES == 0 => {
            let mut rest = take_buffer(expected - written);
            rest.as_bytes_mut()
                .copy_from_slice(&buffer.as_bytes()[written..]);
            let at = body_at + written as u64;
            let (result, _) = file.write(rest, at).await;
            Some(result.map(|n| n == expected - written))
        }
        _ => None,
    };
    match rest {
        Some(Ok(true)) => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(false)) | None => Err(short_write(path, written, expected)),
    }
}
