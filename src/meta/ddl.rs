//! DDL planning: given the meta table and a request, decide — without I/O — either the
//! error Milvus would answer or the changes to persist. Checks run in the order of the
//! Milvus proxy and RootCoord (milvus-compat.md §2.2), because the first failing check
//! decides which code a client sees.

use std::sync::Arc;

use super::change::{Change, DatabaseId};
use super::error::{MetaError, MetaResult};
use super::names::{DEFAULT_DATABASE, DEFAULT_PARTITION, validate_partition_name};
use super::schema::{pairs_as_map, same_schema};
use super::table::{LATEST, MetaTable};
use super::tso::{Timestamp, physical_ms};
use crate::proto::common::KeyValuePair;
use crate::proto::records::{
    AliasRecord, CollectionLoadRecord, CollectionRecord, DatabaseRecord, IndexRecord,
    PartitionRecord,
};
use crate::proto::schema::CollectionSchema;

/// Shards a collection gets when the request asks for 0 (as Milvus).
pub const DEFAULT_SHARDS: i32 = 1;
/// Physical WAL channels collections are spread over (`<prefix>-rootcoord-dml_<i>`).
pub const DML_CHANNELS: i64 = 16;
/// Prefix of channel names, as Milvus's default `by-dev`.
pub const CHANNEL_PREFIX: &str = "by-dev";
/// Most partitions a collection may have (`rootCoord.maxPartitionNum`).
pub const MAX_PARTITIONS: usize = 1024;
/// Most databases (`rootCoord.maxDatabaseNum`).
pub const MAX_DATABASES: usize = 64;

/// A metadata change a client asked for. Names are already validated and trimmed, the
/// database already resolved by name (it may not exist) — except partition names, which
/// planning validates after it has found the collection, as Milvus does.
#[derive(Debug, Clone)]
pub enum Ddl {
    /// CreateDatabase.
    CreateDatabase {
        name: String,
        properties: Vec<KeyValuePair>,
    },
    /// DropDatabase.
    DropDatabase { name: String },
    /// CreateCollection, with a schema already validated by [`super::schema::prepare_schema`].
    CreateCollection {
        db: String,
        schema: CollectionSchema,
        shards_num: i32,
        consistency_level: i32,
        properties: Vec<KeyValuePair>,
    },
    /// DropCollection.
    DropCollection { db: String, name: String },
    /// CreatePartition.
    CreatePartition {
        db: String,
        collection: String,
        partition: String,
    },
    /// DropPartition.
    DropPartition {
        db: String,
        collection: String,
        partition: String,
    },
    /// CreateAlias.
    CreateAlias {
        db: String,
        collection: String,
        alias: String,
    },
    /// AlterAlias.
    AlterAlias {
        db: String,
        collection: String,
        alias: String,
    },
    /// DropAlias.
    DropAlias { db: String, alias: String },
    /// CreateIndex (metadata only).
    CreateIndex {
        db: String,
        collection: String,
        field: String,
        index_name: String,
        params: Vec<KeyValuePair>,
    },
    /// DropIndex (metadata only).
    DropIndex {
        db: String,
        collection: String,
        field: String,
        index_name: String,
    },
    /// LoadCollection / ReleaseCollection (metadata only: records the load state).
    SetLoaded {
        db: String,
        collection: String,
        loaded: bool,
    },
}

impl Ddl {
    /// A short name of the operation, for the DDL log and traces.
    pub fn operation(&self) -> &'static str {
        match self {
            Ddl::CreateDatabase { .. } => "CreateDatabase",
            Ddl::DropDatabase { .. } => "DropDatabase",
            Ddl::CreateCollection { .. } => "CreateCollection",
            Ddl::DropCollection { .. } => "DropCollection",
            Ddl::CreatePartition { .. } => "CreatePartition",
            Ddl::DropPartition { .. } => "DropPartition",
            Ddl::CreateAlias { .. } => "CreateAlias",
            Ddl::AlterAlias { .. } => "AlterAlias",
            Ddl::DropAlias { .. } => "DropAlias",
            Ddl::CreateIndex { .. } => "CreateIndex",
            Ddl::DropIndex { .. } => "DropIndex",
            Ddl::SetLoaded { loaded: true, .. } => "LoadCollection",
            Ddl::SetLoaded { loaded: false, .. } => "ReleaseCollection",
        }
    }

    /// The database and object the DDL addresses, for the DDL log.
    pub fn target(&self) -> (&str, &str) {
        match self {
            Ddl::CreateDatabase { name, .. } | Ddl::DropDatabase { name } => (name, ""),
            Ddl::CreateCollection { db, schema, .. } => (db, &schema.name),
            Ddl::DropCollection { db, name } => (db, name),
            Ddl::CreatePartition { db, collection, .. }
            | Ddl::DropPartition { db, collection, .. }
            | Ddl::CreateIndex { db, collection, .. }
            | Ddl::DropIndex { db, collection, .. }
            | Ddl::SetLoaded { db, collection, .. } => (db, collection),
            Ddl::CreateAlias { db, alias, .. }
            | Ddl::AlterAlias { db, alias, .. }
            | Ddl::DropAlias { db, alias } => (db, alias),
        }
    }
}

/// What planning may take from outside: the DDL's timestamp and fresh IDs.
pub struct PlanContext<'a> {
    /// The timestamp the DDL commits at.
    pub ts: Timestamp,
    /// The next free ID; planning takes IDs from here.
    pub next_id: &'a mut i64,
}

impl PlanContext<'_> {
    fn allocate_id(&mut self) -> i64 {
        let id = *self.next_id;
        *self.next_id += 1;
        id
    }
}

fn database_id(table: &MetaTable, db: &str) -> MetaResult<DatabaseId> {
    table
        .database(db, LATEST)
        .map(|d| d.id)
        .ok_or_else(|| MetaError::database_not_found(db))
}

fn with_collection_change(
    db_id: DatabaseId,
    collection: &Arc<CollectionRecord>,
    ts: Timestamp,
    edit: impl FnOnce(&mut CollectionRecord),
) -> Change {
    let mut record = collection.as_ref().clone();
    edit(&mut record);
    record.updated_ts = ts;
    Change::Collection {
        db_id,
        id: record.id,
        record: Some(Arc::new(record)),
    }
}

impl MetaTable {
    /// Decides what a DDL changes, or why it is refused. An empty list is a successful
    /// no-op (the idempotent cases).
    pub fn plan(&self, ddl: &Ddl, ctx: &mut PlanContext<'_>) -> MetaResult<Vec<Change>> {
        match ddl {
            Ddl::CreateDatabase { name, properties } => {
                self.plan_create_database(name, properties, ctx)
            }
            Ddl::DropDatabase { name } => self.plan_drop_database(name),
            Ddl::CreateCollection {
                db,
                schema,
                shards_num,
                consistency_level,
                properties,
            } => self.plan_create_collection(
                db,
                schema,
                *shards_num,
                *consistency_level,
                properties,
                ctx,
            ),
            Ddl::DropCollection { db, name } => self.plan_drop_collection(db, name),
            Ddl::CreatePartition {
                db,
                collection,
                partition,
            } => self.plan_create_partition(db, collection, partition, ctx),
            Ddl::DropPartition {
                db,
                collection,
                partition,
            } => self.plan_drop_partition(db, collection, partition, ctx),
            Ddl::CreateAlias {
                db,
                collection,
                alias,
            } => self.plan_create_alias(db, collection, alias, ctx),
            Ddl::AlterAlias {
                db,
                collection,
                alias,
            } => self.plan_alter_alias(db, collection, alias, ctx),
            Ddl::DropAlias { db, alias } => self.plan_drop_alias(db, alias),
            Ddl::CreateIndex {
                db,
                collection,
                field,
                index_name,
                params,
            } => self.plan_create_index(db, collection, field, index_name, params, ctx),
            Ddl::DropIndex {
                db,
                collection,
                field,
                index_name,
            } => self.plan_drop_index(db, collection, field, index_name, ctx),
            Ddl::SetLoaded {
                db,
                collection,
                loaded,
            } => self.plan_set_loaded(db, collection, *loaded, ctx),
        }
    }

    fn plan_create_database(
        &self,
        name: &str,
        properties: &[KeyValuePair],
        ctx: &mut PlanContext<'_>,
    ) -> MetaResult<Vec<Change>> {
        if self.database(name, LATEST).is_some() {
            return Err(MetaError::unexpected(format!(
                "database already exist: {name}"
            )));
        }
        if self.databases(LATEST).len() >= MAX_DATABASES {
            return Err(MetaError::new(
                801,
                format!("exceeded the limit number of database[limit={MAX_DATABASES}]"),
            ));
        }
        // The default database is always ID 1, as in Milvus.
        let id = if name == DEFAULT_DATABASE {
            1
        } else {
            ctx.allocate_id()
        };
        let record = DatabaseRecord {
            id,
            name: name.to_string(),
            created_ts: ctx.ts,
            properties: properties.to_vec(),
        };
        Ok(vec![Change::Database {
            id,
            record: Some(Arc::new(record)),
        }])
    }

    fn plan_drop_database(&self, name: &str) -> MetaResult<Vec<Change>> {
        if name == DEFAULT_DATABASE {
            return Err(MetaError::unexpected("can not drop default database"));
        }
        let Some(db) = self.database(name, LATEST) else {
            return Ok(Vec::new());
        };
        if !self.collections_in(db.id, LATEST).is_empty() {
            return Err(MetaError::unexpected(format!(
                "database:{name} not empty, must drop all collections before drop database"
            )));
        }
        Ok(vec![Change::Database {
            id: db.id,
            record: None,
        }])
    }

    fn plan_create_collection(
        &self,
        db: &str,
        schema: &CollectionSchema,
        shards_num: i32,
        consistency_level: i32,
        properties: &[KeyValuePair],
        ctx: &mut PlanContext<'_>,
    ) -> MetaResult<Vec<Change>> {
        let db_id = database_id(self, db)?;
        let name = schema.name.as_str();
        if self.alias(db_id, name, LATEST).is_some() {
            return Err(MetaError::unexpected(format!(
                "collection name [{name}] conflicts with an existing alias, please choose a unique name"
            )));
        }
        let shards_num = if shards_num <= 0 {
            DEFAULT_SHARDS
        } else {
            shards_num
        };
        if let Some(existing) = self.collection_by_name(db_id, name, LATEST) {
            // Milvus compares with `model.Collection.Equal` (rootcoord
            // `createCollectionTask.Execute`): the schema, shards, consistency level,
            // properties as a map, and the partitions by name — a new collection has only
            // `_default`, so one that gained partitions is no longer "the same".
            let same = existing
                .schema
                .as_ref()
                .is_some_and(|s| same_schema(s, schema))
                && existing.shards_num == shards_num
                && existing.consistency_level == consistency_level
                && pairs_as_map(&existing.properties) == pairs_as_map(properties)
                && existing.partitions.len() == 1
                && existing.partitions[0].name == DEFAULT_PARTITION;
            return if same {
                Ok(Vec::new())
            } else {
                Err(MetaError::unexpected(format!(
                    "create duplicate collection with different parameters, collection: {name}"
                )))
            };
        }
        let id = ctx.allocate_id();
        let partition_id = ctx.allocate_id();
        let first_channel = id.rem_euclid(DML_CHANNELS);
        let physical: Vec<String> = (0..i64::from(shards_num))
            .map(|shard| {
                format!(
                    "{CHANNEL_PREFIX}-rootcoord-dml_{}",
                    (first_channel + shard) % DML_CHANNELS
                )
            })
            .collect();
        let virtual_channels = physical
            .iter()
            .enumerate()
            .map(|(shard, p)| format!("{p}_{id}v{shard}"))
            .collect();
        let mut schema = schema.clone();
        schema.db_name = db.to_string();
        let record = CollectionRecord {
            id,
            db_id,
            name: name.to_string(),
            schema: Some(schema),
            shards_num,
            consistency_level,
            properties: properties.to_vec(),
            created_ts: ctx.ts,
            updated_ts: ctx.ts,
            partitions: vec![PartitionRecord {
                id: partition_id,
                name: DEFAULT_PARTITION.into(),
                created_ts: ctx.ts,
            }],
            indexes: Vec::new(),
            loaded: false,
            virtual_channels,
            physical_channels: physical,
        };
        Ok(vec![Change::Collection {
            db_id,
            id,
            record: Some(Arc::new(record)),
        }])
    }

    fn plan_drop_collection(&self, db: &str, name: &str) -> MetaResult<Vec<Change>> {
        // A missing database is success, like a missing collection (rootcoord
        // `dropCollectionTask.Execute`, Milvus >= 2.4.18 / 2.5).
        let Some(db_id) = self.database(db, LATEST).map(|d| d.id) else {
            return Ok(Vec::new());
        };
        if self.alias(db_id, name, LATEST).is_some() {
            return Err(MetaError::unexpected(format!(
                "cannot drop the collection via alias = {name}"
            )));
        }
        let Some(collection) = self.collection_by_name(db_id, name, LATEST) else {
            return Ok(Vec::new());
        };
        let aliases = self.aliases_of(collection.id, LATEST);
        if !aliases.is_empty() {
            return Err(MetaError::unexpected(format!(
                "unable to drop the collection [{name}] because it has associated aliases [{}], please remove all aliases before dropping the collection",
                aliases.join(" ")
            )));
        }
        let mut changes = vec![Change::Collection {
            db_id,
            id: collection.id,
            record: None,
        }];
        if self.has_load_record(collection.id, LATEST) {
            // Dropping a collection releases it.
            changes.push(Change::Loaded {
                db_id,
                id: collection.id,
                record: None,
            });
        }
        Ok(changes)
    }

    /// The collection a partition or index DDL addresses (aliases resolve, as in Milvus).
    fn target_collection(
        &self,
        db: &str,
        name: &str,
    ) -> MetaResult<(DatabaseId, Arc<CollectionRecord>)> {
        let db_id = database_id(self, db)?;
        let resolved = self
            .resolve(db_id, name, LATEST)
            .ok_or_else(|| MetaError::collection_not_found_in_db(db, name))?;
        Ok((db_id, resolved.collection))
    }

    fn plan_create_partition(
        &self,
        db: &str,
        collection: &str,
        partition: &str,
        ctx: &mut PlanContext<'_>,
    ) -> MetaResult<Vec<Change>> {
        // The proxy resolves the collection (and database) before it checks the partition
        // name (`createPartitionTask.PreExecute`).
        let (db_id, record) = self.target_collection(db, collection)?;
        let partition = validate_partition_name(partition)?;
        if record.partitions.iter().any(|p| p.name == partition) {
            return Ok(Vec::new());
        }
        if record.partitions.len() >= MAX_PARTITIONS {
            return Err(MetaError::unexpected(format!(
                "partition number ({}) exceeds max configuration ({MAX_PARTITIONS}), collection: {}, id: {}",
                record.partitions.len(),
                record.name,
                record.id
            )));
        }
        let id = ctx.allocate_id();
        let ts = ctx.ts;
        Ok(vec![with_collection_change(db_id, &record, ts, |r| {
            r.partitions.push(PartitionRecord {
                id,
                name: partition.to_string(),
                created_ts: ts,
            })
        })])
    }

    fn plan_drop_partition(
        &self,
        db: &str,
        collection: &str,
        partition: &str,
        ctx: &mut PlanContext<'_>,
    ) -> MetaResult<Vec<Change>> {
        // Collection (and database) first, then the partition name, then `_default`:
        // proxy `dropPartitionTask.PreExecute`, then rootcoord `dropPartitionTask.Prepare`.
        let (db_id, record) = self.target_collection(db, collection)?;
        let partition = validate_partition_name(partition)?;
        if partition == DEFAULT_PARTITION {
            return Err(MetaError::unexpected("default partition cannot be deleted"));
        }
        if !record.partitions.iter().any(|p| p.name == partition) {
            return Ok(Vec::new());
        }
        Ok(vec![with_collection_change(db_id, &record, ctx.ts, |r| {
            r.partitions.retain(|p| p.name != partition)
        })])
    }

    fn plan_create_alias(
        &self,
        db: &str,
        collection: &str,
        alias: &str,
        ctx: &mut PlanContext<'_>,
    ) -> MetaResult<Vec<Change>> {
        let db_id = database_id(self, db)?;
        if self.collection_by_name(db_id, alias, LATEST).is_some() {
            return Err(MetaError::alias_collection_conflict(db, alias));
        }
        // Aliases are never resolved as targets: only a collection name will do.
        let target = self
            .collection_by_name(db_id, collection, LATEST)
            .ok_or_else(|| MetaError::collection_not_found_in_db(db, collection))?;
        if let Some(existing) = self.alias(db_id, alias, LATEST) {
            if existing.collection_id == target.id {
                return Ok(Vec::new());
            }
            let current = self
                .collection_by_id(existing.collection_id, LATEST)
                .map(|c| c.name.as_str())
                .unwrap_or_default();
            return Err(MetaError::alias_already_exists(db, alias, current));
        }
        let record = AliasRecord {
            collection_id: target.id,
            created_ts: ctx.ts,
        };
        Ok(vec![Change::Alias {
            db_id,
            name: alias.to_string(),
            record: Some(Arc::new(record)),
        }])
    }

    fn plan_alter_alias(
        &self,
        db: &str,
        collection: &str,
        alias: &str,
        ctx: &mut PlanContext<'_>,
    ) -> MetaResult<Vec<Change>> {
        let db_id = database_id(self, db)?;
        if self.collection_by_name(db_id, alias, LATEST).is_some() {
            return Err(MetaError::alias_collection_conflict(db, alias));
        }
        let target = self
            .collection_by_name(db_id, collection, LATEST)
            .ok_or_else(|| MetaError::collection_not_found(collection))?;
        let existing = self
            .alias(db_id, alias, LATEST)
            .ok_or_else(|| MetaError::alias_not_found(db, alias))?;
        if existing.collection_id == target.id {
            return Ok(Vec::new());
        }
        let record = AliasRecord {
            collection_id: target.id,
            created_ts: ctx.ts,
        };
        Ok(vec![Change::Alias {
            db_id,
            name: alias.to_string(),
            record: Some(Arc::new(record)),
        }])
    }

    fn plan_drop_alias(&self, db: &str, alias: &str) -> MetaResult<Vec<Change>> {
        let db_id = database_id(self, db)?;
        if self.alias(db_id, alias, LATEST).is_none() {
            return Ok(Vec::new());
        }
        Ok(vec![Change::Alias {
            db_id,
            name: alias.to_string(),
            record: None,
        }])
    }

    fn plan_create_index(
        &self,
        db: &str,
        collection: &str,
        field: &str,
        index_name: &str,
        params: &[KeyValuePair],
        ctx: &mut PlanContext<'_>,
    ) -> MetaResult<Vec<Change>> {
        let (db_id, record) = self.target_collection(db, collection)?;
        let schema_field = record
            .schema
            .as_ref()
            .and_then(|s| s.fields.iter().find(|f| f.name == field))
            .ok_or_else(|| {
                MetaError::unexpected(format!("cannot create index on non-exist field: {field}"))
            })?;
        let index_name = if index_name.is_empty() {
            field
        } else {
            index_name
        };
        if let Some(existing) = record.indexes.iter().find(|i| i.field_name == field) {
            let mut a: Vec<_> = existing
                .params
                .iter()
                .map(|kv| (&kv.key, &kv.value))
                .collect();
            let mut b: Vec<_> = params.iter().map(|kv| (&kv.key, &kv.value)).collect();
            a.sort();
            b.sort();
            return if existing.index_name == index_name && a == b {
                Ok(Vec::new())
            } else {
                Err(MetaError::unexpected(
                    "at most one distinct index is allowed per field",
                ))
            };
        }
        let id = ctx.allocate_id();
        let index = IndexRecord {
            id,
            index_name: index_name.to_string(),
            field_name: field.to_string(),
            field_id: schema_field.field_id,
            params: params.to_vec(),
            created_ts: ctx.ts,
        };
        Ok(vec![with_collection_change(db_id, &record, ctx.ts, |r| {
            r.indexes.push(index)
        })])
    }

    fn plan_drop_index(
        &self,
        db: &str,
        collection: &str,
        field: &str,
        index_name: &str,
        ctx: &mut PlanContext<'_>,
    ) -> MetaResult<Vec<Change>> {
        let (db_id, record) = self.target_collection(db, collection)?;
        let matches = |i: &IndexRecord| {
            (field.is_empty() || i.field_name == field)
                && (index_name.is_empty() || i.index_name == index_name)
        };
        if !record.indexes.iter().any(matches) {
            return Ok(Vec::new());
        }
        Ok(vec![with_collection_change(db_id, &record, ctx.ts, |r| {
            r.indexes.retain(|i| !matches(i))
        })])
    }

    fn plan_set_loaded(
        &self,
        db: &str,
        collection: &str,
        loaded: bool,
        ctx: &mut PlanContext<'_>,
    ) -> MetaResult<Vec<Change>> {
        let (db_id, record) = self.target_collection(db, collection)?;
        if self.is_loaded(&record, LATEST) == loaded {
            return Ok(Vec::new());
        }
        if loaded {
            return Ok(vec![Change::Loaded {
                db_id,
                id: record.id,
                record: Some(Arc::new(CollectionLoadRecord {
                    collection_id: record.id,
                    loaded_ts: ctx.ts,
                })),
            }]);
        }
        let mut changes = Vec::new();
        if record.loaded {
            // Written by a version that kept the flag in the record: clear it there once.
            changes.push(with_collection_change(db_id, &record, ctx.ts, |r| {
                r.loaded = false
            }));
        }
        if self.has_load_record(record.id, LATEST) {
            changes.push(Change::Loaded {
                db_id,
                id: record.id,
                record: None,
            });
        }
        Ok(changes)
    }
}

/// Unix milliseconds of a hybrid timestamp, as Milvus fills `created_utc_timestamp`.
pub fn utc_ms(ts: Timestamp) -> u64 {
    physical_ms(ts)
}
