//! Model test: random sequences of append / read / roll / retention / close-and-reopen / drop-and-
//! reopen / reopen over a damaged recovery checkpoint on a real directory, compared with an
//! in-memory list of batches. A reopen after a clean close scans nothing (the checkpoint covers
//! every byte); a damaged checkpoint costs a full scan, never data.

mod common;

use common::*;
use proptest::prelude::*;
use weir_engine::{Log, LogConfig};

#[derive(Clone, Debug)]
enum Op {
    Append {
        count: usize,
        value_bytes: usize,
    },
    Read {
        pick: u64,
        max_bytes: usize,
    },
    Roll,
    Retention {
        keep_bytes: i64,
    },
    Reopen,
    DropAndReopen,
    /// Drop (as a kill) or close, then cut the checkpoint at `cut` bytes or flip its byte `cut`.
    DamageCheckpointAndReopen {
        close: bool,
        flip: bool,
        cut: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..5, 0usize..700).prop_map(|(count, value_bytes)| Op::Append { count, value_bytes }),
        4 => (any::<u64>(), 1usize..4000).prop_map(|(pick, max_bytes)| Op::Read { pick, max_bytes }),
        1 => Just(Op::Roll),
        1 => (0i64..10_000).prop_map(|keep_bytes| Op::Retention { keep_bytes }),
        1 => Just(Op::Reopen),
        1 => Just(Op::DropAndReopen),
        1 => (any::<bool>(), any::<bool>(), 0usize..200)
            .prop_map(|(close, flip, cut)| Op::DamageCheckpointAndReopen { close, flip, cut }),
    ]
}

fn config() -> LogConfig {
    // Records carry timestamp 0 (1970): time retention would delete every sealed segment.
    LogConfig {
        tail_cache_bytes: 3000,
        retention_ms: -1,
        // Progress checkpoints of the active segment every few batches, raced by crashes.
        checkpoint_interval_bytes: 1000,
        ..small_segments(3000)
    }
}

fn last_of(batch: &(i64, Vec<u8>)) -> i64 {
    batch.0
        + weir_engine::batch::validate(&batch.1)
            .unwrap()
            .last_offset_delta as i64
}

async fn check_case(dir: std::path::PathBuf, ops: Vec<Op>) {
    let mut log = Log::open(&dir, config()).await.unwrap();
    let mut model: Vec<(i64, Vec<u8>)> = Vec::new();
    let mut end = 0i64;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { count, value_bytes } => {
                let mut batch = values(count, value_bytes, step as u8);
                let appended = log.append(batch.clone()).unwrap();
                assert_eq!(appended.base_offset, end);
                weir_engine::batch::set_base_offset(&mut batch, end);
                model.push((end, batch.to_vec()));
                end = appended.last_offset + 1;
            }
            Op::Read { pick, max_bytes } => check_read(&log, &model, end, pick, max_bytes).await,
            Op::Roll => {
                log.set_config(LogConfig {
                    segment_ms: 0,
                    ..config()
                });
                let mut batch = values(1, 10, 0);
                log.append(batch.clone()).unwrap();
                weir_engine::batch::set_base_offset(&mut batch, end);
                model.push((end, batch.to_vec()));
                end += 1;
                log.set_config(config());
            }
            Op::Retention { keep_bytes } => {
                check_retention(&log, &mut model, end, keep_bytes).await
            }
            Op::Reopen => {
                log.close().await.unwrap();
                log = Log::open(&dir, config()).await.unwrap();
                assert_eq!(log.recovery_scanned_bytes(), 0, "step {step}");
            }
            Op::DamageCheckpointAndReopen { close, flip, cut } => {
                if close {
                    log.close().await.unwrap();
                } else if end > 0 {
                    log.wait_written(end - 1).await.unwrap();
                }
                drop(log);
                damage_checkpoint(&dir, flip, cut);
                log = Log::open(&dir, config()).await.unwrap();
            }
            Op::DropAndReopen => {
                if end > 0 {
                    log.wait_written(end - 1).await.unwrap();
                }
                drop(log);
                log = Log::open(&dir, config()).await.unwrap();
            }
        }
        assert_eq!(log.log_end_offset(), end, "step {step}");
    }
    if end > 0 {
        log.wait_written(end - 1).await.unwrap();
    }
    let start = log.log_start_offset();
    assert_eq!(read_all(&log, start, 5000).await, model);
    log.close().await.unwrap();
    let log = Log::open(&dir, config()).await.unwrap();
    assert_eq!(log.log_start_offset(), start);
    assert_eq!(read_all(&log, start, 5000).await, model);
    log.close().await.unwrap();
}

/// Flips byte `at` of the checkpoint, or cuts it to `at` bytes (both modulo its length).
fn damage_checkpoint(dir: &std::path::Path, flip: bool, at: usize) {
    let path = dir.join("checkpoint");
    let Ok(mut bytes) = std::fs::read(&path) else {
        return;
    };
    let at = at % bytes.len().max(1);
    if flip && !bytes.is_empty() {
        bytes[at] ^= 0x20;
    } else {
        bytes.truncate(at);
    }
    std::fs::write(&path, bytes).unwrap();
}

/// A read at an offset picked from `pick` returns the model's batches from the one holding it.
async fn check_read(log: &Log, model: &[(i64, Vec<u8>)], end: i64, pick: u64, max_bytes: usize) {
    if end > 0 {
        log.wait_written(end - 1).await.unwrap();
    }
    let start = log.log_start_offset();
    let offset = start + (pick % (end - start + 1) as u64) as i64;
    let read = log.read(offset, max_bytes).await.unwrap();
    let got = split_batches(&bytes_of(&read));
    let first = model.iter().position(|b| last_of(b) >= offset);
    match first {
        None => assert!(got.is_empty(), "read at the end returns nothing"),
        Some(first) => {
            assert!(!got.is_empty(), "at least one batch at {offset}");
            let mut total = 0;
            for (i, batch) in got.iter().enumerate() {
                assert_eq!(*batch, model[first + i], "batch {i} of read at {offset}");
                total += batch.1.len();
            }
            assert!(
                got.len() == 1 || total <= max_bytes,
                "{total} > {max_bytes}"
            );
        }
    }
}

/// Retention with `retention.bytes = keep_bytes` drops whole segments, oldest first; the model
/// drops the same batches.
async fn check_retention(log: &Log, model: &mut Vec<(i64, Vec<u8>)>, end: i64, keep_bytes: i64) {
    if end > 0 {
        log.wait_written(end - 1).await.unwrap();
    }
    let start_before = log.log_start_offset();
    log.set_config(LogConfig {
        retention_bytes: keep_bytes,
        ..config()
    });
    log.enforce_retention().await.unwrap();
    log.set_config(config());
    let start = log.log_start_offset();
    model.retain(|b| b.0 >= start);
    assert!(
        model.first().is_none_or(|b| b.0 == start),
        "log start {start} is a batch boundary"
    );
    let kept: usize = model.iter().map(|b| b.1.len()).sum();
    if start != start_before {
        // Whole segments of at most ~3000 bytes go, oldest first, only while the rest
        // still holds retention.bytes.
        assert!(
            kept as i64 + 6000 >= keep_bytes,
            "kept {kept} of retention {keep_bytes}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        run(tmp.path(), move |dir| check_case(dir, ops));
    }

    /// The same with a shard budget of one segment descriptor: every use of another segment
    /// (a read of a sealed one, the seal, retention) closes and reopens files under the log.
    #[test]
    fn log_matches_model_with_one_segment_descriptor(ops in proptest::collection::vec(op(), 1..40)) {
        let tmp = tempfile::tempdir().unwrap();
        run(tmp.path(), move |dir| async move {
            weir_engine::io::set_segment_files_budget(1);
            check_case(dir, ops).await
        });
    }
}
