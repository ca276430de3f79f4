//! The ack store's part of the SIGKILL story, at process level: a driver process acknowledges
//! queue records through the real `AckStore` and says which acks are durable; the test kills it
//! with SIGKILL at arbitrary points (mid group commit, mid write, mid compaction), 20 times,
//! reopens the store, and asserts that every ack reported durable is still there and that no
//! record that was never acknowledged is finished (so it will be redelivered).
//!
//! One binary plays both parts (`harness = false`): run with `WEIR_ACK_DRIVER_DIR` set, it is the
//! driver; otherwise it is the test, and starts itself as the driver.
//!
//! The end-to-end AMQP version (publisher with confirms, consumer with acks, broker killed) needs
//! the AMQP layer and belongs to its crash suite.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use weir_engine::Offset;
use weir_server::queues::{
    AckStore, AckStoreOptions, ConsumerId, Durability, QueueKey, QueueLimits, QueueSnapshot,
    QueueState,
};

const DRIVER_ENV: &str = "WEIR_ACK_DRIVER_DIR";
/// Records at offsets ≡ HELD (mod 7) are acquired but never acknowledged.
const HELD: i64 = 3;
/// The driver's queue log is this long (a virtual log: only offsets matter here).
const LOG_END: i64 = 1 << 40;
const KILLS: u64 = 20;

fn main() {
    match std::env::var_os(DRIVER_ENV) {
        Some(dir) => drive(PathBuf::from(dir)),
        None => {
            persisted_acks_survive_sigkill();
            println!("test persisted_acks_survive_sigkill ... ok");
        }
    }
}

fn options() -> AckStoreOptions {
    AckStoreOptions {
        // Small, so that compactions happen (and get killed) during the test.
        compact_bytes: 16 << 10,
        flush_delay: Duration::from_millis(1),
        // Without fdatasync (share groups' default): a kill of the process must lose nothing
        // the store reported durable all the same (the writes are in the kernel).
        fdatasync: false,
    }
}

fn key() -> QueueKey {
    QueueKey::new("sigkill", 0)
}

/// Runs `body` on a glommio executor over `data_dir`.
fn on_executor<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    data_dir: PathBuf,
    body: impl FnOnce(PathBuf) -> Fut + Send + 'static,
) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(512 << 10)
        .spawn(move || async move {
            weir_engine::io::prepare_data_dir(&data_dir)
                .await
                .expect("probe file");
            body(data_dir.join("queues")).await
        })
        .expect("executor")
        .join()
        .expect("executor ran")
}

/// The driver: acquire 64 records, accept all but the held ones (highest first: acks far ahead
/// of the floor), record; every fourth batch, sync and print `durable X`: every record below X
/// that is not held is acknowledged durably (acquire hands out the lowest available records, so
/// all of them below the highest acquired were acquired, and accepted, in this run). Runs until
/// killed.
fn drive(data_dir: PathBuf) {
    on_executor(data_dir, |dir| async move {
        let store = AckStore::open(&dir, 0, options()).await.expect("open");
        let key = key();
        let mut state = match store.snapshot(&key) {
            Some(snapshot) => QueueState::restore(
                &snapshot,
                Offset::new(LOG_END),
                QueueLimits::AMQP,
                Durability::Durable,
            ),
            None => QueueState::new(
                Offset::ZERO,
                Offset::new(LOG_END),
                QueueLimits::AMQP,
                Durability::Durable,
            ),
        };
        let owner = ConsumerId(1);
        let mut end = 0;
        for batch in 0u64.. {
            let acquired = state.acquire(owner, 64, Instant::now());
            end = acquired
                .iter()
                .map(|r| r.offset.get() + 1)
                .fold(end, i64::max);
            for record in acquired.iter().rev() {
                if record.offset.get() % 7 != HELD {
                    state.accept(owner, record.offset).expect("held");
                }
            }
            store.record(&key, state.take_journal()).expect("record");
            if batch % 4 == 3 {
                store.sync().await.expect("sync");
                println!("durable {end}");
            }
        }
    });
}

fn persisted_acks_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut durable_end = 0i64;
    for kill in 0..KILLS {
        // Kill after 1..=40 reports, spread by a fixed-seed sequence (reproducible).
        let reports = 1 + (kill * 7_919 + 13) % 40;
        // A restarted driver's running end starts low again (its first batches are the held
        // records and the acks a kill lost); what an earlier run reported must still hold.
        durable_end = durable_end.max(run_and_kill(dir.path(), reports));
        let snapshot = reopen(dir.path());
        check(&snapshot, durable_end, kill);
    }
    assert!(durable_end > 0, "the driver made progress");
}

/// Starts the driver, reads `reports` durable reports, kills it with SIGKILL, and returns the
/// last durable end it reported.
fn run_and_kill(dir: &Path, reports: u64) -> i64 {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(DRIVER_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("driver starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut last = 0;
    let mut lines = BufReader::new(stdout).lines();
    for _ in 0..reports {
        let line = lines
            .next()
            .expect("driver reports before it is killed")
            .expect("readable");
        let value = line.strip_prefix("durable ").expect("a durable report");
        last = value.parse().expect("a number");
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaped");
    assert!(!status.success(), "the driver was killed, not finished");
    last
}

fn reopen(dir: &Path) -> QueueSnapshot {
    on_executor(dir.to_path_buf(), |dir| async move {
        let store: Rc<AckStore> = AckStore::open(&dir, 0, options()).await.expect("reopen");
        let snapshot = store.snapshot(&key()).expect("queue state persisted");
        store.close().await;
        snapshot
    })
}

/// Every non-held offset below `durable_end` is finished; no held offset is.
fn check(snapshot: &QueueSnapshot, durable_end: i64, kill: u64) {
    let finished = |offset: i64| {
        let after = snapshot
            .done
            .partition_point(|(start, _)| start.get() <= offset);
        offset < snapshot.floor.get() || (after > 0 && offset < snapshot.done[after - 1].1.get())
    };
    for offset in 0..durable_end {
        let held = offset % 7 == HELD;
        assert_eq!(
            finished(offset),
            !held,
            "kill {kill}: offset {offset} (held: {held}) below durable end {durable_end}"
        );
    }
    // Beyond the reported end only acks that were written but not yet reported may be there;
    // never a held record.
    for &(start, end) in &snapshot.done {
        for offset in start.get()..end.get() {
            assert_ne!(
                offset % 7,
                HELD,
                "kill {kill}: held offset {offset} finished"
            );
        }
    }
    assert!(
        snapshot.floor.get() <= HELD,
        "the first held record keeps the floor"
    );
}
