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

impl CollectionAliasStatus {
    /// Records that the spec asks to move from `from` to `to` (the gate may hold it back):
    /// a new `lastSwap` unless the recorded one is this very swap, still unapplied, so
    /// `requestedAt` keeps the start of the wait. Call it only while the engine alias
    /// points to `from`: once it points to `to`, the swap is applied.
    pub fn swap_requested(&mut self, from: &str, to: &str, at: &str) {
        let same_pending = self
            .last_swap
            .as_ref()
            .is_some_and(|swap| swap.from == from && swap.to == to && swap.applied_at.is_none());
        if !same_pending {
            self.last_swap = Some(LastSwap {
                from: from.to_string(),
                to: to.to_string(),
                requested_at: at.to_string(),
                applied_at: None,
                verified_at: None,
            });
        }
    }

    /// Records the AlterAlias of the requested swap to `to` (a swap never requested is
    /// recorded as requested now).
    pub fn swap_applied(&mut self, from: &str, to: &str, at: &str) {
        self.swap_requested(from, to, at);
        if let Some(swap) = self.last_swap.as_mut() {
            swap.applied_at = Some(at.to_string());
            swap.verified_at = None;
        }
    }

    /// Records that the engine confirmed the applied swap to `to`; `false` when no applied,
    /// unverified swap to `to` is recorded.
    pub fn swap_verified(&mut self, to: &str, at: &str) -> bool {
        match self.last_swap.as_mut() {
            Some(swap) if swap.to == to && swap.applied_at.is_some() => {
                if swap.verified_at.is_none() {
                    swap.verified_at = Some(at.to_string());
                }
                true
            }
            _ => false,
        }
    }

    /// The swap applied to the engine but not yet confirmed through it, if any.
    pub fn unverified_swap(&self) -> Option<&LastSwap> {
        self.last_swap
            .as_ref()
            .filter(|swap| swap.applied_at.is_some() && swap.verified_at.is_none())
    }
}

impl CollectionAlias {
    /// The engine alias: `spec.name`, else the Kubernetes name with `-`/`.` as `_`.
    pub fn engine_name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| {
            super::engine_name_from(self.metadata.name.as_deref().unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_is_recorded_step_by_step() {
        let mut status = CollectionAliasStatus::default();
        status.swap_requested("v1", "v2", "t1");
        // Later passes of the same wait keep the first request time.
        status.swap_requested("v1", "v2", "t2");
        assert_eq!(
            status.last_swap,
            Some(LastSwap {
                from: "v1".into(),
                to: "v2".into(),
                requested_at: "t1".into(),
                applied_at: None,
                verified_at: None,
            })
        );
        assert_eq!(status.unverified_swap(), None);
        assert!(!status.swap_verified("v2", "t3"), "not applied yet");

        status.swap_applied("v1", "v2", "t3");
        assert_eq!(
            status.unverified_swap().map(|s| s.requested_at.as_str()),
            Some("t1")
        );
        assert!(!status.swap_verified("v3", "t4"), "another target");
        assert!(status.swap_verified("v2", "t4"));
        assert!(status.swap_verified("v2", "t5"), "idempotent");
        assert_eq!(
            status
                .last_swap
                .as_ref()
                .and_then(|s| s.verified_at.as_deref()),
            Some("t4")
        );
        assert_eq!(status.unverified_swap(), None);

        // The spec changed its mind during a wait: a new request, a new start.
        status.swap_requested("v2", "v3", "t6");
        status.swap_requested("v2", "v1", "t7");
        assert_eq!(
            status
                .last_swap
                .as_ref()
                .map(|s| (s.to.as_str(), s.requested_at.as_str())),
            Some(("v1", "t7"))
        );
        // Moving back to a target swapped to before is a new swap.
        status.swap_applied("v2", "v1", "t8");
        status.swap_requested("v2", "v1", "t9");
        assert_eq!(
            status.last_swap.as_ref().map(|s| s.requested_at.as_str()),
            Some("t9")
        );
    }
}
