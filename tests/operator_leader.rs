//! Leader election: two replicas against one Lease (an in-memory API server that
//! implements what kube-lease-manager uses: GET, POST, server-side apply with field-owner
//! conflicts, strategic merge patches). Only one holds the lease; the other takes over
//! when it is released.

use std::sync::Arc;
use std::time::Duration;

use collection_operator::operator::Shutdown;
use collection_operator::operator::leader::{LeaderElectionArgs, acquire};
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{Value, json};

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

#[derive(Default)]
struct Lease {
    object: Option<Value>,
    /// Field manager owning `spec.holderIdentity` (server-side apply ownership).
    holder_owner: Option<String>,
    revision: u64,
}

fn status(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "code": code, "message": reason}),
    )
}

fn merge_spec(lease: &mut Lease, patch: &Value) {
    let Some(object) = lease.object.as_mut() else {
        return;
    };
    if !object["spec"].is_object() {
        object["spec"] = json!({});
    }
    if let (Some(spec), Some(changes)) = (object["spec"].as_object_mut(), patch["spec"].as_object())
    {
        for (key, value) in changes {
            if value.is_null() {
                spec.remove(key);
            } else {
                spec.insert(key.clone(), value.clone());
            }
        }
    }
    lease.revision += 1;
    object["metadata"]["resourceVersion"] = json!(lease.revision.to_string());
}

fn handle(
    lease: &Mutex<Lease>,
    method: &str,
    path: &str,
    query: &str,
    kind: &str,
    body: &Value,
) -> (u16, Value) {
    let mut lease = lease.lock();
    match (method, path) {
        ("POST", LEASE_PATH) => {
            if lease.object.is_some() {
                return status(409, "AlreadyExists");
            }
            let mut object = body.clone();
            object["metadata"]["namespace"] = json!("ops");
            object["metadata"]["resourceVersion"] = json!("1");
            lease.revision = 1;
            lease.object = Some(object.clone());
            (201, object)
        }
        ("GET", _) => match &lease.object {
            Some(object) => (200, object.clone()),
            None => status(404, "NotFound"),
        },
        ("PATCH", _) => {
            if lease.object.is_none() {
                return status(404, "NotFound");
            }
            let manager = query
                .split('&')
                .find_map(|p| p.strip_prefix("fieldManager="))
                .unwrap_or_default()
                .to_string();
            let new_holder = &body["spec"]["holderIdentity"];
            if kind.starts_with("application/apply-patch") {
                let current = lease
                    .object
                    .as_ref()
                    .map(|o| o["spec"]["holderIdentity"].clone())
                    .unwrap_or(Value::Null);
                if new_holder.is_string()
                    && !current.is_null()
                    && lease
                        .holder_owner
                        .as_deref()
                        .is_some_and(|owner| owner != manager)
                {
                    return status(409, "Conflict");
                }
                if new_holder.is_string() {
                    lease.holder_owner = Some(manager);
                }
            } else if body["spec"]
                .as_object()
                .is_some_and(|spec| spec.contains_key("holderIdentity"))
            {
                lease.holder_owner = if new_holder.is_null() {
                    None
                } else {
                    Some(manager)
                };
            }
            merge_spec(&mut lease, body);
            (200, lease.object.clone().unwrap_or_default())
        }
        _ => status(404, "NotFound"),
    }
}

fn client(lease: Arc<Mutex<Lease>>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, responder)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let kind = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let (code, reply) = handle_request(&lease, &parts, &kind, &body);
            responder.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap_or_default()))
                    .expect("response"),
            );
        }
    });
    Client::new(service, "ops")
}

fn handle_request(
    lease: &Mutex<Lease>,
    parts: &http::request::Parts,
    kind: &str,
    body: &Value,
) -> (u16, Value) {
    handle(
        lease,
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or_default(),
        kind,
        body,
    )
}

fn args(identity: &str) -> LeaderElectionArgs {
    LeaderElectionArgs {
        enabled: true,
        namespace: Some("ops".into()),
        lease_name: "collection-operator".into(),
        identity: Some(identity.into()),
        lease_duration: Duration::from_secs(2),
        renew_grace: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_the_other_takes_over_on_release() {
    let lease = Arc::new(Mutex::new(Lease::default()));
    let (_trigger_a, shutdown_a) = Shutdown::new();
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        acquire(client(lease.clone()), &args("replica-a"), "ops", shutdown_a),
    )
    .await
    .expect("the first replica leads promptly")
    .expect("acquire")
    .expect("leadership");
    assert_eq!(
        lease
            .lock()
            .object
            .as_ref()
            .map(|o| o["spec"]["holderIdentity"].clone()),
        Some(json!("replica-a"))
    );

    let (_trigger_b, shutdown_b) = Shutdown::new();
    let second = tokio::spawn({
        let lease = lease.clone();
        async move { acquire(client(lease), &args("replica-b"), "ops", shutdown_b).await }
    });
    // While A renews, B waits (well past the lease duration).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!second.is_finished(), "two leaders at once");
    assert_eq!(
        lease
            .lock()
            .object
            .as_ref()
            .map(|o| o["spec"]["holderIdentity"].clone()),
        Some(json!("replica-a"))
    );

    // A steps down (graceful shutdown): B takes over.
    first.release().await;
    let mut second = tokio::time::timeout(Duration::from_secs(15), second)
        .await
        .expect("the second replica takes over")
        .expect("join")
        .expect("acquire")
        .expect("leadership");
    assert_eq!(
        lease
            .lock()
            .object
            .as_ref()
            .map(|o| o["spec"]["holderIdentity"].clone()),
        Some(json!("replica-b"))
    );
    // And keeps it while renewing.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), second.lost())
            .await
            .is_err(),
        "leadership lost while renewing"
    );
    second.release().await;
}

#[tokio::test]
async fn a_standby_stops_waiting_on_shutdown() {
    let lease = Arc::new(Mutex::new(Lease::default()));
    let (_trigger_a, shutdown_a) = Shutdown::new();
    let first = acquire(client(lease.clone()), &args("replica-a"), "ops", shutdown_a)
        .await
        .expect("acquire")
        .expect("leadership");
    let (trigger_b, shutdown_b) = Shutdown::new();
    let second = tokio::spawn({
        let lease = lease.clone();
        async move { acquire(client(lease), &args("replica-b"), "ops", shutdown_b).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    trigger_b.fire();
    let outcome = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the standby stops")
        .expect("join")
        .expect("acquire");
    assert!(outcome.is_none(), "a standby that is shut down never leads");
    first.release().await;
}

#[tokio::test]
async fn renew_grace_must_be_shorter_than_the_lease() {
    let lease = Arc::new(Mutex::new(Lease::default()));
    let mut bad = args("replica-a");
    bad.renew_grace = Duration::from_secs(2);
    let (_trigger, shutdown) = Shutdown::new();
    let error = acquire(client(lease), &bad, "ops", shutdown)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("renew-grace"), "{error}");
}
