//! `Collection`: an engine collection with its schema.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CollectionDeletionPolicy, CoordinatorRef, default_database};

/// Milvus's name rule (`validateCollectionNameOrAlias`), for the OpenAPI pattern.
pub const ENGINE_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// Field data types a `Collection` can declare (Milvus `schema.DataType` names).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DataType {
    /// Boolean.
    Bool,
    /// 8-bit integer.
    Int8,
    /// 16-bit integer.
    Int16,
    /// 32-bit integer.
    Int32,
    /// 64-bit integer (primary key capable).
    Int64,
    /// 32-bit float.
    Float,
    /// 64-bit float.
    Double,
    /// Bounded string (needs `maxLength`; primary key capable).
    VarChar,
    /// JSON document.
    #[serde(rename = "JSON")]
    Json,
    /// Array of `elementType` (needs `maxCapacity`).
    Array,
    /// Dense float vector (needs `dim`).
    FloatVector,
    /// Binary vector (needs `dim`, a multiple of 8).
    BinaryVector,
    /// Half-precision vector (needs `dim`).
    Float16Vector,
    /// bfloat16 vector (needs `dim`).
    BFloat16Vector,
    /// Int8 vector (needs `dim`).
    Int8Vector,
    /// Sparse float vector (no `dim`).
    SparseFloatVector,
}

impl DataType {
    /// The Milvus `schema.DataType` value.
    pub fn to_proto(self) -> crate::proto::schema::DataType {
        use crate::proto::schema::DataType as P;
        match self {
            DataType::Bool => P::Bool,
            DataType::Int8 => P::Int8,
            DataType::Int16 => P::Int16,
            DataType::Int32 => P::Int32,
            DataType::Int64 => P::Int64,
            DataType::Float => P::Float,
            DataType::Double => P::Double,
            DataType::VarChar => P::VarChar,
            DataType::Json => P::Json,
            DataType::Array => P::Array,
            DataType::FloatVector => P::FloatVector,
            DataType::BinaryVector => P::BinaryVector,
            DataType::Float16Vector => P::Float16Vector,
            DataType::BFloat16Vector => P::BFloat16Vector,
            DataType::Int8Vector => P::Int8Vector,
            DataType::SparseFloatVector => P::SparseFloatVector,
        }
    }

    /// Whether this is a dense vector type, which needs `dim`.
    pub fn needs_dim(self) -> bool {
        matches!(
            self,
            DataType::FloatVector
                | DataType::BinaryVector
                | DataType::Float16Vector
                | DataType::BFloat16Vector
                | DataType::Int8Vector
        )
    }
}

/// Read consistency (Milvus `common.ConsistencyLevel`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConsistencyLevel {
    /// Strong.
    Strong,
    /// Session.
    Session,
    /// Bounded staleness (Milvus's default).
    #[default]
    Bounded,
    /// Eventually.
    Eventually,
}

impl ConsistencyLevel {
    /// The Milvus enum value.
    pub fn to_proto(self) -> crate::proto::common::ConsistencyLevel {
        use crate::proto::common::ConsistencyLevel as P;
        match self {
            ConsistencyLevel::Strong => P::Strong,
            ConsistencyLevel::Session => P::Session,
            ConsistencyLevel::Bounded => P::Bounded,
            ConsistencyLevel::Eventually => P::Eventually,
        }
    }
}

/// One field of the collection schema.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.dataType in ['FloatVector', 'BinaryVector', 'Float16Vector', 'BFloat16Vector', 'Int8Vector']) || has(self.dim)").message("vector fields need dim"))]
#[x_kube(validation = Rule::new("self.dataType != 'VarChar' || has(self.maxLength)").message("VarChar fields need maxLength"))]
#[x_kube(validation = Rule::new("self.dataType != 'Array' || (has(self.elementType) && has(self.maxCapacity))").message("Array fields need elementType and maxCapacity"))]
#[x_kube(validation = Rule::new("!has(self.isPrimaryKey) || !self.isPrimaryKey || self.dataType in ['Int64', 'VarChar']").message("the primary key must be Int64 or VarChar"))]
#[x_kube(validation = Rule::new("!has(self.autoID) || !self.autoID || (has(self.isPrimaryKey) && self.isPrimaryKey)").message("only the primary key can use autoID"))]
pub struct FieldSpec {
    /// Field name (Milvus rule).
    #[schemars(length(min = 1, max = 255), pattern(ENGINE_NAME_PATTERN))]
    pub name: String,
    /// Data type.
    pub data_type: DataType,
    /// This field is the primary key (exactly one field is).
    #[serde(default)]
    pub is_primary_key: bool,
    /// The engine assigns primary keys.
    #[serde(default, rename = "autoID")]
    pub auto_id: bool,
    /// Vector dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 32768))]
    pub dim: Option<i64>,
    /// Maximum VarChar length in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_length: Option<i64>,
    /// Element type of an Array field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element_type: Option<DataType>,
    /// Maximum elements of an Array field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_capacity: Option<i64>,
    /// The field may be null.
    #[serde(default)]
    pub nullable: bool,
    /// The field is the partition key.
    #[serde(default)]
    pub is_partition_key: bool,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Desired state of an engine collection. Everything but `deletionPolicy` and `load` is
/// immutable: Milvus cannot change a schema or an index in place; build a new collection
/// and move the alias.
///
/// Conditions: `Ready` means the engine object matches this spec (it exists with this
/// schema); it says nothing about data. `Indexed` (when `indexes` are declared) and `Loaded`
/// (when `load.policy` is not `Never`) report the engine's progress, and `Serving` is True
/// only when the collection exists, matches, every declared index is built for all rows and
/// the engine reports it loaded: what a search through an alias needs.
// Several printer columns share `type_`; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "collections.dev",
    version = "v1alpha1",
    kind = "Collection",
    namespaced,
    cel,
    status = "CollectionStatus",
    shortname = "coll",
    category = "collections",
    printcolumn(
        name = "ENGINE NAME",
        type_ = "string",
        json_path = ".status.engineName"
    ),
    printcolumn(name = "ID", type_ = "string", json_path = ".status.collectionID"),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.coordinatorRef == oldSelf.coordinatorRef && self.database == oldSelf.database").message("coordinatorRef and database are immutable"))]
#[x_kube(validation = Rule::new("has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)").message("name is immutable"))]
#[x_kube(validation = Rule::new("self.fields == oldSelf.fields && self.enableDynamicField == oldSelf.enableDynamicField").message("the schema is immutable: create a new Collection and move the alias"))]
#[x_kube(validation = Rule::new("has(self.shardsNum) == has(oldSelf.shardsNum) && (!has(self.shardsNum) || self.shardsNum == oldSelf.shardsNum) && has(self.consistencyLevel) == has(oldSelf.consistencyLevel) && (!has(self.consistencyLevel) || self.consistencyLevel == oldSelf.consistencyLevel)").message("shardsNum and consistencyLevel are immutable"))]
#[x_kube(validation = Rule::new("has(self.indexes) == has(oldSelf.indexes) && (!has(self.indexes) || self.indexes == oldSelf.indexes)").message("indexes are immutable: create a new Collection and move the alias"))]
#[x_kube(validation = Rule::new("!has(self.indexes) || self.indexes.all(i, self.fields.exists(f, f.name == i.fieldName))").message("every index must name a field of the schema"))]
#[x_kube(validation = Rule::new("has(self.description) == has(oldSelf.description) && (!has(self.description) || self.description == oldSelf.description) && has(self.properties) == has(oldSelf.properties) && (!has(self.properties) || self.properties == oldSelf.properties)").message("description and properties are immutable"))]
pub struct CollectionSpec {
    /// The Coordinator serving the engine.
    pub coordinator_ref: CoordinatorRef,
    /// Engine database; created if missing (never dropped by the operator).
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 255), pattern(ENGINE_NAME_PATTERN))]
    pub database: String,
    /// Engine collection name; defaults to `metadata.name` with `-`/`.` as `_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), pattern(ENGINE_NAME_PATTERN))]
    pub name: Option<String>,
    /// Collection description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Schema fields: exactly one primary key.
    #[x_kube(validation = Rule::new("self.filter(f, has(f.isPrimaryKey) && f.isPrimaryKey).size() == 1").message("exactly one field must be the primary key"))]
    #[x_kube(validation = Rule::new("self.all(f, self.exists_one(g, g.name == f.name))").message("field names must be unique"))]
    #[schemars(length(min = 1, max = 64))]
    pub fields: Vec<FieldSpec>,
    /// Allow fields that the schema does not declare.
    #[serde(default)]
    pub enable_dynamic_field: bool,
    /// Shards (Milvus default 1, at most 16: Milvus's `proxy.maxShardNum`, which the
    /// coordinator enforces too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16))]
    pub shards_num: Option<i32>,
    /// Consistency level (Milvus default Bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_level: Option<ConsistencyLevel>,
    /// Collection properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
    /// `Retain` (default) keeps the engine collection when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: CollectionDeletionPolicy,
    /// Indexes the operator creates (CreateIndex) once the collection exists; at most one
    /// per field, as Milvus allows. Immutable, like the schema.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(i, self.exists_one(j, j.fieldName == i.fieldName))").message("at most one index per field"))]
    #[x_kube(validation = Rule::new("self.all(i, !has(i.indexName) || self.exists_one(j, has(j.indexName) && j.indexName == i.indexName))").message("index names must be unique"))]
    #[schemars(length(max = 64))]
    pub indexes: Vec<IndexSpec>,
    /// When the engine keeps the collection loaded (searchable). Mutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSpec>,
}

/// One index of a `Collection` (Milvus CreateIndex: `index_type`, `metric_type` and the
/// build parameters travel as `extra_params`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexSpec {
    /// The indexed field.
    #[schemars(length(min = 1, max = 255), pattern(ENGINE_NAME_PATTERN))]
    pub field_name: String,
    /// Index name; the field name when absent (the operator always sends one: Milvus
    /// would otherwise name it `_default_idx_<fieldID>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), pattern(ENGINE_NAME_PATTERN))]
    pub index_name: Option<String>,
    /// Index type as the engine names it: `HNSW`, `IVF_FLAT`, `AUTOINDEX`, `INVERTED`, ...
    #[schemars(length(min = 1, max = 64))]
    pub index_type: String,
    /// Metric of a vector index: `L2`, `IP`, `COSINE`, `HAMMING`, `JACCARD`, `BM25`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub metric_type: Option<String>,
    /// Build parameters (`M`, `efConstruction`, `nlist`, ...), passed as strings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl IndexSpec {
    /// The index name sent to CreateIndex: `indexName`, else the field name. Never empty,
    /// because Milvus names an unnamed index `_default_idx_<fieldID>`
    /// (`internal/proxy/task_index.go`, `createIndexTask.Execute`), which the spec cannot
    /// predict.
    pub fn engine_name(&self) -> &str {
        self.index_name.as_deref().unwrap_or(&self.field_name)
    }
}

/// When the operator loads the collection into the engine's query nodes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LoadPolicy {
    /// Load, and load again whenever the engine reports it released.
    Always,
    /// Load while an alias points to it or waits to point to it; release `releaseDelay`
    /// after the last alias left, so a rollback inside that window is instant.
    WhileAliased,
    /// The operator neither loads nor releases it.
    #[default]
    Never,
}

/// `spec.load`: the load policy and what LoadCollection is called with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadSpec {
    /// When to load.
    #[serde(default)]
    pub policy: LoadPolicy,
    /// With `WhileAliased`: how long after the last alias left the collection is released
    /// (`30s`, `10m`, `1h30m`; default `10m`).
    #[serde(default = "default_release_delay")]
    #[schemars(pattern(RELEASE_DELAY_PATTERN))]
    pub release_delay: String,
    /// In-memory replicas (LoadCollection `replica_number`; engine default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub replicas: Option<i32>,
    /// Resource groups for the replicas (LoadCollection `resource_groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_groups: Vec<String>,
}

impl LoadSpec {
    /// `releaseDelay` as a duration; a value outside the CRD's pattern counts as the
    /// default 10 minutes, never as "release at once".
    pub fn release_delay_duration(&self) -> std::time::Duration {
        self.release_delay
            .parse::<jiff::SignedDuration>()
            .ok()
            .and_then(|delay| std::time::Duration::try_from(delay).ok())
            .unwrap_or(std::time::Duration::from_secs(600))
    }
}

/// Durations in `ms`, `s`, `m` and `h` units, as Go's `time.ParseDuration` writes them.
pub const RELEASE_DELAY_PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";

fn default_release_delay() -> String {
    "10m".to_string()
}

/// Observed state of a `Collection`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the engine object matches the spec), `Synced`, `Indexed` and `Loaded` (each
    /// only when declared) and `Serving` (exists, matches, indexed for all rows, loaded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The engine database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The engine collection name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_name: Option<String>,
    /// The engine collection ID this resource created or adopted (a string: it is an
    /// int64, beyond JSON's exact integers).
    #[serde(
        default,
        rename = "collectionID",
        skip_serializing_if = "Option::is_none"
    )]
    pub collection_id: Option<String>,
    /// Aliases pointing at the collection, as last observed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Last `collections.dev/reconcile-requested-at` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The declared indexes as the engine describes them (DescribeIndex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexStatus>,
    /// The engine's load state (GetLoadState, GetLoadingProgress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadStatus>,
    /// Rows the engine counts (GetCollectionStatistics `row_count`), refreshed each pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<i64>,
}

/// One index as the engine describes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IndexStatus {
    /// Index name.
    pub name: String,
    /// Indexed field.
    pub field: String,
    /// Engine state: `Missing` (not created yet), `Unissued`, `InProgress`, `Finished`,
    /// `Failed`, `Retry`.
    pub state: String,
    /// Rows covered by the index.
    #[serde(default)]
    pub indexed_rows: i64,
    /// Rows in the collection's sealed segments.
    #[serde(default)]
    pub total_rows: i64,
    /// Rows still waiting for the index.
    #[serde(default)]
    pub pending_rows: i64,
    /// Why the build failed (engine text), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
}

/// Engine load states (Milvus `common.LoadState` without `NotExist`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LoadStateName {
    /// Not loaded.
    #[default]
    NotLoad,
    /// Loading.
    Loading,
    /// Loaded: searchable.
    Loaded,
}

/// `status.load`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadStatus {
    /// The engine's load state.
    pub state: LoadStateName,
    /// Loading progress in percent (GetLoadingProgress).
    #[serde(default)]
    pub progress: i64,
    /// With `WhileAliased`: when the release is due (RFC 3339), while one is scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_at: Option<String>,
}

impl CollectionSpec {
    /// Whether it asks the operator for anything about serving: indexes to create, or a
    /// load policy other than `Never`.
    pub fn declares_serving(&self) -> bool {
        !self.indexes.is_empty()
            || self
                .load
                .as_ref()
                .is_some_and(|load| load.policy != LoadPolicy::Never)
    }
}

impl Collection {
    /// The engine name: `spec.name`, else the Kubernetes name with `-`/`.` as `_`.
    pub fn engine_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| {
            super::engine_name_from(self.metadata.name.as_deref().unwrap_or_default())
        })
    }
}
