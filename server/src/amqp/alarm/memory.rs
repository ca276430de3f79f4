//! The memory resource of the alarms (`super`): the broker's resident memory against
//! `amqp.vm.memory.high.watermark` (RabbitMQ's `vm_memory_high_watermark`: a fraction of the
//! machine's memory, 0.4 by default, or `.absolute` bytes). RabbitMQ 3.10 on Linux measures the
//! same two things: its memory use as the process's RSS (`rabbitmqctl status`: "Calculation
//! strategy: rss") and the total as `/proc/meminfo`'s MemTotal. The alarm is on while the RSS is
//! above the limit. Runs on shard 0, inside the alarms' check.
//!
//! `/proc` reads are answered from kernel memory, never from a device, so they run on the
//! reactor.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{BrokerConfig, MemoryWatermark};
use crate::shard::Shard;

/// The watermark in bytes; `None` when it is a fraction and the machine's memory cannot be read
/// (logged; the memory alarm then stays off).
pub fn limit_bytes(config: &BrokerConfig) -> Option<u64> {
    let limit = match config.amqp_memory_high_watermark {
        MemoryWatermark::Absolute(bytes) => bytes,
        MemoryWatermark::Relative(fraction) => match total_bytes() {
            // f64 holds any machine's memory in bytes exactly enough for a limit.
            Ok(total) => (total as f64 * fraction) as u64,
            Err(error) => {
                tracing::warn!(%error, "reading MemTotal from /proc/meminfo failed: no memory alarm");
                return None;
            }
        },
    };
    tracing::info!(
        limit_bytes = limit,
        watermark = ?config.amqp_memory_high_watermark,
        "memory high watermark"
    );
    Some(limit)
}

/// Resident memory above the limit. A failing read leaves the alarm off (logged), as the disk
/// check does.
///
/// Freed memory leaves the RSS only when the allocator hands it back: each shard does so once a
/// second (`crate::allocator`), so after a queue holding about 100 MB of messages is deleted
/// under an 80 MB watermark the RSS falls to idle plus at most the shards' pooled write buffers
/// (`POOL_BYTES_MAX`, 32 MiB per shard, kept by design) within a few seconds, and the alarm
/// clears (`the_memory_alarm_unblocks_publishers_when_memory_is_freed`). Under glibc's malloc,
/// before mimalloc, one run of three stayed at 135 MB for over a minute: memory freed below a
/// live allocation stayed resident.
pub fn is_high(limit: Option<u64>) -> bool {
    let Some(limit) = limit else {
        return false;
    };
    match resident_bytes() {
        Ok(resident) => resident > limit,
        Err(error) => {
            tracing::warn!(%error, "reading /proc/self/statm failed");
            false
        }
    }
}

/// How often at most the check makes every shard return its free memory before raising.
const FORCED_COLLECT_INTERVAL: Duration = Duration::from_millis(250);

/// The memory alarm's state after one check, given whether it was on. Raising it needs the RSS
/// above the limit twice: as read, and again after every shard handed its free memory back
/// (`allocator::collect_everywhere`), so that a burst's garbage still in mimalloc's 1 s purge
/// delay does not block publishers. Without it a pika publisher of 1 MB messages was blocked at
/// a 168 MB watermark by 170 MB of RSS, unblocked a second later when the garbage left, and
/// blocked again. The forced collection runs at most every `FORCED_COLLECT_INTERVAL`; between
/// two, an alarm that is off stays off.
pub async fn check(
    shard: &Rc<Shard>,
    limit: Option<u64>,
    was_on: bool,
    last_collect: &mut Option<Instant>,
) -> bool {
    if !is_high(limit) {
        return false;
    }
    if was_on {
        return true;
    }
    let due = last_collect.is_none_or(|at| at.elapsed() >= FORCED_COLLECT_INTERVAL);
    if !due {
        return false;
    }
    crate::allocator::collect_everywhere(shard).await;
    *last_collect = Some(Instant::now());
    is_high(limit)
}

/// The broker's resident set size in bytes.
pub fn resident_bytes() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages = resident_pages(&statm).ok_or_else(|| invalid("/proc/self/statm", &statm))?;
    // SAFETY: sysconf has no preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages.saturating_mul(u64::try_from(page_bytes).unwrap_or(4096)))
}

/// The machine's memory in bytes (`MemTotal`).
pub fn total_bytes() -> std::io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    mem_total_bytes(&meminfo).ok_or_else(|| invalid("/proc/meminfo", &meminfo))
}

fn invalid(path: &str, text: &str) -> std::io::Error {
    let start: String = text.chars().take(80).collect();
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{path}: unexpected {start:?}"),
    )
}

/// `statm`'s second field: resident pages.
fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// `MemTotal:       24730952 kB` in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let mut fields = line["MemTotal:".len()..].split_ascii_whitespace();
    let kibibytes: u64 = fields.next()?.parse().ok()?;
    (fields.next()? == "kB").then(|| kibibytes.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_or_refused() {
        let check = |statm: &str, pages: Option<u64>| assert_eq!(resident_pages(statm), pages);
        check("10450 2580 1032 1102 0 3104 0\n", Some(2580));
        check("10450\n", None);
        check("", None);
        check("10450 lots 1032", None);
        let check = |meminfo: &str, bytes: Option<u64>| assert_eq!(mem_total_bytes(meminfo), bytes);
        check(
            "MemTotal:       24730952 kB\nMemFree: 1 kB\n",
            Some(24730952 * 1024),
        );
        check("MemFree: 1 kB\nMemTotal: 2 kB\n", Some(2048));
        check("MemTotal: 2 MB\n", None);
        check("MemTotal:\n", None);
        check("", None);
    }

    #[test]
    fn this_process_has_a_resident_size_and_the_machine_memory() {
        let resident = resident_bytes().unwrap();
        let total = total_bytes().unwrap();
        assert!(0 < resident && resident < total, "{resident} of {total}");
    }
}
