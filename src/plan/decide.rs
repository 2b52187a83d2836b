//! The planning rules (see the functions in the parent module).
//!
//! Engine semantics assumed (Milvus 2.5.5+): an alias is never resolved where a collection
//! name is expected, a collection with aliases cannot be dropped, and alias and collection
//! names share one namespace per database. Every rule below prefers doing nothing (and
//! saying why) over an engine write that could touch an object the resource does not own.

use crate::crd::{ADOPT_ANNOTATION, PAUSED_ANNOTATION};

use std::collections::HashMap;

use super::*;

/// Plans one `Collection` resource; see [`super::plan_collection`].
pub(super) fn collection(
    intent: &CollectionIntent,
    rivals: &[Seniority],
    observed: &Observed,
) -> (Vec<Action>, Verdict) {
    if intent.deleting {
        return collection_deleting(intent, observed);
    }
    if intent.paused {
        return not_ready(Reason::Paused, paused_message());
    }
    if let Some(winner) = older_rival(&intent.seniority, rivals) {
        return not_ready(
            Reason::Conflict,
            conflict_message("collection", &intent.name, &intent.database, winner),
        );
    }

    let name = (intent.database.clone(), intent.name.clone());
    if let Some(existing) = observed.collections.get(&name) {
        if intent.owned_id == Some(existing.id) {
            return (Vec::new(), Verdict::Ready);
        }
        if intent.adopt {
            let adopt = Action::AdoptCollection {
                key: intent.key.clone(),
                database: intent.database.clone(),
                name: intent.name.clone(),
                id: existing.id,
            };
            return (vec![adopt], Verdict::Ready);
        }
        let history = match intent.owned_id {
            // The collection this resource made was dropped and someone made another one
            // under the same name: it holds someone else's data now.
            Some(owned) => format!(
                " (this resource created ID {owned}, which was dropped and replaced \
                 outside the operator)"
            ),
            None => " and was not created by this resource".to_string(),
        };
        return not_ready(
            Reason::AlreadyExists,
            format!(
                "collection {} already exists in database {} with ID {}{history}; set the \
                 annotation {ADOPT_ANNOTATION}: \"true\" to take it over",
                intent.name, intent.database, existing.id
            ),
        );
    }

    // Names are shared with aliases: the engine refuses a collection named like an alias,
    // and adoption cannot help (an alias is not a collection).
    if let Some(target) = observed.aliases.get(&name) {
        return not_ready(
            Reason::AlreadyExists,
            format!(
                "an alias named {} exists in database {} (pointing to {target}); a \
                 collection cannot take an alias's name",
                intent.name, intent.database
            ),
        );
    }

    // Missing: create it. If `owned_id` is set, it was dropped behind our back and
    // recreating it is the drift correction.
    let mut actions = Vec::new();
    if !observed.databases.contains(&intent.database) {
        actions.push(Action::CreateDatabase {
            database: intent.database.clone(),
        });
    }
    actions.push(Action::CreateCollection {
        key: intent.key.clone(),
        database: intent.database.clone(),
        name: intent.name.clone(),
        spec: Box::new(intent.spec.clone()),
    });
    (actions, Verdict::Ready)
}

/// A `Collection` resource being deleted. Rivals do not matter here: only a resource that
/// recorded the collection's ID (created or adopted it as the winner) can drop it.
fn collection_deleting(intent: &CollectionIntent, observed: &Observed) -> (Vec<Action>, Verdict) {
    let Some(owned_id) = intent.owned_id else {
        // It never created or adopted anything: nothing of its own to clean up.
        return (Vec::new(), Verdict::Released);
    };
    if intent.spec.deletion_policy == DeletionPolicy::Retain {
        return (Vec::new(), Verdict::Released);
    }
    if intent.paused {
        return not_ready(Reason::Paused, paused_message());
    }
    let name = (intent.database.clone(), intent.name.clone());
    let Some(existing) = observed.collections.get(&name) else {
        // Already gone.
        return (Vec::new(), Verdict::Released);
    };
    if existing.id != owned_id {
        // Same name, another collection: not ours to drop.
        return (Vec::new(), Verdict::Released);
    }
    if !existing.aliases.is_empty() {
        let aliases: Vec<&str> = existing.aliases.iter().map(String::as_str).collect();
        return not_ready(
            Reason::HasAliases,
            format!(
                "collection {} in database {} cannot be dropped while aliases point to it: \
                 {}; move or delete them first (the operator never drops an alias it does \
                 not manage)",
                intent.name,
                intent.database,
                aliases.join(", ")
            ),
        );
    }
    let drop = Action::DropCollection {
        key: intent.key.clone(),
        database: intent.database.clone(),
        name: intent.name.clone(),
    };
    (vec![drop], Verdict::Released)
}

/// Plans one `CollectionAlias` resource; see [`super::plan_alias`].
pub(super) fn alias(
    intent: &AliasIntent,
    rivals: &[Seniority],
    target: TargetReadiness,
    observed: &Observed,
) -> (Vec<Action>, Verdict) {
    if intent.deleting {
        return alias_deleting(intent, observed);
    }
    if intent.paused {
        return not_ready(Reason::Paused, paused_message());
    }
    if let Some(winner) = older_rival(&intent.seniority, rivals) {
        return not_ready(
            Reason::Conflict,
            conflict_message("alias", &intent.alias, &intent.database, winner),
        );
    }

    let alias_name = (intent.database.clone(), intent.alias.clone());
    if observed.collections.contains_key(&alias_name) {
        return not_ready(
            Reason::AlreadyExists,
            format!(
                "a collection named {} exists in database {}; an alias cannot take a \
                 collection's name",
                intent.alias, intent.database
            ),
        );
    }

    let current = observed.aliases.get(&alias_name);
    let present = observed
        .collections
        .contains_key(&(intent.database.clone(), intent.target.clone()));
    let allowed = present
        && (intent.switch_policy == SwitchPolicy::Immediate || target != TargetReadiness::NotReady);
    if !allowed {
        let mut message = if current == Some(&intent.target) {
            // Nothing to switch, but the brief's gate still applies: the alias is only as
            // Ready as the collection it serves.
            format!(
                "collection {} in database {} is not Ready (alias {} already points to it)",
                intent.target, intent.database, intent.alias
            )
        } else if present {
            format!(
                "waiting for collection {} in database {} to become Ready",
                intent.target, intent.database
            )
        } else if let Some(real) = observed
            .aliases
            .get(&(intent.database.clone(), intent.target.clone()))
        {
            // Milvus resolves an alias's target among collection names only (CreateAlias
            // answers 100 "collection not found"; `meta_table.go` `CheckIfAliasCreatable`),
            // so waiting would never end.
            format!(
                "{} in database {} is an alias (of collection {real}), not a collection: \
                 aliases cannot target aliases; set the target to {real}",
                intent.target, intent.database
            )
        } else {
            format!(
                "waiting for collection {} to exist in database {}",
                intent.target, intent.database
            )
        };
        if let Some(current) = current.filter(|current| **current != intent.target) {
            message.push_str(&format!(
                "; alias {} still points to {current}",
                intent.alias
            ));
            if intent.bound.is_none() && !intent.adopt {
                // Say it now rather than after the wait: the switch will need adoption.
                message.push_str(&format!(
                    " and was not created by this resource (set the annotation \
                     {ADOPT_ANNOTATION}: \"true\" to take it over)"
                ));
            }
        }
        return not_ready(Reason::WaitingForTarget, message);
    }

    let owned = intent.bound.is_some();
    match current {
        None => {
            // Missing: create it (for a bound alias, it was dropped behind our back).
            let create = Action::CreateAlias {
                key: intent.key.clone(),
                database: intent.database.clone(),
                alias: intent.alias.clone(),
                target: intent.target.clone(),
            };
            (vec![create], Verdict::Ready)
        }
        Some(current) if *current == intent.target => {
            if owned {
                (Vec::new(), Verdict::Ready)
            } else if intent.adopt {
                let adopt = Action::AdoptAlias {
                    key: intent.key.clone(),
                    database: intent.database.clone(),
                    alias: intent.alias.clone(),
                    target: intent.target.clone(),
                };
                (vec![adopt], Verdict::Ready)
            } else {
                not_ready(Reason::AlreadyExists, alias_exists_message(intent, current))
            }
        }
        Some(current) => {
            // The swap when the spec moved, drift repair when someone else moved it.
            if owned || intent.adopt {
                let alter = Action::AlterAlias {
                    key: intent.key.clone(),
                    database: intent.database.clone(),
                    alias: intent.alias.clone(),
                    from: current.clone(),
                    to: intent.target.clone(),
                };
                (vec![alter], Verdict::Ready)
            } else {
                not_ready(Reason::AlreadyExists, alias_exists_message(intent, current))
            }
        }
    }
}

/// A `CollectionAlias` resource being deleted.
fn alias_deleting(intent: &AliasIntent, observed: &Observed) -> (Vec<Action>, Verdict) {
    if intent.bound.is_none() {
        // It never bound the engine alias: the alias (if any) is someone else's.
        return (Vec::new(), Verdict::Released);
    }
    if intent.deletion_policy == AliasDeletionPolicy::Retain {
        return (Vec::new(), Verdict::Released);
    }
    if intent.paused {
        return not_ready(Reason::Paused, paused_message());
    }
    let alias_name = (intent.database.clone(), intent.alias.clone());
    let actions = if observed.aliases.contains_key(&alias_name) {
        vec![Action::DropAlias {
            key: intent.key.clone(),
            database: intent.database.clone(),
            alias: intent.alias.clone(),
        }]
    } else {
        Vec::new()
    };
    (actions, Verdict::Released)
}

/// Plans a whole set; see [`super::plan_all`].
///
/// Three passes, because the rules depend on each other in one direction each: live
/// collections first (their verdicts gate the aliases), then aliases (against the engine
/// as it will be once those collections exist), then collections being deleted (against
/// the aliases as they will be once the alias actions ran, so a drop is not blocked by an
/// alias the same plan moves away).
pub(super) fn all(
    collections: &[CollectionIntent],
    aliases: &[AliasIntent],
    observed: &Observed,
) -> Plan {
    let mut actions = Vec::new();
    let mut verdicts = BTreeMap::new();

    // Pass 1: live collections.
    let mut ahead = observed.clone();
    let mut readiness: BTreeMap<(String, String), TargetReadiness> = BTreeMap::new();
    let claims = Claims::new(
        collections
            .iter()
            .map(|c| (&c.seniority, (c.database.as_str(), c.name.as_str()))),
    );
    for (index, intent) in collections.iter().enumerate() {
        let name = (intent.database.clone(), intent.name.clone());
        if intent.deleting {
            // Being deleted is never a Ready target; it is decided in pass 3.
            readiness.entry(name).or_insert(TargetReadiness::NotReady);
            continue;
        }
        let (planned, verdict) = match claims.duplicate_of(index) {
            Some(first) => not_ready(
                Reason::Conflict,
                duplicate_message("collection", &intent.name, &intent.database, first),
            ),
            None => collection(intent, &claims.rivals_of(index), observed),
        };
        if verdict == Verdict::Ready {
            readiness.insert(name.clone(), TargetReadiness::Ready);
            // Later passes see what this plan creates.
            for action in &planned {
                match action {
                    Action::CreateDatabase { database } => {
                        ahead.databases.insert(database.clone());
                    }
                    Action::CreateCollection { .. } => {
                        // The ID is unknown until the engine assigns it; the alias rules
                        // only look at existence, never at this placeholder.
                        ahead.collections.entry(name.clone()).or_insert_with(|| {
                            ObservedCollection {
                                id: 0,
                                aliases: BTreeSet::new(),
                            }
                        });
                    }
                    _ => {}
                }
            }
        } else {
            readiness.entry(name).or_insert(TargetReadiness::NotReady);
        }
        actions.extend(planned);
        record(&mut verdicts, intent.key.clone(), verdict);
    }

    // Pass 2: aliases.
    let claims = Claims::new(
        aliases
            .iter()
            .map(|a| (&a.seniority, (a.database.as_str(), a.alias.as_str()))),
    );
    let mut alias_actions = Vec::new();
    for (index, intent) in aliases.iter().enumerate() {
        let target = readiness
            .get(&(intent.database.clone(), intent.target.clone()))
            .copied()
            .unwrap_or(TargetReadiness::Unmanaged);
        let (planned, verdict) = match claims.duplicate_of(index) {
            Some(first) if !intent.deleting => not_ready(
                Reason::Conflict,
                duplicate_message("alias", &intent.alias, &intent.database, first),
            ),
            _ => alias(intent, &claims.rivals_of(index), target, &ahead),
        };
        alias_actions.extend(planned);
        record(&mut verdicts, intent.key.clone(), verdict);
    }

    // Pass 3: collections being deleted, against the aliases after pass 2.
    let after = with_alias_actions(observed, &alias_actions);
    actions.extend(alias_actions);
    for intent in collections.iter().filter(|c| c.deleting) {
        let (planned, verdict) = collection(intent, &[], &after);
        actions.extend(planned);
        record(&mut verdicts, intent.key.clone(), verdict);
    }

    Plan {
        actions: in_apply_order(actions),
        verdicts,
    }
}

/// Who claims which engine name, grouped once so that finding an intent's rivals is a
/// lookup rather than a scan of every claim (`up` plans 11,000 resources at a time).
struct Claims<'a> {
    seniority: Vec<&'a Seniority>,
    name: Vec<(&'a str, &'a str)>,
    by_name: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a> Claims<'a> {
    fn new(claims: impl Iterator<Item = (&'a Seniority, (&'a str, &'a str))>) -> Self {
        let mut this = Self {
            seniority: Vec::new(),
            name: Vec::new(),
            by_name: HashMap::new(),
        };
        for (index, (seniority, name)) in claims.enumerate() {
            this.seniority.push(seniority);
            this.name.push(name);
            this.by_name.entry(name).or_default().push(index);
        }
        this
    }

    fn group(&self, index: usize) -> &[usize] {
        self.by_name
            .get(&self.name[index])
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The seniority of every other intent claiming the same engine name.
    fn rivals_of(&self, index: usize) -> Vec<Seniority> {
        self.group(index)
            .iter()
            .filter(|other| **other != index)
            .map(|other| self.seniority[*other].clone())
            .collect()
    }

    /// An earlier intent with the same engine name and the very same seniority (the same
    /// resource declared twice, e.g. in two manifest files). Neither is older, so the
    /// single-resource rule would let both act; in a whole-set plan the first one wins.
    fn duplicate_of(&self, index: usize) -> Option<&'a Seniority> {
        let own = self.seniority[index];
        self.group(index)
            .iter()
            .take_while(|other| **other < index)
            .map(|other| self.seniority[*other])
            .find(|other| *other == own)
    }
}

/// The oldest rival strictly older than `own` (equal seniority is the resource itself).
fn older_rival<'a>(own: &Seniority, rivals: &'a [Seniority]) -> Option<&'a Seniority> {
    rivals.iter().filter(|rival| *rival < own).min()
}

/// Records a verdict. Keys are unique per kind, but a `Collection` and a `CollectionAlias`
/// may share `namespace/name` (and manifests may repeat a resource); one map cannot hold
/// both, so the least advanced verdict is kept: claiming Ready or Released for a resource
/// that is not is worse than reporting a wait.
fn record(verdicts: &mut BTreeMap<ObjectKey, Verdict>, key: ObjectKey, verdict: Verdict) {
    fn progress(verdict: &Verdict) -> u8 {
        match verdict {
            Verdict::NotReady { .. } => 0,
            Verdict::Ready => 1,
            Verdict::Released => 2,
        }
    }
    match verdicts.get(&key) {
        Some(existing) if progress(existing) <= progress(&verdict) => {}
        _ => {
            verdicts.insert(key, verdict);
        }
    }
}

/// `observed` as it will be after the alias actions: targets set or removed, and each
/// collection's alias set updated to match.
fn with_alias_actions(observed: &Observed, actions: &[Action]) -> Observed {
    let mut after = observed.clone();
    for action in actions {
        let (database, alias, target) = match action {
            Action::CreateAlias {
                database,
                alias,
                target,
                ..
            } => (database, alias, Some(target)),
            Action::AlterAlias {
                database,
                alias,
                to,
                ..
            } => (database, alias, Some(to)),
            Action::DropAlias {
                database, alias, ..
            } => (database, alias, None),
            _ => continue,
        };
        for ((db, _), collection) in after.collections.iter_mut() {
            if db == database {
                collection.aliases.remove(alias);
            }
        }
        let name = (database.clone(), alias.clone());
        match target {
            Some(target) => {
                if let Some(collection) = after
                    .collections
                    .get_mut(&(database.clone(), target.clone()))
                {
                    collection.aliases.insert(alias.clone());
                }
                after.aliases.insert(name, target.clone());
            }
            None => {
                after.aliases.remove(&name);
            }
        }
    }
    after
}

/// Sorts actions into apply order: databases, collection creates/adoptions, alias
/// creates/alters/adoptions, alias drops, collection drops; by resource key within a
/// group (databases by name), so equal inputs give byte-identical plans. Repeated
/// CreateDatabase actions (one per collection in a missing database) collapse into one.
fn in_apply_order(actions: Vec<Action>) -> Vec<Action> {
    fn rank(action: &Action) -> (u8, Option<&ObjectKey>, &str) {
        match action {
            Action::CreateDatabase { database } => (0, None, database),
            Action::CreateCollection { key, name, .. }
            | Action::AdoptCollection { key, name, .. } => (1, Some(key), name),
            Action::CreateAlias { key, alias, .. }
            | Action::AlterAlias { key, alias, .. }
            | Action::AdoptAlias { key, alias, .. } => (2, Some(key), alias),
            Action::DropAlias { key, alias, .. } => (3, Some(key), alias),
            Action::DropCollection { key, name, .. } => (4, Some(key), name),
        }
    }
    let mut databases = BTreeSet::new();
    let mut actions: Vec<Action> = actions
        .into_iter()
        .filter(|action| match action {
            Action::CreateDatabase { database } => databases.insert(database.clone()),
            _ => true,
        })
        .collect();
    actions.sort_by(|a, b| rank(a).cmp(&rank(b)));
    actions
}

fn not_ready(reason: Reason, message: String) -> (Vec<Action>, Verdict) {
    (Vec::new(), Verdict::NotReady { reason, message })
}

fn paused_message() -> String {
    format!("{PAUSED_ANNOTATION} is \"true\": no engine changes are made")
}

fn conflict_message(kind: &str, name: &str, database: &str, winner: &Seniority) -> String {
    format!(
        "{kind} {name} in database {database} is claimed by the older resource {}; this \
         one stays inactive until that one is deleted",
        winner.key
    )
}

fn duplicate_message(kind: &str, name: &str, database: &str, first: &Seniority) -> String {
    format!(
        "{kind} {name} in database {database}: resource {} is declared more than once; \
         only its first declaration is planned",
        first.key
    )
}

fn alias_exists_message(intent: &AliasIntent, current: &str) -> String {
    format!(
        "alias {} already exists in database {} (pointing to {current}) and was not \
         created by this resource; set the annotation {ADOPT_ANNOTATION}: \"true\" to take \
         it over",
        intent.alias, intent.database
    )
}
