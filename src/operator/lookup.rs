//! Questions a pass asks the informer caches before it plans: which engine a
//! `coordinatorRef` designates, who else claims the same engine collection or alias, and
//! how ready an alias's target is. Pure reads of [`Stores`] (only [`coordinator`] falls
//! back to the API server), so each controller's gathering step calls them directly.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::context::{Context, Stores, target_readiness_of};
use super::error::Error;
use crate::crd::{Collection, CollectionAlias, Coordinator, CoordinatorRef};
use crate::plan::{AliasIntent, CollectionIntent, Seniority, TargetReadiness};

/// The Coordinator `name` in `namespace`: from the cache, and when the cache has none,
/// from the API server (a cache that lags must not make the operator release
/// finalizers because it believes the Coordinator is gone). `None`: it does not exist.
pub async fn coordinator(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Arc<Coordinator>>, Error> {
    let reference = ObjectRef::<Coordinator>::new(name).within(namespace);
    if let Some(coordinator) = ctx.stores.coordinators.get(&reference) {
        return Ok(Some(coordinator));
    }
    let api: Api<Coordinator> = Api::namespaced(ctx.client.clone(), namespace);
    let found = api
        .get_opt(name)
        .await
        .map_err(|source| Error::kube(format!("reading Coordinator {namespace}/{name}"), source))?;
    Ok(found.map(Arc::new))
}

/// Which engine a reference designates: the Coordinator's endpoint when known (two
/// Coordinators may point to the same engine), else the reference itself.
pub fn engine_identity(stores: &Stores, namespace: &str, coordinator: &CoordinatorRef) -> String {
    let reference = ObjectRef::<Coordinator>::new(&coordinator.name).within(namespace);
    match stores
        .coordinators
        .get(&reference)
        .and_then(|c| c.endpoint())
    {
        Some(endpoint) => format!("endpoint {}", endpoint.trim_end_matches('/').to_lowercase()),
        None => format!("coordinator {namespace}/{}", coordinator.name),
    }
}

/// Where an engine object lives: the engine, the database and the name in it.
#[derive(Debug, PartialEq, Eq)]
struct EngineObject {
    engine: String,
    database: String,
    name: String,
}

impl EngineObject {
    fn of(
        stores: &Stores,
        namespace: Option<String>,
        coordinator: &CoordinatorRef,
        database: &str,
        name: String,
    ) -> Self {
        Self {
            engine: engine_identity(stores, &namespace.unwrap_or_default(), coordinator),
            database: database.to_string(),
            name,
        }
    }

    fn of_collection(stores: &Stores, collection: &Collection) -> Self {
        Self::of(
            stores,
            collection.namespace(),
            &collection.spec.coordinator_ref,
            &collection.spec.database,
            collection.engine_name(),
        )
    }

    fn of_alias(stores: &Stores, alias: &CollectionAlias) -> Self {
        Self::of(
            stores,
            alias.namespace(),
            &alias.spec.coordinator_ref,
            &alias.spec.database,
            alias.engine_name(),
        )
    }
}

/// Whether two resources are the same one (same namespace and name).
fn same_resource(a: &impl ResourceExt, b: &impl ResourceExt) -> bool {
    a.namespace() == b.namespace() && a.name_any() == b.name_any()
}

/// The other Collections claiming the same engine collection as `collection`.
pub fn collection_claimants(stores: &Stores, collection: &Collection) -> Vec<Arc<Collection>> {
    let claimed = EngineObject::of_collection(stores, collection);
    stores
        .collections
        .state()
        .into_iter()
        .filter(|other| {
            !same_resource(&**other, collection)
                && EngineObject::of_collection(stores, other) == claimed
        })
        .collect()
}

/// The seniority of each rival of `collection` (see [`collection_claimants`]).
pub fn collection_rivals(stores: &Stores, collection: &Collection) -> Vec<Seniority> {
    collection_claimants(stores, collection)
        .iter()
        .map(|other| CollectionIntent::from_resource(other).seniority)
        .collect()
}

/// The other CollectionAliases claiming the same engine alias as `alias`.
pub fn alias_claimants(stores: &Stores, alias: &CollectionAlias) -> Vec<Arc<CollectionAlias>> {
    let claimed = EngineObject::of_alias(stores, alias);
    stores
        .aliases
        .state()
        .into_iter()
        .filter(|other| {
            !same_resource(&**other, alias) && EngineObject::of_alias(stores, other) == claimed
        })
        .collect()
}

/// The seniority of each rival of `alias` (see [`alias_claimants`]).
pub fn alias_rivals(stores: &Stores, alias: &CollectionAlias) -> Vec<Seniority> {
    alias_claimants(stores, alias)
        .iter()
        .map(|other| AliasIntent::from_resource(other).seniority)
        .collect()
}

/// Collections managing engine collection `name` in `database` of the engine that
/// `coordinator` (in `namespace`) designates.
pub fn collections_named(
    stores: &Stores,
    namespace: &str,
    coordinator: &CoordinatorRef,
    database: &str,
    name: &str,
) -> Vec<Arc<Collection>> {
    let wanted = EngineObject::of(
        stores,
        Some(namespace.to_string()),
        coordinator,
        database,
        name.to_string(),
    );
    stores
        .collections
        .state()
        .into_iter()
        .filter(|c| EngineObject::of_collection(stores, c) == wanted)
        .collect()
}

/// How ready the alias's desired target is, as far as `Collection` resources tell.
pub fn target_readiness(stores: &Stores, alias: &CollectionAlias) -> TargetReadiness {
    let managing: Vec<Arc<Collection>> = collections_named(
        stores,
        &alias.namespace().unwrap_or_default(),
        &alias.spec.coordinator_ref,
        &alias.spec.database,
        &alias.spec.collection,
    )
    .into_iter()
    .filter(|c| c.metadata.deletion_timestamp.is_none())
    .collect();
    target_readiness_of(&managing)
}

/// Whether a `CollectionAlias` (not being deleted) names `collection`'s engine collection
/// as its target: it points there or waits to (a `WhileAliased` load starts then).
pub fn awaited_by_alias(stores: &Stores, collection: &Collection) -> bool {
    let wanted = EngineObject::of_collection(stores, collection);
    stores.aliases.state().iter().any(|alias| {
        alias.metadata.deletion_timestamp.is_none()
            && EngineObject::of(
                stores,
                alias.namespace(),
                &alias.spec.coordinator_ref,
                &alias.spec.database,
                alias.spec.collection.clone(),
            ) == wanted
    })
}
