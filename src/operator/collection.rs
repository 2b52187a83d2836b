//! The `Collection` controller: observe the engine collection → `plan_collection` →
//! apply → status, inside kube's finalizer helper so that `deletionPolicy: Delete` runs
//! before the resource disappears.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::backoff::next_resync;
use super::context::{Context, Executed};
use super::error::Error;
use super::events::EventSpec;
use super::status::{Outcome, apply_status, collection_status};
use crate::crd::{Collection, FINALIZER};
use crate::plan::{Action, CollectionIntent, Observed, Verdict, plan_collection};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "collection";

/// Reconciles one `Collection`.
pub async fn reconcile(collection: Arc<Collection>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_inner(collection, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    result
}

async fn reconcile_inner(collection: Arc<Collection>, ctx: &Context) -> Result<Requeue, Error> {
    ctx.caches_ready().await?;
    let namespace = collection
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Collection> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, collection, |event| async {
        match event {
            FinalizerEvent::Apply(collection) => apply(collection, ctx, &api).await,
            FinalizerEvent::Cleanup(collection) => cleanup(collection, ctx, &api).await,
        }
    })
    .await
    .map_err(Error::from_finalizer)
}

/// Requeue after a failed pass: terminal errors wait for the resync interval (an edit
/// triggers a pass anyway), others back off exponentially per object.
pub fn error_policy(collection: Arc<Collection>, error: &Error, ctx: Arc<Context>) -> Requeue {
    Requeue::requeue(super::backoff::after_error(
        &*collection,
        error,
        &ctx.collection_backoff,
        ctx.settings.resync_interval,
        &ctx.metrics,
        CONTROLLER,
    ))
}

/// The engine names a Collection pass observes.
pub fn observation(collection: &Collection) -> BTreeSet<(String, String)> {
    BTreeSet::from([(collection.spec.database.clone(), collection.engine_name())])
}

/// The collection ID the resource owns after the pass: created or adopted now, or the
/// recorded one still standing in the engine.
pub fn owned_after(
    intent: &CollectionIntent,
    verdict: &Verdict,
    observed: &Observed,
    executed: &Executed,
) -> Option<i64> {
    let mut owned = None;
    for (action, applied) in &executed.applied {
        match action {
            Action::CreateCollection { .. } => owned = applied.collection_id.or(owned),
            Action::AdoptCollection { id, .. } => owned = Some(*id),
            _ => {}
        }
    }
    if owned.is_some() {
        return owned;
    }
    let existing = observed
        .collections
        .get(&(intent.database.clone(), intent.name.clone()))?;
    (*verdict == Verdict::Ready && intent.owned_id == Some(existing.id)).then_some(existing.id)
}

/// The aliases to report: those on the engine collection when the resource owns it,
/// none when it does not (they are someone else's).
pub fn aliases_after(
    intent: &CollectionIntent,
    observed: &Observed,
    owned: Option<i64>,
) -> Vec<String> {
    match (
        owned,
        observed
            .collections
            .get(&(intent.database.clone(), intent.name.clone())),
    ) {
        (Some(id), Some(existing)) if existing.id == id => {
            existing.aliases.iter().cloned().collect()
        }
        _ => Vec::new(),
    }
}

fn ready_message(intent: &CollectionIntent, owned: Option<i64>) -> String {
    match owned {
        Some(id) => format!(
            "collection {} in database {} (ID {id})",
            intent.name, intent.database
        ),
        None => format!("collection {} in database {}", intent.name, intent.database),
    }
}

/// The object as cached (what the API server has, as far as the watch told) and as this
/// process knows it (its status replaced by the one last computed, see
/// [`super::context::Remembered`]).
struct View {
    cached: Arc<Collection>,
    known: Arc<Collection>,
}

impl View {
    fn new(cached: Arc<Collection>, ctx: &Context) -> Self {
        let known = Arc::new(ctx.remembered.collection(&cached));
        Self { cached, known }
    }

    /// Remembers `status` and writes it unless the API server already has it.
    async fn write(
        &self,
        api: &Api<Collection>,
        ctx: &Context,
        status: crate::crd::CollectionStatus,
    ) -> Result<(), Error> {
        if let Some(uid) = self.cached.uid() {
            ctx.remembered.set_collection(&uid, &status);
        }
        if self.cached.status.as_ref() != Some(&status) {
            apply_status(api, &*self.cached, &status).await?;
        }
        Ok(())
    }

    /// Records a failure in the status (best effort) and returns the error.
    async fn fail(
        &self,
        api: &Api<Collection>,
        ctx: &Context,
        error: Error,
    ) -> Result<Requeue, Error> {
        let status = collection_status(
            &self.known,
            &Outcome::from_error(&error),
            None,
            None,
            ctx.now(),
        );
        if let Err(status_error) = self.write(api, ctx, status).await {
            tracing::warn!(error = %status_error, "could not record the failure in status");
        }
        Err(error)
    }
}

async fn apply(
    cached: Arc<Collection>,
    ctx: &Context,
    api: &Api<Collection>,
) -> Result<Requeue, Error> {
    let view = View::new(cached, ctx);
    let collection = view.known.clone();
    let namespace = collection.namespace().unwrap_or_default();
    let key = ObjectRef::from_obj(&*collection);
    let coordinator_name = &collection.spec.coordinator_ref.name;
    let Some(coordinator) = ctx.coordinator(&namespace, coordinator_name).await? else {
        let error = Error::Coordinator {
            namespace: namespace.clone(),
            name: coordinator_name.clone(),
            message: "not found".to_string(),
        };
        // Waiting for it is not a failure: creating it requeues this object.
        let _ = view.fail(api, ctx, error).await;
        return Ok(Requeue::requeue(next_resync(
            &*collection,
            ctx.settings.resync_interval,
        )));
    };
    let mut engine = match ctx.engines.connect(&coordinator).await {
        Ok(engine) => engine,
        Err(error) => return view.fail(api, ctx, error).await,
    };
    let intent = CollectionIntent::from_resource(&collection);
    let observed = match engine
        .observe(&observation(&collection), &BTreeSet::new())
        .await
    {
        Ok(observed) => observed,
        Err(error) => return view.fail(api, ctx, error.into()).await,
    };
    let rivals = ctx.collection_rivals(&collection);
    let (actions, verdict) = plan_collection(&intent, &rivals, &observed);
    let recorded = intent.owned_id.map(|id| id.to_string());
    let executed = ctx
        .execute(
            &mut engine,
            &collection.object_ref(&()),
            actions,
            recorded.as_deref(),
            intent.paused,
        )
        .await;
    let owned = owned_after(&intent, &verdict, &observed, &executed);
    let (outcome, aliases) = match &executed.failure {
        Some((_, error)) => (Outcome::engine_failure(error), None),
        None => (
            Outcome::Planned {
                ready_message: ready_message(&intent, owned),
                verdict: verdict.clone(),
            },
            Some(aliases_after(&intent, &observed, owned)),
        ),
    };
    let status = collection_status(&collection, &outcome, owned, aliases, ctx.now());
    view.write(api, ctx, status).await?;
    if let Some((_, error)) = executed.failure {
        return Err(error.into());
    }
    ctx.collection_backoff.reset(&key);
    Ok(Requeue::requeue(next_resync(
        &*collection,
        ctx.settings.resync_interval,
    )))
}

async fn cleanup(
    cached: Arc<Collection>,
    ctx: &Context,
    api: &Api<Collection>,
) -> Result<Requeue, Error> {
    let view = View::new(cached, ctx);
    let collection = view.known.clone();
    let namespace = collection.namespace().unwrap_or_default();
    let key = ObjectRef::from_obj(&*collection);
    let coordinator_name = &collection.spec.coordinator_ref.name;
    let Some(coordinator) = ctx.coordinator(&namespace, coordinator_name).await? else {
        // The engine's Coordinator resource is gone (typically the namespace is being
        // deleted). Waiting for it would keep the finalizer forever; assume its objects
        // are out of our hands, say so, and let the resource go.
        ctx.publish(
            &EventSpec::warning(
                "CoordinatorGone",
                "ReleaseFinalizer",
                format!(
                    "Coordinator {namespace}/{coordinator_name} no longer exists; the \
                     finalizer is released without touching the engine (collection {} in \
                     database {} is left as it is)",
                    collection.engine_name(),
                    collection.spec.database
                ),
            ),
            &collection.object_ref(&()),
        )
        .await;
        released(&collection, ctx, &key);
        return Ok(Requeue::await_change());
    };
    let mut engine = match ctx.engines.connect(&coordinator).await {
        Ok(engine) => engine,
        Err(error) => return view.fail(api, ctx, error).await,
    };
    let intent = CollectionIntent::from_resource(&collection);
    let observed = match engine
        .observe(&observation(&collection), &BTreeSet::new())
        .await
    {
        Ok(observed) => observed,
        Err(error) => return view.fail(api, ctx, error.into()).await,
    };
    let (actions, verdict) = plan_collection(&intent, &[], &observed);
    let recorded = intent.owned_id.map(|id| id.to_string());
    let executed = ctx
        .execute(
            &mut engine,
            &collection.object_ref(&()),
            actions,
            recorded.as_deref(),
            false,
        )
        .await;
    if let Some((_, error)) = executed.failure {
        return view.fail(api, ctx, error.into()).await;
    }
    match verdict {
        Verdict::Released => {
            released(&collection, ctx, &key);
            Ok(Requeue::await_change())
        }
        Verdict::NotReady { reason, message } => {
            let owned = owned_after(&intent, &Verdict::Ready, &observed, &executed);
            let outcome = Outcome::Planned {
                verdict: Verdict::NotReady {
                    reason,
                    message: message.clone(),
                },
                ready_message: String::new(),
            };
            let aliases = Some(aliases_after(&intent, &observed, owned));
            let status = collection_status(&collection, &outcome, owned, aliases, ctx.now());
            view.write(api, ctx, status).await?;
            Err(Error::Blocked {
                reason: reason.as_str(),
                message,
            })
        }
        Verdict::Ready => Err(Error::Blocked {
            reason: "Deleting",
            message: "the planner did not release the resource".to_string(),
        }),
    }
}

/// Bookkeeping when the finalizer goes: forget backoff and remembered status, and wake
/// the resources that lost a conflict to this one.
fn released(collection: &Collection, ctx: &Context, key: &ObjectRef<Collection>) {
    ctx.collection_backoff.reset(key);
    if let Some(uid) = collection.uid() {
        ctx.remembered.forget_collection(&uid);
    }
    for rival in ctx.collection_claimants(collection) {
        ctx.hints.collection(ObjectRef::from_obj(&*rival));
    }
}

/// Collections to requeue when `coordinator` changes (e.g. becomes reachable).
pub fn collections_for_coordinator(
    ctx: &Context,
    coordinator: &crate::crd::Coordinator,
) -> Vec<ObjectRef<Collection>> {
    let namespace = coordinator.namespace();
    let name = coordinator.name_any();
    ctx.stores
        .collections
        .state()
        .iter()
        .filter(|c| c.namespace() == namespace && c.spec.coordinator_ref.name == name)
        .map(|c| ObjectRef::from_obj(&**c))
        .collect()
}
