//! The embedded default store: a redb file plus a commit log (see [`super::commit_log`]).
//!
//! A commit is acknowledged once its batch is synced in the commit log (one `fdatasync`)
//! and applied to redb without sync; a checkpoint — a durable redb commit — runs every
//! [`RedbOptions::checkpoint_interval`], when the log is full, and at shutdown. Every batch
//! is still one atomic redb transaction, with the DDL log records inside it.

use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use super::commit_log::CommitLog;
use super::lock::DataDirLock;
use super::{MetaStore, StoreError, WriteBatch};
use crate::proto::records::{StoreBatch, StoreOp};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const STATE: TableDefinition<&str, u64> = TableDefinition::new("store-state");
const APPLIED_SEQUENCE: &str = "commit-log-applied";

/// The redb file name inside the data directory.
pub const FILE_NAME: &str = "meta.redb";
/// The commit log file name inside the data directory.
pub const LOG_FILE_NAME: &str = "commit.log";

/// Sizes and intervals of the store.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// Size of the pre-written commit log; a full log forces a checkpoint.
    pub commit_log_bytes: u64,
    /// Longest time between checkpoints while writes arrive.
    pub checkpoint_interval: Duration,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            commit_log_bytes: 64 << 20,
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

struct LogState {
    log: CommitLog,
    next_sequence: u64,
    last_checkpoint: Instant,
    /// Set when redb refused a batch that the log already holds: the outcome of that
    /// batch is only known after a restart replays the log, so no more writes are taken.
    poisoned: Option<String>,
}

/// A redb-backed [`MetaStore`].
pub struct RedbStore {
    db: Database,
    state: Mutex<LogState>,
    options: RedbOptions,
    /// Held as long as the store is open (declared last: released after the files close).
    _lock: DataDirLock,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

fn write_ops(
    txn: &WriteTransaction,
    ops: impl Iterator<Item = (String, Option<Vec<u8>>)>,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(META)?;
    for (key, value) in ops {
        match value {
            Some(value) => {
                table.insert(key.as_str(), value.as_slice())?;
            }
            None => {
                table.remove(key.as_str())?;
            }
        }
    }
    Ok(())
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir` with default options.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, RedbOptions::default())
    }

    /// Opens (or creates) the store: redb comes back at its last checkpoint (quick repair
    /// after a crash), then the commit log records above it are replayed and checkpointed.
    pub fn open_with(data_dir: &Path, options: RedbOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(io_error(format!(
            "creating data directory {}",
            data_dir.display()
        )))?;
        let lock = DataDirLock::acquire(data_dir)?;
        let db = Database::create(data_dir.join(FILE_NAME)).map_err(redb::Error::from)?;
        let applied = {
            let mut txn = db.begin_write().map_err(redb::Error::from)?;
            txn.set_quick_repair(true);
            txn.open_table(META).map_err(redb::Error::from)?;
            let applied = txn
                .open_table(STATE)
                .map_err(redb::Error::from)?
                .get(APPLIED_SEQUENCE)
                .map_err(redb::Error::from)?
                .map(|v| v.value())
                .unwrap_or(0);
            txn.commit().map_err(redb::Error::from)?;
            applied
        };
        let log_path = data_dir.join(LOG_FILE_NAME);
        let (log, records) = CommitLog::open(&log_path, options.commit_log_bytes).map_err(
            io_error(format!("opening commit log {}", log_path.display())),
        )?;
        let mut last = applied;
        let mut replayed = 0usize;
        for record in records.iter().filter(|r| r.sequence > applied) {
            let batch =
                StoreBatch::decode(record.payload.as_slice()).map_err(|e| StoreError::Io {
                    context: format!("commit log record {}", record.sequence),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                })?;
            let mut txn = db.begin_write().map_err(redb::Error::from)?;
            txn.set_durability(Durability::None)
                .map_err(redb::Error::from)?;
            write_ops(&txn, batch.ops.into_iter().map(|op| (op.key, op.value)))?;
            txn.commit().map_err(redb::Error::from)?;
            last = record.sequence;
            replayed += 1;
        }
        let store = Self {
            db,
            state: Mutex::new(LogState {
                log,
                next_sequence: last + 1,
                last_checkpoint: Instant::now(),
                poisoned: None,
            }),
            options,
            _lock: lock,
        };
        if replayed > 0 {
            tracing::info!(replayed, "replayed commit log records into redb");
        }
        store.checkpoint_locked(&mut store.state.lock())?;
        Ok(store)
    }

    /// One durable redb commit covering every batch applied so far; then the log restarts.
    fn checkpoint_locked(&self, state: &mut LogState) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(redb::Error::from)?;
        txn.set_quick_repair(true);
        txn.open_table(STATE)
            .map_err(redb::Error::from)?
            .insert(APPLIED_SEQUENCE, state.next_sequence - 1)
            .map_err(redb::Error::from)?;
        txn.commit().map_err(redb::Error::from)?;
        state
            .log
            .reset()
            .map_err(io_error("resetting the commit log"))?;
        state.last_checkpoint = Instant::now();
        Ok(())
    }

    fn commit_locked(&self, state: &mut LogState, batch: &WriteBatch) -> Result<(), StoreError> {
        let payload = StoreBatch {
            ops: batch
                .ops
                .iter()
                .map(|op| StoreOp {
                    key: op.key.clone(),
                    value: op.value.clone(),
                })
                .collect(),
        }
        .encode_to_vec();
        if !state.log.fits(payload.len()) {
            self.checkpoint_locked(state)?;
        }
        if !state.log.fits(payload.len()) {
            // Larger than the whole log: write it as one durable redb commit instead.
            let mut txn = self.db.begin_write().map_err(redb::Error::from)?;
            txn.set_quick_repair(true);
            write_ops(
                &txn,
                batch
                    .ops
                    .iter()
                    .map(|op| (op.key.clone(), op.value.clone())),
            )?;
            return Ok(txn.commit().map_err(redb::Error::from)?);
        }
        let sequence = state.next_sequence;
        state
            .log
            .append(sequence, &payload)
            .map_err(io_error("appending to the commit log"))?;
        state.next_sequence += 1;
        let applied = (|| -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::None)?;
            write_ops(
                &txn,
                batch
                    .ops
                    .iter()
                    .map(|op| (op.key.clone(), op.value.clone())),
            )?;
            txn.commit()?;
            Ok(())
        })();
        if let Err(error) = applied {
            let reason =
                format!("redb refused a logged batch ({error}); restart to replay the commit log");
            tracing::error!(%reason, "meta store stops taking writes");
            state.poisoned = Some(reason);
            return Err(error.into());
        }
        if state.last_checkpoint.elapsed() >= self.options.checkpoint_interval
            && let Err(error) = self.checkpoint_locked(state)
        {
            tracing::warn!(%error, "checkpoint failed; the commit log still holds every batch");
        }
        Ok(())
    }
}

impl MetaStore for RedbStore {
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(META).map_err(redb::Error::from)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..).map_err(redb::Error::from)? {
            let (key, value) = entry.map_err(redb::Error::from)?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_string(), value.value().to_vec()));
        }
        Ok(out)
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(META).map_err(redb::Error::from)?;
        Ok(table
            .get(key)
            .map_err(redb::Error::from)?
            .map(|value| value.value().to_vec()))
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.poisoned {
            return Err(StoreError::Io {
                context: reason.clone(),
                source: std::io::Error::other("store poisoned"),
            });
        }
        self.commit_locked(&mut state, batch)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if state.poisoned.is_some() {
            return Ok(());
        }
        self.checkpoint_locked(&mut state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ops: &[(&str, Option<&[u8]>)]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in ops {
            match value {
                Some(value) => batch.put(*key, value.to_vec()),
                None => batch.delete(*key),
            }
        }
        batch
    }

    #[test]
    fn batches_are_applied_and_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = RedbStore::open(dir.path()).expect("open");
            store
                .commit(&batch(&[
                    ("a/1", Some(b"one")),
                    ("a/2", Some(b"two")),
                    ("b/1", Some(b"other")),
                ]))
                .expect("commit");
            store.commit(&batch(&[("a/1", None)])).expect("commit");
        }
        let store = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.scan_prefix("a/").expect("scan"),
            vec![("a/2".to_string(), b"two".to_vec())]
        );
        assert_eq!(store.get("b/1").expect("get"), Some(b"other".to_vec()));
        assert_eq!(store.get("a/1").expect("get"), None);
    }

    #[test]
    fn a_full_log_checkpoints_and_huge_batches_still_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = RedbOptions {
            commit_log_bytes: 8 * 4096,
            checkpoint_interval: Duration::from_secs(3600),
        };
        {
            let store = RedbStore::open_with(dir.path(), options.clone()).expect("open");
            for i in 0..50 {
                store
                    .commit(&batch(&[(&format!("k/{i:03}"), Some(b"v"))]))
                    .expect("commit");
            }
            let huge = vec![9u8; 100_000];
            store
                .commit(&batch(&[("huge", Some(&huge))]))
                .expect("huge commit");
        }
        let store = RedbStore::open_with(dir.path(), options).expect("reopen");
        assert_eq!(store.scan_prefix("k/").expect("scan").len(), 50);
        assert_eq!(
            store.get("huge").expect("get").map(|v| v.len()),
            Some(100_000)
        );
    }
}
