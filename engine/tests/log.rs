//! Behaviour of one partition log on real files under real glommio executors.

mod common;

use common::*;
use weir_engine::{Chunk, Durability, Log, LogConfig, LogError};

#[test]
fn append_assigns_offsets_and_reads_back_from_cache_and_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        let mut sent = Vec::new();
        for i in 0..20 {
            let batch = values(1 + i % 3, 50 + i * 10, i as u8);
            let appended = log.append(batch.clone()).unwrap();
            assert_eq!(
                appended.base_offset,
                sent.iter().map(|(_, n)| *n as i64).sum::<i64>()
            );
            assert!(!appended.duplicate);
            sent.push((batch, 1 + i % 3));
        }
        let total: i64 = sent.iter().map(|(_, n)| *n as i64).sum();
        assert_eq!(total, 39);
        assert_eq!(log.log_end_offset(), 39);
        log.wait_written(38).await.unwrap();
        assert_eq!(log.high_watermark(), 39);
        let read = log.read(0, usize::MAX).await.unwrap();
        assert!(
            read.chunks.iter().all(|c| matches!(c, Chunk::Memory(_))),
            "head reads come from the tail cache"
        );
        let batches = split_batches(&bytes_of(&read));
        assert_eq!(batches.len(), 20);
        log.close().await.unwrap();
        batches
    });
    let tmp_path = tmp.path().to_path_buf();
    run(&tmp_path, move |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert_eq!(log.high_watermark(), 39);
        let read = log.read(0, usize::MAX).await.unwrap();
        assert!(
            read.chunks.iter().all(|c| matches!(c, Chunk::Disk(_))),
            "after reopen reads come from disk"
        );
        assert_eq!(split_batches(&bytes_of(&read)), expected);
        // A read in the middle of a batch starts at that batch.
        let read = log.read(5, 1).await.unwrap();
        let batches = split_batches(&bytes_of(&read));
        assert_eq!(
            batches.len(),
            1,
            "at least one batch even when larger than max_bytes"
        );
        assert!(batches[0].0 <= 5);
        assert_eq!(read_all(&log, 0, 300).await, expected);
        let appended = log.append(values(1, 10, 1)).unwrap();
        assert_eq!(appended.base_offset, 39, "offsets continue after reopen");
        log.close().await.unwrap();
    });
}

#[test]
fn offsets_out_of_range_and_empty_reads() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert_eq!(log.read(0, 100).await.unwrap().total_bytes, 0);
        assert!(matches!(
            log.read(1, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.read(-1, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.append(values(3, 10, 0)).unwrap();
        log.wait_written(2).await.unwrap();
        assert_eq!(log.read(3, 100).await.unwrap().total_bytes, 0);
        assert!(
            matches!(
                log.wait_written(3).await,
                Err(LogError::OffsetOutOfRange { .. })
            ),
            "never assigned"
        );
        log.wait_durable(-1).await.unwrap();
        assert!(matches!(
            log.read(4, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.close().await.unwrap();
        assert!(matches!(log.append(values(1, 1, 0)), Err(LogError::Closed)));
        assert!(matches!(log.read(0, 1).await, Err(LogError::Closed)));
    });
}

#[test]
fn rejects_bad_and_oversized_batches() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let config = LogConfig {
            max_message_bytes: 1000,
            ..LogConfig::default()
        };
        let log = Log::open(&dir, config).await.unwrap();
        let mut bad = values(2, 10, 0);
        let n = bad.len() - 1;
        bad[n] ^= 1;
        assert!(matches!(log.append(bad), Err(LogError::InvalidBatch(_))));
        assert!(matches!(
            log.append(values(1, 2000, 0)),
            Err(LogError::BatchTooLarge { .. })
        ));
        assert!(matches!(
            log.append(bytes::BytesMut::from(&b"short"[..])),
            Err(LogError::InvalidBatch(_))
        ));
        assert_eq!(log.log_end_offset(), 0, "nothing was appended");
        log.close().await.unwrap();
    });
}

#[test]
fn idempotent_producers_and_rebuild_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        let first = log.append(idempotent(7, 0, 0, 3)).unwrap();
        let second = log.append(idempotent(7, 0, 3, 2)).unwrap();
        assert_eq!(
            (first.base_offset, first.last_offset, second.base_offset),
            (0, 2, 3)
        );
        let again = log.append(idempotent(7, 0, 0, 3)).unwrap();
        assert!(again.duplicate);
        assert_eq!((again.base_offset, again.last_offset), (0, 2));
        assert_eq!(log.log_end_offset(), 5, "a duplicate is not appended");
        assert!(matches!(
            log.append(idempotent(7, 0, 9, 1)),
            Err(LogError::OutOfOrderSequence {
                producer_id: 7,
                expected: 5,
                got: 9
            })
        ));
        assert!(matches!(
            log.append(idempotent(7, 1, 5, 1)),
            Err(LogError::OutOfOrderSequence { expected: 0, .. })
        ));
        log.append(idempotent(7, 1, 0, 1)).unwrap();
        assert!(matches!(
            log.append(idempotent(7, 0, 5, 1)),
            Err(LogError::InvalidProducerEpoch {
                epoch: 0,
                current: 1,
                ..
            })
        ));
        // Non-idempotent batches are never deduplicated.
        log.append(values(1, 1, 0)).unwrap();
        log.append(values(1, 1, 0)).unwrap();
        log.close().await.unwrap();
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        let again = log.append(idempotent(7, 1, 0, 1)).unwrap();
        assert!(
            again.duplicate,
            "producer state is rebuilt from batch headers"
        );
        assert_eq!(again.base_offset, 5);
        assert!(matches!(
            log.append(idempotent(7, 0, 5, 1)),
            Err(LogError::InvalidProducerEpoch { .. })
        ));
        assert_eq!(log.append(idempotent(7, 1, 1, 1)).unwrap().base_offset, 8);
        log.close().await.unwrap();
    });
}

#[test]
fn segments_roll_by_size_and_age_with_index_files() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, small_segments(4096)).await.unwrap();
        for i in 0..60 {
            log.append(values(2, 200, i)).unwrap();
        }
        log.wait_written(119).await.unwrap();
        let logs = files(&dir, ".log");
        assert!(logs.len() >= 5, "rolled by size: {logs:?}");
        let first = logs[0].file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(first, "00000000000000000000.log");
        let all = read_all(&log, 0, 1000).await;
        assert_eq!(all.len(), 60);
        // Age: with segment.ms = 0 every append after the first in a segment rolls.
        log.set_config(LogConfig {
            segment_ms: 0,
            ..small_segments(1 << 20)
        });
        let before = files(&dir, ".log").len();
        log.append(values(1, 10, 0)).unwrap();
        log.append(values(1, 10, 0)).unwrap();
        log.wait_written(121).await.unwrap();
        assert!(files(&dir, ".log").len() > before);
        // Seals run in the background; close waits for the one in flight.
        log.close().await.unwrap();
        let logs = files(&dir, ".log");
        for sealed in &logs[..logs.len() - 1] {
            assert!(std::fs::metadata(sealed).unwrap().len() <= 4096);
            assert!(sealed.with_extension("index").exists());
            assert!(sealed.with_extension("timeindex").exists());
        }
        let log = Log::open(&dir, small_segments(4096)).await.unwrap();
        assert_eq!(log.high_watermark(), 122);
        assert_eq!(read_all(&log, 0, 1000).await.len(), 62);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_size_and_age_deletes_whole_old_segments() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, small_segments(4096)).await.unwrap();
        for i in 0..100 {
            log.append(values(1, 300, i)).unwrap();
        }
        log.wait_written(99).await.unwrap();
        let segments_before = files(&dir, ".log").len();
        log.set_config(LogConfig {
            retention_bytes: 10_000,
            retention_ms: -1,
            ..small_segments(4096)
        });
        log.enforce_retention().await.unwrap();
        let start = log.log_start_offset();
        assert!(start > 0);
        let remaining = files(&dir, ".log");
        assert!(remaining.len() < segments_before);
        let total: u64 = remaining
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(
            total >= 10_000 - 4096,
            "keeps at least retention.bytes minus one segment: {total}"
        );
        assert!(matches!(
            log.read(0, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let after = read_all(&log, start, 10_000).await;
        assert_eq!(after.first().unwrap().0, start);
        assert_eq!(after.len() as i64, 100 - start);
        // Age: all batches have timestamp 0 (1970): everything but the active segment goes.
        log.set_config(LogConfig {
            retention_ms: 1000,
            ..small_segments(4096)
        });
        log.enforce_retention().await.unwrap();
        assert_eq!(
            files(&dir, ".log").len(),
            1,
            "the active segment is never deleted"
        );
        assert_eq!(log.append(values(1, 1, 0)).unwrap().base_offset, 100);
        log.close().await.unwrap();
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert!(log.log_start_offset() > start);
        assert_eq!(log.high_watermark(), 101);
        log.close().await.unwrap();
    });
}

/// The base offsets of the segment files (any suffix) in `dir`, sorted, without duplicates.
fn bases_on_disk(dir: &std::path::Path, suffix: &str) -> Vec<i64> {
    let mut bases: Vec<i64> = files(dir, suffix)
        .iter()
        .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
        .collect();
    bases.dedup();
    bases
}

#[test]
fn deleting_below_an_offset_drops_whole_sealed_segments_only_and_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, small_segments(4096)).await.unwrap();
        for i in 0..100 {
            log.append(values(1, 300, i)).unwrap();
        }
        log.wait_written(99).await.unwrap();
        let bases = bases_on_disk(&dir, ".log");
        assert!(bases.len() >= 5, "rolled: {bases:?}");
        let active = *bases.last().unwrap();
        // Below the end of the first segment (or below nothing): every segment stays.
        for below in [-5, 0, bases[1] - 1] {
            assert_eq!(log.delete_segments_below(below).await.unwrap(), 0);
        }
        assert_eq!(bases_on_disk(&dir, ".log"), bases);
        // One offset into the third segment: the two before it go, the one holding it stays.
        assert_eq!(
            log.delete_segments_below(bases[2] + 1).await.unwrap(),
            bases[2]
        );
        assert_eq!(log.log_start_offset(), bases[2]);
        assert_eq!(bases_on_disk(&dir, ".log"), bases[2..]);
        for suffix in [".index", ".timeindex"] {
            let on_disk = bases_on_disk(&dir, suffix);
            assert!(
                on_disk.iter().all(|&b| b >= bases[2]),
                "{suffix}: {on_disk:?}"
            );
        }
        assert!(matches!(
            log.read(bases[2] - 1, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let kept = read_all(&log, bases[2], 10_000).await;
        assert_eq!((kept[0].0, kept.len() as i64), (bases[2], 100 - bases[2]));
        // Exactly at a boundary: the segment that ends there goes.
        assert_eq!(log.delete_segments_below(bases[3]).await.unwrap(), bases[3]);
        // Past the end: every sealed segment goes, never the active one.
        let start = log.delete_segments_below(i64::MAX).await.unwrap();
        assert_eq!((start, bases_on_disk(&dir, ".log")), (active, vec![active]));
        // The start offset never moves back, and appends go on where they were.
        assert_eq!(log.delete_segments_below(0).await.unwrap(), active);
        assert_eq!(log.append(values(1, 1, 0)).unwrap().base_offset, 100);
        log.close().await.unwrap();
        let log = Log::open(&dir, small_segments(4096)).await.unwrap();
        assert_eq!(
            (log.log_start_offset(), log.high_watermark()),
            (active, 101)
        );
        assert_eq!(
            read_all(&log, active, 10_000).await.len() as i64,
            101 - active
        );
        log.close().await.unwrap();
        assert!(matches!(
            log.delete_segments_below(101).await,
            Err(LogError::Closed)
        ));
    });
}

#[test]
fn lookup_by_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, small_segments(2048)).await.unwrap();
        for i in 0..50i64 {
            log.append(timed(2, 1000 + i * 10)).unwrap();
        }
        log.wait_written(99).await.unwrap();
        for (target, expected) in [
            (0, Some((0, 1001))),
            (1001, Some((0, 1001))),
            (1002, Some((2, 1011))),
            (1255, Some((52, 1261))),
            (1491, Some((98, 1491))),
            (1492, None),
        ] {
            assert_eq!(
                log.offset_for_timestamp(target).await.unwrap(),
                expected,
                "timestamp {target}"
            );
        }
        log.close().await.unwrap();
    });
}

#[test]
fn wait_for_data_wakes_on_write() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        let reader = log.clone();
        let waiting = glommio::spawn_local(async move {
            reader.wait_for_data(0).await;
            reader.high_watermark()
        });
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        log.append(values(1, 10, 0)).unwrap();
        assert_eq!(waiting.await, 1);
        log.close().await.unwrap();
    });
}

#[test]
fn durability_policies_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        for (i, durability) in [
            Durability::Always,
            Durability::Interval { ms: 5 },
            Durability::Os,
        ]
        .into_iter()
        .enumerate()
        {
            let log = Log::open(
                &dir.join(i.to_string()),
                LogConfig {
                    durability,
                    ..LogConfig::default()
                },
            )
            .await
            .unwrap();
            let mut last = 0;
            for _ in 0..10 {
                last = log.append(values(5, 100, 1)).unwrap().last_offset;
            }
            log.wait_durable(last).await.unwrap();
            assert_eq!(log.high_watermark(), last + 1);
            log.close().await.unwrap();
        }
    });
}

#[test]
fn delete_removes_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        log.append(values(1, 10, 0)).unwrap();
        log.delete().await.unwrap();
        assert!(!dir.exists());
    });
}

#[test]
fn bursts_larger_than_one_write_stage_the_next_write_across_rolls() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        for (i, durability) in [Durability::Os, Durability::Always].into_iter().enumerate() {
            let config = LogConfig {
                durability,
                segment_bytes: 3 << 20,
                ..LogConfig::default()
            };
            let dir = dir.join(i.to_string());
            let log = Log::open(&dir, config.clone()).await.unwrap();
            let mut sent = Vec::new();
            let mut last = 0;
            // 12 MiB of uneven batches queued at once: several 1 MiB writes, staged while the
            // previous one is in flight, and rolls every 3 MiB.
            for i in 0..700usize {
                let appended = append_kept(
                    &log,
                    values(1 + i % 5, 3000 + (i * 7919) % 9000, i as u8),
                    &mut sent,
                );
                last = appended.last_offset;
                if i % 250 == 0 {
                    glommio::yield_if_needed().await;
                }
            }
            log.wait_durable(last).await.unwrap();
            assert!(files(&dir, ".log").len() >= 3, "rolled");
            assert_eq!(read_all(&log, 0, 1 << 20).await, sent);
            log.close().await.unwrap();
            let log = Log::open(&dir, config).await.unwrap();
            assert_eq!(read_all(&log, 0, 1 << 20).await, sent);
            log.close().await.unwrap();
        }
    });
}

#[test]
fn catch_up_readers_get_every_batch_through_read_ahead_across_segments() {
    // Two readers draining from disk in small steps, interleaved, while the active segment keeps
    // growing (its partial last block is rewritten): each read-ahead must hand back exactly the
    // batches that were written, never stale bytes past the data end at the time it was issued.
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let config = LogConfig {
            tail_cache_bytes: 0,
            ..small_segments(64 << 10)
        };
        let log = Log::open(&dir, config).await.unwrap();
        let mut sent = Vec::new();
        let mut next = 0i64;
        for i in 0..400usize {
            let batch = values(1 + i % 4, 100 + (i * 37) % 900, i as u8);
            let appended = append_kept(&log, batch, &mut sent);
            assert_eq!(appended.base_offset, next);
            next = appended.last_offset + 1;
        }
        log.wait_written(next - 1).await.unwrap();
        let (mut a, mut b) = (0i64, 0i64);
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let mut extra = 0u8;
        while a < log.high_watermark() || b < log.high_watermark() {
            for (offset, got, max_bytes) in [(&mut a, &mut got_a, 3000), (&mut b, &mut got_b, 9000)]
            {
                if *offset >= log.high_watermark() {
                    continue;
                }
                let read = log.read(*offset, max_bytes).await.unwrap();
                let batches = split_batches(&bytes_of(&read));
                assert!(!batches.is_empty(), "read at {offset} returned nothing");
                let last = batches.last().unwrap();
                let info = weir_engine::batch::validate(&last.1).unwrap();
                *offset = last.0 + info.last_offset_delta as i64 + 1;
                got.extend(batches);
            }
            // Keep the active segment growing behind the readers.
            if extra < 50 {
                let appended = append_kept(&log, values(2, 333, extra), &mut sent);
                log.wait_written(appended.last_offset).await.unwrap();
                extra += 1;
            }
        }
        assert!(
            files(&dir, ".log").len() > 5,
            "the data spans many segments"
        );
        assert_eq!(got_a.len(), sent.len());
        assert!(got_a == sent, "reader a saw exactly the written batches");
        assert!(got_b == sent, "reader b saw exactly the written batches");
        log.close().await.unwrap();
    });
}

#[test]
fn a_reader_with_small_fetches_reads_the_device_in_large_windows() {
    // A Kafka consumer asks 1 MiB per partition; its catch-up reads must still reach the device
    // as `READ_AHEAD_BYTES` windows (the device idled between 1 MiB reads), each window serving
    // many fetches, and every batch must come back exactly once, in order.
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let config = LogConfig {
            tail_cache_bytes: 0,
            segment_bytes: 64 << 20,
            ..LogConfig::default()
        };
        let log = Log::open(&dir, config).await.unwrap();
        let mut sent = Vec::new();
        let mut last = 0;
        // 24 MiB of 16 KiB batches with uneven records.
        for i in 0..1500usize {
            let appended = append_kept(&log, values(4, 4000 + (i * 131) % 200, i as u8), &mut sent);
            last = appended.last_offset;
            if i % 100 == 0 {
                glommio::yield_if_needed().await;
            }
        }
        log.wait_written(last).await.unwrap();
        let before = weir_engine::io::stats::snapshot();
        let got = read_all(&log, 0, 256 << 10).await;
        let after = weir_engine::io::stats::snapshot();
        assert!(got == sent, "the reader saw exactly the written batches");
        let fetches = after.disk_reads - before.disk_reads;
        let device = after.device_reads - before.device_reads;
        let bytes = after.device_read_bytes - before.device_read_bytes;
        let data: usize = sent.iter().map(|(_, b)| b.len()).sum();
        assert!(fetches >= 90, "{fetches} fetches of 256 KiB");
        assert!(
            device <= 8,
            "{device} device reads for {fetches} fetches: windows of READ_AHEAD_BYTES"
        );
        assert!(bytes < 2 * data as u64, "{bytes} bytes read for {data}");
        log.close().await.unwrap();
    });
}

#[test]
fn always_durability_spans_background_seals() {
    // With `Always`, every acknowledged batch is durable, including those written to a new segment
    // while the previous one is still being sealed in the background.
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let config = LogConfig {
            durability: Durability::Always,
            ..small_segments(8192)
        };
        let log = Log::open(&dir, config.clone()).await.unwrap();
        let mut last = 0;
        for i in 0..100 {
            last = log.append(values(3, 500, i)).unwrap().last_offset;
            if i % 7 == 0 {
                log.wait_durable(last).await.unwrap();
            }
        }
        log.wait_durable(last).await.unwrap();
        assert!(files(&dir, ".log").len() > 10);
        log.close().await.unwrap();
        let log = Log::open(&dir, config).await.unwrap();
        assert_eq!(log.high_watermark(), last + 1);
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), 100);
        log.close().await.unwrap();
    });
}

#[test]
fn two_writes_in_flight_split_at_a_block_and_keep_every_batch() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        for (i, durability) in [Durability::Os, Durability::Always].into_iter().enumerate() {
            let config = LogConfig {
                durability,
                segment_bytes: 16 << 20,
                ..LogConfig::default()
            };
            let dir = dir.join(i.to_string());
            let log = Log::open(&dir, config.clone()).await.unwrap();
            let mut sent = Vec::new();
            let mut last = 0;
            // 40 MiB of uneven batches (never a multiple of the block size) queued at once: the
            // writer has a full 4 MiB behind every write, so writes go out two at a time, each
            // but the last of a run ending at a block boundary inside a batch, and a roll at
            // 16 MiB.
            for i in 0..4000usize {
                let appended = append_kept(
                    &log,
                    values(1 + i % 3, 7000 + (i * 7919) % 6000, i as u8),
                    &mut sent,
                );
                last = appended.last_offset;
                if i % 500 == 0 {
                    glommio::yield_if_needed().await;
                }
            }
            log.wait_durable(last).await.unwrap();
            assert!(files(&dir, ".log").len() >= 3, "rolled");
            assert_eq!(read_all(&log, 0, 1 << 20).await, sent);
            log.close().await.unwrap();
            // Recovery scans the segments written in block-split pieces.
            let log = Log::open(&dir, config).await.unwrap();
            assert_eq!(log.high_watermark(), last + 1);
            assert_eq!(read_all(&log, 0, 3 << 20).await, sent);
            log.close().await.unwrap();
        }
    });
}

#[test]
fn a_write_after_a_padded_tail_rewrites_that_block_apart_and_keeps_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        let mut sent = Vec::new();
        // Each append is written before the next, so every write but the first starts by
        // rewriting the zero-padded block the previous one ended in: sizes that stay inside that
        // block (one write), end just past it, and span many blocks (the block, then the rest).
        let sizes = [
            100, 3000, 900, 5000, 12, 4096, 8191, 70_000, 1, 4000, 300_000, 77,
        ];
        for (i, &size) in sizes.iter().enumerate() {
            let appended = append_kept(&log, values(1 + i % 2, size, i as u8 + 1), &mut sent);
            log.wait_written(appended.last_offset).await.unwrap();
        }
        assert_eq!(read_all(&log, 0, 1 << 20).await, sent);
        log.close().await.unwrap();
        // On disk the batches lie back to back from byte 0, then zeros.
        let segment = std::fs::read(&files(&dir, ".log")[0]).unwrap();
        let expected: Vec<u8> = sent.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        assert_eq!(&segment[..expected.len()], &expected[..]);
        assert!(segment[expected.len()..].iter().all(|&b| b == 0));
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert_eq!(read_all(&log, 0, 1 << 20).await, sent);
        log.close().await.unwrap();
    });
}

#[test]
fn many_logs_share_the_shards_write_slots_without_losing_a_batch() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        // Far more logs than write slots, each with a burst queued at once; every fourth log is
        // closed and dropped while the others still wait for slots, then reopened.
        let config = LogConfig {
            segment_bytes: 256 << 10,
            ..LogConfig::default()
        };
        let mut logs = Vec::new();
        for p in 0..200 {
            let path = dir.join(format!("p-{p}"));
            logs.push((
                path.clone(),
                Log::open(&path, config.clone()).await.unwrap(),
            ));
        }
        let mut sent: Vec<Vec<(i64, Vec<u8>)>> = vec![Vec::new(); logs.len()];
        for round in 0..12usize {
            for (p, (_, log)) in logs.iter().enumerate() {
                append_kept(
                    log,
                    values(1 + round % 3, 3000 + (p * 131 + round) % 5000, p as u8),
                    &mut sent[p],
                );
            }
        }
        for (p, (path, log)) in logs.iter_mut().enumerate() {
            if p % 4 == 0 {
                log.close().await.unwrap();
                *log = Log::open(path, config.clone()).await.unwrap();
            }
        }
        for (p, (_, log)) in logs.iter().enumerate() {
            let last = sent[p].last().unwrap();
            let info = weir_engine::batch::validate(&last.1).unwrap();
            log.wait_written(last.0 + info.last_offset_delta as i64)
                .await
                .unwrap();
            assert_eq!(read_all(log, 0, 64 << 10).await, sent[p], "log {p}");
        }
        for (_, log) in logs {
            log.close().await.unwrap();
        }
    });
}

/// With a shard budget of 4 segment descriptors, 20 logs of several segments each are written,
/// read, trimmed, closed and reopened (recovery scans every segment through the cache): every
/// batch is there each time, and the shard never holds more than the budget once idle.
#[test]
fn logs_with_more_segments_than_the_descriptor_budget_write_read_and_recover() {
    let tmp = tempfile::tempdir().unwrap();
    run(tmp.path(), |dir| async move {
        weir_engine::io::set_segment_files_budget(4);
        let config = small_segments(8192);
        let open_all = || async {
            let mut logs = Vec::new();
            for p in 0..20 {
                logs.push(
                    Log::open(&dir.join(format!("p-{p}")), config.clone())
                        .await
                        .unwrap(),
                );
            }
            logs
        };
        let logs = open_all().await;
        let mut sent: Vec<Vec<(i64, Vec<u8>)>> = vec![Vec::new(); logs.len()];
        for round in 0..10u8 {
            for (p, log) in logs.iter().enumerate() {
                let appended = append_kept(log, values(1, 2000, round ^ p as u8), &mut sent[p]);
                log.wait_written(appended.base_offset).await.unwrap();
            }
        }
        for (p, log) in logs.iter().enumerate() {
            assert_eq!(read_all(log, 0, 64 << 10).await, sent[p], "log {p}");
        }
        // Deleting a prefix unlinks files that may be closed: they are opened and pinned first.
        for (p, log) in logs.iter().enumerate() {
            let start = log.delete_segments_below(sent[p][4].0).await.unwrap();
            sent[p].retain(|(offset, _)| *offset >= start);
        }
        for log in &logs {
            log.close().await.unwrap();
        }
        drop(logs);
        assert_eq!(weir_engine::io::shard_open_segment_files(), 0);
        let logs = open_all().await;
        assert!(weir_engine::io::shard_open_segment_files() <= 4);
        for (p, log) in logs.iter().enumerate() {
            assert_eq!(
                read_all(log, sent[p][0].0, 64 << 10).await,
                sent[p],
                "log {p}"
            );
            assert!(weir_engine::io::shard_open_segment_files() <= 4);
        }
        for log in &logs {
            log.close().await.unwrap();
        }
    });
}

/// A log opened and closed with no append leaves its files as they were (no sync, trim or index
/// rewrite: an idle queue costs nothing to stop), and still reopens with every batch.
#[test]
fn an_idle_log_closes_without_rewriting_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let sent = run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        let mut sent = Vec::new();
        for i in 0..5 {
            let batch = values(2, 100, i);
            log.append(batch.clone()).unwrap();
            sent.push((batch, 2));
        }
        log.wait_written(9).await.unwrap();
        log.close().await.unwrap();
        sent
    });
    let files = |dir: &std::path::Path| -> Vec<(std::path::PathBuf, u64, std::time::SystemTime)> {
        let mut files: Vec<_> = walk(dir)
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path).unwrap();
                (path, meta.len(), meta.modified().unwrap())
            })
            .collect();
        files.sort();
        files
    };
    let before = files(tmp.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    run(tmp.path(), |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert_eq!(log.high_watermark(), 10);
        log.close().await.unwrap();
    });
    assert_eq!(files(tmp.path()), before, "an idle close rewrote files");
    let expected: Vec<_> = sent.into_iter().map(|(batch, _)| batch).collect();
    run(tmp.path(), move |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        let read = read_all(&log, 0, 100).await;
        assert_eq!(read.len(), expected.len());
        assert_eq!(log.append(values(1, 10, 9)).unwrap().base_offset, 10);
        log.close().await.unwrap();
    });
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
