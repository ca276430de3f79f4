//! The authoritative routing table and its durable copy. Runs on the controller shard only.
//! Core module: imports no protocol.
//!
//! Concurrency rule: exactly one [`RoutingController`] exists, on the controller shard; every
//! declaration change from any shard is sent there and applied one at a time, so the table has a
//! single writer. After a change is persisted the controller publishes an immutable snapshot
//! (`Arc<RoutingTable>`, never mutated again) which travels to every shard inside the metadata
//! snapshot (`Metadata::routing`; a shard ignores snapshots older than the one it holds).
//! Snapshots are shared read-only: routing touches no atomics (the `Arc` is cloned only when a
//! snapshot is installed), and nothing mutable crosses shards.
//!
//! Order of a change: validate and apply in memory → persist (fsync) → publish → answer the
//! admin request. If persisting fails the change is reverted and refused, so a declaration is
//! acknowledged only once it will survive a restart.

use std::path::Path;
use std::sync::Arc;

use super::exchange::RoutingErrorKind;
use super::store::{RoutingStore, StoreError};
use super::table::{ApplyError, Change, RoutingTable};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the saved routing declarations are invalid: {0}")]
    InvalidSaved(ApplyError),
}

impl ControllerError {
    /// The kind of refusal an admin response reports for this error.
    pub fn kind(&self) -> RoutingErrorKind {
        match self {
            ControllerError::Apply(error) => error.error.kind(),
            ControllerError::Store(_) | ControllerError::InvalidSaved(_) => {
                RoutingErrorKind::Storage
            }
        }
    }
}

/// The single writer of the routing table.
#[derive(Debug)]
pub struct RoutingController {
    table: RoutingTable,
    store: RoutingStore,
    published: Arc<RoutingTable>,
}

impl RoutingController {
    /// Loads the saved declarations of the broker whose data lives in `data_dir` (none: empty).
    pub fn open(data_dir: &Path) -> Result<RoutingController, ControllerError> {
        let store = RoutingStore::new(data_dir);
        let table = match store.load()? {
            Some(declarations) => RoutingTable::from_declarations(&declarations)
                .map_err(ControllerError::InvalidSaved)?,
            None => RoutingTable::new(),
        };
        let published = Arc::new(table.clone());
        Ok(RoutingController {
            table,
            store,
            published,
        })
    }

    /// Takes over a table already loaded from `data_dir` (by `open`, at broker start) and
    /// published as `snapshot`.
    pub fn from_snapshot(data_dir: &Path, snapshot: Arc<RoutingTable>) -> RoutingController {
        RoutingController {
            table: (*snapshot).clone(),
            store: RoutingStore::new(data_dir),
            published: snapshot,
        }
    }

    /// Applies `changes` all or nothing, persists them, and returns the snapshot to broadcast
    /// (the current one, unchanged, if the changes were no-ops).
    pub fn apply(&mut self, changes: &[Change]) -> Result<Arc<RoutingTable>, ControllerError> {
        let reversal = self.table.apply_reversible(changes)?;
        if reversal.is_empty() {
            return Ok(self.published.clone());
        }
        if let Err(error) = self.store.save(&self.table.declarations()) {
            self.table.revert(reversal);
            return Err(error.into());
        }
        self.published = Arc::new(self.table.clone());
        Ok(self.published.clone())
    }

    /// The newest published snapshot (for a shard that starts or reconnects).
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.published.clone()
    }

    pub fn table(&self) -> &RoutingTable {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::exchange::{Binding, Destination, Exchange, ExchangeType};

    fn declare_app() -> Vec<Change> {
        vec![
            Change::DeclareExchange(Exchange::new("app", ExchangeType::Topic)),
            Change::AddBinding(Binding::new(
                "app",
                Destination::Topic("email_queue".into()),
                "user.*",
            )),
        ]
    }

    #[test]
    fn changes_persist_across_reopen() {
        let directory = tempfile::tempdir().unwrap();
        let mut controller = RoutingController::open(directory.path()).unwrap();
        assert_eq!(controller.snapshot().version(), 0);
        let snapshot = controller.apply(&declare_app()).unwrap();
        assert_eq!(snapshot.version(), 1);
        // A no-op publishes nothing new.
        let again = controller.apply(&declare_app()).unwrap();
        assert!(Arc::ptr_eq(&snapshot, &again));
        drop(controller);

        let reopened = RoutingController::open(directory.path()).unwrap();
        assert_eq!(reopened.snapshot().version(), 1);
        assert_eq!(
            reopened
                .table()
                .route("app", Some(b"user.registered"), &[])
                .unwrap(),
            ["email_queue"]
        );
    }

    #[test]
    fn a_failed_save_reverts_and_refuses() {
        let directory = tempfile::tempdir().unwrap();
        let mut controller = RoutingController::open(directory.path()).unwrap();
        controller.apply(&declare_app()).unwrap();
        // Make the store directory unwritable by replacing it with a file.
        let routing = directory.path().join("routing");
        std::fs::remove_dir_all(&routing).unwrap();
        std::fs::write(&routing, b"not a directory").unwrap();
        let error = controller
            .apply(&[Change::DeclareExchange(Exchange::new(
                "more",
                ExchangeType::Fanout,
            ))])
            .unwrap_err();
        assert!(matches!(error, ControllerError::Store(_)), "{error}");
        assert_eq!(error.kind(), RoutingErrorKind::Storage);
        assert!(!controller.table().is_exchange("more"));
        assert_eq!(controller.table().version(), 1);
        assert_eq!(controller.snapshot().version(), 1);
    }

    #[test]
    fn invalid_changes_are_refused_with_their_code() {
        let directory = tempfile::tempdir().unwrap();
        let mut controller = RoutingController::open(directory.path()).unwrap();
        let error = controller
            .apply(&[Change::AddBinding(Binding::new(
                "missing",
                Destination::Topic("t".into()),
                "",
            ))])
            .unwrap_err();
        assert_eq!(error.kind(), RoutingErrorKind::NotFound);
    }

    #[test]
    fn snapshots_cross_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Arc<RoutingTable>>();
    }
}
