//! Cluster metadata: topics, their partitions' owning shards, per-topic configs, per-group configs
//! (Kafka's group configs, resource type GROUP), ACL bindings, and the producer id counter. The controller shard (shard 0) owns the only mutable copy and persists it; every
//! shard holds a read-only `Arc<Metadata>` replaced by versioned broadcasts, so lookups on the data
//! path take no lock.
//!
//! On disk: `<data-dir>/metadata.json` (serde JSON, see docs/kafka-compat.md), a snapshot
//! replaced by write-to-`metadata.json.tmp`, fsync, rename, fsync of the directory; and
//! `<data-dir>/metadata.journal`, the changes since that snapshot (`journal.rs`).

mod journal;

pub use journal::{Journal, JOURNAL_FILE};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::shard::ShardId;

pub const METADATA_FILE: &str = "metadata.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Metadata {
    /// Bumped by every change; shards ignore broadcasts older than what they hold.
    pub version: u64,
    pub topics: imbl::OrdMap<String, TopicMeta>,
    /// The next producer id InitProducerId hands out; persisted before it is used.
    pub next_producer_id: i64,
    /// Group configs as set (Kafka names, e.g. `share.record.lock.duration.ms`), by group id; a
    /// group may have configs before it exists (as in Kafka). Validated by `shares::group_configs`
    /// before the controller stores them.
    #[serde(default, skip_serializing_if = "imbl::OrdMap::is_empty")]
    pub group_configs: imbl::OrdMap<String, BTreeMap<String, String>>,
    /// SCRAM credentials by user (`security::users`), changed by AlterUserScramCredentials.
    #[serde(default, skip_serializing_if = "imbl::OrdMap::is_empty")]
    pub users: crate::security::users::Users,
    /// Kafka ACL bindings (`security::acl`), checked by every shard. Added by CreateAcls and
    /// removed by DeleteAcls through the controller.
    #[serde(default, skip_serializing_if = "imbl::OrdSet::is_empty")]
    pub acls: imbl::OrdSet<crate::security::acl::AclBinding>,
    /// Exchanges and bindings: an immutable snapshot published by the controller's
    /// `routing::controller::RoutingController`, broadcast with the metadata. Persisted by the
    /// routing store (`<data-dir>/routing/`), not in this file.
    #[serde(skip)]
    pub routing: Arc<crate::routing::table::RoutingTable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Topic id (Kafka's UUID), as 32 hex digits.
    pub id: String,
    /// `partitions[p]` is the shard that owns partition p, chosen at creation.
    pub partitions: Vec<ShardId>,
    /// Per-topic configs as given (Kafka names).
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(&self.id).unwrap_or(uuid::Uuid::nil())
    }
}

impl Metadata {
    pub fn owner(&self, topic: &str, partition: i32) -> Option<ShardId> {
        let meta = self.topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|p| meta.partitions.get(p).copied())
    }
}

/// The stable shard for a new partition: spreads a topic's partitions round-robin from a start
/// chosen by the topic name, so that single-partition topics do not all land on shard 0.
pub fn assign_shard(topic: &str, partition: usize, shard_count: usize) -> ShardId {
    assert!(shard_count > 0);
    ShardId((crc32c::crc32c(topic.as_bytes()) as usize + partition) % shard_count)
}

/// A fresh random topic id.
pub fn new_topic_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut value: u128 = 0;
    for _ in 0..2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(value);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        value = (value << 64) | hasher.finish() as u128;
    }
    uuid::Uuid::from_u128(value).simple().to_string()
}

/// Kafka's topic name rule: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join("topics").join(format!("{topic}-{partition}"))
}

/// Loads the metadata (the snapshot and the journal's changes past it), or an empty one when
/// there is none yet.
pub fn load(data_dir: &Path) -> std::io::Result<Metadata> {
    let path = data_dir.join(METADATA_FILE);
    let mut metadata = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {error}", path.display()),
            )
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Metadata {
            next_producer_id: 1000,
            ..Metadata::default()
        },
        Err(error) => return Err(error),
    };
    journal::replay(data_dir, &mut metadata)?;
    Ok(metadata)
}

/// Replaces the snapshot atomically and empties the journal. Blocking std I/O: it runs at start
/// and on the controller shard when the journal is compacted, never on the data path.
pub fn store(data_dir: &Path, metadata: &Metadata) -> std::io::Result<()> {
    let path = data_dir.join(METADATA_FILE);
    let temporary = data_dir.join(format!("{METADATA_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(metadata).map_err(std::io::Error::other)?;
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    // Only now is the journal's content in the snapshot; a crash before this point replays it
    // onto the new snapshot, where its lines (no newer than the snapshot) change nothing.
    match std::fs::OpenOptions::new()
        .write(true)
        .open(data_dir.join(JOURNAL_FILE))
    {
        Ok(journal) => {
            journal.set_len(0)?;
            journal.sync_all()
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_then_load_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut metadata = load(dir.path()).unwrap();
        assert_eq!(metadata.next_producer_id, 1000);
        metadata.version = 7;
        metadata.topics.insert(
            "t".into(),
            TopicMeta {
                id: new_topic_id(),
                partitions: vec![ShardId(0), ShardId(1)],
                configs: BTreeMap::from([("flush.ms".into(), "5".into())]),
            },
        );
        store(dir.path(), &metadata).unwrap();
        // Owners stay plain numbers on disk: `ShardId` changes no file.
        let text = std::fs::read_to_string(dir.path().join(METADATA_FILE)).unwrap();
        let compact: String = text.split_whitespace().collect();
        assert!(compact.contains(r#""partitions":[0,1]"#), "{text}");
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.version, 7);
        assert_eq!(loaded.owner("t", 1), Some(ShardId(1)));
        assert_eq!(loaded.owner("t", 2), None);
        assert_eq!(loaded.topics["t"].configs["flush.ms"], "5");
        assert_ne!(loaded.topics["t"].uuid(), uuid::Uuid::nil());
    }

    #[test]
    fn topic_names() {
        for good in ["a", "my_topic", "a.b-c", "X9"] {
            assert!(valid_topic_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }
}
