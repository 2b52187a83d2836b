//! Pieces shared by the resources: references, policies, annotations, finalizer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "collections.dev";

/// Finalizer the operator puts on Collections and CollectionAliases it has acted on.
pub const FINALIZER: &str = "collections.dev/finalizer";

/// `"true"`: the operator makes no engine writes for this object.
pub const PAUSED_ANNOTATION: &str = "collections.dev/paused";

/// Any new value forces a reconcile (GitOps tools can set it to a time).
pub const RECONCILE_REQUESTED_ANNOTATION: &str = "collections.dev/reconcile-requested-at";

/// `"true"`: take over an engine object of the same name that the operator did not create.
pub const ADOPT_ANNOTATION: &str = "collections.dev/adopt";

/// Per-object drift-correction interval, e.g. `"30s"`, `"5m"` (default 60 s, jittered).
pub const RESYNC_INTERVAL_ANNOTATION: &str = "collections.dev/resync-interval";

/// On a managed Coordinator: the endpoint the operator uses instead of the in-cluster
/// Service (`http://<name>-coordinator.<ns>.svc:19530`), for an operator that runs outside
/// the cluster (e.g. through `kubectl port-forward`).
pub const ENDPOINT_ANNOTATION: &str = "collections.dev/endpoint";

/// Which `Coordinator` (in the same namespace) serves the engine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorRef {
    /// Name of the Coordinator resource.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What happens to the engine collection when its `Collection` resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CollectionDeletionPolicy {
    /// Keep the engine collection (the default: data outlives manifests).
    #[default]
    Retain,
    /// Drop the engine collection (only once no alias points to it).
    Delete,
}

/// What happens to the engine alias when its `CollectionAlias` resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AliasDeletionPolicy {
    /// Drop the engine alias (the default: an alias is a pointer, not data).
    #[default]
    Delete,
    /// Keep the engine alias.
    Retain,
}

/// The engine name a resource gets when `spec.name` is not set: its Kubernetes name with
/// `-` and `.` turned into `_` (Kubernetes names cannot hold `_`, Milvus names cannot hold
/// `-`), so `products-v2` manages `products_v2`.
pub fn engine_name_from(metadata_name: &str) -> String {
    metadata_name.replace(['-', '.'], "_")
}

/// The database used when a spec names none.
pub fn default_database() -> String {
    crate::meta::names::DEFAULT_DATABASE.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_names_replace_dashes_and_dots() {
        assert_eq!(engine_name_from("products-v2"), "products_v2");
        assert_eq!(engine_name_from("a.b-c"), "a_b_c");
    }
}
