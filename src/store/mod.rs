//! Where the meta table is persisted. The meta table knows only this trait: a key/value
//! store with prefix scans and atomic, durable batches. redb (embedded, default) and etcd
//! (when one coordinator replica is not enough) both fit it with the same key layout
//! (see [`crate::meta::change`]).

pub mod commit_log;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod lock;
pub mod redb;

#[cfg(feature = "etcd")]
pub use self::etcd::{EtcdOptions, EtcdStore};
pub use self::redb::{RedbOptions, RedbStore};

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded redb file failed.
    #[error("redb: {0}")]
    Redb(#[from] ::redb::Error),
    /// A guarded commit was refused because this process no longer holds the write
    /// fence: its leadership lease ended, or another writer changed the store since its
    /// last commit. Nothing of the batch was written.
    #[error("commit fenced: {0}")]
    Fenced(String),
    /// Another process holds the data directory.
    #[error(transparent)]
    Locked(#[from] lock::DataDirLockError),
    /// A file of the store is damaged: starting would lose or alter acknowledged data.
    /// The message names the file, where the damage is, and the remedy.
    #[error("{0}")]
    Corrupt(String),
    /// Writes are refused until the store can be reopened (after a failed write, e.g. a
    /// full disk); the store retries on the next write or health check.
    #[error("meta store unavailable: {0}")]
    Unavailable(String),
    /// The store's files could not be prepared.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// One key's new value, or its deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOp {
    /// The key.
    pub key: String,
    /// The new value; `None` deletes.
    pub value: Option<Vec<u8>>,
}

/// Changes that are written together or not at all.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// In order; a later op on the same key wins.
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// Sets a key.
    pub fn put(&mut self, key: impl Into<String>, value: Vec<u8>) {
        self.ops.push(WriteOp {
            key: key.into(),
            value: Some(value),
        });
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: impl Into<String>) {
        self.ops.push(WriteOp {
            key: key.into(),
            value: None,
        });
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Several prefixes read at one moment of the store, so that records spread over them are
/// consistent with each other even while another process writes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// One list per requested prefix, in the order asked, each in key order.
    pub entries: Vec<Vec<(String, Vec<u8>)>>,
    /// The store revision the snapshot was read at (etcd's); 0 for stores without
    /// revisions. Changes after it can be watched from `revision + 1`.
    pub revision: i64,
}

/// A durable key/value store for the meta table.
pub trait MetaStore: Send + Sync + 'static {
    /// Every key under `prefix` with its value, in key order.
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The value of one key.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every key under each of `prefixes`, all as of one moment. The default scans one
    /// prefix after another, which is consistent when no other process writes (redb).
    fn snapshot(&self, prefixes: &[&str]) -> Result<Snapshot, StoreError> {
        let mut entries = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            entries.push(self.scan_prefix(prefix)?);
        }
        Ok(Snapshot {
            entries,
            revision: 0,
        })
    }

    /// Writes a batch atomically; when this returns `Ok` the batch survives a crash.
    fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError>;

    /// Makes everything committed so far cheap to recover (called at shutdown, and after
    /// history was deleted, so that its space is reclaimed without waiting for a write).
    /// Stores whose commits need no recovery work keep the default.
    fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// `Err(reason)` while the store refuses writes (reported by CheckHealth). A store
    /// that can recover by itself (space freed on a full disk) tries to here.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Most operations one `commit` accepts (etcd's `--max-txn-ops`); `None`: no limit.
    /// The engine sizes its batches and splits its history compaction by it.
    fn max_ops_per_commit(&self) -> Option<usize> {
        None
    }
}
