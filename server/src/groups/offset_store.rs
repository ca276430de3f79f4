//! Committed offsets of this shard's groups: an in-memory map backed by an append-only,
//! checksummed log file per shard, `<groups_dir>/offsets-<shard>.log`.
//!
//! Runs on the coordinator's shard only (`!Send`, `Rc`/`RefCell`, no borrow held across an
//! `.await`). Durability rule: a commit is acknowledged only after its records were written and
//! `fdatasync`ed. Commits that arrive while a sync is in flight are queued and written together by
//! one flusher task (group commit): one write + one fdatasync per batch, never one per request.
//! The map is updated by the flusher, in queue order, after the batch is durable, so a fetch never
//! sees an offset that a crash could take back.
//!
//! File layout (little endian), one record per committed partition offset:
//! ```text
//! ┌──────────────┬──────────────────────┬───────────────────────────────────────────────┐
//! │ body_len u32 │ crc32c(body) u32     │ body                                          │
//! └──────────────┴──────────────────────┴───────────────────────────────────────────────┘
//! body: version u8 (=1) │ group_len u16 │ group │ topic_len u16 │ topic │ partition i32 │
//!       offset i64 │ leader_epoch i32 │ commit_timestamp_ms i64 │ metadata_len i32 (-1 = null)
//!       │ metadata
//! ```
//! Replay on open applies records in order (last one wins). A record that runs past the end of the
//! file, or whose checksum fails as the very last record, is a torn tail from a crash and is cut
//! off. A checksum failure with more records after it is corruption: opening fails, loudly.
//! Compaction: when the file grows past `compact_bytes` (and twice the live set), the live map is
//! written to `offsets-<shard>.log.compacting`, fsynced, renamed over the log, and the directory
//! fsynced (rewrite-then-rename, so a crash leaves either the old or the new file whole).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, OpenOptions};

/// Largest record body accepted on replay; real bodies are a few hundred bytes (group and topic
/// names are u16-length, metadata is capped by the coordinator at a few KiB).
const RECORD_BODY_BYTES_MAX: usize = 1 << 20;
const RECORD_HEADER_BYTES: usize = 8;
const RECORD_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum OffsetStoreError {
    #[error("offset log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("offset log {path}: corrupt record at byte {position} (checksum or layout) with data after it; refusing to start")]
    Corrupt { path: PathBuf, position: u64 },
    #[error("offset log failed earlier (write or fsync error); commits are refused until restart")]
    Failed,
    #[error("offset store is closed")]
    Closed,
}

/// What a group committed for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// One committed partition offset, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetRecord {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub value: CommittedOffset,
}

type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

struct PendingCommit {
    records: Vec<OffsetRecord>,
    done: flume::Sender<Result<(), String>>,
}

/// This shard's committed offsets.
pub struct OffsetStore {
    dir: PathBuf,
    log_path: PathBuf,
    compacting_path: PathBuf,
    compact_bytes: u64,
    offsets: RefCell<HashMap<String, GroupOffsets>>,
    file: RefCell<Option<Rc<BufferedFile>>>,
    file_bytes: Cell<u64>,
    compact_threshold_bytes: Cell<u64>,
    queue: RefCell<Vec<PendingCommit>>,
    flusher_running: Cell<bool>,
    failed: Cell<bool>,
    closed: Cell<bool>,
}

impl OffsetStore {
    /// Replays (and if needed repairs a torn tail of) this shard's offset log, then opens it for
    /// appending. Must run inside a glommio executor.
    pub async fn open(
        dir: &Path,
        shard: usize,
        compact_bytes: u64,
    ) -> Result<Rc<OffsetStore>, OffsetStoreError> {
        let io_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OffsetStoreError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let log_path = dir.join(format!("offsets-{shard}.log"));
        let compacting_path = dir.join(format!("offsets-{shard}.log.compacting"));
        // A leftover from a compaction that crashed before its rename: the log is still whole.
        if compacting_path.exists() {
            std::fs::remove_file(&compacting_path).map_err(io_error(&compacting_path))?;
        }
        // Replay with std::fs: this runs once at startup, before the shard serves anyone.
        let bytes = match std::fs::read(&log_path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(io_error(&log_path)(error)),
        };
        let replay = decode_records(&bytes);
        if let Some(position) = replay.corrupt_at {
            return Err(OffsetStoreError::Corrupt {
                path: log_path,
                position,
            });
        }
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        for record in replay.records {
            apply(&mut offsets, record);
        }
        if replay.valid_bytes < bytes.len() as u64 {
            tracing::warn!(
                path = %log_path.display(),
                kept_bytes = replay.valid_bytes,
                dropped_bytes = bytes.len() as u64 - replay.valid_bytes,
                "offset log: cutting a torn tail left by a crash"
            );
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&log_path)
                .map_err(io_error(&log_path))?;
            file.set_len(replay.valid_bytes)
                .and_then(|()| file.sync_all())
                .map_err(io_error(&log_path))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .buffered_open(&log_path)
            .await
            .map_err(|error| io_error(&log_path)(error.into()))?;
        Ok(Rc::new(OffsetStore {
            dir: dir.to_path_buf(),
            log_path,
            compacting_path,
            compact_bytes,
            offsets: RefCell::new(offsets),
            file: RefCell::new(Some(Rc::new(file))),
            file_bytes: Cell::new(replay.valid_bytes),
            compact_threshold_bytes: Cell::new(compact_bytes.max(2 * replay.valid_bytes)),
            queue: RefCell::new(Vec::new()),
            flusher_running: Cell::new(false),
            failed: Cell::new(false),
            closed: Cell::new(false),
        }))
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        let offsets = self.offsets.borrow();
        offsets
            .get(group)?
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Every committed offset of `group`, ordered by topic then partition.
    pub fn group_offsets(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        let offsets = self.offsets.borrow();
        let Some(group_offsets) = offsets.get(group) else {
            return Vec::new();
        };
        group_offsets
            .iter()
            .map(|((topic, partition), value)| (topic.clone(), *partition, value.clone()))
            .collect()
    }

    /// Every committed offset on this shard: (group, topic, partition, offset), for the metrics.
    pub fn all_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let offsets = self.offsets.borrow();
        offsets
            .iter()
            .flat_map(|(group, partitions)| {
                partitions.iter().map(move |((topic, partition), value)| {
                    (group.clone(), topic.clone(), *partition, value.offset)
                })
            })
            .collect()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.offsets.borrow().contains_key(group)
    }

    pub fn groups(&self) -> Vec<String> {
        self.offsets.borrow().keys().cloned().collect()
    }

    /// Current size of the log file, for tests and diagnostics.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes.get()
    }

    /// Makes `records` durable, then visible. Returns once they are fsynced (or failed).
    pub async fn commit(
        self: &Rc<Self>,
        records: Vec<OffsetRecord>,
    ) -> Result<(), OffsetStoreError> {
        if self.closed.get() {
            return Err(OffsetStoreError::Closed);
        }
        if self.failed.get() {
            return Err(OffsetStoreError::Failed);
        }
        if records.is_empty() {
            return Ok(());
        }
        let (done, result) = flume::bounded(1);
        self.queue
            .borrow_mut()
            .push(PendingCommit { records, done });
        if !self.flusher_running.get() {
            // The flusher is its own task so that a request future dropped mid-flush (client gone)
            // cannot strand the queue.
            self.flusher_running.set(true);
            let store = Rc::clone(self);
            glommio::spawn_local(async move { store.flush_loop().await }).detach();
        }
        match result.recv_async().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(OffsetStoreError::Failed),
        }
    }

    /// Waits for queued commits to be written, then refuses new ones.
    pub async fn close(&self) {
        self.closed.set(true);
        while self.flusher_running.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
        let file = self.file.borrow_mut().take();
        if let Some(file) = file {
            if let Ok(file) = Rc::try_unwrap(file) {
                let _ = file.close().await;
            }
        }
    }

    async fn flush_loop(self: Rc<Self>) {
        loop {
            let batch = std::mem::take(&mut *self.queue.borrow_mut());
            if batch.is_empty() {
                break;
            }
            let mut bytes = Vec::new();
            for pending in &batch {
                for record in &pending.records {
                    encode_record(record, &mut bytes);
                }
            }
            let result = if self.failed.get() {
                Err("offset log failed earlier".to_string())
            } else {
                self.append_durably(bytes)
                    .await
                    .map_err(|error| error.to_string())
            };
            match &result {
                Ok(()) => {
                    let mut offsets = self.offsets.borrow_mut();
                    for pending in &batch {
                        for record in &pending.records {
                            apply(&mut offsets, record.clone());
                        }
                    }
                }
                Err(error) => {
                    // After a failed fsync the page cache state is unknown (fsyncgate): stop
                    // accepting commits rather than acknowledge something that may be lost.
                    tracing::error!(path = %self.log_path.display(), %error, "offset log write failed");
                    self.failed.set(true);
                }
            }
            for pending in batch {
                let _ = pending.done.send(result.clone());
            }
            if !self.failed.get() && self.file_bytes.get() > self.compact_threshold_bytes.get() {
                if let Err(error) = self.compact().await {
                    // The old log is still whole; try again only after it doubles.
                    tracing::warn!(path = %self.log_path.display(), %error, "offset log compaction failed");
                    self.compact_threshold_bytes
                        .set(self.compact_threshold_bytes.get().saturating_mul(2));
                }
            }
        }
        self.flusher_running.set(false);
    }

    async fn append_durably(&self, bytes: Vec<u8>) -> Result<(), OffsetStoreError> {
        let file = self.file.borrow().clone().ok_or(OffsetStoreError::Closed)?;
        let length = bytes.len() as u64;
        let position = self.file_bytes.get();
        write_all(&file, bytes, position)
            .await
            .map_err(|source| self.io(source))?;
        file.fdatasync()
            .await
            .map_err(|error| self.io(error.into()))?;
        self.file_bytes.set(position + length);
        Ok(())
    }

    async fn compact(&self) -> Result<(), OffsetStoreError> {
        let mut bytes = Vec::new();
        {
            let offsets = self.offsets.borrow();
            for (group, group_offsets) in offsets.iter() {
                for ((topic, partition), value) in group_offsets {
                    encode_record(
                        &OffsetRecord {
                            group: group.clone(),
                            topic: topic.clone(),
                            partition: *partition,
                            value: value.clone(),
                        },
                        &mut bytes,
                    );
                }
            }
        }
        let length = bytes.len() as u64;
        let compacting = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .buffered_open(&self.compacting_path)
            .await
            .map_err(|error| self.io(error.into()))?;
        write_all(&compacting, bytes, 0)
            .await
            .map_err(|source| self.io(source))?;
        compacting
            .fdatasync()
            .await
            .map_err(|error| self.io(error.into()))?;
        compacting
            .close()
            .await
            .map_err(|error| self.io(error.into()))?;
        std::fs::rename(&self.compacting_path, &self.log_path).map_err(|source| self.io(source))?;
        // The rename is durable only once the directory is synced. This one blocking call runs
        // only on compaction (every few MiB of commits), never per commit.
        std::fs::File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| self.io(source))?;
        let file = OpenOptions::new()
            .write(true)
            .buffered_open(&self.log_path)
            .await
            .map_err(|error| self.io(error.into()))?;
        *self.file.borrow_mut() = Some(Rc::new(file));
        self.file_bytes.set(length);
        self.compact_threshold_bytes
            .set(self.compact_bytes.max(2 * length));
        tracing::debug!(path = %self.log_path.display(), bytes = length, "offset log compacted");
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> OffsetStoreError {
        OffsetStoreError::Io {
            path: self.log_path.clone(),
            source,
        }
    }
}

fn apply(offsets: &mut HashMap<String, GroupOffsets>, record: OffsetRecord) {
    offsets
        .entry(record.group)
        .or_default()
        .insert((record.topic, record.partition), record.value);
}

async fn write_all(file: &BufferedFile, bytes: Vec<u8>, position: u64) -> std::io::Result<()> {
    let mut written = 0usize;
    let mut remaining = bytes;
    while !remaining.is_empty() {
        let count = file
            .write_at(remaining.clone(), position + written as u64)
            .await
            .map_err(std::io::Error::from)?;
        if count == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                "offset log write returned 0",
            ));
        }
        written += count;
        remaining = remaining.split_off(count.min(remaining.len()));
    }
    Ok(())
}

/// Appends one framed record. Group and topic names longer than u16 are refused by the
/// coordinator before they get here (Kafka strings are i16-length on the wire).
pub fn encode_record(record: &OffsetRecord, out: &mut Vec<u8>) {
    assert!(record.group.len() <= u16::MAX as usize);
    assert!(record.topic.len() <= u16::MAX as usize);
    let mut body = Vec::with_capacity(64 + record.group.len() + record.topic.len());
    body.push(RECORD_VERSION);
    body.extend_from_slice(&(record.group.len() as u16).to_le_bytes());
    body.extend_from_slice(record.group.as_bytes());
    body.extend_from_slice(&(record.topic.len() as u16).to_le_bytes());
    body.extend_from_slice(record.topic.as_bytes());
    body.extend_from_slice(&record.partition.to_le_bytes());
    body.extend_from_slice(&record.value.offset.to_le_bytes());
    body.extend_from_slice(&record.value.leader_epoch.to_le_bytes());
    body.extend_from_slice(&record.value.commit_timestamp_ms.to_le_bytes());
    match &record.value.metadata {
        None => body.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(metadata) => {
            body.extend_from_slice(&(metadata.len() as i32).to_le_bytes());
            body.extend_from_slice(metadata.as_bytes());
        }
    }
    assert!(body.len() <= RECORD_BODY_BYTES_MAX);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// What replaying a log found.
#[derive(Debug, Default)]
pub struct Replay {
    pub records: Vec<OffsetRecord>,
    /// Bytes from the start that hold whole, valid records.
    pub valid_bytes: u64,
    /// Set when a bad record is followed by more data: corruption, not a torn tail.
    pub corrupt_at: Option<u64>,
}

/// Decodes a whole log. Pure: bytes in, records out.
pub fn decode_records(bytes: &[u8]) -> Replay {
    let mut replay = Replay::default();
    let mut position = 0usize;
    while position < bytes.len() {
        let rest = &bytes[position..];
        if rest.len() < RECORD_HEADER_BYTES {
            break; // torn header
        }
        let body_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if body_len > RECORD_BODY_BYTES_MAX {
            // A length this large is never written; garbage at the tail, or corruption.
            if position + RECORD_HEADER_BYTES < bytes.len() && body_len <= bytes.len() {
                replay.corrupt_at = Some(position as u64);
            }
            break;
        }
        let end = RECORD_HEADER_BYTES + body_len;
        if rest.len() < end {
            break; // torn body
        }
        let body = &rest[RECORD_HEADER_BYTES..end];
        let decoded = (crc32c::crc32c(body) == crc)
            .then(|| decode_body(body))
            .flatten();
        match decoded {
            Some(record) => replay.records.push(record),
            None => {
                if position + end < bytes.len() {
                    replay.corrupt_at = Some(position as u64);
                }
                break;
            }
        }
        position += end;
        replay.valid_bytes = position as u64;
    }
    replay
}

fn decode_body(body: &[u8]) -> Option<OffsetRecord> {
    let mut reader = Reader { bytes: body };
    if reader.take(1)?[0] != RECORD_VERSION {
        return None;
    }
    let group_len = u16::from_le_bytes(reader.array()?) as usize;
    let group = String::from_utf8(reader.take(group_len)?.to_vec()).ok()?;
    let topic_len = u16::from_le_bytes(reader.array()?) as usize;
    let topic = String::from_utf8(reader.take(topic_len)?.to_vec()).ok()?;
    let partition = i32::from_le_bytes(reader.array()?);
    let offset = i64::from_le_bytes(reader.array()?);
    let leader_epoch = i32::from_le_bytes(reader.array()?);
    let commit_timestamp_ms = i64::from_le_bytes(reader.array()?);
    let metadata_len = i32::from_le_bytes(reader.array()?);
    let metadata = if metadata_len < 0 {
        None
    } else {
        Some(String::from_utf8(reader.take(metadata_len as usize)?.to_vec()).ok()?)
    };
    if !reader.bytes.is_empty() {
        return None;
    }
    Some(OffsetRecord {
        group,
        topic,
        partition,
        value: CommittedOffset {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp_ms,
        },
    })
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
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::{SystemTime, UNIX_EPOCH};

    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    fn record(group: &str, topic: &str, partition: i32, offset: i64) -> OffsetRecord {
        OffsetRecord {
            group: group.to_string(),
            topic: topic.to_string(),
            partition,
            value: CommittedOffset {
                offset,
                leader_epoch: 7,
                metadata: (offset % 2 == 0).then(|| format!("meta-{offset}")),
                commit_timestamp_ms: 1_700_000_000_000 + offset,
            },
        }
    }

    /// Runs `body` on a real glommio executor with a fresh directory (removed afterwards).
    fn run<F, Fut>(name: &str, body: F)
    where
        F: FnOnce(PathBuf) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "weir-offsets-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let data_dir = dir.clone();
        let result = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(512 << 10)
            .spawn(move || async move {
                weir_engine::io::prepare_data_dir(&data_dir).await.unwrap();
                body(data_dir.join("groups")).await
            })
            .unwrap()
            .join();
        let _ = std::fs::remove_dir_all(&dir);
        result.unwrap();
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_not_corruption() {
        let records = vec![
            record("g", "t", 0, 1),
            record("g", "t", 1, 2),
            record("h", "", 3, -1),
        ];
        let mut bytes = Vec::new();
        for record in &records {
            encode_record(record, &mut bytes);
        }
        let replay = decode_records(&bytes);
        assert_eq!(replay.records, records);
        assert_eq!(replay.valid_bytes, bytes.len() as u64);
        assert_eq!(replay.corrupt_at, None);
        // Every cut inside the last record is a torn tail: the first two survive.
        let mut two = Vec::new();
        encode_record(&records[0], &mut two);
        encode_record(&records[1], &mut two);
        for cut in two.len()..bytes.len() {
            let replay = decode_records(&bytes[..cut]);
            assert_eq!(replay.records, records[..2], "cut at {cut}");
            assert_eq!(replay.valid_bytes, two.len() as u64);
            assert_eq!(replay.corrupt_at, None);
        }
        // A flipped byte in the last record is a torn tail; in an earlier one, corruption.
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode_records(&flipped).corrupt_at, None);
        assert_eq!(decode_records(&flipped).records, records[..2]);
        let mut flipped = bytes.clone();
        flipped[RECORD_HEADER_BYTES + 2] ^= 1;
        assert_eq!(decode_records(&flipped).corrupt_at, Some(0));
        // Garbage never panics.
        for length in 0..64 {
            let garbage: Vec<u8> = (0..length).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decode_records(&garbage);
        }
    }

    #[test]
    fn concurrent_commits_are_durable_and_a_torn_tail_is_cut_on_open() {
        run("group-commit", |dir| async move {
            let store = OffsetStore::open(&dir, 3, 4 << 20).await.unwrap();
            let commits: Vec<_> = (0..50)
                .map(|i| {
                    let store = Rc::clone(&store);
                    glommio::spawn_local(async move {
                        store.commit(vec![record("g", "t", i % 5, i as i64)]).await
                    })
                })
                .collect();
            for commit in commits {
                commit.await.unwrap();
            }
            let expected: Vec<_> = (0..5).map(|p| store.get("g", "t", p).unwrap()).collect();
            assert!(expected.iter().all(|value| value.offset >= 45));
            store.close().await;
            assert!(matches!(
                store.commit(vec![record("g", "t", 0, 1)]).await,
                Err(OffsetStoreError::Closed)
            ));

            // A crash mid-append leaves half a record behind.
            let path = dir.join("offsets-3.log");
            let length = std::fs::metadata(&path).unwrap().len();
            let mut torn = Vec::new();
            encode_record(&record("g", "t", 9, 99), &mut torn);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes.extend_from_slice(&torn[..torn.len() - 3]);
            std::fs::write(&path, &bytes).unwrap();

            let store = OffsetStore::open(&dir, 3, 4 << 20).await.unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), length);
            for (partition, value) in expected.iter().enumerate() {
                assert_eq!(store.get("g", "t", partition as i32).as_ref(), Some(value));
            }
            assert_eq!(store.get("g", "t", 9), None);
            store.close().await;

            // Corruption inside the file (not at its tail) refuses to open.
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[RECORD_HEADER_BYTES + 3] ^= 0xff;
            std::fs::write(&path, &bytes).unwrap();
            assert!(matches!(
                OffsetStore::open(&dir, 3, 4 << 20).await,
                Err(OffsetStoreError::Corrupt { position: 0, .. })
            ));
        });
    }

    #[test]
    fn compaction_keeps_the_latest_offsets_and_bounds_the_file() {
        run("compaction", |dir| async move {
            let compact_bytes = 8 << 10;
            let store = OffsetStore::open(&dir, 0, compact_bytes).await.unwrap();
            for round in 0..400i64 {
                let batch = (0..4).map(|p| record("g", "topic", p, round)).collect();
                store.commit(batch).await.unwrap();
            }
            assert!(
                store.file_bytes() <= 2 * compact_bytes,
                "{}",
                store.file_bytes()
            );
            store.close().await;
            assert!(!dir.join("offsets-0.log.compacting").exists());
            let store = OffsetStore::open(&dir, 0, compact_bytes).await.unwrap();
            let offsets = store.group_offsets("g");
            assert_eq!(offsets.len(), 4);
            assert!(offsets.iter().all(|(_, _, value)| value.offset == 399));
            assert_eq!(offsets[2].2, record("g", "topic", 2, 399).value);
            store.close().await;
        });
    }
}
