//! The I/O seam: the only place that names glommio. `file` (the O_DIRECT segment file),
//! `file_cache` (the shard's budget of segment descriptors, closing idle ones), `buffer`
//! (aligned write buffers and their per-shard pool, the bytes of a read), `runtime` (spawning,
//! timers, yielding, the blocking pool), `stats` (what the shard's logs did to their files); here: data-directory and executor set-up facts, error
//! mapping and block alignment.
//!
//! Shard: whichever calls it; the buffer pool is per thread (per shard), so nothing here is shared
//! between shards.

mod buffer;
mod file;
mod file_cache;
pub(crate) mod runtime;
pub mod stats;

pub use buffer::DiskBytes;
pub(crate) use buffer::{give_buffer, take_buffer, IoBuffer};
pub(crate) use file::SegmentFile;
pub use file_cache::{
    open_segment_files, segment_files_budget, set_segment_files_budget, shard_open_segment_files,
};

use std::path::Path;

use glommio::io::OpenOptions;

use crate::limits::{BLOCK_BYTES, IO_MEMORY_BYTES_MIN};
use crate::LogError;

/// Re-exported here, beside the executor set-up it is for (the constant lives in `limits.rs`).
pub use crate::limits::IO_MEMORY_BYTES;

/// Name of the probe file that `prepare_data_dir` keeps in the data directory.
pub const PROBE_FILE_NAME: &str = ".weir-probe";

/// Works around glommio 0.9's poll-ring probe: it reads the first `DmaFile` opened on a device, and
/// when that file is new and empty it wrongly marks the device pollable, so every later read fails
/// with EOPNOTSUPP (os error 95). Opening and reading a non-empty file first makes the probe succeed.
/// Call once per executor, before any other file of `dir` is opened.
pub async fn prepare_data_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(PROBE_FILE_NAME);
    let block = vec![0x5au8; BLOCK_BYTES];
    if std::fs::metadata(&probe)
        .map(|m| m.len() < BLOCK_BYTES as u64)
        .unwrap_or(true)
    {
        std::fs::write(&probe, &block)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .dma_open(&probe)
        .await
        .map_err(std::io::Error::from)?;
    let read = file
        .read_at_aligned(0, BLOCK_BYTES)
        .await
        .map_err(std::io::Error::from);
    let _ = file.close().await;
    read.map(|_| ())
}

/// glommio needs RLIMIT_MEMLOCK of at least 512 KiB per executor; explains how to raise it.
pub fn check_memlock(executors: usize, io_memory_bytes: usize) -> Result<(), String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return Ok(());
    }
    let needed = (executors * io_memory_bytes.max(IO_MEMORY_BYTES_MIN)) as u64;
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    Err(format!(
        "RLIMIT_MEMLOCK is {} KiB but {} executors need {} KiB of locked io memory; raise it with \
         `ulimit -l unlimited` (as root) or LimitMEMLOCK=infinity in a systemd unit",
        limit.rlim_cur / 1024,
        executors,
        needed / 1024
    ))
}

/// Maps a glommio error on `path` to the engine's error; ENOSPC becomes `StorageFull`.
fn log_error(path: &Path, err: glommio::GlommioError<()>) -> LogError {
    let source = std::io::Error::from(err);
    if source.kind() == std::io::ErrorKind::StorageFull
        || source.raw_os_error() == Some(libc::ENOSPC)
    {
        return LogError::StorageFull;
    }
    LogError::Io {
        path: path.into(),
        source,
    }
}

pub(crate) fn std_error(path: &Path, source: std::io::Error) -> LogError {
    if source.kind() == std::io::ErrorKind::StorageFull {
        return LogError::StorageFull;
    }
    LogError::Io {
        path: path.into(),
        source,
    }
}

pub(crate) fn align_down(v: u64) -> u64 {
    v & !(BLOCK_BYTES as u64 - 1)
}

pub(crate) fn align_up(v: u64) -> u64 {
    align_down(v + BLOCK_BYTES as u64 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glommio::{LocalExecutorBuilder, Placement};

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(IO_MEMORY_BYTES)
            .spawn(move || async move { f().await })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn fresh_empty_data_dir_reads_after_probe() {
        // Without the probe, the first DmaFile opened here would be new and empty and later reads
        // would fail with EOPNOTSUPP. With it, a new empty segment file can be written and read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        run(move || async move {
            prepare_data_dir(&path).await.unwrap();
            let file = SegmentFile::open(&path.join("new.log"), true)
                .await
                .unwrap();
            let read = file.handle().await.unwrap().read_at(0, 10).await.unwrap();
            assert_eq!(read.len(), 0);
            let mut buffer = take_buffer(BLOCK_BYTES);
            buffer.as_bytes_mut().fill(7);
            file.write(buffer, 0).await.0.unwrap();
            let read = file.read_aligned(0, BLOCK_BYTES).await.unwrap();
            assert_eq!(&read[..4], &[7, 7, 7, 7]);
            file.close().await.unwrap();
        });
    }

    #[test]
    fn alignment_and_pool() {
        run(|| async {
            let buffer = take_buffer(5000);
            assert_eq!(buffer.len(), 8192);
            let address = buffer.as_bytes().as_ptr() as usize;
            give_buffer(buffer);
            let again = take_buffer(8000);
            assert_eq!(
                again.as_bytes().as_ptr() as usize,
                address,
                "reused from the pool"
            );
        });
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_down(8191), 4096);
    }

    #[test]
    fn memlock_check_explains() {
        assert!(check_memlock(1, IO_MEMORY_BYTES).is_ok());
        let err = check_memlock(1 << 30, IO_MEMORY_BYTES).unwrap_err();
        assert!(err.contains("ulimit -l"), "{err}");
    }
}
