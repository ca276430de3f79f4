//! The executor facts the engine uses: spawning a task on this shard, timers, cooperative
//! yielding, and the blocking thread pool (for std::fs calls that must not block the reactor).
//!
//! Shard: the calling one; every task spawned here runs on the executor that spawned it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Runs `future` on this shard in the background; nothing waits for it.
pub(crate) fn spawn_detached(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

/// A task started on this shard whose result may be awaited later; it runs whether or not it is
/// awaited. Resolves to `None` if the task was cancelled.
pub(crate) struct Background<T>(glommio::task::JoinHandle<T>);

/// Runs `future` on this shard in the background; await the handle for its result.
pub(crate) fn spawn_background<T: 'static>(
    future: impl Future<Output = T> + 'static,
) -> Background<T> {
    Background(glommio::spawn_local(future).detach())
}

impl<T> Future for Background<T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

pub(crate) async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Yields to other tasks when this one has run past the executor's time slice (long loops).
pub(crate) async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// Runs `work` on the executor's blocking thread pool and waits for it, leaving the reactor free.
pub(crate) async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(work).await
}
