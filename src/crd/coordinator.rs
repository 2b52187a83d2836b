//! `Coordinator`: where the engine is. This version knows `external` coordinators (an
//! existing Milvus or our coordinator run elsewhere); `managed` (the operator deploys the
//! coordinator and its streaming nodes) is added with WAL placement.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Secret (same namespace) holding the engine credentials: either `token`, or `username`
/// and `password` — what pymilvus sends as the `authorization` header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// An engine the operator does not deploy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalCoordinator {
    /// gRPC endpoint, e.g. `http://milvus.vector:19530`.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("endpoint must start with http:// or https://"))]
    #[schemars(length(min = 8, max = 2048))]
    pub endpoint: String,
    /// Credentials, if the engine requires them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<CredentialsSecretRef>,
}

/// Where Collections and CollectionAliases that reference this resource are applied.
// Several printer columns share `type_`; clippy reads them as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "collections.dev",
    version = "v1alpha1",
    kind = "Coordinator",
    namespaced,
    cel,
    status = "CoordinatorStatus",
    shortname = "coord",
    category = "collections",
    printcolumn(name = "ENDPOINT", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "VERSION", type_ = "string", json_path = ".status.version"),
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
#[x_kube(validation = Rule::new("has(self.external)").message("spec.external is required (managed coordinators are not available in this version)"))]
pub struct CoordinatorSpec {
    /// An existing engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalCoordinator>,
}

/// Observed state of a `Coordinator`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the endpoint answers Connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The endpoint in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// What the engine reports as its version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}
