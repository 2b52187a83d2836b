//! The `Collection` controller, on the shared pass of [`super::pass`]: gather (the engine
//! collection of its name, rivals from the caches) → [`plan_collection`] → apply →
//! status. The pass runs inside kube's finalizer helper, so that `deletionPolicy: Delete`
//! runs before the resource disappears.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;

use std::time::Duration;

use kube::Resource;

use super::backoff::{Backoff, next_resync};
use super::context::{Context, Remembered};
use super::engine::{Engine, serving_action_name};
use super::error::Error;
use super::events::{EventSpec, failure_event};
use super::lookup;
use super::pass::{self, EngineResource, Executed};
use super::status::{Outcome, Truth, Wanted, collection_status, conditions, rfc3339_seconds};
use crate::client::ClientError;
use crate::crd::{
    Collection, CollectionStatus, CoordinatorRef, IndexSpec, IndexStatus, LoadPolicy, LoadSpec,
    LoadStateName, LoadStatus,
};
use crate::plan::serving::{
    CollectionServing, CollectionServingInput, ConditionVerdict, GATE_MIN_RECHECK, LoadState,
    ServingAction, ServingObservation, gate_recheck_after, plan_collection_serving,
};
use crate::plan::{Action, CollectionIntent, Observed, Seniority, Verdict, plan_collection};

/// Condition type: every declared index is built for all rows.
pub const INDEXED: &str = "Indexed";
/// Condition type: the engine has the collection loaded.
pub const LOADED: &str = "Loaded";
/// Condition type: exists, matches the spec, indexed for all rows, loaded.
pub const SERVING: &str = "Serving";

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "collection";

/// Reconciles one `Collection` (see [`super::pass`]).
pub async fn reconcile(collection: Arc<Collection>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    pass::reconcile(collection, ctx).await
}

/// Requeue after a failed pass (see [`pass::error_policy`]).
pub fn error_policy(collection: Arc<Collection>, error: &Error, ctx: Arc<Context>) -> Requeue {
    pass::error_policy(collection, error, ctx)
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

/// The serving side of a Collection pass (only for a collection that declares indexes or
/// a load policy).
#[derive(Default)]
pub struct ServingPass {
    /// What the engine reported before this pass's calls (`None`: the collection did not
    /// exist yet, so the next pass decides).
    pub observed: Option<ServingObservation>,
    /// An engine alias points to the collection.
    pub aliased: bool,
    /// A `CollectionAlias` names it as its target.
    pub awaited: bool,
    /// The decision, once the plan ran.
    pub decision: Option<CollectionServing>,
    /// The serving call that failed, with its error (later calls were not made).
    pub failure: Option<(&'static str, ClientError)>,
}

/// Everything a Collection pass decides on.
pub struct Gathered {
    /// Indexes and load, when declared.
    pub serving: Option<ServingPass>,
    /// The resource's wish.
    pub intent: CollectionIntent,
    /// The engine collection of that name.
    pub observed: Observed,
    /// Seniority of the other resources claiming the same engine collection (none when
    /// deleting).
    pub rivals: Vec<Seniority>,
    /// The clean-up pass.
    pub deleting: bool,
}

impl EngineResource for Collection {
    type Status = CollectionStatus;
    type Gathered = Gathered;
    const CONTROLLER: &'static str = CONTROLLER;
    const ENGINE_OBJECT: &'static str = "collection";

    fn coordinator_ref(&self) -> &CoordinatorRef {
        &self.spec.coordinator_ref
    }

    fn engine_object(&self) -> (String, String) {
        (self.spec.database.clone(), self.engine_name())
    }

    fn status_mut(&mut self) -> &mut Option<CollectionStatus> {
        &mut self.status
    }

    fn current_status(&self) -> Option<&CollectionStatus> {
        self.status.as_ref()
    }

    fn backoff(ctx: &Context) -> &Backoff<Self> {
        &ctx.collection_backoff
    }

    fn remembered(ctx: &Context) -> &Remembered<CollectionStatus> {
        &ctx.remembered_collections
    }

    fn wake_claimants(&self, ctx: &Context) {
        for rival in lookup::collection_claimants(&ctx.stores, self) {
            ctx.hints.collection(ObjectRef::from_obj(&*rival));
        }
    }

    async fn gather(
        &self,
        ctx: &Context,
        engine: &mut Engine,
        deleting: bool,
    ) -> Result<Gathered, Error> {
        let observed = engine.observe(&observation(self), &BTreeSet::new()).await?;
        let serving = if deleting || !self.spec.declares_serving() {
            None
        } else {
            let existing = observed
                .collections
                .get(&(self.spec.database.clone(), self.engine_name()));
            let serving_observed = match existing {
                Some(_) => Some(
                    engine
                        .serving(&self.spec.database, &self.engine_name())
                        .await?,
                ),
                None => None,
            };
            Some(ServingPass {
                observed: serving_observed,
                aliased: existing.is_some_and(|c| !c.aliases.is_empty()),
                awaited: lookup::awaited_by_alias(&ctx.stores, self),
                ..Default::default()
            })
        };
        Ok(Gathered {
            serving,
            intent: CollectionIntent::from_resource(self),
            observed,
            rivals: if deleting {
                Vec::new()
            } else {
                lookup::collection_rivals(&ctx.stores, self)
            },
            deleting,
        })
    }

    fn plan(gathered: &Gathered) -> (Vec<Action>, Verdict) {
        plan_collection(&gathered.intent, &gathered.rivals, &gathered.observed)
    }

    fn recorded(gathered: &Gathered) -> Option<String> {
        gathered.intent.owned_id.map(|id| id.to_string())
    }

    fn paused(gathered: &Gathered) -> bool {
        gathered.intent.paused
    }

    /// Indexes and load, decided with the plan's verdict and run after its actions, an
    /// Event each.
    async fn follow_up(
        &self,
        ctx: &Context,
        engine: &mut Engine,
        gathered: &mut Gathered,
        verdict: &mut Verdict,
        executed: &Executed,
    ) {
        let Some(serving) = gathered.serving.as_mut() else {
            return;
        };
        let Some(observed) = serving.observed.as_ref() else {
            return;
        };
        if executed.failure.is_some() {
            return;
        }
        let load = self.spec.load.as_ref();
        let release_at = self
            .status
            .as_ref()
            .and_then(|status| status.load.as_ref())
            .and_then(|load| load.release_at.as_deref())
            .and_then(|at| at.parse::<Timestamp>().ok());
        let decision = plan_collection_serving(&CollectionServingInput {
            ready: *verdict == Verdict::Ready,
            declared: &self.spec.indexes,
            load,
            release_delay: load
                .map(LoadSpec::release_delay_duration)
                .unwrap_or_default(),
            observed,
            aliased: serving.aliased,
            awaited: serving.awaited,
            release_at,
            now: ctx.now(),
        });
        let regarding = self.object_ref(&());
        let (database, name) = (self.spec.database.clone(), self.engine_name());
        for action in &decision.actions {
            let rpc = serving_action_name(action);
            match engine.apply_serving(&database, &name, action).await {
                Ok(()) => {
                    let event = serving_event(action, &database, &name);
                    tracing::info!(collection = %name, reason = %event.reason, "{}", event.note);
                    ctx.metrics.mutation(rpc);
                    ctx.publish(&event, &regarding).await;
                }
                Err(error) => {
                    tracing::warn!(collection = %name, %error, "serving call failed");
                    ctx.publish(&failure_event(rpc, &error), &regarding).await;
                    serving.failure = Some((rpc, error));
                    break;
                }
            }
        }
        serving.decision = Some(decision);
    }

    fn status(
        &self,
        gathered: &Gathered,
        verdict: &Verdict,
        executed: &Executed,
        now: Timestamp,
    ) -> CollectionStatus {
        let mut status = self.base_status(gathered, verdict, executed, now);
        if let Some(serving) = &gathered.serving {
            serving_status(self, &mut status, serving, now);
        }
        status
    }

    fn failed_status(&self, outcome: &Outcome, now: Timestamp) -> CollectionStatus {
        collection_status(self, outcome, None, None, now)
    }

    fn requeue_after(&self, ctx: &Context, _verdict: &Verdict, gathered: &Gathered) -> Duration {
        Self::backoff(ctx).reset(&ObjectRef::from_obj(self));
        let resync = next_resync(self, ctx.settings.resync_interval);
        match &gathered.serving {
            Some(serving) => {
                serving_recheck(self, serving, ctx.now()).map_or(resync, |r| r.min(resync))
            }
            None => resync,
        }
    }
}

impl Collection {
    fn base_status(
        &self,
        gathered: &Gathered,
        verdict: &Verdict,
        executed: &Executed,
        now: Timestamp,
    ) -> CollectionStatus {
        let Gathered {
            intent, observed, ..
        } = gathered;
        // A clean-up that is held back still owns the collection it recorded.
        let owned = if gathered.deleting {
            owned_after(intent, &Verdict::Ready, observed, executed)
        } else {
            owned_after(intent, verdict, observed, executed)
        };
        let (outcome, aliases) = match &executed.failure {
            Some((_, error)) => (Outcome::engine_failure(error), None),
            None => (
                Outcome::Planned {
                    ready_message: ready_message(intent, owned),
                    verdict: verdict.clone(),
                },
                Some(aliases_after(intent, observed, owned)),
            ),
        };
        collection_status(self, &outcome, owned, aliases, now)
    }
}

/// The Event of a serving call that succeeded.
fn serving_event(action: &ServingAction, database: &str, name: &str) -> EventSpec {
    let rpc = serving_action_name(action);
    match action {
        ServingAction::CreateIndex(index) => EventSpec::normal(
            "IndexCreated",
            rpc,
            format!(
                "created index {} ({}) on field {} of collection {name} in database {database}",
                index.engine_name(),
                index.index_type,
                index.field_name
            ),
        ),
        ServingAction::LoadCollection { .. } => EventSpec::normal(
            "LoadRequested",
            rpc,
            format!("requested the load of collection {name} in database {database}"),
        ),
        ServingAction::ReleaseCollection => EventSpec::normal(
            "Released",
            rpc,
            format!(
                "released collection {name} in database {database}: no alias has pointed to \
                 it for the release delay"
            ),
        ),
    }
}

/// Writes indexes, load, row count and the `Indexed`/`Loaded`/`Serving` conditions.
fn serving_status(
    collection: &Collection,
    status: &mut CollectionStatus,
    serving: &ServingPass,
    now: Timestamp,
) {
    let previous = collection.status.clone().unwrap_or_default();
    let generation = collection.metadata.generation;
    let mut wanted = Vec::new();
    let mut want = |type_: &'static str, verdict: &ConditionVerdict| {
        let truth = if verdict.status {
            Truth::True
        } else {
            Truth::False
        };
        wanted.push(Wanted::new(
            type_,
            truth,
            verdict.reason,
            verdict.message.clone(),
        ));
    };
    match (&serving.decision, &serving.observed) {
        (Some(decision), Some(observed)) => {
            if let Some(indexed) = &decision.indexed {
                want(INDEXED, indexed);
            }
            if let Some(loaded) = &decision.loaded {
                want(LOADED, loaded);
            }
            match &serving.failure {
                Some((rpc, error)) => want(
                    SERVING,
                    &ConditionVerdict {
                        status: false,
                        reason: "EngineError",
                        message: format!("{rpc}: {error}"),
                    },
                ),
                None => want(SERVING, &decision.serving),
            }
            status.indexes = index_statuses(&collection.spec.indexes, observed);
            status.load = Some(LoadStatus {
                state: match observed.load {
                    LoadState::Loaded => LoadStateName::Loaded,
                    LoadState::Loading => LoadStateName::Loading,
                    LoadState::NotLoad | LoadState::NotExist => LoadStateName::NotLoad,
                },
                progress: observed.load_progress,
                release_at: decision.release_at.map(rfc3339_seconds),
            });
            status.row_count = Some(observed.row_count);
        }
        _ => {
            let why = ConditionVerdict {
                status: false,
                reason: "NotReady",
                message: "the engine collection does not exist yet (see Ready)".to_string(),
            };
            if !collection.spec.indexes.is_empty() {
                want(INDEXED, &why);
            }
            if collection
                .spec
                .load
                .as_ref()
                .is_some_and(|l| l.policy != LoadPolicy::Never)
            {
                want(LOADED, &why);
            }
            want(SERVING, &why);
        }
    }
    status
        .conditions
        .extend(conditions(&previous.conditions, &wanted, generation, now));
}

/// `status.indexes`: each declared index as the engine describes it (`Missing` before
/// CreateIndex).
fn index_statuses(declared: &[IndexSpec], observed: &ServingObservation) -> Vec<IndexStatus> {
    declared
        .iter()
        .map(|spec| match observed.index_for(spec) {
            Some(index) => IndexStatus {
                name: index.name.clone(),
                field: index.field.clone(),
                state: index.state.as_str().to_string(),
                indexed_rows: index.indexed_rows,
                total_rows: index.total_rows,
                pending_rows: index.pending_rows,
                fail_reason: (!index.fail_reason.is_empty()).then(|| index.fail_reason.clone()),
            },
            None => IndexStatus {
                name: spec.engine_name().to_string(),
                field: spec.field_name.clone(),
                state: "Missing".to_string(),
                ..Default::default()
            },
        })
        .collect()
}

/// When to look again at a collection whose serving state is in motion: a release
/// falling due, or (not serving yet) an index building or a load in progress, checked
/// like a waiting alias's gate (every 5 s at first, backing off with the time waited
/// since `Serving` last changed).
fn serving_recheck(
    collection: &Collection,
    serving: &ServingPass,
    now: Timestamp,
) -> Option<Duration> {
    let Some(decision) = &serving.decision else {
        // Not created before this pass: its indexes and load are decided in the next one.
        return Some(GATE_MIN_RECHECK);
    };
    let in_motion = (!decision.serving.status
        && (!decision.actions.is_empty()
            || decision
                .indexed
                .as_ref()
                .is_some_and(|i| !i.status && i.reason == "IndexBuilding")
            || decision
                .loaded
                .as_ref()
                .is_some_and(|l| l.reason == "Loading")))
        || serving.failure.is_some();
    let motion = in_motion.then(|| {
        let since = collection
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == SERVING))
            .map(|c| c.last_transition_time.0)
            .unwrap_or(now);
        let waited = now.duration_since(since).try_into().unwrap_or_default();
        gate_recheck_after(waited)
    });
    [motion, decision.recheck_after].into_iter().flatten().min()
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
