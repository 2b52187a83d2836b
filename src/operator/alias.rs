//! The `CollectionAlias` controller, on the shared pass of [`super::pass`]: gather (the
//! engine's view of the alias and its target, rivals and the target `Collection`'s
//! readiness from the caches) → [`plan_alias`] → apply → status (bound target, previous
//! target, history).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::backoff::{Backoff, next_resync, resync_interval};
use super::context::{Context, Remembered};
use super::engine::Engine;
use super::error::Error;
use super::events::EventSpec;
use super::lookup;
use super::pass::{self, EngineResource, Executed};
use super::status::{Outcome, alias_status, rfc3339_seconds};
use crate::crd::{
    Collection, CollectionAlias, CollectionAliasStatus, Coordinator, CoordinatorRef, LoadPolicy,
    SwitchPolicy,
};
use crate::plan::serving::{
    Gate, GateCurrent, GateTarget, LoadState, ServingObservation, gate, gate_recheck_after,
    hold_alias,
};
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
    /// The target the engine alias points to now.
    pub current: Option<String>,
    /// The serving gate of a move (create or swap) under `WhenTargetServing` or with
    /// guards; `None` when nothing moves or nothing is gated.
    pub gate: Option<Gate>,
    /// After a swap: whether the engine confirmed it (DescribeAlias, and DescribeCollection
    /// through the alias giving the target's collection ID).
    pub verified: Option<bool>,
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
        let intent = AliasIntent::from_resource(self);
        let readiness = lookup::target_readiness(&ctx.stores, self);
        let current = observed
            .aliases
            .get(&(intent.database.clone(), intent.alias.clone()))
            .cloned();
        let gated =
            intent.switch_policy == SwitchPolicy::WhenTargetServing || self.spec.guards.is_some();
        // A move the spec asks for; putting back an alias moved outside the operator to
        // the target it is bound to is drift correction, not a swap, and is not gated.
        let moving = current.as_deref() != Some(intent.target.as_str())
            && intent.bound.as_deref() != Some(intent.target.as_str());
        let gate = if deleting || intent.paused || !gated || !moving {
            None
        } else {
            Some(
                self.read_gate(ctx, engine, &observed, readiness, current.as_deref())
                    .await?,
            )
        };
        Ok(Gathered {
            intent,
            observed,
            rivals: if deleting {
                Vec::new()
            } else {
                lookup::alias_rivals(&ctx.stores, self)
            },
            readiness,
            current,
            gate,
            verified: None,
            deleting,
        })
    }

    fn plan(gathered: &Gathered) -> (Vec<Action>, Verdict) {
        let planned = plan_alias(
            &gathered.intent,
            &gathered.rivals,
            gathered.readiness,
            &gathered.observed,
        );
        match &gathered.gate {
            Some(gate) => hold_alias(&gathered.intent, planned, gate),
            None => planned,
        }
    }

    fn recorded(gathered: &Gathered) -> Option<String> {
        gathered.intent.bound.clone()
    }

    fn paused(gathered: &Gathered) -> bool {
        gathered.intent.paused
    }

    fn applied(&self, ctx: &Context, gathered: &Gathered, executed: &Executed) {
        let mut touched = touched_collections(executed, &gathered.observed, &gathered.intent);
        // A target the alias waits for may have to be loaded (`WhileAliased`).
        if matches!(gathered.gate, Some(Gate::Wait { .. })) {
            touched.insert(gathered.intent.target.clone());
        }
        hint_collections(ctx, self, &touched);
    }

    /// A swap is Ready only once the engine confirms it; a gate that a guard holds shut,
    /// and a swap the engine does not confirm, are announced with a Warning.
    async fn follow_up(
        &self,
        ctx: &Context,
        engine: &mut Engine,
        gathered: &mut Gathered,
        verdict: &mut Verdict,
        executed: &Executed,
    ) {
        let regarding = self.object_ref(&());
        if let Verdict::NotReady {
            reason: Reason::SwapBlocked,
            message,
        } = &*verdict
        {
            if !already_blocked_by(self, message) {
                ctx.publish(
                    &EventSpec::warning("SwapBlocked", "AlterAlias", message.clone()),
                    &regarding,
                )
                .await;
            }
            return;
        }
        if executed.failure.is_some() {
            return;
        }
        let intent = &gathered.intent;
        let swapped = intent.bound.as_deref() != Some(intent.target.as_str())
            && executed.applied.iter().any(
                |(action, _)| matches!(action, Action::AlterAlias { to, .. } if *to == intent.target),
            );
        let unverified = self
            .status
            .as_ref()
            .and_then(|status| status.unverified_swap())
            .is_some_and(|swap| swap.to == intent.target);
        let retry = unverified && *verdict == Verdict::Ready;
        if !(swapped || retry) {
            return;
        }
        let expected_id = gathered
            .observed
            .collections
            .get(&(intent.database.clone(), intent.target.clone()))
            .map(|collection| collection.id);
        let confirmed = confirm_swap(engine, intent, expected_id).await;
        gathered.verified = Some(confirmed.is_ok());
        if let Err(message) = confirmed {
            tracing::warn!(alias = %intent.alias, "{message}");
            // Announced when the swap is made; the rechecks that follow only update status.
            if swapped {
                ctx.publish(
                    &EventSpec::warning("SwapUnconfirmed", "AlterAlias", message.clone()),
                    &regarding,
                )
                .await;
            }
            *verdict = Verdict::NotReady {
                reason: Reason::WaitingForTarget,
                message,
            };
        }
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
        let mut status = alias_status(self, &outcome, bound, now);
        record_swap(&mut status, gathered, executed, &rfc3339_seconds(now));
        status
    }

    fn failed_status(&self, outcome: &Outcome, now: Timestamp) -> CollectionAliasStatus {
        alias_status(self, outcome, None, now)
    }

    fn requeue_after(&self, ctx: &Context, verdict: &Verdict, gathered: &Gathered) -> Duration {
        let key = ObjectRef::from_obj(self);
        let gate_shut = gathered
            .gate
            .as_ref()
            .is_some_and(|gate| *gate != Gate::Swap);
        let unverified = gathered.verified == Some(false);
        if gate_shut || unverified {
            // Each check is a round of engine reads: at most one per 5 s, backing off
            // with the time the swap has waited.
            ctx.alias_backoff.reset(&key);
            let waited = self
                .status
                .as_ref()
                .and_then(|status| status.last_swap.as_ref())
                .filter(|swap| swap.to == gathered.intent.target)
                .and_then(|swap| swap.requested_at.parse::<Timestamp>().ok())
                .and_then(|at| ctx.now().duration_since(at).try_into().ok())
                .unwrap_or_default();
            return gate_recheck_after(waited)
                .min(resync_interval(self, ctx.settings.resync_interval));
        }
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

impl CollectionAlias {
    /// One round of serving reads for the gate: the target's and the current target's
    /// indexes, load and rows, with the target's `Collection` from the caches.
    async fn read_gate(
        &self,
        ctx: &Context,
        engine: &mut Engine,
        observed: &Observed,
        readiness: TargetReadiness,
        current: Option<&str>,
    ) -> Result<Gate, Error> {
        let database = &self.spec.database;
        let target_name = &self.spec.collection;
        let exists = observed
            .collections
            .contains_key(&(database.clone(), target_name.clone()));
        // The two reads are independent: run them at once on the shared connection (a
        // swap waits for the gate, so its latency is the slower read, not the sum).
        let mut current_engine = engine.clone();
        let (target_observed, current_observed) = tokio::join!(
            async {
                if exists {
                    engine.serving(database, target_name).await
                } else {
                    Ok(ServingObservation::default())
                }
            },
            async {
                match current {
                    Some(name) => current_engine.serving(database, name).await.map(Some),
                    None => Ok(None),
                }
            },
        );
        let (target_observed, current_observed) = (target_observed?, current_observed?);
        let managing = lookup::collections_named(
            &ctx.stores,
            &self.namespace().unwrap_or_default(),
            &self.spec.coordinator_ref,
            database,
            target_name,
        )
        .into_iter()
        .find(|c| c.metadata.deletion_timestamp.is_none());
        let target = GateTarget {
            name: target_name,
            exists,
            matches_spec: readiness != TargetReadiness::NotReady,
            declared: managing.as_ref().map(|c| c.spec.indexes.as_slice()),
            load_managed: managing.as_ref().is_some_and(|c| {
                c.spec
                    .load
                    .as_ref()
                    .is_some_and(|load| load.policy != LoadPolicy::Never)
            }),
            observed: &target_observed,
        };
        let current = current
            .zip(current_observed.as_ref())
            .map(|(name, observation)| GateCurrent {
                name,
                loaded: observation.load == LoadState::Loaded,
                row_count: observation.row_count,
            });
        Ok(gate(
            self.spec.switch_policy,
            &target,
            current.as_ref(),
            self.spec.guards.as_ref(),
        ))
    }
}

/// Whether the status already reports the swap blocked for the same reason as `message`:
/// the Warning Event is published once per distinct reason, not at every recheck while
/// the gate stays shut. Numbers do not make a reason distinct (row counts grow while a
/// target fills); the status message still carries the latest ones.
fn already_blocked_by(alias: &CollectionAlias, message: &str) -> bool {
    let reason_of = |text: &str| -> String {
        text.chars()
            .filter(|c| !c.is_ascii_digit() && *c != ',' && *c != '.')
            .collect()
    };
    alias.status.as_ref().is_some_and(|status| {
        status.conditions.iter().any(|condition| {
            condition.type_ == super::status::READY
                && condition.reason == Reason::SwapBlocked.as_str()
                && reason_of(&condition.message) == reason_of(message)
        })
    })
}

/// Reads the alias back after a swap: DescribeAlias names the target, and DescribeCollection
/// through the alias answers with the target's name and collection ID. `Err`: what the
/// engine said instead.
async fn confirm_swap(
    engine: &mut Engine,
    intent: &AliasIntent,
    expected_id: Option<i64>,
) -> Result<(), String> {
    let unconfirmed = |what: String| {
        format!(
            "alias {} in database {} was moved to {}, but the engine does not confirm it yet: \
             {what}",
            intent.alias, intent.database, intent.target
        )
    };
    // Both reads at once on the shared connection: the swap is Ready one round trip
    // sooner.
    let mut resolving = engine.clone();
    let (target, resolved) = tokio::join!(
        engine.alias_target(&intent.database, &intent.alias),
        resolving.resolve(&intent.database, &intent.alias),
    );
    let target = target.map_err(|error| unconfirmed(format!("DescribeAlias failed: {error}")))?;
    if target.as_deref() != Some(intent.target.as_str()) {
        return Err(unconfirmed(format!(
            "DescribeAlias answers {}",
            target.as_deref().unwrap_or("no alias")
        )));
    }
    let resolved =
        resolved.map_err(|error| unconfirmed(format!("DescribeCollection failed: {error}")))?;
    match resolved {
        Some((name, id)) if name == intent.target && expected_id.is_none_or(|e| e == id) => Ok(()),
        Some((name, id)) => Err(unconfirmed(format!(
            "DescribeCollection through the alias answers {name} (ID {id}), expected ID {}",
            expected_id.map_or("unknown".to_string(), |id| id.to_string())
        ))),
        None => Err(unconfirmed(
            "DescribeCollection through the alias finds no collection".to_string(),
        )),
    }
}

/// `status.lastSwap`: a swap the gate holds is requested (the wait starts), an AlterAlias
/// applied, a read-back verified.
fn record_swap(
    status: &mut CollectionAliasStatus,
    gathered: &Gathered,
    executed: &Executed,
    now: &str,
) {
    let target = &gathered.intent.target;
    if let (Some(gate), Some(current)) = (&gathered.gate, &gathered.current)
        && *gate != Gate::Swap
        && current != target
    {
        status.swap_requested(current, target, now);
    }
    if gathered.intent.bound.as_deref() != Some(target.as_str()) {
        for (action, _) in &executed.applied {
            if let Action::AlterAlias { from, to, .. } = action {
                status.swap_applied(from, to, now);
            }
        }
    }
    if gathered.verified == Some(true) {
        status.swap_verified(target, now);
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
