//! Kubernetes Events: one for every engine mutation (so `kubectl describe` tells who
//! moved an alias and when), one for every failed engine call.
//!
//! kube-runtime's `Recorder` aggregates repeats by reason alone and keeps the *first*
//! note, so a second swap within six minutes would be reported with the first swap's text.
//! This recorder keys the aggregation on the note as well: identical repeats (the same
//! failure retried) become one Event with a growing `series.count`, distinct messages stay
//! distinct.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use parking_lot::Mutex;

use crate::client::{Applied, ClientError};
use crate::plan::Action;

/// How long a published Event is reused for identical repeats (kube-runtime uses 6 min).
pub const AGGREGATION_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something the operator did on purpose.
    Normal,
    /// Something failed or was found changed behind the operator's back.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// What to publish, before it is addressed to an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventSpec {
    /// Severity.
    pub type_: EventType,
    /// Short PascalCase reason (`AliasSwitched`, `DriftCorrected`…).
    pub reason: String,
    /// The engine RPC or operator step (`AlterAlias`, `ReleaseFinalizer`…).
    pub action: String,
    /// Human-readable text.
    pub note: String,
}

impl EventSpec {
    /// A `Normal` event.
    pub fn normal(reason: &str, action: &str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Normal,
            reason: reason.to_string(),
            action: action.to_string(),
            note: note.into(),
        }
    }

    /// A `Warning` event.
    pub fn warning(reason: &str, action: &str, note: impl Into<String>) -> Self {
        Self {
            type_: EventType::Warning,
            reason: reason.to_string(),
            action: action.to_string(),
            note: note.into(),
        }
    }
}

/// Whether an action makes an engine RPC (adoption only records ownership in status).
pub fn is_rpc(action: &Action) -> bool {
    !matches!(
        action,
        Action::AdoptCollection { .. } | Action::AdoptAlias { .. }
    )
}

/// The Event for an applied action. `recorded` is what the resource's status held before
/// the pass (the collection ID it owned, or the target its alias was bound to): an action
/// that restores it is drift correction and says so.
pub fn mutation_event(action: &Action, recorded: Option<&str>, applied: &Applied) -> EventSpec {
    let name = action.rpc_name();
    let id = applied
        .collection_id
        .map(|id| format!(" (ID {id})"))
        .unwrap_or_default();
    match action {
        Action::CreateDatabase { database } => EventSpec::normal(
            "CreatedDatabase",
            name,
            format!("created database {database} (the operator never drops databases)"),
        ),
        Action::CreateCollection {
            database, name: n, ..
        } => match recorded {
            Some(previous) => EventSpec::warning(
                "DriftCorrected",
                name,
                format!(
                    "collection {n} in database {database} (ID {previous}) was dropped \
                     outside the operator; created it again{id}"
                ),
            ),
            None => EventSpec::normal(
                "CreatedCollection",
                name,
                format!("created collection {n} in database {database}{id}"),
            ),
        },
        Action::AdoptCollection {
            database, name: n, ..
        } => EventSpec::normal(
            "AdoptedCollection",
            name,
            format!("adopted existing collection {n} in database {database}{id}"),
        ),
        Action::CreateAlias {
            database,
            alias,
            target,
            ..
        } => match recorded {
            Some(_) => EventSpec::warning(
                "DriftCorrected",
                name,
                format!(
                    "alias {alias} in database {database} was dropped outside the operator; \
                     created it again pointing to {target}"
                ),
            ),
            None => EventSpec::normal(
                "CreatedAlias",
                name,
                format!("created alias {alias} in database {database} pointing to {target}"),
            ),
        },
        Action::AlterAlias {
            database,
            alias,
            from,
            to,
            ..
        } => {
            if recorded == Some(to.as_str()) {
                EventSpec::warning(
                    "DriftCorrected",
                    name,
                    format!(
                        "alias {alias} in database {database} was moved to {from} outside \
                         the operator; moved it back to {to}"
                    ),
                )
            } else {
                EventSpec::normal(
                    "AliasSwitched",
                    name,
                    format!("alias {alias} in database {database} moved from {from} to {to}"),
                )
            }
        }
        Action::AdoptAlias {
            database,
            alias,
            target,
            ..
        } => EventSpec::normal(
            "AdoptedAlias",
            name,
            format!("adopted existing alias {alias} in database {database} (pointing to {target})"),
        ),
        Action::DropAlias {
            database, alias, ..
        } => EventSpec::normal(
            "DroppedAlias",
            name,
            format!("dropped alias {alias} in database {database}"),
        ),
        Action::DropCollection {
            database, name: n, ..
        } => EventSpec::normal(
            "DroppedCollection",
            name,
            format!("dropped collection {n} in database {database} (deletionPolicy: Delete)"),
        ),
    }
}

/// The Event for a failed engine call (the Milvus code is in the error text).
pub fn failure_event(action: &str, error: &ClientError) -> EventSpec {
    let reason = match error {
        ClientError::Unreachable { .. } => "EngineUnreachable",
        ClientError::Engine { .. } => "EngineError",
    };
    EventSpec::warning(reason, action, error.to_string())
}

/// Who publishes (`reportingController` / `reportingInstance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reporter {
    /// `collection-operator`.
    pub controller: String,
    /// The pod name, when known.
    pub instance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    regarding: (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    spec: EventSpec,
}

struct Published {
    name: String,
    namespace: String,
    count: i32,
    last: Timestamp,
}

/// Publishes `events.k8s.io/v1` Events. Share one per process so repeats aggregate.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    published: Mutex<HashMap<Key, Published>>,
}

impl Recorder {
    /// A recorder writing through `client`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            published: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes `spec` about `regarding`. Failures are logged, not returned: an Event is
    /// a report, and a reconcile must not fail (and repeat its engine writes) because the
    /// report could not be filed.
    pub async fn publish(&self, spec: &EventSpec, regarding: &ObjectReference) {
        if let Err(error) = self.try_publish(spec, regarding).await {
            tracing::warn!(
                reason = %spec.reason,
                object = regarding.name.as_deref().unwrap_or_default(),
                %error,
                "could not publish an Event"
            );
        }
    }

    async fn try_publish(
        &self,
        spec: &EventSpec,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let window = k8s_openapi::jiff::SignedDuration::try_from(AGGREGATION_WINDOW)
            .unwrap_or(k8s_openapi::jiff::SignedDuration::from_secs(360));
        let key = Key {
            regarding: (
                regarding.namespace.clone(),
                regarding.kind.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            spec: spec.clone(),
        };
        let repeat = {
            let mut published = self.published.lock();
            published.retain(|_, entry| entry.last + window > now);
            published
                .get(&key)
                .map(|entry| (entry.name.clone(), entry.namespace.clone(), entry.count + 1))
        };
        if let Some((name, namespace, count)) = repeat {
            let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
            let patch = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) }
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            if let Some(entry) = self.published.lock().get_mut(&key) {
                entry.count = count;
                entry.last = now;
            }
            return Ok(());
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let name = format!(
            "{}.{:x}",
            regarding
                .name
                .as_deref()
                .unwrap_or(self.reporter.controller.as_str()),
            now.as_nanosecond()
        );
        let event = Event {
            action: Some(spec.action.clone()),
            reason: Some(spec.reason.clone()),
            note: Some(truncate(&spec.note, 1024)),
            type_: Some(spec.type_.as_str().to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        self.published.lock().insert(
            key,
            Published {
                name,
                namespace,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }
}

/// At most `limit` bytes, cut at a character boundary (the API rejects notes over 1 kB).
fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
