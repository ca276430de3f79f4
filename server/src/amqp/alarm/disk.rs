//! The disk resource of the alarms (`super`): free space on the data directory's filesystem
//! against `amqp.disk.free.limit` (RabbitMQ's `disk_free_limit`, 50 MB by default). Runs on
//! shard 0, inside the alarms' check.

use crate::config::BrokerConfig;

/// Free space below the limit. A failing statvfs leaves the alarm off (logged): refusing
/// publishers because the check broke would be worse than missing a full disk, which the
/// engine reports on write anyway.
pub fn is_low(config: &BrokerConfig) -> bool {
    match free_bytes(&config.data_dir) {
        Ok(free) => free < config.amqp_disk_free_limit_bytes,
        Err(error) => {
            tracing::warn!(%error, "statvfs of the data directory failed");
            false
        }
    }
}

/// Bytes available to an unprivileged user on the filesystem of `path` (what `df` shows free).
/// statvfs is a metadata call answered from memory, so it runs on the reactor.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is a NUL-terminated string and `stat` is a valid out pointer.
    let result = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs succeeded and filled it.
    let stat = unsafe { stat.assume_init() };
    // Both are u64 on 64-bit Linux, the only target.
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}
