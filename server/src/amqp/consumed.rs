//! Consumed segments: a queue is consumed, not retained. On every shard a timer deletes, for each
//! queue the shard owns, the whole segments of the queue's log whose every message is finished
//! (acknowledged or archived), with the engine's `Log::delete_segments_below` (the retention
//! path: sealed segments only, never the active one). Queue topics have Kafka retention off
//! (`queue.rs`), so this is the only thing that shrinks a queue's log. Stream queues (not yet
//! supported) will keep Kafka retention instead and must be skipped here.
//!
//! Runs on the shard that owns the queues' logs; shard-local, no borrow held across an `.await`.
//! Nothing happens per message: each pass (every `log.retention.check.interval.ms`, at least
//! every `PASS_INTERVAL_MAX`) reads each queue's floor and calls the engine only for a queue
//! whose deletable floor is past its log start offset.
//!
//! **Invariant:** a segment of a durable queue is deleted only when every offset in it is below
//! the queue's *durable* floor, the one its ack store has written and fdatasynced
//! (`AckStore::durable_floor`; the store's mirror only ever holds synced state), and below its
//! in-memory floor. Floors only rise, so whatever a crash takes back, the floor restored from the
//! ack store is at or above the log start offset: every message the restored queue counts as
//! unfinished is still in the log, and no message goes before its acknowledgement would survive
//! a crash. Deleting below the in-memory floor alone would let a crash restore a floor below the
//! deleted data: messages the queue then counts as ready that nobody can get. The in-memory
//! floor bounds it as well because the store's mirror of a queue that was deleted and declared
//! again keeps the old queue's floor until the forget is written. A transient queue has no ack
//! store and does not survive a restart: its in-memory floor is the rule.
//!
//! ```text
//!   log segments   [0, 100)  [100, 250)  [250, 400)  [400, … active)
//!   durable floor 260, in-memory floor 390: below min(260, 390) = 260
//!   → [0, 100) and [100, 250) go; [250, 400) holds 260..399 and stays; the active one stays
//!   log start offset 250 (on restart too: the first remaining segment's base)
//! ```
//!
//! Recovery copes with either order of the two (`restored_floor`): a store floor at or above the
//! log start is the normal case (segments not deleted yet, or a crash before their unlink); a log
//! that starts above the store's floor (segments removed some other way: retention set on the
//! queue's topic by a Kafka client, a lost ack store) raises the restored floor to the log start.
//!
//! Kafka consumers reading a queue's topic (replay, audit) see only what is not deleted yet: the
//! unconsumed messages and the consumed ones of segments not yet deleted (docs/amqp-compat.md).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use weir_engine::{Log, LogError, Offset};

use super::queue_owner;
use crate::queues::QueueKey;
use crate::shard::Shard;

/// The longest time between two passes, whatever `log.retention.check.interval.ms` says (Kafka's
/// default is 5 minutes): a queue consumed at disk speed would otherwise hold minutes of
/// acknowledged data on disk.
const PASS_INTERVAL_MAX: Duration = Duration::from_secs(10);

/// Starts this shard's pass over its queues; it stops at shutdown.
pub fn spawn(shard: Rc<Shard>) {
    let interval =
        Duration::from_millis(shard.config.retention_check_interval_ms).min(PASS_INTERVAL_MAX);
    glommio::spawn_local(async move {
        loop {
            futures_lite::future::or(glommio::timer::sleep(interval), shard.shutdown.wait()).await;
            if shard.shutdown.is_fired() {
                return;
            }
            delete_consumed(&shard).await;
        }
    })
    .detach();
}

/// One pass: every queue of this shard loses the segments below its deletable floor.
async fn delete_consumed(shard: &Shard) {
    // Floors and logs are taken together, before any await: a queue deleted (and perhaps
    // declared again) meanwhile keeps its old, closed log here, which refuses.
    let store = queue_owner::ack_store();
    let work: Vec<(Arc<str>, Log, Offset)> = queue_owner::floors()
        .into_iter()
        .filter_map(|(name, durable, floor)| {
            let durable_floor = match (&store, durable) {
                (Some(store), true) => store.durable_floor(&QueueKey::new(&*name, 0)),
                _ => None,
            };
            let below = deletable_below(durable, floor, durable_floor)?;
            let log = shard.log(&name, 0)?;
            (below.get() > log.log_start_offset()).then_some((name, log, below))
        })
        .collect();
    for (name, log, below) in work {
        let before = log.log_start_offset();
        match log.delete_segments_below(below.get()).await {
            Ok(start) if start > before => {
                tracing::debug!(queue = %name, log_start_offset = start, "deleted consumed segments");
            }
            Ok(_) | Err(LogError::Closed) => {}
            Err(error) => {
                tracing::warn!(queue = %name, %error, "deleting consumed segments failed");
            }
        }
        glommio::yield_if_needed().await;
    }
}

/// The offset below which a queue's segments may go (see the invariant above): for a durable
/// queue the lower of its in-memory floor and the floor its ack store has persisted (none yet:
/// nothing goes); for a transient one its in-memory floor.
fn deletable_below(durable: bool, floor: Offset, durable_floor: Option<Offset>) -> Option<Offset> {
    if durable {
        durable_floor.map(|persisted| persisted.min(floor))
    } else {
        Some(floor)
    }
}

/// The floor a durable queue restarts with: its ack store's, raised to the log start offset when
/// the log starts above it (the messages in between are gone, so counting them as ready would
/// report messages nobody can get). The deletion above never causes that; it is logged.
pub(super) fn restored_floor(name: &str, floor: Offset, log_start: Offset) -> Offset {
    if floor < log_start {
        tracing::warn!(
            queue = name,
            floor = floor.get(),
            log_start_offset = log_start.get(),
            "the queue's log starts above its acknowledged floor: the messages in between are gone"
        );
        return log_start;
    }
    floor
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(value: i64) -> Offset {
        Offset::new(value)
    }

    #[test]
    fn segments_go_only_below_the_persisted_and_the_in_memory_floor() {
        // (durable, in-memory floor, persisted floor) → delete below
        let table = [
            ((true, 390, Some(260)), Some(260)),
            ((true, 100, Some(260)), Some(100)),
            ((true, 390, None), None),
            ((true, 0, Some(0)), Some(0)),
            ((false, 390, None), Some(390)),
            ((false, 390, Some(10)), Some(390)),
        ];
        for ((durable, floor, persisted), want) in table {
            let got = deletable_below(durable, offset(floor), persisted.map(offset));
            assert_eq!(got, want.map(offset), "{durable} {floor} {persisted:?}");
        }
    }

    #[test]
    fn the_restored_floor_is_never_below_the_log_start() {
        // (store floor, log start) → restored floor
        let table = [
            ((260, 250), 260),
            ((250, 250), 250),
            ((100, 250), 250),
            ((0, 0), 0),
        ];
        for ((floor, start), want) in table {
            assert_eq!(
                restored_floor("q", offset(floor), offset(start)),
                offset(want)
            );
        }
    }
}
