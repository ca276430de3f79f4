//! What one connection may hold: requests read ahead of their answers
//! (`weir.connection.max.inflight.requests`) and bytes of request frames and answers
//! (`weir.connection.max.buffer.bytes`). When either is used up the connection's reader stops
//! reading its socket until answers are written: backpressure, never a dropped request.
//!
//! Lives on the connection's shard, shared by its reader and writer tasks through an `Rc`. Only
//! the reader waits on it (one waker); the writer only gives back, so the writer can never wait
//! for the reader and the two cannot deadlock.
//!
//! | charge                        | taken by | when                      | given back                  |
//! |-------------------------------|----------|---------------------------|-----------------------------|
//! | one request                   | reader   | before reading a frame    | its answer written (or none)|
//! | `min(frame, bytes_max)` bytes | reader   | after the size prefix     | its answer written (or none)|
//! | answer bytes                  | writer   | answer computed, no wait  | answer written              |
//!
//! A frame is charged at most `bytes_max`, so a frame larger than the whole budget is still read,
//! once nothing else is held. Answers are charged without waiting and may take the total past
//! `bytes_max`; the reader then waits until they are written.

use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

pub struct Budget {
    requests_max: usize,
    bytes_max: usize,
    requests: Cell<usize>,
    bytes: Cell<usize>,
    /// The writer is gone: nothing will be given back.
    closed: Cell<bool>,
    reader: Cell<Option<Waker>>,
}

/// A share of a connection's budget, given back when dropped.
pub struct Ticket {
    budget: Rc<Budget>,
    requests: usize,
    bytes: usize,
}

impl Budget {
    pub fn new(requests_max: usize, bytes_max: usize) -> Rc<Budget> {
        assert!(requests_max > 0 && bytes_max > 0);
        Rc::new(Budget {
            requests_max,
            bytes_max,
            requests: Cell::new(0),
            bytes: Cell::new(0),
            closed: Cell::new(false),
            reader: Cell::new(None),
        })
    }

    /// Waits until one more request may be read; false once the writer is gone.
    pub async fn request_slot(&self) -> bool {
        self.wait_until(|budget| budget.requests.get() < budget.requests_max)
            .await
    }

    /// Waits until a frame of `frame_bytes` may be read, then charges it and one request; `None`
    /// once the writer is gone. Call after `request_slot`.
    pub async fn admit(self: &Rc<Self>, frame_bytes: usize) -> Option<Ticket> {
        let charge = frame_bytes.min(self.bytes_max);
        let admitted = self
            .wait_until(|budget| {
                budget.requests.get() < budget.requests_max
                    && budget.bytes.get() + charge <= budget.bytes_max
            })
            .await;
        admitted.then(|| self.take(1, charge))
    }

    /// Charges an answer's bytes without waiting (the writer must never wait on the reader).
    pub fn charge_answer(self: &Rc<Self>, bytes: usize) -> Ticket {
        self.take(0, bytes)
    }

    /// The writer is gone; a waiting reader gives up.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake_reader();
    }

    fn take(self: &Rc<Self>, requests: usize, bytes: usize) -> Ticket {
        self.requests.set(self.requests.get() + requests);
        self.bytes.set(self.bytes.get() + bytes);
        Ticket {
            budget: self.clone(),
            requests,
            bytes,
        }
    }

    async fn wait_until(&self, ready: impl Fn(&Budget) -> bool) -> bool {
        poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(false);
            }
            if ready(self) {
                return Poll::Ready(true);
            }
            self.reader.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    fn wake_reader(&self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let budget = &self.budget;
        budget.requests.set(budget.requests.get() - self.requests);
        budget.bytes.set(budget.bytes.get() - self.bytes);
        budget.wake_reader();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn requests_past_the_limit_wait_for_an_answer() {
        let budget = Budget::new(2, 1 << 20);
        let first = block_on(budget.admit(10)).unwrap();
        let _second = block_on(budget.admit(10)).unwrap();
        assert!(block_on(poll_once(budget.request_slot())).is_none());
        drop(first);
        assert_eq!(block_on(poll_once(budget.request_slot())), Some(true));
    }

    #[test]
    fn bytes_past_the_limit_wait_and_a_large_frame_waits_for_an_empty_budget() {
        let budget = Budget::new(64, 100);
        let small = block_on(budget.admit(60)).unwrap();
        assert!(block_on(poll_once(budget.admit(50))).is_none());
        // Larger than the whole budget: charged as the whole budget, so read once alone.
        assert!(block_on(poll_once(budget.admit(1000))).is_none());
        drop(small);
        let large = block_on(poll_once(budget.admit(1000))).unwrap().unwrap();
        assert_eq!(budget.bytes.get(), 100);
        drop(large);
        assert_eq!((budget.bytes.get(), budget.requests.get()), (0, 0));
    }

    #[test]
    fn answers_are_charged_without_waiting_and_hold_the_reader() {
        let budget = Budget::new(64, 100);
        let answer = budget.charge_answer(500);
        assert!(block_on(poll_once(budget.admit(1))).is_none());
        drop(answer);
        assert!(block_on(poll_once(budget.admit(1))).unwrap().is_some());
    }

    #[test]
    fn a_closed_budget_releases_the_reader() {
        let budget = Budget::new(1, 100);
        let _held = block_on(budget.admit(1)).unwrap();
        budget.close();
        assert!(!block_on(budget.request_slot()));
        assert!(block_on(budget.admit(1)).is_none());
    }
}
