//! A small in-memory Kubernetes API server (list, watch, JSON and apply patches, status,
//! Events) for the resources the operator uses, served over HTTP on a loopback port: the
//! operator runs against it through kube's own client stack (hyper connector, HTTP/1.1,
//! connection pool) as against a kube-apiserver. Shared by tests/operator_run.rs,
//! tests/operator_routed.rs and benches/swap.rs.
//!
//! What it copies from the real API server because latency and correctness depend on it:
//! - a watch is one long-lived chunked response; each event is written (and flushed) as it
//!   happens, one JSON line per chunk, until `timeoutSeconds`;
//! - `resourceVersion` is one counter over all objects; a watch from version N sends the
//!   changes after N, a watch from `0` or none starts with the current objects as `ADDED`,
//!   and a version older than the compaction point ends the watch with a `410 Expired`
//!   `ERROR` event;
//! - `allowWatchBookmarks=true` gets `BOOKMARK` events carrying the current version;
//! - accepted connections set `TCP_NODELAY`, as Go's net/http does, while the client keeps
//!   whatever its connector sets, so Nagle's algorithm on the client side shows here as it
//!   does against a real cluster;
//! - HTTP/1.1 and HTTP/2 are both served (the real one offers both; kube's client speaks
//!   HTTP/1.1), over plain TCP ([`FakeApi::connect`]) or TLS with ALPN
//!   ([`FakeApi::connect_tls`]), since a kube-apiserver serves only TLS.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::Client;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

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
    /// Watches from a version below this one are answered `410 Expired`.
    pub compacted: u64,
    /// Watches opened so far (each kube watcher reopens its watch after a timeout or an
    /// error; more than one per watcher means the stream broke).
    pub watches_opened: usize,
}

/// How often a watch that allows bookmarks gets one (the real API server sends one about
/// every minute; shorter here so tests pass through kube's bookmark handling).
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(5);

type ResponseBody = BoxBody<Bytes, Infallible>;

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

    /// Serves this API server on a loopback port and returns a kube client for it, built
    /// the way `Client::try_default` builds one (kube's own connector and middleware).
    pub async fn connect(&self) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(self.clone().serve(listener));
        client_for(addr)
    }

    /// Serves this API server over TLS, as every kube-apiserver does (a certificate for
    /// 127.0.0.1 made with the openssl CLI; ALPN offers h2 and http/1.1), and returns a
    /// kube client that trusts it. `dir` keeps the certificate files.
    pub async fn connect_tls(&self, dir: &std::path::Path) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (certificate, key) = super::certificate(dir);
        let certificate = CertificateDer::from_pem_file(certificate).expect("certificate");
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        tokio::spawn(self.clone().serve_tls(listener, acceptor));
        let url: http::Uri = format!("https://{addr}").parse().expect("url");
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".to_string();
        config.root_cert = Some(vec![certificate.to_vec()]);
        Client::try_from(config).expect("client")
    }

    /// Accepts connections until the process ends.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(self.clone().serve_connection(stream));
        }
    }

    /// Accepts TLS connections until the process ends.
    async fn serve_tls(self, listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (api, acceptor) = (self.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    api.serve_connection(stream).await;
                }
            });
        }
    }

    /// Serves HTTP/1.1 or HTTP/2 on one connection.
    async fn serve_connection<S>(self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let service = hyper::service::service_fn(move |request| {
            let api = self.clone();
            async move { Ok::<_, Infallible>(api.respond(request).await) }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let query = parts.uri.query().unwrap_or_default();
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        let watched = parts
            .uri
            .path()
            .strip_prefix(GROUP_PATH)
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string);
        if parts.method == http::Method::GET
            && param("watch") == Some("true")
            && let Some(plural) = watched
        {
            let since = param("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let timeout = param("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .map_or(Duration::from_secs(1800), Duration::from_secs);
            let bookmarks = param("allowWatchBookmarks") == Some("true");
            let (sender, receiver) = mpsc::channel::<Bytes>(64);
            self.state.lock().watches_opened += 1;
            tokio::spawn(
                self.clone()
                    .watch(plural, since, timeout, bookmarks, sender),
            );
            let stream = ReceiverStream::new(receiver).map(|chunk| Ok(Frame::data(chunk)));
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(StreamBody::new(stream).boxed())
                .expect("response");
        }
        let (status, body) = self.handle(&parts, &body);
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)).boxed())
            .expect("response")
    }

    /// Streams the changes of `plural` after version `since`, each as soon as it is
    /// recorded, until `timeout` or until the client goes.
    async fn watch(
        self,
        plural: String,
        since: u64,
        timeout: Duration,
        bookmarks: bool,
        sender: mpsc::Sender<Bytes>,
    ) {
        let line = |value: Value| Bytes::from(format!("{value}\n"));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_INTERVAL;
        let mut sent = since;
        let (initial, expired): (Vec<Bytes>, bool) = {
            let state = self.state.lock();
            if since != 0 && since < state.compacted {
                let error = json!({"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {since} ({})", state.compacted),
                }});
                (vec![line(error)], true)
            } else if since == 0 {
                sent = state.revision;
                let added = state
                    .objects
                    .iter()
                    .filter(|((kind, _), _)| *kind == plural)
                    .map(|(_, object)| line(json!({"type": "ADDED", "object": object})))
                    .collect();
                (added, false)
            } else {
                (Vec::new(), false)
            }
        };
        for chunk in initial {
            if sender.send(chunk).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let chunks: Vec<Bytes> = {
                let state = self.state.lock();
                let chunks = state
                    .log
                    .iter()
                    .filter(|(revision, kind, _)| *revision > sent && *kind == plural)
                    .map(|(_, _, event)| line(event.clone()))
                    .collect();
                sent = state.revision;
                chunks
            };
            for chunk in chunks {
                if sender.send(chunk).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline.min(next_bookmark)) => {}
                () = sender.closed() => return,
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return;
            }
            if now >= next_bookmark {
                next_bookmark = now + BOOKMARK_INTERVAL;
                if bookmarks {
                    let bookmark = json!({"type": "BOOKMARK", "object": {
                        "apiVersion": "collections.dev/v1alpha1",
                        "kind": kind_of(&plural),
                        "metadata": {"resourceVersion": sent.to_string()},
                    }});
                    if sender.send(line(bookmark)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Answers one request that is not a watch.
    pub fn handle(&self, parts: &http::request::Parts, body: &[u8]) -> (u16, Vec<u8>) {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let apply = parts
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
        let path = parts.uri.path().to_string();
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

/// A kube client for an API server at `addr`, built like `Client::try_default` builds
/// one from a kubeconfig (kube's connector, timeouts and middleware).
pub fn client_for(addr: SocketAddr) -> Client {
    let url: http::Uri = format!("http://{addr}").parse().expect("url");
    let mut config = kube::Config::new(url);
    config.default_namespace = "default".to_string();
    Client::try_from(config).expect("client")
}
