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

use super::backoff::Backoff;
use super::context::{Context, Remembered};
use super::engine::Engine;
use super::error::Error;
use super::lookup;
use super::pass::{self, EngineResource, Executed};
use super::status::{Outcome, collection_status};
use crate::crd::{Collection, CollectionStatus, CoordinatorRef};
use crate::plan::{Action, CollectionIntent, Observed, Seniority, Verdict, plan_collection};

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

/// Everything a Collection pass decides on.
pub struct Gathered {
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
        Ok(Gathered {
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

    fn status(
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

    fn failed_status(&self, outcome: &Outcome, now: Timestamp) -> CollectionStatus {
        collection_status(self, outcome, None, None, now)
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
