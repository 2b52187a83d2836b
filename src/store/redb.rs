//! The embedded default store: a redb file plus a commit log (see [`super::commit_log`]).
//!
//! A commit is acknowledged once its batch is synced in the commit log (one `fdatasync`)
//! and applied to redb without sync; a checkpoint — a durable redb commit — runs every
//! [`RedbOptions::checkpoint_interval`], when the log is full, and at shutdown. Every batch
//! is still one atomic redb transaction, with the DDL log records inside it.
//!
//! **Integrity.** Every value in the redb file carries a CRC-32 of its key and value,
//! checked on every read; the commit log checks its records the same way. Damage is never
//! skipped: the store refuses to open, naming the file, where, and the remedy (restore the
//! data directory, or [`RedbOptions::repair`], which drops the damaged part and logs what
//! it dropped). A missing `meta.redb` beside a kept `commit.log`, a missing or truncated
//! `commit.log` beside a kept `meta.redb`, are damage too. Only a torn last record of the
//! log (a crash during its write: never acknowledged) is cut silently but for a warning.
//!
//! **Failed writes** (a full disk). A batch redb refuses is taken back out of the commit
//! log before the caller hears of the failure, so a restart never applies a write that was
//! reported failed. redb needs reopening after a failed write: until that works (space
//! returns), writes are refused and [`MetaStore::health`] reports why; each later write or
//! health check tries again, with no restart. A restart on a full disk first releases
//! [`RESERVE_FILE_NAME`] (held back while there was room), so the replay has space.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prost::Message;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use super::commit_log::{AppendError, CommitLog, LogError};
use super::lock::DataDirLock;
use super::{MetaStore, StoreError, WriteBatch};
use crate::proto::records::{StoreBatch, StoreOp};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const STATE: TableDefinition<&str, u64> = TableDefinition::new("store-state");
const APPLIED_SEQUENCE: &str = "commit-log-applied";
/// The bitwise complement of [`APPLIED_SEQUENCE`], so that a damaged one is noticed.
const APPLIED_SEQUENCE_CHECK: &str = "commit-log-applied-check";
/// The commit log's size when the last checkpoint ran: a shorter file was truncated.
const LOG_BYTES: &str = "commit-log-bytes";
/// 1: values carry a checksum. Absent in files of earlier versions, which are converted.
const VALUE_FORMAT: &str = "value-format";
const CHECKSUMMED_VALUES: u64 = 1;

/// The redb file name inside the data directory.
pub const FILE_NAME: &str = "meta.redb";
/// The commit log file name inside the data directory.
pub const LOG_FILE_NAME: &str = "commit.log";
/// Space held back in the data directory, released when the store opens: a restart on a
/// full disk has this much room to replay the commit log and checkpoint.
pub const RESERVE_FILE_NAME: &str = "space-reserve";
/// Size of [`RESERVE_FILE_NAME`].
pub const RESERVE_BYTES: usize = 8 << 20;

/// What to do about damaged files, printed with every refusal.
const REMEDY: &str = "restore the data directory from a backup, or start once with --repair \
                      to drop the damaged part (every dropped record is logged)";

/// redb's page cache.
const REDB_CACHE_BYTES: usize = 64 << 20;

/// A redb file whose free space exceeds both this and its live data is compacted (when
/// the store opens, and at a checkpoint): history that compaction deleted gives its disk
/// space back.
const COMPACT_FREE_BYTES: u64 = 16 << 20;

/// Sizes and intervals of the store.
#[derive(Debug, Clone)]
pub struct RedbOptions {
    /// Size of the pre-written commit log; a full log forces a checkpoint.
    pub commit_log_bytes: u64,
    /// Longest time between checkpoints while writes arrive.
    pub checkpoint_interval: Duration,
    /// Open damaged files anyway, dropping what is damaged (each drop is logged at WARN):
    /// values failing their checksum, commit log records after a damaged one, a log whose
    /// redb file is gone. Without it, damage refuses the open.
    pub repair: bool,
    /// Shortest time between two looks, at a checkpoint, at whether the redb file is sparse
    /// enough to compact (a look walks redb's page trees; a compaction pauses writes and
    /// store reads while it copies the live pages).
    pub compact_check_interval: Duration,
}

impl Default for RedbOptions {
    fn default() -> Self {
        Self {
            commit_log_bytes: 64 << 20,
            checkpoint_interval: Duration::from_secs(1),
            repair: false,
            compact_check_interval: Duration::from_secs(60),
        }
    }
}

struct LogState {
    log: CommitLog,
    next_sequence: u64,
    last_checkpoint: Instant,
    /// When a checkpoint last looked at whether the file is sparse.
    last_compact_check: Instant,
    /// Bytes of entries replaced or removed since that look: a look needs at least
    /// [`COMPACT_FREE_BYTES`] of them to find a sparse file.
    freed_since_check: u64,
    /// Set when a failed write could not be taken back out of the commit log: its outcome
    /// is only known after a restart replays the log, so no more writes are taken.
    poisoned: Option<String>,
    /// Set after redb failed a write: redb must be reopened (and the log replayed into
    /// it) before the next write. Cleared by [`RedbStore::reopen_locked`].
    failed: Option<String>,
}

/// A redb-backed [`MetaStore`].
pub struct RedbStore {
    /// `None` while a failed redb is being (or could not be) reopened.
    db: RwLock<Option<Database>>,
    state: Mutex<LogState>,
    options: RedbOptions,
    data_dir: PathBuf,
    /// Held as long as the store is open (declared last: released after the files close).
    _lock: DataDirLock,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

fn value_checksum(key: &str, value: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(key.len() as u64).to_le_bytes());
    hasher.update(key.as_bytes());
    hasher.update(value);
    hasher.finalize()
}

/// The stored form of a value: its checksum (over key and value), then the value.
fn sealed(key: &str, value: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(4 + value.len());
    stored.extend_from_slice(&value_checksum(key, value).to_le_bytes());
    stored.extend_from_slice(value);
    stored
}

/// The value of a stored entry, or `None` when it fails its checksum.
fn unsealed<'a>(key: &str, stored: &'a [u8]) -> Option<&'a [u8]> {
    let (checksum, value) = stored.split_first_chunk::<4>()?;
    (u32::from_le_bytes(*checksum) == value_checksum(key, value)).then_some(value)
}

fn damaged_value(data_dir: &Path, key: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{}: the value of key {key:?} fails its checksum (the file is damaged); {REMEDY}",
        data_dir.join(FILE_NAME).display()
    ))
}

/// Writes `ops` into the meta table; returns the bytes of the entries they replaced or
/// removed (what the checkpoint's compaction check counts).
fn write_ops(
    txn: &WriteTransaction,
    ops: impl Iterator<Item = (String, Option<Vec<u8>>)>,
) -> Result<u64, redb::Error> {
    let mut table = txn.open_table(META)?;
    let mut freed = 0u64;
    for (key, value) in ops {
        let old = match value {
            Some(value) => table.insert(key.as_str(), sealed(&key, &value).as_slice())?,
            None => table.remove(key.as_str())?,
        };
        if let Some(old) = old {
            freed += (key.len() + old.value().len()) as u64;
        }
    }
    Ok(freed)
}

/// redb, opened and brought up to the commit log, with the log positioned for appends.
struct Loaded {
    db: Database,
    log: CommitLog,
    next_sequence: u64,
    replayed: usize,
}

/// Opens redb and the commit log in `data_dir`, checks both, and replays the log into
/// redb (not yet durable: the caller checkpoints).
fn load(data_dir: &Path, options: &RedbOptions) -> Result<Loaded, StoreError> {
    let db_path = data_dir.join(FILE_NAME);
    let log_path = data_dir.join(LOG_FILE_NAME);
    let db_existed = db_path.exists();
    let log_existed = log_path.exists();
    if !db_existed && log_existed {
        let detail = format!(
            "{} is missing while {} exists: starting would lose every object older than \
             the log",
            db_path.display(),
            log_path.display()
        );
        if !options.repair {
            return Err(StoreError::Corrupt(format!(
                "{detail}; restore {FILE_NAME} from a backup, or start once with --repair to \
                 start empty (dropping the commit log)"
            )));
        }
        tracing::warn!(%detail, "repair: starting with an empty meta store");
        std::fs::remove_file(&log_path)
            .map_err(io_error(format!("removing {}", log_path.display())))?;
    }
    // The meta table serves reads from memory; redb's cache only speeds up the scan at
    // start, so its default (1 GiB, filled by every page written) is not worth the RSS.
    let db = Database::builder()
        .set_cache_size(REDB_CACHE_BYTES)
        .create(&db_path)
        .map_err(|error| {
            StoreError::Corrupt(format!(
                "{}: cannot be opened ({error}); {REMEDY}",
                db_path.display()
            ))
        })?;
    let (applied, log_bytes) = prepare(&db, data_dir, options)?;
    if db_existed && !log_existed {
        let detail = format!(
            "{} is missing while {} exists: the changes after its last checkpoint (sequence \
             {applied}) would be lost",
            log_path.display(),
            db_path.display()
        );
        if !options.repair {
            return Err(StoreError::Corrupt(format!(
                "{detail}; restore {LOG_FILE_NAME} from a backup, or start once with --repair \
                 to continue from {FILE_NAME} alone"
            )));
        }
        tracing::warn!(%detail, "repair: continuing from the redb file alone");
    }
    if let Some(expected) = log_bytes
        && let Ok(metadata) = std::fs::metadata(&log_path)
        && metadata.len() < expected
    {
        let detail = format!(
            "{} is {} bytes long but was {expected}: it was truncated, and the records past \
             byte {} are lost",
            log_path.display(),
            metadata.len(),
            metadata.len()
        );
        if !options.repair {
            return Err(StoreError::Corrupt(format!("{detail}; {REMEDY}")));
        }
        tracing::warn!(%detail, "repair: continuing with the records before the cut");
    }
    let (log, records, scan) =
        CommitLog::open(&log_path, options.commit_log_bytes, applied, options.repair).map_err(
            |error| match error {
                LogError::Io(source) => StoreError::Io {
                    context: format!("opening commit log {}", log_path.display()),
                    source,
                },
                LogError::Corrupt { offset, detail } => StoreError::Corrupt(format!(
                    "{}: damaged at byte offset {offset}: {detail}; {REMEDY}",
                    log_path.display()
                )),
            },
        )?;
    for (sequence, offset) in &scan.dropped {
        tracing::warn!(
            file = %log_path.display(),
            sequence,
            offset,
            "repair: dropped a commit log record"
        );
    }
    let mut last = applied;
    let mut replayed = 0usize;
    for record in &records {
        let batch = StoreBatch::decode(record.payload.as_slice()).map_err(|e| {
            StoreError::Corrupt(format!(
                "{}: record {} passes its checksum but does not decode ({e}); {REMEDY}",
                log_path.display(),
                record.sequence
            ))
        })?;
        let mut txn = db.begin_write().map_err(redb::Error::from)?;
        txn.set_durability(Durability::None)
            .map_err(redb::Error::from)?;
        write_ops(&txn, batch.ops.into_iter().map(|op| (op.key, op.value)))?;
        txn.commit().map_err(redb::Error::from)?;
        last = record.sequence;
        replayed += 1;
    }
    Ok(Loaded {
        db,
        log,
        next_sequence: last + 1,
        replayed,
    })
}

/// Creates the tables, checks the state values, converts values of earlier versions to
/// the checksummed form, and with `repair` drops values failing their checksum. Returns
/// the sequence redb covers and the log size of the last checkpoint.
fn prepare(
    db: &Database,
    data_dir: &Path,
    options: &RedbOptions,
) -> Result<(u64, Option<u64>), StoreError> {
    let db_path = data_dir.join(FILE_NAME);
    let mut txn = db.begin_write().map_err(redb::Error::from)?;
    txn.set_quick_repair(true);
    let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
    let mut state = txn.open_table(STATE).map_err(redb::Error::from)?;
    let read = |state: &redb::Table<&str, u64>, key: &str| -> Result<Option<u64>, StoreError> {
        Ok(state
            .get(key)
            .map_err(redb::Error::from)?
            .map(|v| v.value()))
    };
    let format = read(&state, VALUE_FORMAT)?;
    let applied = read(&state, APPLIED_SEQUENCE)?;
    let check = read(&state, APPLIED_SEQUENCE_CHECK)?;
    let log_bytes = read(&state, LOG_BYTES)?;
    let mut changed = false;
    match format {
        Some(CHECKSUMMED_VALUES) => {
            if applied.map(|v| !v) != check {
                return Err(StoreError::Corrupt(format!(
                    "{}: the commit log position ({applied:?}) does not match its check value \
                     (the file is damaged); {REMEDY}",
                    db_path.display()
                )));
            }
            if options.repair {
                let mut damaged = Vec::new();
                for entry in meta.iter().map_err(redb::Error::from)? {
                    let (key, value) = entry.map_err(redb::Error::from)?;
                    if unsealed(key.value(), value.value()).is_none() {
                        damaged.push(key.value().to_string());
                    }
                }
                for key in damaged {
                    tracing::warn!(file = %db_path.display(), key, "repair: dropped a damaged value");
                    meta.remove(key.as_str()).map_err(redb::Error::from)?;
                    changed = true;
                }
            }
        }
        Some(other) => {
            return Err(StoreError::Corrupt(format!(
                "{}: unknown value format {other} (the file is damaged, or written by a newer \
                 version); {REMEDY}",
                db_path.display()
            )));
        }
        None => {
            // A new file, or one of an earlier version: seal every value.
            let mut legacy = Vec::new();
            for entry in meta.iter().map_err(redb::Error::from)? {
                let (key, value) = entry.map_err(redb::Error::from)?;
                legacy.push((key.value().to_string(), value.value().to_vec()));
            }
            for (key, value) in legacy {
                meta.insert(key.as_str(), sealed(&key, &value).as_slice())
                    .map_err(redb::Error::from)?;
            }
            state
                .insert(VALUE_FORMAT, CHECKSUMMED_VALUES)
                .map_err(redb::Error::from)?;
            state
                .insert(APPLIED_SEQUENCE_CHECK, !applied.unwrap_or(0))
                .map_err(redb::Error::from)?;
            state
                .insert(APPLIED_SEQUENCE, applied.unwrap_or(0))
                .map_err(redb::Error::from)?;
            changed = true;
        }
    }
    drop(meta);
    drop(state);
    if changed {
        txn.commit().map_err(redb::Error::from)?;
    } else {
        txn.abort().map_err(redb::Error::from)?;
    }
    Ok((applied.unwrap_or(0), log_bytes))
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
        let reserve = data_dir.join(RESERVE_FILE_NAME);
        if reserve.exists() {
            std::fs::remove_file(&reserve)
                .map_err(io_error(format!("releasing {}", reserve.display())))?;
        }
        let loaded = load(data_dir, &options)?;
        let store = Self {
            db: RwLock::new(Some(loaded.db)),
            state: Mutex::new(LogState {
                log: loaded.log,
                next_sequence: loaded.next_sequence,
                last_checkpoint: Instant::now(),
                last_compact_check: Instant::now(),
                freed_since_check: 0,
                poisoned: None,
                failed: None,
            }),
            options,
            data_dir: data_dir.to_path_buf(),
            _lock: lock,
        };
        if loaded.replayed > 0 {
            tracing::info!(
                replayed = loaded.replayed,
                "replayed commit log records into redb"
            );
        }
        let mut state = store.state.lock();
        let checkpointed = store.checkpoint_locked(&mut state);
        if let Err(error) = &checkpointed {
            // The log still holds every replayed record: serve, and retry like after any
            // failed write (a full disk must not stop a restart).
            tracing::warn!(%error, "checkpoint after start-up failed; writes wait for it");
            state.failed = Some(format!("checkpoint after start-up failed: {error}"));
        }
        drop(state);
        if checkpointed.is_ok() {
            store.compact_if_sparse()?;
            store.hold_reserve();
        }
        Ok(store)
    }

    /// redb reuses freed pages but gives them back to the file system only when compacted;
    /// a file mostly made of free space (after large history was deleted) is compacted
    /// here. Called when the store opens, and after a checkpoint with the commit lock held:
    /// redb's compaction needs the database to itself, which the write lock on `db` gives
    /// (every read holds the read lock for the whole of its transaction).
    fn compact_if_sparse(&self) -> Result<(), StoreError> {
        let path = self.data_dir.join(FILE_NAME);
        let file_bytes = std::fs::metadata(&path)
            .map_err(io_error(format!("reading the size of {}", path.display())))?
            .len();
        if file_bytes < COMPACT_FREE_BYTES {
            return Ok(());
        }
        let mut db = self.db.write();
        let Some(db) = db.as_mut() else {
            return Ok(());
        };
        let (live, free) = {
            let txn = db.begin_write().map_err(redb::Error::from)?;
            let stats = txn.stats().map_err(redb::Error::from)?;
            txn.abort().map_err(redb::Error::from)?;
            (
                stats.stored_bytes() + stats.metadata_bytes(),
                stats.fragmented_bytes(),
            )
        };
        if free < COMPACT_FREE_BYTES || free < live {
            return Ok(());
        }
        let started = Instant::now();
        db.compact().map_err(redb::Error::from)?;
        let after = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        tracing::info!(
            before_bytes = file_bytes,
            after_bytes = after,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted the meta store file"
        );
        Ok(())
    }

    /// Writes [`RESERVE_FILE_NAME`] when it is missing and there is room for it.
    fn hold_reserve(&self) {
        let path = self.data_dir.join(RESERVE_FILE_NAME);
        if path.exists() {
            return;
        }
        let written = std::fs::File::create(&path).and_then(|mut file| {
            std::io::Write::write_all(&mut file, &vec![0u8; RESERVE_BYTES])?;
            file.sync_all()
        });
        if let Err(error) = written {
            let _ = std::fs::remove_file(&path);
            tracing::warn!(
                %error,
                file = %path.display(),
                "no room to hold space back for a restart on a full disk"
            );
        }
    }

    /// Runs `f` on the open redb, or says why there is none.
    fn with_db<R>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self.db.read().as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Unavailable(
                "the redb file is being reopened after a failed write".into(),
            )),
        }
    }

    /// One durable redb commit covering every batch applied so far; then the log restarts.
    fn checkpoint_locked(&self, state: &mut LogState) -> Result<(), StoreError> {
        self.with_db(|db| {
            let mut txn = db.begin_write().map_err(redb::Error::from)?;
            txn.set_quick_repair(true);
            let mut table = txn.open_table(STATE).map_err(redb::Error::from)?;
            let applied = state.next_sequence - 1;
            table
                .insert(APPLIED_SEQUENCE, applied)
                .map_err(redb::Error::from)?;
            table
                .insert(APPLIED_SEQUENCE_CHECK, !applied)
                .map_err(redb::Error::from)?;
            table
                .insert(LOG_BYTES, self.options.commit_log_bytes)
                .map_err(redb::Error::from)?;
            drop(table);
            txn.commit().map_err(redb::Error::from)?;
            Ok(())
        })
        .inspect_err(|error| self.note_failure(state, error))?;
        state
            .log
            .reset()
            .map_err(io_error("resetting the commit log"))?;
        state.last_checkpoint = Instant::now();
        if state.freed_since_check >= COMPACT_FREE_BYTES
            && state.last_compact_check.elapsed() >= self.options.compact_check_interval
        {
            state.last_compact_check = Instant::now();
            state.freed_since_check = 0;
            if let Err(error) = self.compact_if_sparse() {
                // Nothing is lost: the checkpoint is durable, and the file only stays large.
                tracing::warn!(%error, "compacting the meta store file failed; will retry");
            }
        }
        Ok(())
    }

    /// After a failed redb write: redb must be reopened before the next write.
    fn note_failure(&self, state: &mut LogState, error: &StoreError) {
        if state.failed.is_none() && !matches!(error, StoreError::Unavailable(_)) {
            tracing::error!(%error, "redb refused a write; writes wait until it reopens");
            state.failed = Some(error.to_string());
        }
    }

    /// Reopens redb after a failed write and replays the commit log into it; the store
    /// takes writes again once a checkpoint succeeds (the disk has room again).
    fn reopen_locked(&self, state: &mut LogState) -> Result<(), StoreError> {
        let Some(reason) = state.failed.clone() else {
            return Ok(());
        };
        let mut db = self.db.write();
        *db = None;
        let loaded = load(&self.data_dir, &self.options).map_err(|error| {
            StoreError::Unavailable(format!("{reason}; reopening failed: {error}"))
        })?;
        *db = Some(loaded.db);
        drop(db);
        state.log = loaded.log;
        state.next_sequence = loaded.next_sequence;
        state.failed = None;
        if let Err(error) = self.checkpoint_locked(state) {
            return Err(StoreError::Unavailable(format!(
                "{reason}; a checkpoint after reopening failed: {error}"
            )));
        }
        tracing::info!("redb reopened after a failed write; writes are taken again");
        self.hold_reserve();
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
        let apply = |durable: bool| {
            self.with_db(|db| {
                let mut txn = db.begin_write().map_err(redb::Error::from)?;
                if durable {
                    txn.set_quick_repair(true);
                } else {
                    txn.set_durability(Durability::None)
                        .map_err(redb::Error::from)?;
                }
                let freed = write_ops(
                    &txn,
                    batch
                        .ops
                        .iter()
                        .map(|op| (op.key.clone(), op.value.clone())),
                )?;
                txn.commit().map_err(redb::Error::from)?;
                Ok(freed)
            })
        };
        if !state.log.fits(payload.len()) {
            // Larger than the whole log: write it as one durable redb commit instead.
            let freed = apply(true).inspect_err(|error| self.note_failure(state, error))?;
            state.freed_since_check += freed;
            return Ok(());
        }
        let sequence = state.next_sequence;
        let logged_at = state.log.used();
        state.log.append(sequence, &payload).map_err(|error| {
            if let AppendError::Unknown(..) = error {
                let reason = format!("{error}; restart to replay the commit log");
                tracing::error!(%reason, "meta store stops taking writes");
                state.poisoned = Some(reason);
            }
            StoreError::Io {
                context: "appending to the commit log".into(),
                source: std::io::Error::other(error.to_string()),
            }
        })?;
        state.next_sequence += 1;
        let freed = match apply(false) {
            Ok(freed) => freed,
            Err(error) => {
                self.note_failure(state, &error);
                // Take the batch back out of the log, so that no restart applies it.
                if let Err(retract) = state.log.retract(logged_at) {
                    let reason = format!(
                        "redb refused a logged batch ({error}) and taking it back out of the \
                     commit log failed ({retract}); restart to replay the commit log"
                    );
                    tracing::error!(%reason, "meta store stops taking writes");
                    state.poisoned = Some(reason);
                    return Err(error);
                }
                state.next_sequence = sequence;
                return Err(error);
            }
        };
        state.freed_since_check += freed;
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
        self.with_db(|db| {
            let txn = db.begin_read().map_err(redb::Error::from)?;
            let table = txn.open_table(META).map_err(redb::Error::from)?;
            let mut out = Vec::new();
            for entry in table.range(prefix..).map_err(redb::Error::from)? {
                let (key, value) = entry.map_err(redb::Error::from)?;
                let key = key.value();
                if !key.starts_with(prefix) {
                    break;
                }
                let value = unsealed(key, value.value())
                    .ok_or_else(|| damaged_value(&self.data_dir, key))?;
                out.push((key.to_string(), value.to_vec()));
            }
            Ok(out)
        })
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(redb::Error::from)?;
            let table = txn.open_table(META).map_err(redb::Error::from)?;
            let Some(stored) = table.get(key).map_err(redb::Error::from)? else {
                return Ok(None);
            };
            let value =
                unsealed(key, stored.value()).ok_or_else(|| damaged_value(&self.data_dir, key))?;
            Ok(Some(value.to_vec()))
        })
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.poisoned {
            return Err(StoreError::Io {
                context: reason.clone(),
                source: std::io::Error::other("store poisoned"),
            });
        }
        self.reopen_locked(&mut state)?;
        self.commit_locked(&mut state, batch)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if state.poisoned.is_some() || state.failed.is_some() {
            return Ok(());
        }
        self.checkpoint_locked(&mut state)
    }

    fn health(&self) -> Result<(), String> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.poisoned {
            return Err(format!("meta store stopped taking writes: {reason}"));
        }
        self.reopen_locked(&mut state)
            .map_err(|error| error.to_string())
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
            repair: false,
            ..RedbOptions::default()
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

    #[test]
    fn a_file_mostly_free_is_compacted_when_the_store_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        {
            let store = RedbStore::open(dir.path()).expect("open");
            fill_and_delete_large_values(&store);
        }
        let grown = std::fs::metadata(&path).expect("size").len();
        assert!(
            grown > 64 << 20,
            "most of the 100 MiB written is still in the file: {grown} bytes"
        );
        let store = RedbStore::open(dir.path()).expect("reopen");
        assert_compacted(&store, grown, "the reopened file");
    }

    /// Fills `store` with 100 values of 1 MiB between small ones (so that freeing the large
    /// ones leaves holes, not a free tail redb could cut by itself), then deletes the large
    /// ones.
    fn fill_and_delete_large_values(store: &RedbStore) {
        let big = vec![7u8; 1 << 20];
        for i in 0..100 {
            store
                .commit(&batch(&[(&format!("h/{i:03}"), Some(&big))]))
                .expect("commit");
            store.checkpoint().expect("checkpoint");
            store
                .commit(&batch(&[(&format!("k/{i:03}"), Some(b"small"))]))
                .expect("commit");
            store.checkpoint().expect("checkpoint");
        }
        let mut delete = WriteBatch::default();
        for i in 0..100 {
            delete.delete(format!("h/{i:03}"));
        }
        store.commit(&delete).expect("delete");
    }

    /// The file gave the space of the deleted large values back, and kept the small ones.
    fn assert_compacted(store: &RedbStore, grown: u64, which: &str) {
        let shrunk = std::fs::metadata(store.data_dir.join(FILE_NAME))
            .expect("size")
            .len();
        assert!(
            shrunk < 16 << 20,
            "{which} gave the free space back: {grown} -> {shrunk} bytes"
        );
        assert!(store.scan_prefix("h/").expect("scan").is_empty());
        assert_eq!(store.scan_prefix("k/").expect("scan").len(), 100);
    }

    #[test]
    fn a_file_mostly_free_is_compacted_at_a_checkpoint_while_the_store_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let options = RedbOptions {
            checkpoint_interval: Duration::from_secs(3600),
            compact_check_interval: Duration::ZERO,
            ..RedbOptions::default()
        };
        let store = RedbStore::open_with(dir.path(), options.clone()).expect("open");
        fill_and_delete_large_values(&store);
        let grown = std::fs::metadata(&path).expect("size").len();
        assert!(
            grown > 64 << 20,
            "the deletion is not checkpointed yet: {grown} bytes"
        );
        store.checkpoint().expect("checkpoint");
        assert_compacted(&store, grown, "the running store");
        store
            .commit(&batch(&[("after", Some(b"compaction"))]))
            .expect("writes go on after the compaction");
        drop(store);
        let store = RedbStore::open_with(dir.path(), options).expect("reopen");
        assert_eq!(
            store.get("after").expect("get"),
            Some(b"compaction".to_vec())
        );
        assert_eq!(store.scan_prefix("k/").expect("scan").len(), 100);
    }
}
