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
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use glommio::io::DmaFile;
use glommio::sync::Semaphore;
use weir_engine::limits::{BLOCK_BYTES, PREALLOCATE_STEP_BYTES, WRITE_BYTES_MAX};

/// Frame in front of every batch in the journal / shard log: partition id u32, length u32.
const FRAME_BYTES: usize = 8;
/// Journal bytes between two checkpoints (fdatasync of the dirtied partition files).
const CHECKPOINT_BYTES: u64 = 256 << 20;
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
    log: DmaFile,
    position: Cell<u64>,
    allocated: Cell<u64>,
    pending: RefCell<Vec<(u32, Bytes)>>,
    appended: Cell<u64>,
    durable: Cell<u64>,
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

async fn open_dma(path: &Path) -> Result<DmaFile> {
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
    ) -> Result<Rc<ShardStream>> {
        std::fs::create_dir_all(dir)?;
        let log = open_dma(&dir.join("shard.log")).await?;
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
            let (buffer_bytes, placed) = self.commit(&batches).await?;
            let done = self.durable.get() + batches.len() as u64;
            self.durable.set(done);
            self.wake_waiters(done);
            {
                let mut stats = self.stats.borrow_mut();
                stats.commits += 1;
                stats.stream_bytes += buffer_bytes as u64;
                stats.appended_bytes += batches.iter().map(|b| b.1.len() as u64).sum::<u64>();
            }
            match self.design {
                Design::Interleaved => self.record_index(&batches, &placed),
                Design::Journal => self.distribute(&batches),
            }
            if self.design == Design::Journal && self.sync {
                self.maybe_checkpoint();
            }
        }
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

    /// One aligned O_DIRECT write of the framed batches (+ fdatasync for `always`); returns the
    /// bytes written and each batch's position in the file.
    async fn commit(&self, batches: &[(u32, Bytes)]) -> Result<(usize, Vec<u64>)> {
        let bytes: usize = batches.iter().map(|b| b.1.len() + FRAME_BYTES).sum();
        let size = bytes.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        let mut buffer = self.log.alloc_dma_buffer(size);
        let out = buffer.as_bytes_mut();
        let start = self.position.get();
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
        let written = self.log.write_at(buffer, start).await;
        written
            .map_err(std::io::Error::from)
            .context("stream write")?;
        if self.sync {
            let synced = self.log.fdatasync().await;
            synced.map_err(std::io::Error::from).context("fdatasync")?;
        }
        self.position.set(start + size as u64);
        Ok((size, placed))
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

    /// Reads partition `p` back, one batch extent at a time (interleaved) or in 1 MiB reads of its
    /// own file (journal), for at most `budget`; returns (bytes, seconds).
    pub async fn read_partition(&self, p: usize, budget: Duration) -> Result<(u64, f64)> {
        let started = Instant::now();
        let mut bytes = 0u64;
        match self.design {
            Design::Interleaved => {
                let extents = self.index.borrow()[p].clone();
                for (position, len) in extents {
                    if started.elapsed() >= budget {
                        break;
                    }
                    // Unaligned: glommio reads the covering blocks and slices.
                    let read = self.log.read_at(position, len as usize).await;
                    bytes += read.map_err(std::io::Error::from).context("read")?.len() as u64;
                }
            }
            Design::Journal => {
                let partition = &self.partitions[p];
                let end = partition.position.get();
                let mut at = 0;
                while at < end && started.elapsed() < budget {
                    let len = (end - at).min(1 << 20) as usize;
                    let read = partition.file.read_at_aligned(at, len).await;
                    bytes += read.map_err(std::io::Error::from).context("read")?.len() as u64;
                    at += len as u64;
                }
            }
        }
        Ok((bytes, started.elapsed().as_secs_f64()))
    }
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
