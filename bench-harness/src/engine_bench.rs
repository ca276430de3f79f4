//! `weir-bench engine`: the in-process storage benchmark. Appends real RecordBatch v2 batches to
//! `weir_engine::Log`s on one executor pinned to one core, for 1 and 1,000 partitions, 100-byte
//! and 1 KiB records, `os` and `always` durability; measures in the same run the raw sequential
//! O_DIRECT write bandwidth of the same disk with the same write size (1 MiB, one write in flight,
//! as one partition's writer issues them), and the read-back rate from the tail cache.
//!
//! Runs everything on one glommio executor (one shard); single-threaded by construction.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::BytesMut;
use glommio::{LocalExecutorBuilder, Placement};
use serde::Serialize;
use weir_engine::batch::{build_value_batch, BatchSpec};
use weir_engine::{Durability, Log, LogConfig};

#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// Directory for the benchmark's files (on the disk to measure); emptied per case.
    #[arg(long, default_value = "/tmp/weir-bench-engine")]
    dir: PathBuf,
    /// Seconds per case (ignored when --bytes is given).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Bytes of batches to append per case instead of a duration.
    #[arg(long)]
    bytes: Option<u64>,
    /// CPU to pin the executor to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Size of one produced batch (Kafka's batch.size default is 16 KiB).
    #[arg(long, default_value_t = 16 << 10)]
    batch_bytes: usize,
    /// Appended-but-unacknowledged bytes kept in flight (a pipelining producer).
    #[arg(long, default_value_t = 32 << 20)]
    window_bytes: usize,
    /// Only these partition counts (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 1000])]
    partitions: Vec<usize>,
    /// Only these record sizes (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1024])]
    record_bytes: Vec<usize>,
    /// Only these durabilities: os, always.
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("os"), String::from("always")])]
    durability: Vec<String>,
    /// Write the results as a JSON list to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Debug, Clone)]
struct CaseResult {
    partitions: usize,
    record_bytes: usize,
    durability: String,
    batch_bytes: usize,
    seconds: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
    raw_mb_per_s: f64,
    /// mb_per_s / raw_mb_per_s
    fraction_of_raw: f64,
    /// Tail-cache read-back rate (1-partition cases only): refcounted chunks handed out, no copy.
    read_mb_per_s: Option<f64>,
    /// The same with one memcpy of every byte (what a socket write costs at least).
    read_copy_mb_per_s: Option<f64>,
}

const MB: f64 = 1e6;
const RAW_WRITE_BYTES: usize = 1 << 20;

pub fn run(args: EngineArgs) -> Result<()> {
    weir_engine::io::check_memlock(1, weir_engine::io::IO_MEMORY_BYTES)
        .map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let cpu = args.cpu;
    let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .io_memory(weir_engine::io::IO_MEMORY_BYTES)
        .name("weir-bench-engine")
        .spawn(move || async move { run_cases(args).await })
        .map_err(std::io::Error::from)
        .context("starting the executor")?;
    let results = handle
        .join()
        .map_err(|e| anyhow::anyhow!("executor failed: {e:?}"))??;
    let _ = results;
    Ok(())
}

async fn run_cases(args: EngineArgs) -> Result<Vec<CaseResult>> {
    weir_engine::io::prepare_data_dir(&args.dir)
        .await
        .context("preparing the data dir")?;
    let budget = Budget {
        seconds: args.seconds,
        bytes: args.bytes,
    };
    println!(
        "raw = sequential 1 MiB O_DIRECT writes, one in flight (with fdatasync after each for \
         always), measured on the same disk right before each case"
    );
    println!(
        "{:>10} {:>7} {:>10} {:>12} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "partitions",
        "record",
        "durability",
        "msgs/s",
        "MB/s",
        "raw MB/s",
        "of raw",
        "read MB/s",
        "read+copy"
    );
    let mut results = Vec::new();
    for durability in &args.durability {
        let policy = match durability.as_str() {
            "os" => Durability::Os,
            "always" => Durability::Always,
            other => anyhow::bail!("unknown durability {other} (os, always)"),
        };
        for &partitions in &args.partitions {
            for &record_bytes in &args.record_bytes {
                let case = Case {
                    partitions,
                    record_bytes,
                    durability: policy,
                    batch_bytes: args.batch_bytes,
                    window_bytes: args.window_bytes,
                };
                let raw = raw_write_bandwidth(
                    &args.dir.join("raw"),
                    budget,
                    policy == Durability::Always,
                )
                .await?;
                let dir = args.dir.join("case");
                let _ = std::fs::remove_dir_all(&dir);
                let outcome = run_case(&dir, &case, budget).await?;
                let _ = std::fs::remove_dir_all(&dir);
                let mb_per_s = outcome.bytes as f64 / outcome.seconds / MB;
                let result = CaseResult {
                    partitions,
                    record_bytes,
                    durability: durability.clone(),
                    batch_bytes: args.batch_bytes,
                    seconds: outcome.seconds,
                    msgs_per_s: outcome.records as f64 / outcome.seconds,
                    mb_per_s,
                    raw_mb_per_s: raw / MB,
                    fraction_of_raw: mb_per_s / (raw / MB),
                    read_mb_per_s: outcome.read_bytes_per_s.map(|r| r.0 / MB),
                    read_copy_mb_per_s: outcome.read_bytes_per_s.map(|r| r.1 / MB),
                };
                println!(
                    "{:>10} {:>7} {:>10} {:>12.0} {:>9.0} {:>9.0} {:>6.0}% {:>10} {:>10}",
                    partitions,
                    record_bytes,
                    durability,
                    result.msgs_per_s,
                    result.mb_per_s,
                    result.raw_mb_per_s,
                    result.fraction_of_raw * 100.0,
                    result
                        .read_mb_per_s
                        .map_or(String::from("-"), |r| format!("{r:.0}")),
                    result
                        .read_copy_mb_per_s
                        .map_or(String::from("-"), |r| format!("{r:.0}"))
                );
                results.push(result);
            }
        }
    }
    let _ = std::fs::remove_dir_all(args.dir.join("raw"));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(results)
}

#[derive(Clone, Copy)]
struct Budget {
    seconds: f64,
    bytes: Option<u64>,
}

impl Budget {
    fn done(&self, started: Instant, bytes: u64) -> bool {
        match self.bytes {
            Some(limit) => bytes >= limit,
            None => started.elapsed().as_secs_f64() >= self.seconds,
        }
    }
}

struct Case {
    partitions: usize,
    record_bytes: usize,
    durability: Durability,
    batch_bytes: usize,
    window_bytes: usize,
}

struct Outcome {
    bytes: u64,
    records: u64,
    seconds: f64,
    /// (zero-copy, with one copy) bytes per second
    read_bytes_per_s: Option<(f64, f64)>,
}

async fn run_case(dir: &Path, case: &Case, budget: Budget) -> Result<Outcome> {
    let records_per_batch = (case.batch_bytes / (case.record_bytes + 8)).max(1);
    let template = build_value_batch(
        &BatchSpec::default(),
        &vec![0x61; case.record_bytes],
        records_per_batch,
    );
    // Partitions keep a small tail cache when there are many (per-partition memory stays small);
    // a single partition keeps enough to measure read-back from memory.
    let tail_cache_bytes = if case.partitions == 1 {
        256 << 20
    } else {
        256 << 10
    };
    let config = LogConfig {
        durability: case.durability,
        tail_cache_bytes,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let mut logs = Vec::with_capacity(case.partitions);
    for p in 0..case.partitions {
        logs.push(
            Log::open(&dir.join(format!("p-{p}")), config.clone())
                .await
                .context("opening a partition")?,
        );
    }
    let logs = Rc::new(logs);
    let mut outstanding: VecDeque<(usize, i64, usize)> = VecDeque::new();
    let mut outstanding_bytes = 0usize;
    let (mut bytes, mut records) = (0u64, 0u64);
    let started = Instant::now();
    let mut next = 0usize;
    while !budget.done(started, bytes) {
        // A round of appends (a producer's batch for every partition, or 1 MiB for one).
        let round = if case.partitions == 1 {
            (1 << 20) / template.len() + 1
        } else {
            case.partitions
        };
        for _ in 0..round {
            let p = next % case.partitions;
            next += 1;
            let batch: BytesMut = template.clone();
            let appended = logs[p].append(batch).context("append")?;
            outstanding.push_back((p, appended.last_offset, template.len()));
            outstanding_bytes += template.len();
        }
        while outstanding_bytes > case.window_bytes {
            let (p, offset, size) = outstanding
                .pop_front()
                .expect("outstanding bytes imply entries");
            logs[p]
                .wait_durable(offset)
                .await
                .context("waiting for a write")?;
            outstanding_bytes -= size;
            bytes += size as u64;
            records += records_per_batch as u64;
        }
        // Let the executor reach its reactor: glommio submits queued writes (SQEs) only when the
        // task queues run dry, as they do in the server when connection tasks await their sockets.
        // Without this the next write would wait for the whole next round of appends.
        glommio::timer::sleep(Duration::from_nanos(1)).await;
    }
    while let Some((p, offset, size)) = outstanding.pop_front() {
        logs[p]
            .wait_durable(offset)
            .await
            .context("waiting for a write")?;
        bytes += size as u64;
        records += records_per_batch as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let read_bytes_per_s = if case.partitions == 1 {
        Some((
            read_back(&logs[0], false).await?,
            read_back(&logs[0], true).await?,
        ))
    } else {
        None
    };
    for log in logs.iter() {
        log.close().await.context("closing")?;
    }
    Ok(Outcome {
        bytes,
        records,
        seconds,
        read_bytes_per_s,
    })
}

/// Reads the tail cache from its oldest offset to the head, 1 MiB per read, repeatedly for ~1 s;
/// with `copy`, copies every returned byte once into a 1 MiB buffer.
async fn read_back(log: &Log, copy: bool) -> Result<f64> {
    let mut sink = vec![0u8; 2 << 20];
    let high = log.high_watermark();
    // The oldest offset still in the cache: read backwards in coarse steps until a memory chunk.
    let mut start = high - 1;
    let mut step = 1i64;
    while start - step >= log.log_start_offset() {
        let read = log.read(start - step, 1).await?;
        if !matches!(read.chunks.first(), Some(weir_engine::Chunk::Memory(_))) {
            break;
        }
        start -= step;
        step *= 2;
    }
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        let mut offset = start;
        while offset < high {
            let read = log.read(offset, 1 << 20).await?;
            let mut last = offset;
            let mut at = 0;
            for chunk in &read.chunks {
                let slice = chunk.as_slice();
                if copy {
                    if at + slice.len() > sink.len() {
                        at = 0;
                    }
                    let end = (at + slice.len()).min(sink.len());
                    sink[at..end].copy_from_slice(&slice[..end - at]);
                    at = end;
                }
                last = weir_engine::batch::base_offset(slice)
                    + i32::from_be_bytes([slice[23], slice[24], slice[25], slice[26]]) as i64;
            }
            bytes += read.total_bytes as u64;
            if read.chunks.is_empty() {
                break;
            }
            offset = last + 1;
        }
    }
    std::hint::black_box(&sink);
    Ok(bytes as f64 / started.elapsed().as_secs_f64())
}

/// Sequential 1 MiB O_DIRECT writes, one in flight, into a file pre-allocated in 32 MiB steps
/// (the pattern of one partition's writer); with `sync`, fdatasync after each write.
async fn raw_write_bandwidth(dir: &Path, budget: Budget, sync: bool) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("raw.bin");
    let _ = std::fs::remove_file(&path);
    let file = glommio::io::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(&path)
        .await
        .map_err(std::io::Error::from)
        .context("raw file")?;
    let mut position = 0u64;
    let mut allocated = 0u64;
    let started = Instant::now();
    while !budget.done(started, position) {
        if position + RAW_WRITE_BYTES as u64 > allocated {
            allocated += weir_engine::limits::PREALLOCATE_STEP_BYTES;
            file.pre_allocate(allocated, false)
                .await
                .map_err(std::io::Error::from)
                .context("fallocate")?;
        }
        let mut buffer = file.alloc_dma_buffer(RAW_WRITE_BYTES);
        buffer.as_bytes_mut().fill(0x61);
        file.write_at(buffer, position)
            .await
            .map_err(std::io::Error::from)
            .context("raw write")?;
        if sync {
            file.fdatasync()
                .await
                .map_err(std::io::Error::from)
                .context("fdatasync")?;
        }
        position += RAW_WRITE_BYTES as u64;
    }
    let rate = position as f64 / started.elapsed().as_secs_f64();
    file.close()
        .await
        .map_err(std::io::Error::from)
        .context("close")?;
    std::fs::remove_file(&path)?;
    Ok(rate)
}
