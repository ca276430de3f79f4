//! Runs many futures of one task with at most a fixed number in flight, without spawning: the
//! futures may borrow from the caller (a shard's `&self`), which `glommio::spawn_local` forbids.
//! Used where a shard waits on independent I/O one item after another otherwise (opening its
//! logs at start: each open awaits its own io_uring round trips, so a thousand in sequence cost
//! a thousand round trips, and a bounded number at once overlap them).
//!
//! Runs on the calling shard, inside the calling task; bounded so that what the futures hold
//! (descriptors, buffers) stays bounded too.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Futures completed in one poll before the joining task yields to the others on its shard.
const COMPLETIONS_PER_POLL_MAX: usize = 256;

/// Runs every future of `futures` to completion, at most `limit` (at least 1) at once, started
/// in order; resolves when all have. Outputs are dropped: each future reports its own outcome.
pub async fn join_bounded<F>(futures: impl IntoIterator<Item = F>, limit: usize)
where
    F: Future<Output = ()>,
{
    let limit = limit.max(1);
    let mut waiting = futures.into_iter();
    let mut running: Vec<Pin<Box<F>>> = Vec::with_capacity(limit);
    std::future::poll_fn(move |context| {
        let mut completed = 0;
        loop {
            while running.len() < limit {
                match waiting.next() {
                    Some(future) => running.push(Box::pin(future)),
                    None => break,
                }
            }
            if running.is_empty() {
                return Poll::Ready(());
            }
            let before = running.len();
            running.retain_mut(|future| future.as_mut().poll(context).is_pending());
            if running.len() == before {
                return Poll::Pending;
            }
            completed += before - running.len();
            if completed >= COMPLETIONS_PER_POLL_MAX {
                // Futures that complete without waiting would otherwise hold the shard here.
                context.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::time::Duration;

    /// Every future runs, never more than `limit` at once, started in order.
    fn check(count: usize, limit: usize) {
        let started = RefCell::new(Vec::new());
        let (in_flight, most) = (Cell::new(0usize), Cell::new(0usize));
        glommio::LocalExecutor::default().run(async {
            let futures = (0..count).map(|index| {
                let (started, in_flight, most) = (&started, &in_flight, &most);
                async move {
                    started.borrow_mut().push(index);
                    in_flight.set(in_flight.get() + 1);
                    most.set(most.get().max(in_flight.get()));
                    // Some finish at once, the others after a wait of their own.
                    if index % 3 != 0 {
                        glommio::timer::sleep(Duration::from_micros(50 * (index % 5) as u64)).await;
                    }
                    in_flight.set(in_flight.get() - 1);
                }
            });
            join_bounded(futures, limit).await;
        });
        assert_eq!(*started.borrow(), (0..count).collect::<Vec<_>>());
        assert!(
            most.get() <= limit.max(1),
            "{} at once, limit {limit}",
            most.get()
        );
        assert_eq!(in_flight.get(), 0);
    }

    #[test]
    fn runs_everything_within_the_limit() {
        for (count, limit) in [(0, 4), (1, 4), (10, 1), (10, 0), (100, 8), (1000, 64)] {
            check(count, limit);
        }
    }
}
