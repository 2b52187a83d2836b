//! Controller tests: the real reconcilers against a `tower-test` mocked Kubernetes API
//! (a scenario verifier asserting every request's method, path, query and body, like
//! controller-rs's fixtures) and the real coordinator over loopback gRPC.
//!
//! Each test drives passes by hand, as the controller would: pass 1 adds the finalizer,
//! later passes act on the engine and write status; the object given to the next pass
//! carries the status the previous pass wrote.

mod common;

use std::sync::Arc;
use std::time::Duration;

use collection_operator::crd::{
    ADOPT_ANNOTATION, Collection, CollectionAlias, CollectionAliasStatus, CollectionStatus,
    Coordinator, FINALIZER, PAUSED_ANNOTATION, RECONCILE_REQUESTED_ANNOTATION,
};
use collection_operator::operator::context::{CacheSync, Hints, Settings, Stores};
use collection_operator::operator::metrics::Metrics;
use collection_operator::operator::{Context, Error, alias, collection, filled_store};
use collection_operator::proto::api::{
    AlterAliasRequest, DescribeAliasRequest, DescribeCollectionRequest, DropAliasRequest,
};
use common::InProcess;
use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};

const NS: &str = "test";
const NOW: &str = "2026-05-01T12:00:00Z";

// ---------------------------------------------------------------------------------------
// The mocked API server.

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

/// One request the operator made.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// The scenario verifier: every `expect_*` takes the next request, asserts it, answers.
struct ApiServer {
    handle: Handle,
}

impl ApiServer {
    async fn next(&mut self) -> (Seen, Responder) {
        let (request, responder) =
            tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
                .await
                .expect("the operator made no further API request within 5 s")
                .expect("the client was dropped");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        let seen = Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body,
        };
        (seen, responder)
    }

    fn reply(responder: Responder, status: u16, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).expect("json")))
            .expect("response");
        responder.send_response(response);
    }

    /// The finalizer helper adds the finalizer with a JSON patch guarded by a `test` op.
    async fn expect_finalizer_added<K: Resource + serde::Serialize + Clone>(
        &mut self,
        object: &K,
        plural: &str,
    ) -> K {
        let (seen, responder) = self.next().await;
        assert_eq!(seen.method, "PATCH", "{seen:?}");
        assert_eq!(
            seen.path,
            format!(
                "/apis/collections.dev/v1alpha1/namespaces/{NS}/{plural}/{}",
                object.meta().name.as_deref().unwrap_or_default()
            )
        );
        assert_eq!(seen.content_type, "application/json-patch+json");
        let ops = seen.body.as_array().expect("a JSON patch");
        assert_eq!(ops[0]["op"], "test", "{ops:?}");
        assert_eq!(ops[1]["op"], "add", "{ops:?}");
        assert_eq!(ops[1]["value"], json!([FINALIZER]), "{ops:?}");
        let mut updated = object.clone();
        updated.meta_mut().finalizers = Some(vec![FINALIZER.to_string()]);
        Self::reply(
            responder,
            200,
            &serde_json::to_value(&updated).expect("json"),
        );
        updated
    }

    /// The finalizer helper removes the finalizer (test + remove at its index).
    async fn expect_finalizer_removed<K: Resource + serde::Serialize + Clone>(
        &mut self,
        object: &K,
        plural: &str,
    ) {
        let (seen, responder) = self.next().await;
        assert_eq!(seen.method, "PATCH", "{seen:?}");
        assert_eq!(
            seen.path,
            format!(
                "/apis/collections.dev/v1alpha1/namespaces/{NS}/{plural}/{}",
                object.meta().name.as_deref().unwrap_or_default()
            )
        );
        assert_eq!(
            seen.body,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"}
            ])
        );
        let mut updated = object.clone();
        updated.meta_mut().finalizers = None;
        Self::reply(
            responder,
            200,
            &serde_json::to_value(&updated).expect("json"),
        );
    }

    /// An Event about `regarding` with `reason`; returns its note.
    async fn expect_event(&mut self, regarding: &str, reason: &str) -> String {
        let (seen, responder) = self.next().await;
        assert_eq!(seen.method, "POST", "expected Event {reason}, got {seen:?}");
        assert_eq!(
            seen.path,
            format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
        );
        assert_eq!(seen.body["reason"], reason, "{seen:?}");
        assert_eq!(seen.body["regarding"]["name"], regarding, "{seen:?}");
        assert_eq!(seen.body["reportingController"], "collection-operator");
        let note = seen.body["note"].as_str().unwrap_or_default().to_string();
        Self::reply(responder, 201, &seen.body);
        note
    }

    /// An Event; returns its object name (for aggregation checks).
    async fn expect_event_named(&mut self, regarding: &str, reason: &str) -> String {
        let (seen, responder) = self.next().await;
        assert_eq!(seen.method, "POST", "expected Event {reason}, got {seen:?}");
        assert_eq!(seen.body["reason"], reason, "{seen:?}");
        assert_eq!(seen.body["regarding"]["name"], regarding, "{seen:?}");
        let name = seen.body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Self::reply(responder, 201, &seen.body);
        name
    }

    /// A repeat of an identical Event: a merge patch of its `series`, not a new Event.
    async fn expect_event_repeat(&mut self, name: &str, count: i64) {
        let (seen, responder) = self.next().await;
        assert_eq!(
            seen.method, "PATCH",
            "expected an Event series update, got {seen:?}"
        );
        assert_eq!(
            seen.path,
            format!("/apis/events.k8s.io/v1/namespaces/{NS}/events/{name}")
        );
        assert_eq!(seen.content_type, "application/merge-patch+json");
        assert_eq!(seen.body["series"]["count"], count, "{seen:?}");
        Self::reply(responder, 200, &json!({"metadata": {"name": name}}));
    }

    /// A Secret read.
    async fn expect_secret(&mut self, name: &str, data: Option<Value>) {
        let path = format!("/api/v1/namespaces/{NS}/secrets/{name}");
        match data {
            None => self.expect_get_not_found(&path).await,
            Some(data) => {
                let (seen, responder) = self.next().await;
                assert_eq!(
                    (seen.method.as_str(), seen.path.as_str()),
                    ("GET", path.as_str())
                );
                Self::reply(
                    responder,
                    200,
                    // Opted in: the operator uses no other Secret (tests/operator_security.rs).
                    &json!({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": name, "namespace": NS,
                                         "labels": {"collections.dev/credentials": "true"}},
                            "data": data}),
                );
            }
        }
    }

    /// A status write: server-side apply on the status subresource, field manager
    /// `collection-operator`, forced, carrying only apiVersion, kind and status.
    async fn expect_status<K: Resource<DynamicType = ()> + serde::Serialize + Clone>(
        &mut self,
        object: &K,
        plural: &str,
    ) -> Value {
        let (seen, responder) = self.next().await;
        assert_eq!(
            seen.method, "PATCH",
            "expected a status write, got {seen:?}"
        );
        assert_eq!(
            seen.path,
            format!(
                "/apis/collections.dev/v1alpha1/namespaces/{NS}/{plural}/{}/status",
                object.meta().name.as_deref().unwrap_or_default()
            )
        );
        assert_eq!(seen.content_type, "application/apply-patch+yaml");
        assert!(
            seen.query.contains("fieldManager=collection-operator"),
            "{}",
            seen.query
        );
        assert!(seen.query.contains("force=true"), "{}", seen.query);
        let keys: Vec<&String> = seen.body.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            ["apiVersion", "kind", "status"],
            "only status is written"
        );
        assert_eq!(seen.body["apiVersion"], "collections.dev/v1alpha1");
        assert_eq!(seen.body["kind"], K::kind(&()).as_ref());
        let mut updated = serde_json::to_value(object).expect("json");
        updated["status"] = seen.body["status"].clone();
        Self::reply(responder, 200, &updated);
        seen.body["status"].clone()
    }

    /// A GET that finds nothing.
    async fn expect_get_not_found(&mut self, path: &str) {
        let (seen, responder) = self.next().await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("GET", path),
            "{seen:?}"
        );
        Self::reply(
            responder,
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404, "message": "not found"}),
        );
    }

    /// No request for a while.
    async fn expect_silence(&mut self) {
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(200), self.handle.next_request()).await
        {
            panic!(
                "unexpected API request: {} {}",
                request.method(),
                request.uri()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures.

fn now() -> Timestamp {
    NOW.parse().expect("timestamp")
}

fn metadata_for<K: Resource>(object: &mut K, name: &str, created: &str) {
    let meta = object.meta_mut();
    meta.namespace = Some(NS.to_string());
    meta.uid = Some(format!("uid-{name}"));
    meta.generation = Some(1);
    meta.resource_version = Some("1".to_string());
    meta.creation_timestamp = Some(Time(created.parse().expect("timestamp")));
}

fn coordinator(addr: std::net::SocketAddr) -> Coordinator {
    let mut coordinator: Coordinator = serde_json::from_value(json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "Coordinator",
        "metadata": {"name": "engine"},
        "spec": {"external": {"endpoint": format!("http://{addr}")}}
    }))
    .expect("coordinator");
    metadata_for(&mut coordinator, "engine", "2026-01-01T00:00:00Z");
    coordinator
}

fn collection_named(name: &str, extra_spec: Value, created: &str) -> Collection {
    let mut spec = json!({
        "coordinatorRef": {"name": "engine"},
        "fields": [
            {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
            {"name": "v", "dataType": "FloatVector", "dim": 4}
        ]
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (key, value) in extra {
            spec.insert(key.clone(), value.clone());
        }
    }
    let mut collection: Collection = serde_json::from_value(json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "Collection",
        "metadata": {"name": name},
        "spec": spec
    }))
    .expect("collection");
    metadata_for(&mut collection, name, created);
    collection
}

fn alias_named(name: &str, target: &str, extra_spec: Value, created: &str) -> CollectionAlias {
    let mut spec = json!({"coordinatorRef": {"name": "engine"}, "collection": target});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (key, value) in extra {
            spec.insert(key.clone(), value.clone());
        }
    }
    let mut alias: CollectionAlias = serde_json::from_value(json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "CollectionAlias",
        "metadata": {"name": name},
        "spec": spec
    }))
    .expect("alias");
    metadata_for(&mut alias, name, created);
    alias
}

fn annotate<K: Resource>(object: &mut K, key: &str, value: &str) {
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_string(), value.to_string());
}

fn deleting<K: Resource>(object: &mut K) {
    object.meta_mut().deletion_timestamp = Some(Time(now()));
    object.meta_mut().generation = Some(object.meta().generation.unwrap_or(1) + 1);
}

/// The engine, the mocked API, the caches and the context.
struct Harness {
    engine: InProcess,
    api: ApiServer,
    ctx: Arc<Context>,
    coordinators: Writer<Coordinator>,
    collections: Writer<Collection>,
    aliases: Writer<CollectionAlias>,
    hints: collection_operator::operator::context::HintReceivers,
}

impl Harness {
    async fn start() -> Self {
        let engine = InProcess::start().await;
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (coordinator_store, coordinators) = filled_store([coordinator(engine.addr)]);
        let (collection_store, collections) = filled_store::<Collection>([]);
        let (alias_store, aliases) = filled_store::<CollectionAlias>([]);
        let (hint_senders, hints) = Hints::channels(64);
        let ctx = Context::new(
            client,
            Stores {
                coordinators: coordinator_store,
                collections: collection_store,
                aliases: alias_store,
                sync: CacheSync::all_synced(),
            },
            Settings::default(),
            Arc::new(Metrics::new()),
            hint_senders,
        )
        .with_clock(Arc::new(now));
        Self {
            engine,
            api: ApiServer { handle },
            ctx: Arc::new(ctx),
            coordinators,
            collections,
            aliases,
            hints,
        }
    }

    fn put_collection(&mut self, collection: &Collection) {
        self.collections
            .apply_watcher_event(&watcher::Event::Apply(collection.clone()));
    }

    fn put_alias(&mut self, alias: &CollectionAlias) {
        self.aliases
            .apply_watcher_event(&watcher::Event::Apply(alias.clone()));
    }

    fn remove_coordinator(&mut self) {
        let coordinator = coordinator(self.engine.addr);
        self.coordinators
            .apply_watcher_event(&watcher::Event::Delete(coordinator));
    }

    async fn engine_collection(&self, database: &str, name: &str) -> Option<(i64, Vec<String>)> {
        let mut client = self.engine.client().await;
        let response = client
            .describe_collection(DescribeCollectionRequest {
                db_name: database.into(),
                collection_name: name.into(),
                ..Default::default()
            })
            .await
            .expect("DescribeCollection rpc")
            .into_inner();
        let status = response.status.unwrap_or_default();
        (status.code == 0 && status.error_code == 0)
            .then_some((response.collection_id, response.aliases))
    }

    async fn engine_alias(&self, database: &str, alias: &str) -> Option<String> {
        let mut client = self.engine.client().await;
        let response = client
            .describe_alias(DescribeAliasRequest {
                db_name: database.into(),
                alias: alias.into(),
                ..Default::default()
            })
            .await
            .expect("DescribeAlias rpc")
            .into_inner();
        let status = response.status.unwrap_or_default();
        (status.code == 0 && status.error_code == 0).then_some(response.collection)
    }

    /// Pass 1 of a new Collection: the finalizer, nothing else.
    async fn add_collection_finalizer(&mut self, object: &Collection) -> Collection {
        let (result, updated) = tokio::join!(
            collection::reconcile(Arc::new(object.clone()), self.ctx.clone()),
            self.api.expect_finalizer_added(object, "collections")
        );
        result.expect("finalizer pass");
        updated
    }

    async fn add_alias_finalizer(&mut self, object: &CollectionAlias) -> CollectionAlias {
        let (result, updated) = tokio::join!(
            alias::reconcile(Arc::new(object.clone()), self.ctx.clone()),
            self.api.expect_finalizer_added(object, "collectionaliases")
        );
        result.expect("finalizer pass");
        updated
    }

    /// A Ready, managed collection created through the controller.
    async fn managed_collection(&mut self, name: &str, extra: Value) -> Collection {
        let object = collection_named(name, extra, "2026-02-01T00:00:00Z");
        self.put_collection(&object);
        let mut object = self.add_collection_finalizer(&object).await;
        let engine_name = object.engine_name();
        let (result, (_, status)) = tokio::join!(
            collection::reconcile(Arc::new(object.clone()), self.ctx.clone()),
            async {
                let note = self.api.expect_event(name, "CreatedCollection").await;
                (note, self.api.expect_status(&object, "collections").await)
            }
        );
        result.expect("create pass");
        object.status = Some(serde_json::from_value(status).expect("status"));
        self.put_collection(&object);
        assert!(
            self.engine_collection("default", &engine_name)
                .await
                .is_some()
        );
        object
    }

    /// An alias bound to `target` through the controller.
    async fn bound_alias(&mut self, name: &str, target: &str, extra: Value) -> CollectionAlias {
        let object = alias_named(name, target, extra, "2026-03-01T00:00:00Z");
        self.put_alias(&object);
        let mut object = self.add_alias_finalizer(&object).await;
        let (result, status) = tokio::join!(
            alias::reconcile(Arc::new(object.clone()), self.ctx.clone()),
            async {
                self.api.expect_event(name, "CreatedAlias").await;
                self.api.expect_status(&object, "collectionaliases").await
            }
        );
        result.expect("bind pass");
        object.status = Some(serde_json::from_value(status).expect("status"));
        self.put_alias(&object);
        object
    }

    /// Points `alias` at `target` with a raw gRPC call, as another client (pymilvus) would.
    async fn alter_alias(&self, alias: &str, target: &str) {
        let mut client = self.engine.client().await;
        let status = client
            .alter_alias(AlterAliasRequest {
                db_name: "default".into(),
                collection_name: target.into(),
                alias: alias.into(),
                ..Default::default()
            })
            .await
            .expect("AlterAlias rpc")
            .into_inner();
        common::assert_ok(&status, "AlterAlias");
    }

    /// Creates engine collections directly (unmanaged by any resource).
    async fn raw_collections(&self, names: &[&str]) {
        let mut client = self.engine.client().await;
        for name in names {
            common::create_collection_in(&mut client, "default", name).await;
        }
    }
}

/// The delay of a requeue, in seconds.
fn requeue_secs(action: &kube::runtime::controller::Action) -> f64 {
    let text = format!("{action:?}");
    text.split("requeue_after: Some(")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no requeue delay in {text}"))
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn assert_condition(status: &Value, type_: &str, truth: &str, reason: &str) {
    let c = condition(status, type_);
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some(truth), Some(reason)),
        "{type_} condition: {c}"
    );
    assert_eq!(c["observedGeneration"], status["observedGeneration"]);
}

// ---------------------------------------------------------------------------------------
// Collections.

#[tokio::test]
async fn collection_create_records_id_and_then_stays_quiet() {
    let mut h = Harness::start().await;
    let object = collection_named("products-v1", json!({}), "2026-02-01T00:00:00Z");
    h.put_collection(&object);

    // Pass 1: only the finalizer; the engine is untouched.
    let object = h.add_collection_finalizer(&object).await;
    assert!(
        h.engine_collection("default", "products_v1")
            .await
            .is_none()
    );

    // Pass 2: CreateCollection, an Event, the status.
    let (result, (note, status)) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let note = h.api.expect_event("products-v1", "CreatedCollection").await;
            (note, h.api.expect_status(&object, "collections").await)
        }
    );
    result.expect("create pass");
    let (id, _) = h
        .engine_collection("default", "products_v1")
        .await
        .expect("created in the engine");
    assert!(
        note.contains("products_v1") && note.contains(&id.to_string()),
        "{note}"
    );
    assert_eq!(status["collectionID"], id.to_string(), "the ID is a string");
    assert_eq!(status["engineName"], "products_v1");
    assert_eq!(status["database"], "default");
    assert_eq!(status["observedGeneration"], 1);
    assert_condition(&status, "Ready", "True", "Available");
    assert_condition(&status, "Synced", "True", "ReconcileSuccess");
    assert_eq!(condition(&status, "Ready")["lastTransitionTime"], NOW);

    // Pass 3 (resync): in sync, deterministic status, no write at all.
    let mut object = object;
    object.status = Some(serde_json::from_value(status).expect("status"));
    let (result, ()) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_silence()
    );
    result.expect("resync pass");
}

#[tokio::test]
async fn collection_in_a_new_database_creates_the_database() {
    let mut h = Harness::start().await;
    let object = collection_named(
        "events",
        json!({"database": "analytics"}),
        "2026-02-01T00:00:00Z",
    );
    h.put_collection(&object);
    let object = h.add_collection_finalizer(&object).await;
    let (result, status) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let note = h.api.expect_event("events", "CreatedDatabase").await;
            assert!(note.contains("analytics"), "{note}");
            h.api.expect_event("events", "CreatedCollection").await;
            h.api.expect_status(&object, "collections").await
        }
    );
    result.expect("create pass");
    assert!(h.engine_collection("analytics", "events").await.is_some());
    assert_eq!(status["database"], "analytics");
    assert_condition(&status, "Ready", "True", "Available");
}

#[tokio::test]
async fn collection_adoption_needs_the_annotation() {
    let mut h = Harness::start().await;
    h.raw_collections(&["legacy"]).await;
    let (id, _) = h
        .engine_collection("default", "legacy")
        .await
        .expect("exists");

    let object = collection_named("legacy", json!({}), "2026-02-01T00:00:00Z");
    h.put_collection(&object);
    let mut object = h.add_collection_finalizer(&object).await;

    // Without the annotation: AlreadyExists, no engine write, no Event.
    let (result, status) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_status(&object, "collections")
    );
    result.expect("pass");
    assert_condition(&status, "Ready", "False", "AlreadyExists");
    assert!(
        condition(&status, "Ready")["message"]
            .as_str()
            .unwrap_or_default()
            .contains(ADOPT_ANNOTATION)
    );
    assert!(status.get("collectionID").is_none(), "not owned: {status}");
    object.status = Some(serde_json::from_value(status).expect("status"));

    // With it: adopted (an Event, no RPC), the engine's ID recorded.
    annotate(&mut object, ADOPT_ANNOTATION, "true");
    let (result, status) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            h.api.expect_event("legacy", "AdoptedCollection").await;
            h.api.expect_status(&object, "collections").await
        }
    );
    result.expect("adopt pass");
    assert_eq!(status["collectionID"], id.to_string());
    assert_condition(&status, "Ready", "True", "Available");
    assert_eq!(
        h.engine_collection("default", "legacy").await.map(|c| c.0),
        Some(id)
    );
}

#[tokio::test]
async fn collection_conflict_oldest_wins() {
    let mut h = Harness::start().await;
    let older = collection_named("products", json!({}), "2026-01-10T00:00:00Z");
    let mut newer = collection_named(
        "products-copy",
        json!({"name": "products"}),
        "2026-01-20T00:00:00Z",
    );
    newer.metadata.uid = Some("uid-products-copy".into());
    h.put_collection(&older);
    h.put_collection(&newer);

    // The newer one, reconciled first, makes no engine write.
    let newer = h.add_collection_finalizer(&newer).await;
    let (result, status) = tokio::join!(
        collection::reconcile(Arc::new(newer.clone()), h.ctx.clone()),
        h.api.expect_status(&newer, "collections")
    );
    result.expect("pass");
    assert_condition(&status, "Ready", "False", "Conflict");
    assert!(
        condition(&status, "Ready")["message"]
            .as_str()
            .unwrap_or_default()
            .contains("test/products")
    );
    assert!(h.engine_collection("default", "products").await.is_none());

    // The older one creates it.
    let older = h.add_collection_finalizer(&older).await;
    let (result, status) = tokio::join!(
        collection::reconcile(Arc::new(older.clone()), h.ctx.clone()),
        async {
            h.api.expect_event("products", "CreatedCollection").await;
            h.api.expect_status(&older, "collections").await
        }
    );
    result.expect("pass");
    assert_condition(&status, "Ready", "True", "Available");

    // Deleting the winner (Retain) wakes the loser.
    let mut older = older;
    older.status = Some(serde_json::from_value(status).expect("status"));
    deleting(&mut older);
    let (result, ()) = tokio::join!(
        collection::reconcile(Arc::new(older.clone()), h.ctx.clone()),
        h.api.expect_finalizer_removed(&older, "collections")
    );
    result.expect("release");
    let hint = h
        .hints
        .collections
        .try_recv()
        .expect("a hint for the loser");
    assert_eq!(hint.name, "products-copy");
}

#[tokio::test]
async fn collection_delete_with_retain_keeps_the_engine_collection() {
    let mut h = Harness::start().await;
    let mut object = h.managed_collection("keep-me", json!({})).await;
    deleting(&mut object);
    let (result, ()) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_finalizer_removed(&object, "collections")
    );
    result.expect("cleanup");
    assert!(
        h.engine_collection("default", "keep_me").await.is_some(),
        "Retain is the default"
    );
}

#[tokio::test]
async fn collection_delete_with_delete_drops_it_once_no_alias_points_to_it() {
    let mut h = Harness::start().await;
    let object = h
        .managed_collection("scratch", json!({"deletionPolicy": "Delete"}))
        .await;
    // Someone points an alias at it.
    {
        let mut client = h.engine.client().await;
        common::create_alias_in(&mut client, "default", "scratch_alias", "scratch").await;
    }
    let mut object = object;
    deleting(&mut object);

    // HasAliases: the finalizer stays, the status says why, nothing is dropped.
    let (result, status) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_status(&object, "collections")
    );
    match result {
        Err(Error::Blocked { reason, .. }) => assert_eq!(reason, "HasAliases"),
        other => panic!("expected a HasAliases wait, got {other:?}"),
    }
    assert_condition(&status, "Ready", "False", "HasAliases");
    assert_eq!(status["aliases"], json!(["scratch_alias"]));
    assert!(h.engine_collection("default", "scratch").await.is_some());
    object.status = Some(serde_json::from_value(status).expect("status"));

    // The alias goes; the next pass drops the collection and releases the finalizer.
    {
        let mut client = h.engine.client().await;
        let status = client
            .drop_alias(DropAliasRequest {
                db_name: "default".into(),
                alias: "scratch_alias".into(),
                ..Default::default()
            })
            .await
            .expect("DropAlias rpc")
            .into_inner();
        common::assert_ok(&status, "DropAlias");
    }
    let (result, ()) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            h.api.expect_event("scratch", "DroppedCollection").await;
            h.api.expect_finalizer_removed(&object, "collections").await;
        }
    );
    result.expect("cleanup");
    assert!(h.engine_collection("default", "scratch").await.is_none());
}

#[tokio::test]
async fn collection_finalizer_is_released_when_the_coordinator_is_gone() {
    let mut h = Harness::start().await;
    let mut object = h
        .managed_collection("orphan", json!({"deletionPolicy": "Delete"}))
        .await;
    h.remove_coordinator();
    deleting(&mut object);
    let (result, ()) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            // The cache has no Coordinator: the API server confirms it is gone.
            h.api
                .expect_get_not_found(&format!(
                    "/apis/collections.dev/v1alpha1/namespaces/{NS}/coordinators/engine"
                ))
                .await;
            let note = h.api.expect_event("orphan", "CoordinatorGone").await;
            assert!(note.contains("left as it is"), "{note}");
            h.api.expect_finalizer_removed(&object, "collections").await;
        }
    );
    result.expect("released");
    assert!(
        h.engine_collection("default", "orphan").await.is_some(),
        "no engine write without a Coordinator"
    );
}

#[tokio::test]
async fn collection_engine_errors_carry_the_milvus_code_and_are_terminal() {
    let mut h = Harness::start().await;
    // A VarChar longer than Milvus allows: the CRD schema would refuse it; the engine
    // answers code 1100 (parameter invalid), which no retry fixes.
    let object = collection_named(
        "broken",
        json!({"fields": [
            {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
            {"name": "title", "dataType": "VarChar", "maxLength": 70000}
        ]}),
        "2026-02-01T00:00:00Z",
    );
    h.put_collection(&object);
    let object = h.add_collection_finalizer(&object).await;
    let (result, (note, status)) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let note = h.api.expect_event("broken", "EngineError").await;
            (note, h.api.expect_status(&object, "collections").await)
        }
    );
    let error = result.expect_err("the engine refuses");
    assert!(error.is_terminal(), "{error}");
    assert!(note.contains("code 1100"), "{note}");
    assert_condition(&status, "Ready", "False", "EngineError");
    assert_condition(&status, "Synced", "False", "ReconcileError");
    assert!(
        condition(&status, "Synced")["message"]
            .as_str()
            .unwrap_or_default()
            .contains("CreateCollection failed: code 1100")
    );
    // Not retried hot: the error policy waits for the resync interval.
    let action = collection::error_policy(Arc::new(object.clone()), &error, h.ctx.clone());
    let text = format!("{action:?}");
    let secs: f64 = text
        .split("requeue_after: Some(")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected action {text}"));
    assert!((54.0..=66.0).contains(&secs), "{text}");
}

// ---------------------------------------------------------------------------------------
// Aliases.

#[tokio::test]
async fn alias_create_binds_and_records_history() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1"]).await;
    let object = alias_named("products", "products_v1", json!({}), "2026-03-01T00:00:00Z");
    h.put_alias(&object);
    let object = h.add_alias_finalizer(&object).await;
    let (result, (note, status)) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let note = h.api.expect_event("products", "CreatedAlias").await;
            (
                note,
                h.api.expect_status(&object, "collectionaliases").await,
            )
        }
    );
    result.expect("bind pass");
    assert!(note.contains("products_v1"), "{note}");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
    assert_eq!(status["collection"], "products_v1");
    assert_eq!(status["engineName"], "products");
    assert!(status.get("previousCollection").is_none());
    assert_eq!(
        status["history"],
        json!([{"collection": "products_v1", "time": NOW}])
    );
    assert_condition(&status, "Ready", "True", "Available");
}

#[tokio::test]
async fn alias_swap_is_one_alter_and_keeps_the_rollback_target() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1", "products_v2"]).await;
    let mut object = h.bound_alias("products", "products_v1", json!({})).await;

    object.spec.collection = "products_v2".into();
    object.metadata.generation = Some(2);
    let (result, (note, status)) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let note = h.api.expect_event("products", "AliasSwitched").await;
            (
                note,
                h.api.expect_status(&object, "collectionaliases").await,
            )
        }
    );
    result.expect("swap pass");
    assert!(note.contains("from products_v1 to products_v2"), "{note}");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v2")
    );
    assert_eq!(status["collection"], "products_v2");
    assert_eq!(status["previousCollection"], "products_v1");
    let history: Vec<&str> = status["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["collection"].as_str())
        .collect();
    assert_eq!(history, ["products_v2", "products_v1"], "newest first");
    assert_eq!(status["observedGeneration"], 2);

    // The collections whose alias sets changed are requeued.
    let _ = h.hints.collections.try_recv();
}

#[tokio::test]
async fn alias_waits_for_a_not_ready_target_then_switches() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1"]).await;
    let mut object = h.bound_alias("products", "products_v1", json!({})).await;
    let target = h.managed_collection("products-v2", json!({})).await;

    // The target's Collection is not Ready (e.g. still loading): the alias waits.
    let mut not_ready = target.clone();
    if let Some(status) = not_ready.status.as_mut() {
        for c in &mut status.conditions {
            if c.type_ == "Ready" {
                c.status = "False".into();
                c.reason = "Creating".into();
            }
        }
    }
    h.put_collection(&not_ready);
    object.spec.collection = "products_v2".into();
    object.metadata.generation = Some(2);
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_status(&object, "collectionaliases")
    );
    result.expect("wait pass");
    assert_condition(&status, "Ready", "False", "WaitingForTarget");
    assert_eq!(
        status["collection"], "products_v1",
        "still bound to the old target"
    );
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
    object.status = Some(serde_json::from_value(status).expect("status"));
    h.put_alias(&object);

    // The target becomes Ready: the watch maps it to this alias, which then switches.
    h.put_collection(&target);
    let requeued = alias::aliases_for_collection(&h.ctx, &target);
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].name, "products");
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            h.api.expect_event("products", "AliasSwitched").await;
            h.api.expect_status(&object, "collectionaliases").await
        }
    );
    result.expect("switch pass");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v2")
    );
    assert_condition(&status, "Ready", "True", "Available");
    assert_eq!(status["previousCollection"], "products_v1");
}

#[tokio::test]
async fn alias_moved_behind_the_operators_back_is_moved_back_with_an_event() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1", "intruder"]).await;
    let object = h.bound_alias("products", "products_v1", json!({})).await;

    // Someone moves it with a raw gRPC call (as pymilvus would).
    h.alter_alias("products", "intruder").await;

    // The resync pass moves it back and says so; the status does not change at all.
    let (result, note) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let note = h.api.expect_event("products", "DriftCorrected").await;
            h.api.expect_silence().await;
            note
        }
    );
    result.expect("drift pass");
    assert!(
        note.contains("moved to intruder outside the operator"),
        "{note}"
    );
    assert!(note.contains("moved it back to products_v1"), "{note}");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
}

#[tokio::test]
async fn a_swap_the_engine_does_not_confirm_is_not_ready_and_retried_until_it_is() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1", "products_v2"]).await;
    let mut object = h.bound_alias("products", "products_v1", json!({})).await;

    // The swap. Right after the engine acknowledged the AlterAlias (while the operator
    // publishes its Event, before it reads the alias back) a second writer moves the
    // alias back with a real client: the read-back finds the old target.
    object.spec.collection = "products_v2".into();
    object.metadata.generation = Some(2);
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let (seen, responder) = h.api.next().await;
            assert_eq!(seen.method, "POST", "{seen:?}");
            assert_eq!(seen.body["reason"], "AliasSwitched", "{seen:?}");
            let note = seen.body["note"].as_str().unwrap_or_default();
            assert!(note.contains("from products_v1 to products_v2"), "{note}");
            assert_eq!(
                h.engine_alias("default", "products").await.as_deref(),
                Some("products_v2"),
                "the Event follows the acknowledged AlterAlias"
            );
            h.alter_alias("products", "products_v1").await;
            ApiServer::reply(responder, 201, &seen.body);
            let (seen, responder) = h.api.next().await;
            assert_eq!(seen.method, "POST", "{seen:?}");
            ApiServer::reply(responder, 201, &seen.body);
            (
                seen.body,
                h.api.expect_status(&object, "collectionaliases").await,
            )
        }
    );
    let (warning, status) = status;
    assert_eq!(warning["type"], "Warning", "{warning}");
    assert_eq!(warning["reason"], "SwapUnconfirmed", "{warning}");
    assert_eq!(
        warning["note"],
        "alias products in database default was moved to products_v2, but the engine does \
         not confirm it yet: DescribeAlias answers products_v1"
    );
    let requeue = result.expect("swap pass");
    assert_condition(&status, "Ready", "False", "WaitingForTarget");
    assert_eq!(
        condition(&status, "Ready")["message"],
        "alias products in database default was moved to products_v2, but the engine does \
         not confirm it yet: DescribeAlias answers products_v1"
    );
    // The swap is recorded as applied, not verified; the resource is bound to its target.
    assert_eq!(
        status["lastSwap"],
        json!({"from": "products_v1", "to": "products_v2", "requestedAt": NOW,
               "appliedAt": NOW})
    );
    assert_eq!(status["collection"], "products_v2");
    // Looked at again soon (the gate's first recheck), not at the resync.
    assert_eq!(requeue_secs(&requeue), 5.0, "{requeue:?}");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );

    // The retry: the alias is put back on the target it is bound to, the read-back
    // confirms it this time, and the swap is Ready and verified.
    object.status = Some(serde_json::from_value(status).expect("status"));
    h.put_alias(&object);
    let (result, (note, status)) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let note = h.api.expect_event("products", "DriftCorrected").await;
            (
                note,
                h.api.expect_status(&object, "collectionaliases").await,
            )
        }
    );
    let requeue = result.expect("retry pass");
    assert!(note.contains("moved it back to products_v2"), "{note}");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v2")
    );
    assert_condition(&status, "Ready", "True", "Available");
    assert_eq!(
        status["lastSwap"],
        json!({"from": "products_v1", "to": "products_v2", "requestedAt": NOW,
               "appliedAt": NOW, "verifiedAt": NOW})
    );
    assert_eq!(status["previousCollection"], "products_v1");
    assert!(requeue_secs(&requeue) > 5.0, "{requeue:?}");
}

#[tokio::test]
async fn paused_alias_makes_no_engine_write() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1", "products_v2"]).await;
    let mut object = h.bound_alias("products", "products_v1", json!({})).await;
    annotate(&mut object, PAUSED_ANNOTATION, "true");
    object.spec.collection = "products_v2".into();
    object.metadata.generation = Some(2);
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_status(&object, "collectionaliases")
    );
    result.expect("paused pass");
    assert_condition(&status, "Ready", "False", "Paused");
    assert_condition(&status, "Synced", "False", "ReconcilePaused");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
    assert_eq!(status["collection"], "products_v1");
}

#[tokio::test]
async fn alias_conflict_oldest_wins() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1", "products_v2"]).await;
    let older = alias_named("products", "products_v1", json!({}), "2026-03-01T00:00:00Z");
    let newer = alias_named(
        "products-again",
        "products_v2",
        json!({"name": "products"}),
        "2026-03-02T00:00:00Z",
    );
    h.put_alias(&older);
    h.put_alias(&newer);
    let newer = h.add_alias_finalizer(&newer).await;
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(newer.clone()), h.ctx.clone()),
        h.api.expect_status(&newer, "collectionaliases")
    );
    result.expect("pass");
    assert_condition(&status, "Ready", "False", "Conflict");
    assert!(
        h.engine_alias("default", "products").await.is_none(),
        "no engine write"
    );
    let older = h.add_alias_finalizer(&older).await;
    let (result, _) = tokio::join!(
        alias::reconcile(Arc::new(older.clone()), h.ctx.clone()),
        async {
            h.api.expect_event("products", "CreatedAlias").await;
            h.api.expect_status(&older, "collectionaliases").await
        }
    );
    result.expect("pass");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
}

#[tokio::test]
async fn alias_adoption_needs_the_annotation() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1", "products_v2"]).await;
    {
        let mut client = h.engine.client().await;
        common::create_alias_in(&mut client, "default", "products", "products_v1").await;
    }
    let object = alias_named("products", "products_v2", json!({}), "2026-03-01T00:00:00Z");
    h.put_alias(&object);
    let mut object = h.add_alias_finalizer(&object).await;
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_status(&object, "collectionaliases")
    );
    result.expect("pass");
    assert_condition(&status, "Ready", "False", "AlreadyExists");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
    object.status = Some(serde_json::from_value(status).expect("status"));

    annotate(&mut object, ADOPT_ANNOTATION, "true");
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            // Adopting an alias that points elsewhere moves it to the spec's target.
            h.api.expect_event("products", "AliasSwitched").await;
            h.api.expect_status(&object, "collectionaliases").await
        }
    );
    result.expect("adopt pass");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v2")
    );
    assert_eq!(status["collection"], "products_v2");
    assert_condition(&status, "Ready", "True", "Available");
}

#[tokio::test]
async fn alias_adoption_of_an_alias_already_on_target_makes_no_rpc() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1"]).await;
    {
        let mut client = h.engine.client().await;
        common::create_alias_in(&mut client, "default", "products", "products_v1").await;
    }
    let mut object = alias_named("products", "products_v1", json!({}), "2026-03-01T00:00:00Z");
    annotate(&mut object, ADOPT_ANNOTATION, "true");
    h.put_alias(&object);
    let object = h.add_alias_finalizer(&object).await;
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            h.api.expect_event("products", "AdoptedAlias").await;
            h.api.expect_status(&object, "collectionaliases").await
        }
    );
    result.expect("adopt pass");
    assert_eq!(status["collection"], "products_v1");
    assert_condition(&status, "Ready", "True", "Available");
}

#[tokio::test]
async fn alias_delete_policy_delete_drops_the_engine_alias() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1"]).await;
    let mut object = h.bound_alias("products", "products_v1", json!({})).await;
    deleting(&mut object);
    let (result, ()) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            h.api.expect_event("products", "DroppedAlias").await;
            h.api
                .expect_finalizer_removed(&object, "collectionaliases")
                .await;
        }
    );
    result.expect("cleanup");
    assert!(h.engine_alias("default", "products").await.is_none());
}

#[tokio::test]
async fn alias_delete_policy_retain_keeps_the_engine_alias() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1"]).await;
    let mut object = h
        .bound_alias(
            "products",
            "products_v1",
            json!({"deletionPolicy": "Retain"}),
        )
        .await;
    deleting(&mut object);
    let (result, ()) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_finalizer_removed(&object, "collectionaliases")
    );
    result.expect("cleanup");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
}

#[tokio::test]
async fn alias_finalizer_is_released_when_the_coordinator_is_gone() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1"]).await;
    let mut object = h.bound_alias("products", "products_v1", json!({})).await;
    h.remove_coordinator();
    deleting(&mut object);
    let (result, ()) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            h.api
                .expect_get_not_found(&format!(
                    "/apis/collections.dev/v1alpha1/namespaces/{NS}/coordinators/engine"
                ))
                .await;
            h.api.expect_event("products", "CoordinatorGone").await;
            h.api
                .expect_finalizer_removed(&object, "collectionaliases")
                .await;
        }
    );
    result.expect("released");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
}

#[tokio::test]
async fn reconcile_requested_at_is_acknowledged_in_status() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1"]).await;
    let mut object = h.bound_alias("products", "products_v1", json!({})).await;
    annotate(
        &mut object,
        RECONCILE_REQUESTED_ANNOTATION,
        "2026-05-01T11:59:00Z",
    );
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_status(&object, "collectionaliases")
    );
    result.expect("pass");
    assert_eq!(status["lastHandledReconcileAt"], "2026-05-01T11:59:00Z");
    // Only that field changed: the binding and its history are untouched.
    let before: CollectionAliasStatus = object.status.clone().expect("status");
    let after: CollectionAliasStatus = serde_json::from_value(status).expect("status");
    assert_eq!(after.history, before.history);
    assert_eq!(after.conditions, before.conditions);
}

#[tokio::test]
async fn alias_to_a_missing_target_waits_without_engine_writes() {
    let mut h = Harness::start().await;
    let object = alias_named(
        "products",
        "not_there_yet",
        json!({}),
        "2026-03-01T00:00:00Z",
    );
    h.put_alias(&object);
    let object = h.add_alias_finalizer(&object).await;
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_status(&object, "collectionaliases")
    );
    result.expect("pass");
    assert_condition(&status, "Ready", "False", "WaitingForTarget");
    assert!(status.get("collection").is_none());
    assert!(h.engine_alias("default", "products").await.is_none());
}

#[tokio::test]
async fn collection_status_lists_its_aliases() {
    let mut h = Harness::start().await;
    let mut object = h.managed_collection("products-v1", json!({})).await;
    h.bound_alias("products", "products_v1", json!({})).await;
    // The alias pass hinted the collection controller.
    let hint = h.hints.collections.try_recv().expect("hint");
    assert_eq!(hint.name, "products-v1");
    let (result, status) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_status(&object, "collections")
    );
    result.expect("pass");
    assert_eq!(status["aliases"], json!(["products"]));
    object.status = Some(serde_json::from_value::<CollectionStatus>(status).expect("status"));
    assert_eq!(object.status.as_ref().map(|s| s.aliases.len()), Some(1));
}

#[tokio::test]
async fn repeated_identical_events_are_aggregated_into_a_series() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1", "intruder"]).await;
    let object = h.bound_alias("products", "products_v1", json!({})).await;
    let addr = h.engine.addr;
    let move_away = || async move {
        let mut client = common::connect(addr).await;
        let status = client
            .alter_alias(AlterAliasRequest {
                db_name: "default".into(),
                collection_name: "intruder".into(),
                alias: "products".into(),
                ..Default::default()
            })
            .await
            .expect("AlterAlias rpc")
            .into_inner();
        common::assert_ok(&status, "AlterAlias");
    };
    move_away().await;
    let (result, name) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_event_named("products", "DriftCorrected")
    );
    result.expect("first repair");
    move_away().await;
    let (result, ()) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_event_repeat(&name, 2)
    );
    result.expect("second repair");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
}

fn with_credentials(mut coordinator: Coordinator, secret: &str) -> Coordinator {
    if let Some(external) = coordinator.spec.external.as_mut() {
        external.credentials_secret =
            Some(serde_json::from_value(json!({"name": secret})).expect("reference"));
    }
    coordinator
}

#[tokio::test]
async fn credentials_are_read_from_the_secret() {
    let mut h = Harness::start().await;
    let coordinator = with_credentials(coordinator(h.engine.addr), "engine-credentials");
    h.coordinators
        .apply_watcher_event(&watcher::Event::Apply(coordinator));
    let object = collection_named("secured", json!({}), "2026-02-01T00:00:00Z");
    h.put_collection(&object);
    let mut object = h.add_collection_finalizer(&object).await;

    // Missing Secret: a terminal error, reported without any secret value.
    let (result, status) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            h.api.expect_secret("engine-credentials", None).await;
            h.api.expect_status(&object, "collections").await
        }
    );
    let error = result.expect_err("no credentials");
    assert!(error.is_terminal(), "{error}");
    assert_condition(&status, "Ready", "False", "CredentialsInvalid");
    object.status = Some(serde_json::from_value(status).expect("status"));

    // With a token: connected (sent as the authorization header), the collection created.
    let (result, status) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            // base64 of "root:Milvus"
            h.api
                .expect_secret(
                    "engine-credentials",
                    Some(json!({"token": "cm9vdDpNaWx2dXM="})),
                )
                .await;
            h.api.expect_event("secured", "CreatedCollection").await;
            h.api.expect_status(&object, "collections").await
        }
    );
    result.expect("create pass");
    assert_condition(&status, "Ready", "True", "Available");
    assert!(h.engine_collection("default", "secured").await.is_some());
}

// ---------------------------------------------------------------------------------------
// The serving gate: indexes and load on the Collection, the gate on the alias.

/// A Collection pass that makes the given engine calls (one Event each, in order) and
/// writes the status; returns the status and the requeue.
async fn collection_pass(
    h: &mut Harness,
    object: &mut Collection,
    events: &[&str],
) -> (Value, kube::runtime::controller::Action) {
    let name = object.metadata.name.clone().unwrap_or_default();
    let (result, (notes, status)) = tokio::join!(
        collection::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let mut notes = Vec::new();
            for reason in events {
                notes.push(h.api.expect_event(&name, reason).await);
            }
            (notes, h.api.expect_status(&*object, "collections").await)
        }
    );
    let requeue = result.expect("collection pass");
    assert_eq!(notes.len(), events.len());
    object.status = Some(serde_json::from_value(status.clone()).expect("status"));
    h.put_collection(object);
    (status, requeue)
}

fn serving_spec() -> Value {
    json!({
        "indexes": [{"fieldName": "v", "indexType": "HNSW", "metricType": "L2",
                     "params": {"M": "8", "efConstruction": "64"}}],
        "load": {"policy": "WhileAliased", "releaseDelay": "30s"}
    })
}

#[tokio::test]
async fn swap_waits_for_the_target_to_serve_then_moves_and_records_each_step() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1"]).await;
    let mut alias_object = h.bound_alias("products", "products_v1", json!({})).await;
    let mut target = h.managed_collection("products-v2", serving_spec()).await;
    // Created in that pass: indexes and load wait for the next one, which comes soon.
    let created = target.status.clone().expect("status");
    let serving = created
        .conditions
        .iter()
        .find(|c| c.type_ == "Serving")
        .expect("Serving condition");
    assert_eq!(
        (serving.status.as_str(), serving.reason.as_str()),
        ("False", "NotReady")
    );

    // The spec asks for v2, which has no index and is not loaded: the alias stays on v1.
    alias_object.spec.collection = "products_v2".into();
    alias_object.metadata.generation = Some(2);
    h.put_alias(&alias_object);
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(alias_object.clone()), h.ctx.clone()),
        h.api.expect_status(&alias_object, "collectionaliases")
    );
    let requeue = result.expect("wait pass");
    assert_condition(&status, "Ready", "False", "WaitingForTarget");
    let message = condition(&status, "Ready")["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("waiting for products_v2"), "{message}");
    assert!(
        message.contains("alias products still points to products_v1"),
        "{message}"
    );
    assert_eq!(status["collection"], "products_v1");
    assert_eq!(
        status["lastSwap"],
        json!({"from": "products_v1", "to": "products_v2", "requestedAt": NOW})
    );
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
    // Waiting costs one round of engine reads per 5 s at most.
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(Duration::from_secs(5))
    );
    // The target's Collection is asked to look again (it is awaited now: WhileAliased loads).
    let mut hinted = Vec::new();
    while let Ok(reference) = h.hints.collections.try_recv() {
        hinted.push(reference.name);
    }
    assert!(hinted.contains(&"products-v2".to_string()), "{hinted:?}");
    alias_object.status = Some(serde_json::from_value(status).expect("status"));
    h.put_alias(&alias_object);

    // The Collection creates its index, then loads (the engine refuses to load a vector
    // field without an index), then serves.
    let (status, requeue) = collection_pass(&mut h, &mut target, &["IndexCreated"]).await;
    assert_condition(&status, "Ready", "True", "Available");
    assert_condition(&status, "Indexed", "False", "IndexMissing");
    assert_condition(&status, "Serving", "False", "NotIndexed");
    assert_eq!(status["indexes"][0]["state"], "Missing");
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(Duration::from_secs(5))
    );
    let (status, _) = collection_pass(&mut h, &mut target, &["LoadRequested"]).await;
    assert_condition(&status, "Indexed", "True", "Built");
    assert_condition(&status, "Loaded", "False", "Loading");
    assert_condition(&status, "Serving", "False", "NotLoaded");
    assert_eq!(status["indexes"][0]["name"], "v");
    assert_eq!(status["indexes"][0]["state"], "Finished");
    assert_eq!(status["load"]["state"], "NotLoad");
    let (status, _) = collection_pass(&mut h, &mut target, &[]).await;
    assert_condition(&status, "Loaded", "True", "Loaded");
    assert_condition(&status, "Serving", "True", "Serving");
    assert_eq!(status["load"], json!({"state": "Loaded", "progress": 100}));
    assert_eq!(status["rowCount"], 0);
    // Serving=True changes what aliases watch for: the alias is requeued.
    assert_eq!(alias::aliases_for_collection(&h.ctx, &target).len(), 1);

    // Now the gate opens: one AlterAlias, verified through the engine, then Ready.
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(alias_object.clone()), h.ctx.clone()),
        async {
            h.api.expect_event("products", "AliasSwitched").await;
            h.api
                .expect_status(&alias_object, "collectionaliases")
                .await
        }
    );
    result.expect("swap pass");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v2")
    );
    assert_condition(&status, "Ready", "True", "Available");
    assert_eq!(status["collection"], "products_v2");
    assert_eq!(status["previousCollection"], "products_v1");
    assert_eq!(
        status["lastSwap"],
        json!({"from": "products_v1", "to": "products_v2", "requestedAt": NOW,
               "appliedAt": NOW, "verifiedAt": NOW})
    );
    // The previous target is kept.
    assert!(
        h.engine_collection("default", "products_v1")
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_row_guard_blocks_the_swap_with_the_numbers_and_a_warning() {
    let mut h = Harness::start().await;
    h.raw_collections(&["products_v1", "products_v2"]).await;
    let mut object = h.bound_alias("products", "products_v1", json!({})).await;

    object.spec.collection = "products_v2".into();
    object.spec.guards =
        Some(serde_json::from_value(json!({"minRowCount": 1000})).expect("guards"));
    object.metadata.generation = Some(2);
    let (result, (note, status)) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let note = h.api.expect_event("products", "SwapBlocked").await;
            (
                note,
                h.api.expect_status(&object, "collectionaliases").await,
            )
        }
    );
    let requeue = result.expect("blocked pass");
    assert_eq!(
        note,
        "products_v2 has 0 rows, needs >= 1,000 (the engine reports 0 rows); alias products \
         still points to products_v1"
    );
    assert_condition(&status, "Ready", "False", "SwapBlocked");
    assert_eq!(condition(&status, "Ready")["message"], note.as_str());
    assert_eq!(status["collection"], "products_v1");
    assert_eq!(status["lastSwap"]["requestedAt"], NOW);
    assert!(status["lastSwap"].get("appliedAt").is_none(), "{status}");
    assert_eq!(
        h.engine_alias("default", "products").await.as_deref(),
        Some("products_v1")
    );
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(Duration::from_secs(5))
    );

    // The recheck (the informer cache now holding the written status) finds the gate
    // shut for the same reason: no second Warning, and the status is already right, so
    // nothing is written at all.
    object.status = Some(serde_json::from_value(status.clone()).expect("a status"));
    let (result, ()) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        h.api.expect_silence()
    );
    result.expect("recheck");

    // Other numbers, same reason: the status message follows, still no new Warning.
    object.spec.guards =
        Some(serde_json::from_value(json!({"minRowCount": 2000})).expect("guards"));
    object.metadata.generation = Some(3);
    let (result, status) = tokio::join!(
        alias::reconcile(Arc::new(object.clone()), h.ctx.clone()),
        async {
            let status = h.api.expect_status(&object, "collectionaliases").await;
            h.api.expect_silence().await;
            status
        }
    );
    result.expect("recheck with other numbers");
    assert!(
        condition(&status, "Ready")["message"]
            .as_str()
            .is_some_and(|m| m.contains("2,000")),
        "{status}"
    );
}

#[tokio::test]
async fn while_aliased_loads_while_awaited_and_releases_after_the_delay() {
    let mut h = Harness::start().await;
    let mut target = h.managed_collection("products-v2", serving_spec()).await;
    // Nobody wants it: index yes, load no.
    let (status, _) = collection_pass(&mut h, &mut target, &["IndexCreated"]).await;
    assert!(status.get("load").is_some());
    let (status, _) = collection_pass(&mut h, &mut target, &[]).await;
    assert_condition(&status, "Loaded", "False", "NotAliased");
    assert_condition(&status, "Serving", "False", "NotLoaded");

    // An alias waits for it: loaded.
    let alias_object = alias_named("products", "products_v2", json!({}), "2026-03-01T00:00:00Z");
    h.put_alias(&alias_object);
    let (status, _) = collection_pass(&mut h, &mut target, &["LoadRequested"]).await;
    assert_condition(&status, "Loaded", "False", "Loading");
    let (status, _) = collection_pass(&mut h, &mut target, &[]).await;
    assert_condition(&status, "Serving", "True", "Serving");

    // The alias goes: the release is scheduled releaseDelay (30 s) later, and the next
    // pass is due then.
    h.aliases
        .apply_watcher_event(&watcher::Event::Delete(alias_object));
    let (status, requeue) = collection_pass(&mut h, &mut target, &[]).await;
    assert_condition(&status, "Loaded", "True", "ReleaseScheduled");
    assert_eq!(status["load"]["releaseAt"], "2026-05-01T12:00:30Z");
    assert_eq!(
        requeue,
        kube::runtime::controller::Action::requeue(Duration::from_secs(30))
    );

    // Once it falls due (recorded in the past here, as the test clock stands still), the
    // collection is released.
    if let Some(load) = target.status.as_mut().and_then(|s| s.load.as_mut()) {
        load.release_at = Some("2026-05-01T11:59:00Z".into());
    }
    if let Some(status) = &target.status {
        h.ctx.remembered_collections.set("uid-products-v2", status);
    }
    let (status, _) = collection_pass(&mut h, &mut target, &["Released"]).await;
    assert_condition(&status, "Loaded", "False", "Released");
    assert_condition(&status, "Serving", "False", "NotLoaded");
    assert!(status["load"].get("releaseAt").is_none(), "{status}");
}
