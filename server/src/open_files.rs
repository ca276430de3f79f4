//! The open-files limit and how it is shared. Segment files are the only descriptors a
//! partition (a queue is a partition) holds, and each shard keeps at most its budget of them
//! open (`weir_engine::io::set_segment_files_budget`: idle ones close, least recently used
//! first, and reopen on use), so the limit no longer bounds how many partitions a broker holds.
//! What does is memory (about 9 KiB per idle queue, docs/benchmarks.md) and disk; there is no
//! admission check for them: a creation is never refused for its count.

use std::sync::atomic::{AtomicU64, Ordering};

/// The soft RLIMIT_NOFILE after `raise_limit`; 0 until then.
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// What the limit keeps back for everything but segment files: client connections, the
/// metadata and ack-store files, io_uring rings and eventfds. A tenth, at least 1,024, but never
/// more than half (a limit of 1,024 still leaves 512 segment files).
pub fn reserved(limit: u64) -> u64 {
    (limit / 10).max(1024).min(limit / 2)
}

/// Segment descriptors each of `shards` shards may keep open: what the reserve leaves of the
/// limit, shared equally (at least 16 each); unbounded when the limit was never read (unit
/// tests of the shards).
pub fn segment_files_budget(shards: usize) -> usize {
    let files = LIMIT.load(Ordering::Relaxed);
    if files == 0 {
        return usize::MAX;
    }
    let room = files.saturating_sub(reserved(files)) / shards.max(1) as u64;
    usize::try_from(room).unwrap_or(usize::MAX).max(16)
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
        segment_files = limit.rlim_cur.saturating_sub(reserved(limit.rlim_cur)),
        "open-files limit: segment files share what the reserve leaves (idle ones close and \
         reopen on use), the rest is for connections"
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

    #[test]
    fn shards_share_what_the_reserve_leaves() {
        LIMIT.store(20_000, Ordering::Relaxed);
        assert_eq!(segment_files_budget(1), 18_000);
        assert_eq!(segment_files_budget(2), 9_000);
        LIMIT.store(1_024, Ordering::Relaxed);
        assert_eq!(segment_files_budget(64), 16);
        LIMIT.store(0, Ordering::Relaxed);
        assert_eq!(segment_files_budget(1), usize::MAX);
    }
}
