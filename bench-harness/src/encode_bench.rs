//! `weir-bench encode`: the harness's raw batch-building rate on one thread (records encoded into
//! RecordBatch v2, CRC32C included), and the consumer's matching parse rate (CRC check, every
//! record walked, its end-to-end latency recorded), to show that the client is not the bottleneck.
//! Runs on the calling thread only; touches no network.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde::Serialize;

use crate::batch::{record_bytes, BatchBuilder, BATCH_HEADER_BYTES, VALUE_TIMESTAMP_BYTES};

#[derive(clap::Args, Debug)]
pub struct EncodeArgs {
    /// Bytes per record value.
    #[arg(long, default_value = "100")]
    pub message_bytes: usize,
    /// Maximum bytes of one batch.
    #[arg(long, default_value = "524288")]
    pub batch_bytes: usize,
    /// Carry an 8-byte key per record.
    #[arg(long)]
    pub keyed: bool,
    /// How long to encode, e.g. 3s.
    #[arg(long, default_value = "3s")]
    pub duration: String,
    /// CPU to pin the encoding thread to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct EncodeResults {
    pub message_bytes: usize,
    pub batch_bytes: usize,
    pub records_per_batch: u64,
    pub batches_per_s: f64,
    pub records_per_s: f64,
    pub gb_per_s: f64,
    /// The consumer side: records parsed and latency-recorded per second.
    pub decode_records_per_s: f64,
    pub decode_gb_per_s: f64,
}

/// Builds full batches for `duration`, reusing one buffer, as the producer does.
pub fn measure(
    message_bytes: usize,
    batch_bytes: usize,
    keyed: bool,
    duration: Duration,
) -> Result<EncodeResults> {
    ensure!(
        message_bytes >= VALUE_TIMESTAMP_BYTES,
        "--message-bytes must be at least 8"
    );
    let key_bytes = keyed.then_some(8);
    ensure!(
        batch_bytes >= BATCH_HEADER_BYTES + record_bytes(0, key_bytes, message_bytes),
        "--batch-bytes cannot hold one record"
    );
    let filler = vec![b'w'; message_bytes - VALUE_TIMESTAMP_BYTES];
    let mut buf = Vec::with_capacity(batch_bytes);
    let start = Instant::now();
    let (mut batches, mut records, mut bytes) = (0u64, 0u64, 0u64);
    let mut key = 0u64;
    while start.elapsed() < duration {
        buf.clear();
        let mut builder = BatchBuilder::begin(&mut buf, 0);
        loop {
            let next = record_bytes(builder.record_count(), key_bytes, message_bytes);
            if builder.batch_bytes(&buf) + next > batch_bytes {
                break;
            }
            key += 1;
            let key_buf = key.to_be_bytes();
            builder.append(&mut buf, key_bytes.map(|_| &key_buf[..]), key, &filler);
        }
        records += builder.record_count() as u64;
        builder.finish(&mut buf);
        std::hint::black_box(&buf);
        batches += 1;
        bytes += buf.len() as u64;
    }
    let seconds = start.elapsed().as_secs_f64();

    // Decode the last batch over and over, as a fetcher does with every fetched batch.
    let mut histogram = crate::stats::new_histogram();
    let decode_start = Instant::now();
    let (mut decoded_records, mut decoded_bytes) = (0u64, 0u64);
    while decode_start.elapsed() < duration / 2 {
        crate::batch::parse_batches(&buf, |batch| {
            crate::batch::parse_records(batch.records, batch.record_count, |record| {
                if let Some(send_ns) = record.value.and_then(crate::batch::value_send_time_ns) {
                    crate::stats::record(
                        &mut histogram,
                        send_ns.wrapping_mul(1000) & 0xffff_ffff,
                        1,
                    );
                }
                decoded_records += 1;
            })
        })?;
        decoded_bytes += buf.len() as u64;
    }
    let decode_seconds = decode_start.elapsed().as_secs_f64();
    Ok(EncodeResults {
        decode_records_per_s: decoded_records as f64 / decode_seconds,
        decode_gb_per_s: decoded_bytes as f64 / decode_seconds / 1e9,
        message_bytes,
        batch_bytes,
        records_per_batch: records / batches.max(1),
        batches_per_s: batches as f64 / seconds,
        records_per_s: records as f64 / seconds,
        gb_per_s: bytes as f64 / seconds / 1e9,
    })
}

pub fn run(args: EncodeArgs) -> Result<()> {
    if let Some(cpu) = args.cpu {
        crate::stats::pin_current_thread(cpu)?;
    }
    let duration = crate::workload::parse_duration(&args.duration)?;
    let results = measure(args.message_bytes, args.batch_bytes, args.keyed, duration)?;
    println!(
        "encode: {} B records, {} B batches ({} records each), keyed={}: {:.0} batches/s, {} records/s, {:.2} GB/s (CRC32C included); \
         decode: {} records/s, {:.2} GB/s (CRC check, latency recorded)",
        results.message_bytes,
        results.batch_bytes,
        results.records_per_batch,
        args.keyed,
        results.batches_per_s,
        crate::report::human_rate(results.records_per_s),
        results.gb_per_s,
        crate::report::human_rate(results.decode_records_per_s),
        results.decode_gb_per_s
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}
