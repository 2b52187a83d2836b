//! Replicas: an engine without a writer that follows an elected leader's DDL log, and
//! takes over as the writer on the table it already serves.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prost::Message;

use crate::meta::Timestamp;
use crate::meta::change::Change;
use crate::proto::records::DdlRecord;
use crate::store::MetaStore;

use super::compaction::history_horizon;
use super::recovery::RecoveryStats;
use super::{Engine, EngineConfig, EngineError};

impl Engine {
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

    /// Makes a replica the writer on the table it already serves: for an elected leader
    /// whose copy has applied the DDL log up to its election (nothing can be written after
    /// it but by this replica), so that taking over costs what the replica had not yet
    /// seen, not a reload of the whole table and its history. Otherwise as
    /// [`Engine::start_writer`].
    pub fn take_over(&self) -> Result<RecoveryStats, EngineError> {
        self.start(false)
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
}
