//! Unit tests of the operator's pure parts: timing (resync, backoff), conditions and
//! statuses, Event wording, credentials parsing, target readiness, error classes, and
//! the HTTP endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use collection_operator::client::{Applied, ClientError, Credentials};
use collection_operator::crd::{
    AliasHistoryEntry, Collection, CollectionAlias, CollectionAliasStatus, CollectionStatus,
    RESYNC_INTERVAL_ANNOTATION,
};
use collection_operator::operator::Error;
use collection_operator::operator::backoff::{
    Backoff, BackoffPolicy, MIN_RESYNC_INTERVAL, jitter, next_resync, parse_duration,
    resync_interval,
};
use collection_operator::operator::context::target_readiness_of;
use collection_operator::operator::engine::credentials_from_secret;
use collection_operator::operator::events::{EventType, failure_event, mutation_event};
use collection_operator::operator::http::{Health, serve};
use collection_operator::operator::metrics::Metrics;
use collection_operator::operator::status::{
    Outcome, READY, SYNCED, Truth, Wanted, alias_status, collection_status, conditions,
};
use collection_operator::plan::{Action, ObjectKey, Reason, TargetReadiness, Verdict};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn alias(generation: i64, status: Option<CollectionAliasStatus>) -> CollectionAlias {
    let mut alias: CollectionAlias = serde_json::from_value(json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "CollectionAlias",
        "metadata": {"name": "products", "namespace": "ns", "generation": generation},
        "spec": {"coordinatorRef": {"name": "engine"}, "collection": "products_v2"}
    }))
    .expect("alias");
    alias.status = status;
    alias
}

fn collection(ready: Option<(&str, i64)>, generation: i64) -> Collection {
    let mut collection: Collection = serde_json::from_value(json!({
        "apiVersion": "collections.dev/v1alpha1",
        "kind": "Collection",
        "metadata": {"name": "products-v2", "namespace": "ns", "generation": generation},
        "spec": {"coordinatorRef": {"name": "engine"}, "fields": [
            {"name": "id", "dataType": "Int64", "isPrimaryKey": true}
        ]}
    }))
    .expect("collection");
    if let Some((truth, observed)) = ready {
        collection.status = Some(CollectionStatus {
            observed_generation: Some(observed),
            conditions: vec![Condition {
                type_: READY.into(),
                status: truth.into(),
                reason: "x".into(),
                message: String::new(),
                observed_generation: Some(observed),
                last_transition_time: Time(at("2026-01-01T00:00:00Z")),
            }],
            ..Default::default()
        });
    }
    collection
}

fn key() -> ObjectKey {
    ObjectKey {
        namespace: "ns".into(),
        name: "products".into(),
    }
}

// ---- timing ----------------------------------------------------------------------------

#[test]
fn durations_parse_like_go() {
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    for bad in ["", "30", "s", "5x", "1.5m", "-1s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn resync_interval_comes_from_the_annotation_with_a_floor() {
    let default = Duration::from_secs(60);
    let mut object = alias(1, None);
    assert_eq!(resync_interval(&object, default), default);
    let annotate = |object: &mut CollectionAlias, value: &str| {
        object.metadata.annotations = Some(BTreeMap::from([(
            RESYNC_INTERVAL_ANNOTATION.to_string(),
            value.to_string(),
        )]));
    };
    annotate(&mut object, "10m");
    assert_eq!(resync_interval(&object, default), Duration::from_secs(600));
    annotate(&mut object, "1s");
    assert_eq!(resync_interval(&object, default), MIN_RESYNC_INTERVAL);
    annotate(&mut object, "soon");
    assert_eq!(
        resync_interval(&object, default),
        default,
        "invalid values are ignored"
    );
    annotate(&mut object, "30s");
    for _ in 0..100 {
        let next = next_resync(&object, default);
        assert!(
            next >= Duration::from_secs(27) && next <= Duration::from_secs(33),
            "{next:?}"
        );
    }
}

#[test]
fn jitter_stays_within_its_spread() {
    let base = Duration::from_secs(100);
    let mut seen_low = false;
    let mut seen_high = false;
    for _ in 0..1000 {
        let d = jitter(base, 0.1);
        assert!(
            d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
            "{d:?}"
        );
        seen_low |= d < Duration::from_secs(99);
        seen_high |= d > Duration::from_secs(101);
    }
    assert!(seen_low && seen_high, "jitter spreads both ways");
    assert_eq!(jitter(base, 0.0), base);
}

#[test]
fn backoff_doubles_per_object_caps_and_resets() {
    let policy = BackoffPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };
    let delays: Vec<u64> = (1..=12).map(|n| policy.delay(n).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    assert_eq!(policy.delay(u32::MAX), policy.max, "no overflow");

    let backoff = Backoff::<CollectionAlias>::new(policy);
    let a = ObjectRef::<CollectionAlias>::new("a").within("ns");
    let b = ObjectRef::<CollectionAlias>::new("b").within("ns");
    for expected in [1.0, 2.0, 4.0] {
        let d = backoff.next(&a).as_secs_f64();
        assert!(
            (expected * 0.9..=expected * 1.1).contains(&d),
            "{d} vs {expected}"
        );
    }
    assert_eq!(backoff.attempts(&a), 3);
    assert_eq!(backoff.attempts(&b), 0, "per object");
    backoff.reset(&a);
    assert_eq!(backoff.attempts(&a), 0);
    assert!(
        backoff.next(&a) <= Duration::from_millis(1100),
        "reset on success"
    );
}

// ---- conditions and status -------------------------------------------------------------

#[test]
fn transition_time_moves_only_when_the_status_changes() {
    let t0 = at("2026-01-01T00:00:00Z");
    let t1 = at("2026-01-02T00:00:00Z");
    let ready = |reason: &str| [Wanted::new(READY, Truth::True, reason, "m")];
    let first = conditions(&[], &ready("Available"), Some(1), t0);
    assert_eq!(first[0].last_transition_time, Time(t0));
    assert_eq!(first[0].observed_generation, Some(1));
    // Same status, new reason and generation: the time stays.
    let second = conditions(&first, &ready("Other"), Some(2), t1);
    assert_eq!(second[0].last_transition_time, Time(t0));
    assert_eq!(second[0].reason, "Other");
    assert_eq!(second[0].observed_generation, Some(2));
    // A real transition: the time moves.
    let third = conditions(
        &second,
        &[Wanted::new(READY, Truth::False, "EngineError", "x")],
        Some(2),
        t1,
    );
    assert_eq!(third[0].last_transition_time, Time(t1));
    // Deterministic: the same input twice gives the same output.
    assert_eq!(conditions(&first, &ready("Available"), Some(1), t1), first);
}

#[test]
fn outcomes_map_to_ready_and_synced() {
    let reasons = |outcome: Outcome| -> Vec<(String, String, String)> {
        outcome
            .wanted()
            .into_iter()
            .map(|w| (w.type_.to_string(), format!("{:?}", w.status), w.reason))
            .collect()
    };
    let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        reasons(Outcome::Planned {
            verdict: Verdict::Ready,
            ready_message: "ok".into()
        }),
        [
            t(READY, "True", "Available"),
            t(SYNCED, "True", "ReconcileSuccess")
        ]
    );
    assert_eq!(
        reasons(Outcome::Planned {
            verdict: Verdict::NotReady {
                reason: Reason::Conflict,
                message: "older".into()
            },
            ready_message: String::new()
        }),
        [
            t(READY, "False", "Conflict"),
            t(SYNCED, "True", "ReconcileSuccess")
        ]
    );
    assert_eq!(
        reasons(Outcome::Planned {
            verdict: Verdict::NotReady {
                reason: Reason::Paused,
                message: "paused".into()
            },
            ready_message: String::new()
        }),
        [
            t(READY, "False", "Paused"),
            t(SYNCED, "False", "ReconcilePaused")
        ]
    );
    let refused = ClientError::Engine {
        rpc: "AlterAlias",
        code: 1601,
        message: "alias and collection name conflict".into(),
    };
    let wanted = Outcome::engine_failure(&refused).wanted();
    assert_eq!(wanted[0].reason, "EngineError");
    assert!(
        wanted[1].message.contains("code 1601"),
        "{}",
        wanted[1].message
    );
    let unreachable = ClientError::Unreachable {
        endpoint: "http://x:19530".into(),
        message: "connection refused".into(),
    };
    let wanted = Outcome::engine_failure(&unreachable).wanted();
    assert_eq!(
        (wanted[0].status, wanted[0].reason.as_str()),
        (Truth::Unknown, "EngineUnreachable")
    );
}

#[test]
fn alias_history_is_newest_first_and_capped_at_ten() {
    let now = at("2026-05-01T12:00:00.123456Z");
    let ready = Outcome::Planned {
        verdict: Verdict::Ready,
        ready_message: "ok".into(),
    };
    let mut status = CollectionAliasStatus::default();
    for n in 0..12 {
        let object = alias(1, Some(status.clone()));
        status = alias_status(&object, &ready, Some(format!("c{n}")), now);
    }
    assert_eq!(status.collection.as_deref(), Some("c11"));
    assert_eq!(status.previous_collection.as_deref(), Some("c10"));
    assert_eq!(status.history.len(), 10);
    let targets: Vec<&str> = status
        .history
        .iter()
        .map(|e| e.collection.as_str())
        .collect();
    assert_eq!(
        targets,
        ["c11", "c10", "c9", "c8", "c7", "c6", "c5", "c4", "c3", "c2"]
    );
    assert_eq!(
        status.history[0],
        AliasHistoryEntry {
            collection: "c11".into(),
            time: "2026-05-01T12:00:00Z".into()
        },
        "whole seconds"
    );

    // Re-binding the same target (drift repaired) changes nothing.
    let object = alias(1, Some(status.clone()));
    assert_eq!(
        alias_status(&object, &ready, Some("c11".into()), now),
        status
    );
    // No binding information (e.g. an engine error) keeps the binding.
    let failed = Outcome::engine_failure(&ClientError::Unreachable {
        endpoint: "e".into(),
        message: "m".into(),
    });
    let kept = alias_status(&object, &failed, None, now);
    assert_eq!(kept.collection.as_deref(), Some("c11"));
    assert_eq!(kept.history, status.history);
}

#[test]
fn collection_status_keeps_the_recorded_id_unless_told() {
    let object = collection(None, 3);
    let ready = Outcome::Planned {
        verdict: Verdict::Ready,
        ready_message: "ok".into(),
    };
    let now = at("2026-05-01T12:00:00Z");
    let status = collection_status(
        &object,
        &ready,
        Some(449_000_000_000_000_001),
        Some(vec![]),
        now,
    );
    assert_eq!(status.collection_id.as_deref(), Some("449000000000000001"));
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.engine_name.as_deref(), Some("products_v2"));
    let mut object = object;
    object.status = Some(status.clone());
    let again = collection_status(&object, &ready, None, None, now);
    assert_eq!(again, status);
    let json = serde_json::to_value(&again).expect("json");
    assert_eq!(json["collectionID"], "449000000000000001");
}

// ---- events ----------------------------------------------------------------------------

#[test]
fn alias_events_tell_a_swap_from_drift_correction() {
    let alter = Action::AlterAlias {
        key: key(),
        database: "default".into(),
        alias: "products".into(),
        from: "intruder".into(),
        to: "products_v1".into(),
    };
    let drift = mutation_event(&alter, Some("products_v1"), &Applied::default());
    assert_eq!(
        (drift.type_, drift.reason.as_str()),
        (EventType::Warning, "DriftCorrected")
    );
    assert_eq!(drift.action, "AlterAlias");
    assert!(
        drift
            .note
            .contains("moved to intruder outside the operator")
    );
    let swap = mutation_event(&alter, Some("intruder"), &Applied::default());
    assert_eq!(
        (swap.type_, swap.reason.as_str()),
        (EventType::Normal, "AliasSwitched")
    );

    let create = Action::CreateAlias {
        key: key(),
        database: "default".into(),
        alias: "products".into(),
        target: "products_v1".into(),
    };
    assert_eq!(
        mutation_event(&create, None, &Applied::default()).reason,
        "CreatedAlias"
    );
    assert_eq!(
        mutation_event(&create, Some("products_v1"), &Applied::default()).reason,
        "DriftCorrected",
        "a bound alias that vanished is recreated"
    );
    let created = Action::CreateCollection {
        key: key(),
        database: "default".into(),
        name: "products_v1".into(),
        spec: Box::new(collection(None, 1).spec),
    };
    let event = mutation_event(
        &created,
        None,
        &Applied {
            collection_id: Some(42),
        },
    );
    assert_eq!(event.reason, "CreatedCollection");
    assert!(event.note.contains("ID 42"), "{}", event.note);
    let failed = failure_event(
        "CreateAlias",
        &ClientError::Engine {
            rpc: "CreateAlias",
            code: 1602,
            message: "alias exists".into(),
        },
    );
    assert_eq!(
        (failed.type_, failed.reason.as_str()),
        (EventType::Warning, "EngineError")
    );
    assert!(failed.note.contains("code 1602"));
}

// ---- credentials, readiness, errors ----------------------------------------------------

fn secret(pairs: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn credentials_come_from_token_or_user_and_password() {
    assert_eq!(
        credentials_from_secret(&secret(&[("token", "root:Milvus\n")])),
        Ok(Credentials::Token("root:Milvus".into()))
    );
    assert_eq!(
        credentials_from_secret(&secret(&[("username", "root"), ("password", "s3cret")])),
        Ok(Credentials::UserPassword("root".into(), "s3cret".into()))
    );
    let missing =
        credentials_from_secret(&secret(&[("password", "s3cret")])).expect_err("no user name");
    assert!(
        missing.contains("token") && !missing.contains("s3cret"),
        "{missing}"
    );
    let shown = format!(
        "{:?}",
        credentials_from_secret(&secret(&[("username", "root"), ("password", "s3cret")]))
    );
    assert!(
        !shown.contains("s3cret"),
        "Debug never prints secrets: {shown}"
    );
}

#[test]
fn target_readiness_follows_the_managing_collections() {
    assert_eq!(target_readiness_of(&[]), TargetReadiness::Unmanaged);
    let ready = Arc::new(collection(Some(("True", 2)), 2));
    let stale = Arc::new(collection(Some(("True", 1)), 2));
    let not_ready = Arc::new(collection(Some(("False", 2)), 2));
    let fresh = Arc::new(collection(None, 1));
    assert_eq!(
        target_readiness_of(std::slice::from_ref(&ready)),
        TargetReadiness::Ready
    );
    assert_eq!(
        target_readiness_of(&[stale]),
        TargetReadiness::NotReady,
        "Ready for an older generation does not count"
    );
    assert_eq!(
        target_readiness_of(std::slice::from_ref(&not_ready)),
        TargetReadiness::NotReady
    );
    assert_eq!(target_readiness_of(&[fresh]), TargetReadiness::NotReady);
    assert_eq!(
        target_readiness_of(&[not_ready, ready]),
        TargetReadiness::Ready,
        "the winner of a conflict is Ready"
    );
}

#[test]
fn terminal_errors_are_the_input_errors() {
    let engine = |code| {
        Error::Engine(ClientError::Engine {
            rpc: "CreateAlias",
            code,
            message: String::new(),
        })
    };
    for code in [100, 1100, 1601, 1602] {
        assert!(engine(code).is_terminal(), "code {code}");
    }
    assert!(!engine(65535).is_terminal());
    assert!(!engine(1).is_terminal());
    let unreachable = Error::Engine(ClientError::Unreachable {
        endpoint: "e".into(),
        message: "m".into(),
    });
    assert!(!unreachable.is_terminal());
    assert_eq!(unreachable.metric_label(), "engine_unreachable");
    let blocked = Error::Blocked {
        reason: "HasAliases",
        message: "m".into(),
    };
    assert!(!blocked.is_terminal());
    assert_eq!(blocked.metric_label(), "blocked");
}

// ---- HTTP ------------------------------------------------------------------------------

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, response)
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served() {
    let metrics = Arc::new(Metrics::new());
    metrics.reconciled("collectionalias", Duration::from_millis(3));
    metrics.failed("collectionalias", "engine");
    metrics.rpc("AlterAlias", true, Duration::from_millis(2));
    metrics.mutation("DriftCorrected");
    metrics.set_leader(true);
    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, metrics, health.clone(), async {
        let _ = stopped.await;
    }));

    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    for needle in [
        "collection_operator_reconciles_total{controller=\"collectionalias\"} 1",
        "collection_operator_reconcile_errors_total{controller=\"collectionalias\",error=\"engine\"} 1",
        "collection_operator_reconcile_duration_seconds_count{controller=\"collectionalias\"} 1",
        "collection_operator_engine_rpc_duration_seconds_count{method=\"AlterAlias\",outcome=\"ok\"} 1",
        "collection_operator_engine_mutations_total{action=\"DriftCorrected\"} 1",
        "collection_operator_leader 1",
    ] {
        assert!(body.contains(needle), "missing {needle} in\n{body}");
    }
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 503);
    health.set_ready(true);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    let _ = stop.send(());
    server.await.expect("join").expect("server");
}

// ---- command line ----------------------------------------------------------------------

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: collection_operator::operator::OperatorArgs,
}

#[test]
fn operator_flags_parse_with_their_defaults() {
    use clap::{CommandFactory, Parser};
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from(["operator"]).expect("defaults");
    assert_eq!(cli.args.namespace, None, "all namespaces by default");
    assert_eq!(cli.args.resync_interval, Duration::from_secs(60));
    assert_eq!(cli.args.metrics_addr.port(), 8080);
    assert!(!cli.args.leader_election.enabled);
    assert_eq!(
        cli.args.leader_election.lease_duration,
        Duration::from_secs(15)
    );
    let cli = Cli::try_parse_from([
        "operator",
        "--namespace",
        "vectors",
        "--resync-interval",
        "2m",
        "--leader-election",
        "--leader-election-namespace",
        "ops",
        "--leader-election-renew-grace",
        "3s",
    ])
    .expect("flags");
    assert_eq!(cli.args.namespace.as_deref(), Some("vectors"));
    assert_eq!(cli.args.resync_interval, Duration::from_secs(120));
    assert!(cli.args.leader_election.enabled);
    assert_eq!(cli.args.leader_election.namespace.as_deref(), Some("ops"));
    assert_eq!(cli.args.leader_election.renew_grace, Duration::from_secs(3));
    assert!(Cli::try_parse_from(["operator", "--resync-interval", "soon"]).is_err());
}
