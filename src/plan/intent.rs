//! Intents from resources: what a `Collection` / `CollectionAlias` (from the API server or
//! from a manifest file) asks the planner for.

use kube::{Resource, ResourceExt};

use super::{AliasIntent, CollectionIntent, ObjectKey, Seniority};
use crate::crd::{ADOPT_ANNOTATION, Collection, CollectionAlias, PAUSED_ANNOTATION};

/// The key of a resource; manifests without a namespace count as `default`.
pub fn key_of<K: kube::Resource>(resource: &K) -> ObjectKey {
    ObjectKey {
        namespace: resource
            .meta()
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string()),
        name: resource.meta().name.clone().unwrap_or_default(),
    }
}

/// The seniority of a resource, for deciding name conflicts (oldest wins).
pub fn seniority_of<K: kube::Resource>(resource: &K) -> Seniority {
    Seniority {
        created: resource
            .meta()
            .creation_timestamp
            .as_ref()
            .map(|time| time.0.to_string())
            .unwrap_or_default(),
        key: key_of(resource),
    }
}

/// Whether an annotation is set to `"true"`.
pub fn annotation_is_true<K: kube::Resource>(resource: &K, annotation: &str) -> bool {
    resource
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation))
        .is_some_and(|v| v == "true")
}

impl CollectionIntent {
    /// The intent of a `Collection` resource.
    pub fn from_resource(collection: &Collection) -> Self {
        Self {
            key: key_of(collection),
            seniority: seniority_of(collection),
            database: collection.spec.database.clone(),
            name: collection.engine_name(),
            spec: collection.spec.clone(),
            adopt: annotation_is_true(collection, ADOPT_ANNOTATION),
            paused: annotation_is_true(collection, PAUSED_ANNOTATION),
            deleting: collection.meta().deletion_timestamp.is_some(),
            owned_id: collection
                .status
                .as_ref()
                .and_then(|s| s.collection_id.as_deref())
                .and_then(|id| id.parse().ok()),
        }
    }
}

impl AliasIntent {
    /// The intent of a `CollectionAlias` resource.
    pub fn from_resource(alias: &CollectionAlias) -> Self {
        Self {
            key: key_of(alias),
            seniority: seniority_of(alias),
            database: alias.spec.database.clone(),
            alias: alias.engine_name(),
            target: alias.spec.collection.clone(),
            switch_policy: alias.spec.switch_policy,
            deletion_policy: alias.spec.deletion_policy,
            adopt: annotation_is_true(alias, ADOPT_ANNOTATION),
            paused: annotation_is_true(alias, PAUSED_ANNOTATION),
            deleting: alias.meta().deletion_timestamp.is_some(),
            bound: alias.status.as_ref().and_then(|s| s.collection.clone()),
        }
    }
}

/// The resource's `collections.dev/...` annotation value, if any.
pub fn annotation<K: kube::Resource>(resource: &K, annotation: &str) -> Option<String> {
    resource.annotations().get(annotation).cloned()
}
