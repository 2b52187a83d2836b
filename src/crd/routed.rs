//! `RoutedAlias`: one engine alias standing for a rolling series of time-partitioned
//! collections (Solr's time-routed aliases, for vector workloads re-embedded every day).
//!
//! A separate kind rather than a `routing` section of `CollectionAlias`: a plain alias is
//! a pointer the user moves by editing `spec.collection`, a routed alias is a schedule the
//! operator moves on its own. Mixing both in one spec would make `spec.collection` mean
//! "the target" in one mode and "ignored" in the other, and the CEL rules of each would
//! need to be conditional. Instead the `RoutedAlias` controller *generates* ordinary
//! resources: one owned `Collection` per interval and one owned `CollectionAlias`, so the
//! existing controllers do the engine work (one alias code path), and every generated
//! object shows in `kubectl get collections` and in GitOps diffs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference};
use kube::{CustomResource, KubeSchema, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::collection::{
    Collection, CollectionSpec, ConsistencyLevel, ENGINE_NAME_PATTERN, FieldSpec,
};
use super::common::{CollectionDeletionPolicy, CoordinatorRef, default_database};
use super::{CollectionAlias, CollectionAliasSpec, SwitchPolicy};

/// Annotation on a generated `Collection`: the start of its interval (RFC 3339, UTC).
pub const INTERVAL_START_ANNOTATION: &str = "collections.dev/interval-start";

/// Annotation on a generated `Collection`: the end of its interval (RFC 3339, UTC).
pub const INTERVAL_END_ANNOTATION: &str = "collections.dev/interval-end";

/// Label on every generated resource: the name of the `RoutedAlias` that owns it (so
/// `kubectl get collections -l collections.dev/routed-alias=news` lists a series).
pub const ROUTED_ALIAS_LABEL: &str = "collections.dev/routed-alias";

/// Longest `RoutedAlias` name: generated `Collection` names append `-YYYYMMDDtHHMMSSz`
/// (17 characters) and must stay within the 253 of a DNS subdomain. Labels hold at most
/// 63 characters, so the label above is set only on series whose name fits.
pub const MAX_NAME_LENGTH: usize = 236;

/// Longest engine alias name: `<alias>_YYYYMMDDTHHMMSSZ` must fit Milvus's 255 bytes.
pub const MAX_ALIAS_LENGTH: usize = 238;

/// The schema of every collection in the series: a `Collection` spec without the parts
/// the series decides (coordinator, database, name, deletion policy).
///
/// Unlike a `Collection`'s spec it is mutable: an edit applies to collections created
/// afterwards only (an existing collection keeps its schema; Milvus cannot change one in
/// place), which is how a routed alias rolls out a new embedding model.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionTemplate {
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
    /// Shards (Milvus default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub shards_num: Option<i32>,
    /// Consistency level (Milvus default Bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency_level: Option<ConsistencyLevel>,
    /// Collection properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, String>>,
}

/// A rolling series of collections behind one alias.
///
/// Every `interval` (calendar-aligned in `timeZone`, counted from `start`) gets its own
/// collection `<alias>_<UTC interval start as YYYYMMDDTHHMMSSZ>`, created
/// `preemptiveCreate` before the interval begins; the alias moves to it when the interval
/// begins and the collection is Ready; a collection whose whole interval ended more than
/// `autoDeleteAge` ago is retired (its `Collection` resource deleted, so `deletionPolicy`
/// decides whether the engine collection is dropped).
// Several printer columns share `type_`; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "collections.dev",
    version = "v1alpha1",
    kind = "RoutedAlias",
    namespaced,
    cel,
    status = "RoutedAliasStatus",
    shortname = "ralias",
    shortname = "ra",
    category = "collections",
    printcolumn(name = "ALIAS", type_ = "string", json_path = ".status.engineName"),
    printcolumn(name = "TARGET", type_ = "string", json_path = ".status.aliasTarget"),
    printcolumn(name = "INTERVAL", type_ = "string", json_path = ".spec.interval"),
    printcolumn(
        name = "NEXT",
        type_ = "string",
        json_path = ".status.nextAction.action"
    ),
    printcolumn(name = "AT", type_ = "string", json_path = ".status.nextAction.at"),
    printcolumn(
        name = "READY",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("size(self.metadata.name) <= 236").message("a RoutedAlias name has at most 236 characters (generated Collection names append -YYYYMMDDtHHMMSSz)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.coordinatorRef == oldSelf.coordinatorRef && self.database == oldSelf.database").message("coordinatorRef and database are immutable"))]
#[x_kube(validation = Rule::new("has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)").message("name is immutable"))]
#[x_kube(validation = Rule::new("self.start == oldSelf.start && self.interval == oldSelf.interval && self.timeZone == oldSelf.timeZone").message("start, interval and timeZone are immutable: they name the collections of the series"))]
pub struct RoutedAliasSpec {
    /// The Coordinator serving the engine.
    pub coordinator_ref: CoordinatorRef,
    /// Engine database of the alias and its collections.
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 255), pattern(ENGINE_NAME_PATTERN))]
    pub database: String,
    /// Engine alias name, also the prefix of the collection names; defaults to
    /// `metadata.name` with `-`/`.` as `_`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 238), pattern(ENGINE_NAME_PATTERN))]
    pub name: Option<String>,
    /// The schema of the collections; edits apply to collections created afterwards.
    pub template: CollectionTemplate,
    /// Where the series starts: RFC 3339 with an offset (`2026-11-22T00:00:00Z`), or a
    /// local date-time (`2026-11-22T00:00:00`) or date (`2026-11-22`) in `timeZone`.
    /// Interval boundaries are `start`, `start + interval`, … Immutable.
    #[schemars(length(min = 10, max = 64))]
    #[schemars(pattern(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:?[0-9]{2})?)?$"))]
    pub start: String,
    /// Length of each interval: a count and a unit, `s`, `m`, `h` (exact durations), `d`,
    /// `w` (calendar days and weeks in `timeZone`: a day across a DST change lasts 23 or
    /// 25 hours) or `M` (calendar months). Examples: `1h`, `1d`, `7d`, `1M`. Immutable.
    #[schemars(pattern(r"^[1-9][0-9]{0,5}[smhdwM]$"))]
    pub interval: String,
    /// IANA time zone of the calendar (`Europe/Berlin`); the tz database is built in.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// Create each collection this long before its interval begins (e.g. `1h`), so it is
    /// Ready when the alias moves. Default `0s`: at the start of its interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{1,7}[smhdw]$"))]
    pub preemptive_create: Option<String>,
    /// Retire a collection once its whole interval ended this long ago (e.g. `30d`). The
    /// current and next collections, and any the alias points to, are never retired.
    /// Default: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{1,7}[smhdw]$"))]
    pub auto_delete_age: Option<String>,
    /// Safety cap on live collections: the operator creates none beyond it and reports
    /// `Ready=False, reason=LimitReached` (a typo like `1s` for `1d` stops here).
    #[serde(default = "default_max_collections")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_collections: i32,
    /// What retiring a collection (or deleting this resource) does to the engine
    /// collection: `Retain` (the default, as for `Collection`) keeps it, `Delete` drops it.
    /// Copied into every generated `Collection`.
    #[serde(default)]
    pub deletion_policy: CollectionDeletionPolicy,
}

fn default_time_zone() -> String {
    "UTC".to_string()
}

fn default_max_collections() -> i32 {
    100
}

/// One live collection of the series, as recorded in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutedMemberStatus {
    /// The engine collection name.
    pub collection: String,
    /// The generated `Collection` resource.
    pub resource: String,
    /// Interval start (RFC 3339, UTC).
    pub start: String,
    /// Interval end (RFC 3339, UTC).
    pub end: String,
    /// Where its interval stands: `Past`, `Current`, `Next`, or `Retiring` (its
    /// `Collection` is being deleted).
    pub state: String,
    /// Its `Collection` is Ready.
    pub ready: bool,
}

/// The next thing the schedule will do by itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextActionStatus {
    /// `Create`, `SwitchAlias` or `Retire`.
    pub action: String,
    /// The engine collection it concerns.
    pub collection: String,
    /// When (RFC 3339, UTC): the controller requeues for exactly this time.
    pub at: String,
}

/// Observed state of a `RoutedAlias`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutedAliasStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (reasons `Available`, `WaitingForCollection`, `LimitReached`,
    /// `InvalidSpec`, `Conflict`, `Paused`) and `Synced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The engine database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The engine alias name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_name: Option<String>,
    /// The collection the alias points to (as its `CollectionAlias` reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_target: Option<String>,
    /// Every live collection of the series, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<RoutedMemberStatus>,
    /// What happens next, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_action: Option<NextActionStatus>,
}

impl RoutedAlias {
    /// The engine alias: `spec.name`, else the Kubernetes name with `-`/`.` as `_`.
    pub fn engine_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| {
            super::engine_name_from(self.metadata.name.as_deref().unwrap_or_default())
        })
    }

    /// The owner reference every generated resource carries (`controller: true`, so
    /// Kubernetes garbage-collects the series with its `RoutedAlias`, and
    /// `blockOwnerDeletion`, so foreground deletion waits for it).
    pub fn owner_reference(&self) -> Option<OwnerReference> {
        let mut owner = self.controller_owner_ref(&())?;
        owner.block_owner_deletion = Some(true);
        Some(owner)
    }

    fn child_meta(&self, name: String, annotations: BTreeMap<String, String>) -> ObjectMeta {
        let routed = self.metadata.name.clone().unwrap_or_default();
        let labels = (routed.len() <= 63)
            .then(|| BTreeMap::from([(ROUTED_ALIAS_LABEL.to_string(), routed)]));
        ObjectMeta {
            name: Some(name),
            namespace: self.metadata.namespace.clone(),
            labels,
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: self.owner_reference().map(|owner| vec![owner]),
            ..ObjectMeta::default()
        }
    }

    /// The generated `Collection` of one interval: `metadata.name` is this resource's name
    /// plus `-` and the lower-cased UTC start (`news-20261122t000000z`: Kubernetes names
    /// are lower case), `spec.name` the engine name `<alias>_20261122T000000Z`.
    pub fn member_collection(
        &self,
        template: &CollectionTemplate,
        engine_name: &str,
        stamp: &str,
        start: &str,
        end: &str,
    ) -> Collection {
        let routed = self.metadata.name.clone().unwrap_or_default();
        let annotations = BTreeMap::from([
            (INTERVAL_START_ANNOTATION.to_string(), start.to_string()),
            (INTERVAL_END_ANNOTATION.to_string(), end.to_string()),
        ]);
        Collection {
            metadata: self.child_meta(
                format!("{routed}-{}", stamp.to_ascii_lowercase()),
                annotations,
            ),
            spec: CollectionSpec {
                coordinator_ref: self.spec.coordinator_ref.clone(),
                database: self.spec.database.clone(),
                name: Some(engine_name.to_string()),
                description: template.description.clone(),
                fields: template.fields.clone(),
                enable_dynamic_field: template.enable_dynamic_field,
                shards_num: template.shards_num,
                consistency_level: template.consistency_level,
                properties: template.properties.clone(),
                deletion_policy: self.spec.deletion_policy,
                indexes: Vec::new(),
                load: None,
            },
            status: None,
        }
    }

    /// The generated `CollectionAlias`: same name as this resource, pointing at `target`.
    /// `WhenTargetReady`, so the alias controller double-checks the gate; `Delete`, so
    /// deleting the series drops the alias (then the collections' own policy applies).
    pub fn member_alias(&self, target: &str) -> CollectionAlias {
        CollectionAlias {
            metadata: self.child_meta(
                self.metadata.name.clone().unwrap_or_default(),
                BTreeMap::new(),
            ),
            spec: CollectionAliasSpec {
                coordinator_ref: self.spec.coordinator_ref.clone(),
                database: self.spec.database.clone(),
                name: Some(self.engine_name()),
                collection: target.to_string(),
                switch_policy: SwitchPolicy::WhenTargetReady,
                guards: None,
                deletion_policy: super::AliasDeletionPolicy::Delete,
            },
            status: None,
        }
    }
}
