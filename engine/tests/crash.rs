//! Crash and corruption outcomes on real files: a torn active tail is truncated, garbage after the
//! tail is dropped, a flipped byte in sealed data stops the open (or is truncated with `repair`),
//! a lost index is rebuilt, and nothing reported durable under `Always` is lost by a kill.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use weir_engine::{Log, LogConfig, LogError};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Writes `count` batches of varied sizes and closes; returns the batches as stored.
fn fill(root: &Path, config: LogConfig, count: usize) -> Vec<(i64, Vec<u8>)> {
    run(root, move |dir| async move {
        let log = Log::open(&dir, config).await.unwrap();
        for i in 0..count {
            log.append(values(1 + i % 4, 20 + (i * 37) % 400, i as u8 + 1))
                .unwrap();
        }
        log.close().await.unwrap();
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        let all = read_all(&log, 0, 1 << 20).await;
        log.close().await.unwrap();
        all
    })
}

fn last_offset(batch: &(i64, Vec<u8>)) -> i64 {
    batch.0
        + weir_engine::batch::validate(&batch.1)
            .unwrap()
            .last_offset_delta as i64
}

#[test]
fn kill_without_close_keeps_every_durable_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let durable = run(tmp.path(), |dir| async move {
        let log = Log::open(
            &dir,
            LogConfig {
                segment_bytes: 16 << 10,
                ..always()
            },
        )
        .await
        .unwrap();
        let mut last = 0;
        for i in 0..80 {
            last = log
                .append(values(2, 100 + i * 3, i as u8))
                .unwrap()
                .last_offset;
            if i % 7 == 0 {
                log.wait_durable(last).await.unwrap();
            }
        }
        log.wait_durable(last).await.unwrap();
        let all = read_all(&log, 0, 1 << 20).await;
        // No close: the executor ends as a killed process would (files keep their
        // pre-allocated zeros, indexes of the active segment are not saved).
        all
    });
    let tmp_path = tmp.path().to_path_buf();
    run(&tmp_path, move |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert_eq!(log.high_watermark(), 160);
        assert_eq!(read_all(&log, 0, 1 << 20).await, durable);
        assert_eq!(log.append(values(1, 1, 0)).unwrap().base_offset, 160);
        log.close().await.unwrap();
    });
}

#[test]
fn cut_active_segment_at_random_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let batches = fill(tmp.path(), LogConfig::default(), 40);
    let segment = tmp.path().join("topic-0").join("00000000000000000000.log");
    let file_bytes = std::fs::metadata(&segment).unwrap().len();
    let mut ends = Vec::new();
    let mut end = 0u64;
    for batch in &batches {
        end += batch.1.len() as u64;
        ends.push(end);
    }
    assert_eq!(end, file_bytes);
    // Every batch boundary ±1 and pseudo-random positions.
    let mut cuts: Vec<u64> = vec![0, 1, 11, 12, 61, file_bytes - 1, file_bytes];
    cuts.extend(ends.iter().take(5).flat_map(|e| [e - 1, *e, e + 1]));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        cuts.push(seed % file_bytes);
    }
    for (i, cut) in cuts.into_iter().enumerate() {
        let root = tmp.path().join(format!("cut-{i}"));
        copy_dir(&tmp.path().join("topic-0"), &root.join("topic-0"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("topic-0/00000000000000000000.log"))
            .unwrap();
        file.set_len(cut).unwrap();
        let kept: Vec<(i64, Vec<u8>)> = batches
            .iter()
            .zip(&ends)
            .filter(|(_, e)| **e <= cut)
            .map(|(b, _)| b.clone())
            .collect();
        let next = kept.last().map_or(0, |b| last_offset(b) + 1);
        run(&root, move |dir| async move {
            let log = Log::open(&dir, LogConfig::default()).await.unwrap();
            assert_eq!(log.high_watermark(), next, "cut at {cut}");
            assert_eq!(read_all(&log, 0, 1 << 20).await, kept);
            assert_eq!(log.append(values(1, 5, 9)).unwrap().base_offset, next);
            log.close().await.unwrap();
            let log = Log::open(&dir, LogConfig::default()).await.unwrap();
            assert_eq!(
                log.high_watermark(),
                next + 1,
                "cut at {cut}, after a new append"
            );
            log.close().await.unwrap();
        });
    }
}

#[test]
fn garbage_after_the_tail_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let batches = fill(tmp.path(), LogConfig::default(), 25);
    let segment = tmp.path().join("topic-0").join("00000000000000000000.log");
    let data_bytes = std::fs::metadata(&segment).unwrap().len();
    for (i, garbage) in [
        vec![0xffu8; 3],
        vec![0x42; 5000],
        (0..700u32).map(|i| (i * 31 + 7) as u8).collect::<Vec<_>>(),
        {
            // a plausible header: a length that fits, but a wrong CRC
            let mut fake = batches[0].1.clone();
            fake[40] ^= 1;
            fake
        },
    ]
    .into_iter()
    .enumerate()
    {
        let root = tmp.path().join(format!("garbage-{i}"));
        copy_dir(&tmp.path().join("topic-0"), &root.join("topic-0"));
        let path = root.join("topic-0/00000000000000000000.log");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&garbage);
        std::fs::write(&path, &bytes).unwrap();
        let expected = batches.clone();
        run(&root, move |dir| async move {
            let log = Log::open(&dir, LogConfig::default()).await.unwrap();
            assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
            log.close().await.unwrap();
        });
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            data_bytes,
            "garbage case {i}"
        );
    }
}

fn sealed_segments(root: &Path) -> Vec<PathBuf> {
    let logs = files(&root.join("topic-0"), ".log");
    logs[..logs.len() - 1].to_vec()
}

/// The clean close wrote a checkpoint covering every segment, and data a checkpoint covers is not
/// rescanned at open. A flipped byte in the checkpoint makes it unusable: the open falls back to
/// scanning every segment, which finds a flipped byte in the sealed data.
fn flip_checkpoint_byte(dir: &Path) {
    let checkpoint = dir.join("checkpoint");
    let mut torn = std::fs::read(&checkpoint).unwrap();
    torn[10] ^= 0x01;
    std::fs::write(&checkpoint, &torn).unwrap();
}

#[test]
fn flipped_byte_in_sealed_segment_refuses_to_open_then_repairs() {
    let tmp = tempfile::tempdir().unwrap();
    let batches = fill(tmp.path(), small_segments(2048), 60);
    let sealed = sealed_segments(tmp.path());
    assert!(sealed.len() >= 4);
    let victim = sealed[1].clone();
    flip_checkpoint_byte(&tmp.path().join("topic-0"));
    let mut bytes = std::fs::read(&victim).unwrap();
    let flip_at = bytes.len() / 2;
    bytes[flip_at] ^= 0x10;
    std::fs::write(&victim, &bytes).unwrap();
    let victim_base: i64 = victim
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse()
        .unwrap();
    let error = run(tmp.path(), |dir| async move {
        Log::open(&dir, LogConfig::default())
            .await
            .err()
            .map(|e| e.to_string())
    });
    let message = error.expect("a flipped byte in sealed data must stop the open");
    assert!(message.contains(&victim.display().to_string()), "{message}");
    assert!(message.contains("crc"), "{message}");
    let typed = run(tmp.path(), |dir| async move {
        matches!(
            Log::open(&dir, LogConfig::default()).await,
            Err(LogError::Corrupt { .. })
        )
    });
    assert!(typed);
    // Repair keeps every batch before the damaged one and continues from there.
    let mut position = 0usize;
    let mut kept = Vec::new();
    for batch in batches.iter().filter(|b| b.0 >= victim_base) {
        if position + batch.1.len() > flip_at {
            break;
        }
        position += batch.1.len();
        kept.push(batch.clone());
    }
    let expected: Vec<(i64, Vec<u8>)> = batches
        .iter()
        .filter(|b| b.0 < victim_base)
        .cloned()
        .chain(kept)
        .collect();
    let next = expected.last().map_or(0, |b| last_offset(b) + 1);
    run(tmp.path(), move |dir| async move {
        let log = Log::open(
            &dir,
            LogConfig {
                repair: true,
                ..LogConfig::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(log.high_watermark(), next);
        assert_eq!(read_all(&log, 0, 1 << 20).await, expected);
        assert_eq!(log.append(values(1, 5, 9)).unwrap().base_offset, next);
        log.close().await.unwrap();
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert_eq!(log.high_watermark(), next + 1);
        log.close().await.unwrap();
    });
    assert!(
        files(&tmp.path().join("topic-0"), ".log").last().unwrap() <= &victim,
        "later segments were deleted"
    );
}

#[test]
fn deleted_or_damaged_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let batches = fill(tmp.path(), small_segments(4096), 60);
    let sealed = sealed_segments(tmp.path());
    let index = sealed[0].with_extension("index");
    let time_index = sealed[1].with_extension("timeindex");
    // The indexes a full scan with the default config builds (fill wrote them with its own
    // interval, and its reopen took them from the checkpoint): without a checkpoint, an open
    // rebuilds every sealed segment's indexes.
    std::fs::remove_file(tmp.path().join("topic-0").join("checkpoint")).unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        log.close().await.unwrap();
    });
    let original_index = std::fs::read(&index).unwrap();
    let original_time_index = std::fs::read(&time_index).unwrap();
    assert!(!original_index.is_empty());
    std::fs::remove_file(&index).unwrap();
    std::fs::write(&time_index, b"garbage!").unwrap();
    run(tmp.path(), move |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert_eq!(read_all(&log, 0, 1000).await, batches);
        for batch in &batches {
            let read = log.read(batch.0, 1).await.unwrap();
            assert_eq!(split_batches(&bytes_of(&read))[0], *batch);
        }
        log.close().await.unwrap();
    });
    assert_eq!(std::fs::read(&index).unwrap(), original_index);
    assert_eq!(std::fs::read(&time_index).unwrap(), original_time_index);
}

/// Bytes of the segment files in `dir` and the bytes its checkpoint covers (storage-format.md:
/// after the 8-byte magic, a u32 count, then 32-byte entries whose second field is the size).
fn file_and_covered_bytes(dir: &Path) -> (u64, u64) {
    let total = segment_file_bytes(dir);
    let checkpoint = std::fs::read(dir.join("checkpoint")).unwrap();
    let count = u32::from_be_bytes(checkpoint[8..12].try_into().unwrap()) as usize;
    let first_base = files(dir, ".log")[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .parse::<i64>()
        .unwrap();
    let covered = (0..count)
        .map(|i| &checkpoint[12 + 32 * i..12 + 32 * (i + 1)])
        .filter(|entry| i64::from_be_bytes(entry[0..8].try_into().unwrap()) >= first_base)
        .map(|entry| u64::from_be_bytes(entry[8..16].try_into().unwrap()))
        .sum();
    (total, covered)
}

#[test]
fn a_clean_restart_scans_nothing_and_keeps_offsets_and_producer_state() {
    let tmp = tempfile::tempdir().unwrap();
    let last = run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, small_segments(4096)).await.unwrap();
        for i in 0..40 {
            log.append(values(1 + i % 3, 50 + i * 7, i as u8)).unwrap();
            log.append(idempotent(77, 2, 3 * i as i32, 3)).unwrap();
        }
        let end = log.log_end_offset();
        log.close().await.unwrap();
        end
    });
    let dir = tmp.path().join("topic-0");
    let (total, covered) = file_and_covered_bytes(&dir);
    assert_eq!(total, covered, "a clean close covers every byte");
    run(tmp.path(), move |dir| async move {
        let log = Log::open(&dir, small_segments(4096)).await.unwrap();
        assert_eq!(log.recovery_scanned_bytes(), 0);
        assert_eq!(log.log_end_offset(), last);
        // The producer's last batch, resent: recognised from the checkpointed state.
        let resent = log.append(idempotent(77, 2, 3 * 39, 3)).unwrap();
        assert!(resent.duplicate, "{resent:?}");
        assert_eq!(resent.last_offset, last - 1);
        let out_of_order = log.append(idempotent(77, 2, 3 * 41, 3));
        assert!(out_of_order.is_err(), "a gap in sequences is refused");
        let next = log.append(idempotent(77, 2, 3 * 40, 3)).unwrap();
        assert_eq!((next.base_offset, next.duplicate), (last, false));
        log.close().await.unwrap();
    });
    // A torn checkpoint is ignored: the next open scans every byte, and finds the same log.
    let checkpoint = dir.join("checkpoint");
    let bytes = std::fs::read(&checkpoint).unwrap();
    std::fs::write(&checkpoint, &bytes[..bytes.len() / 2]).unwrap();
    let total = segment_file_bytes(&dir);
    run(tmp.path(), move |dir| async move {
        let log = Log::open(&dir, small_segments(4096)).await.unwrap();
        assert_eq!(log.recovery_scanned_bytes(), total);
        assert_eq!(log.log_end_offset(), last + 3);
        let resent = log.append(idempotent(77, 2, 3 * 40, 3)).unwrap();
        assert!(resent.duplicate, "{resent:?}");
        log.close().await.unwrap();
    });
}

fn segment_file_bytes(dir: &Path) -> u64 {
    files(dir, ".log")
        .iter()
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum()
}

#[test]
fn after_a_kill_only_the_segments_past_the_checkpoint_are_scanned() {
    let tmp = tempfile::tempdir().unwrap();
    let durable = run(tmp.path(), |dir| async move {
        let config = LogConfig {
            segment_bytes: 16 << 10,
            ..always()
        };
        let log = Log::open(&dir, config).await.unwrap();
        let mut last = 0;
        for i in 0..120 {
            last = log
                .append(values(2, 100 + i * 3, i as u8))
                .unwrap()
                .last_offset;
            log.append(idempotent(5, 0, 2 * i as i32, 2)).unwrap();
        }
        log.wait_durable(last + 2).await.unwrap();
        // No close, as a killed process: the last checkpoint is a seal's.
        read_all(&log, 0, 1 << 20).await
    });
    let dir = tmp.path().join("topic-0");
    let (total, covered) = file_and_covered_bytes(&dir);
    assert!(files(&dir, ".log").len() > 3, "several segments");
    assert!(covered > 0 && covered < total, "{covered} of {total}");
    run(tmp.path(), move |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert_eq!(log.recovery_scanned_bytes(), total - covered);
        assert_eq!(read_all(&log, 0, 1 << 20).await, durable);
        let next = durable.last().map_or(0, |b| last_offset(b) + 1);
        assert_eq!(log.log_end_offset(), next);
        let resent = log.append(idempotent(5, 0, 2 * 119, 2)).unwrap();
        assert!(
            resent.duplicate,
            "producer state from checkpoint and tail: {resent:?}"
        );
        log.close().await.unwrap();
    });
}

/// Covered bytes of the checkpoint once it covers at least `bytes`, polled (the progress
/// checkpoint runs in the background after the write that made it due); fails after 10 s.
async fn covered_at_least(dir: &Path, bytes: u64) -> u64 {
    for _ in 0..2000 {
        if dir.join("checkpoint").exists() {
            let (_, covered) = file_and_covered_bytes(dir);
            if covered >= bytes {
                return covered;
            }
        }
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("no checkpoint covers {bytes} bytes of the active segment");
}

#[test]
fn after_a_kill_only_the_active_segment_past_its_progress_checkpoint_is_scanned() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        checkpoint_interval_bytes: 16 << 10,
        ..LogConfig::default()
    };
    let copy = config.clone();
    let (durable, covered) = run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, copy).await.unwrap();
        let mut last = 0;
        for i in 0..150 {
            last = log.append(values(2, 150 + i, i as u8)).unwrap().last_offset;
            log.append(idempotent(9, 1, 2 * i as i32, 2)).unwrap();
        }
        log.wait_durable(last + 2).await.unwrap();
        let covered = covered_at_least(&dir, 32 << 10).await;
        // No close, as a killed process: one segment, checkpointed while it was written.
        (read_all(&log, 0, 1 << 20).await, covered)
    });
    let dir = tmp.path().join("topic-0");
    let total = segment_file_bytes(&dir);
    assert_eq!(files(&dir, ".log").len(), 1, "one active segment");
    assert!(covered < total, "{covered} of {total}");
    run(tmp.path(), move |dir| async move {
        let log = Log::open(&dir, config).await.unwrap();
        let (_, now_covered) = file_and_covered_bytes(&dir);
        assert!(now_covered >= covered);
        assert_eq!(log.recovery_scanned_bytes(), total - now_covered);
        assert_eq!(read_all(&log, 0, 1 << 20).await, durable);
        let resent = log.append(idempotent(9, 1, 2 * 149, 2)).unwrap();
        assert!(resent.duplicate, "producer state: {resent:?}");
        log.close().await.unwrap();
    });
}

/// storage-format.md, "Producer state at a seal": a producer whose only batch past a seal's base
/// started a new epoch is checkpointed with that epoch and no batches, so when a crash loses the
/// batch the old epoch stays fenced and the new one starts afresh at sequence 0.
#[test]
fn a_new_epoch_past_a_seal_stays_fencing_when_a_crash_loses_its_batch() {
    const SEGMENT: usize = 4096;
    let first = idempotent(9, 0, 0, 3);
    let bumped = idempotent(9, 1, 0, 3);
    // A filler that leaves the first segment too little room for the bumped batch.
    let room = SEGMENT - first.len() - bumped.len() / 2;
    let value = (0..room)
        .rev()
        .find(|&v| values(1, v, 1).len() <= room)
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let base = run(tmp.path(), move |dir| async move {
        let log = Log::open(&dir, small_segments(SEGMENT as u64))
            .await
            .unwrap();
        log.append(first).unwrap();
        let filler = log.append(values(1, value, 1)).unwrap();
        let bumped = log.append(bumped).unwrap();
        assert_eq!(bumped.base_offset, filler.last_offset + 1);
        // The seal's checkpoint covers the first segment; then the process dies unclosed.
        covered_at_least(&dir, room as u64).await;
        bumped.base_offset
    });
    let dir = tmp.path().join("topic-0");
    let segments = files(&dir, ".log");
    assert_eq!(segments.len(), 2, "the new epoch's batch opened a segment");
    // The crash loses it: the new segment's data never reached the device.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[1])
        .unwrap();
    let length = file.metadata().unwrap().len().min(1 << 16) as usize;
    std::os::unix::fs::FileExt::write_all_at(&file, &vec![0u8; length], 0).unwrap();
    run(tmp.path(), move |dir| async move {
        let log = Log::open(&dir, small_segments(SEGMENT as u64))
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), base);
        let fenced = log.append(idempotent(9, 0, 3, 3));
        assert!(
            matches!(
                fenced,
                Err(LogError::InvalidProducerEpoch { current: 1, .. })
            ),
            "epoch 0 must stay fenced: {fenced:?}"
        );
        let fresh = log.append(idempotent(9, 1, 0, 3)).unwrap();
        assert_eq!((fresh.base_offset, fresh.duplicate), (base, false));
        log.close().await.unwrap();
    });
}
