//! The unit of persistence: one key of the meta store and its new value. A DDL is a list of
//! changes; the store writes them, with the DDL log record, in one transaction, and the
//! meta table applies them at the DDL's timestamp.
//!
//! Keys follow the layout of the Milvus RootCoord meta (shared/seeds), so that the same
//! keys serve the redb file and etcd:
//!
//! | key | value |
//! |---|---|
//! | `root-coord/database/db-info/<dbID>` | [`DatabaseRecord`] |
//! | `root-coord/database/collection-info/<dbID>/<collectionID>` | [`CollectionRecord`] |
//! | `root-coord/collection-alias/<dbID>/<alias>` | [`AliasRecord`] (the collection ID) |
//! | `querycoord-collection-loadinfo/<dbID>/<collectionID>` | [`CollectionLoadRecord`], while loaded |
//! | `root-coord/ddl-log/<ts, 20 digits>` | [`crate::proto::records::DdlRecord`] |
//! | `root-coord/timestamp` | TSO save point, Unix ms, 8 bytes big endian |
//! | `root-coord/id-allocator` | next free ID, 8 bytes big endian |

use std::sync::Arc;

use prost::Message;

use crate::proto::records::{AliasRecord, CollectionLoadRecord, CollectionRecord, DatabaseRecord};

/// A database ID.
pub type DatabaseId = i64;
/// A collection ID.
pub type CollectionId = i64;

/// Prefix of database records.
pub const DATABASE_PREFIX: &str = "root-coord/database/db-info/";
/// Prefix of collection records.
pub const COLLECTION_PREFIX: &str = "root-coord/database/collection-info/";
/// Prefix of alias records.
pub const ALIAS_PREFIX: &str = "root-coord/collection-alias/";
/// Prefix of load state records.
pub const LOAD_PREFIX: &str = "querycoord-collection-loadinfo/";
/// Prefix of the DDL log.
pub const DDL_LOG_PREFIX: &str = "root-coord/ddl-log/";
/// The persisted TSO save point.
pub const TSO_KEY: &str = "root-coord/timestamp";
/// The persisted ID allocator.
pub const ID_ALLOCATOR_KEY: &str = "root-coord/id-allocator";

/// With DDL through the WAL (`coordinator --ddl-wal`): the control-channel position of the
/// newest WAL entry applied to the meta store, written in the same commit as its changes.
pub const DDL_WAL_APPLIED_KEY: &str = "root-coord/ddl-wal-applied";
/// With DDL through the WAL: the newest timestamp applied from the control channel (big
/// endian), so that a replay skips older records also after the DDL log was compacted.
pub const DDL_WAL_APPLIED_TS_KEY: &str = "root-coord/ddl-wal-applied-ts";

/// The DDL log key of a timestamp; zero-padded so that keys sort by time.
pub fn ddl_log_key(ts: u64) -> String {
    format!("{DDL_LOG_PREFIX}{ts:020}")
}

/// A new value (or deletion, `None`) of one meta record.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A database record.
    Database {
        id: DatabaseId,
        record: Option<Arc<DatabaseRecord>>,
    },
    /// A collection record (with its partitions and index metadata).
    Collection {
        db_id: DatabaseId,
        id: CollectionId,
        record: Option<Arc<CollectionRecord>>,
    },
    /// An alias → collection binding.
    Alias {
        db_id: DatabaseId,
        name: String,
        record: Option<Arc<AliasRecord>>,
    },
    /// Whether a collection is loaded (present) or released (`None`).
    Loaded {
        db_id: DatabaseId,
        id: CollectionId,
        record: Option<Arc<CollectionLoadRecord>>,
    },
}

/// A store key or value that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The key matches no known layout.
    #[error("unrecognised meta key {0:?}")]
    Key(String),
    /// The value is not the protobuf record the key calls for.
    #[error("corrupt value under {key:?}: {source}")]
    Value {
        /// The key.
        key: String,
        /// Why protobuf refused it.
        source: prost::DecodeError,
    },
}

impl Change {
    /// The store key this change writes.
    pub fn key(&self) -> String {
        match self {
            Change::Database { id, .. } => format!("{DATABASE_PREFIX}{id}"),
            Change::Collection { db_id, id, .. } => format!("{COLLECTION_PREFIX}{db_id}/{id}"),
            Change::Alias { db_id, name, .. } => format!("{ALIAS_PREFIX}{db_id}/{name}"),
            Change::Loaded { db_id, id, .. } => format!("{LOAD_PREFIX}{db_id}/{id}"),
        }
    }

    /// The encoded new value; `None` deletes the key.
    pub fn value(&self) -> Option<Vec<u8>> {
        match self {
            Change::Database { record, .. } => record.as_ref().map(|r| r.encode_to_vec()),
            Change::Collection { record, .. } => record.as_ref().map(|r| r.encode_to_vec()),
            Change::Alias { record, .. } => record.as_ref().map(|r| r.encode_to_vec()),
            Change::Loaded { record, .. } => record.as_ref().map(|r| r.encode_to_vec()),
        }
    }

    /// Reads a store key and its value (or a deletion) back into a change.
    pub fn decode(key: &str, value: Option<&[u8]>) -> Result<Change, DecodeError> {
        let bad_key = || DecodeError::Key(key.to_string());
        let corrupt = |source| DecodeError::Value {
            key: key.to_string(),
            source,
        };
        if let Some(rest) = key.strip_prefix(DATABASE_PREFIX) {
            let id = rest.parse().map_err(|_| bad_key())?;
            let record = value
                .map(DatabaseRecord::decode)
                .transpose()
                .map_err(corrupt)?;
            return Ok(Change::Database {
                id,
                record: record.map(Arc::new),
            });
        }
        if let Some(rest) = key.strip_prefix(COLLECTION_PREFIX) {
            let (db, id) = rest.split_once('/').ok_or_else(bad_key)?;
            let db_id = db.parse().map_err(|_| bad_key())?;
            let id = id.parse().map_err(|_| bad_key())?;
            let record = value
                .map(CollectionRecord::decode)
                .transpose()
                .map_err(corrupt)?;
            return Ok(Change::Collection {
                db_id,
                id,
                record: record.map(Arc::new),
            });
        }
        if let Some(rest) = key.strip_prefix(ALIAS_PREFIX) {
            let (db, name) = rest.split_once('/').ok_or_else(bad_key)?;
            let db_id = db.parse().map_err(|_| bad_key())?;
            let record = value
                .map(AliasRecord::decode)
                .transpose()
                .map_err(corrupt)?;
            return Ok(Change::Alias {
                db_id,
                name: name.to_string(),
                record: record.map(Arc::new),
            });
        }
        if let Some(rest) = key.strip_prefix(LOAD_PREFIX) {
            let (db, id) = rest.split_once('/').ok_or_else(bad_key)?;
            let db_id = db.parse().map_err(|_| bad_key())?;
            let id = id.parse().map_err(|_| bad_key())?;
            let record = value
                .map(CollectionLoadRecord::decode)
                .transpose()
                .map_err(corrupt)?;
            return Ok(Change::Loaded {
                db_id,
                id,
                record: record.map(Arc::new),
            });
        }
        Err(bad_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_through_their_keys() {
        let changes = [
            Change::Database {
                id: 1,
                record: Some(Arc::new(DatabaseRecord {
                    id: 1,
                    name: "default".into(),
                    ..Default::default()
                })),
            },
            Change::Collection {
                db_id: 1,
                id: 7,
                record: Some(Arc::new(CollectionRecord {
                    id: 7,
                    db_id: 1,
                    name: "a".into(),
                    ..Default::default()
                })),
            },
            Change::Alias {
                db_id: 1,
                name: "z".into(),
                record: None,
            },
            Change::Loaded {
                db_id: 1,
                id: 7,
                record: Some(Arc::new(CollectionLoadRecord {
                    collection_id: 7,
                    loaded_ts: 9,
                })),
            },
        ];
        for change in changes {
            let value = change.value();
            let back = Change::decode(&change.key(), value.as_deref()).expect("decodes");
            assert_eq!(back, change);
        }
        assert!(Change::decode("root-coord/other", None).is_err());
    }

    #[test]
    fn ddl_log_keys_sort_by_time() {
        assert!(ddl_log_key(9) < ddl_log_key(10));
    }
}
