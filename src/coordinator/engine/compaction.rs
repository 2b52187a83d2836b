//! The history bounds: which DDL log records are kept, by age, count and bytes. The writer
//! compacts the store and its table by them, a replica its table.

use std::collections::VecDeque;
use std::time::Duration;

use crate::meta::Timestamp;
use crate::meta::tso;

use super::EngineConfig;

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
