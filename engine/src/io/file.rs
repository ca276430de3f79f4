//! A segment file opened for O_DIRECT reads and writes (glommio's `DmaFile`), offering exactly the
//! operations the log and its segments use, with errors already mapped to `LogError` (ENOSPC is
//! `StorageFull`) on the file's path.
//!
//! Shard: the one that opened it; not `Send`. Its descriptor belongs to that shard's cache
//! (`file_cache.rs`), which may close it while idle; the next operation reopens it. Reads and
//! writes are submitted to this shard's io_uring; positions and lengths of writes are
//! block-aligned (the callers' rule, see `log::plan`).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use glommio::io::{DmaFile, OpenOptions};

use super::buffer::{DiskBytes, IoBuffer};
use super::file_cache::{make_room, Slot};
use super::log_error;
use crate::LogError;

/// A segment file: its path and, while open, its descriptor in the shard's cache
/// (`file_cache.rs`), which may close it while idle; every operation reopens it if so and holds
/// the descriptor until it completes.
pub(crate) struct SegmentFile {
    slot: Rc<Slot>,
    path: PathBuf,
}

impl SegmentFile {
    /// Opens `path` for reads and writes (glommio's `create`/`open` are one-way), creating it if
    /// `create`.
    pub(crate) async fn open(path: &Path, create: bool) -> Result<SegmentFile, LogError> {
        let file = SegmentFile {
            slot: Slot::new(),
            path: path.to_path_buf(),
        };
        let dma = open_dma(path, create).await?;
        file.slot.fill(dma);
        Ok(file)
    }

    /// The open descriptor, reopened (same flags, never created) if the cache closed it. The
    /// caller holds it for the whole operation: that is what keeps the cache from closing it.
    pub(super) async fn handle(&self) -> Result<Rc<DmaFile>, LogError> {
        if let Some(dma) = self.slot.get() {
            return Ok(dma);
        }
        let dma = open_dma(&self.path, false).await?;
        Ok(self.slot.fill(dma))
    }

    pub(crate) async fn size(&self) -> Result<u64, LogError> {
        let file = self.handle().await?;
        file.file_size().await.map_err(|e| self.error(e))
    }

    /// Reads `len` bytes from `position` (both widened to whole blocks by the device read); the
    /// result is shorter at the end of the file.
    pub(crate) async fn read_aligned(
        &self,
        position: u64,
        len: usize,
    ) -> Result<DiskBytes, LogError> {
        let file = self.handle().await?;
        let read = file.read_at_aligned(position, len).await;
        if let Ok(read) = &read {
            super::stats::read_from_device(read.len());
        }
        read.map(DiskBytes::new).map_err(|e| self.error(e))
    }

    /// Writes the whole `buffer` at `position`: the bytes the device took, and the buffer back
    /// (for the pool) unless the kernel still holds a reference to it.
    pub(crate) async fn write(
        &self,
        buffer: IoBuffer,
        position: u64,
    ) -> (Result<usize, LogError>, Option<IoBuffer>) {
        let file = match self.handle().await {
            Ok(file) => file,
            Err(error) => return (Err(error), Some(buffer)),
        };
        let buffer = Rc::new(buffer.into_dma());
        let started = Instant::now();
        let written = file.write_rc_at(buffer.clone(), position).await;
        super::stats::written(started);
        let buffer = Rc::try_unwrap(buffer).ok().map(IoBuffer::from_dma);
        (written.map_err(|e| self.error(e)), buffer)
    }

    /// Reserves blocks up to `size` bytes (fallocate, the file's size unchanged).
    pub(crate) async fn preallocate(&self, size: u64) -> Result<(), LogError> {
        let file = self.handle().await?;
        file.pre_allocate(size, false)
            .await
            .map_err(|e| self.error(e))
    }

    pub(crate) async fn fdatasync(&self) -> Result<(), LogError> {
        let file = self.handle().await?;
        let started = Instant::now();
        let synced = file.fdatasync().await;
        super::stats::synced(started);
        synced.map_err(|e| self.error(e))
    }

    pub(crate) async fn truncate(&self, size: u64) -> Result<(), LogError> {
        let file = self.handle().await?;
        file.truncate(size).await.map_err(|e| self.error(e))
    }

    /// Unlinks the file; handles still open keep it readable. The descriptor is pinned open
    /// first, until the file is dropped: an unlinked file could not be opened again.
    pub(crate) async fn remove(&self) -> Result<(), LogError> {
        let file = self.handle().await?;
        self.slot.pin();
        file.remove().await.map_err(|e| self.error(e))
    }

    /// Closes the descriptor if it is open and no operation holds it (else it closes when the
    /// last one ends).
    pub(crate) async fn close(self) -> Result<(), LogError> {
        let Some(dma) = self.slot.take() else {
            return Ok(());
        };
        match Rc::try_unwrap(dma) {
            Ok(dma) => dma.close().await.map_err(|e| log_error(&self.path, e)),
            Err(_) => Ok(()),
        }
    }

    #[cfg(test)]
    pub(super) fn is_open(&self) -> bool {
        self.slot.is_open()
    }

    fn error(&self, error: glommio::GlommioError<()>) -> LogError {
        log_error(&self.path, error)
    }
}

impl Drop for SegmentFile {
    /// Hands the descriptor back to the count; glommio closes a dropped file at its next I/O cycle.
    fn drop(&mut self) {
        drop(self.slot.take());
    }
}

/// Opens the file with O_DIRECT for reads and writes, after making room in the shard's budget.
async fn open_dma(path: &Path, create: bool) -> Result<DmaFile, LogError> {
    make_room();
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .dma_open(path)
        .await
        .map_err(|e| log_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{
        open_segment_files, prepare_data_dir, set_segment_files_budget, shard_open_segment_files,
        take_buffer,
    };
    use crate::limits::{BLOCK_BYTES, IO_MEMORY_BYTES};
    use glommio::{LocalExecutorBuilder, Placement};

    /// Runs `f` on a fresh executor (its own cache) with a budget of `budget` descriptors, in a
    /// prepared data directory.
    fn run<F: std::future::Future<Output = ()> + 'static>(
        budget: usize,
        f: impl FnOnce(PathBuf) -> F + Send + 'static,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(IO_MEMORY_BYTES)
            .spawn(move || async move {
                prepare_data_dir(&path).await.unwrap();
                set_segment_files_budget(budget);
                f(path).await
            })
            .unwrap()
            .join()
            .unwrap();
    }

    async fn write_block(file: &SegmentFile, byte: u8) {
        let mut buffer = take_buffer(BLOCK_BYTES);
        buffer.as_bytes_mut().fill(byte);
        assert_eq!(file.write(buffer, 0).await.0.unwrap(), BLOCK_BYTES);
    }

    async fn first_byte(file: &SegmentFile) -> u8 {
        file.read_aligned(0, BLOCK_BYTES).await.unwrap()[0]
    }

    async fn open_written(dir: &Path, count: u8) -> Vec<SegmentFile> {
        let mut files = Vec::new();
        for i in 0..count {
            let file = SegmentFile::open(&dir.join(format!("{i}.log")), true)
                .await
                .unwrap();
            write_block(&file, i + 1).await;
            files.push(file);
        }
        files
    }

    #[test]
    fn a_file_past_the_budget_closes_the_least_recently_used_and_reads_after_reopening() {
        run(2, |dir| async move {
            let files = open_written(&dir, 3).await;
            let open: Vec<bool> = files.iter().map(SegmentFile::is_open).collect();
            assert_eq!(open, [false, true, true]);
            assert_eq!(shard_open_segment_files(), 2);
            // Reopening file 0 closes file 1, now the least recently used.
            assert_eq!(first_byte(&files[0]).await, 1);
            let open: Vec<bool> = files.iter().map(SegmentFile::is_open).collect();
            assert_eq!(open, [true, false, true]);
            for (i, file) in files.iter().enumerate() {
                assert_eq!(first_byte(file).await, i as u8 + 1);
                assert!(shard_open_segment_files() <= 2);
            }
            drop(files);
            assert_eq!(shard_open_segment_files(), 0);
        });
    }

    #[test]
    fn writes_syncs_and_truncates_after_eviction_reach_the_same_file() {
        run(1, |dir| async move {
            let files = open_written(&dir, 2).await;
            assert!(!files[0].is_open());
            files[0].preallocate(4 * BLOCK_BYTES as u64).await.unwrap();
            let mut buffer = take_buffer(BLOCK_BYTES);
            buffer.as_bytes_mut().fill(9);
            files[1].size().await.unwrap();
            assert!(!files[0].is_open());
            files[0].write(buffer, BLOCK_BYTES as u64).await.0.unwrap();
            files[1].fdatasync().await.unwrap();
            files[0].fdatasync().await.unwrap();
            files[1].truncate(10).await.unwrap();
            files[0].truncate(2 * BLOCK_BYTES as u64).await.unwrap();
            let read = files[0].read_aligned(0, 2 * BLOCK_BYTES).await.unwrap();
            assert_eq!(
                (read[0], read[BLOCK_BYTES], read.len()),
                (1, 9, 2 * BLOCK_BYTES)
            );
            assert_eq!(files[1].size().await.unwrap(), 10);
            let path = dir.join("0.log");
            assert_eq!(
                std::fs::metadata(path).unwrap().len(),
                2 * BLOCK_BYTES as u64
            );
        });
    }

    #[test]
    fn a_file_with_an_operation_in_flight_is_never_closed() {
        run(1, |dir| async move {
            let files = open_written(&dir, 1).await;
            // What every operation holds while it runs.
            let in_flight = files[0].handle().await.unwrap();
            let other = SegmentFile::open(&dir.join("other.log"), true)
                .await
                .unwrap();
            assert!(files[0].is_open(), "closed under an operation");
            assert_eq!(shard_open_segment_files(), 2, "over budget while busy");
            let read = in_flight.read_at_aligned(0, BLOCK_BYTES).await.unwrap();
            assert_eq!(read[0], 1);
            drop(in_flight);
            let third = SegmentFile::open(&dir.join("third.log"), true)
                .await
                .unwrap();
            assert!(!files[0].is_open() && !other.is_open() && third.is_open());
        });
    }

    #[test]
    fn concurrent_operations_on_more_files_than_the_budget_all_complete() {
        run(3, |dir| async move {
            let files = Rc::new(open_written(&dir, 12).await);
            let tasks: Vec<_> = (0..48)
                .map(|i| {
                    let files = files.clone();
                    glommio::spawn_local(async move {
                        let file = &files[i % 12];
                        if i % 2 == 0 {
                            write_block(file, (i % 12) as u8 + 1).await;
                        } else {
                            file.fdatasync().await.unwrap();
                        }
                        assert_eq!(first_byte(file).await, (i % 12) as u8 + 1);
                    })
                })
                .collect();
            for task in tasks {
                task.await;
            }
            assert!(shard_open_segment_files() <= 12);
        });
    }

    #[test]
    fn a_removed_file_stays_open_and_readable_until_dropped() {
        run(1, |dir| async move {
            let files = open_written(&dir, 2).await;
            assert!(!files[0].is_open());
            files[0].remove().await.unwrap();
            assert!(!dir.join("0.log").exists());
            let other = SegmentFile::open(&dir.join("other.log"), true)
                .await
                .unwrap();
            write_block(&other, 7).await;
            assert!(files[0].is_open(), "an unlinked file was closed");
            assert_eq!(first_byte(&files[0]).await, 1);
            let before = open_segment_files();
            drop(files);
            assert!(open_segment_files() < before);
            drop(other);
        });
    }
}
