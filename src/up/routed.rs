//! `RoutedAlias` in `up` and `plan`: the same pure planner as the operator
//! ([`plan_routed`]), with the wall clock, expanded into the same generated resources
//! (one `Collection` per interval, one `CollectionAlias`) that then go through the
//! ordinary whole-set plan like any manifest.
//!
//! `up` keeps the generated resources in its state file as records owned by the
//! `RoutedAlias` (`Record::owner`): they are not in the manifest folder, so the folder
//! does not decide when they appear or go; the schedule does. Retiring a collection marks
//! its record deleted, so its `deletionPolicy` applies exactly as for a deleted manifest.
//! Removing the `RoutedAlias` file marks all of its records deleted: the alias is dropped
//! and each collection follows the series' `deletionPolicy`.
//!
//! `plan` has no state: it finds the series in the engine by name, looking at the last
//! `maxCollections` intervals (more cannot be live) and at the alias's target.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::manifest::{Kind, ResourceId};
use super::reconcile::Intents;
use super::state::{Record, State};
use crate::client::{ClientError, EngineClient};
use crate::crd::{Collection, RoutedAlias};
use crate::plan::ObjectKey;
use crate::plan::routed::{
    Member, RoutedObserved, RoutedPlan, RoutedVerdict, Schedule, plan_routed, start_of,
};

/// What expanding the routed aliases of `up`'s state did.
#[derive(Debug, Default)]
pub struct Expanded {
    /// A status row per `RoutedAlias`: target column and status column.
    pub rows: BTreeMap<ResourceId, (String, String, String, String)>,
    /// Time until the earliest scheduled action of any series.
    pub wake: Option<Duration>,
    /// Records were added, changed or marked deleted.
    pub changed: bool,
}

fn as_object<K: serde::Serialize>(resource: &K) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(resource).context("encoding a generated resource")?;
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    Ok(value)
}

/// The `RoutedAlias` records of `state` planned at `now`: generated records added,
/// retargeted or marked deleted in place.
pub fn expand(state: &mut State, now: Timestamp, since: &str) -> anyhow::Result<Expanded> {
    let mut expanded = Expanded::default();
    let routed_ids: Vec<ResourceId> = state
        .records
        .keys()
        .filter(|id| id.kind == Kind::RoutedAlias)
        .cloned()
        .collect();
    for id in routed_ids {
        let owner = id.key.to_string();
        let Some(record) = state.records.get(&id) else {
            continue;
        };
        let routed = RoutedAlias::deserialize(&record.manifest)
            .with_context(|| format!("recorded manifest of {id}"))?;
        let deleted = record.deleted;
        let children: Vec<ResourceId> = state
            .records
            .iter()
            .filter(|(_, r)| r.owner.as_deref() == Some(owner.as_str()))
            .map(|(child, _)| child.clone())
            .collect();
        let alias = routed.engine_name();
        let database = routed.spec.database.clone();

        if deleted {
            for child in &children {
                if let Some(record) = state.records.get_mut(child)
                    && !record.deleted
                {
                    record.deleted = true;
                    expanded.changed = true;
                }
            }
            if children.is_empty() {
                state.records.remove(&id);
                expanded.changed = true;
            } else {
                expanded.rows.insert(
                    id.clone(),
                    (
                        database,
                        alias,
                        "-".to_string(),
                        format!(
                            "DELETING: {} generated resource(s) follow their deletionPolicy",
                            children.len()
                        ),
                    ),
                );
            }
            continue;
        }

        let mut observed = RoutedObserved::default();
        for child in children.iter().filter(|c| c.kind == Kind::Collection) {
            let Some(record) = state.records.get(child) else {
                continue;
            };
            let collection = Collection::deserialize(&record.manifest)
                .with_context(|| format!("recorded manifest of {child}"))?;
            let name = collection.engine_name();
            let Some(start) = start_of(&alias, &name) else {
                continue;
            };
            observed.members.push(Member {
                resource: child.key.name.clone(),
                collection: name,
                start,
                ready: record.collection_id.is_some() && !record.deleted,
                deleting: record.deleted,
            });
        }
        let alias_id = ResourceId {
            kind: Kind::CollectionAlias,
            key: id.key.clone(),
        };
        let conflict = match state.records.get(&alias_id) {
            Some(record) if record.owner.as_deref() == Some(owner.as_str()) => {
                observed.alias_bound = record.bound.clone();
                observed.alias_desired = record
                    .manifest
                    .pointer("/spec/collection")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                false
            }
            Some(_) => true,
            None => false,
        };

        let plan = plan_routed(&routed, now, &observed);
        for collection in &plan.create {
            let child = ResourceId {
                kind: Kind::Collection,
                key: ObjectKey {
                    namespace: id.key.namespace.clone(),
                    name: collection.metadata.name.clone().unwrap_or_default(),
                },
            };
            if state.records.contains_key(&child) {
                continue;
            }
            state
                .records
                .insert(child, generated(as_object(collection)?, since, &owner));
            expanded.changed = true;
        }
        if let Some(target) = &plan.alias_target
            && !conflict
            && observed.alias_desired.as_deref() != Some(target.as_str())
        {
            let manifest = as_object(&routed.member_alias(target))?;
            match state.records.get_mut(&alias_id) {
                Some(record) => {
                    record.manifest = manifest;
                    record.deleted = false;
                }
                None => {
                    state
                        .records
                        .insert(alias_id.clone(), generated(manifest, since, &owner));
                }
            }
            expanded.changed = true;
        }
        for member in &plan.retire {
            let child = ResourceId {
                kind: Kind::Collection,
                key: ObjectKey {
                    namespace: id.key.namespace.clone(),
                    name: member.resource.clone(),
                },
            };
            if let Some(record) = state.records.get_mut(&child)
                && !record.deleted
            {
                record.deleted = true;
                expanded.changed = true;
            }
        }

        let wait = plan.wait(now);
        expanded.wake = match (expanded.wake, wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let status = if conflict {
            format!(
                "Conflict: a CollectionAlias manifest {} exists; the series cannot manage \
                 its alias",
                id.key
            )
        } else {
            verdict_text(&plan)
        };
        expanded.rows.insert(
            id.clone(),
            (database, alias, target_text(&plan, &observed), status),
        );
    }
    Ok(expanded)
}

/// A Ready member of `alias`'s series named `collection`, if the name is one of its series.
fn ready_member(alias: &str, collection: String) -> Option<Member> {
    let start = start_of(alias, &collection)?;
    Some(Member {
        resource: String::new(),
        collection,
        start,
        ready: true,
        deleting: false,
    })
}

fn generated(manifest: Value, since: &str, owner: &str) -> Record {
    Record {
        owner: Some(owner.to_string()),
        ..Record::accepted(manifest, since)
    }
}

/// `READY` or `Reason: message`, as up prints every resource.
pub fn verdict_text(plan: &RoutedPlan) -> String {
    match &plan.verdict {
        RoutedVerdict::Ready { .. } => "READY".to_string(),
        RoutedVerdict::NotReady { reason, message } => format!("{}: {message}", reason.as_str()),
    }
}

fn target_text(plan: &RoutedPlan, observed: &RoutedObserved) -> String {
    let bound = observed.alias_bound.as_deref().unwrap_or("-");
    let live = plan
        .series
        .iter()
        .filter(|e| e.position.as_str() != "Retiring")
        .count();
    match &plan.next {
        Some(next) => format!(
            "{bound} ({live} live; next {} {} at {})",
            next.kind.as_str(),
            next.collection,
            next.at
        ),
        None => format!("{bound} ({live} live)"),
    }
}

/// `plan`'s view of one series: the generated resources it would declare at `now`,
/// pushed into `intents`, with the series found in the engine by name.
pub async fn push_intents(
    client: &EngineClient,
    routed: &RoutedAlias,
    now: Timestamp,
    intents: &mut Intents,
) -> Result<RoutedPlan, ClientError> {
    let alias = routed.engine_name();
    let database = routed.spec.database.clone();
    let mut observed = RoutedObserved::default();
    // Every collection of the series, from one listing of its database: also those
    // older than the last `maxCollections` intervals (left by a shorter retention, or
    // kept by a Retain policy), which the plan must show.
    if Schedule::from_spec(&routed.spec).is_ok()
        && let Some(listed) = client.clone().collection_ids(&database).await?
    {
        let target = client.clone().alias_target(&database, &alias).await?;
        observed.alias_bound = target.clone();
        observed.alias_desired = target;
        observed.members.extend(
            listed
                .into_keys()
                .filter_map(|name| ready_member(&alias, name)),
        );
    }
    let plan = plan_routed(routed, now, &observed);
    // What up reaches in its next pass: the collections created by this plan are Ready,
    // and the alias may move to one of them. `plan` shows both steps at once, as the
    // whole-set plan counts a collection created earlier in the plan as existing.
    let mut ahead = observed.clone();
    ahead.members.extend(
        plan.create
            .iter()
            .filter_map(|collection| ready_member(&alias, collection.engine_name())),
    );
    let alias_target = plan_routed(routed, now, &ahead).alias_target;
    let member_of = |member: &Member| {
        let stamp = crate::plan::routed::stamp(member.start);
        routed.member_collection(
            &routed.spec.template,
            &member.collection,
            &stamp,
            &member.start.to_string(),
            "",
        )
    };
    for member in &observed.members {
        let retiring = plan
            .retire
            .iter()
            .any(|r| r.collection == member.collection);
        let intent = intents.push_collection(&member_of(member));
        intent.deleting = retiring;
    }
    for collection in &plan.create {
        intents.push_collection(collection);
    }
    if let Some(target) = &alias_target {
        intents.push_alias(&routed.member_alias(target));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed_record(deleted: bool) -> Record {
        let manifest = serde_json::json!({
            "apiVersion": "collections.dev/v1alpha1",
            "kind": "RoutedAlias",
            "metadata": {"name": "news"},
            "spec": {
                "coordinatorRef": {"name": "local"},
                "start": "2026-11-22T00:00:00Z",
                "interval": "1h",
                "autoDeleteAge": "1h",
                "deletionPolicy": "Delete",
                "template": {"fields": [
                    {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
                    {"name": "v", "dataType": "FloatVector", "dim": 4}
                ]}
            }
        });
        Record {
            deleted,
            ..Record::accepted(manifest, "2026-11-22T00:00:00Z")
        }
    }

    fn id(kind: Kind, name: &str) -> ResourceId {
        ResourceId::new(kind, "default", name)
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    #[test]
    fn generated_records_follow_the_schedule_and_the_file() {
        let mut state = State::default();
        state
            .records
            .insert(id(Kind::RoutedAlias, "news"), routed_record(false));

        // 09:30: the current collection is generated, owned by the series; up wakes at
        // 10:00 for the next one.
        let expanded = expand(&mut state, ts("2026-11-22T09:30:00Z"), "now").expect("expand");
        assert!(expanded.changed);
        assert_eq!(expanded.wake, Some(Duration::from_secs(30 * 60)));
        let child = id(Kind::Collection, "news-20261122t090000z");
        let record = state.records.get_mut(&child).expect("generated");
        assert_eq!(record.owner.as_deref(), Some("default/news"));
        assert_eq!(record.manifest["spec"]["name"], "news_20261122T090000Z");
        assert_eq!(record.manifest["kind"], "Collection");

        // Created by the pass (up records the ID): the alias record follows.
        record.collection_id = Some("7".into());
        expand(&mut state, ts("2026-11-22T09:31:00Z"), "now").expect("expand");
        let alias = state
            .records
            .get_mut(&id(Kind::CollectionAlias, "news"))
            .expect("the generated alias");
        assert_eq!(
            alias.manifest["spec"]["collection"],
            "news_20261122T090000Z"
        );
        alias.bound = Some("news_20261122T090000Z".into());

        // 11:30: 10:00's collection is generated, and 09:00's (ended 10:00, +1h) would
        // be retired but the alias still points to it.
        let expanded = expand(&mut state, ts("2026-11-22T11:30:00Z"), "now").expect("expand");
        assert!(
            state
                .records
                .contains_key(&id(Kind::Collection, "news-20261122t110000z"))
        );
        assert!(!state.records[&child].deleted);
        assert!(
            expanded.rows[&id(Kind::RoutedAlias, "news")]
                .3
                .contains("WaitingForCollection")
        );

        // The file is removed: every generated record is marked deleted; once they are
        // gone (up removes released records), so is the series' own record.
        state
            .records
            .get_mut(&id(Kind::RoutedAlias, "news"))
            .expect("routed")
            .deleted = true;
        expand(&mut state, ts("2026-11-22T11:31:00Z"), "now").expect("expand");
        let generated: Vec<&Record> = state
            .records
            .values()
            .filter(|r| r.owner.is_some())
            .collect();
        assert!(!generated.is_empty() && generated.iter().all(|r| r.deleted));
        state.records.retain(|_, r| r.owner.is_none());
        expand(&mut state, ts("2026-11-22T11:32:00Z"), "now").expect("expand");
        assert!(state.records.is_empty());
    }
}
