//! Reactor stalls: how late a shard runs a timer set to fire every [`TICK`]. A task that does not
//! yield (a long loop, a blocking call) delays every other task of its shard, the timer's too, so
//! the timer's lateness measures stalls from the inside, as Seastar's blocked-reactor reports do
//! for Redpanda. One watcher per shard, started with the metrics endpoint; it ends at shutdown.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::shard::Shard;

/// How often the watcher's timer fires: often enough to see a stall of a few ticks, rarely
/// enough that an idle shard barely wakes.
const TICK: Duration = Duration::from_millis(50);
/// Lateness from which a tick counts as a stall: 10 ms is 100 times a data-path task's slice
/// (glommio preempts task queues at 100 µs), and far above the timer's own jitter.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(10);

/// A shard's stalls since start.
#[derive(Clone, Copy, Debug, Default)]
pub struct StallTotals {
    pub stalls: u64,
    /// The lateness of the ticks counted in `stalls`.
    pub stalled_seconds: f64,
}

thread_local! {
    static TOTALS: Cell<StallTotals> = const { Cell::new(StallTotals { stalls: 0, stalled_seconds: 0.0 }) };
}

/// This shard's totals.
pub fn totals() -> StallTotals {
    TOTALS.with(Cell::get)
}

/// Starts this shard's watcher.
pub fn watch(shard: &Rc<Shard>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        loop {
            let start = Instant::now();
            let slept = futures_lite::future::or(
                async {
                    glommio::timer::sleep(TICK).await;
                    true
                },
                async {
                    shard.shutdown.wait().await;
                    false
                },
            )
            .await;
            if !slept {
                return;
            }
            note(start.elapsed().saturating_sub(TICK));
        }
    })
    .detach();
}

fn note(late: Duration) {
    if late < STALL_THRESHOLD {
        return;
    }
    TOTALS.with(|totals| {
        let mut now = totals.get();
        now.stalls += 1;
        now.stalled_seconds += late.as_secs_f64();
        totals.set(now);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_late_ticks_count() {
        note(Duration::from_millis(2));
        assert_eq!(totals().stalls, 0);
        note(Duration::from_millis(30));
        assert_eq!(totals().stalls, 1);
        assert!((totals().stalled_seconds - 0.03).abs() < 1e-9);
    }
}
