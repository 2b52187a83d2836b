//! A small in-memory Kubernetes API server (list, watch, JSON and apply patches, status,
//! Events) for the resources the operator uses, served behind `tower-test`: the operator
//! runs against it as against a kube-apiserver. Shared by tests/operator_run.rs and
//! benches/swap.rs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::Notify;

pub const NS: &str = "test";
pub const GROUP_PATH: &str = "/apis/collections.dev/v1alpha1/namespaces/test/";
pub const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/test/events";

#[derive(Default)]
pub struct State {
    pub revision: u64,
    pub objects: BTreeMap<(String, String), Value>,
    pub log: Vec<(u64, String, Value)>,
    pub events: Vec<Value>,
    pub status_writes: usize,
}

/// An API server that keeps objects in memory and serves what the operator uses.
#[derive(Clone, Default)]
pub struct FakeApi {
    pub state: Arc<Mutex<State>>,
    pub changed: Arc<Notify>,
}

pub fn kind_of(plural: &str) -> &'static str {
    match plural {
        "coordinators" => "Coordinator",
        "collections" => "Collection",
        "routedaliases" => "RoutedAlias",
        _ => "CollectionAlias",
    }
}

impl FakeApi {
    pub fn record(&self, state: &mut State, plural: &str, kind: &str, mut object: Value) {
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
    pub fn create(&self, plural: &str, name: &str, spec: Value, annotations: Value) {
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
    pub fn edit_spec(&self, plural: &str, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut state = self.state.lock();
        let mut object = state.objects[&(plural.to_string(), name.to_string())].clone();
        edit(&mut object["spec"]);
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
        self.record(&mut state, plural, "MODIFIED", object);
    }

    /// A user deletes an object (it stays while it has finalizers).
    pub fn delete(&self, plural: &str, name: &str) {
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

    pub fn object(&self, plural: &str, name: &str) -> Option<Value> {
        self.state
            .lock()
            .objects
            .get(&(plural.to_string(), name.to_string()))
            .cloned()
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.state
            .lock()
            .events
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    pub async fn serve(self, mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) {
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

    pub async fn handle(&self, request: Request<Body>) -> (u16, Vec<u8>) {
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let apply = parts
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
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
            ("POST", [plural]) => {
                // A controller creates a child object (RoutedAlias → Collection).
                let mut state = self.state.lock();
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if state
                    .objects
                    .contains_key(&(plural.to_string(), name.clone()))
                {
                    return (
                        409,
                        json(
                            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "AlreadyExists", "code": 409,
                                    "message": "already exists"}),
                        ),
                    );
                }
                let object = new_object(&state, body, &name);
                self.record(&mut state, plural, "ADDED", object.clone());
                (201, json(object))
            }
            ("DELETE", [plural, name]) => {
                let Some(object) = self.object(plural, name) else {
                    return not_found();
                };
                self.delete(plural, name);
                (200, json(object))
            }
            ("PATCH", [plural, name]) if apply => {
                // Server-side apply of a whole child object: creates it, or replaces the
                // spec, labels and owner references (enough for the operator's children).
                let mut state = self.state.lock();
                let key = (plural.to_string(), name.to_string());
                let object = match state.objects.get(&key).cloned() {
                    None => {
                        let object = new_object(&state, body, name);
                        self.record(&mut state, plural, "ADDED", object.clone());
                        object
                    }
                    Some(mut object) => {
                        if object["spec"] != body["spec"] {
                            object["spec"] = body["spec"].clone();
                            let generation =
                                object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                            object["metadata"]["generation"] = json!(generation);
                        }
                        for field in ["labels", "ownerReferences"] {
                            if !body["metadata"][field].is_null() {
                                object["metadata"][field] = body["metadata"][field].clone();
                            }
                        }
                        self.record(&mut state, plural, "MODIFIED", object.clone());
                        object
                    }
                };
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

/// A posted or applied object as the API server stores it: uid, generation, creation time.
fn new_object(state: &State, mut object: Value, name: &str) -> Value {
    let revision = state.revision + 1;
    object["metadata"]["uid"] = json!(format!("uid-{name}-{revision}"));
    object["metadata"]["generation"] = json!(1);
    object["metadata"]["creationTimestamp"] =
        json!(format!("2026-01-01T00:01:{:02}Z", revision % 60));
    if let Some(object) = object.as_object_mut() {
        object.remove("status");
    }
    object
}

/// Operator flags for a run against this API server: namespace [`NS`], no leader
/// election, metrics on an ephemeral port.
pub fn operator_args(
    resync_interval: Duration,
    concurrency: u16,
) -> collection_operator::operator::OperatorArgs {
    collection_operator::operator::OperatorArgs {
        namespace: Some(NS.to_string()),
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        resync_interval,
        concurrency,
        managed_image: collection_operator::operator::context::DEFAULT_MANAGED_IMAGE.to_string(),
        allowed_endpoint_hosts: Vec::new(),
        leader_election: collection_operator::operator::leader::LeaderElectionArgs {
            enabled: false,
            namespace: None,
            lease_name: "collection-operator".into(),
            identity: None,
            lease_duration: Duration::from_secs(15),
            renew_grace: Duration::from_secs(5),
        },
    }
}
