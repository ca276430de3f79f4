//! Shard-wide write slots: at most `WRITE_SLOTS_PER_SHARD` log writes in flight on a shard,
//! granted first come, first served.
//!
//! Why: every log's writer issues a write as soon as it has a batch and no write in flight. With
//! 1,000 partitions that means ~1,000 writes of one 16 KiB batch each, and the device, bound by
//! operations, not bytes, moved ~500-700 MB/s. A writer that waits for a slot keeps collecting
//! batches meanwhile, so the writes that go out are fewer and larger. One busy partition never
//! waits: it holds at most `WRITES_IN_FLIGHT_MAX` slots and there are many more.
//!
//! A slot is held from planning a write until its completion is applied. Thread-local: a shard's
//! logs share its slots, and nothing here crosses threads.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Waker;

use crate::limits::WRITE_SLOTS_PER_SHARD;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ticket {
    Waiting,
    Granted,
    Cancelled,
}

struct Slots {
    free: usize,
    queue: VecDeque<(Rc<Cell<Ticket>>, Waker)>,
}

thread_local! {
    static SLOTS: RefCell<Slots> = const {
        RefCell::new(Slots { free: WRITE_SLOTS_PER_SHARD, queue: VecDeque::new() })
    };
}

/// One writer's claim on the shard's slots: holds the slots it was granted and its place in the
/// queue; gives both back when dropped.
#[derive(Default)]
pub(crate) struct SlotClaim {
    held: usize,
    ticket: Option<Rc<Cell<Ticket>>>,
}

impl SlotClaim {
    /// Takes a slot now (true), or queues for one and wakes `waker` when it is granted.
    pub(crate) fn try_take(&mut self, waker: &Waker) -> bool {
        if let Some(ticket) = &self.ticket {
            match ticket.get() {
                Ticket::Granted => {
                    self.ticket = None;
                    self.held += 1;
                    return true;
                }
                // Still queued: keep the place (one entry per writer, however often polled).
                _ => return false,
            }
        }
        SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            if slots.free > 0 && slots.queue.is_empty() {
                slots.free -= 1;
                self.held += 1;
                return true;
            }
            let ticket = Rc::new(Cell::new(Ticket::Waiting));
            slots.queue.push_back((ticket.clone(), waker.clone()));
            self.ticket = Some(ticket);
            false
        })
    }

    /// Queued for a slot that is not granted yet.
    pub(crate) fn waiting(&self) -> bool {
        self.ticket
            .as_ref()
            .is_some_and(|t| t.get() == Ticket::Waiting)
    }

    /// Passes on a slot granted to this claim that its writer did not take (it had nothing to
    /// write when woken, or could not start a write yet): a granted slot left unused would be
    /// lost to the shard until the writer ends. Called at the end of every writer poll.
    pub(crate) fn pass_unused_grant(&mut self) {
        if self
            .ticket
            .as_ref()
            .is_some_and(|t| t.get() == Ticket::Granted)
        {
            self.ticket = None;
            release_one();
        }
    }

    /// Gives back one held slot.
    pub(crate) fn release(&mut self) {
        assert!(self.held > 0, "releasing a slot that is not held");
        self.held -= 1;
        release_one();
    }

    /// Gives back every held slot (after a failure drained the writes).
    pub(crate) fn release_all(&mut self) {
        while self.held > 0 {
            self.release();
        }
    }
}

impl Drop for SlotClaim {
    fn drop(&mut self) {
        self.release_all();
        if let Some(ticket) = self.ticket.take() {
            match ticket.get() {
                Ticket::Granted => release_one(),
                _ => ticket.set(Ticket::Cancelled),
            }
        }
    }
}

/// Hands a freed slot to the first writer still waiting, or returns it to the pool.
fn release_one() {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        while let Some((ticket, waker)) = slots.queue.pop_front() {
            if ticket.get() == Ticket::Waiting {
                ticket.set(Ticket::Granted);
                waker.wake();
                return;
            }
        }
        slots.free += 1;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag(false.into()));
        (flag.clone(), Waker::from(flag))
    }

    #[test]
    fn slots_are_granted_in_order_and_returned_on_drop() {
        let (_, w) = waker();
        let mut holders: Vec<SlotClaim> = Vec::new();
        for _ in 0..WRITE_SLOTS_PER_SHARD {
            let mut claim = SlotClaim::default();
            assert!(claim.try_take(&w));
            holders.push(claim);
        }
        let (first_flag, first_waker) = waker();
        let mut first = SlotClaim::default();
        assert!(!first.try_take(&first_waker));
        assert!(
            !first.try_take(&first_waker),
            "polling again keeps one place"
        );
        let (second_flag, second_waker) = waker();
        let mut second = SlotClaim::default();
        assert!(!second.try_take(&second_waker));
        // A cancelled place is skipped.
        let (_, third_waker) = waker();
        let mut third = SlotClaim::default();
        assert!(!third.try_take(&third_waker));
        drop(third);
        holders[0].release();
        assert!(first_flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!second_flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(first.try_take(&first_waker));
        holders[1].release();
        assert!(second_flag.0.load(std::sync::atomic::Ordering::SeqCst));
        // A grant its writer does not take is passed on.
        let (fourth_flag, fourth_waker) = waker();
        let mut fourth = SlotClaim::default();
        assert!(!fourth.try_take(&fourth_waker));
        second.pass_unused_grant();
        assert!(fourth_flag.0.load(std::sync::atomic::Ordering::SeqCst));
        drop(fourth);
        // Dropped with a granted but untaken slot: the slot goes back.
        drop(second);
        drop(first);
        drop(holders);
        let mut all: Vec<SlotClaim> = Vec::new();
        for _ in 0..WRITE_SLOTS_PER_SHARD {
            let mut claim = SlotClaim::default();
            assert!(claim.try_take(&w), "every slot came back");
            all.push(claim);
        }
        let mut extra = SlotClaim::default();
        assert!(!extra.try_take(&w));
    }
}
