//! The custom resources of group `collections.dev`, version `v1alpha1`: `Coordinator`,
//! `Collection`, `CollectionAlias` and `RoutedAlias`. Schemas (OpenAPI + CEL) are derived from these
//! types; `collection-operator crds` prints them and `crds/` holds the printed YAML.
//!
//! Validation happens in the API server before anything reaches the engine: engine names
//! follow Milvus's rule (`^[A-Za-z_][A-Za-z0-9_]*$`, at most 255 bytes), the schema and
//! the engine names are immutable, a collection has exactly one primary key, vector fields
//! carry `dim` and VarChar fields `maxLength`.

pub mod alias;
pub mod collection;
pub mod common;
pub mod coordinator;
pub mod routed;

pub use alias::{
    AliasHistoryEntry, CollectionAlias, CollectionAliasSpec, CollectionAliasStatus, LastSwap,
    SwapGuards, SwitchPolicy,
};
pub use collection::{
    Collection, CollectionSpec, CollectionStatus, ConsistencyLevel, DataType, FieldSpec, IndexSpec,
    IndexStatus, LoadPolicy, LoadSpec, LoadStateName, LoadStatus,
};
pub use common::{
    ADOPT_ANNOTATION, AliasDeletionPolicy, CollectionDeletionPolicy, CoordinatorRef,
    ENDPOINT_ANNOTATION, FINALIZER, GROUP, PAUSED_ANNOTATION, RECONCILE_REQUESTED_ANNOTATION,
    RESYNC_INTERVAL_ANNOTATION, engine_name_from,
};
pub use coordinator::{
    ContainerResources, Coordinator, CoordinatorSpec, CoordinatorStatus, CredentialsSecretRef,
    EtcdStorage, ExternalCoordinator, ManagedCoordinator, ManagedMetaStore, PChannelPlacement,
    RedbStorage, SharedClaim, StreamingNodePlacement, StreamingSpec, StreamingStatus, WalStorage,
};
pub use routed::{CollectionTemplate, RoutedAlias, RoutedAliasSpec, RoutedAliasStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

/// Every CRD of the project, in a stable order, with schemas the API server takes without
/// warnings (see [`for_kubernetes`]).
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        Coordinator::crd(),
        Collection::crd(),
        CollectionAlias::crd(),
        RoutedAlias::crd(),
    ]
    .into_iter()
    .map(for_kubernetes)
    .collect()
}

/// The `format` values the Kubernetes API server recognizes in a CRD schema (kube-openapi's
/// `strfmt` registry plus the numeric formats of OpenAPI); any other one makes
/// `kubectl apply` print `Warning: unrecognized format`.
pub const KUBERNETES_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "binary",
    "password",
    "date",
    "date-time",
    "datetime",
    "duration",
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
];

/// Rewrites what schemars derives into what the API server expects:
/// - schema defaults are removed inside list items: the API server would write them into
///   every stored element, and GitOps tools that diff lists element by element (Argo CD)
///   would then show the manifest as out of sync forever. Code reads those fields with the
///   same defaults, and CEL rules test them with `has()`;
/// - unsigned integer formats (`uint32`…, which Kubernetes does not know) become `int32` or
///   `int64` with `minimum: 0` (a tighter minimum the type already declares is kept).
fn for_kubernetes(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn rewrite(value: &mut serde_json::Value, inside_items: bool) {
        match value {
            serde_json::Value::Object(map) => {
                if inside_items {
                    map.remove("default");
                }
                let signed = match map.get("format").and_then(|format| format.as_str()) {
                    Some("uint8" | "uint16") => Some("int32"),
                    Some("uint" | "uint32" | "uint64") => Some("int64"),
                    _ => None,
                };
                if let Some(signed) = signed {
                    map.insert("format".into(), signed.into());
                    let minimum = map.get("minimum").and_then(|m| m.as_f64());
                    if minimum.is_none_or(|minimum| minimum < 0.0) {
                        map.insert("minimum".into(), 0.0.into());
                    }
                }
                for (key, child) in map.iter_mut() {
                    rewrite(child, inside_items || key == "items");
                }
            }
            serde_json::Value::Array(list) => list
                .iter_mut()
                .for_each(|child| rewrite(child, inside_items)),
            _ => {}
        }
    }
    let original = crd.clone();
    let Ok(mut value) = serde_json::to_value(crd) else {
        return original;
    };
    rewrite(&mut value, false);
    serde_json::from_value(value).unwrap_or(original)
}

/// The CRDs as one multi-document YAML stream (what `collection-operator crds` prints).
pub fn to_yaml() -> anyhow::Result<String> {
    let mut out = String::new();
    for crd in all() {
        // merge_crds with one version is the identity; it validates the version set.
        let crd = merge_crds(vec![crd], "v1alpha1")?;
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
