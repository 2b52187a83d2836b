//! The embedded default store: one redb file, one table of string keys. Every commit is
//! `Durability::Immediate` (fsync before it returns); the coordinator's writer groups
//! concurrent DDL into one commit so that the fsync is shared.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};

use super::{MetaStore, StoreError, WriteBatch};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The file name inside the data directory.
pub const FILE_NAME: &str = "meta.redb";

/// A redb-backed [`MetaStore`].
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) `<data_dir>/meta.redb`. A file left by a crashed process is
    /// repaired by redb on open; what a commit acknowledged is there.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            context: format!("creating data directory {}", data_dir.display()),
            source,
        })?;
        let db = Database::create(data_dir.join(FILE_NAME)).map_err(redb::Error::from)?;
        // Make sure the table exists so that readers never see "table does not exist".
        let txn = db.begin_write().map_err(redb::Error::from)?;
        txn.open_table(META).map_err(redb::Error::from)?;
        txn.commit().map_err(redb::Error::from)?;
        Ok(Self { db })
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
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        {
            let mut table = txn.open_table(META).map_err(redb::Error::from)?;
            for op in &batch.ops {
                match &op.value {
                    Some(value) => {
                        table
                            .insert(op.key.as_str(), value.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    None => {
                        table.remove(op.key.as_str()).map_err(redb::Error::from)?;
                    }
                }
            }
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_applied_and_reopened() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = RedbStore::open(dir.path()).expect("open");
            let mut batch = WriteBatch::default();
            batch.put("a/1", b"one".to_vec());
            batch.put("a/2", b"two".to_vec());
            batch.put("b/1", b"other".to_vec());
            store.commit(&batch).expect("commit");
            let mut batch = WriteBatch::default();
            batch.delete("a/1");
            store.commit(&batch).expect("commit");
        }
        let store = RedbStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.scan_prefix("a/").expect("scan"),
            vec![("a/2".to_string(), b"two".to_vec())]
        );
        assert_eq!(store.get("b/1").expect("get"), Some(b"other".to_vec()));
        assert_eq!(store.get("a/1").expect("get"), None);
    }
}
