//! Serving readiness: whether a collection can answer searches (indexes built for all rows,
//! loaded), what the operator does to get it there (CreateIndex, LoadCollection,
//! ReleaseCollection per `spec.load`), and the gate an alias passes before it moves.
//!
//! Pure like the rest of the planner: the caller passes what the engine reported and the
//! clock; nothing here reads either.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::{Action, AliasIntent, ObjectKey, Plan, Reason, Verdict};
use crate::crd::{IndexSpec, LoadPolicy, LoadSpec, SwapGuards, SwitchPolicy};

/// Build state of one index (Milvus `common.IndexState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexBuild {
    /// `IndexStateNone`.
    None,
    /// Queued.
    Unissued,
    /// Building.
    InProgress,
    /// Built for the segments it covers.
    Finished,
    /// The build failed (see the fail reason).
    Failed,
    /// The engine retries the build.
    Retry,
}

impl IndexBuild {
    /// The Milvus enum name, as `status.indexes[].state` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexBuild::None => "None",
            IndexBuild::Unissued => "Unissued",
            IndexBuild::InProgress => "InProgress",
            IndexBuild::Finished => "Finished",
            IndexBuild::Failed => "Failed",
            IndexBuild::Retry => "Retry",
        }
    }
}

/// One index as DescribeIndex reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedIndex {
    /// Index name.
    pub name: String,
    /// Indexed field.
    pub field: String,
    /// Build state.
    pub state: IndexBuild,
    /// Rows the index covers.
    pub indexed_rows: i64,
    /// Rows of the segments it must cover.
    pub total_rows: i64,
    /// Rows still waiting.
    pub pending_rows: i64,
    /// The engine's reason for a failed build (empty otherwise).
    pub fail_reason: String,
}

impl ObservedIndex {
    /// Built for every row the engine counts: `Finished`, nothing pending, nothing behind.
    pub fn built_for_all_rows(&self) -> bool {
        self.state == IndexBuild::Finished
            && self.pending_rows == 0
            && self.indexed_rows >= self.total_rows
    }

    /// What is missing, e.g. "index embedding 61 % built (610,000 of 1,000,000 rows,
    /// 390,000 pending)"; `None` when built for all rows.
    pub fn wait(&self) -> Option<String> {
        if self.built_for_all_rows() {
            return None;
        }
        let name = &self.name;
        Some(match self.state {
            IndexBuild::Failed => format!("index {name} failed: {}", self.fail_reason),
            _ => format!(
                "index {name} {} % built ({} of {} rows, {} pending; state {})",
                percent(self.indexed_rows, self.total_rows),
                thousands(self.indexed_rows),
                thousands(self.total_rows),
                thousands(self.pending_rows),
                self.state.as_str()
            ),
        })
    }
}

/// Load state (Milvus `common.LoadState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadState {
    /// The collection does not exist.
    NotExist,
    /// Not loaded.
    #[default]
    NotLoad,
    /// Loading.
    Loading,
    /// Loaded: searchable.
    Loaded,
}

impl LoadState {
    /// The Milvus enum name without its `LoadState` prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadState::NotExist => "NotExist",
            LoadState::NotLoad => "NotLoad",
            LoadState::Loading => "Loading",
            LoadState::Loaded => "Loaded",
        }
    }
}

/// What the engine reports about one collection's ability to serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServingObservation {
    /// Every index of the collection (DescribeIndex).
    pub indexes: Vec<ObservedIndex>,
    /// GetLoadState.
    pub load: LoadState,
    /// GetLoadingProgress in percent (0 unless loading or loaded).
    pub load_progress: i64,
    /// GetCollectionStatistics `row_count`.
    pub row_count: i64,
}

impl ServingObservation {
    /// The observed index for a declared one: by name, else by field (one per field).
    pub fn index_for(&self, declared: &IndexSpec) -> Option<&ObservedIndex> {
        self.indexes
            .iter()
            .find(|index| index.name == declared.engine_name())
            .or_else(|| {
                self.indexes
                    .iter()
                    .find(|index| index.field == declared.field_name)
            })
    }

    /// What keeps the indexes from serving: every declared index (`Some`) or, for a
    /// collection no resource manages (`None`), every index the engine has, must be built
    /// for all rows.
    pub fn index_waits(&self, declared: Option<&[IndexSpec]>) -> Vec<String> {
        match declared {
            Some(declared) => declared
                .iter()
                .filter_map(|spec| match self.index_for(spec) {
                    None => Some(format!(
                        "index {} on {} not created yet",
                        spec.engine_name(),
                        spec.field_name
                    )),
                    Some(index) => index.wait(),
                })
                .collect(),
            None => self
                .indexes
                .iter()
                .filter_map(ObservedIndex::wait)
                .collect(),
        }
    }

    /// What keeps the collection from being loaded, if anything.
    pub fn load_wait(&self) -> Option<String> {
        match self.load {
            LoadState::Loaded => None,
            LoadState::Loading => Some(format!("loading ({} %)", self.load_progress)),
            LoadState::NotLoad => Some("not loaded".to_string()),
            LoadState::NotExist => Some("does not exist".to_string()),
        }
    }
}

/// A condition as the planner decides it (`type` is given by where it is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionVerdict {
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable, with figures.
    pub message: String,
}

impl ConditionVerdict {
    fn truth(reason: &'static str, message: String) -> Self {
        Self {
            status: true,
            reason,
            message,
        }
    }

    fn falsity(reason: &'static str, message: String) -> Self {
        Self {
            status: false,
            reason,
            message,
        }
    }
}

/// An engine call for one collection's indexes and load.
#[derive(Debug, Clone, PartialEq)]
pub enum ServingAction {
    /// CreateIndex as declared.
    CreateIndex(IndexSpec),
    /// LoadCollection.
    LoadCollection {
        /// `replica_number` (engine default when `None`).
        replicas: Option<i32>,
        /// `resource_groups`.
        resource_groups: Vec<String>,
    },
    /// ReleaseCollection.
    ReleaseCollection,
}

/// What the Collection controller knows for one pass.
#[derive(Debug, Clone)]
pub struct CollectionServingInput<'a> {
    /// The engine object exists and matches the spec (the collection verdict is Ready).
    pub ready: bool,
    /// `spec.indexes`.
    pub declared: &'a [IndexSpec],
    /// `spec.load` (absent: `Never`).
    pub load: Option<&'a LoadSpec>,
    /// `spec.load.releaseDelay`, parsed.
    pub release_delay: Duration,
    /// The engine's answers (meaningful only when `ready`).
    pub observed: &'a ServingObservation,
    /// An engine alias points to the collection now.
    pub aliased: bool,
    /// A `CollectionAlias` wants to move to it (its `spec.collection` names it).
    pub awaited: bool,
    /// `status.load.releaseAt` as recorded.
    pub release_at: Option<Timestamp>,
    /// The clock.
    pub now: Timestamp,
}

/// The Collection controller's serving decision.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionServing {
    /// Engine calls, in order.
    pub actions: Vec<ServingAction>,
    /// The `Indexed` condition (`None` when no index is declared).
    pub indexed: Option<ConditionVerdict>,
    /// The `Loaded` condition (`None` when the policy is `Never`).
    pub loaded: Option<ConditionVerdict>,
    /// The `Serving` condition.
    pub serving: ConditionVerdict,
    /// `status.load.releaseAt` to record (a scheduled `WhileAliased` release).
    pub release_at: Option<Timestamp>,
    /// When the next pass is due for this decision (a release falling due); `None` leaves
    /// it to the controller's usual resync.
    pub recheck_after: Option<Duration>,
}

/// Decides indexes and load for one `Collection`: create what is declared and missing,
/// load per policy once every declared index exists (the engine refuses to load a vector
/// field without one), and for `WhileAliased` schedule the release `releaseDelay` after
/// the last alias left, cancelling it when one comes back.
pub fn plan_collection_serving(input: &CollectionServingInput<'_>) -> CollectionServing {
    let policy = input.load.map(|load| load.policy).unwrap_or_default();
    if !input.ready {
        let why = "the engine collection does not match the spec yet (see Ready)".to_string();
        return CollectionServing {
            actions: Vec::new(),
            indexed: (!input.declared.is_empty())
                .then(|| ConditionVerdict::falsity("NotReady", why.clone())),
            loaded: (policy != LoadPolicy::Never)
                .then(|| ConditionVerdict::falsity("NotReady", why.clone())),
            serving: ConditionVerdict::falsity("NotReady", why),
            release_at: input.release_at,
            recheck_after: None,
        };
    }
    let observed = input.observed;
    let mut actions: Vec<ServingAction> = input
        .declared
        .iter()
        .filter(|spec| observed.index_for(spec).is_none())
        .map(|spec| ServingAction::CreateIndex(spec.clone()))
        .collect();
    let all_created = actions.is_empty();

    let index_waits = observed.index_waits(Some(input.declared));
    let indexes_built = index_waits.is_empty();
    let indexed = (!input.declared.is_empty()).then(|| {
        if indexes_built {
            ConditionVerdict::truth(
                "Built",
                format!(
                    "{} index(es) built for all {} rows",
                    input.declared.len(),
                    thousands(observed.row_count)
                ),
            )
        } else {
            let failed = input.declared.iter().any(|spec| {
                observed
                    .index_for(spec)
                    .is_some_and(|index| index.state == IndexBuild::Failed)
            });
            let reason = if failed {
                "IndexFailed"
            } else if !all_created {
                "IndexMissing"
            } else {
                "IndexBuilding"
            };
            ConditionVerdict::falsity(reason, index_waits.join("; "))
        }
    });

    let wanted = input.aliased || input.awaited;
    let resident = matches!(observed.load, LoadState::Loaded | LoadState::Loading);
    let mut release_at = None;
    let mut recheck_after = None;
    let load_now = |actions: &mut Vec<ServingAction>| {
        if observed.load == LoadState::NotLoad && all_created {
            let load = input.load.cloned().unwrap_or_default();
            actions.push(ServingAction::LoadCollection {
                replicas: load.replicas,
                resource_groups: load.resource_groups,
            });
        }
    };
    let mut released_now = false;
    match policy {
        LoadPolicy::Never => {}
        LoadPolicy::Always => load_now(&mut actions),
        LoadPolicy::WhileAliased if wanted => load_now(&mut actions),
        LoadPolicy::WhileAliased if resident => {
            let due = input
                .release_at
                .unwrap_or_else(|| add(input.now, input.release_delay));
            if input.now >= due {
                actions.push(ServingAction::ReleaseCollection);
                released_now = true;
            } else {
                release_at = Some(due);
                recheck_after = Some(until(input.now, due));
            }
        }
        LoadPolicy::WhileAliased => {}
    }

    let loaded = (policy != LoadPolicy::Never).then(|| {
        let pending_load = actions
            .iter()
            .any(|action| matches!(action, ServingAction::LoadCollection { .. }));
        match (observed.load, released_now) {
            (_, true) => ConditionVerdict::falsity(
                "Released",
                "released: no alias has pointed to it for the release delay".to_string(),
            ),
            (LoadState::Loaded, false) => match release_at {
                Some(due) => ConditionVerdict::truth(
                    "ReleaseScheduled",
                    format!("loaded; no alias points to it, release due at {due}"),
                ),
                None => ConditionVerdict::truth("Loaded", "loaded".to_string()),
            },
            (LoadState::Loading, false) => ConditionVerdict::falsity(
                "Loading",
                format!("loading ({} %)", observed.load_progress),
            ),
            _ if pending_load => ConditionVerdict::falsity("Loading", "load requested".to_string()),
            _ if policy == LoadPolicy::WhileAliased && !wanted => ConditionVerdict::falsity(
                "NotAliased",
                "not loaded: no alias points to it or waits for it".to_string(),
            ),
            _ => ConditionVerdict::falsity(
                "WaitingForIndexes",
                "not loaded: waiting for every declared index to be created".to_string(),
            ),
        }
    });

    let mut waits = index_waits;
    if released_now {
        waits.push("released".to_string());
    } else if let Some(wait) = observed.load_wait() {
        waits.push(wait);
    }
    let serving = if waits.is_empty() {
        ConditionVerdict::truth(
            "Serving",
            format!("indexed and loaded, {} rows", thousands(observed.row_count)),
        )
    } else {
        let reason = if indexes_built {
            "NotLoaded"
        } else {
            "NotIndexed"
        };
        ConditionVerdict::falsity(reason, waits.join("; "))
    };

    CollectionServing {
        actions,
        indexed,
        loaded,
        serving,
        release_at,
        recheck_after,
    }
}

/// The target of an alias, as the gate sees it.
#[derive(Debug, Clone)]
pub struct GateTarget<'a> {
    /// Engine name.
    pub name: &'a str,
    /// It exists in the engine.
    pub exists: bool,
    /// The `Collection` managing it is Ready (always true for an unmanaged target).
    pub matches_spec: bool,
    /// Its `Collection`'s declared indexes; `None` for an unmanaged target (then every
    /// index the engine has must be built).
    pub declared: Option<&'a [IndexSpec]>,
    /// Its `Collection` declares `load: Always` or `WhileAliased`: the operator loads it,
    /// so the gate always waits for it to be loaded.
    pub load_managed: bool,
    /// The engine's answers (ignored when it does not exist).
    pub observed: &'a ServingObservation,
}

/// The collection the alias serves now.
#[derive(Debug, Clone)]
pub struct GateCurrent<'a> {
    /// Engine name.
    pub name: &'a str,
    /// The engine reports it loaded.
    pub loaded: bool,
    /// GetCollectionStatistics `row_count`.
    pub row_count: i64,
}

/// The gate's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The alias may move now.
    Swap,
    /// The target does not serve yet; it will once the engine catches up. Each entry
    /// names a missing part with its figures.
    Wait {
        /// What is missing.
        waits: Vec<String>,
    },
    /// A guard holds the swap back (`Ready=False, reason=SwapBlocked`).
    Blocked {
        /// The failing checks with their figures.
        message: String,
    },
}

impl Gate {
    /// One line for a condition message: "waiting for products_v2: index vec 61 % built
    /// (...); not loaded".
    pub fn message(&self, target: &str) -> String {
        match self {
            Gate::Swap => format!("{target} serves"),
            Gate::Wait { waits } => format!("waiting for {target}: {}", waits.join("; ")),
            Gate::Blocked { message } => message.clone(),
        }
    }
}

/// Decides whether an alias may move from `current` (`None`: it does not exist yet) to
/// `target`.
///
/// - `Immediate`: the target exists. `WhenTargetReady`: and its `Collection` is Ready.
/// - `WhenTargetServing`: and every declared index (every engine index, for an unmanaged
///   target) is built for all rows, and it is loaded. Loading is waited for when the
///   operator loads the target (`load_managed`) or when the current target is loaded; a
///   target nobody loads may replace one that is not loaded either, since the alias then
///   serves no less than before.
/// - `guards`, whatever the policy, once the rest passes: `minRowCount` on the target,
///   `minRowRatio` against the current target (only for a move).
pub fn gate(
    policy: SwitchPolicy,
    target: &GateTarget<'_>,
    current: Option<&GateCurrent<'_>>,
    guards: Option<&SwapGuards>,
) -> Gate {
    if !target.exists {
        return Gate::Wait {
            waits: vec!["does not exist".to_string()],
        };
    }
    let mut waits = Vec::new();
    if policy != SwitchPolicy::Immediate && !target.matches_spec {
        waits.push("its Collection is not Ready".to_string());
    }
    if policy == SwitchPolicy::WhenTargetServing {
        waits.extend(target.observed.index_waits(target.declared));
        let load_required = target.load_managed || current.is_some_and(|c| c.loaded);
        if load_required && let Some(wait) = target.observed.load_wait() {
            match current.filter(|c| c.loaded) {
                Some(current) if !target.load_managed => {
                    waits.push(format!("{wait} (while {} is)", current.name));
                }
                _ => waits.push(wait),
            }
        }
    }
    if !waits.is_empty() {
        return Gate::Wait { waits };
    }
    let Some(guards) = guards else {
        return Gate::Swap;
    };
    let rows = target.observed.row_count;
    let mut failures = Vec::new();
    if let Some(min) = guards.min_row_count
        && rows < min
    {
        failures.push(format!(
            "{} has {} rows, needs >= {}",
            target.name,
            thousands(rows),
            thousands(min)
        ));
    }
    if let (Some(ratio), Some(current)) = (guards.min_row_ratio, current)
        && current.name != target.name
    {
        let needed = (ratio * current.row_count as f64).ceil() as i64;
        if rows < needed {
            failures.push(format!(
                "{} has {} rows, needs >= {} % of {}'s {} ({})",
                target.name,
                thousands(rows),
                ratio_percent(ratio),
                current.name,
                thousands(current.row_count),
                thousands(needed)
            ));
        }
    }
    if failures.is_empty() {
        return Gate::Swap;
    }
    let mut message = failures.join("; ");
    if rows == 0 {
        message.push_str(" (the engine reports 0 rows)");
    }
    Gate::Blocked { message }
}

/// The shortest wait between two gate checks of one alias: each check is one round of
/// engine reads (DescribeIndex, GetLoadState, GetCollectionStatistics, ...).
pub const GATE_MIN_RECHECK: Duration = Duration::from_secs(5);

/// The longest wait between two gate checks: a swap waits at most this long after the
/// target starts serving.
pub const GATE_MAX_RECHECK: Duration = Duration::from_secs(60);

/// When to check a closed gate again, given how long the alias has waited: every 5 s for
/// the first 20 s, then a quarter of the time waited (an index build that took 4 minutes
/// so far is checked once a minute), at most every 60 s. Never sooner than 5 s, so a
/// waiting alias costs at most one round of engine reads per 5 s.
pub fn gate_recheck_after(waited: Duration) -> Duration {
    (waited / 4).clamp(GATE_MIN_RECHECK, GATE_MAX_RECHECK)
}

/// Applies a gate to an alias plan: when the gate does not open, the alias's CreateAlias /
/// AlterAlias is held back and its verdict says why (`WaitingForTarget` for a wait,
/// `SwapBlocked` for a guard). Other actions (adoption, clean-up) pass unchanged.
pub fn hold_alias(
    intent: &AliasIntent,
    planned: (Vec<Action>, Verdict),
    gate: &Gate,
) -> (Vec<Action>, Verdict) {
    let (actions, verdict) = planned;
    let Some(hold) = held(intent, gate, &actions) else {
        return (actions, verdict);
    };
    let kept = actions
        .into_iter()
        .filter(|action| !is_bind(action))
        .collect();
    (kept, hold)
}

/// [`hold_alias`] over a whole-set plan (what `up` and `plan` decide): `gates` by alias
/// resource. A held AlterAlias leaves the alias on its old target, so a drop of that
/// target planned on the assumption that the alias moves away is held back too
/// (`HasAliases`): the previous target is never dropped by a swap that did not happen.
pub fn hold_swaps(plan: &mut Plan, aliases: &[AliasIntent], gates: &BTreeMap<ObjectKey, Gate>) {
    let mut still_aliased: Vec<(String, String, String)> = Vec::new();
    for intent in aliases {
        let Some(gate) = gates.get(&intent.key) else {
            continue;
        };
        let mine: Vec<Action> = plan
            .actions
            .iter()
            .filter(|action| action.key() == Some(&intent.key) && is_bind(action))
            .cloned()
            .collect();
        let Some(hold) = held(intent, gate, &mine) else {
            continue;
        };
        for action in &mine {
            if let Action::AlterAlias {
                database,
                alias,
                from,
                ..
            } = action
            {
                still_aliased.push((database.clone(), from.clone(), alias.clone()));
            }
        }
        plan.actions
            .retain(|action| !(action.key() == Some(&intent.key) && is_bind(action)));
        plan.verdicts.insert(intent.key.clone(), hold);
    }
    for (database, from, alias) in still_aliased {
        let mut dropped = None;
        plan.actions.retain(|action| match action {
            Action::DropCollection {
                key,
                database: db,
                name,
            } if *db == database && *name == from => {
                dropped = Some(key.clone());
                false
            }
            _ => true,
        });
        if let Some(key) = dropped {
            plan.verdicts.insert(
                key,
                Verdict::NotReady {
                    reason: Reason::HasAliases,
                    message: format!(
                        "collection {from} in database {database} is not dropped: alias \
                         {alias} still points to it while its swap waits"
                    ),
                },
            );
        }
    }
}

/// The verdict holding `actions` back, or `None` when the gate opens or nothing binds.
fn held(intent: &AliasIntent, gate: &Gate, actions: &[Action]) -> Option<Verdict> {
    if *gate == Gate::Swap || !actions.iter().any(is_bind) {
        return None;
    }
    let mut message = gate.message(&intent.target);
    if let Some(from) = actions.iter().find_map(|action| match action {
        Action::AlterAlias { from, .. } => Some(from),
        _ => None,
    }) {
        message.push_str(&format!("; alias {} still points to {from}", intent.alias));
    }
    let reason = match gate {
        Gate::Blocked { .. } => Reason::SwapBlocked,
        _ => Reason::WaitingForTarget,
    };
    Some(Verdict::NotReady { reason, message })
}

fn is_bind(action: &Action) -> bool {
    matches!(
        action,
        Action::CreateAlias { .. } | Action::AlterAlias { .. }
    )
}

/// `1002334` → `"1,002,334"`.
pub fn thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0 {
        out.push('-');
    }
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Whole percent of `part` in `total`, rounded down (100 for an empty total).
fn percent(part: i64, total: i64) -> i64 {
    if total <= 0 {
        return 100;
    }
    (part.clamp(0, total) as i128 * 100 / total as i128) as i64
}

/// `0.95` → `"95"`, `0.955` → `"95.5"`.
fn ratio_percent(ratio: f64) -> String {
    let text = format!("{:.2}", ratio * 100.0);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn add(now: Timestamp, delay: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(delay)
        .ok()
        .and_then(|delay| now.checked_add(delay).ok())
        .unwrap_or(Timestamp::MAX)
}

fn until(now: Timestamp, due: Timestamp) -> Duration {
    Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
#[path = "serving_tests.rs"]
mod tests;
