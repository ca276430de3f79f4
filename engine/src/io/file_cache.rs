//! The shard's descriptor cache for segment files: a segment file may be closed while idle and is
//! opened again on its next use, so that a shard holds at most its budget of segment descriptors
//! however many segments (partitions, queues) it has.
//!
//! Shard: one cache per thread (per executor); nothing here is shared between shards except the
//! process-wide count of open segment descriptors (`OPEN_SEGMENT_FILES`).
//!
//! ```text
//!  state of a slot        in the LRU   evictable                      reopened on use
//!  open, no op in flight  yes          yes (strong count of dma = 1)  -
//!  open, op in flight     yes          no  (the op holds an Rc)       -
//!  closed by the cache    no           -                              yes (no create)
//!  pinned (unlinked)      no           never                          never: it cannot be
//! ```
//!
//! Concurrency rule: every operation on a file holds an `Rc<DmaFile>` clone for its duration, and
//! eviction closes only a descriptor whose `Rc` is held by its slot alone, so a file is never
//! closed under an I/O. Eviction runs synchronously inside `make_room` (no await between the
//! check and the take), on the one thread that owns both.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};

use glommio::io::DmaFile;

use super::runtime::spawn_detached;

/// Segment descriptors open in this process, over every shard. Touched only when a descriptor
/// opens or closes, never per read or write.
static OPEN_SEGMENT_FILES: AtomicUsize = AtomicUsize::new(0);

/// How many segment files (descriptors) the logs of this process hold open right now.
pub fn open_segment_files() -> usize {
    OPEN_SEGMENT_FILES.load(Ordering::Relaxed)
}

/// Sets how many segment descriptors this shard (the calling thread) keeps open at most; past
/// it, the least recently used idle file is closed before another opens. Unbounded until set.
/// Files with an operation in flight and unlinked files are never closed, so the budget is
/// exceeded only while every open file is busy or pinned.
pub fn set_segment_files_budget(files: usize) {
    CACHE.with(|cache| cache.borrow_mut().budget = files.max(1));
}

/// This shard's budget (`usize::MAX` until set).
pub fn segment_files_budget() -> usize {
    CACHE.with(|cache| cache.borrow().budget)
}

/// Segment descriptors this shard holds open.
pub fn shard_open_segment_files() -> usize {
    CACHE.with(|cache| cache.borrow().open)
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache {
            budget: usize::MAX,
            open: 0,
            tick: 0,
            lru: BTreeMap::new(),
        })
    };
}

struct Cache {
    budget: usize,
    /// Descriptors open on this shard, pinned ones included.
    open: usize,
    /// The last use handed out; `Slot::used` keys the LRU.
    tick: u64,
    /// Open, unpinned slots by last use, oldest first.
    lru: BTreeMap<u64, Weak<Slot>>,
}

/// One segment file's descriptor, when open.
pub(super) struct Slot {
    dma: RefCell<Option<Rc<DmaFile>>>,
    /// The slot's key in the LRU; 0 when it is not in it (closed or pinned).
    used: Cell<u64>,
    pinned: Cell<bool>,
}

impl Slot {
    pub(super) fn new() -> Rc<Slot> {
        Rc::new(Slot {
            dma: RefCell::new(None),
            used: Cell::new(0),
            pinned: Cell::new(false),
        })
    }

    /// The open descriptor (now the most recently used), or `None` when the cache closed it.
    pub(super) fn get(self: &Rc<Self>) -> Option<Rc<DmaFile>> {
        let dma = self.dma.borrow().clone()?;
        if !self.pinned.get() {
            CACHE.with(|cache| cache.borrow_mut().touch(self));
        }
        Some(dma)
    }

    /// Keeps `dma`, just opened, as this slot's descriptor. Another task may have reopened the
    /// file during the same wait; then that descriptor stays and `dma` is closed.
    pub(super) fn fill(self: &Rc<Self>, dma: DmaFile) -> Rc<DmaFile> {
        if let Some(existing) = self.get() {
            close_later(Rc::new(dma));
            return existing;
        }
        let dma = Rc::new(dma);
        *self.dma.borrow_mut() = Some(dma.clone());
        OPEN_SEGMENT_FILES.fetch_add(1, Ordering::Relaxed);
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            cache.open += 1;
            cache.touch(self);
        });
        dma
    }

    /// Keeps the (open) descriptor until the slot is dropped: the file was unlinked, so it could
    /// not be opened again.
    pub(super) fn pin(&self) {
        assert!(self.dma.borrow().is_some(), "pinning a closed segment file");
        self.pinned.set(true);
        CACHE.with(|cache| cache.borrow_mut().unlist(self));
    }

    /// Takes the descriptor out (closing the file or dropping the slot), uncounted.
    pub(super) fn take(&self) -> Option<Rc<DmaFile>> {
        let dma = self.dma.borrow_mut().take()?;
        OPEN_SEGMENT_FILES.fetch_sub(1, Ordering::Relaxed);
        // `try_with`: a slot may be dropped while the thread's locals are torn down.
        let _ = CACHE.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            cache.unlist(self);
            cache.open -= 1;
        });
        Some(dma)
    }

    #[cfg(test)]
    pub(super) fn is_open(&self) -> bool {
        self.dma.borrow().is_some()
    }
}

/// Closes idle descriptors, least recently used first, until one more fits the budget (or none
/// is idle). Called before a segment file opens.
pub(super) fn make_room() {
    let evicted = CACHE.with(|cache| cache.borrow_mut().evict());
    for dma in evicted {
        close_later(dma);
    }
}

impl Cache {
    fn touch(&mut self, slot: &Rc<Slot>) {
        if slot.used.get() == self.tick && self.tick != 0 {
            return;
        }
        self.unlist(slot);
        self.tick += 1;
        slot.used.set(self.tick);
        self.lru.insert(self.tick, Rc::downgrade(slot));
    }

    fn unlist(&mut self, slot: &Slot) {
        let used = slot.used.replace(0);
        if used != 0 {
            self.lru.remove(&used);
        }
    }

    /// Takes the descriptors to close; skips (and keeps) slots with an operation in flight.
    fn evict(&mut self) -> Vec<Rc<DmaFile>> {
        let mut evicted = Vec::new();
        let mut busy = Vec::new();
        while self.open >= self.budget {
            let Some((used, weak)) = self.lru.pop_first() else {
                break;
            };
            let Some(slot) = weak.upgrade() else {
                continue;
            };
            let idle = slot.dma.borrow().as_ref().map(Rc::strong_count) == Some(1);
            if !idle {
                busy.push((used, weak));
                continue;
            }
            slot.used.set(0);
            let dma = slot.dma.borrow_mut().take();
            evicted.extend(dma);
            OPEN_SEGMENT_FILES.fetch_sub(1, Ordering::Relaxed);
            self.open -= 1;
        }
        self.lru.extend(busy);
        evicted
    }
}

/// Closes `dma` in the background (glommio's close is asynchronous); a failed close of a file
/// nothing uses any more loses nothing that was not synced already.
fn close_later(dma: Rc<DmaFile>) {
    match Rc::try_unwrap(dma) {
        Ok(dma) => spawn_detached(async move {
            let _ = dma.close().await;
        }),
        // Unreachable by the eviction rule; dropping closes it at the next I/O cycle.
        Err(dma) => drop(dma),
    }
}
