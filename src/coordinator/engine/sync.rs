//! The writer's sync with the control channel: DDL appended to it but not committed to
//! the store (a crash, a failed commit, an append whose outcome is unknown) is completed
//! before the writer takes any other job (see `ddl_log`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use prost::Message;
use tokio::sync::oneshot;

use crate::meta::change::{
    Change, DDL_WAL_APPLIED_KEY, DDL_WAL_APPLIED_TS_KEY, ID_ALLOCATOR_KEY, TSO_KEY, ddl_log_key,
};
use crate::meta::names::DEFAULT_DATABASE;
use crate::meta::tso::{self, Tso};
use crate::meta::{Ddl, Timestamp};
use crate::proto::records::DdlWalEntry;
use crate::store::WriteBatch;

use super::writer::Writer;
use super::{Job, decode_u64};

impl Writer {
    /// Applies every control-channel entry after the applied position (the re-send of
    /// the classic RootCoord), then creates `default` if it is missing (it is created at
    /// start; this covers a failed start-up commit). Marks the writer synced on success.
    pub(super) fn sync(&mut self, wait: Duration) -> Result<(), String> {
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
}
