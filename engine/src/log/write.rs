//! One write's I/O: pre-allocation, the write itself (split in two when it rewrites a block on
//! disk), and the retry of a short write.
//!
//! Shard: the log's owner; runs as a future owned by the writer (`Flight`), touching no log state,
//! so a write in flight never holds a borrow of the log.

use std::path::Path;
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile};

use super::plan::{WriteJob, WriteJobResult};
use crate::io::{give_buffer, log_error, take_buffer};
use crate::limits::BLOCK_BYTES;
use crate::LogError;

/// Reserves blocks up to `step_end` (a 32 MiB step) or, when the device cannot hold that much,
/// just up to `write_end`, so that pre-allocation alone never makes a near-full disk refuse writes.
pub(super) async fn preallocate(
    file: &DmaFile,
    path: &Path,
    step_end: u64,
    write_end: u64,
) -> Result<u64, LogError> {
    match file
        .pre_allocate(step_end, false)
        .await
        .map_err(|e| log_error(path, e))
    {
        Err(LogError::StorageFull) => {
            file.pre_allocate(write_end, false)
                .await
                .map_err(|e| log_error(path, e))?;
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

pub(super) async fn run_write(
    mut job: WriteJob,
) -> (Result<(), LogError>, Option<DmaBuffer>, WriteJobResult) {
    let head_bytes = job.head.as_ref().map_or(0, DmaBuffer::len);
    let write_end = job.aligned_start + (head_bytes + job.buffer.len()) as u64;
    if let Some(size) = job.allocate_to {
        match preallocate(&job.file, &job.path, size, write_end).await {
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
    let buffer = Rc::new(job.buffer);
    let expected = buffer.len();
    let body_at = job.aligned_start + head_bytes as u64;
    let (head, result) = match job.head.take() {
        None => (None, job.file.write_rc_at(buffer.clone(), body_at).await),
        Some(head) => {
            // Both go out in the same reactor turn; they do not overlap.
            let head = Rc::new(head);
            let (head_result, body_result) = futures_lite::future::zip(
                job.file.write_rc_at(head.clone(), job.aligned_start),
                job.file.write_rc_at(buffer.clone(), body_at),
            )
            .await;
            let head_result = match head_result {
                Ok(written) if written == head_bytes => Ok(()),
                Ok(written) => Err(short_write(&job.path, written, head_bytes)),
                Err(e) => Err(log_error(&job.path, e)),
            };
            (Some((head, head_result)), body_result)
        }
    };
    let buffer = Rc::try_unwrap(buffer).ok();
    if let Some((head, head_result)) = head {
        if let Ok(head) = Rc::try_unwrap(head) {
            give_buffer(head);
        }
        if let Err(e) = head_result {
            return (Err(e), buffer, allocated);
        }
    }
    match result {
        Ok(written) if written == expected => (Ok(()), buffer, allocated),
        Ok(written) => {
            // A device that fills up part-way through a write reports the bytes it took; the
            // rest, written again, gives the reason (ENOSPC: StorageFull), or succeeds.
            let rest = match &buffer {
                Some(buffer) if written > 0 && written % BLOCK_BYTES == 0 => {
                    let mut rest = take_buffer(expected - written);
                    rest.as_bytes_mut()
                        .copy_from_slice(&buffer.as_bytes()[written..]);
                    let at = body_at + written as u64;
                    let result = job.file.write_rc_at(Rc::new(rest), at).await;
                    Some(result.map(|n| n == expected - written))
                }
                _ => None,
            };
            let result = match rest {
                Some(Ok(true)) => Ok(()),
                Some(Err(e)) => Err(log_error(&job.path, e)),
                Some(Ok(false)) | None => Err(short_write(&job.path, written, expected)),
            };
            (result, buffer, allocated)
        }
        Err(e) => (Err(log_error(&job.path, e)), buffer, allocated),
    }
}
