//! What the operator does with a Coordinator's `credentialsSecret` and endpoint, against a
//! `tower-test` mocked Kubernetes API and a real token-protected coordinator on loopback,
//! reached through a relay that counts the connections made to it.
//!
//! Whoever may create a Coordinator chooses both the Secret and the endpoint, so the
//! operator sends a Secret only when it carries the opt-in label and is not a
//! service-account token, and connects only to hosts on its allow-list. A refusal is
//! `Ready=False` with the reason, a message naming the Secret (or endpoint) and what is
//! missing, and a Warning Event — and no connection to the endpoint at all.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use collection_operator::coordinator::{
    Authenticator, EngineConfig, Security, open_engine_async, serve_with,
};
use collection_operator::crd::Coordinator;
use collection_operator::operator::context::{CacheSync, Settings, Stores};
use collection_operator::operator::metrics::Metrics;
use collection_operator::operator::{Context, coordinator, filled_store};
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const NS: &str = "tenant";
const SECRET: &str = "engine-credentials";
/// The one credential the coordinator accepts (what the Secret holds).
const TOKEN: &str = "root:Milvus";

/// What the mocked API server holds and saw.
#[derive(Default)]
struct ApiState {
    /// The Secret served at `SECRET` (`None`: not found).
    secret: Option<Value>,
    /// Paths of every Secret read.
    secret_reads: Vec<String>,
    /// (type, reason, note) of every Event.
    events: Vec<(String, String, String)>,
    /// The last status written.
    status: Option<Value>,
    /// Paths of every other write (server-side applies of managed objects).
    writes: Vec<String>,
}

fn reply(responder: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response");
    responder.send_response(response);
}

async fn serve_api(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    state: Arc<Mutex<ApiState>>,
) {
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404});
    while let Some((request, responder)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        let path = parts.uri.path().to_string();
        match (parts.method.as_str(), path.as_str()) {
            ("GET", p) if p.contains("/secrets/") => {
                let mut state = state.lock();
                state.secret_reads.push(p.to_string());
                match state.secret.clone() {
                    Some(secret) if p.ends_with(&format!("/namespaces/{NS}/secrets/{SECRET}")) => {
                        reply(responder, 200, &secret)
                    }
                    _ => reply(responder, 404, &not_found),
                }
            }
            ("POST", p) if p.contains("/events") => {
                let text = |key: &str| body[key].as_str().unwrap_or_default().to_string();
                state
                    .lock()
                    .events
                    .push((text("type"), text("reason"), text("note")));
                reply(responder, 201, &body);
            }
            ("PATCH", p) if p.ends_with("/status") => {
                state.lock().status = Some(body["status"].clone());
                let mut stored = serde_json::to_value(external("http://unused")).expect("json");
                stored["status"] = body["status"].clone();
                reply(responder, 200, &stored);
            }
            (method, p) => {
                if method != "GET" {
                    state.lock().writes.push(p.to_string());
                }
                reply(responder, 404, &not_found)
            }
        }
    }
}

/// A coordinator accepting only [`TOKEN`], and a relay in front of it counting the
/// connections that reach it.
struct Protected {
    relay: SocketAddr,
    connections: Arc<AtomicUsize>,
    _data: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn protected() -> Protected {
    let data = tempfile::tempdir().expect("tempdir");
    let (engine, _) = open_engine_async(data.path().to_path_buf(), EngineConfig::default())
        .await
        .expect("engine");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = listener.local_addr().expect("addr");
    let security = Security {
        authenticator: Some(Authenticator::new([TOKEN])),
        tls: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_with(engine, listener, security, async {
        let _ = stopped.await;
    }));
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let relay = front.local_addr().expect("relay addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = front.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Protected {
        relay,
        connections,
        _data: data,
        _stop: stop,
    }
}

fn external(endpoint: &str) -> Coordinator {
    serde_json::from_value(json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "Coordinator",
        "metadata": {"name": "engine", "namespace": NS, "uid": "uid-engine", "generation": 1},
        "spec": {"external": {"endpoint": endpoint, "credentialsSecret": {"name": SECRET}}}
    }))
    .expect("a Coordinator")
}

fn secret(type_: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": type_,
        "metadata": {"name": SECRET, "namespace": NS, "labels": labels},
        "data": {"token": base64::engine::general_purpose::STANDARD.encode(TOKEN)}
    })
}

/// One Coordinator pass with `settings`; returns the API state afterwards.
async fn pass(object: &Coordinator, state: &Arc<Mutex<ApiState>>, settings: Settings) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(serve_api(handle, state.clone()));
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
        settings,
        Arc::new(Metrics::new()),
        Default::default(),
    ));
    coordinator::reconcile(Arc::new(object.clone()), ctx)
        .await
        .expect("the pass ends with a requeue");
}

fn ready(state: &Arc<Mutex<ApiState>>) -> (String, String, String) {
    let status = state.lock().status.clone().expect("a status was written");
    let ready = status["conditions"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["type"] == "Ready").cloned())
        .expect("a Ready condition");
    let text = |key: &str| ready[key].as_str().unwrap_or_default().to_string();
    (text("status"), text("reason"), text("message"))
}

#[tokio::test]
async fn a_secret_without_the_opt_in_label_never_reaches_the_endpoint() {
    let engine = protected().await;
    let object = external(&format!("http://{}", engine.relay));
    let state = Arc::new(Mutex::new(ApiState {
        secret: Some(secret("Opaque", json!({}))),
        ..Default::default()
    }));
    pass(&object, &state, Settings::default()).await;
    let (status, reason, message) = ready(&state);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CredentialsRefused")
    );
    assert!(
        message.contains(&format!("{NS}/{SECRET}"))
            && message.contains("collections.dev/credentials=\"true\""),
        "names the Secret and the missing label: {message}"
    );
    assert!(!message.contains(TOKEN), "never the value: {message}");
    let events = state.lock().events.clone();
    assert!(
        events
            .iter()
            .any(|(t, r, n)| t == "Warning" && r == "CredentialsRefused" && n.contains(SECRET)),
        "{events:?}"
    );
    assert_eq!(
        engine.connections.load(Ordering::SeqCst),
        0,
        "nothing was sent to the endpoint"
    );

    // The same Secret, opted in: the coordinator accepts it (so the refusal above was
    // the label, not a wrong token or an unreachable engine).
    state.lock().secret = Some(secret(
        "Opaque",
        json!({"collections.dev/credentials": "true"}),
    ));
    pass(&object, &state, Settings::default()).await;
    let (status, reason, message) = ready(&state);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Connected"),
        "{message}"
    );
    assert!(engine.connections.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn a_service_account_token_secret_is_never_used_even_opted_in() {
    let engine = protected().await;
    let object = external(&format!("http://{}", engine.relay));
    let state = Arc::new(Mutex::new(ApiState {
        secret: Some(secret(
            "kubernetes.io/service-account-token",
            json!({"collections.dev/credentials": "true"}),
        )),
        ..Default::default()
    }));
    pass(&object, &state, Settings::default()).await;
    let (status, reason, message) = ready(&state);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CredentialsRefused")
    );
    assert!(
        message.contains(SECRET) && message.contains("kubernetes.io/service-account-token"),
        "{message}"
    );
    assert!(
        state
            .lock()
            .events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "CredentialsRefused")
    );
    assert_eq!(engine.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_endpoint_off_the_allow_list_is_never_contacted_nor_its_secret_read() {
    let engine = protected().await;
    let object = external(&format!("http://{}", engine.relay));
    let state = Arc::new(Mutex::new(ApiState {
        secret: Some(secret(
            "Opaque",
            json!({"collections.dev/credentials": "true"}),
        )),
        ..Default::default()
    }));
    let settings = Settings {
        allowed_endpoint_hosts: vec!["*.svc".into(), "milvus.example.com".into()],
        ..Settings::default()
    };
    pass(&object, &state, settings).await;
    let (status, reason, message) = ready(&state);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "EndpointRefused")
    );
    assert!(
        message.contains("127.0.0.1") && message.contains("*.svc"),
        "names the host and the allow-list: {message}"
    );
    assert!(
        state.lock().secret_reads.is_empty(),
        "the Secret was not read"
    );
    assert!(
        state
            .lock()
            .events
            .iter()
            .any(|(t, r, _)| t == "Warning" && r == "EndpointRefused")
    );
    assert_eq!(engine.connections.load(Ordering::SeqCst), 0);

    // A list that names the host lets it through.
    let settings = Settings {
        allowed_endpoint_hosts: vec!["127.0.0.*".into()],
        ..Settings::default()
    };
    pass(&object, &state, settings).await;
    let (status, reason, message) = ready(&state);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Connected"),
        "{message}"
    );
}

/// The managed coordinator's probes are `grpc.health.v1` checks on 19530: a kubelet
/// sends no credential, so the health service answers without one even with auth on,
/// from the coordinator's `CheckHealth`; the Milvus service stays closed to it.
#[tokio::test]
async fn the_grpc_health_probe_needs_no_credential_and_nothing_else_opens() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let engine = protected().await;
    let endpoint = format!("http://{}", engine.relay);
    let channel = tonic::transport::Channel::from_shared(endpoint.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    for service in ["", "milvus.proto.milvus.MilvusService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("answered without a credential")
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let refused = collection_operator::client::EngineClient::connect(&endpoint, None).await;
    assert!(refused.is_err(), "the Milvus service still needs the token");
}

/// A managed Coordinator's pods would consume its `credentialsSecret`: a Secret without
/// the opt-in is refused before anything is deployed.
#[tokio::test]
async fn a_managed_coordinator_with_a_secret_not_opted_in_is_not_deployed() {
    let object: Coordinator = serde_json::from_value(json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "Coordinator",
        "metadata": {"name": "engine", "namespace": NS, "uid": "uid-engine", "generation": 1},
        "spec": {"managed": {"credentialsSecret": {"name": SECRET}}}
    }))
    .expect("a managed Coordinator");
    let state = Arc::new(Mutex::new(ApiState {
        secret: Some(secret("kubernetes.io/basic-auth", json!({}))),
        ..Default::default()
    }));
    pass(&object, &state, Settings::default()).await;
    let (status, reason, message) = ready(&state);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CredentialsRefused"),
        "{message}"
    );
    assert!(message.contains(SECRET), "{message}");
    let state = state.lock();
    assert!(
        state.writes.is_empty(),
        "nothing applied: {:?}",
        state.writes
    );
    let reasons: Vec<&str> = state.events.iter().map(|(_, r, _)| r.as_str()).collect();
    assert_eq!(reasons, ["CredentialsRefused"], "one Event, saying why");
}
