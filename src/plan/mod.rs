//! Planning: desired objects + observed engine state → an ordered list of actions and a
//! verdict per object. Pure: no I/O, no clock. The Kubernetes controllers, `up` and `plan`
//! all decide with these functions, so the three can never disagree.
//!
//! The intents are plain data built from `Collection` / `CollectionAlias` resources (or
//! manifests on disk): engine names resolved, annotations read, the resource's recorded
//! ownership (`status.collectionID`, `status.collection`) carried along.

pub mod intent;
pub mod routed;
pub mod serving;

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{AliasDeletionPolicy, CollectionDeletionPolicy, CollectionSpec, SwitchPolicy};

/// Identifies a resource: `namespace/name` (manifests without a namespace use `default`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Age used to decide which of two resources claiming one engine name wins: the older
/// `creationTimestamp` (RFC 3339, compared as text), then the smaller key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seniority {
    /// `metadata.creationTimestamp` (empty for manifests not yet in a cluster).
    pub created: String,
    /// Tie-break.
    pub key: ObjectKey,
}

/// What a `Collection` resource asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionIntent {
    /// The resource.
    pub key: ObjectKey,
    /// For conflicts.
    pub seniority: Seniority,
    /// Engine database.
    pub database: String,
    /// Engine collection name.
    pub name: String,
    /// The full spec (schema and options) to create it with.
    pub spec: CollectionSpec,
    /// `collections.dev/adopt: "true"`.
    pub adopt: bool,
    /// `collections.dev/paused: "true"`: no engine writes.
    pub paused: bool,
    /// The resource is being deleted (deletionTimestamp set).
    pub deleting: bool,
    /// The engine collection ID this resource created or adopted earlier (its status);
    /// `None` if it never did.
    pub owned_id: Option<i64>,
}

/// What a `CollectionAlias` resource asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasIntent {
    /// The resource.
    pub key: ObjectKey,
    /// For conflicts.
    pub seniority: Seniority,
    /// Engine database.
    pub database: String,
    /// Engine alias name.
    pub alias: String,
    /// Engine name of the desired target collection.
    pub target: String,
    /// When the alias may move.
    pub switch_policy: SwitchPolicy,
    /// What deletion does.
    pub deletion_policy: AliasDeletionPolicy,
    /// `collections.dev/adopt: "true"`.
    pub adopt: bool,
    /// `collections.dev/paused: "true"`.
    pub paused: bool,
    /// Being deleted.
    pub deleting: bool,
    /// The target this resource bound the alias to earlier (its `status.collection`);
    /// `Some` marks the engine alias as this resource's.
    pub bound: Option<String>,
}

/// Readiness of a target collection as the alias planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetReadiness {
    /// A `Collection` resource manages the target and is Ready (or will be created earlier
    /// in the same plan, for whole-set planning).
    Ready,
    /// A `Collection` resource manages the target and is not Ready.
    NotReady,
    /// No resource manages the target: only its existence in the engine counts.
    Unmanaged,
}

/// One engine collection as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedCollection {
    /// Engine collection ID.
    pub id: i64,
    /// Aliases pointing at it.
    pub aliases: BTreeSet<String>,
}

/// The part of the engine the plan looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Existing databases.
    pub databases: BTreeSet<String>,
    /// Collections by (database, name).
    pub collections: BTreeMap<(String, String), ObservedCollection>,
    /// Alias targets by (database, alias).
    pub aliases: BTreeMap<(String, String), String>,
}

/// An engine mutation, in the order a plan lists them.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// CreateDatabase (the operator never drops a database).
    CreateDatabase { database: String },
    /// CreateCollection from the resource's spec.
    CreateCollection {
        key: ObjectKey,
        database: String,
        name: String,
        spec: Box<CollectionSpec>,
    },
    /// Record an existing collection as the resource's (no RPC; status only).
    AdoptCollection {
        key: ObjectKey,
        database: String,
        name: String,
        id: i64,
    },
    /// CreateAlias.
    CreateAlias {
        key: ObjectKey,
        database: String,
        alias: String,
        target: String,
    },
    /// AlterAlias, the atomic swap.
    AlterAlias {
        key: ObjectKey,
        database: String,
        alias: String,
        from: String,
        to: String,
    },
    /// Record an existing alias as the resource's (no RPC; status only).
    AdoptAlias {
        key: ObjectKey,
        database: String,
        alias: String,
        target: String,
    },
    /// DropAlias.
    DropAlias {
        key: ObjectKey,
        database: String,
        alias: String,
    },
    /// DropCollection.
    DropCollection {
        key: ObjectKey,
        database: String,
        name: String,
    },
}

impl Action {
    /// The RPC the action makes, for logs, events and metrics (`Adopt…` make none; the
    /// name still labels them).
    pub fn rpc_name(&self) -> &'static str {
        match self {
            Action::CreateDatabase { .. } => "CreateDatabase",
            Action::CreateCollection { .. } => "CreateCollection",
            Action::AdoptCollection { .. } => "AdoptCollection",
            Action::CreateAlias { .. } => "CreateAlias",
            Action::AlterAlias { .. } => "AlterAlias",
            Action::AdoptAlias { .. } => "AdoptAlias",
            Action::DropAlias { .. } => "DropAlias",
            Action::DropCollection { .. } => "DropCollection",
        }
    }

    /// The resource an action is for (`None` for CreateDatabase, which serves several).
    pub fn key(&self) -> Option<&ObjectKey> {
        match self {
            Action::CreateDatabase { .. } => None,
            Action::CreateCollection { key, .. }
            | Action::AdoptCollection { key, .. }
            | Action::CreateAlias { key, .. }
            | Action::AlterAlias { key, .. }
            | Action::AdoptAlias { key, .. }
            | Action::DropAlias { key, .. }
            | Action::DropCollection { key, .. } => Some(key),
        }
    }
}

/// Why a resource is not Ready (the `reason` of its `Ready=False` condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// An engine object of that name exists and the resource did not create it; set
    /// `collections.dev/adopt: "true"` to take it over.
    AlreadyExists,
    /// An older resource claims the same engine name.
    Conflict,
    /// The alias waits for its target (missing, or its Collection not Ready).
    WaitingForTarget,
    /// The collection cannot be dropped while aliases point at it.
    HasAliases,
    /// `collections.dev/paused` is set.
    Paused,
    /// The engine object exists but differs in a way the spec cannot change (e.g. a
    /// collection of the same name with another schema was found after adoption).
    Drifted,
    /// A swap guard (`minRowCount`, `minRowRatio`) holds the alias on its current target.
    SwapBlocked,
}

impl Reason {
    /// The condition reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::WaitingForTarget => "WaitingForTarget",
            Reason::HasAliases => "HasAliases",
            Reason::Paused => "Paused",
            Reason::Drifted => "Drifted",
            Reason::SwapBlocked => "SwapBlocked",
        }
    }
}

/// The outcome of planning for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// In sync once the plan's actions for it are applied.
    Ready,
    /// Not Ready, with a reason and a human-readable message.
    NotReady { reason: Reason, message: String },
    /// Deletion handled: the finalizer may go (after the plan's actions for it).
    Released,
}

/// Actions in apply order, and a verdict per resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Apply in this order: databases, collections, alias creates/alters, alias drops,
    /// collection drops.
    pub actions: Vec<Action>,
    /// One verdict per intent.
    pub verdicts: BTreeMap<ObjectKey, Verdict>,
}

/// Collection deletion policy of an intent (re-exported for planners' callers).
pub type DeletionPolicy = CollectionDeletionPolicy;

/// Plans one `Collection` resource (what a controller reconcile decides).
///
/// `rivals`: the seniority of every *other* resource claiming the same (database, name) on
/// the same coordinator. `observed` must hold the databases, and the collection of that
/// name with the aliases pointing at it, if it exists.
pub fn plan_collection(
    intent: &CollectionIntent,
    rivals: &[Seniority],
    observed: &Observed,
) -> (Vec<Action>, Verdict) {
    decide::collection(intent, rivals, observed)
}

/// Plans one `CollectionAlias` resource.
///
/// `rivals`: the seniority of every other resource claiming the same (database, alias).
/// `target`: readiness of the desired target as far as `Collection` resources tell.
/// `observed` must hold the databases, the alias (if it exists), the desired target
/// collection, and any collection named like the alias.
pub fn plan_alias(
    intent: &AliasIntent,
    rivals: &[Seniority],
    target: TargetReadiness,
    observed: &Observed,
) -> (Vec<Action>, Verdict) {
    decide::alias(intent, rivals, target, observed)
}

/// Plans a whole set of resources against one engine (what `up` and `plan` decide):
/// conflicts are found among the given intents, targets created earlier in the same plan
/// count as existing, and a collection whose aliases the plan moves away may be dropped.
pub fn plan_all(
    collections: &[CollectionIntent],
    aliases: &[AliasIntent],
    observed: &Observed,
) -> Plan {
    decide::all(collections, aliases, observed)
}

mod decide;
#[cfg(test)]
mod tests;
