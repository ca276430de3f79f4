//! Disk full: on a small tmpfs (mounted by the test; skipped when mounting is not permitted), a
//! full device gives `LogError::StorageFull`, the log stays consistent, and it accepts writes again
//! once space returns.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use weir_engine::{Log, LogConfig, LogError};

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(path: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Mount(path.into()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Appends until the device is full: the base offsets written, and whether it filled up.
async fn fill(log: &Log) -> (Vec<i64>, bool) {
    let mut written = Vec::new();
    let mut full = false;
    for i in 0..200u32 {
        let appended = match log.append(values(4, 16 << 10, i as u8)) {
            Ok(appended) => appended,
            Err(LogError::StorageFull) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        };
        match log.wait_written(appended.last_offset).await {
            Ok(()) => written.push(appended.base_offset),
            Err(LogError::StorageFull) => {
                full = true;
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    (written, full)
}

#[test]
fn full_device_gives_storage_full_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(&tmp.path().join("mnt"), "4m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let root = mount.0.clone();
    let filler = root.join("filler");
    std::fs::write(&filler, vec![1u8; 1 << 20]).unwrap();
    run(&root, move |dir| async move {
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        let (written, full) = fill(&log).await;
        assert!(full, "a 4 MiB device fills up");
        let hwm = log.high_watermark();
        assert!(matches!(
            log.append(values(1, 10, 0)),
            Err(LogError::StorageFull)
        ));
        // What was written stays readable and intact.
        let all = read_all(&log, 0, 1 << 20).await;
        assert_eq!(all.iter().map(|b| b.0).collect::<Vec<_>>(), written);
        // Space returns: the queued batch is retried and writes are accepted again.
        std::fs::remove_file(&filler).unwrap();
        let pending_last = log.log_end_offset() - 1;
        // While the failure stands, waiters get StorageFull at once; the writer retries every
        // 100 ms.
        let mut retried = false;
        for _ in 0..50 {
            match log.wait_written(pending_last).await {
                Ok(()) => {
                    retried = true;
                    break;
                }
                Err(LogError::StorageFull) => {
                    glommio::timer::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(retried, "the queued batch is written once space returns");
        assert!(log.high_watermark() > hwm);
        let mut appended = None;
        for _ in 0..50 {
            match log.append(values(1, 10, 7)) {
                Ok(a) => {
                    appended = Some(a);
                    break;
                }
                Err(LogError::StorageFull) => {
                    glommio::timer::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        let appended = appended.expect("writes accepted again");
        log.wait_written(appended.last_offset).await.unwrap();
        log.close().await.unwrap();
        let log = Log::open(&dir, LogConfig::default()).await.unwrap();
        assert_eq!(log.high_watermark(), appended.last_offset + 1);
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), written.len() + 2);
        log.close().await.unwrap();
    });
    drop(mount);
}

/// A burst larger than two writes meets a full device part-way, with two writes in flight. Once
/// space returns every batch is written exactly once, in order.
#[test]
fn a_burst_that_fills_the_device_is_written_whole_once_space_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mount) = Mount::tmpfs(&tmp.path().join("mnt"), "16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let root = mount.0.clone();
    let filler = root.join("filler");
    std::fs::write(&filler, vec![1u8; 9 << 20]).unwrap();
    run(&root, move |dir| async move {
        let config = LogConfig {
            segment_bytes: 64 << 20,
            ..LogConfig::default()
        };
        let log = Log::open(&dir, config.clone()).await.unwrap();
        let mut sent = Vec::new();
        let mut last = 0;
        // 10 MiB queued at once on a device with ~7 MiB free.
        for i in 0..1000usize {
            let appended = append_kept(&log, values(1, 10_000 + i % 77, i as u8), &mut sent);
            last = appended.last_offset;
        }
        let outcome = log.wait_written(last).await;
        assert!(
            matches!(outcome, Err(LogError::StorageFull)),
            "{outcome:?} at {} of {last}",
            log.high_watermark()
        );
        // Which of the two writes in flight gets the space is a race; the first may fail.
        assert!(log.high_watermark() <= last);
        std::fs::remove_file(&filler).unwrap();
        let mut written = false;
        for _ in 0..100 {
            match log.wait_written(last).await {
                Ok(()) => {
                    written = true;
                    break;
                }
                Err(LogError::StorageFull) => {
                    glommio::timer::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(
            written,
            "the rest of the burst is written once space returns"
        );
        assert_eq!(read_all(&log, 0, 1 << 20).await, sent);
        log.close().await.unwrap();
        let log = Log::open(&dir, config).await.unwrap();
        assert_eq!(log.high_watermark(), last + 1);
        assert_eq!(read_all(&log, 0, 1 << 20).await, sent);
        log.close().await.unwrap();
    });
    drop(mount);
}
