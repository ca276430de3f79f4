//! Shared helpers of the engine's integration tests: a real glommio executor with the io memory
//! used in production, and batch builders.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use glommio::{LocalExecutorBuilder, Placement};
use weir_engine::batch::{build_batch, build_value_batch, BatchSpec, RecordSpec};
use weir_engine::{Appended, Durability, Log, LogConfig, ReadBatches};

/// Runs `f` on a fresh executor (512 KiB io memory) after preparing `dir` as a data directory.
pub fn run<F, R>(dir: &Path, f: impl FnOnce(PathBuf) -> F + Send + 'static) -> R
where
    F: Future<Output = R> + 'static,
    R: Send + 'static,
{
    let dir = dir.to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(weir_engine::io::IO_MEMORY_BYTES)
        .spawn(move || async move {
            weir_engine::io::prepare_data_dir(&dir).await.unwrap();
            f(dir.join("topic-0")).await
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Appends `batch` to `log` and keeps it in `sent` as the log stores it (with the base offset
/// the log assigned): what a reader must get back.
pub fn append_kept(log: &Log, mut batch: BytesMut, sent: &mut Vec<(i64, Vec<u8>)>) -> Appended {
    let appended = log.append(batch.clone()).unwrap();
    weir_engine::batch::set_base_offset(&mut batch, appended.base_offset);
    sent.push((appended.base_offset, batch.to_vec()));
    appended
}

/// A batch of `count` records whose values are `fill` repeated `value_bytes` times.
pub fn values(count: usize, value_bytes: usize, fill: u8) -> BytesMut {
    build_value_batch(&BatchSpec::default(), &vec![fill; value_bytes], count)
}

pub fn timed(count: usize, first_timestamp_ms: i64) -> BytesMut {
    let spec = BatchSpec {
        first_timestamp_ms,
        ..BatchSpec::default()
    };
    let records: Vec<RecordSpec> = (0..count)
        .map(|i| RecordSpec {
            value: Some(b"t"),
            timestamp_delta_ms: i as i64,
            ..RecordSpec::default()
        })
        .collect();
    build_batch(&spec, &records)
}

pub fn idempotent(producer_id: i64, epoch: i16, first_sequence: i32, count: usize) -> BytesMut {
    let spec = BatchSpec {
        producer_id,
        producer_epoch: epoch,
        base_sequence: first_sequence,
        ..BatchSpec::default()
    };
    build_value_batch(&spec, b"idem", count)
}

pub fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

pub fn always() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        ..LogConfig::default()
    }
}

/// The bytes of a read, concatenated.
pub fn bytes_of(read: &ReadBatches) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in &read.chunks {
        out.extend_from_slice(chunk.as_slice());
    }
    assert_eq!(out.len(), read.total_bytes);
    out
}

/// Splits concatenated batches into (base offset, bytes), checking every CRC.
pub fn split_batches(mut bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let size = weir_engine::batch::claimed_size(bytes).expect("whole batches");
        weir_engine::batch::validate(&bytes[..size]).expect("valid batch");
        out.push((
            weir_engine::batch::base_offset(bytes),
            bytes[..size].to_vec(),
        ));
        bytes = &bytes[size..];
    }
    out
}

/// Every batch from `offset` to the high watermark, reading in steps of `max_bytes`.
pub async fn read_all(log: &Log, mut offset: i64, max_bytes: usize) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    while offset < log.high_watermark() {
        let read = log.read(offset, max_bytes).await.unwrap();
        let batches = split_batches(&bytes_of(&read));
        assert!(
            !batches.is_empty(),
            "read at {offset} below the high watermark returned nothing"
        );
        let last = batches.last().unwrap();
        let info = weir_engine::batch::validate(&last.1).unwrap();
        offset = last.0 + info.last_offset_delta as i64 + 1;
        out.extend(batches);
    }
    out
}

/// Log segment files of a partition directory, sorted.
pub fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}
