//! A managed Coordinator's StreamingNode scale-down: the real Coordinator reconciler
//! against a `tower-test` mocked Kubernetes API, and real processes — a coordinator placing
//! 4 pchannels, and 3 streaming nodes on distinct loopback IPs standing in for the pods
//! `wal-streamingnode-{0,1,2}`. The spec asks for 2 nodes; passes of the reconciler freeze
//! ordinal 2, wait while it holds pchannels, and lower `replicas` only once it holds none.
//! The mocked API checks that invariant against the coordinator's own placement at the
//! moment of every StatefulSet write; after the pod is gone, its server ID leaves the freeze
//! list.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use collection_operator::crd::Coordinator;
use collection_operator::operator::context::{CacheSync, Settings, Stores};
use collection_operator::operator::managed::{DRAINING, Ordinals, WAL_PLACEMENT_READY};
use collection_operator::operator::metrics::Metrics;
use collection_operator::operator::{Context, coordinator, filled_store};
use collection_operator::streaming::client::Discovery;
use common::streaming::Proc;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{Value, json};

const NS: &str = "test";
const STS: &str = "wal-streamingnode";
/// Loopback addresses of the three "pods", by ordinal.
const POD_IPS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];

/// What the mocked API server holds and saw.
#[derive(Default)]
struct ApiState {
    /// `spec.replicas` of the StreamingNode StatefulSet (`None`: not created yet).
    streaming_replicas: Option<i64>,
    /// Every replicas value applied to it, in order.
    replica_writes: Vec<i64>,
    /// Scale-downs applied while a removed ordinal still held a pchannel.
    violations: Vec<String>,
    /// Kinds of every server-side-applied object.
    applied: Vec<(String, Value)>,
    /// The last status written.
    status: Option<Value>,
    /// Event reasons, in order.
    events: Vec<String>,
    /// Server-side applies to paths containing this are refused with 403.
    forbidden: Option<&'static str>,
}

fn reply(responder: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response");
    responder.send_response(response);
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
}

/// Serves the operator's requests until the client is dropped.
async fn serve_api(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    state: Arc<Mutex<ApiState>>,
    coordinator: String,
) {
    while let Some((request, responder)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        let method = parts.method.to_string();
        let path = parts.uri.path().to_string();
        let sts_path = format!("/apis/apps/v1/namespaces/{NS}/statefulsets/{STS}");
        match (method.as_str(), path.as_str()) {
            ("GET", p) if p == sts_path => {
                let replicas = state.lock().streaming_replicas;
                match replicas {
                    Some(replicas) => reply(
                        responder,
                        200,
                        &json!({
                            "apiVersion": "apps/v1", "kind": "StatefulSet",
                            "metadata": {"name": STS, "namespace": NS},
                            "spec": {"replicas": replicas, "selector": {}, "template": {}}
                        }),
                    ),
                    None => reply(responder, 404, &not_found()),
                }
            }
            ("GET", p) if p == format!("/api/v1/namespaces/{NS}/pods") => {
                let replicas = state.lock().streaming_replicas.unwrap_or(0);
                let items: Vec<Value> = POD_IPS
                    .iter()
                    .enumerate()
                    .take(replicas as usize)
                    .map(|(ordinal, ip)| {
                        json!({"metadata": {"name": format!("{STS}-{ordinal}")}, "status": {"podIP": ip}})
                    })
                    .collect();
                reply(
                    responder,
                    200,
                    &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}),
                );
            }
            ("PATCH", p) if p == sts_path => {
                let replicas = body["spec"]["replicas"].as_i64().expect("replicas applied");
                let previous = state.lock().streaming_replicas;
                if previous.is_some_and(|p| replicas < p) {
                    // The invariant, checked against the coordinator itself right now.
                    let view = Discovery::start(&coordinator)
                        .await
                        .expect("discovery")
                        .current();
                    let ordinals = Ordinals {
                        statefulset: STS.into(),
                        by_ip: POD_IPS
                            .iter()
                            .enumerate()
                            .map(|(o, ip)| (ip.to_string(), o as u32))
                            .collect(),
                    };
                    for placed in view.channels.values() {
                        if ordinals
                            .of(&placed.address)
                            .is_some_and(|o| o as i64 >= replicas)
                        {
                            state.lock().violations.push(format!(
                                "replicas {replicas} applied while {} holds {}",
                                placed.address, placed.channel.name
                            ));
                        }
                    }
                }
                let mut state = state.lock();
                state.streaming_replicas = Some(replicas);
                state.replica_writes.push(replicas);
                state.applied.push(("StatefulSet".into(), body.clone()));
                drop(state);
                reply(responder, 200, &body);
            }
            ("PATCH", p) if p.ends_with("/status") => {
                state.lock().status = Some(body["status"].clone());
                let mut stored =
                    serde_json::to_value(managed_coordinator("http://unused")).expect("json");
                stored["status"] = body["status"].clone();
                reply(responder, 200, &stored);
            }
            ("PATCH", p) if state.lock().forbidden.is_some_and(|f| p.contains(f)) => {
                reply(
                    responder,
                    403,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "Forbidden", "code": 403,
                            "message": "poddisruptionbudgets is forbidden"}),
                );
            }
            ("PATCH", _) => {
                let kind = body["kind"].as_str().unwrap_or_default().to_string();
                state.lock().applied.push((kind, body.clone()));
                reply(responder, 200, &body);
            }
            ("POST", p) if p.contains("/events") => {
                let reason = body["reason"].as_str().unwrap_or_default().to_string();
                state.lock().events.push(reason);
                reply(responder, 201, &body);
            }
            _ => reply(responder, 404, &not_found()),
        }
    }
}

fn managed_coordinator(endpoint: &str) -> Coordinator {
    serde_json::from_value(json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "Coordinator",
        "metadata": {
            "name": "wal", "namespace": NS, "uid": "uid-wal", "generation": 1,
            "annotations": {"collections.dev/endpoint": endpoint}
        },
        "spec": {"managed": {"streaming": {
            "pchannels": 4, "maxPChannelsPerNode": 2, "spareNodes": 0, "minReplicas": 1
        }}}
    }))
    .expect("a managed Coordinator")
}

fn condition(status: &Value, type_: &str) -> Option<(String, String)> {
    status["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == type_).then(|| {
            (
                c["status"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_down_never_removes_a_node_that_holds_a_pchannel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let wal_dir = dir.path().join("wal");
    let coordinator_proc = Proc::coordinator_with(
        &dir.path().join("meta"),
        port,
        4,
        1000,
        &["--max-pchannels-per-node", "2"],
    );
    // The node to be removed (ordinal 2) starts first and takes two pchannels (the cap);
    // placement is sticky, so it still holds them when the scale-down starts.
    let last = Proc::node_on(&coordinator_proc.address, &wal_dir, POD_IPS[2]);
    let mut discovery = Discovery::start(&coordinator_proc.address)
        .await
        .expect("discovery");
    discovery
        .wait_for(Duration::from_secs(30), |view| view.channels.len() == 2)
        .await
        .expect("ordinal 2 holds two pchannels");
    let mut nodes: Vec<Proc> = POD_IPS[..2]
        .iter()
        .map(|ip| Proc::node_on(&coordinator_proc.address, &wal_dir, ip))
        .collect();
    nodes.push(last);
    let view = discovery
        .wait_for(Duration::from_secs(30), |view| {
            view.channels.len() == 4 && view.nodes.len() == 3
        })
        .await
        .expect("4 pchannels on 3 nodes");
    let held_by_last = view
        .channels
        .values()
        .filter(|placed| placed.address.starts_with(POD_IPS[2]))
        .count();
    assert!(held_by_last > 0, "ordinal 2 holds pchannels: {view:?}");

    let state = Arc::new(Mutex::new(ApiState {
        streaming_replicas: Some(3),
        ..Default::default()
    }));
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(serve_api(
        handle,
        state.clone(),
        coordinator_proc.address.clone(),
    ));
    let client = Client::new(service, NS);
    let endpoint = format!("http://{}", coordinator_proc.address);
    let mut object = managed_coordinator(&endpoint);
    let (coordinators, _) = filled_store([object.clone()]);
    let (collections, _) = filled_store(Vec::new());
    let (aliases, _) = filled_store(Vec::new());
    let ctx = Arc::new(Context::new(
        client,
        Stores {
            coordinators,
            collections,
            aliases,
            sync: CacheSync::all_synced(),
        },
        Settings::default(),
        Arc::new(Metrics::new()),
        Default::default(),
    ));

    let mut saw_draining = false;
    let started = Instant::now();
    let pass = |object: Coordinator| {
        let ctx = ctx.clone();
        async move {
            coordinator::reconcile(Arc::new(object), ctx)
                .await
                .expect("a reconcile pass")
        }
    };
    while state.lock().streaming_replicas != Some(2) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no scale-down within 60 s; replica writes {:?}, events {:?}",
            state.lock().replica_writes,
            state.lock().events
        );
        pass(object.clone()).await;
        let status = state.lock().status.clone().unwrap_or_default();
        if condition(&status, DRAINING).is_some_and(|(s, _)| s == "True") {
            saw_draining = true;
            assert_eq!(
                state.lock().streaming_replicas,
                Some(3),
                "replicas stay while draining"
            );
        }
        object.status = serde_json::from_value(status).ok();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let snapshot = |state: &Arc<Mutex<ApiState>>| {
        let state = state.lock();
        (
            state.replica_writes.clone(),
            state.events.clone(),
            state.violations.clone(),
        )
    };
    let (writes, events, violations) = snapshot(&state);
    assert!(violations.is_empty(), "{violations:?}");
    assert!(saw_draining, "the freeze was reported as Draining=True");
    assert!(
        events.iter().any(|e| e == "FreezingStreamingNodes"),
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e == "ScaledDownStreamingNodes"),
        "{events:?}"
    );
    assert_eq!(writes.last(), Some(&2));
    assert!(writes.iter().all(|r| *r == 3 || *r == 2), "{writes:?}");
    println!(
        "scale-down 3 -> 2 after {} ms: replica writes {writes:?}, events {events:?}",
        started.elapsed().as_millis()
    );

    // The pod goes; once its session has lapsed, its server ID leaves the freeze list.
    nodes[2].kill9();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        pass(object.clone()).await;
        let status = state.lock().status.clone().unwrap_or_default();
        object.status = serde_json::from_value(status.clone()).ok();
        let nodes_left = status["streaming"]["nodes"].as_array().map_or(0, Vec::len);
        if nodes_left == 2
            && condition(&status, WAL_PLACEMENT_READY).is_some_and(|(s, _)| s == "True")
        {
            let table = &status["streaming"];
            let rows = table["pchannels"].as_array().cloned().unwrap_or_default();
            assert_eq!(rows.len(), 4, "{table}");
            for row in &rows {
                let pod = row["pod"].as_str().unwrap_or_default();
                assert!(
                    pod == "wal-streamingnode-0" || pod == "wal-streamingnode-1",
                    "{row}"
                );
                assert!(row["term"].as_i64().unwrap_or_default() >= 1, "{row}");
            }
            assert!(
                table["nodes"]
                    .as_array()
                    .is_some_and(|n| n.iter().all(|n| n["frozen"] == false)),
                "{table}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gone node never left the placement: {status}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let applied: Vec<String> = state
        .lock()
        .applied
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    for kind in [
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(
            applied.iter().any(|k| k == kind),
            "{kind} applied: {applied:?}"
        );
    }
    // What reaches the API server is hardened: the pods' own account without a token,
    // requests and a memory limit, the restricted context; the coordinator probed through
    // grpc.health.v1; the streaming port open to the coordinator pods only.
    {
        let state = state.lock();
        let account = state
            .applied
            .iter()
            .find(|(k, _)| k == "ServiceAccount")
            .map(|(_, body)| body.clone())
            .expect("a ServiceAccount");
        assert_eq!(account["automountServiceAccountToken"], false, "{account}");
        let account_name = account["metadata"]["name"].clone();
        let mut pods = 0;
        for (_, body) in state.applied.iter().filter(|(k, _)| k == "StatefulSet") {
            let pod = &body["spec"]["template"]["spec"];
            pods += 1;
            assert_eq!(pod["serviceAccountName"], account_name, "{pod}");
            assert_eq!(pod["automountServiceAccountToken"], false, "{pod}");
            let container = &pod["containers"][0];
            assert!(
                container["resources"]["requests"]["memory"].is_string(),
                "{container}"
            );
            assert!(
                container["resources"]["limits"]["memory"].is_string(),
                "{container}"
            );
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false);
            assert_eq!(security["runAsNonRoot"], true);
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
            assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
            if container["name"] == "coordinator" {
                assert_eq!(
                    container["readinessProbe"]["grpc"]["port"], 19530,
                    "{container}"
                );
                assert_eq!(
                    container["livenessProbe"]["grpc"]["port"], 19530,
                    "{container}"
                );
            }
        }
        assert!(pods >= 2, "both StatefulSets applied");
        let policy = state
            .applied
            .iter()
            .find(|(k, _)| k == "NetworkPolicy")
            .map(|(_, body)| body.clone())
            .expect("a NetworkPolicy");
        assert_eq!(
            policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "streamingnode"
        );
        assert_eq!(
            policy["spec"]["ingress"],
            json!([{
                "from": [{"podSelector": {"matchLabels": {
                    "app.kubernetes.io/component": "coordinator",
                    "app.kubernetes.io/instance": "wal",
                    "app.kubernetes.io/name": "collection-operator"
                }}}],
                "ports": [{"port": 22222, "protocol": "TCP"}]
            }]),
            "{policy}"
        );
    }
    for (kind, body) in state.lock().applied.iter() {
        assert_eq!(
            body["metadata"]["ownerReferences"][0]["uid"], "uid-wal",
            "{kind} is owned by the Coordinator"
        );
    }
    drop(nodes);
}

/// An object the operator may not apply (here: RBAC without PodDisruptionBudgets) ends the
/// pass with `Ready=False, reason=DeployFailed` and a Warning Event, and the StreamingNode
/// StatefulSet keeps its replicas.
#[tokio::test]
async fn a_deployment_the_api_refuses_is_reported_on_the_coordinator() {
    let state = Arc::new(Mutex::new(ApiState {
        streaming_replicas: Some(3),
        forbidden: Some("/poddisruptionbudgets/"),
        ..Default::default()
    }));
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    // No coordinator answers: the placement cannot be read, so nothing is removed.
    let closed = format!("127.0.0.1:{}", common::free_port());
    tokio::spawn(serve_api(handle, state.clone(), closed.clone()));
    let object = managed_coordinator(&format!("http://{closed}"));
    let (coordinators, _) = filled_store([object.clone()]);
    let (collections, _) = filled_store(Vec::new());
    let (aliases, _) = filled_store(Vec::new());
    let ctx = Arc::new(Context::new(
        Client::new(service, NS),
        Stores {
            coordinators,
            collections,
            aliases,
            sync: CacheSync::all_synced(),
        },
        Settings::default(),
        Arc::new(Metrics::new()),
        Default::default(),
    ));
    coordinator::reconcile(Arc::new(object), ctx)
        .await
        .expect("the pass ends with a requeue, not an error");
    let state = state.lock();
    let status = state.status.clone().expect("a status was written");
    assert_eq!(
        condition(&status, "Ready"),
        Some(("False".to_string(), "DeployFailed".to_string())),
        "{status}"
    );
    assert!(
        state.events.iter().any(|e| e == "DeployFailed"),
        "{:?}",
        state.events
    );
    assert_eq!(state.streaming_replicas, Some(3));
}
