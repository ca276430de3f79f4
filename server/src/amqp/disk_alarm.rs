//! RabbitMQ's disk alarm: while the data directory's filesystem has less free space than
//! `amqp.disk.free.limit` bytes (RabbitMQ's `disk_free_limit`, 50 MB by default), an AMQP
//! connection that publishes stops being read after the publish, and is sent
//! connection.blocked ("low on disk", RabbitMQ's text) if its client announced the
//! `connection.blocked` capability; connection.unblocked and reading resume when space is back.
//! Connections that only consume go on and are not told, as in RabbitMQ 3.10.
//!
//! Shard 0 checks free space every second (`statvfs`) and tells every shard over the mesh
//! (`Job::Run`); each shard keeps its own copy of the alarm (`thread_local!`, no shared state).
//! A change fires the shard's current `Signal` and puts a fresh one in its place, so any number
//! of blocked connections wait for the next change without a waker kept past it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use amq_protocol::protocol::{connection, AMQPClass};

use super::connection::Conn;
use crate::shard::mesh::Job;
use crate::shard::signal::Signal;
use crate::shard::{Shard, ShardId};

/// How often shard 0 looks at free space (RabbitMQ: every 10 s at most, faster when close).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// RabbitMQ's reason for a disk alarm (`rabbit_reader:format_blocked_by`).
pub const REASON: &str = "low on disk";

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static CHANGED: RefCell<Rc<Signal>> = RefCell::new(Rc::new(Signal::default()));
}

/// Whether this shard's copy of the alarm is on.
pub fn is_on() -> bool {
    ON.with(Cell::get)
}

/// Fires when the alarm next changes on this shard.
fn next_change() -> Rc<Signal> {
    CHANGED.with(|changed| changed.borrow().clone())
}

fn set(on: bool) {
    if ON.with(|cell| cell.replace(on)) == on {
        return;
    }
    let fired = CHANGED.with(|changed| changed.replace(Rc::new(Signal::default())));
    fired.fire();
}

/// Starts the check on shard 0 (every shard's start hook calls this); it stops at shutdown.
pub fn spawn(shard: Rc<Shard>) {
    if shard.id.index() != 0 {
        return;
    }
    glommio::spawn_local(async move {
        let mut last = false;
        while !shard.shutdown.is_fired() {
            let on = low_on_disk(&shard);
            if on != last {
                last = on;
                tell_every_shard(&shard, on).await;
            }
            futures_lite::future::or(glommio::timer::sleep(CHECK_INTERVAL), shard.shutdown.wait())
                .await;
        }
    })
    .detach();
}

/// Free space below the limit. A failing statvfs leaves the alarm off (logged): refusing
/// publishers because the check broke would be worse than missing a full disk, which the
/// engine reports on write anyway.
fn low_on_disk(shard: &Shard) -> bool {
    match free_bytes(&shard.config.data_dir) {
        Ok(free) => free < shard.config.amqp_disk_free_limit_bytes,
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

async fn tell_every_shard(shard: &Rc<Shard>, on: bool) {
    tracing::warn!(on, "disk alarm ({REASON})");
    for index in 0..shard.mesh.shards.len() {
        if index == shard.id.index() {
            set(on);
            continue;
        }
        let job = Job::Run(Box::new(move |_| set(on)));
        let _ = shard.mesh.inbox(ShardId(index)).send_async(job).await;
    }
}

fn method(on: bool) -> AMQPClass {
    AMQPClass::Connection(if on {
        connection::AMQPMethod::Blocked(connection::Blocked {
            reason: REASON.into(),
        })
    } else {
        connection::AMQPMethod::Unblocked(connection::Unblocked {})
    })
}

/// The reader's gate after a frame: a connection that published while the alarm is on is not
/// read again until it is off (or the shard shuts down). As RabbitMQ 3.10 (checked with
/// `rabbitmqctl set_disk_free_limit`): connection.blocked goes to a client that announced the
/// capability when its connection is blocked, at a publish, and connection.unblocked when it is
/// read again; a connection that does not publish is neither blocked nor told.
pub async fn hold_publisher(conn: &Conn) {
    if !conn.published.replace(false) || !is_on() {
        return;
    }
    let tell = conn.wants_blocked.get();
    // A failed send means the socket is gone: the reader finds out at its next read.
    if tell {
        let _ = conn.send_method(0, method(true)).await;
    }
    while is_on() && !conn.shard.shutdown.is_fired() {
        let changed = next_change();
        futures_lite::future::or(changed.wait(), conn.shard.shutdown.wait()).await;
    }
    if tell && !is_on() {
        let _ = conn.send_method(0, method(false)).await;
    }
}
