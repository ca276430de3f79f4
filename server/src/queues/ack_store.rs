//! The shard's durable ack state for all of its durable queues: an in-memory mirror of every
//! queue's `QueueSnapshot`, backed by one append-only, checksummed file per shard,
//! `<queues_dir>/acks-<shard>.log` (framing and replay rules: `record_file.rs`).
//!
//! Runs on the owning shard only (`!Send`, `Rc`/`RefCell`, no borrow held across an `.await`).
//! One file per shard, not per queue, so that one write and one fdatasync carry the acks of every
//! queue of the shard (100,000 idle queues cost no file descriptors), as RabbitMQ's quorum-queue
//! WAL and BookKeeper's journal do.
//!
//! Durability rule: acks need not be synchronous (a lost ack only means a redelivery, which
//! at-least-once allows), so `record` only queues the journal entries and returns; one flusher
//! task waits `flush_delay`, then writes everything queued with one write and one fdatasync
//! (group commit), then applies it to the mirror. `sync` waits until everything recorded before
//! it is durable (for callers that want it, and tests). The mirror holds only durable state, so
//! `durable_floor` never names a floor that a crash could take back: segments below it may go.
//!
//! Record body (little endian), one record per queue per flush:
//! ```text
//! version u8 (=1) │ name_len u16 │ name │ partition i32 │ op*
//! op: tag u8 │ payload
//!   1 Floor          offset i64            every offset below is finished
//!   2 Done           start i64, end i64    [start, end) finished
//!   3 Delivered      offset i64            every offset below may have been delivered
//!   4 DeliveryCount  offset i64, count u16 offset came back after count deliveries
//!   5 Forget         —                     the queue was deleted: drop its state
//! ```
//! Replay applies records in file order; every op is idempotent, so replaying a record twice (a
//! compaction that crashed after its rename) changes nothing. Compaction: when the file grows past
//! `compact_bytes` (and twice its last compacted size), every queue's snapshot is written to
//! `acks-<shard>.log.compacting` and renamed over the log (`record_file::replace_durably`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::io::{BufferedFile, OpenOptions};
use weir_engine::Offset;

use super::done_set::DoneSet;
use super::state::{JournalEntry, QueueSnapshot};
use crate::record_file::{self, RecordFileError};
use crate::shard::signal::Signal;

/// Largest record body accepted on replay. Writers split a queue's ops into records of at most
/// `OPS_PER_RECORD` ops (19 bytes each at most) plus a name of at most 64 KiB.
const RECORD_BODY_BYTES_MAX: usize = 1 << 20;
const OPS_PER_RECORD: usize = 16_384;
const OP_BYTES_MAX: usize = 1 + 8 + 8;
const RECORD_VERSION: u8 = 1;
const _: () =
    assert!(7 + u16::MAX as usize + OPS_PER_RECORD * OP_BYTES_MAX <= RECORD_BODY_BYTES_MAX);

/// Journal entries queued but not yet written, past which `backlogged` says so: the caller then
/// awaits `sync` before recording more (backpressure instead of unbounded growth when the disk
/// falls behind).
pub const PENDING_ENTRIES_MAX: usize = 1 << 20;

const TAG_FLOOR: u8 = 1;
const TAG_DONE: u8 = 2;
const TAG_DELIVERED: u8 = 3;
const TAG_DELIVERY_COUNT: u8 = 4;
const TAG_FORGET: u8 = 5;

/// Names one queue partition in the store. The protocol layer chooses the name (an AMQP queue
/// name; a share group's `group` + topic), at most `u16::MAX` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    pub name: String,
    pub partition: i32,
}

impl QueueKey {
    pub fn new(name: impl Into<String>, partition: i32) -> QueueKey {
        QueueKey {
            name: name.into(),
            partition,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckStoreOptions {
    /// Compact once the file is larger than this (and twice its last compacted size).
    pub compact_bytes: u64,
    /// How long the flusher gathers records before it writes (group commit).
    pub flush_delay: Duration,
    /// Whether each flush ends with an fdatasync. Without it a flush is durable against a
    /// crash of the broker's process (the write is in the kernel's page cache) but not of the
    /// machine, as a Kafka log left to the OS is.
    pub fdatasync: bool,
}

impl Default for AckStoreOptions {
    fn default() -> Self {
        AckStoreOptions {
            compact_bytes: 4 << 20,
            flush_delay: Duration::from_millis(2),
            fdatasync: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AckStoreError {
    #[error("ack log: {0}")]
    File(#[from] RecordFileError),
    #[error("ack log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ack log failed earlier (write or fsync error); acks are not persisted until restart")]
    Failed,
    #[error("ack store is closed")]
    Closed,
    #[error("queue name of {0} bytes is longer than the ack log allows (65535)")]
    NameTooLong(usize),
}

/// What one queue's stored ops rebuild: the durable part of its state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DurableQueue {
    done: DoneSet,
    delivered_below: Offset,
    delivery_counts: BTreeMap<Offset, u16>,
}

impl DurableQueue {
    pub(crate) fn apply(&mut self, entry: JournalEntry) {
        match entry {
            JournalEntry::Floor(floor) => {
                self.done.raise_floor(floor);
                self.drop_finished_counts(Offset::ZERO, floor);
            }
            JournalEntry::Done { start, end } => {
                self.done.insert(start, end);
                self.drop_finished_counts(start, end);
            }
            JournalEntry::Delivered(mark) => {
                self.delivered_below = self.delivered_below.max(mark);
            }
            JournalEntry::DeliveryCount { offset, count } => {
                if !self.done.contains(offset) {
                    self.delivery_counts.insert(offset, count);
                }
            }
        }
    }

    fn drop_finished_counts(&mut self, start: Offset, end: Offset) {
        let floor = self.done.floor();
        self.delivery_counts = self.delivery_counts.split_off(&floor);
        let finished: Vec<Offset> = self
            .delivery_counts
            .range(start.max(floor)..end.max(floor))
            .map(|(&offset, _)| offset)
            .collect();
        for offset in finished {
            self.delivery_counts.remove(&offset);
        }
    }

    pub(crate) fn snapshot(&self) -> QueueSnapshot {
        QueueSnapshot {
            floor: self.done.floor(),
            done: self.done.ranges().collect(),
            // Below the floor the mark means nothing: the same normal form as `QueueState`.
            delivered_below: self.delivered_below.max(self.done.floor()),
            delivery_counts: self.delivery_counts.iter().map(|(&o, &c)| (o, c)).collect(),
        }
    }

    /// The ops that rebuild this queue from nothing (what compaction writes).
    fn entries(&self) -> Vec<JournalEntry> {
        let mut entries = vec![JournalEntry::Floor(self.done.floor())];
        entries.extend(
            self.done
                .ranges()
                .map(|(start, end)| JournalEntry::Done { start, end }),
        );
        entries.extend(
            self.delivery_counts
                .iter()
                .map(|(&offset, &count)| JournalEntry::DeliveryCount { offset, count }),
        );
        entries.push(JournalEntry::Delivered(self.delivered_below));
        entries
    }
}

/// What is queued for one queue until the next flush.
#[derive(Debug, Default)]
struct PendingQueue {
    /// The queue was deleted (before `entries`, which belong to a queue of the same name
    /// declared again).
    forget: bool,
    entries: Vec<JournalEntry>,
}

/// The shard's ack store. See the module docs.
pub struct AckStore {
    dir: PathBuf,
    log_path: PathBuf,
    compacting_path: PathBuf,
    options: AckStoreOptions,
    queues: RefCell<HashMap<QueueKey, DurableQueue>>,
    pending: RefCell<BTreeMap<QueueKey, PendingQueue>>,
    pending_entries: Cell<usize>,
    /// Calls to `record`/`forget` so far, and how many of them are durable.
    recorded_sequence: Cell<u64>,
    durable_sequence: Cell<u64>,
    waiters: RefCell<Vec<(u64, flume::Sender<bool>)>>,
    file: RefCell<Option<Rc<BufferedFile>>>,
    file_bytes: Cell<u64>,
    compact_threshold_bytes: Cell<u64>,
    flusher_running: Cell<bool>,
    failed: Cell<bool>,
    closed: Cell<bool>,
    /// Fired by `close`: cuts the flusher's group-commit wait short.
    closing: Signal,
}

impl AckStore {
    /// Replays (and if needed repairs a torn tail of) this shard's ack log, then opens it for
    /// appending. Must run inside a glommio executor.
    pub async fn open(
        dir: &Path,
        shard: usize,
        options: AckStoreOptions,
    ) -> Result<Rc<AckStore>, AckStoreError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AckStoreError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let log_path = dir.join(format!("acks-{shard}.log"));
        let compacting_path = dir.join(format!("acks-{shard}.log.compacting"));
        // A leftover from a compaction that crashed before its rename: the log is still whole.
        if compacting_path.exists() {
            std::fs::remove_file(&compacting_path).map_err(io_error(&compacting_path))?;
        }
        let replay = record_file::replay_file(&log_path, RECORD_BODY_BYTES_MAX, decode_body)?;
        let mut queues = HashMap::new();
        for (key, ops) in replay.records {
            apply_replayed(&mut queues, key, ops);
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .buffered_open(&log_path)
            .await
            .map_err(|error| io_error(&log_path)(error.into()))?;
        Ok(Rc::new(AckStore {
            dir: dir.to_path_buf(),
            log_path,
            compacting_path,
            options,
            queues: RefCell::new(queues),
            pending: RefCell::new(BTreeMap::new()),
            pending_entries: Cell::new(0),
            recorded_sequence: Cell::new(0),
            durable_sequence: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
            file: RefCell::new(Some(Rc::new(file))),
            file_bytes: Cell::new(replay.valid_bytes),
            compact_threshold_bytes: Cell::new(options.compact_bytes.max(2 * replay.valid_bytes)),
            flusher_running: Cell::new(false),
            failed: Cell::new(false),
            closed: Cell::new(false),
            closing: Signal::default(),
        }))
    }

    /// The durable state of `queue` (None: never recorded, or forgotten): feed it to
    /// `QueueState::restore`.
    pub fn snapshot(&self, queue: &QueueKey) -> Option<QueueSnapshot> {
        self.queues.borrow().get(queue).map(DurableQueue::snapshot)
    }

    /// Every queue with durable state, in no particular order.
    pub fn queues(&self) -> Vec<QueueKey> {
        self.queues.borrow().keys().cloned().collect()
    }

    /// The persisted floor of `queue`: every offset below it is finished and its ack durable, so
    /// whole log segments below it may be deleted.
    pub fn durable_floor(&self, queue: &QueueKey) -> Option<Offset> {
        self.queues
            .borrow()
            .get(queue)
            .map(|state| state.done.floor())
    }

    /// Current size of the log file, for tests and diagnostics.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes.get()
    }

    /// Whether more is queued than `PENDING_ENTRIES_MAX`: await `sync` before recording more.
    pub fn backlogged(&self) -> bool {
        self.pending_entries.get() > PENDING_ENTRIES_MAX
    }

    /// Queues `entries` (from `QueueState::take_journal`) for the next group commit. Returns at
    /// once; `sync` waits for durability.
    pub fn record(
        self: &Rc<Self>,
        queue: &QueueKey,
        entries: Vec<JournalEntry>,
    ) -> Result<(), AckStoreError> {
        self.check_open(queue)?;
        if entries.is_empty() {
            return Ok(());
        }
        self.pending_entries
            .set(self.pending_entries.get() + entries.len());
        let mut pending = self.pending.borrow_mut();
        pending
            .entry(queue.clone())
            .or_default()
            .entries
            .extend(entries);
        drop(pending);
        self.queued();
        Ok(())
    }

    /// The queue was deleted: its state goes at the next group commit (and stays gone after a
    /// restart once that is durable).
    pub fn forget(self: &Rc<Self>, queue: &QueueKey) -> Result<(), AckStoreError> {
        self.check_open(queue)?;
        let mut pending = self.pending.borrow_mut();
        let queued = pending.entry(queue.clone()).or_default();
        self.pending_entries
            .set(self.pending_entries.get() - queued.entries.len());
        queued.entries.clear();
        queued.forget = true;
        drop(pending);
        self.queued();
        Ok(())
    }

    /// Waits until everything recorded before this call is durable.
    pub async fn sync(self: &Rc<Self>) -> Result<(), AckStoreError> {
        let target = self.recorded_sequence.get();
        if self.failed.get() {
            return Err(AckStoreError::Failed);
        }
        if self.durable_sequence.get() >= target {
            return Ok(());
        }
        let (done, result) = flume::bounded(1);
        self.waiters.borrow_mut().push((target, done));
        match result.recv_async().await {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(AckStoreError::Failed),
        }
    }

    /// Writes what is queued (at once: the group-commit wait is cut short), then refuses new
    /// records. A clean shutdown calls it once no connection can send acks any more, so that a
    /// clean restart redelivers nothing whose ack the broker had taken in.
    pub async fn close(&self) {
        self.closed.set(true);
        self.closing.fire();
        while self.flusher_running.get() {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let file = self.file.borrow_mut().take();
        if let Some(file) = file {
            if let Ok(file) = Rc::try_unwrap(file) {
                let _ = file.close().await;
            }
        }
    }

    fn check_open(&self, queue: &QueueKey) -> Result<(), AckStoreError> {
        if self.closed.get() {
            return Err(AckStoreError::Closed);
        }
        if self.failed.get() {
            return Err(AckStoreError::Failed);
        }
        if queue.name.len() > u16::MAX as usize {
            return Err(AckStoreError::NameTooLong(queue.name.len()));
        }
        Ok(())
    }

    /// Counts a record/forget call and makes sure a flusher will write it.
    fn queued(self: &Rc<Self>) {
        self.recorded_sequence.set(self.recorded_sequence.get() + 1);
        if !self.flusher_running.get() {
            // Its own task, so that a caller dropped mid-flush cannot strand the queue.
            self.flusher_running.set(true);
            let store = Rc::clone(self);
            glommio::spawn_local(async move { store.flush_loop().await }).detach();
        }
    }
}

/// The flusher and compaction.
impl AckStore {
    async fn flush_loop(self: Rc<Self>) {
        loop {
            if !self.options.flush_delay.is_zero() && !self.closed.get() {
                let delay = glommio::timer::sleep(self.options.flush_delay);
                futures_lite::future::or(delay, self.closing.wait()).await;
            }
            let batch = std::mem::take(&mut *self.pending.borrow_mut());
            if batch.is_empty() {
                break;
            }
            self.pending_entries.set(0);
            let sequence = self.recorded_sequence.get();
            let mut bytes = Vec::new();
            for (key, pending) in &batch {
                encode_queue(key, pending.forget, &pending.entries, &mut bytes);
            }
            let written = if self.failed.get() {
                false
            } else {
                match self.append_durably(bytes).await {
                    Ok(()) => true,
                    Err(error) => {
                        // After a failed fsync the page cache state is unknown (fsyncgate): stop
                        // persisting rather than report acks durable that may be lost.
                        tracing::error!(path = %self.log_path.display(), %error, "ack log write failed");
                        self.failed.set(true);
                        false
                    }
                }
            };
            if written {
                let mut queues = self.queues.borrow_mut();
                for (key, pending) in batch {
                    if pending.forget {
                        queues.remove(&key);
                    }
                    if !pending.entries.is_empty() {
                        let queue = queues.entry(key).or_default();
                        for entry in pending.entries {
                            queue.apply(entry);
                        }
                    }
                }
                drop(queues);
                self.durable_sequence.set(sequence);
            }
            self.wake_waiters(written);
            if written && self.file_bytes.get() > self.compact_threshold_bytes.get() {
                self.compact_or_back_off().await;
            }
        }
        self.flusher_running.set(false);
    }

    fn wake_waiters(&self, written: bool) {
        let durable = self.durable_sequence.get();
        self.waiters.borrow_mut().retain(|(target, done)| {
            if written && *target > durable {
                return true;
            }
            let _ = done.send(written);
            false
        });
    }

    async fn append_durably(&self, bytes: Vec<u8>) -> Result<(), AckStoreError> {
        let file = self.file.borrow().clone().ok_or(AckStoreError::Closed)?;
        let length = bytes.len() as u64;
        let position = self.file_bytes.get();
        record_file::write_all(&file, bytes, position)
            .await
            .map_err(|source| self.io(source))?;
        if self.options.fdatasync {
            file.fdatasync()
                .await
                .map_err(|error| self.io(error.into()))?;
        }
        self.file_bytes.set(position + length);
        Ok(())
    }

    async fn compact_or_back_off(&self) {
        if let Err(error) = self.compact().await {
            // The old log is still whole; try again only after it doubles.
            tracing::warn!(path = %self.log_path.display(), %error, "ack log compaction failed");
            self.compact_threshold_bytes
                .set(self.compact_threshold_bytes.get().saturating_mul(2));
        }
    }

    async fn compact(&self) -> Result<(), AckStoreError> {
        let bytes = encode_snapshot(&self.queues.borrow());
        let length = bytes.len() as u64;
        record_file::replace_durably(&self.dir, &self.compacting_path, &self.log_path, bytes)
            .await
            .map_err(|source| self.io(source))?;
        let file = OpenOptions::new()
            .write(true)
            .buffered_open(&self.log_path)
            .await
            .map_err(|error| self.io(error.into()))?;
        *self.file.borrow_mut() = Some(Rc::new(file));
        self.file_bytes.set(length);
        self.compact_threshold_bytes
            .set(self.options.compact_bytes.max(2 * length));
        tracing::debug!(path = %self.log_path.display(), bytes = length, "ack log compacted");
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> AckStoreError {
        AckStoreError::Io {
            path: self.log_path.clone(),
            source,
        }
    }
}

/// One queue's ops as stored: `None` is Forget.
pub(crate) type StoredOps = Vec<Option<JournalEntry>>;

/// Decodes a whole log (or a batch of records). Pure.
#[cfg(test)]
pub(crate) fn replay_bytes(bytes: &[u8]) -> record_file::Replay<(QueueKey, StoredOps)> {
    record_file::decode_frames(bytes, RECORD_BODY_BYTES_MAX, decode_body)
}

/// Applies one replayed record to the mirror.
pub(crate) fn apply_replayed(
    queues: &mut HashMap<QueueKey, DurableQueue>,
    key: QueueKey,
    ops: StoredOps,
) {
    for op in ops {
        match op {
            None => {
                queues.remove(&key);
            }
            Some(entry) => queues.entry(key.clone()).or_default().apply(entry),
        }
    }
}

/// Every queue's state as the records that rebuild it. Pure.
pub(crate) fn encode_snapshot(queues: &HashMap<QueueKey, DurableQueue>) -> Vec<u8> {
    let mut keys: Vec<&QueueKey> = queues.keys().collect();
    keys.sort();
    let mut bytes = Vec::new();
    for key in keys {
        encode_queue(key, false, &queues[key].entries(), &mut bytes);
    }
    bytes
}

/// Appends the records for one queue's pending ops, coalesced: single-offset acks merge into
/// ranges, only the highest mark and the last count per offset are kept. Reordering is safe:
/// Floor and Done commute, and a count is only ever recorded before its offset finishes.
pub(crate) fn encode_queue(
    key: &QueueKey,
    forget: bool,
    entries: &[JournalEntry],
    out: &mut Vec<u8>,
) {
    let mut floor = None;
    let mut done = DoneSet::new(Offset::new(i64::MIN));
    let mut mark = None;
    let mut counts = BTreeMap::new();
    for &entry in entries {
        match entry {
            JournalEntry::Floor(offset) => floor = floor.max(Some(offset)),
            JournalEntry::Done { start, end } => {
                done.insert(start, end);
            }
            JournalEntry::Delivered(offset) => mark = mark.max(Some(offset)),
            JournalEntry::DeliveryCount { offset, count } => {
                counts.insert(offset, count);
            }
        }
    }
    let mut ops: StoredOps = Vec::new();
    if forget {
        ops.push(None);
    }
    ops.extend(floor.map(|offset| Some(JournalEntry::Floor(offset))));
    ops.extend(
        counts
            .into_iter()
            .map(|(offset, count)| Some(JournalEntry::DeliveryCount { offset, count })),
    );
    ops.extend(
        done.ranges()
            .map(|(start, end)| Some(JournalEntry::Done { start, end })),
    );
    ops.extend(mark.map(|offset| Some(JournalEntry::Delivered(offset))));
    for chunk in ops.chunks(OPS_PER_RECORD) {
        encode_record(key, chunk, out);
    }
}

fn encode_record(key: &QueueKey, ops: &[Option<JournalEntry>], out: &mut Vec<u8>) {
    let name_len = u16::try_from(key.name.len()).unwrap_or(u16::MAX);
    assert_eq!(
        name_len as usize,
        key.name.len(),
        "queue name checked by record()"
    );
    let mut body = Vec::with_capacity(7 + key.name.len() + ops.len() * OP_BYTES_MAX);
    body.push(RECORD_VERSION);
    body.extend_from_slice(&name_len.to_le_bytes());
    body.extend_from_slice(key.name.as_bytes());
    body.extend_from_slice(&key.partition.to_le_bytes());
    for op in ops {
        match *op {
            None => body.push(TAG_FORGET),
            Some(JournalEntry::Floor(offset)) => push_offset(&mut body, TAG_FLOOR, offset),
            Some(JournalEntry::Done { start, end }) => {
                push_offset(&mut body, TAG_DONE, start);
                body.extend_from_slice(&end.get().to_le_bytes());
            }
            Some(JournalEntry::Delivered(offset)) => {
                push_offset(&mut body, TAG_DELIVERED, offset);
            }
            Some(JournalEntry::DeliveryCount { offset, count }) => {
                push_offset(&mut body, TAG_DELIVERY_COUNT, offset);
                body.extend_from_slice(&count.to_le_bytes());
            }
        }
    }
    assert!(body.len() <= RECORD_BODY_BYTES_MAX);
    record_file::encode_frame(&body, out);
}

fn push_offset(body: &mut Vec<u8>, tag: u8, offset: Offset) {
    body.push(tag);
    body.extend_from_slice(&offset.get().to_le_bytes());
}

/// Decodes one record body; `None` for anything malformed (the replay treats it as a bad
/// record: torn tail at the end, corruption before it).
fn decode_body(body: &[u8]) -> Option<(QueueKey, StoredOps)> {
    let mut reader = Reader { bytes: body };
    if reader.take(1)?[0] != RECORD_VERSION {
        return None;
    }
    let name_len = u16::from_le_bytes(reader.array()?) as usize;
    let name = String::from_utf8(reader.take(name_len)?.to_vec()).ok()?;
    let partition = i32::from_le_bytes(reader.array()?);
    let mut ops = Vec::new();
    while !reader.bytes.is_empty() {
        let tag = reader.take(1)?[0];
        let op = match tag {
            TAG_FORGET => None,
            TAG_FLOOR => Some(JournalEntry::Floor(reader.offset()?)),
            TAG_DONE => {
                let start = reader.offset()?;
                let end = reader.offset()?;
                if end < start {
                    return None;
                }
                Some(JournalEntry::Done { start, end })
            }
            TAG_DELIVERED => Some(JournalEntry::Delivered(reader.offset()?)),
            TAG_DELIVERY_COUNT => Some(JournalEntry::DeliveryCount {
                offset: reader.offset()?,
                count: u16::from_le_bytes(reader.array()?),
            }),
            _ => return None,
        };
        ops.push(op);
    }
    Some((QueueKey { name, partition }, ops))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < count {
            return None;
        }
        let (head, tail) = self.bytes.split_at(count);
        self.bytes = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn offset(&mut self) -> Option<Offset> {
        Some(Offset::new(i64::from_le_bytes(self.array()?)))
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Instant;

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;
    use crate::queues::state::{ConsumerId, Durability, QueueLimits, QueueState};

    const A: ConsumerId = ConsumerId(7);

    /// Runs `body` on a real glommio executor with a fresh directory (removed afterwards).
    fn run<F, Fut>(body: F)
    where
        F: FnOnce(PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().to_path_buf();
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(512 << 10)
            .spawn(move || async move {
                weir_engine::io::prepare_data_dir(&data_dir).await.unwrap();
                body(data_dir.join("queues")).await
            })
            .unwrap()
            .join()
            .unwrap();
    }

    fn options(compact_bytes: u64) -> AckStoreOptions {
        AckStoreOptions {
            compact_bytes,
            flush_delay: Duration::from_millis(1),
            fdatasync: true,
        }
    }

    fn offset(value: i64) -> Offset {
        Offset::new(value)
    }

    /// A queue of `length` messages with every offset in `acked` acknowledged, recorded.
    fn queue_with_acks(
        store: &Rc<AckStore>,
        key: &QueueKey,
        length: i64,
        acked: &[i64],
    ) -> QueueState {
        let mut state = QueueState::new(
            Offset::ZERO,
            offset(length),
            QueueLimits::AMQP,
            Durability::Durable,
        );
        state.acquire(A, length as usize, Instant::now());
        for &o in acked {
            state.accept(A, offset(o)).unwrap();
        }
        store.record(key, state.take_journal()).unwrap();
        state
    }

    /// The offsets a restored queue hands out, with their redelivered flags.
    fn redeliveries(store: &AckStore, key: &QueueKey, length: i64) -> Vec<(i64, bool)> {
        let snapshot = store.snapshot(key).unwrap();
        let mut state = QueueState::restore(
            &snapshot,
            offset(length),
            QueueLimits::AMQP,
            Durability::Durable,
        );
        let acquired = state.acquire(A, length as usize, Instant::now());
        acquired
            .iter()
            .map(|r| (r.offset.get(), r.redelivered))
            .collect()
    }

    #[test]
    fn persisted_acks_survive_reopen_and_a_torn_tail_is_cut() {
        run(|dir| async move {
            let key = QueueKey::new("tasks", 0);
            let store = AckStore::open(&dir, 0, options(4 << 20)).await.unwrap();
            let state = queue_with_acks(&store, &key, 10, &[0, 1, 2, 5, 9]);
            store.sync().await.unwrap();
            assert_eq!(store.durable_floor(&key), Some(offset(3)));
            store.close().await;
            assert!(matches!(
                store.record(&key, vec![]),
                Err(AckStoreError::Closed)
            ));

            // A crash mid-append leaves half a record behind.
            let path = dir.join("acks-0.log");
            let length = std::fs::metadata(&path).unwrap().len();
            let mut torn = Vec::new();
            encode_queue(
                &key,
                false,
                &[JournalEntry::Done {
                    start: offset(3),
                    end: offset(5),
                }],
                &mut torn,
            );
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.extend_from_slice(&torn[..torn.len() - 3]);
            std::fs::write(&path, &bytes).unwrap();

            let store = AckStore::open(&dir, 0, options(4 << 20)).await.unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), length);
            assert_eq!(store.snapshot(&key), Some(state.snapshot()));
            // Never an acknowledged message again; every other one, flagged redelivered.
            let expected: Vec<(i64, bool)> = [3, 4, 6, 7, 8].iter().map(|&o| (o, true)).collect();
            assert_eq!(redeliveries(&store, &key, 10), expected);
            // A second record, so that the first is no longer the tail.
            let mark = JournalEntry::Delivered(offset(2_000));
            store.record(&key, vec![mark]).unwrap();
            store.sync().await.unwrap();
            store.close().await;

            // Corruption inside the file (not at its tail) refuses to open.
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[record_file::FRAME_HEADER_BYTES + 3] ^= 0xff;
            std::fs::write(&path, &bytes).unwrap();
            let reopened = AckStore::open(&dir, 0, options(4 << 20)).await;
            assert!(matches!(
                reopened,
                Err(AckStoreError::File(RecordFileError::Corrupt {
                    position: 0,
                    ..
                }))
            ));
        });
    }

    #[test]
    fn close_writes_what_is_queued_without_waiting_out_the_group_commit() {
        run(|dir| async move {
            let key = QueueKey::new("closing", 0);
            // A group-commit window far longer than the test: only `close` can write in time.
            let slow = AckStoreOptions {
                compact_bytes: 4 << 20,
                flush_delay: Duration::from_secs(3600),
                fdatasync: true,
            };
            let store = AckStore::open(&dir, 0, slow).await.unwrap();
            let state = queue_with_acks(&store, &key, 10, &[0, 1, 2, 3, 7]);
            assert_eq!(store.durable_floor(&key), None, "nothing written yet");
            let closed = futures_lite::future::or(
                async {
                    store.close().await;
                    true
                },
                async {
                    glommio::timer::sleep(Duration::from_secs(60)).await;
                    false
                },
            )
            .await;
            assert!(closed, "close waited for the group-commit window");
            let store = AckStore::open(&dir, 0, slow).await.unwrap();
            assert_eq!(store.snapshot(&key), Some(state.snapshot()));
            assert_eq!(store.durable_floor(&key), Some(offset(4)));
            store.close().await;
        });
    }

    #[test]
    fn concurrent_records_are_group_committed_and_durable() {
        run(|dir| async move {
            let store = AckStore::open(&dir, 1, options(4 << 20)).await.unwrap();
            let tasks: Vec<_> = (0..40)
                .map(|i| {
                    let store = Rc::clone(&store);
                    glommio::spawn_local(async move {
                        let key = QueueKey::new(format!("q{}", i % 4), i % 2);
                        let entry = JournalEntry::Done {
                            start: offset(i64::from(i)),
                            end: offset(i64::from(i) + 1),
                        };
                        store.record(&key, vec![entry]).unwrap();
                        store.sync().await.unwrap();
                        key
                    })
                })
                .collect();
            for task in tasks {
                let key = task.await;
                assert!(store.snapshot(&key).is_some(), "{key:?} durable after sync");
            }
            // 40 records of ~30 bytes each would be 1.2 KiB one by one; grouped per queue and
            // flush they are fewer and smaller (ranges).
            let bytes = store.file_bytes();
            store.close().await;
            let store = AckStore::open(&dir, 1, options(4 << 20)).await.unwrap();
            assert_eq!(store.file_bytes(), bytes);
            let mut finished = 0;
            for key in store.queues() {
                let snapshot = store.snapshot(&key).unwrap();
                finished += snapshot.floor.get();
                finished += snapshot.done.iter().map(|(s, e)| e.since(*s)).sum::<i64>();
            }
            assert_eq!((store.queues().len(), finished), (4, 40));
            store.close().await;
        });
    }

    #[test]
    fn compaction_bounds_the_file_and_forget_drops_a_queue() {
        run(|dir| async move {
            let compact_bytes = 4 << 10;
            let store = AckStore::open(&dir, 2, options(compact_bytes))
                .await
                .unwrap();
            let (kept, dropped) = (QueueKey::new("kept", 3), QueueKey::new("dropped", 0));
            let mut state = QueueState::new(
                Offset::ZERO,
                offset(2_000),
                QueueLimits::AMQP,
                Durability::Durable,
            );
            state.acquire(A, 2_000, Instant::now());
            // One sync per ack: ~1,800 small records (over 100 KiB) whose live state is ~200
            // ranges (odd offsets below 400, then everything above, offset 0 never acked).
            let acks = (1..400).step_by(2).chain(400..2_000);
            for o in acks {
                state.accept(A, offset(o)).unwrap();
                store.record(&kept, state.take_journal()).unwrap();
                store
                    .record(&dropped, vec![JournalEntry::Delivered(offset(o))])
                    .unwrap();
                store.sync().await.unwrap();
            }
            assert!(store.file_bytes() <= 16 << 10, "{}", store.file_bytes());
            store.forget(&dropped).unwrap();
            store.sync().await.unwrap();
            assert_eq!(store.snapshot(&dropped), None);
            store.close().await;
            assert!(!dir.join("acks-2.log.compacting").exists());
            let store = AckStore::open(&dir, 2, options(compact_bytes))
                .await
                .unwrap();
            assert_eq!(store.queues(), std::slice::from_ref(&kept));
            assert_eq!(store.snapshot(&kept), Some(state.snapshot()));
            // A queue declared again under a forgotten name starts empty.
            store.forget(&kept).unwrap();
            store
                .record(&kept, vec![JournalEntry::Floor(offset(5))])
                .unwrap();
            store.sync().await.unwrap();
            assert_eq!(store.durable_floor(&kept), Some(offset(5)));
            assert_eq!(store.snapshot(&kept).unwrap().done, []);
            store.close().await;
        });
    }

    #[test]
    fn a_crash_between_compaction_steps_leaves_a_whole_log() {
        run(|dir| async move {
            let key = QueueKey::new("q", 0);
            let store = AckStore::open(&dir, 0, options(4 << 20)).await.unwrap();
            let state = queue_with_acks(&store, &key, 20, &[0, 3, 4, 10, 19]);
            store.sync().await.unwrap();
            let compacted = encode_snapshot(&store.queues.borrow());
            store.close().await;
            let (log, compacting) = (dir.join("acks-0.log"), dir.join("acks-0.log.compacting"));
            let original = std::fs::read(&log).unwrap();
            // Step 1 crashed: a partial (or whole but never renamed) compacted file lies beside
            // the whole old log; opening deletes it and keeps the log.
            for cut in [compacted.len() / 2, compacted.len()] {
                std::fs::write(&compacting, &compacted[..cut]).unwrap();
                let store = AckStore::open(&dir, 0, options(4 << 20)).await.unwrap();
                assert!(!compacting.exists());
                assert_eq!(std::fs::read(&log).unwrap(), original);
                assert_eq!(store.snapshot(&key), Some(state.snapshot()));
                store.close().await;
            }
            // The rename happened (the directory sync may or may not have): the new log alone
            // gives the same state, and appends after it replay on top.
            std::fs::write(&log, &compacted).unwrap();
            let store = AckStore::open(&dir, 0, options(4 << 20)).await.unwrap();
            assert_eq!(store.snapshot(&key), Some(state.snapshot()));
            store
                .record(
                    &key,
                    vec![JournalEntry::Done {
                        start: offset(1),
                        end: offset(3),
                    }],
                )
                .unwrap();
            store.sync().await.unwrap();
            store.close().await;
            let store = AckStore::open(&dir, 0, options(4 << 20)).await.unwrap();
            assert_eq!(store.durable_floor(&key), Some(offset(5)));
            store.close().await;
        });
    }
}
