//! Recovery: the meta table rebuilt from one consistent snapshot of the store, with the
//! history its DDL log holds.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prost::Message;

use crate::meta::MetaTable;
use crate::meta::change::{
    ALIAS_PREFIX, COLLECTION_PREFIX, Change, DATABASE_PREFIX, DDL_LOG_PREFIX, LOAD_PREFIX,
};
use crate::meta::table::Touched;
use crate::proto::records::DdlRecord;
use crate::store::MetaStore;

use super::compaction::RetainedLog;
use super::{Engine, EngineError};

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

impl Engine {
    /// Reads the meta table (one consistent snapshot) from the store and serves it from
    /// now on, replacing what was served before.
    pub(super) fn load(&self) -> Result<(RetainedLog, RecoveryStats), EngineError> {
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
