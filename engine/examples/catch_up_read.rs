//! Catch-up read throughput of one partition against a raw O_DIRECT read of the same segment file.
//! One glommio executor (the shard) pinned to a CPU; the log is written, closed and reopened (so
//! the tail cache is empty and every read goes to the device), then drained with `Log::read` in
//! fetch-sized steps (the engine checks every CRC; the example walks batch headers). `think_ms`
//! (default 0) is a pause after every read standing in for the time between a fetch response and
//! the client's next fetch (network, client decoding), during which the broker's shard is idle. The raw pass reads the first segment with sequential `read_at_aligned` calls of the
//! same size, one in flight, and touches nothing.
//!
//! `cargo run --release -p weir-engine --example catch_up_read -- <dir> [GiB] [fetch MiB] [cpu] [think_ms]`

use std::time::Instant;

use glommio::{LocalExecutorBuilder, Placement};
use weir_engine::batch::{build_value_batch, claimed_size, BatchSpec};
use weir_engine::{Log, LogConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).ok_or("usage: <dir> [GiB] [fetch MiB] [cpu]")?);
    let gib: u64 = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let fetch_mib: usize = args.get(3).map_or(Ok(8), |s| s.parse())?;
    let cpu: usize = args.get(4).map_or(Ok(1), |s| s.parse())?;
    let think_ms: u64 = args.get(5).map_or(Ok(0), |s| s.parse())?;
    let result = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .io_memory(weir_engine::io::IO_MEMORY_BYTES)
        .spawn(move || async move {
            run(dir, gib, fetch_mib, think_ms)
                .await
                .map_err(|e| e.to_string())
        })?
        .join()?;
    result.map_err(Into::into)
}

type Error = Box<dyn std::error::Error>;

async fn run(
    dir: std::path::PathBuf,
    gib: u64,
    fetch_mib: usize,
    think_ms: u64,
) -> Result<(), Error> {
    let _ = std::fs::remove_dir_all(&dir);
    weir_engine::io::prepare_data_dir(&dir).await?;
    let log_dir = dir.join("t-0");
    let config = LogConfig {
        segment_bytes: (gib << 30).min((1 << 31) - 1),
        ..LogConfig::default()
    };
    write_log(&log_dir, &config, gib << 30).await?;
    let log = Log::open(&log_dir, config).await?;
    let fetch_bytes = fetch_mib << 20;

    let started = Instant::now();
    let bytes = drain(&log, fetch_bytes, think_ms).await?;
    let log_secs = started.elapsed().as_secs_f64();
    log.close().await?;

    let started = Instant::now();
    let position = read_raw(&log_dir, fetch_bytes).await?;
    let raw_secs = started.elapsed().as_secs_f64();
    println!(
        "log.read: {:.2} GB/s ({} bytes in {:.2} s); raw O_DIRECT {} MiB reads: {:.2} GB/s ({} bytes); ratio {:.2}",
        bytes as f64 / log_secs / 1e9,
        bytes,
        log_secs,
        fetch_mib,
        position as f64 / raw_secs / 1e9,
        position,
        (bytes as f64 / log_secs) / (position as f64 / raw_secs)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Writes `total` bytes of 1,000-record batches, then closes the log.
async fn write_log(log_dir: &std::path::Path, config: &LogConfig, total: u64) -> Result<(), Error> {
    let log = Log::open(log_dir, config.clone()).await?;
    let batch = build_value_batch(&BatchSpec::default(), &[7u8; 1024], 1000);
    let mut written = 0u64;
    let mut last = 0;
    while written < total {
        last = log.append(batch.clone())?.last_offset;
        written += batch.len() as u64;
        if written % (32 << 20) < batch.len() as u64 {
            log.wait_written(last).await?;
        }
    }
    log.wait_written(last).await?;
    log.close().await?;
    Ok(())
}

/// Reads the whole log with `Log::read` in fetch-sized steps; returns the bytes read.
async fn drain(log: &Log, fetch_bytes: usize, think_ms: u64) -> Result<u64, Error> {
    let mut offset = 0;
    let mut bytes = 0u64;
    while offset < log.high_watermark() {
        let read = log.read(offset, fetch_bytes).await?;
        if think_ms > 0 {
            // The broker idles between fetches: the response crosses the network and the client
            // decodes it before asking for the next one.
            glommio::timer::sleep(std::time::Duration::from_millis(think_ms)).await;
        }
        let mut next = offset;
        for chunk in &read.chunks {
            let mut rest = chunk.as_slice();
            while !rest.is_empty() {
                let size = claimed_size(rest).ok_or("bad batch")?;
                let header = weir_engine::batch::Header::new(rest).ok_or("short batch")?;
                next = header.base_offset() + header.last_offset_delta() as i64 + 1;
                rest = &rest[size..];
            }
        }
        if next == offset {
            return Err("no progress".into());
        }
        offset = next;
        bytes += read.total_bytes as u64;
    }
    Ok(bytes)
}

/// Reads the first segment file with sequential aligned reads, one in flight; returns its bytes.
async fn read_raw(log_dir: &std::path::Path, fetch_bytes: usize) -> Result<u64, Error> {
    let file = glommio::io::OpenOptions::new()
        .read(true)
        .dma_open(log_dir.join(format!("{:020}.log", 0)))
        .await?;
    let size = file.file_size().await?;
    let mut position = 0;
    while position < size {
        let read = file.read_at_aligned(position, fetch_bytes).await?;
        if read.is_empty() {
            break;
        }
        position += read.len() as u64;
    }
    file.close().await?;
    Ok(position)
}
