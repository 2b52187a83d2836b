//! The `CollectionAlias` controller: observe the alias and its target → `plan_alias`
//! (with rivals and the target `Collection`'s readiness from the caches) → apply →
//! status (bound target, previous target, history), inside kube's finalizer helper.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::backoff::{next_resync, resync_interval};
use super::context::{Context, Executed};
use super::error::Error;
use super::events::EventSpec;
use super::status::{Outcome, alias_status, apply_status};
use crate::crd::{Collection, CollectionAlias, CollectionAliasStatus, Coordinator, FINALIZER};
use crate::plan::{Action, AliasIntent, Observed, Reason, Verdict, plan_alias};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "collectionalias";

/// Reconciles one `CollectionAlias`.
pub async fn reconcile(alias: Arc<CollectionAlias>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_inner(alias, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    result
}

async fn reconcile_inner(alias: Arc<CollectionAlias>, ctx: &Context) -> Result<Requeue, Error> {
    ctx.caches_ready().await?;
    let namespace = alias
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<CollectionAlias> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, alias, |event| async {
        match event {
            FinalizerEvent::Apply(alias) => apply(alias, ctx, &api).await,
            FinalizerEvent::Cleanup(alias) => cleanup(alias, ctx, &api).await,
        }
    })
    .await
    .map_err(Error::from_finalizer)
}

/// Requeue after a failed pass (see [`super::collection::error_policy`]).
pub fn error_policy(alias: Arc<CollectionAlias>, error: &Error, ctx: Arc<Context>) -> Requeue {
    Requeue::requeue(super::backoff::after_error(
        &*alias,
        error,
        &ctx.alias_backoff,
        ctx.settings.resync_interval,
        &ctx.metrics,
        CONTROLLER,
    ))
}

/// (database, name) pairs to observe.
pub type Names = BTreeSet<(String, String)>;

/// The engine names an alias pass observes: the alias, its desired target, and any
/// collection named like the alias (names are shared in a database).
pub fn observation(alias: &CollectionAlias) -> (Names, Names) {
    let database = alias.spec.database.clone();
    let name = alias.engine_name();
    (
        BTreeSet::from([
            (database.clone(), alias.spec.collection.clone()),
            (database.clone(), name.clone()),
        ]),
        BTreeSet::from([(database, name)]),
    )
}

/// The target the alias is bound to on the resource's behalf after the pass: the target
/// of an applied create/alter/adopt, else (when Ready and nothing was needed) the desired
/// target, else `None` (keep the recorded binding).
pub fn bound_after(intent: &AliasIntent, verdict: &Verdict, executed: &Executed) -> Option<String> {
    let mut bound = None;
    for (action, _) in &executed.applied {
        match action {
            Action::CreateAlias { target, .. } | Action::AdoptAlias { target, .. } => {
                bound = Some(target.clone())
            }
            Action::AlterAlias { to, .. } => bound = Some(to.clone()),
            _ => {}
        }
    }
    if bound.is_none() && executed.failure.is_none() && *verdict == Verdict::Ready {
        bound = Some(intent.target.clone());
    }
    bound
}

/// The engine collections whose alias sets an applied action changed.
pub fn touched_collections(
    executed: &Executed,
    observed: &Observed,
    intent: &AliasIntent,
) -> BTreeSet<String> {
    let mut touched = BTreeSet::new();
    for (action, _) in &executed.applied {
        match action {
            Action::CreateAlias { target, .. } | Action::AdoptAlias { target, .. } => {
                touched.insert(target.clone());
            }
            Action::AlterAlias { from, to, .. } => {
                touched.insert(from.clone());
                touched.insert(to.clone());
            }
            Action::DropAlias { .. } => {
                if let Some(target) = observed
                    .aliases
                    .get(&(intent.database.clone(), intent.alias.clone()))
                {
                    touched.insert(target.clone());
                }
            }
            _ => {}
        }
    }
    touched
}

fn hint_collections(ctx: &Context, alias: &CollectionAlias, names: &BTreeSet<String>) {
    let namespace = alias.namespace().unwrap_or_default();
    for name in names {
        for collection in ctx.collections_named(
            &namespace,
            &alias.spec.coordinator_ref,
            &alias.spec.database,
            name,
        ) {
            ctx.hints.collection(ObjectRef::from_obj(&*collection));
        }
    }
}

/// The object as cached and as this process knows it (see
/// [`super::context::Remembered`]).
struct View {
    cached: Arc<CollectionAlias>,
    known: Arc<CollectionAlias>,
}

impl View {
    fn new(cached: Arc<CollectionAlias>, ctx: &Context) -> Self {
        let known = Arc::new(ctx.remembered.alias(&cached));
        Self { cached, known }
    }

    /// Remembers `status` and writes it unless the API server already has it.
    async fn write(
        &self,
        api: &Api<CollectionAlias>,
        ctx: &Context,
        status: CollectionAliasStatus,
    ) -> Result<(), Error> {
        if let Some(uid) = self.cached.uid() {
            ctx.remembered.set_alias(&uid, &status);
        }
        if self.cached.status.as_ref() != Some(&status) {
            apply_status(api, &*self.cached, &status).await?;
        }
        Ok(())
    }

    /// Records a failure in the status (best effort) and returns the error.
    async fn fail(
        &self,
        api: &Api<CollectionAlias>,
        ctx: &Context,
        error: Error,
    ) -> Result<Requeue, Error> {
        let status = alias_status(&self.known, &Outcome::from_error(&error), None, ctx.now());
        if let Err(status_error) = self.write(api, ctx, status).await {
            tracing::warn!(error = %status_error, "could not record the failure in status");
        }
        Err(error)
    }
}

async fn apply(
    cached: Arc<CollectionAlias>,
    ctx: &Context,
    api: &Api<CollectionAlias>,
) -> Result<Requeue, Error> {
    let view = View::new(cached, ctx);
    let alias = view.known.clone();
    let namespace = alias.namespace().unwrap_or_default();
    let key = ObjectRef::from_obj(&*alias);
    let coordinator_name = &alias.spec.coordinator_ref.name;
    let Some(coordinator) = ctx.coordinator(&namespace, coordinator_name).await? else {
        let error = Error::Coordinator {
            namespace: namespace.clone(),
            name: coordinator_name.clone(),
            message: "not found".to_string(),
        };
        let _ = view.fail(api, ctx, error).await;
        return Ok(Requeue::requeue(next_resync(
            &*alias,
            ctx.settings.resync_interval,
        )));
    };
    let mut engine = match ctx.engines.connect(&coordinator).await {
        Ok(engine) => engine,
        Err(error) => return view.fail(api, ctx, error).await,
    };
    let intent = AliasIntent::from_resource(&alias);
    let (collections, aliases) = observation(&alias);
    let observed = match engine.observe(&collections, &aliases).await {
        Ok(observed) => observed,
        Err(error) => return view.fail(api, ctx, error.into()).await,
    };
    let rivals = ctx.alias_rivals(&alias);
    let readiness = ctx.target_readiness(&alias);
    let (actions, verdict) = plan_alias(&intent, &rivals, readiness, &observed);
    let executed = ctx
        .execute(
            &mut engine,
            &alias.object_ref(&()),
            actions,
            intent.bound.as_deref(),
            intent.paused,
        )
        .await;
    hint_collections(
        ctx,
        &alias,
        &touched_collections(&executed, &observed, &intent),
    );
    let bound = bound_after(&intent, &verdict, &executed);
    let outcome = match &executed.failure {
        Some((_, error)) => Outcome::engine_failure(error),
        None => Outcome::Planned {
            ready_message: format!(
                "alias {} in database {} points to {}",
                intent.alias, intent.database, intent.target
            ),
            verdict: verdict.clone(),
        },
    };
    let status = alias_status(&alias, &outcome, bound, ctx.now());
    view.write(api, ctx, status).await?;
    if let Some((_, error)) = executed.failure {
        return Err(error.into());
    }
    let resync = resync_interval(&*alias, ctx.settings.resync_interval);
    Ok(Requeue::requeue(match verdict {
        // A target that only has to appear in the engine is polled, with a growing
        // delay; a target managed by a Collection also requeues when that one changes.
        Verdict::NotReady {
            reason: Reason::WaitingForTarget,
            ..
        } => ctx.alias_backoff.next(&key).min(resync),
        _ => {
            ctx.alias_backoff.reset(&key);
            next_resync(&*alias, ctx.settings.resync_interval)
        }
    }))
}

async fn cleanup(
    cached: Arc<CollectionAlias>,
    ctx: &Context,
    api: &Api<CollectionAlias>,
) -> Result<Requeue, Error> {
    let view = View::new(cached, ctx);
    let alias = view.known.clone();
    let namespace = alias.namespace().unwrap_or_default();
    let key = ObjectRef::from_obj(&*alias);
    let coordinator_name = &alias.spec.coordinator_ref.name;
    let Some(coordinator) = ctx.coordinator(&namespace, coordinator_name).await? else {
        ctx.publish(
            &EventSpec::warning(
                "CoordinatorGone",
                "ReleaseFinalizer",
                format!(
                    "Coordinator {namespace}/{coordinator_name} no longer exists; the \
                     finalizer is released without touching the engine (alias {} in \
                     database {} is left as it is)",
                    alias.engine_name(),
                    alias.spec.database
                ),
            ),
            &alias.object_ref(&()),
        )
        .await;
        released(&alias, ctx, &key);
        return Ok(Requeue::await_change());
    };
    let mut engine = match ctx.engines.connect(&coordinator).await {
        Ok(engine) => engine,
        Err(error) => return view.fail(api, ctx, error).await,
    };
    let intent = AliasIntent::from_resource(&alias);
    let (collections, aliases) = observation(&alias);
    let observed = match engine.observe(&collections, &aliases).await {
        Ok(observed) => observed,
        Err(error) => return view.fail(api, ctx, error.into()).await,
    };
    let readiness = ctx.target_readiness(&alias);
    let (actions, verdict) = plan_alias(&intent, &[], readiness, &observed);
    let executed = ctx
        .execute(
            &mut engine,
            &alias.object_ref(&()),
            actions,
            intent.bound.as_deref(),
            false,
        )
        .await;
    hint_collections(
        ctx,
        &alias,
        &touched_collections(&executed, &observed, &intent),
    );
    if let Some((_, error)) = executed.failure {
        return view.fail(api, ctx, error.into()).await;
    }
    match verdict {
        Verdict::Released => {
            released(&alias, ctx, &key);
            Ok(Requeue::await_change())
        }
        Verdict::NotReady { reason, message } => {
            let outcome = Outcome::Planned {
                verdict: Verdict::NotReady {
                    reason,
                    message: message.clone(),
                },
                ready_message: String::new(),
            };
            let status = alias_status(&alias, &outcome, None, ctx.now());
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

fn released(alias: &CollectionAlias, ctx: &Context, key: &ObjectRef<CollectionAlias>) {
    ctx.alias_backoff.reset(key);
    if let Some(uid) = alias.uid() {
        ctx.remembered.forget_alias(&uid);
    }
    for rival in ctx.alias_claimants(alias) {
        ctx.hints.alias(ObjectRef::from_obj(&*rival));
    }
}

/// Aliases to requeue when `collection` changes (its readiness gates their switch, and
/// an alias bound to it reports it): those whose desired or bound target it is.
pub fn aliases_for_collection(
    ctx: &Context,
    collection: &Collection,
) -> Vec<ObjectRef<CollectionAlias>> {
    let namespace = collection.namespace().unwrap_or_default();
    let engine = ctx.engine_identity(&namespace, &collection.spec.coordinator_ref);
    let name = collection.engine_name();
    ctx.stores
        .aliases
        .state()
        .iter()
        .filter(|alias| {
            alias.spec.database == collection.spec.database
                && (alias.spec.collection == name
                    || alias.status.as_ref().and_then(|s| s.collection.as_deref())
                        == Some(name.as_str()))
                && ctx.engine_identity(
                    &alias.namespace().unwrap_or_default(),
                    &alias.spec.coordinator_ref,
                ) == engine
        })
        .map(|alias| ObjectRef::from_obj(&**alias))
        .collect()
}

/// Aliases to requeue when `coordinator` changes (e.g. becomes reachable).
pub fn aliases_for_coordinator(
    ctx: &Context,
    coordinator: &Coordinator,
) -> Vec<ObjectRef<CollectionAlias>> {
    let namespace = coordinator.namespace();
    let name = coordinator.name_any();
    ctx.stores
        .aliases
        .state()
        .iter()
        .filter(|alias| alias.namespace() == namespace && alias.spec.coordinator_ref.name == name)
        .map(|alias| ObjectRef::from_obj(&**alias))
        .collect()
}
