//! `CollectionAlias`: an engine alias; changing `spec.collection` is the atomic swap.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::collection::ENGINE_NAME_PATTERN;
use super::common::{AliasDeletionPolicy, CoordinatorRef, default_database};

/// Entries kept in `status.history`.
pub const HISTORY_LIMIT: usize = 10;

/// When the alias may move to a new target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SwitchPolicy {
    /// Only when the target serves: the `Collection` resource managing it is `Serving`
    /// (exists, matches its spec, every declared index built for all rows, loaded), or,
    /// for a target no resource manages, the engine reports its indexes finished for all
    /// rows and the collection loaded; and `guards` hold. A target that is not loaded is
    /// accepted only while the collection the alias serves now is not loaded either (the
    /// swap then serves no less than before). Meanwhile the alias keeps its old target and
    /// reports `Ready=False` with `WaitingForTarget` or, for a guard, `SwapBlocked`.
    #[default]
    WhenTargetServing,
    /// Only when the target is ready: the `Collection` resource managing it is `Ready`, or,
    /// for a target no resource manages, it exists in the engine. Meanwhile the alias keeps
    /// its old target and reports `Ready=False, reason=WaitingForTarget`.
    WhenTargetReady,
    /// As soon as the target exists in the engine.
    Immediate,
}

/// Desired state of an engine alias.
// Several printer columns share `type_`; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "collections.dev",
    version = "v1alpha1",
    kind = "CollectionAlias",
    namespaced,
    cel,
    status = "CollectionAliasStatus",
    shortname = "calias",
    shortname = "ca",
    category = "collections",
    printcolumn(name = "ALIAS", type_ = "string", json_path = ".status.engineName"),
    printcolumn(name = "TARGET", type_ = "string", json_path = ".status.collection"),
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
#[x_kube(validation = Rule::new("!has(self.name) || self.name != self.collection").message("an alias cannot have the name of its target collection"))]
pub struct CollectionAliasSpec {
    /// The Coordinator serving the engine.
    pub coordinator_ref: CoordinatorRef,
    /// Engine database of the alias and its target.
    #[serde(default = "default_database")]
    #[schemars(length(min = 1, max = 255), pattern(ENGINE_NAME_PATTERN))]
    pub database: String,
    /// Engine alias name; defaults to `metadata.name` with `-`/`.` as `_`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), pattern(ENGINE_NAME_PATTERN))]
    pub name: Option<String>,
    /// Engine name of the target collection. Changing it moves the alias (AlterAlias).
    #[schemars(length(min = 1, max = 255), pattern(ENGINE_NAME_PATTERN))]
    pub collection: String,
    /// When the alias may move (`WhenTargetServing` unless set).
    #[serde(default)]
    pub switch_policy: SwitchPolicy,
    /// Checks on the new target's rows before a swap (not for the first binding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guards: Option<SwapGuards>,
    /// `Delete` (default) drops the engine alias when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: AliasDeletionPolicy,
}

/// Row checks a swap must pass (GetCollectionStatistics `row_count`). A failing guard holds
/// the alias on its current target with `Ready=False, reason=SwapBlocked`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwapGuards {
    /// The new target must hold at least this many rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_row_count: Option<i64>,
    /// The new target must hold at least this fraction of the rows of the collection the
    /// alias serves now (e.g. `0.95`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub min_row_ratio: Option<f64>,
}

/// One past binding of the alias.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AliasHistoryEntry {
    /// The target it pointed to.
    pub collection: String,
    /// When the operator bound it (RFC 3339).
    pub time: String,
}

/// The last swap (AlterAlias) of the alias, step by step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastSwap {
    /// The target before.
    pub from: String,
    /// The target after.
    pub to: String,
    /// When the spec first asked for `to` (RFC 3339): the wait for the gate starts here.
    pub requested_at: String,
    /// When AlterAlias succeeded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// When DescribeAlias, and DescribeCollection through the alias, returned the new
    /// target and its collection ID (RFC 3339). Until then the alias is not Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<String>,
}

/// Observed state of a `CollectionAlias`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionAliasStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `Synced`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The engine database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The engine alias name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_name: Option<String>,
    /// The collection the alias is bound to now (set only by the operator: its presence
    /// marks the engine alias as managed by this resource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// The collection it was bound to before: set `spec.collection` to it to roll back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_collection: Option<String>,
    /// Recent bindings, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AliasHistoryEntry>,
    /// The last swap, with the time of each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_swap: Option<LastSwap>,
    /// Last `collections.dev/reconcile-requested-at` value handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
}

impl CollectionAlias {
    /// The engine alias: `spec.name`, else the Kubernetes name with `-`/`.` as `_`.
    pub fn engine_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| {
            super::engine_name_from(self.metadata.name.as_deref().unwrap_or_default())
        })
    }
}
