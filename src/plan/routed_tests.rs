//! The routed-alias planner against a fake clock: every test passes `now` explicitly.

use super::*;
use crate::crd::routed::RoutedAlias;

fn ts(text: &str) -> Timestamp {
    text.parse().expect("a test timestamp")
}

fn routed(spec: serde_json::Value) -> RoutedAlias {
    let mut full = serde_json::json!({
        "coordinatorRef": {"name": "main"},
        "template": {"fields": [
            {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
            {"name": "embedding", "dataType": "FloatVector", "dim": 8}
        ]},
    });
    if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        for (key, value) in extra {
            full.insert(key.clone(), value.clone());
        }
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "RoutedAlias",
        "metadata": {"name": "news", "namespace": "search", "uid": "uid-news"},
        "spec": full,
    }))
    .expect("a well-typed RoutedAlias")
}

fn member(start: &str, ready: bool) -> Member {
    let start = ts(start);
    Member {
        resource: format!("news-{}", stamp(start).to_ascii_lowercase()),
        collection: collection_name("news", start),
        start,
        ready,
        deleting: false,
    }
}

fn created(plan: &RoutedPlan) -> Vec<String> {
    plan.create.iter().map(|c| c.engine_name()).collect()
}

fn retired(plan: &RoutedPlan) -> Vec<String> {
    plan.retire.iter().map(|m| m.collection.clone()).collect()
}

fn observed(members: Vec<Member>, alias: Option<&str>) -> RoutedObserved {
    RoutedObserved {
        members,
        alias_bound: alias.map(str::to_string),
        alias_desired: alias.map(str::to_string),
    }
}

fn reason(plan: &RoutedPlan) -> Option<RoutedReason> {
    match &plan.verdict {
        RoutedVerdict::Ready { .. } => None,
        RoutedVerdict::NotReady { reason, .. } => Some(*reason),
    }
}

#[test]
fn names_round_trip_and_foreign_names_are_not_members() {
    let start = ts("2026-11-22T00:00:00Z");
    assert_eq!(collection_name("news", start), "news_20261122T000000Z");
    assert_eq!(start_of("news", "news_20261122T000000Z"), Some(start));
    assert_eq!(start_of("news", "news_v2"), None);
    assert_eq!(start_of("news", "newsy_20261122T000000Z"), None);
    assert_eq!(start_of("news", "news_20261122T000000"), None);
}

#[test]
fn intervals_and_durations_parse_and_bad_ones_say_why() {
    assert_eq!(
        "7d".parse::<Interval>(),
        Ok(Interval {
            count: 7,
            unit: Unit::Day
        })
    );
    assert_eq!("1M".parse::<Interval>().map(|i| i.unit), Ok(Unit::Month));
    assert!("0d".parse::<Interval>().is_err());
    assert!("1y".parse::<Interval>().is_err());
    assert!("".parse::<Interval>().is_err());
    assert_eq!(
        parse_duration("autoDeleteAge", "2d"),
        Ok(SignedDuration::from_hours(48))
    );
    let error = parse_duration("autoDeleteAge", "2M").expect_err("months are not durations");
    assert!(error.to_string().contains("autoDeleteAge"), "{error}");
}

#[test]
fn bad_time_zone_or_start_is_invalid_spec_and_changes_nothing() {
    for (spec, words) in [
        (
            serde_json::json!({"start": "2026-01-01", "interval": "1d", "timeZone": "Mars/Olympus"}),
            "Mars/Olympus",
        ),
        (
            serde_json::json!({"start": "2026-02-30", "interval": "1d"}),
            "start",
        ),
    ] {
        let plan = plan_routed(
            &routed(spec),
            ts("2026-03-01T00:00:00Z"),
            &RoutedObserved::default(),
        );
        assert_eq!(reason(&plan), Some(RoutedReason::InvalidSpec));
        let RoutedVerdict::NotReady { message, .. } = &plan.verdict else {
            unreachable!()
        };
        assert!(message.contains(words), "{message}");
        assert!(plan.create.is_empty() && plan.retire.is_empty() && plan.next.is_none());
    }
}

#[test]
fn across_hourly_boundaries_create_ahead_then_switch_at_the_boundary() {
    let spec = routed(serde_json::json!({
        "start": "2026-11-22T00:00:00Z", "interval": "1h", "preemptiveCreate": "10m"
    }));

    // 09:30, nothing yet: the current interval's collection is created (not back-filled
    // to `start`), and the next action is the preemptive create at 09:50.
    let now = ts("2026-11-22T09:30:00Z");
    let plan = plan_routed(&spec, now, &RoutedObserved::default());
    assert_eq!(created(&plan), ["news_20261122T090000Z"]);
    assert_eq!(plan.alias_target, None);
    assert_eq!(reason(&plan), Some(RoutedReason::WaitingForCollection));
    let next = plan.next.clone().expect("next");
    assert_eq!(
        (next.kind, next.collection.as_str(), next.at),
        (
            NextKind::Create,
            "news_20261122T100000Z",
            ts("2026-11-22T09:50:00Z")
        )
    );
    assert_eq!(
        plan.wait(now),
        Some(std::time::Duration::from_secs(20 * 60))
    );
    let generated = &plan.create[0];
    assert_eq!(
        generated.metadata.name.as_deref(),
        Some("news-20261122t090000z")
    );
    assert_eq!(generated.spec.database, "default");

    // 09:30 once it is Ready: the alias points to it, Ready.
    let members = vec![member("2026-11-22T09:00:00Z", true)];
    let plan = plan_routed(&spec, now, &observed(members.clone(), None));
    assert_eq!(plan.alias_target.as_deref(), Some("news_20261122T090000Z"));
    let plan = plan_routed(
        &spec,
        now,
        &observed(members.clone(), Some("news_20261122T090000Z")),
    );
    assert!(plan.create.is_empty());
    assert_eq!(reason(&plan), None);

    // 09:50: the next one is created ahead; the alias stays; the switch is at 10:00.
    let now = ts("2026-11-22T09:50:00Z");
    let plan = plan_routed(
        &spec,
        now,
        &observed(members.clone(), Some("news_20261122T090000Z")),
    );
    assert_eq!(created(&plan), ["news_20261122T100000Z"]);
    assert_eq!(plan.alias_target.as_deref(), Some("news_20261122T090000Z"));
    let next = plan.next.clone().expect("next");
    assert_eq!(
        (next.kind, next.at),
        (NextKind::SwitchAlias, ts("2026-11-22T10:00:00Z"))
    );
    assert_eq!(plan.wait(now), Some(std::time::Duration::from_secs(600)));

    // 09:59:59 with the next one Ready: still not its interval.
    let mut both = members.clone();
    both.push(member("2026-11-22T10:00:00Z", true));
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T09:59:59Z"),
        &observed(both.clone(), Some("news_20261122T090000Z")),
    );
    assert_eq!(plan.alias_target.as_deref(), Some("news_20261122T090000Z"));
    assert_eq!(reason(&plan), None);

    // 10:00:00 exactly: the alias moves; until the move is bound the series waits.
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T10:00:00Z"),
        &observed(both.clone(), Some("news_20261122T090000Z")),
    );
    assert_eq!(plan.alias_target.as_deref(), Some("news_20261122T100000Z"));
    assert_eq!(reason(&plan), Some(RoutedReason::WaitingForCollection));
    let positions: Vec<Position> = plan.series.iter().map(|e| e.position).collect();
    assert_eq!(positions, [Position::Past, Position::Current]);
}

#[test]
fn the_alias_waits_for_a_current_collection_that_is_not_ready() {
    let spec = routed(serde_json::json!({"start": "2026-11-22T00:00:00Z", "interval": "1h"}));
    let members = vec![
        member("2026-11-22T09:00:00Z", true),
        member("2026-11-22T10:00:00Z", false),
    ];
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T10:05:00Z"),
        &observed(members, Some("news_20261122T090000Z")),
    );
    assert_eq!(plan.alias_target.as_deref(), Some("news_20261122T090000Z"));
    let RoutedVerdict::NotReady {
        reason: why,
        message,
    } = &plan.verdict
    else {
        panic!("not ready expected")
    };
    assert_eq!(*why, RoutedReason::WaitingForCollection);
    assert!(message.contains("news_20261122T100000Z"), "{message}");
}

#[test]
fn the_alias_never_moves_backwards() {
    let spec = routed(serde_json::json!({"start": "2026-11-22T00:00:00Z", "interval": "1h"}));
    // The newest is bound but is momentarily not Ready (e.g. its Collection re-syncing);
    // an older Ready one must not take the alias back.
    let members = vec![
        member("2026-11-22T09:00:00Z", true),
        member("2026-11-22T10:00:00Z", false),
    ];
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T10:30:00Z"),
        &observed(members, Some("news_20261122T100000Z")),
    );
    assert_eq!(plan.alias_target.as_deref(), Some("news_20261122T100000Z"));
}

#[test]
fn daily_in_berlin_follows_local_midnight_across_both_dst_switches() {
    let spec = routed(serde_json::json!({
        "start": "2026-03-01", "interval": "1d", "timeZone": "Europe/Berlin"
    }));
    let schedule = Schedule::from_spec(&spec.spec).expect("valid");

    // 29 March 2026: clocks go 02:00 → 03:00, the day lasts 23 hours.
    let now = ts("2026-03-29T12:00:00Z");
    let k = schedule.index_at(now).expect("started");
    let (start, end) = (
        schedule.boundary(k).expect("start"),
        schedule.boundary(k + 1).expect("end"),
    );
    assert_eq!(start, ts("2026-03-28T23:00:00Z"), "local midnight, UTC+1");
    assert_eq!(
        end,
        ts("2026-03-29T22:00:00Z"),
        "next local midnight, UTC+2"
    );
    assert_eq!(start.duration_until(end), SignedDuration::from_hours(23));
    let plan = plan_routed(&spec, now, &RoutedObserved::default());
    assert_eq!(created(&plan), ["news_20260328T230000Z"]);
    assert_eq!(
        plan.next.as_ref().map(|n| (n.kind, n.at)),
        Some((NextKind::Create, end)),
        "the next collection is due at the next local midnight, 22:00 UTC"
    );
    assert_eq!(
        plan.wait(now),
        Some(std::time::Duration::from_secs(10 * 3600))
    );

    // 25 October 2026: clocks go 03:00 → 02:00, the day lasts 25 hours.
    let now = ts("2026-10-25T12:00:00Z");
    let k = schedule.index_at(now).expect("started");
    let (start, end) = (
        schedule.boundary(k).expect("start"),
        schedule.boundary(k + 1).expect("end"),
    );
    assert_eq!(start, ts("2026-10-24T22:00:00Z"));
    assert_eq!(end, ts("2026-10-25T23:00:00Z"));
    assert_eq!(start.duration_until(end), SignedDuration::from_hours(25));
    let members = vec![Member {
        ready: true,
        ..member("2026-10-24T22:00:00Z", true)
    }];
    let plan = plan_routed(
        &spec,
        now,
        &observed(members, Some("news_20261024T220000Z")),
    );
    assert!(plan.create.is_empty());
    assert_eq!(reason(&plan), None);
    assert_eq!(
        plan.next
            .as_ref()
            .map(|n| (n.kind, n.collection.as_str(), n.at)),
        Some((NextKind::Create, "news_20261025T230000Z", end))
    );

    // One instant before and at the boundary.
    assert_eq!(
        schedule.index_at(ts("2026-10-25T22:59:59Z")),
        Some(k),
        "still the 25-hour day"
    );
    assert_eq!(schedule.index_at(end), Some(k + 1));
}

#[test]
fn hourly_intervals_stay_exact_hours_across_dst() {
    let spec = routed(serde_json::json!({
        "start": "2026-03-29T00:00:00", "interval": "1h", "timeZone": "Europe/Berlin"
    }));
    let schedule = Schedule::from_spec(&spec.spec).expect("valid");
    let starts: Vec<Timestamp> = (0..4).filter_map(|k| schedule.boundary(k)).collect();
    assert_eq!(
        starts,
        [
            ts("2026-03-28T23:00:00Z"),
            ts("2026-03-29T00:00:00Z"),
            ts("2026-03-29T01:00:00Z"),
            ts("2026-03-29T02:00:00Z"),
        ]
    );
}

#[test]
fn monthly_intervals_clamp_without_drifting() {
    let spec = routed(serde_json::json!({"start": "2026-01-31T00:00:00Z", "interval": "1M"}));
    let schedule = Schedule::from_spec(&spec.spec).expect("valid");
    let starts: Vec<Timestamp> = (0..3).filter_map(|k| schedule.boundary(k)).collect();
    assert_eq!(
        starts,
        [
            ts("2026-01-31T00:00:00Z"),
            ts("2026-02-28T00:00:00Z"),
            ts("2026-03-31T00:00:00Z"),
        ]
    );
    assert_eq!(schedule.index_at(ts("2026-03-30T23:59:59Z")), Some(1));
    assert_eq!(schedule.index_of(ts("2026-03-31T00:00:00Z")), Some(2));
    assert_eq!(schedule.index_of(ts("2026-03-30T00:00:00Z")), None);
}

#[test]
fn before_the_series_begins_nothing_is_created_until_the_preemptive_time() {
    let spec = routed(serde_json::json!({
        "start": "2026-12-01T00:00:00Z", "interval": "1d", "preemptiveCreate": "2h"
    }));
    let now = ts("2026-11-30T12:00:00Z");
    let plan = plan_routed(&spec, now, &RoutedObserved::default());
    assert!(plan.create.is_empty());
    assert_eq!(
        plan.next.as_ref().map(|n| (n.kind, n.at)),
        Some((NextKind::Create, ts("2026-11-30T22:00:00Z")))
    );
    let plan = plan_routed(
        &spec,
        ts("2026-11-30T22:00:00Z"),
        &RoutedObserved::default(),
    );
    assert_eq!(created(&plan), ["news_20261201T000000Z"]);
    assert_eq!(
        plan.next.as_ref().map(|n| (n.kind, n.at)),
        Some((NextKind::SwitchAlias, ts("2026-12-01T00:00:00Z")))
    );
}

#[test]
fn an_outage_over_several_intervals_catches_up_in_one_pass_and_moves_once() {
    let spec = routed(serde_json::json!({
        "start": "2026-11-01T00:00:00Z", "interval": "1d", "autoDeleteAge": "2d"
    }));
    // The operator last ran on the 3rd; it comes back on the 10th at noon.
    let members = vec![
        member("2026-11-01T00:00:00Z", true),
        member("2026-11-02T00:00:00Z", true),
        member("2026-11-03T00:00:00Z", true),
    ];
    let now = ts("2026-11-10T12:00:00Z");
    let plan = plan_routed(
        &spec,
        now,
        &observed(members.clone(), Some("news_20261103T000000Z")),
    );
    // Missing intervals still inside the live window are created (the 8th ended on the
    // 9th, retained until the 11th); the 4th–7th are already past their age.
    assert_eq!(
        created(&plan),
        [
            "news_20261108T000000Z",
            "news_20261109T000000Z",
            "news_20261110T000000Z"
        ]
    );
    // The 1st and 2nd are due; the 3rd too, but the alias still points to it.
    assert_eq!(
        retired(&plan),
        ["news_20261101T000000Z", "news_20261102T000000Z"]
    );
    assert_eq!(plan.alias_target.as_deref(), Some("news_20261103T000000Z"));
    assert_eq!(reason(&plan), Some(RoutedReason::WaitingForCollection));

    // Next pass: the new ones are Ready. The alias moves once, to the newest (not through
    // the 8th and 9th); the 3rd stays until the move is bound.
    let mut members: Vec<Member> = members[2..].to_vec();
    for start in [
        "2026-11-08T00:00:00Z",
        "2026-11-09T00:00:00Z",
        "2026-11-10T00:00:00Z",
    ] {
        members.push(member(start, true));
    }
    let plan = plan_routed(
        &spec,
        now,
        &observed(members.clone(), Some("news_20261103T000000Z")),
    );
    assert!(plan.create.is_empty());
    assert_eq!(plan.alias_target.as_deref(), Some("news_20261110T000000Z"));
    assert!(plan.retire.is_empty(), "the alias still points to the 3rd");

    // Once bound: the 3rd is retired, nothing else; next is the 8th's retirement at the
    // 11th 00:00 (its end, the 9th, plus two days).
    let plan = plan_routed(
        &spec,
        now,
        &observed(members, Some("news_20261110T000000Z")),
    );
    assert_eq!(retired(&plan), ["news_20261103T000000Z"]);
    assert_eq!(reason(&plan), None);
    assert_eq!(
        plan.next
            .as_ref()
            .map(|n| (n.kind, n.collection.as_str(), n.at)),
        Some((
            NextKind::Create,
            "news_20261111T000000Z",
            ts("2026-11-11T00:00:00Z")
        ))
    );
    let retirements: Vec<&SeriesEntry> = plan
        .series
        .iter()
        .filter(|e| e.position == Position::Retiring)
        .collect();
    assert_eq!(retirements.len(), 1);
}

#[test]
fn retirement_never_takes_current_or_next_even_with_a_zero_age() {
    let spec = routed(serde_json::json!({
        "start": "2026-11-22T00:00:00Z", "interval": "1h", "autoDeleteAge": "0s",
        "preemptiveCreate": "30m"
    }));
    let members = vec![
        member("2026-11-22T08:00:00Z", true),
        member("2026-11-22T09:00:00Z", true),
        member("2026-11-22T10:00:00Z", true),
    ];
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T09:45:00Z"),
        &observed(members, Some("news_20261122T090000Z")),
    );
    assert_eq!(retired(&plan), ["news_20261122T080000Z"]);
    assert!(plan.create.is_empty());
}

#[test]
fn a_collection_being_deleted_is_not_recreated_nor_counted() {
    let spec = routed(serde_json::json!({"start": "2026-11-22T00:00:00Z", "interval": "1h"}));
    let mut old = member("2026-11-22T10:00:00Z", true);
    old.deleting = true;
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T10:30:00Z"),
        &observed(vec![old], None),
    );
    assert!(
        plan.create.is_empty(),
        "its interval waits for the deletion"
    );
    assert_eq!(plan.series.len(), 1);
    assert_eq!(plan.series[0].position, Position::Retiring);
}

#[test]
fn max_collections_stops_creation_with_limit_reached() {
    let spec = routed(serde_json::json!({
        "start": "2026-11-22T00:00:00Z", "interval": "1h", "maxCollections": 3,
        "preemptiveCreate": "15m"
    }));
    let members = vec![
        member("2026-11-22T07:00:00Z", true),
        member("2026-11-22T08:00:00Z", true),
        member("2026-11-22T09:00:00Z", true),
    ];
    // 10:50: the current (10:00) and the next (11:00) are missing; no room for either.
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T10:50:00Z"),
        &observed(members.clone(), Some("news_20261122T090000Z")),
    );
    assert!(plan.create.is_empty());
    let RoutedVerdict::NotReady {
        reason: why,
        message,
    } = &plan.verdict
    else {
        panic!("LimitReached expected")
    };
    assert_eq!(*why, RoutedReason::LimitReached);
    assert!(message.contains("maxCollections 3"), "{message}");
    assert_eq!(plan.alias_target.as_deref(), Some("news_20261122T090000Z"));

    // Room for one: the current interval's comes before the next one's.
    let spec = routed(serde_json::json!({
        "start": "2026-11-22T00:00:00Z", "interval": "1h", "maxCollections": 4,
        "preemptiveCreate": "15m"
    }));
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T10:50:00Z"),
        &observed(members, Some("news_20261122T090000Z")),
    );
    assert_eq!(created(&plan), ["news_20261122T100000Z"]);
    assert_eq!(reason(&plan), Some(RoutedReason::LimitReached));
}

#[test]
fn retirements_make_room_under_the_cap_in_the_same_pass() {
    let spec = routed(serde_json::json!({
        "start": "2026-11-22T00:00:00Z", "interval": "1h", "maxCollections": 2,
        "autoDeleteAge": "1h"
    }));
    let members = vec![
        member("2026-11-22T07:00:00Z", true),
        member("2026-11-22T08:00:00Z", true),
    ];
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T09:10:00Z"),
        &observed(members, Some("news_20261122T080000Z")),
    );
    assert_eq!(retired(&plan), ["news_20261122T070000Z"]);
    assert_eq!(created(&plan), ["news_20261122T090000Z"]);
    assert_ne!(reason(&plan), Some(RoutedReason::LimitReached));
}

#[test]
fn a_template_change_applies_to_future_collections_only() {
    let before = routed(serde_json::json!({
        "start": "2026-11-22T00:00:00Z", "interval": "1h", "preemptiveCreate": "10m"
    }));
    let mut after = before.clone();
    after.spec.template.fields[1].dim = Some(16);
    after.spec.template.description = Some("model v2".into());
    let members = vec![member("2026-11-22T09:00:00Z", true)];
    let alias = Some("news_20261122T090000Z");

    // Mid-interval: the template edit creates nothing and touches nothing.
    let plan = plan_routed(
        &after,
        ts("2026-11-22T09:30:00Z"),
        &observed(members.clone(), alias),
    );
    assert!(plan.create.is_empty() && plan.retire.is_empty());

    // At the preemptive time the next collection is created from the new template.
    let plan = plan_routed(
        &after,
        ts("2026-11-22T09:50:00Z"),
        &observed(members.clone(), alias),
    );
    assert_eq!(created(&plan), ["news_20261122T100000Z"]);
    assert_eq!(plan.create[0].spec.fields[1].dim, Some(16));
    assert_eq!(plan.create[0].spec.description.as_deref(), Some("model v2"));
    let old = plan_routed(
        &before,
        ts("2026-11-22T09:50:00Z"),
        &observed(members, alias),
    );
    assert_eq!(old.create[0].spec.fields[1].dim, Some(8));
}

#[test]
fn generated_collections_are_owned_and_carry_the_series_policy() {
    let spec = routed(serde_json::json!({
        "start": "2026-11-22T00:00:00Z", "interval": "1d", "deletionPolicy": "Delete",
        "database": "news_db"
    }));
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T01:00:00Z"),
        &RoutedObserved::default(),
    );
    let collection = &plan.create[0];
    let owner = &collection
        .metadata
        .owner_references
        .as_ref()
        .expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("RoutedAlias", "news", "uid-news")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(
        collection.spec.deletion_policy,
        crate::crd::CollectionDeletionPolicy::Delete
    );
    assert_eq!(collection.spec.database, "news_db");
    assert_eq!(
        collection.metadata.namespace.as_deref(),
        Some("search"),
        "children live in the series' namespace"
    );
    let annotations = collection.metadata.annotations.as_ref().expect("annotated");
    assert_eq!(
        annotations
            .get(crate::crd::routed::INTERVAL_END_ANNOTATION)
            .map(String::as_str),
        Some("2026-11-23T00:00:00Z")
    );
}

#[test]
fn paused_plans_nothing() {
    let mut spec = routed(serde_json::json!({"start": "2026-11-22T00:00:00Z", "interval": "1h"}));
    spec.metadata.annotations = Some(
        [(PAUSED_ANNOTATION.to_string(), "true".to_string())]
            .into_iter()
            .collect(),
    );
    let plan = plan_routed(
        &spec,
        ts("2026-11-22T10:30:00Z"),
        &RoutedObserved::default(),
    );
    assert_eq!(reason(&plan), Some(RoutedReason::Paused));
    assert!(plan.create.is_empty());
}
