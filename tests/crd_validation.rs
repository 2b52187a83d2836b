//! The CEL rules in the CRDs, evaluated locally with the same engine the API server uses
//! (kube's `cel` feature): bad manifests are refused before anything reaches the engine,
//! and immutable fields stay immutable.

use collection_operator::crd::{Collection, CollectionAlias, Coordinator};

fn collection(spec: serde_json::Value) -> Collection {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "Collection",
        "metadata": {"name": "products-v1", "namespace": "search"},
        "spec": spec,
    }))
    .expect("a well-typed Collection")
}

fn alias(spec: serde_json::Value) -> CollectionAlias {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "CollectionAlias",
        "metadata": {"name": "products", "namespace": "search"},
        "spec": spec,
    }))
    .expect("a well-typed CollectionAlias")
}

fn valid_collection_spec() -> serde_json::Value {
    serde_json::json!({
        "coordinatorRef": {"name": "main"},
        "fields": [
            {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
            {"name": "title", "dataType": "VarChar", "maxLength": 512},
            {"name": "embedding", "dataType": "FloatVector", "dim": 768}
        ]
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
fn a_valid_collection_passes() {
    let valid = collection(valid_collection_spec());
    valid.validate_cel().expect("valid");
    assert_eq!(valid.engine_name(), "products_v1");
}

#[test]
fn schema_rules_refuse_bad_fields() {
    let cases = [
        (
            serde_json::json!([{"name": "v", "dataType": "FloatVector", "dim": 4}]),
            "exactly one field must be the primary key",
        ),
        (
            serde_json::json!([
                {"name": "a", "dataType": "Int64", "isPrimaryKey": true},
                {"name": "b", "dataType": "Int64", "isPrimaryKey": true}
            ]),
            "exactly one field must be the primary key",
        ),
        (
            serde_json::json!([
                {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
                {"name": "v", "dataType": "FloatVector"}
            ]),
            "vector fields need dim",
        ),
        (
            serde_json::json!([
                {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
                {"name": "t", "dataType": "VarChar"}
            ]),
            "VarChar fields need maxLength",
        ),
        (
            serde_json::json!([{"name": "id", "dataType": "Float", "isPrimaryKey": true}]),
            "the primary key must be Int64 or VarChar",
        ),
        (
            serde_json::json!([
                {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
                {"name": "x", "dataType": "Int64", "autoID": true}
            ]),
            "only the primary key can use autoID",
        ),
        (
            serde_json::json!([
                {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
                {"name": "id", "dataType": "Int32"}
            ]),
            "field names must be unique",
        ),
    ];
    for (fields, message) in cases {
        let mut spec = valid_collection_spec();
        spec["fields"] = fields;
        refused_with(collection(spec).validate_cel(), message);
    }
}

#[test]
fn the_schema_and_engine_names_are_immutable() {
    let old = collection(valid_collection_spec());
    let mut spec = valid_collection_spec();
    spec["fields"][2]["dim"] = serde_json::json!(1024);
    refused_with(
        collection(spec).validate_cel_update(&old),
        "the schema is immutable",
    );

    let mut spec = valid_collection_spec();
    spec["name"] = serde_json::json!("other_name");
    refused_with(
        collection(spec).validate_cel_update(&old),
        "name is immutable",
    );

    let mut spec = valid_collection_spec();
    spec["database"] = serde_json::json!("analytics");
    refused_with(
        collection(spec).validate_cel_update(&old),
        "coordinatorRef and database are immutable",
    );

    // The deletion policy may change.
    let mut spec = valid_collection_spec();
    spec["deletionPolicy"] = serde_json::json!("Delete");
    collection(spec)
        .validate_cel_update(&old)
        .expect("deletionPolicy is mutable");
}

#[test]
fn an_alias_target_may_change_but_its_name_may_not() {
    let spec = |target: &str| serde_json::json!({"coordinatorRef": {"name": "main"}, "collection": target});
    let old = alias(spec("products_v1"));
    old.validate_cel().expect("valid");
    assert_eq!(old.engine_name(), "products");
    alias(spec("products_v2"))
        .validate_cel_update(&old)
        .expect("the swap is an edit of spec.collection");

    let mut renamed = spec("products_v2");
    renamed["name"] = serde_json::json!("catalog");
    refused_with(
        alias(renamed).validate_cel_update(&old),
        "name is immutable",
    );

    let mut self_target = spec("products");
    self_target["name"] = serde_json::json!("products");
    refused_with(
        alias(self_target).validate_cel(),
        "an alias cannot have the name of its target collection",
    );
}

#[test]
fn a_coordinator_needs_an_http_endpoint() {
    let coordinator = |spec: serde_json::Value| -> Coordinator {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "collections.dev/v1alpha1",
            "kind": "Coordinator",
            "metadata": {"name": "main", "namespace": "search"},
            "spec": spec,
        }))
        .expect("a well-typed Coordinator")
    };
    coordinator(serde_json::json!({"external": {"endpoint": "http://milvus:19530"}}))
        .validate_cel()
        .expect("valid");
    refused_with(
        coordinator(serde_json::json!({"external": {"endpoint": "milvus:19530"}})).validate_cel(),
        "endpoint must start with http:// or https://",
    );
    refused_with(
        coordinator(serde_json::json!({})).validate_cel(),
        "exactly one of spec.external and spec.managed must be set",
    );
}

fn coordinator(spec: serde_json::Value) -> Coordinator {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "Coordinator",
        "metadata": {"name": "main", "namespace": "search"},
        "spec": spec,
    }))
    .expect("a well-typed Coordinator")
}

#[test]
fn a_managed_coordinator_is_validated() {
    coordinator(serde_json::json!({"managed": {}}))
        .validate_cel()
        .expect("all defaults are valid");
    refused_with(
        coordinator(serde_json::json!({
            "external": {"endpoint": "http://milvus:19530"},
            "managed": {}
        }))
        .validate_cel(),
        "exactly one of spec.external and spec.managed must be set",
    );
    // Several replicas share etcd; the redb store is one pod's disk.
    refused_with(
        coordinator(serde_json::json!({"managed": {"replicas": 3}})).validate_cel(),
        "replicas > 1 needs metaStore.etcd",
    );
    coordinator(serde_json::json!({"managed": {
        "replicas": 3,
        "metaStore": {"etcd": {"endpoints": ["http://etcd:2379"]}}
    }}))
    .validate_cel()
    .expect("three replicas on etcd");
    refused_with(
        coordinator(serde_json::json!({"managed": {
            "streaming": {"minReplicas": 5, "maxReplicas": 2}
        }}))
        .validate_cel(),
        "minReplicas must not exceed maxReplicas",
    );
    // The pchannel count is fixed once created; node sizing is not.
    let old = coordinator(serde_json::json!({"managed": {"streaming": {"pchannels": 16}}}));
    refused_with(
        coordinator(serde_json::json!({"managed": {"streaming": {"pchannels": 32}}}))
            .validate_cel_update(&old),
        "pchannels is immutable",
    );
    coordinator(serde_json::json!({"managed": {"streaming": {
        "pchannels": 16, "maxPChannelsPerNode": 2
    }}}))
    .validate_cel_update(&old)
    .expect("sizing may change");
    refused_with(
        coordinator(serde_json::json!({"external": {"endpoint": "http://milvus:19530"}}))
            .validate_cel_update(&old),
        "cannot switch between external and managed",
    );
}

fn indexed_collection_spec() -> serde_json::Value {
    let mut spec = valid_collection_spec();
    spec["indexes"] = serde_json::json!([
        {"fieldName": "embedding", "indexType": "HNSW", "metricType": "COSINE",
         "params": {"M": "16", "efConstruction": "200"}},
        {"fieldName": "title", "indexName": "title_idx", "indexType": "INVERTED"}
    ]);
    spec["load"] = serde_json::json!({"policy": "WhileAliased", "releaseDelay": "30s"});
    spec
}

#[test]
fn indexes_must_name_schema_fields_once_each() {
    collection(indexed_collection_spec())
        .validate_cel()
        .expect("valid indexes");

    let mut spec = indexed_collection_spec();
    spec["indexes"][1]["fieldName"] = serde_json::json!("vector");
    refused_with(
        collection(spec).validate_cel(),
        "every index must name a field of the schema",
    );

    let mut spec = indexed_collection_spec();
    spec["indexes"][1]["fieldName"] = serde_json::json!("embedding");
    refused_with(
        collection(spec).validate_cel(),
        "at most one index per field",
    );

    let mut spec = indexed_collection_spec();
    spec["indexes"][0]["indexName"] = serde_json::json!("title_idx");
    refused_with(
        collection(spec).validate_cel(),
        "index names must be unique",
    );
}

#[test]
fn indexes_are_immutable_but_the_load_policy_is_not() {
    let old = collection(indexed_collection_spec());

    let mut spec = indexed_collection_spec();
    spec["indexes"][0]["params"]["M"] = serde_json::json!("32");
    refused_with(
        collection(spec).validate_cel_update(&old),
        "indexes are immutable",
    );

    let mut spec = indexed_collection_spec();
    spec.as_object_mut().map(|s| s.remove("indexes"));
    refused_with(
        collection(spec).validate_cel_update(&old),
        "indexes are immutable",
    );

    // Adding indexes to a collection declared without them is a new index, too.
    refused_with(
        collection(indexed_collection_spec())
            .validate_cel_update(&collection(valid_collection_spec())),
        "indexes are immutable",
    );

    let mut spec = indexed_collection_spec();
    spec["load"] = serde_json::json!({"policy": "Always", "replicas": 2});
    collection(spec)
        .validate_cel_update(&old)
        .expect("the load policy may change");
}

#[test]
fn load_defaults_to_never_with_a_ten_minute_release_delay() {
    use collection_operator::crd::LoadPolicy;
    let plain = collection(valid_collection_spec());
    assert_eq!(plain.spec.load, None);
    let mut spec = valid_collection_spec();
    spec["load"] = serde_json::json!({});
    let load = collection(spec).spec.load.expect("load given");
    assert_eq!(load.policy, LoadPolicy::Never);
    assert_eq!(load.release_delay, "10m");
}

#[test]
fn release_delay_and_replicas_are_checked_by_the_schema() {
    let crd = collection_operator::crd::all()
        .into_iter()
        .find(|crd| crd.spec.names.kind == "Collection")
        .expect("the Collection CRD");
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
    let load = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["load"]["properties"];
    let pattern = load["releaseDelay"]["pattern"].as_str().expect("a pattern");
    let pattern = regex::Regex::new(pattern).expect("a valid regex");
    for good in ["10m", "30s", "1h30m", "500ms"] {
        assert!(pattern.is_match(good), "{good} should be accepted");
    }
    for bad in ["10", "ten minutes", "10 m", "-5m", ""] {
        assert!(!pattern.is_match(bad), "{bad} should be refused");
    }
    assert_eq!(load["replicas"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(
        load["policy"]["enum"],
        serde_json::json!(["Always", "WhileAliased", "Never"])
    );
}

#[test]
fn a_new_alias_waits_for_a_serving_target_and_may_carry_guards() {
    use collection_operator::crd::SwitchPolicy;
    let plain =
        alias(serde_json::json!({"coordinatorRef": {"name": "main"}, "collection": "products_v1"}));
    assert_eq!(plain.spec.switch_policy, SwitchPolicy::WhenTargetServing);

    let crd = collection_operator::crd::all()
        .into_iter()
        .find(|crd| crd.spec.names.kind == "CollectionAlias")
        .expect("the CollectionAlias CRD");
    let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
    let policy = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["switchPolicy"];
    assert_eq!(policy["default"], "WhenTargetServing");
    assert_eq!(
        policy["enum"],
        serde_json::json!(["WhenTargetServing", "WhenTargetReady", "Immediate"])
    );

    let guarded = alias(serde_json::json!({
        "coordinatorRef": {"name": "main"},
        "collection": "products_v2",
        "switchPolicy": "WhenTargetServing",
        "guards": {"minRowCount": 1000, "minRowRatio": 0.95}
    }));
    guarded.validate_cel().expect("valid");
    guarded
        .validate_cel_update(&plain)
        .expect("guards and the target may change together");
    let guards = guarded.spec.guards.expect("guards");
    assert_eq!(guards.min_row_count, Some(1000));
    assert_eq!(guards.min_row_ratio, Some(0.95));
}
