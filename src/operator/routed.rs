//! The `RoutedAlias` controller: read the series from the informer caches (its owned
//! `Collection`s and `CollectionAlias`) → [`plan_routed`] with the context's clock →
//! create the missing `Collection`s, point the owned `CollectionAlias` at the current
//! one, delete retired `Collection`s → status → requeue for exactly the next scheduled
//! action.
//!
//! It never calls the engine: the generated resources are ordinary `Collection` and
//! `CollectionAlias` objects, reconciled by their own controllers (creation, the
//! Ready-gated alias switch, `deletionPolicy` on retirement). Their changes come back
//! here through the ownership watch, so "the new collection became Ready" moves the alias
//! without polling. No finalizer either: Kubernetes garbage-collects the children through
//! their owner references when the `RoutedAlias` goes, and each child's own policy
//! applies (the alias is dropped, collections follow `deletionPolicy`).

use std::sync::Arc;
use std::time::Instant;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::FIELD_MANAGER;
use super::backoff::next_resync;
use super::context::{Context, collection_is_ready};
use super::error::Error;
use super::events::EventSpec;
use super::status::{READY, SYNCED, Truth, Wanted, apply_status, conditions};
use crate::crd::routed::{NextActionStatus, RoutedMemberStatus};
use crate::crd::{Collection, CollectionAlias, RoutedAlias, RoutedAliasStatus};
use crate::plan::routed::{
    Member, RoutedObserved, RoutedPlan, RoutedReason, RoutedVerdict, plan_routed, start_of,
};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "routedalias";

/// Reconciles one `RoutedAlias`.
pub async fn reconcile(routed: Arc<RoutedAlias>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_inner(routed, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    result
}

/// Requeue after a failed pass (see [`super::collection::error_policy`]).
pub fn error_policy(routed: Arc<RoutedAlias>, error: &Error, ctx: Arc<Context>) -> Requeue {
    Requeue::requeue(super::backoff::after_error(
        &*routed,
        error,
        &ctx.routed_backoff,
        ctx.settings.resync_interval,
        &ctx.metrics,
        CONTROLLER,
    ))
}

fn owned_by(object: &impl Resource, uid: &str) -> bool {
    object
        .meta()
        .owner_references
        .as_ref()
        .is_some_and(|owners| owners.iter().any(|o| o.uid == uid))
}

/// The series as the caches show it: the `Collection`s this resource owns (with a series
/// name) and its `CollectionAlias`, if any (`Err` holds a same-named alias it does not
/// own).
pub fn observe(
    ctx: &Context,
    routed: &RoutedAlias,
) -> (RoutedObserved, Result<Option<Arc<CollectionAlias>>, ()>) {
    let uid = routed.uid().unwrap_or_default();
    let namespace = routed.namespace();
    let alias = routed.engine_name();
    let members = ctx
        .stores
        .collections
        .state()
        .into_iter()
        .filter(|c| c.namespace() == namespace && owned_by(&**c, &uid))
        .filter_map(|c| {
            let collection = c.engine_name();
            Some(Member {
                resource: c.name_any(),
                start: start_of(&alias, &collection)?,
                collection,
                ready: collection_is_ready(&c),
                deleting: c.metadata.deletion_timestamp.is_some(),
            })
        })
        .collect();
    let reference = ObjectRef::<CollectionAlias>::new(&routed.name_any())
        .within(namespace.as_deref().unwrap_or_default());
    let child = match ctx.stores.aliases.get(&reference) {
        Some(found) if owned_by(&*found, &uid) => Ok(Some(found)),
        Some(_) => Err(()),
        None => Ok(None),
    };
    let (bound, desired) = match &child {
        Ok(Some(found)) => (
            found.status.as_ref().and_then(|s| s.collection.clone()),
            Some(found.spec.collection.clone()),
        ),
        _ => (None, None),
    };
    (
        RoutedObserved {
            members,
            alias_bound: bound,
            alias_desired: desired,
        },
        child,
    )
}

async fn reconcile_inner(routed: Arc<RoutedAlias>, ctx: &Context) -> Result<Requeue, Error> {
    ctx.caches_ready().await?;
    let namespace = routed
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    if routed.metadata.deletion_timestamp.is_some() {
        // Garbage collection removes the children; nothing of ours to clean up.
        return Ok(Requeue::await_change());
    }
    let now = ctx.now();
    let (observed, child) = observe(ctx, &routed);
    let mut plan = plan_routed(&routed, now, &observed);
    if child.is_err() && plan.alias_target.is_some() {
        plan.alias_target = None;
        plan.verdict = RoutedVerdict::NotReady {
            reason: RoutedReason::Conflict,
            message: format!(
                "a CollectionAlias named {namespace}/{} exists and is not owned by this \
                 RoutedAlias; rename or delete it (collections are still created)",
                routed.name_any()
            ),
        };
    }
    let regarding = routed.object_ref(&());

    let collections: Api<Collection> = Api::namespaced(ctx.client.clone(), &namespace);
    for collection in &plan.create {
        create_collection(&collections, collection).await?;
        ctx.publish(
            &EventSpec::normal(
                "CreatedCollection",
                "CreateCollection",
                format!(
                    "created Collection {} for collection {} of the series",
                    collection.name_any(),
                    collection.engine_name()
                ),
            ),
            &regarding,
        )
        .await;
    }

    if let Some(target) = &plan.alias_target
        && child.is_ok()
        && observed.alias_desired.as_deref() != Some(target.as_str())
    {
        let aliases: Api<CollectionAlias> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_alias(&aliases, &routed.member_alias(target)).await?;
        let note = match &observed.alias_desired {
            Some(from) => format!(
                "routed alias {} from {from} to {target}",
                routed.engine_name()
            ),
            None => format!("routed alias {} to {target}", routed.engine_name()),
        };
        ctx.publish(
            &EventSpec::normal("AliasRouted", "RouteAlias", note),
            &regarding,
        )
        .await;
    }

    for member in &plan.retire {
        delete_collection(&collections, &member.resource).await?;
        ctx.publish(
            &EventSpec::normal(
                "RetiredCollection",
                "DeleteCollection",
                format!(
                    "retired collection {} (autoDeleteAge passed): deleted Collection {} \
                     (deletionPolicy {:?})",
                    member.collection, member.resource, routed.spec.deletion_policy
                ),
            ),
            &regarding,
        )
        .await;
    }

    if let RoutedVerdict::NotReady { reason, message } = &plan.verdict
        && matches!(
            reason,
            RoutedReason::InvalidSpec | RoutedReason::LimitReached | RoutedReason::Conflict
        )
    {
        ctx.publish(
            &EventSpec::warning(reason.as_str(), "Schedule", message.clone()),
            &regarding,
        )
        .await;
    }

    let status = routed_status(&routed, &plan, &observed, now);
    if routed.status.as_ref() != Some(&status) {
        let api: Api<RoutedAlias> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &*routed, &status).await?;
    }
    let key = ObjectRef::from_obj(&*routed);
    ctx.routed_backoff.reset(&key);
    Ok(match plan.wait(now) {
        Some(wait) => Requeue::requeue(wait),
        None => Requeue::requeue(next_resync(&*routed, ctx.settings.resync_interval)),
    })
}

/// Creates a generated `Collection` (a plain create, not an apply: an existing one keeps
/// the spec it was created with, even after a template change, and a lagging cache that
/// missed it gets "already exists", which is fine).
async fn create_collection(api: &Api<Collection>, collection: &Collection) -> Result<(), Error> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    match api.create(&params, collection).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::kube(
            format!("creating Collection {}", collection.name_any()),
            source,
        )),
    }
}

/// Applies the generated `CollectionAlias` (server-side apply, field manager
/// `collection-operator`: the operator owns this child's spec).
async fn apply_alias(api: &Api<CollectionAlias>, alias: &CollectionAlias) -> Result<(), Error> {
    let name = alias.name_any();
    let mut body = serde_json::to_value(alias).map_err(|error| Error::Blocked {
        reason: "Encoding",
        message: error.to_string(),
    })?;
    if let Some(object) = body.as_object_mut() {
        object.insert(
            "apiVersion".into(),
            CollectionAlias::api_version(&()).into(),
        );
        object.insert("kind".into(), CollectionAlias::kind(&()).into());
        object.remove("status");
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::kube(format!("applying CollectionAlias {name}"), source))?;
    Ok(())
}

/// Deletes a retired `Collection` (gone already is fine).
async fn delete_collection(api: &Api<Collection>, name: &str) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::kube(format!("deleting Collection {name}"), source)),
    }
}

/// The status of a `RoutedAlias` after a pass: pure, so an unchanged series is not
/// rewritten (times come from the plan, and `lastTransitionTime` moves only with a
/// condition's status).
pub fn routed_status(
    routed: &RoutedAlias,
    plan: &RoutedPlan,
    observed: &RoutedObserved,
    now: jiff::Timestamp,
) -> RoutedAliasStatus {
    let previous = routed.status.clone().unwrap_or_default();
    let generation = routed.metadata.generation;
    let (ready, synced_reason) = match &plan.verdict {
        RoutedVerdict::Ready { message } => (
            Wanted::new(READY, Truth::True, "Available", message.clone()),
            "ReconcileSuccess",
        ),
        RoutedVerdict::NotReady { reason, message } => (
            Wanted::new(READY, Truth::False, reason.as_str(), message.clone()),
            if *reason == RoutedReason::Paused {
                "ReconcilePaused"
            } else {
                "ReconcileSuccess"
            },
        ),
    };
    let synced = Wanted::new(
        SYNCED,
        if synced_reason == "ReconcilePaused" {
            Truth::False
        } else {
            Truth::True
        },
        synced_reason,
        "",
    );
    RoutedAliasStatus {
        observed_generation: generation,
        conditions: conditions(&previous.conditions, &[ready, synced], generation, now),
        database: Some(routed.spec.database.clone()),
        engine_name: Some(routed.engine_name()),
        alias_target: observed.alias_bound.clone(),
        collections: plan
            .series
            .iter()
            .map(|entry| RoutedMemberStatus {
                collection: entry.collection.clone(),
                resource: entry.resource.clone(),
                start: entry.start.to_string(),
                end: entry.end.to_string(),
                state: entry.position.as_str().to_string(),
                ready: entry.ready,
            })
            .collect(),
        next_action: plan.next.as_ref().map(|next| NextActionStatus {
            action: next.kind.as_str().to_string(),
            collection: next.collection.clone(),
            at: next.at.to_string(),
        }),
    }
}

/// The `RoutedAlias` owning a generated object, for the ownership watch.
pub fn owner_of<K: Resource>(object: &K) -> Option<ObjectRef<RoutedAlias>> {
    let namespace = object.meta().namespace.clone()?;
    object
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "RoutedAlias" && o.controller == Some(true))
        .map(|o| ObjectRef::new(&o.name).within(&namespace))
}
