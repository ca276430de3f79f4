//! `weir-bench engine`: the in-process storage benchmark. Appends real RecordBatch v2 batches to
//! `weir_engine::Log`s on one executor pinned to one core, for 1 and 1,000 partitions, 100-byte
//! and 1 KiB records, `os` and `always` durability. In the same run it measures the raw sequential
//! O_DIRECT write bandwidth of the same disk with the same write size (the engine's largest write,
//! `WRITE_BYTES_MAX` = 4 MiB, one write in flight,
//! as one partition's writer issues them; with an fdatasync after each write for `always`), and
//! the read-back rate from the tail cache.
//!
//! The disk of a shared machine drifts by 2x within seconds, so each case alternates short slices
//! of engine appends and raw writes (0.5 s each) and compares the sums: both see the same disk.
//!
//! `--layout journal|interleaved` sends the appends to the shard-stream prototypes of issue 14
//! (`shard_stream.rs`) instead of `Log`s; `--ack-rate-mb` paces the appends and reports append ->
//! durable latency; `--extents` runs only `extent_bench.rs` (unwritten against written extents).
//!
//! Runs everything on one glommio executor (one shard); single-threaded by construction.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use glommio::io::DmaFile;
use glommio::{LocalExecutorBuilder, Placement};
use serde::Serialize;
use weir_engine::batch::{build_value_batch, BatchSpec};
use weir_engine::{Durability, Log, LogConfig};

use crate::shard_stream::{Design, ShardStream, StreamStats};

#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// Directory for the benchmark's files (on the disk to measure); emptied per case.
    #[arg(long, default_value = "/tmp/weir-bench-engine")]
    dir: PathBuf,
    /// Seconds of appends per case (as many of raw writes; ignored when --bytes is given).
    #[arg(long, default_value_t = 4.0)]
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
    /// segment.bytes of every partition (Kafka's default 1 GiB; a roll fdatasyncs the sealed segment).
    #[arg(long, default_value_t = 1 << 30)]
    segment_bytes: u64,
    /// io_uring depth of the executor (glommio's default is 128).
    #[arg(long, default_value_t = 128)]
    ring_depth: usize,
    /// Only these partition counts (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 1000])]
    partitions: Vec<usize>,
    /// Only these record sizes (comma separated).
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1024])]
    record_bytes: Vec<usize>,
    /// Only these durabilities: os, always.
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("os"), String::from("always")])]
    durability: Vec<String>,
    /// Storage layouts to measure (comma separated): per-partition (today's engine: one O_DIRECT
    /// file per partition), journal (shard journal + partition files written later), interleaved
    /// (one shard log + in-memory per-partition index). The last two are prototypes
    /// (shard_stream.rs), not the engine.
    #[arg(long, value_delimiter = ',', default_values_t = [String::from("per-partition")])]
    layout: Vec<String>,
    /// Journal layout: a partition's buffered bytes go to its file in pieces of this size.
    #[arg(long, default_value_t = 256 << 10)]
    chunk_bytes: usize,
    /// Shard-stream layouts: commits (O_DIRECT writes of the stream) in flight at once.
    #[arg(long, default_value_t = 2)]
    commits_in_flight: u64,
    /// Ack-latency mode: append at this rate (MB/s) instead of as fast as the window allows, and
    /// report p50/p99 of append -> durable (no raw slices).
    #[arg(long)]
    ack_rate_mb: Option<f64>,
    /// Only measure small O_DIRECT writes + fdatasync into fallocate'd (unwritten) extents against
    /// already-written (zeroed) ones, and report their latencies.
    #[arg(long)]
    extents: bool,
    /// Size of one write in the --extents test.
    #[arg(long, default_value_t = 16 << 10)]
    extent_write_bytes: usize,
    /// Write the results as a JSON list to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize, Debug, Clone)]
struct CaseResult {
    layout: String,
    partitions: usize,
    record_bytes: usize,
    durability: String,
    batch_bytes: usize,
    /// Seconds of engine appends measured (raw writes got as long, interleaved).
    seconds: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
    /// None with --ack-rate-mb (no raw slices then).
    raw_mb_per_s: Option<f64>,
    /// mb_per_s / raw_mb_per_s
    fraction_of_raw: Option<f64>,
    /// CPU time of the executor thread during the appends / their wall time (1.0 = one core).
    cpu_busy: f64,
    /// Tail-cache read-back rate (1-partition cases only): refcounted chunks handed out, no copy.
    read_mb_per_s: Option<f64>,
    /// The same with one memcpy of every byte (what a socket write costs at least).
    read_copy_mb_per_s: Option<f64>,
    /// Shard-stream layouts: bytes given to the disk / bytes appended (frames, padding, second write).
    write_amplification: Option<f64>,
    /// Shard-stream layouts: group commits per second.
    commits_per_s: Option<f64>,
    /// Shard-stream layouts: one partition read back from disk (O_DIRECT, one read at a time).
    read_partition_mb_per_s: Option<f64>,
    /// The same with 8 reads in flight (interleaved: extents merged into 128 KiB windows).
    read_partition_depth8_mb_per_s: Option<f64>,
    /// --ack-rate-mb: append -> durable latency.
    ack_p50_us: Option<u64>,
    ack_p99_us: Option<u64>,
}

const MB: f64 = 1e6;
/// The raw baseline writes exactly as large as the engine's largest write.
const RAW_WRITE_BYTES: usize = weir_engine::limits::WRITE_BYTES_MAX;
const SLICE: Duration = Duration::from_millis(500);
const SLICE_BYTES_MAX: u64 = 512 << 20;

pub fn run(args: EngineArgs) -> Result<()> {
    weir_engine::io::check_memlock(1, weir_engine::io::IO_MEMORY_BYTES)
        .map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let handle = LocalExecutorBuilder::new(Placement::Fixed(args.cpu))
        .io_memory(weir_engine::io::IO_MEMORY_BYTES)
        .ring_depth(args.ring_depth)
        .name("weir-bench-engine")
        .spawn(move || async move {
            if args.extents {
                crate::extent_bench::run(&args.dir, args.extent_write_bytes, args.seconds).await
            } else {
                run_cases(args).await
            }
        })
        .map_err(std::io::Error::from)
        .context("starting the executor")?;
    handle
        .join()
        .map_err(|e| anyhow::anyhow!("executor failed: {e:?}"))??;
    Ok(())
}

fn parse_layout(name: &str) -> Result<Option<Design>> {
    match name {
        "per-partition" => Ok(None),
        "journal" => Ok(Some(Design::Journal)),
        "interleaved" => Ok(Some(Design::Interleaved)),
        other => anyhow::bail!("unknown layout {other} (per-partition, journal, interleaved)"),
    }
}

async fn run_cases(args: EngineArgs) -> Result<()> {
    weir_engine::io::prepare_data_dir(&args.dir)
        .await
        .context("preparing the data dir")?;
    println!(
        "raw = sequential 4 MiB O_DIRECT writes, one in flight (+ fdatasync each for always), \
         interleaved with the case in {} ms slices; WA = disk bytes / appended bytes",
        SLICE.as_millis()
    );
    println!(
        "{:>13} {:>6} {:>6} {:>6} {:>10} {:>8} {:>8} {:>6} {:>4} {:>5} {:>8} {:>9} {:>8} {:>8}",
        "layout",
        "parts",
        "record",
        "dur",
        "msgs/s",
        "MB/s",
        "raw MB/s",
        "of raw",
        "cpu",
        "WA",
        "commit/s",
        "read1 MB/s",
        "ack p50",
        "ack p99"
    );
    let mut results = Vec::new();
    for durability in &args.durability {
        let policy = match durability.as_str() {
            "os" => Durability::Os,
            "always" => Durability::Always,
            other => anyhow::bail!("unknown durability {other} (os, always)"),
        };
        for layout in &args.layout {
            let design = parse_layout(layout)?;
            for &partitions in &args.partitions {
                for &record_bytes in &args.record_bytes {
                    let case = Case {
                        layout: design,
                        partitions,
                        record_bytes,
                        durability: policy,
                        batch_bytes: args.batch_bytes,
                        window_bytes: args.window_bytes,
                    };
                    let result = run_one(&case, &args, durability, layout).await?;
                    print_row(&result);
                    results.push(result);
                }
            }
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run_one(
    case: &Case,
    args: &EngineArgs,
    durability: &str,
    layout: &str,
) -> Result<CaseResult> {
    let dir = args.dir.join("case");
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = run_case(&dir, &args.dir.join("raw"), case, args).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(args.dir.join("raw"));
    Ok(outcome.result(case, durability, layout))
}

fn print_row(result: &CaseResult) {
    let optional = |value: Option<f64>, digits: usize| {
        value.map_or(String::from("-"), |v| format!("{v:.digits$}"))
    };
    let micros = |value: Option<u64>| value.map_or(String::from("-"), |v| format!("{v}us"));
    println!(
        "{:>13} {:>6} {:>6} {:>6} {:>10.0} {:>8.0} {:>8} {:>6} {:>3.0}% {:>5} {:>8} {:>9} {:>8} {:>8}",
        result.layout,
        result.partitions,
        result.record_bytes,
        result.durability,
        result.msgs_per_s,
        result.mb_per_s,
        optional(result.raw_mb_per_s, 0),
        optional(result.fraction_of_raw.map(|f| f * 100.0), 0) + "%",
        result.cpu_busy * 100.0,
        optional(result.write_amplification, 2),
        optional(result.commits_per_s, 0),
        optional(result.read_partition_mb_per_s, 0),
        micros(result.ack_p50_us),
        micros(result.ack_p99_us),
    );
    if let (Some(depth8), "interleaved") = (result.read_partition_depth8_mb_per_s, &*result.layout)
    {
        println!(
            "{:>13} partition 0 read back, extents merged in 128 KiB windows, 8 reads in flight: {depth8:.0} MB/s",
            ""
        );
    }
    if let (Some(read), Some(copy)) = (result.read_mb_per_s, result.read_copy_mb_per_s) {
        println!(
            "{:>13} tail-cache read-back: {read:.0} MB/s, with one copy {copy:.0} MB/s",
            ""
        );
    }
}

struct Case {
    layout: Option<Design>,
    partitions: usize,
    record_bytes: usize,
    durability: Durability,
    batch_bytes: usize,
    window_bytes: usize,
}

#[derive(Default)]
struct Outcome {
    bytes: u64,
    records: u64,
    seconds: f64,
    cpu_seconds: f64,
    raw_bytes: u64,
    raw_seconds: f64,
    /// (zero-copy, with one copy) bytes per second
    read_bytes_per_s: Option<(f64, f64)>,
    stream: Option<StreamStats>,
    read_partition_bytes_per_s: Option<(f64, f64)>,
    ack_us: Option<(u64, u64)>,
}

impl Outcome {
    fn result(&self, case: &Case, durability: &str, layout: &str) -> CaseResult {
        let mb_per_s = self.bytes as f64 / self.seconds / MB;
        let raw_mb_per_s =
            (self.raw_seconds > 0.0).then(|| self.raw_bytes as f64 / self.raw_seconds / MB);
        let stream = self.stream.filter(|s| s.appended_bytes > 0);
        CaseResult {
            layout: layout.into(),
            partitions: case.partitions,
            record_bytes: case.record_bytes,
            durability: durability.into(),
            batch_bytes: case.batch_bytes,
            seconds: self.seconds,
            msgs_per_s: self.records as f64 / self.seconds,
            mb_per_s,
            raw_mb_per_s,
            fraction_of_raw: raw_mb_per_s.map(|raw| mb_per_s / raw),
            cpu_busy: self.cpu_seconds / self.seconds,
            read_mb_per_s: self.read_bytes_per_s.map(|r| r.0 / MB),
            read_copy_mb_per_s: self.read_bytes_per_s.map(|r| r.1 / MB),
            write_amplification: stream
                .map(|s| (s.stream_bytes + s.partition_bytes) as f64 / s.appended_bytes as f64),
            commits_per_s: stream.map(|s| s.commits as f64 / self.seconds),
            read_partition_mb_per_s: self.read_partition_bytes_per_s.map(|r| r.0 / MB),
            read_partition_depth8_mb_per_s: self.read_partition_bytes_per_s.map(|r| r.1 / MB),
            ack_p50_us: self.ack_us.map(|a| a.0),
            ack_p99_us: self.ack_us.map(|a| a.1),
        }
    }
}

/// Where a case's appends go: today's engine (one `Log` per partition) or a shard-stream prototype.
enum Sink {
    Logs(Vec<Log>),
    Stream(Rc<ShardStream>),
}

impl Sink {
    async fn open(dir: &Path, case: &Case, args: &EngineArgs) -> Result<Sink> {
        let sync = case.durability == Durability::Always;
        if let Some(design) = case.layout {
            let stream = ShardStream::open(
                dir,
                design,
                sync,
                case.partitions,
                args.chunk_bytes,
                args.commits_in_flight.max(1),
            )
            .await?;
            return Ok(Sink::Stream(stream));
        }
        // Partitions keep a small tail cache when there are many (per-partition memory stays
        // small); a single partition keeps enough to measure read-back from memory.
        let tail_cache_bytes = if case.partitions == 1 {
            256 << 20
        } else {
            256 << 10
        };
        let config = LogConfig {
            durability: case.durability,
            tail_cache_bytes,
            retention_ms: -1,
            segment_bytes: args.segment_bytes,
            ..LogConfig::default()
        };
        let mut logs = Vec::with_capacity(case.partitions);
        for p in 0..case.partitions {
            let log = Log::open(&dir.join(format!("p-{p}")), config.clone()).await;
            logs.push(log.context("opening a partition")?);
        }
        Ok(Sink::Logs(logs))
    }

    fn partitions(&self, case: &Case) -> usize {
        match self {
            Sink::Logs(logs) => logs.len(),
            Sink::Stream(_) => case.partitions,
        }
    }

    /// Appends one batch to partition `p`; returns what `wait` needs.
    fn append(&self, p: usize, template: &bytes::BytesMut) -> Result<i64> {
        match self {
            Sink::Logs(logs) => Ok(logs[p]
                .append(template.clone())
                .context("append")?
                .last_offset),
            Sink::Stream(stream) => Ok(stream.append(p, template.clone().freeze()) as i64),
        }
    }

    async fn wait(&self, p: usize, ticket: i64) -> Result<()> {
        match self {
            Sink::Logs(logs) => logs[p]
                .wait_durable(ticket)
                .await
                .context("waiting for a write"),
            Sink::Stream(stream) => {
                stream.wait_durable(ticket as u64).await;
                Ok(())
            }
        }
    }

    /// Shard streams: waits for their background partition writes (their cost is the slice's).
    async fn quiesce(&self) {
        if let Sink::Stream(stream) = self {
            stream.quiesce().await;
        }
    }

    async fn close(&self) -> Result<()> {
        match self {
            Sink::Logs(logs) => {
                for log in logs {
                    log.close().await.context("closing")?;
                }
                Ok(())
            }
            Sink::Stream(stream) => stream.close().await,
        }
    }
}

/// Runs one case: alternating slices of appends and raw writes until the budget is spent (or, with
/// --ack-rate-mb, paced appends only).
async fn run_case(dir: &Path, raw_dir: &Path, case: &Case, args: &EngineArgs) -> Result<Outcome> {
    let records_per_batch = (case.batch_bytes / (case.record_bytes + 8)).max(1);
    let template = build_value_batch(
        &BatchSpec::default(),
        &vec![0x61; case.record_bytes],
        records_per_batch,
    );
    let sink = Rc::new(Sink::open(dir, case, args).await?);
    let mut outcome = Outcome::default();
    if let Some(rate) = args.ack_rate_mb {
        let load = Load {
            template: &template,
            records_per_batch,
            case,
        };
        paced_appends(&sink, &load, rate, args.seconds, &mut outcome).await?;
    } else {
        alternate_slices(
            &sink,
            raw_dir,
            &template,
            records_per_batch,
            case,
            args,
            &mut outcome,
        )
        .await?;
    }
    if let Sink::Stream(stream) = sink.as_ref() {
        outcome.stream = Some(stream.stats());
        if case.partitions > 1 {
            let budget = Duration::from_secs(2);
            let (bytes, seconds) = stream.read_partition(0, budget, 1).await?;
            // The journal's partition file is read in 1 MiB pieces either way.
            let (bytes8, seconds8) = if stream.design() == Design::Interleaved {
                stream.read_partition(0, budget, 8).await?
            } else {
                (bytes, seconds)
            };
            outcome.read_partition_bytes_per_s =
                Some((bytes as f64 / seconds, bytes8 as f64 / seconds8));
        }
    }
    if let (Sink::Logs(logs), 1, None) = (sink.as_ref(), case.partitions, args.ack_rate_mb) {
        outcome.read_bytes_per_s = Some((
            read_back(&logs[0], false).await?,
            read_back(&logs[0], true).await?,
        ));
    }
    sink.close().await?;
    Ok(outcome)
}

async fn alternate_slices(
    sink: &Sink,
    raw_dir: &Path,
    template: &bytes::BytesMut,
    records_per_batch: usize,
    case: &Case,
    args: &EngineArgs,
    outcome: &mut Outcome,
) -> Result<()> {
    let mut raw = RawWriter::open(raw_dir, case.durability == Durability::Always).await?;
    let mut next = 0usize;
    let load = Load {
        template,
        records_per_batch,
        case,
    };
    loop {
        let done = match args.bytes {
            Some(limit) => outcome.bytes >= limit,
            None => outcome.seconds >= args.seconds,
        };
        if done {
            break;
        }
        let slice_bytes = args.bytes.map(|b| (b - outcome.bytes).min(SLICE_BYTES_MAX));
        append_slice(sink, &load, slice_bytes, &mut next, outcome).await?;
        let (bytes, seconds) = raw.write_slice(slice_bytes).await?;
        outcome.raw_bytes += bytes;
        outcome.raw_seconds += seconds;
    }
    raw.close().await
}

struct Load<'a> {
    template: &'a bytes::BytesMut,
    records_per_batch: usize,
    case: &'a Case,
}

/// Appends round-robin for one slice, keeping `window_bytes` unacknowledged, then drains.
async fn append_slice(
    sink: &Sink,
    load: &Load<'_>,
    slice_bytes: Option<u64>,
    next: &mut usize,
    outcome: &mut Outcome,
) -> Result<()> {
    let mut outstanding: VecDeque<(usize, i64, usize)> = VecDeque::new();
    let mut outstanding_bytes = 0usize;
    let mut bytes = 0u64;
    let batch_len = load.template.len();
    let partitions = sink.partitions(load.case);
    let started = Instant::now();
    let cpu_started = thread_cpu_seconds();
    let round = if partitions == 1 {
        (1 << 20) / batch_len + 1
    } else {
        partitions
    };
    loop {
        let done = match slice_bytes {
            Some(limit) => bytes >= limit,
            None => started.elapsed() >= SLICE,
        };
        if done {
            break;
        }
        for _ in 0..round {
            let p = *next % partitions;
            *next += 1;
            let ticket = sink.append(p, load.template)?;
            outstanding.push_back((p, ticket, batch_len));
            outstanding_bytes += batch_len;
            bytes += batch_len as u64;
        }
        while outstanding_bytes > load.case.window_bytes {
            let (p, ticket, size) = outstanding.pop_front().expect("bytes imply entries");
            sink.wait(p, ticket).await?;
            outstanding_bytes -= size;
        }
        // Let the executor reach its reactor: glommio submits queued writes (SQEs) only when the
        // task queues run dry, as they do in the server when connection tasks await their sockets.
        // (A 1 ns sleep does not park: glommio completes an expired timer without polling.)
        glommio::timer::sleep(Duration::from_micros(10)).await;
    }
    while let Some((p, ticket, _)) = outstanding.pop_front() {
        sink.wait(p, ticket).await?;
    }
    sink.quiesce().await;
    outcome.bytes += bytes;
    outcome.records += bytes / batch_len as u64 * load.records_per_batch as u64;
    outcome.seconds += started.elapsed().as_secs_f64();
    outcome.cpu_seconds += thread_cpu_seconds() - cpu_started;
    Ok(())
}

/// Appends round-robin at `rate_mb` MB/s for `seconds`; every append gets a task that records
/// append -> durable into one histogram.
async fn paced_appends(
    sink: &Rc<Sink>,
    load: &Load<'_>,
    rate_mb: f64,
    seconds: f64,
    outcome: &mut Outcome,
) -> Result<()> {
    let histogram = Rc::new(RefCell::new(crate::stats::new_histogram()));
    let waiting = Rc::new(Cell::new(0usize));
    let batch_len = load.template.len() as u64;
    let partitions = sink.partitions(load.case);
    let started = Instant::now();
    let cpu_started = thread_cpu_seconds();
    let mut bytes = 0u64;
    let mut next = 0usize;
    while started.elapsed().as_secs_f64() < seconds {
        let due = (started.elapsed().as_secs_f64() * rate_mb * MB) as u64;
        while bytes < due {
            let p = next % partitions;
            next += 1;
            let appended_at = Instant::now();
            let ticket = sink.append(p, load.template)?;
            bytes += batch_len;
            let (sink, histogram, waiting) = (sink.clone(), histogram.clone(), waiting.clone());
            waiting.set(waiting.get() + 1);
            glommio::spawn_local(async move {
                if let Err(e) = sink.wait(p, ticket).await {
                    eprintln!("{e:#}");
                }
                let nanos = appended_at.elapsed().as_nanos() as u64;
                crate::stats::record(&mut histogram.borrow_mut(), nanos, 1);
                waiting.set(waiting.get() - 1);
            })
            .detach();
        }
        glommio::timer::sleep(Duration::from_micros(100)).await;
    }
    while waiting.get() > 0 {
        glommio::timer::sleep(Duration::from_micros(100)).await;
    }
    sink.quiesce().await;
    outcome.bytes += bytes;
    outcome.records += bytes / batch_len * load.records_per_batch as u64;
    outcome.seconds += started.elapsed().as_secs_f64();
    outcome.cpu_seconds += thread_cpu_seconds() - cpu_started;
    let histogram = histogram.borrow();
    outcome.ack_us = Some((
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
    ));
    Ok(())
}

/// Reads the tail cache from its oldest offset to the head, 1 MiB per read, repeatedly for ~1 s;
/// with `copy`, copies every returned byte once into a buffer.
async fn read_back(log: &Log, copy: bool) -> Result<f64> {
    let mut sink = vec![0u8; 2 << 20];
    let high = log.high_watermark();
    // The oldest offset still in the cache: step back while reads are served from memory.
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
                let delta = i32::from_be_bytes([slice[23], slice[24], slice[25], slice[26]]);
                last = weir_engine::batch::base_offset(slice) + delta as i64;
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

/// Sequential `WRITE_BYTES_MAX` O_DIRECT writes, one in flight, into a file pre-allocated in 32 MiB steps
/// (the pattern of one partition's writer); with `sync`, fdatasync after each write.
struct RawWriter {
    file: DmaFile,
    path: PathBuf,
    sync: bool,
    position: u64,
    allocated: u64,
}

impl RawWriter {
    async fn open(dir: &Path, sync: bool) -> Result<RawWriter> {
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
        Ok(RawWriter {
            file,
            path,
            sync,
            position: 0,
            allocated: 0,
        })
    }

    async fn write_slice(&mut self, slice_bytes: Option<u64>) -> Result<(u64, f64)> {
        let started = Instant::now();
        let from = self.position;
        loop {
            let done = match slice_bytes {
                Some(limit) => self.position - from >= limit,
                None => started.elapsed() >= SLICE,
            };
            if done {
                break;
            }
            if self.position >= 8 << 30 {
                // Keep the file bounded: start over (the blocks stay allocated).
                self.position = 0;
            }
            if self.position + RAW_WRITE_BYTES as u64 > self.allocated {
                self.allocated += weir_engine::limits::PREALLOCATE_STEP_BYTES;
                let reserved = self.file.pre_allocate(self.allocated, false).await;
                reserved
                    .map_err(std::io::Error::from)
                    .context("fallocate")?;
            }
            let mut buffer = self.file.alloc_dma_buffer(RAW_WRITE_BYTES);
            buffer.as_bytes_mut().fill(0x61);
            let written = self.file.write_at(buffer, self.position).await;
            written.map_err(std::io::Error::from).context("raw write")?;
            if self.sync {
                let synced = self.file.fdatasync().await;
                synced.map_err(std::io::Error::from).context("fdatasync")?;
            }
            self.position += RAW_WRITE_BYTES as u64;
        }
        let bytes = if self.position >= from {
            self.position - from
        } else {
            self.position
        };
        Ok((bytes, started.elapsed().as_secs_f64()))
    }

    async fn close(self) -> Result<()> {
        self.file
            .close()
            .await
            .map_err(std::io::Error::from)
            .context("close")?;
        std::fs::remove_file(&self.path)?;
        Ok(())
    }
}

/// User + system CPU seconds of the calling thread (from /proc/thread-self/stat; 0 if unreadable).
fn thread_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Linux reports these in USER_HZ, which is 100 on every supported architecture.
    (ticks(11) + ticks(12)) / 100.0
}
