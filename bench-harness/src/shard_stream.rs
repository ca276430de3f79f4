//! Prototypes of one sequential, group-committed write stream per shard (issue 14), for
//! `weir-bench engine --layout journal|interleaved`. Not the engine: no recovery, no reads through
//! `Log`, no offsets assigned; just the I/O pattern each design puts on the disk, so that the two
//! can be measured against today's one-file-per-partition layout in the same run.
//!
//! - `Journal`: every append of the shard goes into one journal file; a commit is one aligned
//!   O_DIRECT write of everything pending (framed: partition id + length), plus one fdatasync for
//!   `always`, and acknowledges all of it. Each partition's bytes are then buffered and written to
//!   its own file in `chunk_bytes` pieces (the second write), 32 at a time like the engine's write
//!   slots; for `always` a checkpoint fdatasyncs every dirtied partition file once per
//!   `CHECKPOINT_BYTES` of journal (what a trim behind the checkpoint needs).
//! - `Interleaved`: the same commits into one shard log, written once; an in-memory index per
//!   partition of (shard log position, length) per batch, used to read one partition back.
//!
//! Everything runs on the bench's single glommio executor; `Rc`/`Cell` state, no locks.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile};
use glommio::sync::Semaphore;
use weir_engine::limits::{BLOCK_BYTES, PREALLOCATE_STEP_BYTES, WRITE_BYTES_MAX};

/// Frame in front of every batch in the journal / shard log: partition id u32, length u32.
const FRAME_BYTES: usize = 8;
/// Journal bytes between two checkpoints (fdatasync of the dirtied partition files).
const CHECKPOINT_BYTES: u64 = 256 << 20;
/// Interleaved reads: extents within this much of the shard log are read as one window.
const MERGE_BYTES: u64 = 128 << 10;
/// Concurrent partition-file writes and checkpoint fdatasyncs (the engine's write slots).
const PARTITION_SLOTS: u64 = weir_engine::limits::WRITE_SLOTS_PER_SHARD as u64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Design {
    Journal,
    Interleaved,
}

/// Counters of what the disk was given, for write amplification.
#[derive(Default, Clone, Copy, Debug)]
pub struct StreamStats {
    pub commits: u64,
    pub appended_bytes: u64,
    /// Journal / shard log bytes written, frames and block padding included.
    pub stream_bytes: u64,
    /// Second writes into partition files (journal design).
    pub partition_bytes: u64,
    pub checkpoint_syncs: u64,
}

pub struct ShardStream {
    design: Design,
    sync: bool,
    chunk_bytes: usize,
    dir: PathBuf,
    log: Rc<DmaFile>,
    position: Cell<u64>,
    allocated: Cell<u64>,
    pending: RefCell<Vec<(u32, Bytes)>>,
    appended: Cell<u64>,
    durable: Cell<u64>,
    /// Batches handed to commits (written or in flight).
    committed: Cell<u64>,
    /// Completed commits not yet contiguous with `durable`: first batch -> last batch.
    completed: RefCell<BTreeMap<u64, u64>>,
    commit_slots: Rc<Semaphore>,
    waiters: RefCell<Vec<(u64, Waker)>>,
    committer: RefCell<Option<Waker>>,
    stopped: Cell<bool>,
    partitions: Vec<PartitionFile>,
    slots: Rc<Semaphore>,
    in_flight: Rc<Cell<usize>>,
    checkpoint_at: Cell<u64>,
    /// Interleaved: per partition, (shard log position, length) of each batch.
    index: RefCell<Vec<Vec<(u64, u32)>>>,
    stats: RefCell<StreamStats>,
}

struct PartitionFile {
    file: Rc<DmaFile>,
    buffer: RefCell<Vec<u8>>,
    position: Cell<u64>,
    allocated: Cell<u64>,
    dirty: Cell<bool>,
}

pub(crate) async fn open_dma(path: &Path) -> Result<DmaFile> {
    let file = glommio::io::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .dma_open(path)
        .await
        .map_err(std::io::Error::from)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(file)
}

impl ShardStream {
    pub async fn open(
        dir: &Path,
        design: Design,
        sync: bool,
        partitions: usize,
        chunk_bytes: usize,
        commits_in_flight: u64,
    ) -> Result<Rc<ShardStream>> {
        std::fs::create_dir_all(dir)?;
        let log = Rc::new(open_dma(&dir.join("shard.log")).await?);
        let mut files = Vec::new();
        if design == Design::Journal {
            for p in 0..partitions {
                files.push(PartitionFile {
                    file: Rc::new(open_dma(&dir.join(format!("p-{p}.log"))).await?),
                    buffer: RefCell::new(Vec::with_capacity(chunk_bytes + (64 << 10))),
                    position: Cell::new(0),
                    allocated: Cell::new(0),
                    dirty: Cell::new(false),
                });
            }
        }
        let stream = Rc::new(ShardStream {
            design,
            sync,
            chunk_bytes,
            dir: dir.to_path_buf(),
            log,
            position: Cell::new(0),
            allocated: Cell::new(0),
            pending: RefCell::new(Vec::new()),
            appended: Cell::new(0),
            durable: Cell::new(0),
            committed: Cell::new(0),
            completed: RefCell::new(BTreeMap::new()),
            commit_slots: Rc::new(Semaphore::new(commits_in_flight)),
            waiters: RefCell::new(Vec::new()),
            committer: RefCell::new(None),
            stopped: Cell::new(false),
            partitions: files,
            slots: Rc::new(Semaphore::new(PARTITION_SLOTS)),
            in_flight: Rc::new(Cell::new(0)),
            checkpoint_at: Cell::new(CHECKPOINT_BYTES),
            index: RefCell::new(vec![Vec::new(); partitions]),
            stats: RefCell::new(StreamStats::default()),
        });
        let committer = stream.clone();
        glommio::spawn_local(async move {
            if let Err(e) = committer.run_committer().await {
                eprintln!("shard stream committer failed: {e:#}");
                std::process::exit(1);
            }
        })
        .detach();
        Ok(stream)
    }

    /// Queues one batch; returns its sequence number for `wait_durable`.
    pub fn append(&self, partition: usize, batch: Bytes) -> u64 {
        self.pending.borrow_mut().push((partition as u32, batch));
        let seq = self.appended.get() + 1;
        self.appended.set(seq);
        if let Some(waker) = self.committer.borrow_mut().take() {
            waker.wake();
        }
        seq
    }

    pub fn wait_durable(&self, seq: u64) -> WaitDurable<'_> {
        WaitDurable { stream: self, seq }
    }

    pub fn design(&self) -> Design {
        self.design
    }

    pub fn stats(&self) -> StreamStats {
        *self.stats.borrow()
    }

    /// Waits for the partition-file writes and checkpoints in flight (their cost is the case's).
    pub async fn quiesce(&self) {
        while self.in_flight.get() > 0 {
            glommio::timer::sleep(Duration::from_micros(50)).await;
        }
    }

    pub async fn close(&self) -> Result<()> {
        self.stopped.set(true);
        if let Some(waker) = self.committer.borrow_mut().take() {
            waker.wake();
        }
        self.quiesce().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }

    async fn run_committer(self: Rc<Self>) -> Result<()> {
        loop {
            if self.pending.borrow().is_empty() {
                if self.stopped.get() {
                    return Ok(());
                }
                IdleCommitter { stream: &self }.await;
                continue;
            }
            let batches = self.take_pending();
            let (buffer, start, placed) = self.prepare(&batches).await?;
            {
                let mut stats = self.stats.borrow_mut();
                stats.commits += 1;
                stats.stream_bytes += buffer.len() as u64;
                stats.appended_bytes += batches.iter().map(|b| b.1.len() as u64).sum::<u64>();
            }
            let first = self.committed.get() + 1;
            self.committed
                .set(self.committed.get() + batches.len() as u64);
            let permit = self.commit_slots.clone().acquire_static_permit(1).await;
            let permit = permit
                .map_err(std::io::Error::from)
                .context("commit slot")?;
            let stream = self.clone();
            let last = self.committed.get();
            self.in_flight.set(self.in_flight.get() + 1);
            glommio::spawn_local(async move {
                if let Err(e) = stream.write_commit(buffer, start).await {
                    eprintln!("shard stream commit failed: {e:#}");
                    std::process::exit(1);
                }
                drop(permit);
                stream.complete(first, last);
                stream.in_flight.set(stream.in_flight.get() - 1);
            })
            .detach();
            match self.design {
                Design::Interleaved => self.record_index(&batches, &placed),
                Design::Journal => self.distribute(&batches),
            }
            if self.design == Design::Journal && self.sync {
                self.maybe_checkpoint();
            }
        }
    }

    /// Commits complete in any order; batches become durable in append order.
    fn complete(&self, first: u64, last: u64) {
        let mut completed = self.completed.borrow_mut();
        completed.insert(first, last);
        let mut durable = self.durable.get();
        while let Some(last) = completed.remove(&(durable + 1)) {
            durable = last;
        }
        drop(completed);
        if durable != self.durable.get() {
            self.durable.set(durable);
            self.wake_waiters(durable);
        }
    }

    async fn write_commit(&self, buffer: DmaBuffer, start: u64) -> Result<()> {
        let written = self.log.write_at(buffer, start).await;
        written
            .map_err(std::io::Error::from)
            .context("stream write")?;
        if self.sync {
            let synced = self.log.fdatasync().await;
            synced.map_err(std::io::Error::from).context("fdatasync")?;
        }
        Ok(())
    }

    /// Takes pending batches up to one engine-sized write (at least one batch).
    fn take_pending(&self) -> Vec<(u32, Bytes)> {
        let mut pending = self.pending.borrow_mut();
        let mut bytes = 0;
        let mut take = 0;
        for (_, batch) in pending.iter() {
            if take > 0 && bytes + batch.len() + FRAME_BYTES > WRITE_BYTES_MAX {
                break;
            }
            bytes += batch.len() + FRAME_BYTES;
            take += 1;
        }
        pending.drain(..take).collect()
    }

    /// Frames the batches into one aligned buffer at the next stream position (reserved here, so
    /// commits in flight never overlap); returns it, its position and each batch's position.
    async fn prepare(&self, batches: &[(u32, Bytes)]) -> Result<(DmaBuffer, u64, Vec<u64>)> {
        let bytes: usize = batches.iter().map(|b| b.1.len() + FRAME_BYTES).sum();
        let size = bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let mut buffer = self.log.alloc_dma_buffer(size);
        let out = buffer.as_bytes_mut();
        let start = self.position.get();
        self.position.set(start + size as u64);
        let mut at = 0;
        let mut placed = Vec::with_capacity(batches.len());
        for (partition, batch) in batches {
            out[at..at + 4].copy_from_slice(&partition.to_be_bytes());
            out[at + 4..at + 8].copy_from_slice(&(batch.len() as u32).to_be_bytes());
            out[at + FRAME_BYTES..at + FRAME_BYTES + batch.len()].copy_from_slice(batch);
            placed.push(start + (at + FRAME_BYTES) as u64);
            at += FRAME_BYTES + batch.len();
        }
        out[at..].fill(0);
        while start + size as u64 > self.allocated.get() {
            let next = self.allocated.get() + PREALLOCATE_STEP_BYTES;
            let reserved = self.log.pre_allocate(next, false).await;
            reserved
                .map_err(std::io::Error::from)
                .context("fallocate")?;
            self.allocated.set(next);
        }
        Ok((buffer, start, placed))
    }

    fn wake_waiters(&self, done: u64) {
        let mut waiters = self.waiters.borrow_mut();
        let mut i = 0;
        while i < waiters.len() {
            if waiters[i].0 <= done {
                waiters.swap_remove(i).1.wake();
            } else {
                i += 1;
            }
        }
    }

    fn record_index(&self, batches: &[(u32, Bytes)], placed: &[u64]) {
        let mut index = self.index.borrow_mut();
        for ((partition, batch), position) in batches.iter().zip(placed) {
            index[*partition as usize].push((*position, batch.len() as u32));
        }
    }

    /// Journal: copies each batch into its partition's buffer; a full chunk goes to the file.
    fn distribute(&self, batches: &[(u32, Bytes)]) {
        for (partition, batch) in batches {
            let p = *partition as usize;
            let full = {
                let mut buffer = self.partitions[p].buffer.borrow_mut();
                buffer.extend_from_slice(batch);
                buffer.len() >= self.chunk_bytes
            };
            if full {
                self.write_partition_chunk(p);
            }
        }
    }

    /// Starts the second write: the partition's whole blocks go to its file in the background.
    fn write_partition_chunk(&self, p: usize) {
        let partition = &self.partitions[p];
        let chunk: Vec<u8> = {
            let mut buffer = partition.buffer.borrow_mut();
            let whole = buffer.len() / BLOCK_BYTES * BLOCK_BYTES;
            buffer.drain(..whole).collect()
        };
        let position = partition.position.get();
        partition.position.set(position + chunk.len() as u64);
        partition.dirty.set(true);
        let allocate_to = (position + chunk.len() as u64 > partition.allocated.get())
            .then(|| partition.allocated.get() + PREALLOCATE_STEP_BYTES);
        if let Some(to) = allocate_to {
            partition.allocated.set(to);
        }
        self.stats.borrow_mut().partition_bytes += chunk.len() as u64;
        let file = partition.file.clone();
        let slots = self.slots.clone();
        let in_flight = self.in_flight.clone();
        in_flight.set(in_flight.get() + 1);
        glommio::spawn_local(async move {
            let result = write_chunk(&file, &slots, &chunk, position, allocate_to).await;
            in_flight.set(in_flight.get() - 1);
            if let Err(e) = result {
                eprintln!("partition write failed: {e:#}");
                std::process::exit(1);
            }
        })
        .detach();
    }

    /// `always`: once per CHECKPOINT_BYTES of journal, fdatasync every dirtied partition file
    /// (in the background, 32 at a time) — what trimming the journal behind a checkpoint needs.
    fn maybe_checkpoint(&self) {
        if self.position.get() < self.checkpoint_at.get() {
            return;
        }
        self.checkpoint_at
            .set(self.position.get() + CHECKPOINT_BYTES);
        for partition in self.partitions.iter().filter(|p| p.dirty.get()) {
            partition.dirty.set(false);
            self.stats.borrow_mut().checkpoint_syncs += 1;
            let file = partition.file.clone();
            let slots = self.slots.clone();
            let in_flight = self.in_flight.clone();
            in_flight.set(in_flight.get() + 1);
            glommio::spawn_local(async move {
                let permit = slots.acquire_permit(1).await;
                let synced = file.fdatasync().await;
                drop(permit);
                in_flight.set(in_flight.get() - 1);
                if let Err(e) = synced {
                    eprintln!("checkpoint fdatasync failed: {e}");
                    std::process::exit(1);
                }
            })
            .detach();
        }
    }

    /// Reads partition `p` back for at most `budget`; returns (bytes, seconds). Interleaved: from
    /// its index, one read per extent one at a time (`depth` 1), or with extents merged into
    /// windows of up to `MERGE_BYTES` of the shard log and `depth` reads in flight (what the
    /// implementation would do; the merged windows also read other partitions' bytes, which are
    /// not counted). Journal: 1 MiB reads of the partition's own file, one at a time.
    pub async fn read_partition(
        &self,
        p: usize,
        budget: Duration,
        depth: u64,
    ) -> Result<(u64, f64)> {
        let started = Instant::now();
        if self.design == Design::Journal {
            let partition = &self.partitions[p];
            let end = partition.position.get();
            let (mut at, mut bytes) = (0, 0u64);
            while at < end && started.elapsed() < budget {
                let len = (end - at).min(1 << 20) as usize;
                let read = partition.file.read_at_aligned(at, len).await;
                read.map_err(std::io::Error::from).context("read")?;
                bytes += len as u64;
                at += len as u64;
            }
            return Ok((bytes, started.elapsed().as_secs_f64()));
        }
        let windows = merge_extents(
            &self.index.borrow()[p],
            if depth > 1 { MERGE_BYTES } else { 0 },
        );
        let slots = Rc::new(Semaphore::new(depth));
        let useful = Rc::new(Cell::new(0u64));
        let reading = Rc::new(Cell::new(0usize));
        for (position, len, counted) in windows {
            if started.elapsed() >= budget {
                break;
            }
            let permit = slots.clone().acquire_static_permit(1).await;
            let permit = permit.map_err(std::io::Error::from).context("read slot")?;
            let (log, useful, reading) = (self.log.clone(), useful.clone(), reading.clone());
            reading.set(reading.get() + 1);
            glommio::spawn_local(async move {
                // Unaligned: glommio reads the covering blocks and slices.
                if let Err(e) = log.read_at(position, len).await {
                    eprintln!("read failed: {e}");
                    std::process::exit(1);
                }
                useful.set(useful.get() + counted);
                reading.set(reading.get() - 1);
                drop(permit);
            })
            .detach();
        }
        while reading.get() > 0 {
            glommio::timer::sleep(Duration::from_micros(50)).await;
        }
        Ok((useful.get(), started.elapsed().as_secs_f64()))
    }
}

/// Merged read windows of a partition's extents: (position, length, the partition's bytes in it).
/// Extents whose window would pass `merge_bytes` start a new window (0: one window per extent).
fn merge_extents(extents: &[(u64, u32)], merge_bytes: u64) -> Vec<(u64, usize, u64)> {
    let mut windows: Vec<(u64, usize, u64)> = Vec::new();
    for &(position, len) in extents {
        let end = position + u64::from(len);
        match windows.last_mut() {
            Some(window) if end - window.0 <= merge_bytes => {
                window.1 = (end - window.0) as usize;
                window.2 += u64::from(len);
            }
            _ => windows.push((position, len as usize, u64::from(len))),
        }
    }
    windows
}

async fn write_chunk(
    file: &DmaFile,
    slots: &Semaphore,
    chunk: &[u8],
    position: u64,
    allocate_to: Option<u64>,
) -> Result<()> {
    let _permit = slots
        .acquire_permit(1)
        .await
        .map_err(std::io::Error::from)
        .context("write slot")?;
    if let Some(to) = allocate_to {
        let reserved = file.pre_allocate(to, false).await;
        reserved
            .map_err(std::io::Error::from)
            .context("fallocate")?;
    }
    let mut buffer = file.alloc_dma_buffer(chunk.len());
    buffer.as_bytes_mut().copy_from_slice(chunk);
    let written = file.write_at(buffer, position).await;
    written
        .map_err(std::io::Error::from)
        .context("partition write")?;
    Ok(())
}

pub struct WaitDurable<'a> {
    stream: &'a ShardStream,
    seq: u64,
}

impl Future for WaitDurable<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.stream.durable.get() >= self.seq {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        self.stream.waiters.borrow_mut().push((self.seq, waker));
        Poll::Pending
    }
}

/// Parks the committer until an append (or close) wakes it.
struct IdleCommitter<'a> {
    stream: &'a ShardStream,
}

impl Future for IdleCommitter<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if !self.stream.pending.borrow().is_empty() || self.stream.stopped.get() {
            return Poll::Ready(());
        }
        *self.stream.committer.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::merge_extents;

    fn check(extents: &[(u64, u32)], merge_bytes: u64, expected: &[(u64, usize, u64)]) {
        assert_eq!(merge_extents(extents, merge_bytes), expected);
    }

    #[test]
    fn merge_extents_windows() {
        // No merging: one window per extent.
        check(&[(0, 10), (100, 10)], 0, &[(0, 10, 10), (100, 10, 10)]);
        // Within the window: one read covering both, counting only the partition's bytes.
        check(&[(0, 10), (100, 10)], 128, &[(0, 110, 20)]);
        // An extent that would pass the window starts a new one.
        check(
            &[(0, 10), (100, 10), (200, 10)],
            128,
            &[(0, 110, 20), (200, 10, 10)],
        );
        check(&[], 128, &[]);
    }
}
