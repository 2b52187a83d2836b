//! The serving gate in `up` and `plan`: the same pure decisions as the Kubernetes
//! controllers ([`crate::plan::serving`]), fed with one round of engine reads per pass.
//!
//! A pass plans the names as usual ([`super::reconcile`]), then:
//! 1. reads indexes, load state and row count ([`EngineClient::serving`]) of the collections
//!    that declare indexes or a load policy, and of the targets (and current targets) of the
//!    aliases about to be created or moved under `WhenTargetServing` or with `guards`;
//! 2. holds back every alias create or move whose [`gate`] is not [`Gate::Swap`] (the alias
//!    keeps serving its old target; the gate names what it waits for, with figures);
//! 3. decides each declared collection's indexes and load ([`plan_collection_serving`])
//!    with the aliases as they will be once the plan is applied, so a `WhileAliased`
//!    release is scheduled in the very pass the last alias leaves, and cancelled in the
//!    pass one comes back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;

use super::reconcile::{CONCURRENCY, Intents, Name, unrun_as_errors};
use crate::client::{ClientError, EngineClient};
use crate::crd::{LoadPolicy, SwitchPolicy};
use crate::plan::serving::{
    CollectionServing, CollectionServingInput, Gate, GateCurrent, GateTarget, LoadState,
    ServingAction, ServingObservation, gate, hold_swaps, plan_collection_serving,
};
use crate::plan::{Action, ObjectKey, Observed, Plan, Verdict};

/// What the engine reported for the collections of one pass, by (database, name).
pub type ServingObservations = BTreeMap<Name, ServingObservation>;

/// The serving side of one pass.
#[derive(Debug, Clone, Default)]
pub struct ServingPlan {
    /// Per alias resource (plan key) whose create or move was checked: the gate's decision.
    /// Anything but [`Gate::Swap`] means its action was taken out of the plan.
    pub gates: BTreeMap<ObjectKey, (String, Gate)>,
    /// Per declared `Collection` (plan key): indexes, load, conditions.
    pub collections: BTreeMap<ObjectKey, CollectionServing>,
    /// Engine calls for indexes and load, in order: (collection key, database, name, call).
    pub actions: Vec<(ObjectKey, String, String, ServingAction)>,
    /// A declared collection could not be decided yet (it does not exist before this
    /// pass): the next pass should come soon.
    pub pending: bool,
}

impl ServingPlan {
    /// Whether something is still in motion that no file event will announce: a gate
    /// waiting or blocked, an index building, a load in progress, a call to make.
    pub fn waiting(&self) -> bool {
        self.pending
            || !self.actions.is_empty()
            || self
                .gates
                .values()
                .any(|(_, gate)| !matches!(gate, Gate::Swap))
            || self.collections.values().any(|c| {
                c.indexed.as_ref().is_some_and(|i| !i.status)
                    || c.loaded.as_ref().is_some_and(|l| l.reason == "Loading")
            })
    }

    /// The earliest scheduled recheck (a release falling due).
    pub fn wake(&self) -> Option<Duration> {
        self.collections
            .values()
            .filter_map(|c| c.recheck_after)
            .min()
    }

    /// The SERVING cell of a declared collection: `Serving (2,000 rows)` or the reason
    /// and what is missing; `-` for a collection that declares neither indexes nor load.
    pub fn collection_text(&self, key: &ObjectKey) -> String {
        let Some(decision) = self.collections.get(key) else {
            return "-".to_string();
        };
        let serving = &decision.serving;
        let mut text = format!("{}: {}", serving.reason, serving.message);
        if let Some(loaded) = &decision.loaded
            && loaded.reason == "ReleaseScheduled"
        {
            text.push_str(&format!("; {}", loaded.message));
        }
        text
    }
}

/// The alias action of a resource in the plan (CreateAlias or AlterAlias), if any.
fn alias_move(plan: &Plan, key: &ObjectKey) -> Option<usize> {
    plan.actions.iter().position(|action| match action {
        Action::CreateAlias { key: k, .. } | Action::AlterAlias { key: k, .. } => k == key,
        _ => false,
    })
}

/// The (database, name) pairs whose serving state a pass reads.
pub fn names_to_observe(intents: &Intents, observed: &Observed, plan: &Plan) -> BTreeSet<Name> {
    let mut names = BTreeSet::new();
    for intent in &intents.collections {
        if !intent.deleting && intent.spec.declares_serving() {
            names.insert((intent.database.clone(), intent.name.clone()));
        }
    }
    for intent in &intents.aliases {
        let gated = intent.switch_policy == SwitchPolicy::WhenTargetServing
            || intents.guards(&intent.key).is_some();
        if intent.deleting || !gated || alias_move(plan, &intent.key).is_none() {
            continue;
        }
        names.insert((intent.database.clone(), intent.target.clone()));
        if let Some(current) = observed
            .aliases
            .get(&(intent.database.clone(), intent.alias.clone()))
        {
            names.insert((intent.database.clone(), current.clone()));
        }
    }
    // Only what exists can be read.
    names.retain(|name| observed.collections.contains_key(name));
    names
}

/// One round of serving reads for `names`, with up to [`CONCURRENCY`] in flight.
pub async fn observe(
    client: &EngineClient,
    names: BTreeSet<Name>,
) -> Result<ServingObservations, ClientError> {
    let mut found = futures::stream::iter(names)
        .map(|(database, name)| {
            let mut client = client.clone();
            async move {
                let observation = client.serving(&database, &name).await?;
                Ok::<_, ClientError>(((database, name), observation))
            }
        })
        .buffer_unordered(CONCURRENCY);
    let mut observations = ServingObservations::new();
    while let Some(result) = found.next().await {
        let (name, observation) = result?;
        observations.insert(name, observation);
    }
    Ok(observations)
}

/// Steps 2 and 3 of a pass (see the module docs): takes held alias moves out of `plan`
/// and returns the gates, the collections' serving decisions and their engine calls.
/// `release_at` is each declared collection's recorded release time (its
/// `status.load.releaseAt`; `plan` has none).
pub fn decide(
    intents: &Intents,
    observed: &Observed,
    serving: &ServingObservations,
    plan: &mut Plan,
    release_at: &dyn Fn(&ObjectKey) -> Option<Timestamp>,
    now: Timestamp,
) -> ServingPlan {
    let mut result = ServingPlan::default();
    let managed: HashMap<Name, usize> = intents
        .collections
        .iter()
        .enumerate()
        .filter(|(_, intent)| !intent.deleting)
        .map(|(index, intent)| ((intent.database.clone(), intent.name.clone()), index))
        .collect();
    let empty = ServingObservation::default();

    // 2. The gates.
    for intent in &intents.aliases {
        if intent.deleting || alias_move(plan, &intent.key).is_none() {
            continue;
        }
        let guards = intents.guards(&intent.key);
        let target_name = (intent.database.clone(), intent.target.clone());
        let target_collection = managed.get(&target_name).map(|&i| &intents.collections[i]);
        let target_observed = serving.get(&target_name).unwrap_or(&empty);
        // A target this plan creates counts as existing, as in whole-set planning; it is
        // empty, so it passes only a gate that asks for nothing it lacks.
        let created_now = plan.actions.iter().any(|action| {
            matches!(action, Action::CreateCollection { database, name, .. }
                if *database == intent.database && *name == intent.target)
        });
        let target = GateTarget {
            name: &intent.target,
            exists: created_now || observed.collections.contains_key(&target_name),
            matches_spec: target_collection.is_none_or(|collection| {
                matches!(plan.verdicts.get(&collection.key), Some(Verdict::Ready))
            }),
            declared: target_collection.map(|collection| collection.spec.indexes.as_slice()),
            load_managed: target_collection.is_some_and(|collection| {
                collection
                    .spec
                    .load
                    .as_ref()
                    .is_some_and(|load| load.policy != LoadPolicy::Never)
            }),
            observed: target_observed,
        };
        let current_name = observed
            .aliases
            .get(&(intent.database.clone(), intent.alias.clone()));
        let current = current_name.map(|name| {
            let observation = serving
                .get(&(intent.database.clone(), name.clone()))
                .unwrap_or(&empty);
            GateCurrent {
                name,
                loaded: observation.load == LoadState::Loaded,
                row_count: observation.row_count,
            }
        });
        let decision = gate(intent.switch_policy, &target, current.as_ref(), guards);
        result
            .gates
            .insert(intent.key.clone(), (intent.target.clone(), decision));
    }
    // Held moves leave the plan (and so does a drop of the collection a held alias stays
    // on), with the planner's verdicts.
    let gates: BTreeMap<ObjectKey, Gate> = result
        .gates
        .iter()
        .map(|(key, (_, decision))| (key.clone(), decision.clone()))
        .collect();
    hold_swaps(plan, &intents.aliases, &gates);

    // The aliases as they will be once the plan is applied.
    let mut aliases_after: BTreeMap<Name, String> = observed.aliases.clone();
    for action in &plan.actions {
        match action {
            Action::CreateAlias {
                database,
                alias,
                target,
                ..
            }
            | Action::AdoptAlias {
                database,
                alias,
                target,
                ..
            } => {
                aliases_after.insert((database.clone(), alias.clone()), target.clone());
            }
            Action::AlterAlias {
                database,
                alias,
                to,
                ..
            } => {
                aliases_after.insert((database.clone(), alias.clone()), to.clone());
            }
            Action::DropAlias {
                database, alias, ..
            } => {
                aliases_after.remove(&(database.clone(), alias.clone()));
            }
            _ => {}
        }
    }
    let aliased: BTreeSet<Name> = aliases_after
        .iter()
        .map(|((database, _), target)| (database.clone(), target.clone()))
        .collect();
    let awaited: BTreeSet<Name> = intents
        .aliases
        .iter()
        .filter(|intent| !intent.deleting)
        .map(|intent| (intent.database.clone(), intent.target.clone()))
        .collect();

    // 3. Indexes and load of the declared collections.
    for intent in &intents.collections {
        if intent.deleting || !intent.spec.declares_serving() {
            continue;
        }
        let name = (intent.database.clone(), intent.name.clone());
        let Some(observation) = serving.get(&name) else {
            // Not created yet (or created in this pass): decided in the next pass.
            result.pending = true;
            continue;
        };
        let load = intent.spec.load.as_ref();
        let input = CollectionServingInput {
            ready: matches!(plan.verdicts.get(&intent.key), Some(Verdict::Ready)),
            declared: &intent.spec.indexes,
            load,
            release_delay: load
                .map(crate::crd::LoadSpec::release_delay_duration)
                .unwrap_or_default(),
            observed: observation,
            aliased: aliased.contains(&name),
            awaited: awaited.contains(&name),
            release_at: release_at(&intent.key),
            now,
        };
        let decision = plan_collection_serving(&input);
        for action in &decision.actions {
            result.actions.push((
                intent.key.clone(),
                intent.database.clone(),
                intent.name.clone(),
                action.clone(),
            ));
        }
        result.collections.insert(intent.key.clone(), decision);
    }
    result
}

/// Applies the serving calls concurrently (each collection's own calls in order: an index
/// before the load that needs it). Results are in call order.
pub async fn apply(
    client: &EngineClient,
    actions: &[(ObjectKey, String, String, ServingAction)],
) -> Vec<Result<(), ClientError>> {
    let mut by_collection: BTreeMap<Name, Vec<usize>> = BTreeMap::new();
    for (index, (_, database, name, _)) in actions.iter().enumerate() {
        by_collection
            .entry((database.clone(), name.clone()))
            .or_default()
            .push(index);
    }
    let mut results: Vec<Option<Result<(), ClientError>>> = vec![None; actions.len()];
    let mut running = futures::stream::iter(by_collection.into_values())
        .map(|indexes| {
            let mut client = client.clone();
            async move {
                let mut done = Vec::new();
                for index in indexes {
                    let (_, database, name, action) = &actions[index];
                    let result = client.apply_serving(database, name, action).await;
                    let failed = result.is_err();
                    done.push((index, result));
                    if failed {
                        break;
                    }
                }
                done
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(done) = running.next().await {
        for (index, result) in done {
            results[index] = Some(result);
        }
    }
    unrun_as_errors(
        results,
        client,
        "not run: an earlier call for the collection failed",
    )
}

/// The engine call's name, for error lines (`CreateIndex vec: ...`).
pub fn action_text(action: &ServingAction) -> String {
    match action {
        ServingAction::CreateIndex(index) => format!("CreateIndex {}", index.engine_name()),
        ServingAction::LoadCollection { .. } => "LoadCollection".to_string(),
        ServingAction::ReleaseCollection => "ReleaseCollection".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_delays_read_like_the_crd_pattern() {
        let of = |text: &str| {
            crate::crd::LoadSpec {
                release_delay: text.to_string(),
                ..Default::default()
            }
            .release_delay_duration()
        };
        assert_eq!(of("30s"), Duration::from_secs(30));
        assert_eq!(of("10m"), Duration::from_secs(600));
        assert_eq!(of("1h30m"), Duration::from_secs(5400));
        assert_eq!(of("500ms"), Duration::from_millis(500));
        assert_eq!(of("soon"), Duration::from_secs(600), "the CRD default");
    }
}
