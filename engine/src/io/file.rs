//! A segment file opened for O_DIRECT reads and writes (glommio's `DmaFile`), offering exactly the
//! operations the log and its segments use, with errors already mapped to `LogError` (ENOSPC is
//! `StorageFull`) on the file's path.
//!
//! Shard: the one that opened it; not `Send`. Reads and writes are submitted to this shard's
//! io_uring; positions and lengths of writes are block-aligned (the callers' rule, see
//! `log::plan`).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use glommio::io::{DmaFile, OpenOptions};

use super::buffer::{DiskBytes, IoBuffer};
use super::log_error;
use crate::LogError;

pub(crate) struct SegmentFile {
    pub(super) file: DmaFile,
    path: PathBuf,
    _counted: Counted,
}

/// Segment files open in this process, over every shard: each holds a descriptor for as long as
/// it is open, so the broker can refuse a new partition before the open-files limit refuses
/// its file. Touched only when a file opens or closes, never per read or write.
static OPEN_SEGMENT_FILES: AtomicUsize = AtomicUsize::new(0);

/// How many segment files (descriptors) the logs of this process hold open.
pub fn open_segment_files() -> usize {
    OPEN_SEGMENT_FILES.load(Ordering::Relaxed)
}

/// One count in `OPEN_SEGMENT_FILES`, given back when its file is dropped or closed.
struct Counted;

impl Counted {
    fn new() -> Counted {
        OPEN_SEGMENT_FILES.fetch_add(1, Ordering::Relaxed);
        Counted
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN_SEGMENT_FILES.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SegmentFile {
    /// Opens `path` for reads and writes (glommio's `create`/`open` are one-way), creating it if
    /// `create`.
    pub(crate) async fn open(path: &Path, create: bool) -> Result<SegmentFile, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(|e| log_error(path, e))?;
        Ok(SegmentFile {
            file,
            path: path.to_path_buf(),
            _counted: Counted::new(),
        })
    }

    pub(crate) async fn size(&self) -> Result<u64, LogError> {
        self.file.file_size().await.map_err(|e| self.error(e))
    }

    /// Reads `len` bytes from `position` (both widened to whole blocks by the device read); the
    /// result is shorter at the end of the file.
    pub(crate) async fn read_aligned(
        &self,
        position: u64,
        len: usize,
    ) -> Result<DiskBytes, LogError> {
        let read = self.file.read_at_aligned(position, len).await;
        read.map(DiskBytes::new).map_err(|e| self.error(e))
    }

    /// Writes the whole `buffer` at `position`: the bytes the device took, and the buffer back
    /// (for the pool) unless the kernel still holds a reference to it.
    pub(crate) async fn write(
        &self,
        buffer: IoBuffer,
        position: u64,
    ) -> (Result<usize, LogError>, Option<IoBuffer>) {
        let buffer = Rc::new(buffer.into_dma());
        let written = self.file.write_rc_at(buffer.clone(), position).await;
        let buffer = Rc::try_unwrap(buffer).ok().map(IoBuffer::from_dma);
        (written.map_err(|e| self.error(e)), buffer)
    }

    /// Reserves blocks up to `size` bytes (fallocate, the file's size unchanged).
    pub(crate) async fn preallocate(&self, size: u64) -> Result<(), LogError> {
        self.file
            .pre_allocate(size, false)
            .await
            .map_err(|e| self.error(e))
    }

    pub(crate) async fn fdatasync(&self) -> Result<(), LogError> {
        self.file.fdatasync().await.map_err(|e| self.error(e))
    }

    pub(crate) async fn truncate(&self, size: u64) -> Result<(), LogError> {
        self.file.truncate(size).await.map_err(|e| self.error(e))
    }

    /// Unlinks the file; handles still open keep it readable.
    pub(crate) async fn remove(&self) -> Result<(), LogError> {
        self.file.remove().await.map_err(|e| self.error(e))
    }

    pub(crate) async fn close(self) -> Result<(), LogError> {
        let path = self.path;
        self.file.close().await.map_err(|e| log_error(&path, e))
    }

    fn error(&self, error: glommio::GlommioError<()>) -> LogError {
        log_error(&self.path, error)
    }
}
