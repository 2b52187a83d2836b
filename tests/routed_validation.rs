//! The RoutedAlias CRD's rules, evaluated locally with the API server's CEL engine (kube's
//! `cel` feature), and `up`/`plan`'s manifest checks: bad input is refused before anything
//! reaches the engine.

use collection_operator::crd::RoutedAlias;
use collection_operator::up::manifest;

fn routed(name: &str, spec: serde_json::Value) -> RoutedAlias {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "RoutedAlias",
        "metadata": {"name": name, "namespace": "news"},
        "spec": spec,
    }))
    .expect("a well-typed RoutedAlias")
}

fn spec() -> serde_json::Value {
    serde_json::json!({
        "coordinatorRef": {"name": "main"},
        "start": "2026-11-01",
        "interval": "1d",
        "timeZone": "Europe/Berlin",
        "template": {"fields": [
            {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
            {"name": "embedding", "dataType": "FloatVector", "dim": 768}
        ]}
    })
}

fn refused_with(result: Result<(), impl std::fmt::Display>, message: &str) {
    match result {
        Ok(()) => panic!("expected a refusal containing {message:?}"),
        Err(error) => assert!(
            error.to_string().contains(message),
            "{error} does not mention {message:?}"
        ),
    }
}

#[test]
fn a_valid_routed_alias_passes_and_names_its_alias() {
    let valid = routed("daily-news", spec());
    valid.validate_cel().expect("valid");
    assert_eq!(valid.engine_name(), "daily_news");
    assert_eq!(valid.spec.max_collections, 100);
    assert_eq!(valid.spec.time_zone, "Europe/Berlin");
}

#[test]
fn the_schedule_is_immutable_but_the_template_is_not() {
    let old = routed("news", spec());
    for (field, value) in [
        ("interval", serde_json::json!("1h")),
        ("start", serde_json::json!("2026-12-01")),
        ("timeZone", serde_json::json!("UTC")),
    ] {
        let mut changed = spec();
        changed[field] = value;
        refused_with(
            routed("news", changed).validate_cel_update(&old),
            "start, interval and timeZone are immutable",
        );
    }
    let mut changed = spec();
    changed["template"]["fields"][1]["dim"] = serde_json::json!(1024);
    changed["autoDeleteAge"] = serde_json::json!("30d");
    routed("news", changed)
        .validate_cel_update(&old)
        .expect("template and retention may change");
}

#[test]
fn template_rules_and_name_length_are_checked() {
    let mut two_keys = spec();
    two_keys["template"]["fields"][1] =
        serde_json::json!({"name": "other", "dataType": "Int64", "isPrimaryKey": true});
    refused_with(
        routed("news", two_keys).validate_cel(),
        "exactly one field must be the primary key",
    );
    refused_with(
        routed(&"n".repeat(237), spec()).validate_cel(),
        "at most 236 characters",
    );
}

fn load(text: &str) -> Result<manifest::ManifestSet, manifest::LoadError> {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("news.yaml");
    std::fs::write(&path, text).expect("write");
    manifest::load(&[path], None)
}

const MANIFEST: &str = r#"
apiVersion: collections.dev/v1alpha1
kind: RoutedAlias
metadata: {name: news}
spec:
  coordinatorRef: {name: local}
  start: "2026-11-01"
  interval: INTERVAL
  timeZone: ZONE
  template:
    fields:
      - {name: id, dataType: Int64, isPrimaryKey: true}
      - {name: v, dataType: FloatVector, dim: 4}
"#;

#[test]
fn up_and_plan_read_routed_aliases_and_refuse_bad_schedules() {
    let set = load(
        &MANIFEST
            .replace("INTERVAL", "1d")
            .replace("ZONE", "Europe/Berlin"),
    )
    .expect("a valid manifest");
    assert_eq!(set.routed.len(), 1);
    assert_eq!(set.routed[0].resource.engine_name(), "news");

    let error = load(
        &MANIFEST
            .replace("INTERVAL", "1d")
            .replace("ZONE", "Europe/Atlantis"),
    )
    .expect_err("an unknown time zone");
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.contains("Europe/Atlantis") && p.contains("RoutedAlias default/news")),
        "{error}"
    );
    let error = load(&MANIFEST.replace("INTERVAL", "1y").replace("ZONE", "UTC"))
        .expect_err("years are not a unit");
    assert!(
        error.problems.iter().any(|p| p.contains("spec.interval")),
        "{error}"
    );
}
