//! The controllers as they run in a cluster — watches, predicates, the Collection →
//! alias readiness mapper, requeue hints, resync, graceful shutdown — against a small
//! in-memory API server (list, watch, JSON/apply patches, Events) behind `tower-test`, and
//! the real coordinator over loopback.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use collection_operator::operator::http::Health;
use collection_operator::operator::leader::LeaderElectionArgs;
use collection_operator::operator::metrics::Metrics;
use collection_operator::operator::{OperatorArgs, Shutdown, run_controllers};
use collection_operator::proto::api::{AlterAliasRequest, DescribeAliasRequest};
use common::InProcess;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;

const NS: &str = "test";
const GROUP_PATH: &str = "/apis/collections.dev/v1alpha1/namespaces/test/";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/test/events";

static DUMP: Mutex<Option<FakeApi>> = Mutex::new(None);

#[derive(Default)]
struct State {
    revision: u64,
    objects: BTreeMap<(String, String), Value>,
    log: Vec<(u64, String, Value)>,
    events: Vec<Value>,
    status_writes: usize,
}

/// An API server that keeps objects in memory and serves what the operator uses.
#[derive(Clone, Default)]
struct FakeApi {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "coordinators" => "Coordinator",
        "collections" => "Collection",
        _ => "CollectionAlias",
    }
}

impl FakeApi {
    fn record(&self, state: &mut State, plural: &str, kind: &str, mut object: Value) {
        state.revision += 1;
        object["metadata"]["resourceVersion"] = json!(state.revision.to_string());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if kind == "DELETED" {
            state.objects.remove(&(plural.to_string(), name));
        } else {
            state
                .objects
                .insert((plural.to_string(), name), object.clone());
        }
        let revision = state.revision;
        state.log.push((
            revision,
            plural.to_string(),
            json!({"type": kind, "object": object}),
        ));
        self.changed.notify_waiters();
    }

    /// A user (or GitOps tool) creates an object.
    fn create(&self, plural: &str, name: &str, spec: Value, annotations: Value) {
        let mut state = self.state.lock();
        let revision = state.revision + 1;
        let object = json!({
            "apiVersion": "collections.dev/v1alpha1",
            "kind": kind_of(plural),
            "metadata": {
                "name": name, "namespace": NS, "uid": format!("uid-{name}-{revision}"),
                "generation": 1, "creationTimestamp": format!("2026-01-01T00:00:{:02}Z", revision % 60),
                "annotations": annotations,
            },
            "spec": spec,
        });
        self.record(&mut state, plural, "ADDED", object);
    }

    /// A user edits the spec.
    fn edit_spec(&self, plural: &str, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut state = self.state.lock();
        let mut object = state.objects[&(plural.to_string(), name.to_string())].clone();
        edit(&mut object["spec"]);
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
        self.record(&mut state, plural, "MODIFIED", object);
    }

    /// A user deletes an object (it stays while it has finalizers).
    fn delete(&self, plural: &str, name: &str) {
        let mut state = self.state.lock();
        let mut object = state.objects[&(plural.to_string(), name.to_string())].clone();
        let has_finalizers = object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            object["metadata"]["deletionTimestamp"] = json!("2026-05-01T00:00:00Z");
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            object["metadata"]["generation"] = json!(generation);
            self.record(&mut state, plural, "MODIFIED", object);
        } else {
            self.record(&mut state, plural, "DELETED", object);
        }
    }

    fn object(&self, plural: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .objects
            .get(&(plural.to_string(), name.to_string()))
            .cloned()
    }

    fn event_reasons(&self) -> Vec<String> {
        self.state
            .lock()
            .events
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    async fn serve(self, mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) {
        while let Some((request, responder)) = handle.next_request().await {
            let api = self.clone();
            tokio::spawn(async move {
                let (status, body) = api.handle(request).await;
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .expect("response");
                responder.send_response(response);
            });
        }
    }

    async fn handle(&self, request: Request<Body>) -> (u16, Vec<u8>) {
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or_default().to_string();
        let method = parts.method.as_str().to_string();
        let json = |value: Value| serde_json::to_vec(&value).unwrap_or_default();
        let not_found = || {
            (
                404,
                json(
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                             "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            )
        };

        if path.starts_with(EVENTS_PATH) {
            self.state.lock().events.push(body.clone());
            return (201, json(body));
        }
        let Some(rest) = path.strip_prefix(GROUP_PATH) else {
            return not_found();
        };
        let segments: Vec<&str> = rest.split('/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", [plural]) if query.contains("watch=true") => {
                let since: u64 = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("resourceVersion="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let deadline = Instant::now() + Duration::from_millis(300);
                loop {
                    let notified = self.changed.notified();
                    let lines: Vec<String> = self
                        .state
                        .lock()
                        .log
                        .iter()
                        .filter(|(revision, kind, _)| *revision > since && kind == plural)
                        .map(|(_, _, event)| event.to_string())
                        .collect();
                    if !lines.is_empty() || Instant::now() >= deadline {
                        return (200, lines.join("\n").into_bytes());
                    }
                    let _ = tokio::time::timeout_at(deadline.into(), notified).await;
                }
            }
            ("GET", [plural]) => {
                let state = self.state.lock();
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|((kind, _), _)| kind == plural)
                    .map(|(_, object)| object.clone())
                    .collect();
                (
                    200,
                    json(json!({
                        "apiVersion": "collections.dev/v1alpha1",
                        "kind": format!("{}List", kind_of(plural)),
                        "metadata": {"resourceVersion": state.revision.to_string()},
                        "items": items,
                    })),
                )
            }
            ("GET", [plural, name]) => match self.object(plural, name) {
                Some(object) => (200, json(object)),
                None => not_found(),
            },
            ("PATCH", [plural, name, "status"]) => {
                let mut state = self.state.lock();
                let Some(mut object) = state
                    .objects
                    .get(&(plural.to_string(), name.to_string()))
                    .cloned()
                else {
                    return not_found();
                };
                object["status"] = body["status"].clone();
                state.status_writes += 1;
                self.record(&mut state, plural, "MODIFIED", object.clone());
                (200, json(object))
            }
            ("PATCH", [plural, name]) => {
                let mut state = self.state.lock();
                let Some(mut object) = state
                    .objects
                    .get(&(plural.to_string(), name.to_string()))
                    .cloned()
                else {
                    return not_found();
                };
                let mut finalizers: Vec<Value> = object["metadata"]["finalizers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for op in body.as_array().cloned().unwrap_or_default() {
                    let path = op["path"].as_str().unwrap_or_default();
                    match op["op"].as_str() {
                        Some("add") if path == "/metadata/finalizers" => {
                            finalizers = op["value"].as_array().cloned().unwrap_or_default()
                        }
                        Some("add") if path == "/metadata/finalizers/-" => {
                            finalizers.push(op["value"].clone())
                        }
                        Some("remove") => {
                            if let Some(index) = path
                                .strip_prefix("/metadata/finalizers/")
                                .and_then(|i| i.parse::<usize>().ok())
                                && index < finalizers.len()
                            {
                                finalizers.remove(index);
                            }
                        }
                        _ => {}
                    }
                }
                object["metadata"]["finalizers"] = json!(finalizers);
                let gone =
                    finalizers.is_empty() && !object["metadata"]["deletionTimestamp"].is_null();
                self.record(
                    &mut state,
                    plural,
                    if gone { "DELETED" } else { "MODIFIED" },
                    object.clone(),
                );
                (200, json(object))
            }
            _ => not_found(),
        }
    }
}

async fn engine_alias(engine: &InProcess, alias: &str) -> Option<String> {
    let mut client = engine.client().await;
    let response = client
        .describe_alias(DescribeAliasRequest {
            db_name: "default".into(),
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let status = response.status.unwrap_or_default();
    (status.code == 0).then_some(response.collection)
}

async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        if Instant::now() >= deadline {
            if let Some(api) = DUMP.lock().as_ref() {
                let state = api.state.lock();
                for object in state.objects.values() {
                    eprintln!("{object:#}");
                }
                eprintln!(
                    "events: {:#}",
                    serde_json::to_value(&state.events).unwrap_or_default()
                );
            }
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ready(object: &Option<Value>) -> bool {
    object.as_ref().is_some_and(|o| {
        o["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        }) && o["status"]["observedGeneration"] == o["metadata"]["generation"]
    })
}

fn collection_spec() -> Value {
    json!({
        "coordinatorRef": {"name": "engine"},
        "fields": [
            {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
            {"name": "v", "dataType": "FloatVector", "dim": 4}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_converge_gate_swap_repair_delete_and_shut_down() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let engine = InProcess::start().await;
    let api = FakeApi::default();
    *DUMP.lock() = Some(api.clone());
    api.create(
        "coordinators",
        "engine",
        json!({"external": {"endpoint": format!("http://{}", engine.addr)}}),
        json!({}),
    );
    api.create("collections", "products-v1", collection_spec(), json!({}));
    api.create(
        "collectionaliases",
        "products",
        json!({"coordinatorRef": {"name": "engine"}, "collection": "products_v1"}),
        json!({}),
    );

    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(api.clone().serve(handle));
    let client = Client::new(service, "default");
    let args = OperatorArgs {
        namespace: Some(NS.to_string()),
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        resync_interval: Duration::from_secs(1),
        concurrency: 4,
        leader_election: LeaderElectionArgs {
            enabled: false,
            namespace: None,
            lease_name: "collection-operator".into(),
            identity: None,
            lease_duration: Duration::from_secs(15),
            renew_grace: Duration::from_secs(5),
        },
    };
    let health = Arc::new(Health::default());
    let (trigger, shutdown) = Shutdown::new();
    let controllers = tokio::spawn({
        let health = health.clone();
        async move { run_controllers(client, &args, Arc::new(Metrics::new()), health, shutdown).await }
    });

    // Converge: the collection is created and Ready, then (gated on it) the alias is bound.
    eventually("the alias is bound to products_v1", || async {
        engine_alias(&engine, "products").await.as_deref() == Some("products_v1")
    })
    .await;
    eventually("both resources report Ready", || async {
        ready(&api.object("collections", "products-v1"))
            && ready(&api.object("collectionaliases", "products"))
    })
    .await;
    assert!(health.is_ready(), "caches synced");
    let coordinator = api.object("coordinators", "engine").expect("coordinator");
    assert_eq!(
        coordinator["status"]["conditions"][0]["reason"],
        "Connected"
    );

    // Swap: a new Collection and a one-line edit of the alias. The alias waits until the
    // new Collection is Ready, then moves in one AlterAlias.
    api.create("collections", "products-v2", collection_spec(), json!({}));
    api.edit_spec("collectionaliases", "products", |spec| {
        spec["collection"] = json!("products_v2")
    });
    eventually("the alias moved to products_v2", || async {
        engine_alias(&engine, "products").await.as_deref() == Some("products_v2")
    })
    .await;
    eventually("the alias status records the rollback target", || async {
        api.object("collectionaliases", "products")
            .is_some_and(|a| a["status"]["previousCollection"] == "products_v1")
    })
    .await;

    // Drift: moved behind the operator's back, moved back on the next (1 s) resync.
    {
        let mut client = engine.client().await;
        let status = client
            .alter_alias(AlterAliasRequest {
                db_name: "default".into(),
                collection_name: "products_v1".into(),
                alias: "products".into(),
                ..Default::default()
            })
            .await
            .expect("AlterAlias rpc")
            .into_inner();
        common::assert_ok(&status, "AlterAlias");
    }
    eventually("drift repaired", || async {
        engine_alias(&engine, "products").await.as_deref() == Some("products_v2")
            && api.event_reasons().iter().any(|r| r == "DriftCorrected")
    })
    .await;

    // The collections' alias lists follow (hinted by the alias controller).
    eventually(
        "collection statuses list the alias where it points",
        || async {
            let v1 = api.object("collections", "products-v1");
            let v2 = api.object("collections", "products-v2");
            v1.is_some_and(|c| c["status"]["aliases"].is_null())
                && v2.is_some_and(|c| c["status"]["aliases"] == json!(["products"]))
        },
    )
    .await;

    // No self-triggering: with everything in sync, status writes stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = api.state.lock().status_writes;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        api.state.lock().status_writes,
        writes,
        "resync passes of objects in sync write nothing"
    );

    // Delete the alias (policy Delete): the engine alias goes, then the resource.
    api.delete("collectionaliases", "products");
    eventually("the alias resource is gone", || async {
        api.object("collectionaliases", "products").is_none()
    })
    .await;
    assert_eq!(engine_alias(&engine, "products").await, None);

    let reasons = api.event_reasons();
    for expected in [
        "CreatedCollection",
        "CreatedAlias",
        "AliasSwitched",
        "DriftCorrected",
        "DroppedAlias",
    ] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no {expected} Event in {reasons:?}"
        );
    }

    // Graceful shutdown.
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(10), controllers)
        .await
        .expect("controllers stop on shutdown")
        .expect("join")
        .expect("controllers");
}
