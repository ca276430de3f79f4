//! The open-files limit and what it leaves for partitions. Every segment of every partition
//! (a queue is a partition) holds a descriptor while it exists, as Kafka's segments do, so the
//! limit bounds how many partitions one broker can hold. A creation that would pass it is
//! refused with an error that names the limit (Kafka POLICY_VIOLATION, AMQP 406), rather than
//! answered and left without a log that could open.

use std::sync::atomic::{AtomicU64, Ordering};

/// The soft RLIMIT_NOFILE after `raise_limit`; 0 until then (no creation is refused).
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// What the limit keeps back for everything but segment files: client connections, the
/// metadata and ack-store files, io_uring rings and eventfds. A tenth, at least 1,024, but never
/// more than half (a limit of 1,024 still leaves 512 partitions).
pub fn reserved(limit: u64) -> u64 {
    (limit / 10).max(1024).min(limit / 2)
}

/// Segment files (so, partitions) a limit allows in all: what the reserve leaves.
fn partitions_max(limit: u64) -> u64 {
    limit.saturating_sub(reserved(limit))
}

/// How many more segment files (so, new partitions) the limit allows now, or `None` when
/// the limit was never read (unit tests of the controller).
pub fn partition_room() -> Option<u64> {
    let limit = LIMIT.load(Ordering::Relaxed);
    if limit == 0 {
        return None;
    }
    Some(partitions_max(limit).saturating_sub(weir_engine::io::open_segment_files() as u64))
}

/// The limit as `partition_room` counts it.
pub fn limit() -> u64 {
    LIMIT.load(Ordering::Relaxed)
}

/// Raises the soft limit to the hard one, and both to `OPEN_FILES_WANTED` where the process
/// may (as root with CAP_SYS_RESOURCE); says what it got.
pub fn raise_limit() {
    const OPEN_FILES_WANTED: libc::rlim_t = 1 << 20;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one plain struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let wanted = limit.rlim_max.max(OPEN_FILES_WANTED);
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: wanted,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    LIMIT.store(limit.rlim_cur, Ordering::Relaxed);
    tracing::info!(
        open_files = limit.rlim_cur,
        partitions = partitions_max(limit.rlim_cur),
        "open-files limit: one file per partition segment (a queue is a partition), the rest \
         for connections; raise `ulimit -n` (hard) for more"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_a_tenth_at_least_1024_at_most_half() {
        assert_eq!(reserved(20_000), 2_000);
        assert_eq!(reserved(4_096), 1_024);
        assert_eq!(reserved(2_048), 1_024);
        assert_eq!(reserved(1_024), 512);
        assert_eq!(reserved(1 << 20), 104_857);
    }
}
