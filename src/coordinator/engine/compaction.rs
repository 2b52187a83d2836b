//! History compaction: what the DDL log keeps is bounded by age, count and bytes, in the
//! store (by the writer) and in memory (on the writer and on replicas).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::meta::Timestamp;
use crate::meta::change::ddl_log_key;
use crate::meta::tso;
use crate::store::WriteBatch;

use super::EngineConfig;
use super::writer::Writer;

/// The DDL log records whose history is kept, oldest first, with their encoded sizes:
/// what compaction trims by age, count and bytes.
#[derive(Debug, Default)]
pub(super) struct RetainedLog {
    pub(super) records: VecDeque<(Timestamp, u64)>,
    pub(super) bytes: u64,
}

impl RetainedLog {
    pub(super) fn push(&mut self, ts: Timestamp, bytes: usize) {
        self.records.push_back((ts, bytes as u64));
        self.bytes += bytes as u64;
    }

    pub(super) fn newest(&self) -> Option<Timestamp> {
        self.records.back().map(|(ts, _)| *ts)
    }

    /// Whether the log is over its bounds by more than a slack (an eighth of the bound):
    /// compaction then runs without waiting for its interval, and removes enough at once
    /// that it does not run for every DDL.
    pub(super) fn over(&self, config: &EngineConfig) -> bool {
        let entries = config.history_max_entries;
        let bytes = config.history_max_bytes;
        self.records.len() > entries.saturating_add((entries / 8).max(1))
            || self.bytes > bytes.saturating_add((bytes / 8).max(1))
    }

    /// The horizon compaction moves to: at least `by_time`, and high enough that the
    /// records after it fit the count and byte bounds.
    pub(super) fn horizon(&self, by_time: Timestamp, config: &EngineConfig) -> Timestamp {
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
    pub(super) fn drop_oldest(&mut self, count: usize) {
        for (_, size) in self.records.drain(..count.min(self.records.len())) {
            self.bytes -= size;
        }
    }

    /// Forgets the records at or before `horizon`.
    pub(super) fn drop_through(&mut self, horizon: Timestamp) {
        let count = self
            .records
            .iter()
            .take_while(|(ts, _)| *ts <= horizon)
            .count();
        self.drop_oldest(count);
    }
}

/// The oldest timestamp whose history is kept: `retention` before now, never above what
/// is committed.
pub(super) fn history_horizon(retention: Duration, committed: Timestamp) -> Timestamp {
    let retention_ms = retention.as_millis() as u64;
    tso::compose(tso::now_ms().saturating_sub(retention_ms), 0).min(committed)
}

impl Writer {
    /// Compacts history every compaction interval, and as soon as the DDL log is over its
    /// count or byte bound (so that what a restart replays stays bounded however fast
    /// DDL arrives).
    pub(super) fn maybe_compact(&mut self) {
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
            // A checkpoint now, not at the next write: the deleted history's space is free
            // (and a sparse file compacted) even when no DDL follows.
            if let Err(error) = self.store.checkpoint() {
                tracing::warn!(%error, "checkpoint after compacting the DDL log failed");
            }
        }
    }
}
