//! The `CollectionAlias` controller, on the shared pass of [`super::pass`]: gather (the
//! engine's view of the alias and its target, rivals and the target `Collection`'s
//! readiness from the caches) → [`plan_alias`] → apply → status (bound target, previous
//! target, history).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;

use super::backoff::{Backoff, next_resync, resync_interval};
use super::context::{Context, Remembered};
use super::engine::Engine;
use super::error::Error;
use super::lookup;
use super::pass::{self, EngineResource, Executed};
use super::status::{Outcome, alias_status};
use crate::crd::{Collection, CollectionAlias, CollectionAliasStatus, Coordinator, CoordinatorRef};
use crate::plan::{
    Action, AliasIntent, Observed, Reason, Seniority, TargetReadiness, Verdict, plan_alias,
};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "collectionalias";

/// Reconciles one `CollectionAlias` (see [`super::pass`]).
pub async fn reconcile(alias: Arc<CollectionAlias>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    pass::reconcile(alias, ctx).await
}

/// Requeue after a failed pass (see [`pass::error_policy`]).
pub fn error_policy(alias: Arc<CollectionAlias>, error: &Error, ctx: Arc<Context>) -> Requeue {
    pass::error_policy(alias, error, ctx)
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
        for collection in lookup::collections_named(
            &ctx.stores,
            &namespace,
            &alias.spec.coordinator_ref,
            &alias.spec.database,
            name,
        ) {
            ctx.hints.collection(ObjectRef::from_obj(&*collection));
        }
    }
}

/// Everything an alias pass decides on.
pub struct Gathered {
    /// The resource's wish.
    pub intent: AliasIntent,
    /// The alias, its desired target and a collection named like the alias, in the engine.
    pub observed: Observed,
    /// Seniority of the other resources claiming the same engine alias (none when deleting).
    pub rivals: Vec<Seniority>,
    /// Whether the `Collection` managing the target is Ready.
    pub readiness: TargetReadiness,
    /// The clean-up pass.
    pub deleting: bool,
}

impl EngineResource for CollectionAlias {
    type Status = CollectionAliasStatus;
    type Gathered = Gathered;
    const CONTROLLER: &'static str = CONTROLLER;
    const ENGINE_OBJECT: &'static str = "alias";

    fn coordinator_ref(&self) -> &CoordinatorRef {
        &self.spec.coordinator_ref
    }

    fn engine_object(&self) -> (String, String) {
        (self.spec.database.clone(), self.engine_name())
    }

    fn status_mut(&mut self) -> &mut Option<CollectionAliasStatus> {
        &mut self.status
    }

    fn current_status(&self) -> Option<&CollectionAliasStatus> {
        self.status.as_ref()
    }

    fn backoff(ctx: &Context) -> &Backoff<Self> {
        &ctx.alias_backoff
    }

    fn remembered(ctx: &Context) -> &Remembered<CollectionAliasStatus> {
        &ctx.remembered_aliases
    }

    fn wake_claimants(&self, ctx: &Context) {
        for rival in lookup::alias_claimants(&ctx.stores, self) {
            ctx.hints.alias(ObjectRef::from_obj(&*rival));
        }
    }

    async fn gather(
        &self,
        ctx: &Context,
        engine: &mut Engine,
        deleting: bool,
    ) -> Result<Gathered, Error> {
        let (collections, aliases) = observation(self);
        let observed = engine.observe(&collections, &aliases).await?;
        Ok(Gathered {
            intent: AliasIntent::from_resource(self),
            observed,
            rivals: if deleting {
                Vec::new()
            } else {
                lookup::alias_rivals(&ctx.stores, self)
            },
            readiness: lookup::target_readiness(&ctx.stores, self),
            deleting,
        })
    }

    fn plan(gathered: &Gathered) -> (Vec<Action>, Verdict) {
        plan_alias(
            &gathered.intent,
            &gathered.rivals,
            gathered.readiness,
            &gathered.observed,
        )
    }

    fn recorded(gathered: &Gathered) -> Option<String> {
        gathered.intent.bound.clone()
    }

    fn paused(gathered: &Gathered) -> bool {
        gathered.intent.paused
    }

    fn applied(&self, ctx: &Context, gathered: &Gathered, executed: &Executed) {
        let touched = touched_collections(executed, &gathered.observed, &gathered.intent);
        hint_collections(ctx, self, &touched);
    }

    fn status(
        &self,
        gathered: &Gathered,
        verdict: &Verdict,
        executed: &Executed,
        now: Timestamp,
    ) -> CollectionAliasStatus {
        let intent = &gathered.intent;
        // A clean-up that is held back binds nothing new.
        let bound = if gathered.deleting {
            None
        } else {
            bound_after(intent, verdict, executed)
        };
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
        alias_status(self, &outcome, bound, now)
    }

    fn failed_status(&self, outcome: &Outcome, now: Timestamp) -> CollectionAliasStatus {
        alias_status(self, outcome, None, now)
    }

    fn requeue_after(&self, ctx: &Context, verdict: &Verdict, _gathered: &Gathered) -> Duration {
        let key = ObjectRef::from_obj(self);
        match verdict {
            // A target that only has to appear in the engine is polled, with a growing
            // delay; a target managed by a Collection also requeues when that one changes.
            Verdict::NotReady {
                reason: Reason::WaitingForTarget,
                ..
            } => ctx
                .alias_backoff
                .next(&key)
                .min(resync_interval(self, ctx.settings.resync_interval)),
            _ => {
                ctx.alias_backoff.reset(&key);
                next_resync(self, ctx.settings.resync_interval)
            }
        }
    }
}

/// Aliases to requeue when `collection` changes (its readiness gates their switch, and
/// an alias bound to it reports it): those whose desired or bound target it is.
pub fn aliases_for_collection(
    ctx: &Context,
    collection: &Collection,
) -> Vec<ObjectRef<CollectionAlias>> {
    let namespace = collection.namespace().unwrap_or_default();
    let engine = lookup::engine_identity(&ctx.stores, &namespace, &collection.spec.coordinator_ref);
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
                && lookup::engine_identity(
                    &ctx.stores,
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
