//! A one-shot, shard-local event (shutdown, a connection's end): fired once, awaited by any number
//! of tasks of the same shard. `!Send`; no locks.
//!
//! A wait that ends without the signal firing (it lost a `future::or` race: every connection
//! waits on the shard's shutdown beside each read) takes its waker back out when it is dropped.
//! Kept, those wakers piled up, one per connection ever served, each holding its finished task's
//! memory (about 1 KiB), and every new wait scanned them all.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Signal {
    fired: Cell<bool>,
    next_key: Cell<u64>,
    /// The wakers of the waits in progress, by the key each wait holds.
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Signal {
    pub fn fire(&self) {
        self.fired.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters.into_values() {
            waker.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Ready once the signal has fired.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            signal: self,
            key: None,
        }
    }
}

/// One task waiting for a `Signal`; registered while pending, removed when dropped.
pub struct Wait<'a> {
    signal: &'a Signal,
    key: Option<u64>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                let key = self.signal.next_key.get();
                self.signal.next_key.set(key + 1);
                self.key = Some(key);
                key
            }
        };
        let mut waiters = self.signal.waiters.borrow_mut();
        match waiters.get_mut(&key) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                waiters.insert(key, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.signal.waiters.borrow_mut().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn dropped_waits_leave_nothing_behind_and_fire_wakes_the_pending_ones() {
        let signal = Signal::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut kept = signal.wait();
        assert!(Pin::new(&mut kept).poll(&mut cx).is_pending());
        // Polled again by the same task: still one waiter.
        assert!(Pin::new(&mut kept).poll(&mut cx).is_pending());
        // Other tasks (other wakers) whose waits lose their race and are dropped.
        for _ in 0..1000 {
            let other = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
            let mut lost = signal.wait();
            let mut other_cx = Context::from_waker(&other);
            assert!(Pin::new(&mut lost).poll(&mut other_cx).is_pending());
        }
        assert_eq!(signal.waiters.borrow().len(), 1);
        signal.fire();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut kept).poll(&mut cx).is_ready());
        assert!(signal.is_fired());
        assert!(signal.waiters.borrow().is_empty());
        // A wait that starts after the fire is ready at once and registers nothing.
        let mut late = signal.wait();
        assert!(Pin::new(&mut late).poll(&mut cx).is_ready());
        assert!(signal.waiters.borrow().is_empty());
    }
}
