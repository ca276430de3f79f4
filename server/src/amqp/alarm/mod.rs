//! RabbitMQ's resource alarms: while the data directory's filesystem has less free space than
//! `amqp.disk.free.limit` (`disk.rs`, RabbitMQ's `disk_free_limit`), or the broker's resident
//! memory is above `amqp.vm.memory.high.watermark` (`memory.rs`, RabbitMQ's
//! `vm_memory_high_watermark`), an AMQP connection that publishes stops being read after the
//! publish, and is sent connection.blocked if its client announced the `connection.blocked`
//! capability; connection.unblocked and reading resume once no alarm is left. Connections that
//! only consume go on and are not told, as in RabbitMQ 3.10.
//!
//! The alarm state is a set of resources, as RabbitMQ's (`rabbit_alarm`): a connection is blocked
//! while the set is not empty, told the set's reason when it is blocked, and unblocked when the
//! set is empty again. RabbitMQ 3.10 answered (pika, `rabbitmqctl set_vm_memory_high_watermark
//! absolute 1` and `set_disk_free_limit` above the free space):
//!
//! | alarms on when the publisher is blocked | connection.blocked reason |
//! |---|---|
//! | disk                                    | `low on disk`             |
//! | memory                                  | `low on memory`           |
//! | both (either set first)                 | `low on disk & memory`    |
//!
//! An alarm raised or cleared while a connection is blocked changes nothing it is told: no second
//! connection.blocked, and connection.unblocked only when the last alarm clears.
//!
//! Shard 0 checks both resources every 100 ms, on one path (`spawn`), and tells every shard over
//! the mesh (`Job::Run`) when the set changes; each shard keeps its own copy of the set
//! (`thread_local!`, no shared state). A change fires the shard's current `Signal` and puts a
//! fresh one in its place, so any number of blocked connections wait for the next change without
//! a waker kept past it.

pub mod disk;
pub mod memory;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use amq_protocol::protocol::{connection, AMQPClass};

use super::connection::Conn;
use crate::shard::mesh::Job;
use crate::shard::signal::Signal;
use crate::shard::{Shard, ShardId};

/// How often shard 0 looks at free space and memory (RabbitMQ: free space every 10 s at most,
/// faster when close). Both reads cost microseconds, and the interval bounds how far a fast
/// publisher overshoots the watermark: at 1 s, a pika publisher of 1 MB messages took the RSS
/// from a 170 MB watermark to 360-600 MB before the alarm came (and once past 646 MB with no
/// alarm at all, failing `the_memory_alarm_unblocks_publishers_when_memory_is_freed`).
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A resource that can run low.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Disk,
    Memory,
}

impl Resource {
    const ALL: [Resource; 2] = [Resource::Disk, Resource::Memory];

    fn bit(self) -> u8 {
        match self {
            Resource::Disk => 1,
            Resource::Memory => 2,
        }
    }

    /// RabbitMQ's word for it in a connection.blocked reason (`rabbit_reader`).
    fn word(self) -> &'static str {
        match self {
            Resource::Disk => "disk",
            Resource::Memory => "memory",
        }
    }
}

/// The resources in alarm: a set, empty when publishers may go on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Alarms(u8);

impl Alarms {
    pub fn with(self, resource: Resource, on: bool) -> Alarms {
        if on {
            Alarms(self.0 | resource.bit())
        } else {
            Alarms(self.0 & !resource.bit())
        }
    }

    pub fn contains(self, resource: Resource) -> bool {
        self.0 & resource.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The connection.blocked reason, as RabbitMQ 3.10 words it: `low on ` and the resources
    /// joined with ` & `, disk first (the table above).
    pub fn reason(self) -> String {
        let words: Vec<&str> = Resource::ALL
            .into_iter()
            .filter(|resource| self.contains(*resource))
            .map(Resource::word)
            .collect();
        format!("low on {}", words.join(" & "))
    }
}

thread_local! {
    static ALARMS: Cell<Alarms> = const { Cell::new(Alarms(0)) };
    static CHANGED: RefCell<Rc<Signal>> = RefCell::new(Rc::new(Signal::default()));
}

/// This shard's copy of the alarm set.
pub fn current() -> Alarms {
    ALARMS.with(Cell::get)
}

/// Fires when the set next changes on this shard.
fn next_change() -> Rc<Signal> {
    CHANGED.with(|changed| changed.borrow().clone())
}

fn set(alarms: Alarms) {
    if ALARMS.with(|cell| cell.replace(alarms)) == alarms {
        return;
    }
    let fired = CHANGED.with(|changed| changed.replace(Rc::new(Signal::default())));
    fired.fire();
}

/// Starts the checks on shard 0 (every shard's start hook calls this); they stop at shutdown.
pub fn spawn(shard: Rc<Shard>) {
    if shard.id.index() != 0 {
        return;
    }
    let memory_limit = memory::limit_bytes(&shard.config);
    glommio::spawn_local(async move {
        let mut last = Alarms::default();
        let mut last_collect = None;
        while !shard.shutdown.is_fired() {
            let was_high = last.contains(Resource::Memory);
            let high = memory::check(&shard, memory_limit, was_high, &mut last_collect).await;
            let alarms = Alarms::default()
                .with(Resource::Disk, disk::is_low(&shard.config))
                .with(Resource::Memory, high);
            if alarms != last {
                log_change(last, alarms, memory_limit);
                last = alarms;
                tell_every_shard(&shard, alarms).await;
            }
            futures_lite::future::or(glommio::timer::sleep(CHECK_INTERVAL), shard.shutdown.wait())
                .await;
        }
    })
    .detach();
}

fn log_change(last: Alarms, alarms: Alarms, memory_limit: Option<u64>) {
    for resource in Resource::ALL {
        let on = alarms.contains(resource);
        if last.contains(resource) != on {
            match resource {
                Resource::Memory => {
                    let rss = memory::resident_bytes().ok();
                    tracing::warn!(on, rss, limit = memory_limit, "memory alarm");
                }
                Resource::Disk => tracing::warn!(on, "disk alarm"),
            }
        }
    }
}

async fn tell_every_shard(shard: &Rc<Shard>, alarms: Alarms) {
    for index in 0..shard.mesh.shards.len() {
        if index == shard.id.index() {
            set(alarms);
            continue;
        }
        let job = Job::Run(Box::new(move |_| set(alarms)));
        let _ = shard.mesh.inbox(ShardId(index)).send_async(job).await;
    }
}

fn blocked(alarms: Alarms) -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
        reason: alarms.reason().into(),
    }))
}

fn unblocked() -> AMQPClass {
    AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {}))
}

/// The reader's gate after a frame: a connection that published while an alarm is on is not
/// read again until none is (or the shard shuts down). As RabbitMQ 3.10: connection.blocked,
/// with the reason of the alarms on at that moment, goes to a client that announced the
/// capability when its connection is blocked, at a publish, and connection.unblocked when it is
/// read again; a connection that does not publish is neither blocked nor told.
pub async fn hold_publisher(conn: &Conn) {
    let alarms = current();
    if !conn.published.replace(false) || alarms.is_empty() {
        return;
    }
    let tell = conn.wants_blocked.get();
    // A failed send means the socket is gone: the reader finds out at its next read.
    if tell {
        let _ = conn.send_method(0, blocked(alarms)).await;
    }
    while !current().is_empty() && !conn.shard.shutdown.is_fired() {
        let changed = next_change();
        futures_lite::future::or(changed.wait(), conn.shard.shutdown.wait()).await;
    }
    if tell && current().is_empty() {
        let _ = conn.send_method(0, unblocked()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_rabbitmqs() {
        let check = |alarms: Alarms, reason: &str| assert_eq!(alarms.reason(), reason);
        let none = Alarms::default();
        check(none.with(Resource::Disk, true), "low on disk");
        check(none.with(Resource::Memory, true), "low on memory");
        let both = none.with(Resource::Memory, true).with(Resource::Disk, true);
        check(both, "low on disk & memory");
        check(both.with(Resource::Disk, false), "low on memory");
        assert!(both
            .with(Resource::Disk, false)
            .with(Resource::Memory, false)
            .is_empty());
    }
}
