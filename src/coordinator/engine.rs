//! The meta engine: the meta table in memory, its store on disk, and the single writer that
//! connects them.
//!
//! Every DDL goes through one writer thread. The writer takes all requests that are queued,
//! gives each its own timestamp, plans it against the newest state (including the earlier
//! requests of the same batch), applies the changes to the meta table as versions *above*
//! the committed timestamp, and writes every change of the batch together with the DDL log
//! records, the TSO save point and the ID allocator in **one** store transaction (group
//! commit: one fsync for the whole batch). Only then does it raise the committed timestamp
//! and answer the callers. Readers always read as of the committed timestamp, so they never
//! see a change that is not yet durable, and a failed commit is undone by removing the
//! versions above it.
//!
//! **DDL through the WAL** (opt-in, `coordinator --ddl-wal`; always on in `up`): with a
//! [`DdlLog`] configured, the writer first appends the batch's DDL records as one
//! [`DdlWalEntry`] to the control channel and waits for its acknowledgement (fsync'd on the
//! streaming node), then commits the batch to the store together with the entry's position
//! ([`DDL_WAL_APPLIED_KEY`]), then answers. So a DDL acknowledged to a client is in the WAL
//! *and* in the store. One interrupted between append and commit (crash, failed commit, an
//! append whose outcome is unknown) is completed by the next **sync**, the re-send of the
//! classic RootCoord design: the writer reads the control channel after the applied
//! position up to its current end and applies each record that is newer than the committed
//! timestamp and the last applied one ([`DDL_WAL_APPLIED_TS_KEY`]) and whose mutations' old
//! values still match the table (so a duplicate, or a
//! record a deposed writer planned against another state, is skipped). The writer syncs
//! when it starts and after every failed append or commit, before it takes any other job;
//! while it cannot (no streaming node holds the control channel yet), jobs wait up to
//! [`EngineConfig::ddl_log_wait`] and are then refused with a retriable code 1.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prost::Message;
use tokio::sync::oneshot;

use crate::meta::change::{
    ALIAS_PREFIX, COLLECTION_PREFIX, Change, DATABASE_PREFIX, DDL_LOG_PREFIX, DDL_WAL_APPLIED_KEY,
    DDL_WAL_APPLIED_TS_KEY, ID_ALLOCATOR_KEY, LOAD_PREFIX, TSO_KEY, ddl_log_key,
};
use crate::meta::names::DEFAULT_DATABASE;
use crate::meta::table::Touched;
use crate::meta::tso::{self, Tso};
use crate::meta::{Ddl, MetaError, MetaResult, MetaTable, PlanContext, Timestamp};
use crate::proto::records::{DdlRecord, DdlWalEntry, Mutation};
use crate::store::{MetaStore, StoreError, WriteBatch};

/// How often a writer that is not synced with the control channel tries again while idle.
const SYNC_RETRY: Duration = Duration::from_millis(500);

/// An idle writer that cannot sync says so this often.
const SYNC_WARN_AFTER: Duration = Duration::from_secs(10);

/// Default of [`EngineConfig::history_max_entries`].
pub const DEFAULT_HISTORY_MAX_ENTRIES: usize = 10_000;

/// Default of [`EngineConfig::history_max_bytes`].
pub const DEFAULT_HISTORY_MAX_BYTES: u64 = 64 << 20;

/// The first ID handed out on a new store (database `default` is 1).
pub const FIRST_ID: i64 = 100;

/// The log DDL goes through before the meta store when the WAL path is on: the control
/// channel (see the module docs and `crate::coordinator::ddl_wal`). Calls block; the meta
/// writer is a plain thread.
pub trait DdlLog: Send + Sync {
    /// Appends one entry and returns its position once it is durable. An error leaves the
    /// outcome unknown: the entry may still be in the log.
    fn append(&self, entry: Vec<u8>, wait: Duration) -> Result<String, String>;
    /// Every entry after position `after` (`None`: from the log's start) up to the log's
    /// end as of this call, oldest first, with its position.
    fn read_after(
        &self,
        after: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<(String, Vec<u8>)>, String>;
}

/// A shared [`DdlLog`] inside [`EngineConfig`].
#[derive(Clone)]
pub struct DdlLogHandle(pub Arc<dyn DdlLog>);

impl std::fmt::Debug for DdlLogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DdlLog")
    }
}

/// Process-wide test failpoint (environment variable): `ddl-after-append` aborts the process
/// right after a DDL batch was appended to the control channel and before it is committed
/// to the meta store, so that tests can show the next start completes it.
pub const FAILPOINT_ENV: &str = "COLLECTION_OPERATOR_FAILPOINT";

/// How the engine keeps history and batches writes.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long reads "as of" a timestamp are answered exactly; older history is compacted.
    pub history_retention: Duration,
    /// How often compaction runs.
    pub compaction_interval: Duration,
    /// Most DDL log records kept, however recent; older history is compacted as soon as
    /// there are more. Bounds memory, the store's log and what a restart or takeover
    /// replays on a busy cluster.
    pub history_max_entries: usize,
    /// Most bytes of DDL log records kept (they carry old and new values, so large
    /// collection records weigh more); compacted like `history_max_entries`.
    pub history_max_bytes: u64,
    /// Most requests one store commit carries.
    pub max_batch: usize,
    /// DDL through the WAL: where batches are appended before the store commit; `None`:
    /// straight to the store.
    pub ddl_log: Option<DdlLogHandle>,
    /// How long a DDL waits for the control channel (a holder, an acknowledgement) before
    /// it is refused with a retriable error.
    pub ddl_log_wait: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            history_retention: Duration::from_secs(3600),
            compaction_interval: Duration::from_secs(60),
            history_max_entries: DEFAULT_HISTORY_MAX_ENTRIES,
            history_max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            max_batch: 1024,
            ddl_log: None,
            ddl_log_wait: Duration::from_secs(10),
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error("meta store: {0}")]
    Store(#[from] StoreError),
    /// A stored record could not be decoded.
    #[error("meta store holds an unreadable record: {0}")]
    Corrupt(String),
    /// The initial `default` database could not be created.
    #[error("creating the default database: {0}")]
    Bootstrap(MetaError),
}

enum Job {
    Ddl {
        ddl: Box<Ddl>,
        reply: oneshot::Sender<MetaResult<Timestamp>>,
    },
    Timestamp {
        reply: oneshot::Sender<MetaResult<Timestamp>>,
    },
}

struct Shared {
    table: RwLock<MetaTable>,
    committed: AtomicU64,
    /// History before this timestamp has been compacted away.
    horizon: AtomicU64,
    /// While an elected leader writes: until when its leadership lease is known to hold.
    /// Timestamps are handed out only before it (they need no store write inside the
    /// TSO's save window, so the store's fence cannot stop a deposed leader from handing
    /// out one below its successor's). `None`: no lease (a single coordinator).
    lease_deadline: Mutex<Option<Instant>>,
    /// Whether the writer runs and has applied every control-channel entry (always once
    /// the writer runs without a DDL log).
    synced: std::sync::atomic::AtomicBool,
}

/// Handle to the meta engine; cheap to share behind an `Arc`.
///
/// An engine either **writes** (its writer thread runs: the single coordinator, or the
/// elected leader of several) or is a **replica** (no writer: a follower of an elected
/// leader, whose meta table is fed by [`Engine::apply_replicated`]). Both serve reads the
/// same way; a replica refuses writes with a retriable error that names the leader.
pub struct Engine {
    shared: Arc<Shared>,
    /// The store the engine writes to, shared with components that keep their own keys in
    /// it (the streaming coordinator, under `streamingcoord-meta/`).
    store: Arc<dyn MetaStore>,
    config: EngineConfig,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Why writes are refused while no writer runs.
    refusal: Mutex<String>,
    /// While a replica: the DDL log records in the store as far as this replica has seen
    /// them (loaded, then followed, less those the leader deleted), oldest first with their
    /// sizes. It bounds the replica's history like the writer's, and a writer started by
    /// [`Engine::take_over`] compacts the store's log from it without reading it again.
    replica_log: Mutex<RetainedLog>,
}

/// The DDL log records whose history is kept, oldest first, with their encoded sizes:
/// what compaction trims by age, count and bytes.
#[derive(Debug, Default)]
struct RetainedLog {
    records: VecDeque<(Timestamp, u64)>,
    bytes: u64,
}

impl RetainedLog {
    fn push(&mut self, ts: Timestamp, bytes: usize) {
        self.records.push_back((ts, bytes as u64));
        self.bytes += bytes as u64;
    }

    fn newest(&self) -> Option<Timestamp> {
        self.records.back().map(|(ts, _)| *ts)
    }

    /// Whether the log is over its bounds by more than a slack (an eighth of the bound):
    /// compaction then runs without waiting for its interval, and removes enough at once
    /// that it does not run for every DDL.
    fn over(&self, config: &EngineConfig) -> bool {
        let entries = config.history_max_entries;
        let bytes = config.history_max_bytes;
        self.records.len() > entries.saturating_add((entries / 8).max(1))
            || self.bytes > bytes.saturating_add((bytes / 8).max(1))
    }

    /// The horizon compaction moves to: at least `by_time`, and high enough that the
    /// records after it fit the count and byte bounds.
    fn horizon(&self, by_time: Timestamp, config: &EngineConfig) -> Timestamp {
        let mut horizon = by_time;
        let mut entries = self.records.len();
        let mut bytes = self.bytes;
        for (ts, size) in &self.records {
            if entries <= config.history_max_entries && bytes <= config.history_max_bytes {
                break;
            }
            horizon = horizon.max(*ts);
            entries -= 1;
            bytes -= size;
        }
        horizon
    }

    /// Forgets the `count` oldest records.
    fn drop_oldest(&mut self, count: usize) {
        for (_, size) in self.records.drain(..count.min(self.records.len())) {
            self.bytes -= size;
        }
    }

    /// Forgets the records at or before `horizon`.
    fn drop_through(&mut self, horizon: Timestamp) {
        let count = self
            .records
            .iter()
            .take_while(|(ts, _)| *ts <= horizon)
            .count();
        self.drop_oldest(count);
    }
}

/// What a restart found; logged and reported by benchmarks.
#[derive(Debug, Clone, Copy)]
pub struct RecoveryStats {
    /// Databases, collections and aliases loaded.
    pub records: usize,
    /// DDL log records replayed for history.
    pub log_records: usize,
    /// Time the recovery took.
    pub elapsed: Duration,
    /// The store revision the table was read at (etcd; 0 on redb): a replica follows the
    /// DDL log from the next one.
    pub revision: i64,
}

struct Writer {
    store: Arc<dyn MetaStore>,
    shared: Arc<Shared>,
    tso: Tso,
    next_id: i64,
    /// The DDL log records in the store.
    log: RetainedLog,
    config: EngineConfig,
    last_compaction: Instant,
    /// The control channel, when DDL goes through the WAL.
    ddl_log: Option<Arc<dyn DdlLog>>,
    /// Whether every WAL entry is applied (always true without a log).
    synced: bool,
    /// Since when failed syncs are counted, or when one was last logged.
    sync_warned: Option<Instant>,
    /// The `ddl-after-append` failpoint.
    abort_after_append: bool,
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// The oldest timestamp whose history is kept: `retention` before now, never above what
/// is committed.
fn history_horizon(retention: Duration, committed: Timestamp) -> Timestamp {
    let retention_ms = retention.as_millis() as u64;
    tso::compose(tso::now_ms().saturating_sub(retention_ms), 0).min(committed)
}

impl Engine {
    /// Opens the engine on a store as its writer: recovers the meta table with its
    /// history, resumes the TSO above its save point, and creates the `default` database
    /// on a new store.
    pub fn open(
        store: Arc<dyn MetaStore>,
        config: EngineConfig,
    ) -> Result<(Self, RecoveryStats), EngineError> {
        let engine = Self::idle(store, config);
        let stats = engine.start_writer()?;
        Ok((engine, stats))
    }

    /// Opens the engine on a store as a replica: loads the meta table and refuses writes
    /// until [`Engine::start_writer`]. Keep it current with [`Engine::apply_replicated`]
    /// from `stats.revision + 1` on.
    pub fn open_replica(
        store: Arc<dyn MetaStore>,
        config: EngineConfig,
    ) -> Result<(Self, RecoveryStats), EngineError> {
        let engine = Self::idle(store, config);
        let (log, stats) = engine.load()?;
        *engine.replica_log.lock() = log;
        engine.compact_replica();
        Ok((engine, stats))
    }

    fn idle(store: Arc<dyn MetaStore>, config: EngineConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: RwLock::new(MetaTable::default()),
                committed: AtomicU64::new(0),
                horizon: AtomicU64::new(0),
                lease_deadline: Mutex::new(None),
                synced: std::sync::atomic::AtomicBool::new(false),
            }),
            store,
            config,
            jobs: Mutex::new(None),
            writer: Mutex::new(None),
            refusal: Mutex::new("this coordinator replica is not the leader".into()),
            replica_log: Mutex::new(RetainedLog::default()),
        }
    }

    /// Reads the meta table (one consistent snapshot) from the store and serves it from
    /// now on, replacing what was served before.
    fn load(&self) -> Result<(RetainedLog, RecoveryStats), EngineError> {
        let started = Instant::now();
        let (table, log, stats) = recover_table(self.store.as_ref())?;
        let committed = log.newest().unwrap_or(0);
        *self.shared.table.write() = table;
        self.shared.committed.store(committed, Ordering::Release);
        self.shared.horizon.store(0, Ordering::Release);
        Ok((
            log,
            RecoveryStats {
                elapsed: started.elapsed(),
                ..stats
            },
        ))
    }

    /// Makes this engine the writer: reloads the meta table from the store (a replica's
    /// copy may trail it), resumes the TSO above the persisted high-water mark and the ID
    /// allocator, starts the writer thread, and creates `default` on a new store. Does
    /// nothing but report when the writer already runs.
    pub fn start_writer(&self) -> Result<RecoveryStats, EngineError> {
        self.start(true)
    }

    /// Makes a replica the writer on the table it already serves: for an elected leader
    /// whose copy has applied the DDL log up to its election (nothing can be written after
    /// it but by this replica), so that taking over costs what the replica had not yet
    /// seen, not a reload of the whole table and its history. Otherwise as
    /// [`Engine::start_writer`].
    pub fn take_over(&self) -> Result<RecoveryStats, EngineError> {
        self.start(false)
    }

    fn start(&self, reload: bool) -> Result<RecoveryStats, EngineError> {
        if self.is_writer() {
            return Ok(RecoveryStats {
                records: 0,
                log_records: 0,
                elapsed: Duration::ZERO,
                revision: 0,
            });
        }
        let bound = self
            .store
            .get(TSO_KEY)?
            .as_deref()
            .and_then(decode_u64)
            .unwrap_or(0);
        let next_id = self
            .store
            .get(ID_ALLOCATOR_KEY)?
            .as_deref()
            .and_then(decode_u64)
            .map_or(FIRST_ID, |id| id as i64);
        let (log, stats) = if reload {
            *self.replica_log.lock() = RetainedLog::default();
            self.load()?
        } else {
            let started = Instant::now();
            let log = std::mem::take(&mut *self.replica_log.lock());
            let stats = RecoveryStats {
                records: 0,
                log_records: log.records.len(),
                elapsed: started.elapsed(),
                revision: 0,
            };
            (log, stats)
        };
        let (sender, receiver) = mpsc::channel();
        let ddl_log = self.config.ddl_log.as_ref().map(|handle| handle.0.clone());
        let mut writer = Writer {
            store: self.store.clone(),
            shared: self.shared.clone(),
            tso: Tso::recover(bound),
            next_id,
            log,
            config: self.config.clone(),
            last_compaction: Instant::now(),
            synced: ddl_log.is_none(),
            ddl_log,
            sync_warned: None,
            abort_after_append: std::env::var(FAILPOINT_ENV).as_deref() == Ok("ddl-after-append"),
        };
        let missing_default = || {
            self.read(0, |table, at| {
                table.database(DEFAULT_DATABASE, at).is_none()
            })
        };
        if writer.ddl_log.is_some() && missing_default() {
            // A new store gets `default` straight away, as Milvus's RootCoord creates it
            // at init, so that clients can connect before a streaming node holds the
            // control channel. Every other DDL goes through the channel.
            let ddl_log = writer.ddl_log.take();
            let (reply, mut answer) = oneshot::channel();
            writer.process(vec![Job::Ddl {
                ddl: Box::new(Ddl::CreateDatabase {
                    name: DEFAULT_DATABASE.into(),
                    properties: Vec::new(),
                }),
                reply,
            }]);
            writer.ddl_log = ddl_log;
            if let Ok(Err(error)) = answer.try_recv() {
                return Err(EngineError::Bootstrap(error));
            }
        }
        let handle = std::thread::Builder::new()
            .name("meta-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| StoreError::Io {
                context: "starting the meta writer thread".into(),
                source,
            })?;
        *self.jobs.lock() = Some(sender);
        *self.writer.lock() = Some(handle);
        if missing_default() {
            self.execute_blocking(Ddl::CreateDatabase {
                name: DEFAULT_DATABASE.into(),
                properties: Vec::new(),
            })
            .map_err(EngineError::Bootstrap)?;
        }
        Ok(stats)
    }

    /// Stops writing: refuses new DDL with `refusal`, lets the writer finish what is
    /// queued (a fenced store refuses those commits) and waits for it. Reads go on.
    pub fn stop_writer(&self, refusal: &str) {
        *self.refusal.lock() = refusal.to_string();
        self.jobs.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }

    /// Whether the writer runs and, with DDL through the WAL, has synced with the control
    /// channel (completed every interrupted DDL): DDL is answered without waiting.
    pub fn is_synced(&self) -> bool {
        self.is_writer() && self.shared.synced.load(Ordering::Acquire)
    }

    /// Whether the writer thread runs.
    pub fn is_writer(&self) -> bool {
        self.jobs.lock().is_some()
    }

    /// Records until when the leadership lease holds (see `Shared::lease_deadline`).
    pub fn set_lease_deadline(&self, deadline: Option<Instant>) {
        *self.shared.lease_deadline.lock() = deadline;
    }

    /// Sets the message writes are refused with while this engine is a replica (it names
    /// the leader, once known).
    pub fn set_refusal(&self, refusal: &str) {
        *self.refusal.lock() = refusal.to_string();
    }

    /// Reloads a replica's table from the store (after it lost track of the leader's log,
    /// e.g. a compacted watch). Returns the revision to follow from.
    pub fn reload_replica(&self) -> Result<RecoveryStats, EngineError> {
        let (log, stats) = self.load()?;
        *self.replica_log.lock() = log;
        self.compact_replica();
        Ok(stats)
    }

    /// Applies a DDL log record the leader committed (a replica follows the leader's log
    /// this way). Records at or below the committed timestamp were applied already.
    pub fn apply_replicated(&self, record: &DdlRecord) -> Result<(), EngineError> {
        if record.ts <= self.committed_ts() {
            return Ok(());
        }
        let mut changes = Vec::with_capacity(record.mutations.len());
        for mutation in &record.mutations {
            changes.push(
                Change::decode(&mutation.key, mutation.new_value.as_deref())
                    .map_err(|e| EngineError::Corrupt(e.to_string()))?,
            );
        }
        {
            let mut table = self.shared.table.write();
            let mut touched = Vec::new();
            for change in &changes {
                table.apply(change, record.ts, &mut touched);
            }
            self.shared.committed.store(record.ts, Ordering::Release);
        }
        let mut log = self.replica_log.lock();
        log.push(record.ts, record.encoded_len());
        if log.over(&self.config) {
            drop(log);
            self.compact_replica();
        }
        Ok(())
    }

    /// Notes that the leader deleted the DDL log records up to `ts` from the store (it
    /// deletes the oldest first): a replica that takes over does not delete them again.
    pub fn forget_replicated(&self, ts: Timestamp) {
        self.replica_log.lock().drop_through(ts);
    }

    /// Drops a replica's history older than the retention window or beyond the size
    /// bounds (the leader compacts the store; a replica only its memory: its log keeps
    /// every record still in the store until the leader deletes it).
    pub fn compact_replica(&self) {
        let by_time = history_horizon(self.config.history_retention, self.committed_ts());
        let horizon = self.replica_log.lock().horizon(by_time, &self.config);
        self.shared.table.write().compact(horizon);
        self.shared.horizon.fetch_max(horizon, Ordering::AcqRel);
    }

    /// The meta store, for components that persist their own keys beside the meta table.
    pub fn store(&self) -> Arc<dyn MetaStore> {
        self.store.clone()
    }

    fn submit(&self, job: Job) -> MetaResult<()> {
        let jobs = self.jobs.lock();
        let sender = jobs
            .as_ref()
            .ok_or_else(|| MetaError::not_ready(&self.refusal.lock()))?;
        sender
            .send(job)
            .map_err(|_| MetaError::not_ready("meta writer stopped"))
    }

    /// Runs a DDL; resolves once it is durable (or refused). Returns its timestamp.
    pub async fn execute(&self, ddl: Ddl) -> MetaResult<Timestamp> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Ddl {
            ddl: Box::new(ddl),
            reply,
        })?;
        answer
            .await
            .map_err(|_| MetaError::not_ready("meta writer stopped"))?
    }

    /// [`Engine::execute`] for callers outside an async runtime.
    pub fn execute_blocking(&self, ddl: Ddl) -> MetaResult<Timestamp> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Ddl {
            ddl: Box::new(ddl),
            reply,
        })?;
        answer
            .blocking_recv()
            .map_err(|_| MetaError::not_ready("meta writer stopped"))?
    }

    /// A fresh timestamp from the TSO, greater than every timestamp handed out before.
    pub async fn allocate_timestamp(&self) -> MetaResult<Timestamp> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Timestamp { reply })?;
        answer
            .await
            .map_err(|_| MetaError::not_ready("meta writer stopped"))?
    }

    /// The timestamp of the newest durable change.
    pub fn committed_ts(&self) -> Timestamp {
        self.shared.committed.load(Ordering::Acquire)
    }

    /// Reads the meta table as of `requested` (0 = now). Reads never see changes that are
    /// not yet durable: a timestamp above the committed one is lowered to it. A timestamp
    /// older than the retained history is raised to the oldest retained one.
    pub fn read<R>(
        &self,
        requested: Timestamp,
        read: impl FnOnce(&MetaTable, Timestamp) -> R,
    ) -> R {
        let table = self.shared.table.read();
        let committed = self.committed_ts();
        let horizon = self.shared.horizon.load(Ordering::Acquire).min(committed);
        let at = if requested == 0 {
            committed
        } else {
            requested.clamp(horizon, committed)
        };
        read(&table, at)
    }

    /// Stops accepting DDL, lets the writer finish what is queued, and waits for it.
    pub fn shutdown(&self) {
        self.stop_writer("coordinator is stopping");
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Rebuilds the meta table from the store: the current records, plus the versions the DDL
/// log holds for the retention window, so that reads as of a timestamp survive restarts.
fn recover_table(
    store: &dyn MetaStore,
) -> Result<(MetaTable, RetainedLog, RecoveryStats), EngineError> {
    let corrupt = |e: crate::meta::change::DecodeError| EngineError::Corrupt(e.to_string());
    let record_prefixes = [
        DATABASE_PREFIX,
        COLLECTION_PREFIX,
        ALIAS_PREFIX,
        LOAD_PREFIX,
    ];
    let mut prefixes = record_prefixes.to_vec();
    prefixes.push(DDL_LOG_PREFIX);
    let snapshot = store.snapshot(&prefixes)?;
    let revision = snapshot.revision;
    let mut entries = snapshot.entries.into_iter();
    let mut current: Vec<(String, Vec<u8>)> = Vec::new();
    for _ in record_prefixes {
        current.extend(entries.next().unwrap_or_default());
    }
    let logged = entries.next().unwrap_or_default();
    let mut records = Vec::new();
    let mut sizes = Vec::with_capacity(logged.len());
    for (key, value) in logged {
        let record = DdlRecord::decode(value.as_slice())
            .map_err(|e| EngineError::Corrupt(format!("DDL log record {key}: {e}")))?;
        records.push(record);
        sizes.push(value.len());
    }
    // The value each logged key had before the first logged change to it.
    let mut before_log: HashMap<&str, Option<&[u8]>> = HashMap::new();
    for record in &records {
        for mutation in &record.mutations {
            before_log
                .entry(mutation.key.as_str())
                .or_insert(mutation.old_value.as_deref());
        }
    }
    let mut table = MetaTable::default();
    let mut scratch: Vec<Touched> = Vec::new();
    for (key, value) in &current {
        if !before_log.contains_key(key.as_str()) {
            table.apply(
                &Change::decode(key, Some(value)).map_err(corrupt)?,
                0,
                &mut scratch,
            );
            scratch.clear();
        }
    }
    for (key, old) in &before_log {
        if let Some(old) = old {
            table.apply(
                &Change::decode(key, Some(old)).map_err(corrupt)?,
                0,
                &mut scratch,
            );
            scratch.clear();
        }
    }
    let mut log = RetainedLog::default();
    for (record, size) in records.iter().zip(sizes) {
        for mutation in &record.mutations {
            let change =
                Change::decode(&mutation.key, mutation.new_value.as_deref()).map_err(corrupt)?;
            table.apply(&change, record.ts, &mut scratch);
            scratch.clear();
        }
        log.push(record.ts, size);
    }
    let stats = RecoveryStats {
        records: current.len(),
        log_records: records.len(),
        elapsed: Duration::ZERO,
        revision,
    };
    Ok((table, log, stats))
}

impl Writer {
    fn run(&mut self, receiver: mpsc::Receiver<Job>) {
        let synced = self.synced;
        self.set_synced(synced);
        loop {
            let idle_wait = if self.synced {
                self.config.compaction_interval
            } else {
                SYNC_RETRY
            };
            let first = match receiver.recv_timeout(idle_wait) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if !self.synced {
                // Waiting jobs may wait the whole bound; otherwise try briefly and again
                // soon (and notice a stop in time).
                let wait = if first.is_some() {
                    self.config.ddl_log_wait
                } else {
                    SYNC_RETRY
                };
                if let Err(error) = self.sync(wait) {
                    // A start or a failover takes a moment (a node's lease must lapse):
                    // say so when a DDL is refused, or every 10 s of waiting.
                    let since = *self.sync_warned.get_or_insert_with(Instant::now);
                    if first.is_some() || since.elapsed() >= SYNC_WARN_AFTER {
                        self.sync_warned = Some(Instant::now());
                        tracing::warn!(%error, "DDL cannot sync with the control channel yet; DDL waits");
                    } else {
                        tracing::debug!(%error, "DDL waits for the control channel");
                    }
                    if let Some(first) = first {
                        let refusal = MetaError::not_ready(&format!(
                            "DDL goes through the WAL and the control channel is not reachable: {error}"
                        ));
                        for job in self.batch(first, &receiver) {
                            let _ = match job {
                                Job::Ddl { reply, .. } | Job::Timestamp { reply } => {
                                    reply.send(Err(refusal.clone()))
                                }
                            };
                        }
                    }
                    continue;
                }
            }
            let Some(first) = first else {
                self.maybe_compact();
                continue;
            };
            let jobs = self.batch(first, &receiver);
            self.process(jobs);
            self.maybe_compact();
        }
        self.shared.synced.store(false, Ordering::Release);
        if let Err(error) = self.store.checkpoint() {
            tracing::warn!(%error, "final checkpoint failed; the next start replays the commit log");
        }
        tracing::debug!("meta writer stopped");
    }

    fn set_synced(&mut self, synced: bool) {
        if synced {
            self.sync_warned = None;
        }
        self.synced = synced;
        self.shared.synced.store(synced, Ordering::Release);
    }

    /// `first` and what else is queued, up to a batch.
    fn batch(&self, first: Job, receiver: &mpsc::Receiver<Job>) -> Vec<Job> {
        let mut jobs = vec![first];
        while jobs.len() < self.config.max_batch {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        jobs
    }

    /// Applies every control-channel entry after the applied position (the re-send of
    /// the classic RootCoord), then creates `default` if it is missing (it is created at
    /// start; this covers a failed start-up commit). Marks the writer synced on success.
    fn sync(&mut self, wait: Duration) -> Result<(), String> {
        let Some(ddl_log) = self.ddl_log.clone() else {
            self.set_synced(true);
            return Ok(());
        };
        let applied = self
            .store
            .get(DDL_WAL_APPLIED_KEY)
            .map_err(|e| e.to_string())?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        let floor = self
            .store
            .get(DDL_WAL_APPLIED_TS_KEY)
            .map_err(|e| e.to_string())?
            .as_deref()
            .and_then(decode_u64)
            .unwrap_or(0);
        let entries = ddl_log.read_after(applied.as_deref(), wait)?;
        let (count, mut completed) = (entries.len(), 0);
        for (position, payload) in entries {
            completed += self.replay(&position, &payload, floor)?;
        }
        self.set_synced(true);
        if completed > 0 || count > 0 {
            tracing::info!(
                entries = count,
                completed,
                "synced the meta table with the control channel"
            );
        }
        let missing = self
            .shared
            .table
            .read()
            .database(DEFAULT_DATABASE, u64::MAX)
            .is_none();
        if missing {
            let (reply, mut answer) = oneshot::channel();
            self.process(vec![Job::Ddl {
                ddl: Box::new(Ddl::CreateDatabase {
                    name: DEFAULT_DATABASE.into(),
                    properties: Vec::new(),
                }),
                reply,
            }]);
            if let Ok(Err(error)) = answer.try_recv() {
                return Err(format!("creating the default database: {error}"));
            }
        }
        Ok(())
    }

    /// Applies one control-channel entry: each record newer than the committed timestamp
    /// and than `floor` (the newest applied from the channel) whose old values match the
    /// table (others were applied already, or were planned by a deposed writer against
    /// another state), in one store commit that also moves the applied position, the TSO
    /// bound and the ID allocator past the entry. Returns how many records it applied.
    /// Records that cannot be decoded are skipped: none of them was acknowledged (a DDL
    /// is acknowledged only after its store commit).
    fn replay(
        &mut self,
        position: &str,
        payload: &[u8],
        floor: Timestamp,
    ) -> Result<usize, String> {
        let entry = match DdlWalEntry::decode(payload) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(position, %error, "skipping an unreadable control-channel entry");
                DdlWalEntry::default()
            }
        };
        let committed = self.shared.committed.load(Ordering::Acquire);
        let mut newest = committed.max(floor);
        let mut batch = WriteBatch::default();
        let mut touched = Vec::new();
        let mut applied = Vec::new();
        {
            let mut table = self.shared.table.write();
            for record in &entry.records {
                if record.ts <= newest {
                    continue;
                }
                let changes: Result<Vec<Change>, _> = record
                    .mutations
                    .iter()
                    .map(|m| Change::decode(&m.key, m.new_value.as_deref()))
                    .collect();
                let changes = match changes {
                    Ok(changes) => changes,
                    Err(error) => {
                        tracing::warn!(position, ts = record.ts, %error, "skipping an unreadable control-channel DDL");
                        continue;
                    }
                };
                let matches = changes
                    .iter()
                    .zip(&record.mutations)
                    .all(|(change, mutation)| table.current_value(change) == mutation.old_value);
                if !matches {
                    tracing::warn!(
                        position,
                        ts = record.ts,
                        operation = record.operation,
                        target = record.target,
                        "skipping a control-channel DDL planned against another state"
                    );
                    continue;
                }
                for (change, mutation) in changes.iter().zip(&record.mutations) {
                    match &mutation.new_value {
                        Some(value) => batch.put(mutation.key.clone(), value.clone()),
                        None => batch.delete(mutation.key.clone()),
                    }
                    table.apply(change, record.ts, &mut touched);
                }
                let encoded = record.encode_to_vec();
                applied.push((record.ts, encoded.len()));
                batch.put(ddl_log_key(record.ts), encoded);
                newest = record.ts;
                tracing::info!(
                    position,
                    ts = record.ts,
                    operation = record.operation,
                    db = record.db_name,
                    target = record.target,
                    "completed a DDL from the control channel"
                );
            }
        }
        let bound = entry
            .tso_bound_ms
            .max(tso::physical_ms(newest) + 1)
            .max(self.tso.persisted_bound_ms());
        let raise_bound = bound > self.tso.persisted_bound_ms();
        if raise_bound {
            batch.put(TSO_KEY, bound.to_be_bytes().to_vec());
        }
        let next_id = self.next_id.max(entry.next_id);
        if next_id != self.next_id {
            batch.put(ID_ALLOCATOR_KEY, (next_id as u64).to_be_bytes().to_vec());
        }
        batch.put(DDL_WAL_APPLIED_KEY, position.as_bytes().to_vec());
        if !applied.is_empty() {
            batch.put(DDL_WAL_APPLIED_TS_KEY, newest.to_be_bytes().to_vec());
        }
        if let Err(error) = self.store.commit(&batch) {
            self.shared.table.write().rollback(&touched, committed);
            return Err(format!("meta store: {error}"));
        }
        if raise_bound {
            self.tso = Tso::recover(bound);
        }
        self.next_id = next_id;
        let count = applied.len();
        if count > 0 {
            for (ts, size) in applied {
                self.log.push(ts, size);
            }
            self.shared.committed.store(newest, Ordering::Release);
        }
        Ok(count)
    }

    fn process(&mut self, jobs: Vec<Job>) {
        let committed = self.shared.committed.load(Ordering::Acquire);
        let previous_bound = self.tso.persisted_bound_ms();
        let first_id = self.next_id;
        let allocation = self.tso.allocate(tso::now_ms(), jobs.len() as u32);
        let mut batch = WriteBatch::default();
        if let Some(bound) = allocation.persist_bound_ms {
            batch.put(TSO_KEY, bound.to_be_bytes().to_vec());
        }
        let mut touched = Vec::new();
        let mut logged = Vec::new();
        let mut records = Vec::new();
        let mut outcomes: Vec<(
            oneshot::Sender<MetaResult<Timestamp>>,
            MetaResult<Timestamp>,
        )> = Vec::with_capacity(jobs.len());
        {
            let mut table = self.shared.table.write();
            for (offset, job) in jobs.into_iter().enumerate() {
                let ts = allocation.first + offset as u64;
                match job {
                    Job::Timestamp { reply } => {
                        let lease_ended = self
                            .shared
                            .lease_deadline
                            .lock()
                            .is_some_and(|deadline| Instant::now() >= deadline);
                        let outcome = if lease_ended {
                            Err(MetaError::not_ready(
                                "the leadership lease could not be renewed in time",
                            ))
                        } else {
                            Ok(ts)
                        };
                        outcomes.push((reply, outcome));
                    }
                    Job::Ddl { ddl, reply } => {
                        let mut ctx = PlanContext {
                            ts,
                            next_id: &mut self.next_id,
                        };
                        let outcome = table.plan(&ddl, &mut ctx).map(|changes| {
                            if !changes.is_empty() {
                                let (db, target) = ddl.target();
                                let mut record = DdlRecord {
                                    ts,
                                    operation: ddl.operation().into(),
                                    db_name: db.into(),
                                    target: target.into(),
                                    mutations: Vec::with_capacity(changes.len()),
                                };
                                for change in &changes {
                                    let key = change.key();
                                    let new_value = change.value();
                                    let old_value = table.current_value(change);
                                    match &new_value {
                                        Some(value) => batch.put(key.clone(), value.clone()),
                                        None => batch.delete(key.clone()),
                                    }
                                    record.mutations.push(Mutation {
                                        key,
                                        old_value,
                                        new_value,
                                    });
                                    table.apply(change, ts, &mut touched);
                                }
                                let encoded = record.encode_to_vec();
                                logged.push((ts, encoded.len()));
                                batch.put(ddl_log_key(ts), encoded);
                                if self.ddl_log.is_some() {
                                    records.push(record);
                                }
                            }
                            ts
                        });
                        outcomes.push((reply, outcome));
                    }
                }
            }
        }
        if self.next_id != first_id {
            batch.put(
                ID_ALLOCATOR_KEY,
                (self.next_id as u64).to_be_bytes().to_vec(),
            );
        }
        if let Some(ddl_log) = self.ddl_log.clone()
            && !records.is_empty()
        {
            let entry = DdlWalEntry {
                records,
                next_id: self.next_id,
                tso_bound_ms: self.tso.persisted_bound_ms(),
            };
            match ddl_log.append(entry.encode_to_vec(), self.config.ddl_log_wait) {
                Ok(position) => {
                    if self.abort_after_append {
                        tracing::error!(position, "failpoint ddl-after-append: aborting");
                        std::process::abort();
                    }
                    batch.put(DDL_WAL_APPLIED_KEY, position.into_bytes());
                    batch.put(
                        DDL_WAL_APPLIED_TS_KEY,
                        allocation.last.to_be_bytes().to_vec(),
                    );
                }
                Err(error) => {
                    // The entry may be in the log all the same: sync before anything else.
                    tracing::warn!(%error, "appending DDL to the control channel failed; the batch is undone");
                    self.set_synced(false);
                    self.shared.table.write().rollback(&touched, committed);
                    self.tso.persist_failed(previous_bound);
                    self.next_id = first_id;
                    let failure = MetaError::not_ready(&format!(
                        "DDL could not be appended to the control channel (it may still \
                         take effect): {error}"
                    ));
                    for (reply, outcome) in outcomes {
                        let _ = reply.send(outcome.and(Err(failure.clone())));
                    }
                    return;
                }
            }
        }
        if !batch.is_empty()
            && let Err(error) = self.store.commit(&batch)
        {
            tracing::error!(%error, "meta store commit failed; the batch is undone");
            // Through the WAL the batch is logged already: the next sync completes it.
            let synced = self.ddl_log.is_none();
            self.set_synced(synced);
            self.shared.table.write().rollback(&touched, committed);
            self.tso.persist_failed(previous_bound);
            self.next_id = first_id;
            let failure = match &error {
                // Nothing was applied, and another replica leads: retriable, naming it.
                StoreError::Fenced(why) => MetaError::not_ready(&format!(
                    "this coordinator replica is not the leader: {why}"
                )),
                _ => MetaError::store_failure(&error),
            };
            for (reply, outcome) in outcomes {
                let _ = reply.send(outcome.and(Err(failure.clone())));
            }
            return;
        }
        for (ts, size) in logged {
            self.log.push(ts, size);
        }
        self.shared
            .committed
            .store(allocation.last, Ordering::Release);
        for (reply, outcome) in outcomes {
            let _ = reply.send(outcome);
        }
    }

    /// Compacts history every compaction interval, and as soon as the DDL log is over its
    /// count or byte bound (so that what a restart replays stays bounded however fast
    /// DDL arrives).
    fn maybe_compact(&mut self) {
        if self.last_compaction.elapsed() < self.config.compaction_interval
            && !self.log.over(&self.config)
        {
            return;
        }
        self.last_compaction = Instant::now();
        let committed = self.shared.committed.load(Ordering::Acquire);
        let by_time = history_horizon(self.config.history_retention, committed);
        let horizon = self.log.horizon(by_time, &self.config);
        self.shared.table.write().compact(horizon);
        self.shared.horizon.fetch_max(horizon, Ordering::AcqRel);
        // Old history need not go atomically: delete it in commits the store accepts
        // (etcd caps the operations of one transaction), oldest first, forgetting each
        // record only once its deletion is durable.
        let chunk = self.store.max_ops_per_commit().unwrap_or(usize::MAX).max(1);
        let mut removed = 0;
        loop {
            let expired: Vec<Timestamp> = self
                .log
                .records
                .iter()
                .map(|(ts, _)| *ts)
                .take_while(|ts| *ts <= horizon)
                .take(chunk)
                .collect();
            if expired.is_empty() {
                break;
            }
            let mut batch = WriteBatch::default();
            for ts in &expired {
                batch.delete(ddl_log_key(*ts));
            }
            if let Err(error) = self.store.commit(&batch) {
                tracing::warn!(%error, "compacting the DDL log failed; will retry");
                break;
            }
            self.log.drop_oldest(expired.len());
            removed += expired.len();
        }
        if removed > 0 {
            tracing::debug!(removed, "compacted the DDL log");
        }
    }
}

#[cfg(test)]
mod tests {
    //! DDL through a [`DdlLog`]: an in-memory log and a store whose next commit can be made
    //! to fail stand in for the control channel and a failing disk.

    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::store::RedbStore;

    /// An in-memory log: positions are indexes.
    #[derive(Default)]
    struct MemLog {
        entries: Mutex<Vec<Vec<u8>>>,
        /// Appends the next entry but reports a failure (an unknown outcome).
        lose_next_ack: AtomicBool,
        /// No holder: every call fails.
        unavailable: AtomicBool,
    }

    impl DdlLog for MemLog {
        fn append(&self, entry: Vec<u8>, _wait: Duration) -> Result<String, String> {
            if self.unavailable.load(Ordering::Acquire) {
                return Err("no holder".into());
            }
            let mut entries = self.entries.lock();
            entries.push(entry);
            if self.lose_next_ack.swap(false, Ordering::AcqRel) {
                return Err("acknowledgement lost".into());
            }
            Ok(format!("{:08}", entries.len() - 1))
        }

        fn read_after(
            &self,
            after: Option<&str>,
            _wait: Duration,
        ) -> Result<Vec<(String, Vec<u8>)>, String> {
            if self.unavailable.load(Ordering::Acquire) {
                return Err("no holder".into());
            }
            let from = after.map_or(0, |p| p.parse::<usize>().expect("position") + 1);
            let entries = self.entries.lock();
            Ok(entries
                .iter()
                .enumerate()
                .skip(from)
                .map(|(i, e)| (format!("{i:08}"), e.clone()))
                .collect())
        }
    }

    /// A redb store whose next commit can be made to fail.
    struct FlakyStore {
        inner: RedbStore,
        fail_next_commit: AtomicBool,
        /// Refuses the next commit as a fenced etcd transaction would.
        fence_next_commit: AtomicBool,
    }

    impl MetaStore for FlakyStore {
        fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.inner.scan_prefix(prefix)
        }
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key)
        }
        fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError> {
            if self.fence_next_commit.swap(false, Ordering::AcqRel) {
                return Err(StoreError::Fenced(
                    "nothing applied; the leader is 10.0.0.7:19530 (id b)".into(),
                ));
            }
            if self.fail_next_commit.swap(false, Ordering::AcqRel) {
                return Err(StoreError::Io {
                    context: "test".into(),
                    source: std::io::Error::other("injected"),
                });
            }
            self.inner.commit(batch)
        }
    }

    fn open(store: &Arc<FlakyStore>, log: &Arc<MemLog>) -> Engine {
        let config = EngineConfig {
            ddl_log: Some(DdlLogHandle(log.clone())),
            ddl_log_wait: Duration::from_millis(100),
            ..EngineConfig::default()
        };
        let (engine, _) = Engine::open(store.clone(), config).expect("open");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !engine.is_synced() || !has(&engine, DEFAULT_DATABASE) {
            assert!(Instant::now() < deadline, "the writer did not sync");
            std::thread::sleep(Duration::from_millis(5));
        }
        engine
    }

    fn has(engine: &Engine, database: &str) -> bool {
        engine.read(0, |table, at| table.database(database, at).is_some())
    }

    fn create(engine: &Engine, name: &str) -> MetaResult<Timestamp> {
        engine.execute_blocking(Ddl::CreateDatabase {
            name: name.into(),
            properties: Vec::new(),
        })
    }

    fn setup() -> (tempfile::TempDir, Arc<FlakyStore>, Arc<MemLog>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(FlakyStore {
            inner: RedbStore::open(dir.path()).expect("redb"),
            fail_next_commit: AtomicBool::new(false),
            fence_next_commit: AtomicBool::new(false),
        });
        (dir, store, Arc::new(MemLog::default()))
    }

    fn applied(store: &FlakyStore) -> String {
        String::from_utf8(store.get(DDL_WAL_APPLIED_KEY).expect("get").expect("set")).expect("utf8")
    }

    #[test]
    fn ddl_is_logged_before_the_store_and_the_position_is_committed_with_it() {
        let (_dir, store, log) = setup();
        let engine = open(&store, &log);
        create(&engine, "d1").expect("create");
        let entries = log.entries.lock().clone();
        assert_eq!(
            entries.len(),
            1,
            "d1 (default is created at start, as Milvus does)"
        );
        let entry = DdlWalEntry::decode(entries[0].as_slice()).expect("entry");
        assert_eq!(entry.records.len(), 1);
        assert_eq!(entry.records[0].db_name, "d1");
        assert_eq!(applied(&store), "00000000");
    }

    #[test]
    fn an_append_with_an_unknown_outcome_is_completed_before_the_next_ddl() {
        let (_dir, store, log) = setup();
        let engine = open(&store, &log);
        log.lose_next_ack.store(true, Ordering::Release);
        let error = create(&engine, "maybe").expect_err("the ack was lost");
        assert_eq!(error.code, crate::meta::error::code::SERVICE_NOT_READY);
        assert!(!has(&engine, "maybe"), "undone until the sync");
        let next = create(&engine, "next").expect("next");
        assert!(has(&engine, "maybe"), "completed by the sync");
        let maybe_ts = engine.read(0, |t, at| t.database("maybe", at).map(|d| d.created_ts));
        assert!(maybe_ts.expect("maybe") < next, "in log order");
    }

    #[test]
    fn a_failed_store_commit_after_the_append_is_completed_on_restart() {
        let (_dir, store, log) = setup();
        let engine = open(&store, &log);
        let before = create(&engine, "first").expect("first");
        store.fail_next_commit.store(true, Ordering::Release);
        create(&engine, "logged").expect_err("the commit failed");
        engine.shutdown();
        drop(engine);
        let engine = open(&store, &log);
        assert!(has(&engine, "logged"), "completed from the log on restart");
        let after = create(&engine, "after").expect("after");
        assert!(after > before);
        // A duplicate of an applied entry and a record planned against another state are
        // skipped; the log's end is applied.
        let copy = log.entries.lock()[1].clone();
        assert_eq!(
            DdlWalEntry::decode(copy.as_slice()).expect("entry").records[0].db_name,
            "logged"
        );
        let mut stale = DdlWalEntry::decode(copy.as_slice()).expect("entry");
        let stale_ts = tso::compose(tso::now_ms() + 60_000, 0);
        stale.records[0].ts = stale_ts;
        log.entries.lock().push(copy);
        log.entries.lock().push(stale.encode_to_vec());
        engine.shutdown();
        drop(engine);
        let engine = open(&store, &log);
        assert_eq!(engine.read(0, |t, at| t.counts(at)).0, 4);
        assert!(
            engine.committed_ts() < stale_ts,
            "the stale record was skipped"
        );
        assert_eq!(
            applied(&store),
            format!("{:08}", log.entries.lock().len() - 1)
        );
    }

    #[test]
    fn a_late_duplicate_is_skipped_also_after_the_ddl_log_was_compacted() {
        let (_dir, store, log) = setup();
        let engine = open(&store, &log);
        create(&engine, "gone").expect("create");
        let created = log.entries.lock().last().cloned().expect("entry");
        engine
            .execute_blocking(Ddl::DropDatabase {
                name: "gone".into(),
            })
            .expect("drop");
        engine.shutdown();
        drop(engine);
        // A copy of the CreateDatabase lands after the drop (a retried append), and the
        // DDL log is compacted away, so the restart's committed timestamp is 0: the
        // persisted applied timestamp still tells the copy is old.
        log.entries.lock().push(created);
        let mut batch = WriteBatch::default();
        for (key, _) in store.scan_prefix(DDL_LOG_PREFIX).expect("scan") {
            batch.delete(key);
        }
        store.commit(&batch).expect("compact");
        let engine = open(&store, &log);
        assert!(!has(&engine, "gone"), "the dropped database came back");
    }

    #[test]
    fn without_a_holder_ddl_is_refused_with_a_retriable_code_and_works_again_after() {
        let (_dir, store, log) = setup();
        let engine = open(&store, &log);
        log.unavailable.store(true, Ordering::Release);
        let error = create(&engine, "later").expect_err("no holder");
        assert_eq!(error.code, crate::meta::error::code::SERVICE_NOT_READY);
        log.unavailable.store(false, Ordering::Release);
        create(&engine, "later").expect("works again");
        assert!(has(&engine, "later"));
    }

    /// The DDL log records in the store newer than `after`, oldest first.
    fn records_after(store: &FlakyStore, after: Timestamp) -> Vec<DdlRecord> {
        store
            .scan_prefix(DDL_LOG_PREFIX)
            .expect("scan")
            .into_iter()
            .map(|(_, value)| DdlRecord::decode(value.as_slice()).expect("record"))
            .filter(|record| record.ts > after)
            .collect()
    }

    #[test]
    fn a_replica_takes_over_on_the_copy_it_followed_without_reloading() {
        let (_dir, store, _) = setup();
        let (leader, _) = Engine::open(store.clone(), EngineConfig::default()).expect("open");
        create(&leader, "d1").expect("d1");
        let (replica, _) =
            Engine::open_replica(store.clone(), EngineConfig::default()).expect("replica");
        assert_eq!(
            replica.replica_log.lock().records.len(),
            2,
            "default and d1 loaded"
        );
        create(&leader, "d2").expect("d2");
        let last = create(&leader, "d3").expect("d3");
        for record in records_after(&store, replica.committed_ts()) {
            replica.apply_replicated(&record).expect("apply");
        }
        assert_eq!(replica.committed_ts(), last);
        // The leader compacted the oldest record away.
        let oldest = replica.replica_log.lock().records.front().expect("logged").0;
        replica.forget_replicated(oldest);
        leader.shutdown();
        drop(leader);

        // A marker in the store that a reload would bring back, and the copy does not
        // have: taking over must not read the table again.
        let mut batch = WriteBatch::default();
        batch.put(ddl_log_key(last + 1), b"not a record".to_vec());
        store.commit(&batch).expect("commit");
        let stats = replica.take_over().expect("take over");
        assert_eq!(stats.log_records, 3, "d1, d2, d3 remain to compact later");
        assert!(has(&replica, "d3"));
        let next = create(&replica, "d4").expect("the new leader writes");
        assert!(
            next > last,
            "timestamps go on increasing: {next} after {last}"
        );
        // A full reload would have failed on the marker.
        replica.shutdown();
        assert!(matches!(
            replica.start_writer(),
            Err(EngineError::Corrupt(_))
        ));
    }

    #[test]
    fn a_fenced_commit_is_refused_as_retriable_naming_the_leader() {
        let (_dir, store, _) = setup();
        let (engine, _) = Engine::open(store.clone(), EngineConfig::default()).expect("open");
        store.fence_next_commit.store(true, Ordering::Release);
        let refused = create(&engine, "d1").expect_err("fenced");
        assert_eq!(refused.code, crate::meta::error::code::SERVICE_NOT_READY);
        assert_eq!(
            refused.message,
            "service not ready[this coordinator replica is not the leader: nothing applied; \
             the leader is 10.0.0.7:19530 (id b)]"
        );
        assert!(
            !has(&engine, "d1"),
            "nothing of the refused batch is served"
        );
        create(&engine, "d1").expect("the next commit goes through");
    }

    #[test]
    fn history_is_bounded_by_count_on_the_writer_and_on_a_replica() {
        use crate::proto::records::DatabaseRecord;
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn MetaStore> = Arc::new(RedbStore::open(dir.path()).expect("redb"));
        let config = EngineConfig {
            history_max_entries: 10,
            ..EngineConfig::default()
        };
        let (writer, _) = Engine::open(store.clone(), config.clone()).expect("open");
        for _ in 0..50 {
            create(&writer, "w").expect("create");
            writer
                .execute_blocking(Ddl::DropDatabase { name: "w".into() })
                .expect("drop");
        }
        let logged = store.scan_prefix(DDL_LOG_PREFIX).expect("scan").len();
        assert!(
            (10..=11).contains(&logged),
            "{logged} DDL log records kept with a bound of 10"
        );
        writer.shutdown();
        drop(writer);

        let (replica, stats) = Engine::open_replica(store.clone(), config).expect("replica");
        assert_eq!(stats.log_records, logged);
        let base = replica.read(0, |t, at| t.counts(at)).0;
        let first_ts = replica.committed_ts() + 1;
        for i in 0..100u64 {
            let id = 10_000 + i as i64;
            let change = Change::Database {
                id,
                record: Some(Arc::new(DatabaseRecord {
                    id,
                    name: format!("r{i}"),
                    created_ts: first_ts + i,
                    properties: Vec::new(),
                })),
            };
            let record = DdlRecord {
                ts: first_ts + i,
                operation: "CreateDatabase".into(),
                db_name: format!("r{i}"),
                target: String::new(),
                mutations: vec![Mutation {
                    key: change.key(),
                    old_value: None,
                    new_value: change.value(),
                }],
            };
            replica.apply_replicated(&record).expect("apply");
        }
        let count_at = |ts| replica.read(ts, |t, at| t.counts(at)).0;
        assert_eq!(
            count_at(first_ts + 95),
            base + 96,
            "inside the bound: exact"
        );
        let oldest = count_at(first_ts);
        assert!(
            oldest >= base + 100 - 12,
            "a read older than the kept history answers as of the oldest kept state: {oldest}"
        );
        assert_eq!(count_at(1), oldest);
    }
}
