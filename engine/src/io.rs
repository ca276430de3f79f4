//! The glommio seam: the only module that touches O_DIRECT files and executor set-up facts.
//! Runs on whichever shard calls it; holds no state.

use std::path::Path;

/// glommio's io memory per executor: small enough that every shard fits in a default
/// RLIMIT_MEMLOCK of 8 MiB (glommio's own default of 10 MiB does not).
pub const IO_MEMORY_BYTES: usize = 512 << 10;

/// Works around glommio 0.9's poll-ring probe: it reads the first `DmaFile` opened on a device, and
/// when that file is new and empty it wrongly marks the device pollable, so every later read fails
/// with EOPNOTSUPP (os error 95). Opening and reading a non-empty file first makes the probe succeed.
/// Call once per executor, before any other file of `dir` is opened.
pub async fn prepare_data_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".weir-probe");
    let block = vec![0u8; 4096];
    if std::fs::metadata(&probe).map(|m| m.len() < 4096).unwrap_or(true) {
        std::fs::write(&probe, &block)?;
    }
    let file = glommio::io::OpenOptions::new()
        .read(true)
        .dma_open(&probe)
        .await
        .map_err(std::io::Error::from)?;
    let read = file.read_at_aligned(0, 4096).await.map_err(std::io::Error::from);
    let _ = file.close().await;
    read.map(|_| ())
}

/// glommio needs RLIMIT_MEMLOCK of at least 512 KiB per executor; explains how to raise it.
pub fn check_memlock(executors: usize, io_memory_bytes: usize) -> Result<(), String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return Ok(());
    }
    let needed = (executors * io_memory_bytes.max(512 << 10)) as u64;
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
