//! Status: conditions `Ready` and `Synced` with `observedGeneration`, and the per-kind
//! fields, computed by pure functions from the previous status and the pass's outcome.
//!
//! Determinism is the point: the same outcome gives a byte-identical status, so an
//! unchanged object is not written at all and the operator never re-triggers itself
//! (kube.rs "Repeatedly Triggering Yourself"). The only time in a condition is
//! `lastTransitionTime`, which moves only when the condition's `status` changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::FIELD_MANAGER;
use super::error::Error;
use crate::client::ClientError;
use crate::crd::alias::HISTORY_LIMIT;
use crate::crd::{
    AliasHistoryEntry, Collection, CollectionAlias, CollectionAliasStatus, CollectionStatus,
    RECONCILE_REQUESTED_ANNOTATION,
};
use crate::plan::Verdict;

/// Condition type: the engine object is as the spec says.
pub const READY: &str = "Ready";
/// Condition type: the last pass ran to completion (Crossplane's meaning).
pub const SYNCED: &str = "Synced";

/// Condition status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// `"True"`.
    True,
    /// `"False"`.
    False,
    /// `"Unknown"`: the operator cannot tell (engine unreachable).
    Unknown,
}

impl Truth {
    fn as_str(self) -> &'static str {
        match self {
            Truth::True => "True",
            Truth::False => "False",
            Truth::Unknown => "Unknown",
        }
    }
}

/// One wanted condition, before times and generations are filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `Ready` or `Synced`.
    pub type_: &'static str,
    /// Status.
    pub status: Truth,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Wanted {
    /// A condition.
    pub fn new(
        type_: &'static str,
        status: Truth,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// The conditions to store: `wanted` in order, each carrying `generation`, and keeping
/// its previous `lastTransitionTime` unless its status changed.
pub fn conditions(
    previous: &[Condition],
    wanted: &[Wanted],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|want| {
            let status = want.status.as_str().to_string();
            let since = previous
                .iter()
                .find(|c| c.type_ == want.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: want.type_.to_string(),
                status,
                reason: want.reason.clone(),
                message: want.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// What a reconcile pass came to, as the conditions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The plan ran: its verdict, all of its actions applied.
    Planned {
        /// The planner's verdict.
        verdict: Verdict,
        /// Human-readable description of the Ready state (used when Ready).
        ready_message: String,
    },
    /// The pass stopped on an error (reason and message for the conditions).
    Failed {
        /// `Ready` status to report: `Unknown` when the engine could not be asked.
        ready: Truth,
        /// Reason (`EngineError`, `EngineUnreachable`, `CoordinatorNotFound`…).
        reason: &'static str,
        /// Message (the Milvus code included for engine errors).
        message: String,
    },
}

impl Outcome {
    /// The outcome of an engine error.
    pub fn engine_failure(error: &ClientError) -> Self {
        match error {
            ClientError::Unreachable { .. } => Outcome::Failed {
                ready: Truth::Unknown,
                reason: "EngineUnreachable",
                message: error.to_string(),
            },
            ClientError::Engine { .. } => Outcome::Failed {
                ready: Truth::False,
                reason: "EngineError",
                message: error.to_string(),
            },
        }
    }

    /// The outcome of any operator error that stops a pass before the plan is applied.
    pub fn from_error(error: &Error) -> Self {
        match error {
            Error::Engine(engine) => Self::engine_failure(engine),
            Error::Coordinator { .. } => Outcome::Failed {
                ready: Truth::False,
                reason: "CoordinatorNotFound",
                message: error.to_string(),
            },
            Error::Credentials { .. } => Outcome::Failed {
                ready: Truth::False,
                reason: "CredentialsInvalid",
                message: error.to_string(),
            },
            Error::CredentialsRefused { .. } => Outcome::Failed {
                ready: Truth::False,
                reason: "CredentialsRefused",
                message: error.to_string(),
            },
            Error::EndpointRefused { .. } => Outcome::Failed {
                ready: Truth::False,
                reason: "EndpointRefused",
                message: error.to_string(),
            },
            Error::Blocked { reason, message } => Outcome::Failed {
                ready: Truth::False,
                reason,
                message: message.clone(),
            },
            other => Outcome::Failed {
                ready: Truth::Unknown,
                reason: "ReconcileError",
                message: other.to_string(),
            },
        }
    }

    /// `Ready` and `Synced` for this outcome.
    pub fn wanted(&self) -> Vec<Wanted> {
        match self {
            Outcome::Planned {
                verdict,
                ready_message,
            } => {
                let synced = Wanted::new(SYNCED, Truth::True, "ReconcileSuccess", "");
                match verdict {
                    Verdict::Ready => vec![
                        Wanted::new(READY, Truth::True, "Available", ready_message.clone()),
                        synced,
                    ],
                    Verdict::NotReady { reason, message } => {
                        let ready =
                            Wanted::new(READY, Truth::False, reason.as_str(), message.clone());
                        let synced = if *reason == crate::plan::Reason::Paused {
                            Wanted::new(SYNCED, Truth::False, "ReconcilePaused", message.clone())
                        } else {
                            synced
                        };
                        vec![ready, synced]
                    }
                    Verdict::Released => vec![
                        Wanted::new(
                            READY,
                            Truth::False,
                            "Deleting",
                            "the resource is being deleted",
                        ),
                        synced,
                    ],
                }
            }
            Outcome::Failed {
                ready,
                reason,
                message,
            } => vec![
                Wanted::new(READY, *ready, reason, message.clone()),
                Wanted::new(SYNCED, Truth::False, "ReconcileError", message.clone()),
            ],
        }
    }

    /// Whether the object is Ready.
    pub fn is_ready(&self) -> bool {
        matches!(
            self,
            Outcome::Planned {
                verdict: Verdict::Ready,
                ..
            }
        )
    }
}

fn reconcile_requested<K: Resource>(object: &K) -> Option<String> {
    object
        .annotations()
        .get(RECONCILE_REQUESTED_ANNOTATION)
        .cloned()
}

/// A whole-second RFC 3339 time, as stored in alias history.
pub fn rfc3339_seconds(now: Timestamp) -> String {
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// The new status of a `Collection`.
///
/// `collection_id`: the engine ID the resource now owns (created or adopted in this pass,
/// or confirmed); `None` keeps what the status recorded. `aliases`: the aliases observed
/// on the engine collection; `None` keeps the recorded list.
pub fn collection_status(
    collection: &Collection,
    outcome: &Outcome,
    collection_id: Option<i64>,
    aliases: Option<Vec<String>>,
    now: Timestamp,
) -> CollectionStatus {
    let previous = collection.status.clone().unwrap_or_default();
    let generation = collection.metadata.generation;
    CollectionStatus {
        observed_generation: generation,
        conditions: conditions(&previous.conditions, &outcome.wanted(), generation, now),
        database: Some(collection.spec.database.clone()),
        engine_name: Some(collection.engine_name()),
        collection_id: collection_id
            .map(|id| id.to_string())
            .or(previous.collection_id),
        aliases: aliases.unwrap_or(previous.aliases),
        last_handled_reconcile_at: reconcile_requested(collection)
            .or(previous.last_handled_reconcile_at),
        indexes: previous.indexes,
        load: previous.load,
        row_count: previous.row_count,
    }
}

/// The new status of a `CollectionAlias`.
///
/// `bound`: the target the engine alias points to on the resource's behalf after this
/// pass; `None` keeps the recorded binding. A new binding moves the old one to
/// `previousCollection` and is added to the front of `history` (at most 10 entries), so
/// `kubectl edit` of `spec.collection` to `status.previousCollection` is the rollback.
pub fn alias_status(
    alias: &CollectionAlias,
    outcome: &Outcome,
    bound: Option<String>,
    now: Timestamp,
) -> CollectionAliasStatus {
    let previous = alias.status.clone().unwrap_or_default();
    let generation = alias.metadata.generation;
    let mut status = CollectionAliasStatus {
        observed_generation: generation,
        conditions: conditions(&previous.conditions, &outcome.wanted(), generation, now),
        database: Some(alias.spec.database.clone()),
        engine_name: Some(alias.engine_name()),
        collection: previous.collection.clone(),
        previous_collection: previous.previous_collection.clone(),
        history: previous.history.clone(),
        last_handled_reconcile_at: reconcile_requested(alias)
            .or(previous.last_handled_reconcile_at.clone()),
        last_swap: previous.last_swap.clone(),
    };
    if let Some(target) = bound
        && previous.collection.as_deref() != Some(target.as_str())
    {
        if let Some(old) = previous.collection {
            status.previous_collection = Some(old);
        }
        status.history.insert(
            0,
            AliasHistoryEntry {
                collection: target.clone(),
                time: rfc3339_seconds(now),
            },
        );
        status.history.truncate(HISTORY_LIMIT);
        status.collection = Some(target);
    }
    status
}

/// Writes `status` with server-side apply (field manager `collection-operator`, forced):
/// the operator owns `.status` and nothing else, so Helm and Argo CD, which own `.spec`,
/// never see a conflict or a diff.
pub async fn apply_status<K, S>(api: &Api<K>, object: &K, status: &S) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::kube(format!("writing the status of {name}"), source))?;
    Ok(())
}
