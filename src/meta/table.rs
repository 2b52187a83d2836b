//! The meta table: per-database name → ID, alias → ID and ID → meta maps (the RootCoord
//! design in shared/seeds), each versioned by timestamp so that reads can be answered as of
//! a timestamp. Name resolution is one hash lookup.
//!
//! Only [`MetaTable::apply`] changes it; the derived indexes (names, aliases per
//! collection) are kept in step there, so every read is a lookup.

use std::sync::Arc;

use super::change::{Change, CollectionId, DatabaseId};
use super::mvcc::{MvccMap, MvccSet};
use super::tso::Timestamp;
use crate::proto::records::{AliasRecord, CollectionLoadRecord, CollectionRecord, DatabaseRecord};

/// Read the newest state, including versions not yet committed (the writer's view).
pub const LATEST: Timestamp = Timestamp::MAX;

/// A key of the table that received a version; used to undo a failed commit.
#[derive(Debug, Clone)]
pub enum Touched {
    /// `databases`
    Database(DatabaseId),
    /// `database_names`
    DatabaseName(String),
    /// `collections`
    Collection(CollectionId),
    /// `collection_names`
    CollectionName(DatabaseId, String),
    /// `aliases`
    Alias(DatabaseId, String),
    /// `aliases_by_collection`: one alias of one collection
    AliasOf(CollectionId, String),
    /// `loaded`
    Loaded(CollectionId),
}

/// How a name given by a client resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The collection.
    pub collection: Arc<CollectionRecord>,
    /// The name was an alias of it.
    pub via_alias: bool,
    /// A client asked to load it.
    pub loaded: bool,
}

/// The in-memory meta table.
#[derive(Debug, Default)]
pub struct MetaTable {
    databases: MvccMap<DatabaseId, Arc<DatabaseRecord>>,
    database_names: MvccMap<String, DatabaseId>,
    collections: MvccMap<CollectionId, Arc<CollectionRecord>>,
    collection_names: MvccMap<(DatabaseId, String), CollectionId>,
    aliases: MvccMap<(DatabaseId, String), Arc<AliasRecord>>,
    /// Versioned per alias, so that history grows by one entry per alias change however
    /// many aliases a collection has.
    aliases_by_collection: MvccSet<CollectionId, String>,
    /// Load state apart from the collection record: a load or release versions a few
    /// bytes, not the whole (possibly large) record.
    loaded: MvccMap<CollectionId, Arc<CollectionLoadRecord>>,
}

impl MetaTable {
    /// The database named `name`, as of `at`.
    pub fn database(&self, name: &str, at: Timestamp) -> Option<&Arc<DatabaseRecord>> {
        let id = self.database_names.get(name, at)?;
        self.databases.get(id, at)
    }

    /// Every database as of `at`, in ID order.
    pub fn databases(&self, at: Timestamp) -> Vec<Arc<DatabaseRecord>> {
        let mut all: Vec<_> = self
            .databases
            .iter_at(at)
            .map(|(_, db)| db.clone())
            .collect();
        all.sort_by_key(|db| db.id);
        all
    }

    /// The collection called `name` (not an alias) in a database.
    pub fn collection_by_name(
        &self,
        db: DatabaseId,
        name: &str,
        at: Timestamp,
    ) -> Option<&Arc<CollectionRecord>> {
        let id = self.collection_names.get(&(db, name.to_string()), at)?;
        self.collections.get(id, at)
    }

    /// The collection with this ID.
    pub fn collection_by_id(
        &self,
        id: CollectionId,
        at: Timestamp,
    ) -> Option<&Arc<CollectionRecord>> {
        self.collections.get(&id, at)
    }

    /// The alias record called `name` in a database.
    pub fn alias(&self, db: DatabaseId, name: &str, at: Timestamp) -> Option<&Arc<AliasRecord>> {
        self.aliases.get(&(db, name.to_string()), at)
    }

    /// A collection name or an alias, resolved to the collection (the RootCoord
    /// `GetCollectionByName`, which accepts both).
    pub fn resolve(&self, db: DatabaseId, name: &str, at: Timestamp) -> Option<Resolved> {
        if let Some(collection) = self.collection_by_name(db, name, at) {
            return Some(Resolved {
                collection: collection.clone(),
                via_alias: false,
                loaded: self.is_loaded(collection, at),
            });
        }
        let alias = self.alias(db, name, at)?;
        let collection = self.collections.get(&alias.collection_id, at)?;
        Some(Resolved {
            collection: collection.clone(),
            via_alias: true,
            loaded: self.is_loaded(collection, at),
        })
    }

    /// Whether a client asked to load the collection, as of `at` (the flag in the record
    /// is what earlier versions wrote).
    pub fn is_loaded(&self, collection: &CollectionRecord, at: Timestamp) -> bool {
        collection.loaded || self.loaded.get(&collection.id, at).is_some()
    }

    /// Whether the collection has a load record as of `at`.
    pub fn has_load_record(&self, collection: CollectionId, at: Timestamp) -> bool {
        self.loaded.get(&collection, at).is_some()
    }

    /// The aliases of a collection, sorted.
    pub fn aliases_of(&self, collection: CollectionId, at: Timestamp) -> Vec<String> {
        self.aliases_by_collection
            .members(&collection, at)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Every collection of a database as of `at`, in ID (creation) order.
    pub fn collections_in(&self, db: DatabaseId, at: Timestamp) -> Vec<Arc<CollectionRecord>> {
        let mut all: Vec<_> = self
            .collections
            .iter_at(at)
            .filter(|(_, c)| c.db_id == db)
            .map(|(_, c)| c.clone())
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Every alias of a database with its collection ID, sorted by alias.
    pub fn aliases_in(&self, db: DatabaseId, at: Timestamp) -> Vec<(String, CollectionId)> {
        let mut all: Vec<_> = self
            .aliases
            .iter_at(at)
            .filter(|((alias_db, _), _)| *alias_db == db)
            .map(|((_, name), record)| (name.clone(), record.collection_id))
            .collect();
        all.sort();
        all
    }

    /// Number of (database, collection, alias) records as of `at`; for status and tests.
    pub fn counts(&self, at: Timestamp) -> (usize, usize, usize) {
        (
            self.databases.iter_at(at).count(),
            self.collections.iter_at(at).count(),
            self.aliases.iter_at(at).count(),
        )
    }

    /// The current encoded value of the record a change writes (for the DDL log).
    pub fn current_value(&self, change: &Change) -> Option<Vec<u8>> {
        use prost::Message;
        match change {
            Change::Database { id, .. } => {
                self.databases.get(id, LATEST).map(|r| r.encode_to_vec())
            }
            Change::Collection { id, .. } => {
                self.collections.get(id, LATEST).map(|r| r.encode_to_vec())
            }
            Change::Alias { db_id, name, .. } => {
                self.alias(*db_id, name, LATEST).map(|r| r.encode_to_vec())
            }
            Change::Loaded { id, .. } => self.loaded.get(id, LATEST).map(|r| r.encode_to_vec()),
        }
    }

    /// Applies a change at `ts`, keeping the derived indexes in step; reports every key
    /// that received a version.
    pub fn apply(&mut self, change: &Change, ts: Timestamp, touched: &mut Vec<Touched>) {
        match change {
            Change::Database { id, record } => {
                if let Some(old) = self.databases.get(id, LATEST)
                    && record.as_ref().is_none_or(|new| new.name != old.name)
                {
                    let old_name = old.name.clone();
                    self.database_names.put(old_name.clone(), ts, None);
                    touched.push(Touched::DatabaseName(old_name));
                }
                if let Some(new) = record {
                    self.database_names.put(new.name.clone(), ts, Some(*id));
                    touched.push(Touched::DatabaseName(new.name.clone()));
                }
                self.databases.put(*id, ts, record.clone());
                touched.push(Touched::Database(*id));
            }
            Change::Collection { db_id, id, record } => {
                if let Some(old) = self.collections.get(id, LATEST)
                    && record.as_ref().is_none_or(|new| new.name != old.name)
                {
                    let key = (old.db_id, old.name.clone());
                    self.collection_names.put(key.clone(), ts, None);
                    touched.push(Touched::CollectionName(key.0, key.1));
                }
                if let Some(new) = record {
                    let key = (*db_id, new.name.clone());
                    if self.collection_names.get(&key, LATEST) != Some(id) {
                        self.collection_names.put(key.clone(), ts, Some(*id));
                        touched.push(Touched::CollectionName(key.0, key.1));
                    }
                }
                self.collections.put(*id, ts, record.clone());
                touched.push(Touched::Collection(*id));
            }
            Change::Alias {
                db_id,
                name,
                record,
            } => {
                let key = (*db_id, name.clone());
                let old_target = self.aliases.get(&key, LATEST).map(|r| r.collection_id);
                let new_target = record.as_ref().map(|r| r.collection_id);
                if old_target != new_target {
                    if let Some(old) = old_target {
                        self.aliases_by_collection.put(old, name.clone(), ts, false);
                        touched.push(Touched::AliasOf(old, name.clone()));
                    }
                    if let Some(new) = new_target {
                        self.aliases_by_collection.put(new, name.clone(), ts, true);
                        touched.push(Touched::AliasOf(new, name.clone()));
                    }
                }
                self.aliases.put(key, ts, record.clone());
                touched.push(Touched::Alias(*db_id, name.clone()));
            }
            Change::Loaded { id, record, .. } => {
                self.loaded.put(*id, ts, record.clone());
                touched.push(Touched::Loaded(*id));
            }
        }
    }

    /// Removes every version newer than `committed` of the touched keys.
    pub fn rollback(&mut self, touched: &[Touched], committed: Timestamp) {
        for key in touched {
            match key {
                Touched::Database(id) => self.databases.rollback_after(id, committed),
                Touched::DatabaseName(name) => self.database_names.rollback_after(name, committed),
                Touched::Collection(id) => self.collections.rollback_after(id, committed),
                Touched::CollectionName(db, name) => self
                    .collection_names
                    .rollback_after(&(*db, name.clone()), committed),
                Touched::Alias(db, name) => {
                    self.aliases.rollback_after(&(*db, name.clone()), committed)
                }
                Touched::AliasOf(id, name) => self
                    .aliases_by_collection
                    .rollback_after(id, name, committed),
                Touched::Loaded(id) => self.loaded.rollback_after(id, committed),
            }
        }
    }

    /// Forgets history older than `horizon`.
    pub fn compact(&mut self, horizon: Timestamp) {
        self.databases.compact(horizon);
        self.database_names.compact(horizon);
        self.collections.compact(horizon);
        self.collection_names.compact(horizon);
        self.aliases.compact(horizon);
        self.aliases_by_collection.compact(horizon);
        self.loaded.compact(horizon);
    }

    /// Versions kept of alias memberships; for memory checks in tests.
    pub fn alias_membership_versions(&self) -> usize {
        self.aliases_by_collection.version_count()
    }
}
