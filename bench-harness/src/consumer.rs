//! A fetcher: one thread, one connection to one partition leader, reading the partitions of one
//! topic that one consumer of one consumer group was assigned on that leader.
//!
//! Consumers are assigned partitions by the harness (partition i of the run goes to consumer
//! i mod consumers in every group), not by the Kafka group protocol: the benchmark measures the
//! data path, and a static split keeps the count exact. Concurrency rule: a fetcher owns its
//! socket, buffers and offsets; it shares only the atomic counters in `Shared`.
//!
//! Every record is counted once by offset (a fetch may return a batch that starts before the
//! requested offset), its CRC is checked with its batch, and its end-to-end latency is read from
//! the send time in the first 8 bytes of its value.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, ensure, Context, Result};
use hdrhistogram::Histogram;

use crate::batch::{parse_batches, parse_records, value_send_time_ns};
use crate::stats::{self, CpuPlan, Shared};
use crate::wire::{self, FetchLimits, FetchPosition};

pub struct FetcherPlan {
    pub group: usize,
    pub name: String,
    pub address: String,
    pub topic: String,
    pub positions: Vec<FetchPosition>,
    pub fetch_version: i16,
    pub limits: FetchLimits,
    pub payload_bytes: u64,
    pub shared: Arc<Shared>,
    pub cpus: Arc<CpuPlan>,
    /// Set by the main thread when consumers must stop (all read, or drain timeout).
    pub stop: Arc<std::sync::atomic::AtomicBool>,
}

pub fn spawn(plan: FetcherPlan) -> Result<JoinHandle<Result<Histogram<u64>>>> {
    std::thread::Builder::new()
        .name(plan.name.clone())
        .spawn(move || {
            plan.cpus.pin();
            let shared = plan.shared.clone();
            let result = fetch_loop(plan);
            if let Err(error) = &result {
                shared.fail("consumer", error);
            }
            result
        })
        .context("spawning a fetcher thread")
}

/// True once the group has read everything the producers had acknowledged when they finished.
fn group_complete(shared: &Shared, group: usize) -> bool {
    shared.producers_done.load(Relaxed)
        && shared.consumed[group].messages.load(Relaxed)
            >= shared.produced.messages.load(Relaxed) * shared.copies_per_message
}

#[expect(
    clippy::too_many_lines,
    reason = "over 70 lines before the limit; split, then drop this"
)]
fn fetch_loop(mut plan: FetcherPlan) -> Result<Histogram<u64>> {
    let shared = plan.shared.clone();
    let mut stream = crate::admin::connect(&plan.address)?;
    let mut histogram = stats::new_histogram();
    let mut request = Vec::new();
    let mut frame_buf = Vec::new();
    let mut correlation_id = 0i32;
    let index_of: HashMap<i32, usize> = plan
        .positions
        .iter()
        .enumerate()
        .map(|(index, position)| (position.partition, index))
        .collect();
    loop {
        if shared.aborted() || plan.stop.load(Relaxed) || group_complete(&shared, plan.group) {
            return Ok(histogram);
        }
        correlation_id = correlation_id.wrapping_add(1);
        wire::encode_fetch(
            &mut request,
            plan.fetch_version,
            correlation_id,
            &plan.limits,
            &plan.topic,
            &plan.positions,
        );
        stream
            .write_all(&request)
            .with_context(|| format!("fetching from {}", plan.address))?;
        let frame = wire::read_frame(&mut stream, &mut frame_buf)
            .with_context(|| format!("fetching from {}", plan.address))?;
        let mut cursor = wire::Cursor::new(frame);
        let answered = cursor.i32()?;
        ensure!(
            answered == correlation_id,
            "fetch response correlation id {answered}, expected {correlation_id}"
        );
        let now_ns = shared.clock.now_ns();
        let mut tally = Tally::default();
        let positions = &mut plan.positions;
        let top_error = wire::parse_fetch_response(&frame[4..], plan.fetch_version, |_, data| {
            if data.error_code != 0 {
                bail!(
                    "fetch {}/{}: error code {}",
                    plan.topic,
                    data.partition,
                    data.error_code
                );
            }
            let Some(&index) = index_of.get(&data.partition) else {
                bail!(
                    "fetch answered partition {} it was not asked for",
                    data.partition
                );
            };
            let position = &mut positions[index];
            consume_records(
                data.records,
                position,
                now_ns,
                &shared,
                &mut histogram,
                &mut tally,
            )
        })?;
        ensure!(
            top_error == 0,
            "fetch from {}: error code {top_error}",
            plan.address
        );
        if tally.messages > 0 {
            let flow = &shared.consumed[plan.group];
            flow.add(tally.messages, tally.messages * plan.payload_bytes);
            if tally.latency_samples > 0 {
                flow.latency_sum_us.fetch_add(tally.latency_sum_us, Relaxed);
                flow.latency_samples
                    .fetch_add(tally.latency_samples, Relaxed);
                flow.latency_max_us.fetch_max(tally.latency_max_us, Relaxed);
            }
            shared.consume_end_ns[plan.group].fetch_max(now_ns, Relaxed);
        }
    }
}

#[derive(Default)]
struct Tally {
    messages: u64,
    latency_sum_us: u64,
    latency_samples: u64,
    latency_max_us: u64,
}

/// Counts the records of one partition's fetched bytes at or past `position`, advances it, and
/// records each record's end-to-end latency.
fn consume_records(
    records: &[u8],
    position: &mut FetchPosition,
    now_ns: u64,
    shared: &Shared,
    histogram: &mut Histogram<u64>,
    tally: &mut Tally,
) -> Result<()> {
    parse_batches(records, |batch| {
        let next_offset = batch.next_offset();
        if next_offset <= position.offset {
            return Ok(());
        }
        if batch.is_control() {
            position.offset = next_offset;
            return Ok(());
        }
        ensure!(
            batch.compression() == 0,
            "batch at offset {} is compressed; weir-bench never compresses",
            batch.base_offset
        );
        let mut result = Ok(());
        parse_records(batch.records, batch.record_count, |record| {
            let offset = batch.base_offset + i64::from(record.offset_delta);
            if offset < position.offset {
                return;
            }
            tally.messages += 1;
            match record.value.and_then(value_send_time_ns) {
                Some(send_ns) if send_ns <= now_ns => {
                    let latency_ns = now_ns - send_ns;
                    if send_ns >= shared.measure_from_ns {
                        stats::record(histogram, latency_ns, 1);
                    }
                    let micros = latency_ns / 1000;
                    tally.latency_sum_us += micros;
                    tally.latency_samples += 1;
                    tally.latency_max_us = tally.latency_max_us.max(micros);
                }
                _ => {
                    result = Err(anyhow::anyhow!(
                        "record at offset {offset} carries no weir-bench send time: \
                         is something else producing to this topic?"
                    ));
                }
            }
        })?;
        result?;
        position.offset = next_offset;
        Ok(())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::BatchBuilder;
    use crate::stats::Clock;

    fn batch_at(base_offset: i64, count: u32, send_ns: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut builder = BatchBuilder::begin(&mut buf, 0);
        for _ in 0..count {
            builder.append(&mut buf, None, send_ns, &[0; 4]);
        }
        builder.finish(&mut buf);
        buf[..8].copy_from_slice(&base_offset.to_be_bytes());
        // baseOffset is outside the CRC, as a broker rewrites it.
        buf
    }

    #[test]
    fn records_are_counted_once_by_offset() {
        let shared = Shared::new(Clock::new(), 0, 1);
        let mut histogram = stats::new_histogram();
        let mut tally = Tally::default();
        let mut position = FetchPosition {
            partition: 0,
            offset: 12,
        };
        let mut fetched = batch_at(10, 5, 1_000); // offsets 10..=14: 12, 13, 14 are new
        fetched.extend(batch_at(15, 3, 2_000)); // 15..=17
        let partial = batch_at(18, 2, 3_000);
        fetched.extend_from_slice(&partial[..partial.len() - 1]); // cut off: not counted
        consume_records(
            &fetched,
            &mut position,
            10_000,
            &shared,
            &mut histogram,
            &mut tally,
        )
        .unwrap();
        assert_eq!(tally.messages, 6);
        assert_eq!(position.offset, 18);
        assert_eq!(histogram.len(), 6);

        // The same bytes again count nothing.
        let mut again = Tally::default();
        consume_records(
            &fetched,
            &mut position,
            10_000,
            &shared,
            &mut histogram,
            &mut again,
        )
        .unwrap();
        assert_eq!(again.messages, 0);
    }

    #[test]
    fn foreign_records_and_corruption_are_errors() {
        let shared = Shared::new(Clock::new(), 0, 1);
        let mut histogram = stats::new_histogram();
        let mut position = FetchPosition {
            partition: 0,
            offset: 0,
        };
        let mut buf = Vec::new();
        let mut builder = BatchBuilder::begin(&mut buf, 0);
        builder.append(&mut buf, None, 1, &[]);
        builder.finish(&mut buf);
        let mut corrupted = buf.clone();
        let last = corrupted.len() - 2;
        corrupted[last] ^= 0xff;
        let result = consume_records(
            &corrupted,
            &mut position,
            10,
            &shared,
            &mut histogram,
            &mut Tally::default(),
        );
        assert!(result.is_err());
        // A send time in the future of the reader's clock is not ours.
        let result = consume_records(
            &buf,
            &mut position,
            0,
            &shared,
            &mut histogram,
            &mut Tally::default(),
        );
        assert!(result.is_err());
    }
}
