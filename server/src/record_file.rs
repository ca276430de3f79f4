//! Append-only files of small checksummed records, the shape every small durable store of the
//! broker uses (the queues' ack store; `groups/offset_store.rs` has the same framing written out
//! and can move onto this): framing, replay that tells a torn tail from corruption, and
//! rewrite-then-rename for compaction.
//!
//! Frame layout (little endian):
//! ```text
//! ┌──────────────┬──────────────────┬──────────────────────────┐
//! │ body_len u32 │ crc32c(body) u32 │ body (body_len bytes)    │
//! └──────────────┴──────────────────┴──────────────────────────┘
//! ```
//! Replay rule: a frame that runs past the end of the file, or a bad frame (checksum, layout, or
//! a body the caller cannot decode) that is the very last one, is a torn tail from a crash and is
//! cut off. A bad frame with more bytes after it is corruption: opening fails, loudly.
//!
//! Runs on whichever shard owns the file; the async helpers need a glommio executor.

use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, OpenOptions};

pub const FRAME_HEADER_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RecordFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt record at byte {position} (checksum or layout) with data after it; refusing to start")]
    Corrupt { path: PathBuf, position: u64 },
}

/// Appends one frame holding `body`.
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
    assert_eq!(length as usize, body.len(), "record body over 4 GiB");
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// What replaying a file found.
#[derive(Debug)]
pub struct Replay<T> {
    pub records: Vec<T>,
    /// Bytes from the start that hold whole, valid records.
    pub valid_bytes: u64,
    /// Set when a bad record is followed by more data: corruption, not a torn tail.
    pub corrupt_at: Option<u64>,
}

/// Decodes every frame of `bytes` with `decode` (`None`: the body is malformed). Pure.
pub fn decode_frames<T>(
    bytes: &[u8],
    body_bytes_max: usize,
    mut decode: impl FnMut(&[u8]) -> Option<T>,
) -> Replay<T> {
    let mut replay = Replay {
        records: Vec::new(),
        valid_bytes: 0,
        corrupt_at: None,
    };
    let mut position = 0usize;
    while position < bytes.len() {
        let rest = &bytes[position..];
        let Some(header) = rest.get(..FRAME_HEADER_BYTES) else {
            break; // torn header
        };
        let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if body_len > body_bytes_max {
            // A length this large is never written: garbage at the tail, or corruption.
            if rest.len() > FRAME_HEADER_BYTES && body_len <= bytes.len() {
                replay.corrupt_at = Some(position as u64);
            }
            break;
        }
        let end = FRAME_HEADER_BYTES + body_len;
        let Some(body) = rest.get(FRAME_HEADER_BYTES..end) else {
            break; // torn body
        };
        let decoded = (crc32c::crc32c(body) == crc)
            .then(|| decode(body))
            .flatten();
        let Some(record) = decoded else {
            if position + end < bytes.len() {
                replay.corrupt_at = Some(position as u64);
            }
            break;
        };
        replay.records.push(record);
        position += end;
        replay.valid_bytes = position as u64;
    }
    replay
}

/// Reads and decodes the whole file at `path` (missing: empty), cutting a torn tail off the file
/// itself so that appends continue after the last whole record. Blocking std I/O: for startup,
/// before the shard serves anyone.
pub fn replay_file<T>(
    path: &Path,
    body_bytes_max: usize,
    decode: impl FnMut(&[u8]) -> Option<T>,
) -> Result<Replay<T>, RecordFileError> {
    let io_error = |source| RecordFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(io_error(error)),
    };
    let replay = decode_frames(&bytes, body_bytes_max, decode);
    if let Some(position) = replay.corrupt_at {
        return Err(RecordFileError::Corrupt {
            path: path.to_path_buf(),
            position,
        });
    }
    if replay.valid_bytes < bytes.len() as u64 {
        tracing::warn!(
            path = %path.display(),
            kept_bytes = replay.valid_bytes,
            dropped_bytes = bytes.len() as u64 - replay.valid_bytes,
            "cutting a torn tail left by a crash"
        );
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error)?;
        file.set_len(replay.valid_bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error)?;
    }
    Ok(replay)
}

/// Writes all of `bytes` at `position`.
pub async fn write_all(file: &BufferedFile, bytes: Vec<u8>, position: u64) -> std::io::Result<()> {
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
                "record file write returned 0",
            ));
        }
        written += count;
        remaining = remaining.split_off(count.min(remaining.len()));
    }
    Ok(())
}

/// Replaces `path` with a file holding exactly `bytes`, so that a crash at any step leaves either
/// the old file or the new one whole: write `temporary`, fdatasync it, rename it over `path`,
/// fsync the directory. A `temporary` left by a crash before the rename is the caller's to delete
/// on open (the old file is still whole then).
pub async fn replace_durably(
    directory: &Path,
    temporary: &Path,
    path: &Path,
    bytes: Vec<u8>,
) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(temporary)
        .await
        .map_err(std::io::Error::from)?;
    write_all(&file, bytes, 0).await?;
    file.fdatasync().await.map_err(std::io::Error::from)?;
    file.close().await.map_err(std::io::Error::from)?;
    std::fs::rename(temporary, path)?;
    // The rename is durable only once the directory is synced. One blocking call per compaction
    // (every few MiB of records), never per record.
    std::fs::File::open(directory).and_then(|directory| directory.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_text(body: &[u8]) -> Option<String> {
        String::from_utf8(body.to_vec()).ok()
    }

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_not_corruption() {
        let bodies = ["first", "", "third record"];
        let mut bytes = Vec::new();
        for body in bodies {
            encode_frame(body.as_bytes(), &mut bytes);
        }
        let replay = decode_frames(&bytes, 64, decode_text);
        assert_eq!(replay.records, bodies);
        assert_eq!(
            (replay.valid_bytes, replay.corrupt_at),
            (bytes.len() as u64, None)
        );
        let two = 2 * FRAME_HEADER_BYTES + "first".len();
        for cut in two..bytes.len() {
            let replay = decode_frames(&bytes[..cut], 64, decode_text);
            assert_eq!(replay.records, bodies[..2], "cut at {cut}");
            assert_eq!((replay.valid_bytes, replay.corrupt_at), (two as u64, None));
        }
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode_frames(&flipped, 64, decode_text).corrupt_at, None);
        let mut flipped = bytes.clone();
        flipped[FRAME_HEADER_BYTES + 1] ^= 1;
        assert_eq!(decode_frames(&flipped, 64, decode_text).corrupt_at, Some(0));
        // A body the caller cannot decode counts as a bad record.
        let mut invalid = Vec::new();
        encode_frame(&[0xff], &mut invalid);
        encode_frame(b"ok", &mut invalid);
        assert_eq!(decode_frames(&invalid, 64, decode_text).corrupt_at, Some(0));
        for length in 0..64 {
            let garbage: Vec<u8> = (0..length).map(|i| (i * 37 + 11) as u8).collect();
            let _ = decode_frames(&garbage, 64, decode_text);
        }
    }
}
