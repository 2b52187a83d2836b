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
//! The parts, by responsibility: `writer` (the writer thread, the write path, history
//! compaction), `compaction` (the history bounds), `ddl_log` (DDL through the WAL: the log
//! interface), `sync` (the writer completing DDL the log holds), `recovery` (rebuilding the
//! table from the store), `replica` (following an elected leader's log and taking over).

mod compaction;
mod ddl_log;
mod recovery;
mod replica;
mod sync;
#[cfg(test)]
mod tests;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use crate::meta::{Ddl, MetaError, MetaResult, MetaTable, Timestamp};
use crate::store::{MetaStore, StoreError};

use compaction::RetainedLog;

pub use ddl_log::{DdlLog, DdlLogHandle, FAILPOINT_ENV};
pub use recovery::RecoveryStats;

/// Default of [`EngineConfig::history_max_entries`].
pub const DEFAULT_HISTORY_MAX_ENTRIES: usize = 10_000;

/// Default of [`EngineConfig::history_max_bytes`].
pub const DEFAULT_HISTORY_MAX_BYTES: u64 = 64 << 20;

/// The first ID handed out on a new store (database `default` is 1).
pub const FIRST_ID: i64 = 100;

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

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
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

    /// Records until when the leadership lease holds (see `Shared::lease_deadline`).
    pub fn set_lease_deadline(&self, deadline: Option<Instant>) {
        *self.shared.lease_deadline.lock() = deadline;
    }

    /// Sets the message writes are refused with while this engine is a replica (it names
    /// the leader, once known).
    pub fn set_refusal(&self, refusal: &str) {
        *self.refusal.lock() = refusal.to_string();
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

    /// Hands a DDL to the writer; the receiver gets its outcome once it is durable.
    fn submit_ddl(&self, ddl: Ddl) -> MetaResult<oneshot::Receiver<MetaResult<Timestamp>>> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Ddl {
            ddl: Box::new(ddl),
            reply,
        })?;
        Ok(answer)
    }

    /// Runs a DDL; resolves once it is durable (or refused). Returns its timestamp.
    pub async fn execute(&self, ddl: Ddl) -> MetaResult<Timestamp> {
        self.submit_ddl(ddl)?
            .await
            .map_err(|_| MetaError::not_ready("meta writer stopped"))?
    }

    /// [`Engine::execute`] for callers outside an async runtime.
    pub fn execute_blocking(&self, ddl: Ddl) -> MetaResult<Timestamp> {
        self.submit_ddl(ddl)?
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
