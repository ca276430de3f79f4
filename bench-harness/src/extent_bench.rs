//! `weir-bench engine --extents`: "written extents ahead of the writer" (issue 14), measured.
//! Small sequential O_DIRECT writes, each followed by an fdatasync (what a group commit of a
//! lightly loaded shard does), into a file whose space is fallocate'd (unwritten extents: ext4 must
//! convert each written range, in a kworker, and journal that before fdatasync returns) against a
//! file whose space was written with zeros beforehand (a pure overwrite; fdatasync is a flush).
//! The two alternate in 0.5 s slices so that both see the same disk drift.
//!
//! Runs on the bench's single glommio executor.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use glommio::io::DmaFile;
use hdrhistogram::Histogram;

const FILE_BYTES: u64 = 1 << 30;
const SLICE: Duration = Duration::from_millis(500);
const ZERO_WRITE_BYTES: usize = 4 << 20;

struct Target {
    file: DmaFile,
    position: u64,
    histogram: Histogram<u64>,
}

async fn create(path: &Path, zeroed: bool) -> Result<DmaFile> {
    let _ = std::fs::remove_file(path);
    let file = crate::shard_stream::open_dma(path).await?;
    let reserved = file.pre_allocate(FILE_BYTES, false).await;
    reserved
        .map_err(std::io::Error::from)
        .context("fallocate")?;
    if zeroed {
        let mut at = 0;
        while at < FILE_BYTES {
            let mut buffer = file.alloc_dma_buffer(ZERO_WRITE_BYTES);
            buffer.as_bytes_mut().fill(0);
            let written = file.write_at(buffer, at).await;
            written.map_err(std::io::Error::from).context("zeroing")?;
            at += ZERO_WRITE_BYTES as u64;
        }
        let synced = file.fdatasync().await;
        synced.map_err(std::io::Error::from).context("fdatasync")?;
    }
    Ok(file)
}

/// Writes + fdatasyncs for one slice, recording each pair's latency.
async fn slice(target: &mut Target, write_bytes: usize) -> Result<u64> {
    let started = Instant::now();
    let mut writes = 0;
    while started.elapsed() < SLICE && target.position + write_bytes as u64 <= FILE_BYTES {
        let mut buffer = target.file.alloc_dma_buffer(write_bytes);
        buffer.as_bytes_mut().fill(0x61);
        let began = Instant::now();
        let written = target.file.write_at(buffer, target.position).await;
        written.map_err(std::io::Error::from).context("write")?;
        let synced = target.file.fdatasync().await;
        synced.map_err(std::io::Error::from).context("fdatasync")?;
        crate::stats::record(&mut target.histogram, began.elapsed().as_nanos() as u64, 1);
        target.position += write_bytes as u64;
        writes += 1;
    }
    Ok(writes)
}

pub async fn run(dir: &Path, write_bytes: usize, seconds: f64) -> Result<()> {
    anyhow::ensure!(
        write_bytes > 0 && write_bytes.is_multiple_of(weir_engine::limits::BLOCK_BYTES),
        "--extent-write-bytes must be a positive multiple of 4096"
    );
    std::fs::create_dir_all(dir)?;
    let unwritten_path = dir.join("extents-unwritten.bin");
    let zeroed_path = dir.join("extents-zeroed.bin");
    let mut unwritten = Target {
        file: create(&unwritten_path, false).await?,
        position: 0,
        histogram: crate::stats::new_histogram(),
    };
    let mut zeroed = Target {
        file: create(&zeroed_path, true).await?,
        position: 0,
        histogram: crate::stats::new_histogram(),
    };
    let mut elapsed = 0.0;
    let started = Instant::now();
    while elapsed < seconds {
        // A file used up starts over: the unwritten one is made again (fresh unwritten extents),
        // the zeroed one is overwritten from the start (its extents stay written).
        if unwritten.position + write_bytes as u64 > FILE_BYTES {
            unwritten.file = create(&unwritten_path, false).await?;
            unwritten.position = 0;
        }
        if zeroed.position + write_bytes as u64 > FILE_BYTES {
            zeroed.position = 0;
        }
        slice(&mut unwritten, write_bytes).await?;
        slice(&mut zeroed, write_bytes).await?;
        elapsed += SLICE.as_secs_f64();
    }
    println!(
        "{write_bytes} B O_DIRECT write + fdatasync, one at a time, alternating 0.5 s slices, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "extents", "writes", "p50", "p90", "p99", "p99.9"
    );
    for (name, target) in [("unwritten", &unwritten), ("written", &zeroed)] {
        let h = &target.histogram;
        println!(
            "{:>10} {:>8} {:>6}us {:>6}us {:>6}us {:>6}us",
            name,
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999)
        );
    }
    let _ = std::fs::remove_file(&unwritten_path);
    let _ = std::fs::remove_file(&zeroed_path);
    Ok(())
}
