//! Durable routing declarations: one file, replaced atomically on every change.
//!
//! Runs on the controller shard only (the one that applies changes), so there is one writer.
//! It uses blocking `std::fs`: declarations change at admin speed and are small, and a blocked
//! reactor for one fsync is cheaper than the machinery to avoid it; the data path never calls it.
//!
//! File layout (`<data dir>/routing/declarations`):
//! ```text
//!  0..8    magic  b"WEIRRT01" (format version in the last two bytes)
//!  8..12   payload length, u32 little-endian
//!  12..16  CRC32C of the payload, u32 little-endian
//!  16..    payload: `table::Declarations` archived with rkyv (validated on load)
//! ```
//! Save: write `declarations.tmp`, fsync it, rename over `declarations`, fsync the directory. A
//! crash at any point leaves either the old or the new file whole; a leftover `.tmp` is ignored.
//! A file that fails its checks stops the broker with a message instead of being taken as empty:
//! silently forgetting every exchange would misroute every record after it.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::table::Declarations;

const MAGIC: &[u8; 8] = b"WEIRRT01";
const HEADER_BYTES: usize = 16;
/// Refuse to load anything larger: 1 million bindings archive to well under this.
const FILE_BYTES_MAX: u64 = 1 << 30;
const FILE_NAME: &str = "declarations";
const TEMPORARY_NAME: &str = "declarations.tmp";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("routing store {path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("routing store {path} is corrupt ({reason}); restore it from a backup or remove it to start with no exchanges")]
    Corrupt { path: PathBuf, reason: String },
}

/// The declarations file of one broker.
#[derive(Debug, Clone)]
pub struct RoutingStore {
    directory: PathBuf,
}

impl RoutingStore {
    /// A store in `<data_dir>/routing`; the directory is created on first save.
    pub fn new(data_dir: &Path) -> RoutingStore {
        RoutingStore {
            directory: data_dir.join("routing"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.directory.join(FILE_NAME)
    }

    /// The saved declarations, or `None` if none were ever saved.
    pub fn load(&self) -> Result<Option<Declarations>, StoreError> {
        let path = self.path();
        let io = |action| {
            let path = path.clone();
            move |source| StoreError::Io {
                path,
                action,
                source,
            }
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let length = match fs::metadata(&path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io("reading metadata")(error)),
        };
        if length > FILE_BYTES_MAX {
            return Err(corrupt(format!("{length} bytes is larger than any table")));
        }
        let bytes = fs::read(&path).map_err(io("reading"))?;
        let header = bytes
            .get(..HEADER_BYTES)
            .ok_or_else(|| corrupt(format!("{} bytes is shorter than the header", bytes.len())))?;
        if &header[..8] != MAGIC {
            return Err(corrupt("unknown magic or format version".to_string()));
        }
        let payload_bytes = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let checksum = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
        let payload = &bytes[HEADER_BYTES..];
        if payload.len() != payload_bytes as usize {
            return Err(corrupt(format!(
                "payload is {} bytes, header says {payload_bytes}",
                payload.len()
            )));
        }
        if crc32c::crc32c(payload) != checksum {
            return Err(corrupt("checksum mismatch".to_string()));
        }
        // rkyv reads in place and needs its archive aligned; a `Vec<u8>` is not guaranteed to be.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
        aligned.extend_from_slice(payload);
        let declarations = rkyv::from_bytes::<Declarations, rkyv::rancor::Error>(&aligned)
            .map_err(|error| corrupt(format!("archive does not validate: {error}")))?;
        Ok(Some(declarations))
    }

    /// Replaces the saved declarations atomically and durably.
    pub fn save(&self, declarations: &Declarations) -> Result<(), StoreError> {
        let io = |path: &Path, action| {
            let path = path.to_path_buf();
            move |source| StoreError::Io {
                path,
                action,
                source,
            }
        };
        let directory = &self.directory;
        fs::create_dir_all(directory).map_err(io(directory, "creating the directory"))?;
        let payload = rkyv::to_bytes::<rkyv::rancor::Error>(declarations).map_err(|error| {
            StoreError::Io {
                path: self.path(),
                action: "archiving",
                source: std::io::Error::other(error.to_string()),
            }
        })?;
        let payload_bytes = u32::try_from(payload.len()).map_err(|_| StoreError::Io {
            path: self.path(),
            action: "archiving",
            source: std::io::Error::other("declarations exceed 4 GiB"),
        })?;
        let mut contents = Vec::with_capacity(HEADER_BYTES + payload.len());
        contents.extend_from_slice(MAGIC);
        contents.extend_from_slice(&payload_bytes.to_le_bytes());
        contents.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        contents.extend_from_slice(&payload);

        let temporary = directory.join(TEMPORARY_NAME);
        let mut file = File::create(&temporary).map_err(io(&temporary, "creating"))?;
        file.write_all(&contents)
            .map_err(io(&temporary, "writing"))?;
        file.sync_all().map_err(io(&temporary, "syncing"))?;
        drop(file);
        let path = self.path();
        fs::rename(&temporary, &path).map_err(io(&path, "renaming into place"))?;
        // The rename is durable only once the directory entry is.
        File::open(directory)
            .and_then(|directory| directory.sync_all())
            .map_err(io(directory, "syncing the directory"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::exchange::{Binding, Destination, Exchange, ExchangeType};
    use crate::routing::table::{Change, RoutingTable};

    fn sample() -> RoutingTable {
        let mut binding = Binding::new("h", Destination::Topic("pdf".into()), "");
        binding.arguments.insert("x-match".into(), "any".into());
        binding.arguments.insert("format".into(), "pdf".into());
        let mut table = RoutingTable::new();
        table
            .apply(&[
                Change::DeclareExchange(Exchange::new("app", ExchangeType::Topic)),
                Change::DeclareExchange(Exchange::new("h", ExchangeType::Headers)),
                Change::DeclareExchange(Exchange::new("later", ExchangeType::DelayedTopic)),
                Change::AddBinding(Binding::new(
                    "later",
                    Destination::Topic("email_queue".into()),
                    "user.*",
                )),
                Change::AddBinding(Binding::new(
                    "app",
                    Destination::Topic("email_queue".into()),
                    "user.*",
                )),
                Change::AddBinding(Binding::new("app", Destination::Exchange("h".into()), "#")),
                Change::AddBinding(binding),
                Change::SetAlternate {
                    exchange: "app".into(),
                    alternate: Some("h".into()),
                },
            ])
            .unwrap();
        table
    }

    #[test]
    fn save_then_load_restores_the_table() {
        let directory = tempfile::tempdir().unwrap();
        let store = RoutingStore::new(directory.path());
        assert!(store.load().unwrap().is_none(), "nothing saved yet");
        let table = sample();
        store.save(&table.declarations()).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded, table.declarations());
        let restored = RoutingTable::from_declarations(&loaded).unwrap();
        assert_eq!(restored.version(), table.version());
        assert_eq!(
            restored.route("app", Some(b"user.x"), &[]).unwrap(),
            ["email_queue"]
        );
        // A delayed exchange keeps its type and routes with its x-delayed-type.
        let later = restored.exchange("later").map(|exchange| exchange.kind);
        assert_eq!(later, Some(ExchangeType::DelayedTopic));
        assert_eq!(
            restored.route("later", Some(b"user.x"), &[]).unwrap(),
            ["email_queue"]
        );

        // A second save replaces the first whole, and a stale temporary file is ignored.
        let mut smaller = table.clone();
        smaller
            .apply(&[Change::DeleteExchange { name: "h".into() }])
            .unwrap();
        store.save(&smaller.declarations()).unwrap();
        fs::write(
            directory.path().join("routing").join(TEMPORARY_NAME),
            b"junk",
        )
        .unwrap();
        assert_eq!(store.load().unwrap().unwrap(), smaller.declarations());
    }

    #[test]
    fn damaged_files_are_refused_not_emptied() {
        let directory = tempfile::tempdir().unwrap();
        let store = RoutingStore::new(directory.path());
        store.save(&sample().declarations()).unwrap();
        let good = fs::read(store.path()).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut bad_magic = good.clone();
        bad_magic[7] = b'9';
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("torn", good[..good.len() / 2].to_vec()),
            ("flipped byte", flipped),
            ("other version", bad_magic),
        ];
        for (name, bytes) in cases {
            fs::write(store.path(), &bytes).unwrap();
            match store.load() {
                Err(StoreError::Corrupt { .. }) => {}
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn valid_checksum_over_garbage_is_still_refused() {
        let directory = tempfile::tempdir().unwrap();
        let store = RoutingStore::new(directory.path());
        let payload = vec![0xabu8; 64];
        let mut contents = MAGIC.to_vec();
        contents.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        contents.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        contents.extend_from_slice(&payload);
        fs::create_dir_all(directory.path().join("routing")).unwrap();
        fs::write(store.path(), contents).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
    }
}
