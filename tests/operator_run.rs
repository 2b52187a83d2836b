//! The controllers as they run in a cluster — watches, predicates, the Collection →
//! alias readiness mapper, requeue hints, resync, graceful shutdown — against a small
//! in-memory API server (list, watch, JSON/apply patches, Events) behind `tower-test`, and
//! the real coordinator over loopback.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use collection_operator::operator::http::Health;
use collection_operator::operator::metrics::Metrics;
use collection_operator::operator::{Shutdown, run_controllers};
use collection_operator::proto::api::{AlterAliasRequest, DescribeAliasRequest};
use common::InProcess;
use common::fake_api::FakeApi;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use parking_lot::Mutex;
use serde_json::{Value, json};

static DUMP: Mutex<Option<FakeApi>> = Mutex::new(None);

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
    let args = common::fake_api::operator_args(Duration::from_secs(1), 4);
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

async fn engine_has_collection(engine: &InProcess, name: &str) -> bool {
    use collection_operator::proto::api::DescribeCollectionRequest;
    let mut client = engine.client().await;
    let Ok(response) = client
        .describe_collection(DescribeCollectionRequest {
            db_name: "default".into(),
            collection_name: name.into(),
            ..Default::default()
        })
        .await
    else {
        return false;
    };
    response
        .into_inner()
        .status
        .is_some_and(|s| s.code == 0 && s.error_code == 0)
}

/// A RoutedAlias with a 2-second interval on the real controllers and the real clock: the
/// generated Collections are created by the Collection controller, the generated alias
/// moves through the CollectionAlias controller at each boundary, and retired collections
/// (deletionPolicy Delete) leave the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_alias_rolls_over_on_the_real_controllers() {
    let engine = InProcess::start().await;
    let api = FakeApi::default();
    *DUMP.lock() = Some(api.clone());
    api.create(
        "coordinators",
        "engine",
        json!({"external": {"endpoint": format!("http://{}", engine.addr)}}),
        json!({}),
    );
    let mut spec = json!({
        "coordinatorRef": {"name": "engine"},
        "start": "2026-01-01T00:00:00Z",
        "interval": "2s",
        "preemptiveCreate": "1s",
        "autoDeleteAge": "2s",
        "deletionPolicy": "Delete",
    });
    spec["template"] = json!({"fields": collection_spec()["fields"]});
    api.create("routedaliases", "news", spec, json!({}));

    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(api.clone().serve(handle));
    let client = Client::new(service, "default");
    let args = common::fake_api::operator_args(Duration::from_secs(30), 4);
    let (trigger, shutdown) = Shutdown::new();
    let controllers = tokio::spawn(async move {
        run_controllers(
            client,
            &args,
            Arc::new(Metrics::new()),
            Arc::new(Health::default()),
            shutdown,
        )
        .await
    });

    let first = Arc::new(Mutex::new(String::new()));
    eventually("the alias points to a collection of the series", || {
        let first = first.clone();
        let engine = &engine;
        async move {
            match engine_alias(engine, "news").await {
                Some(target) if target.starts_with("news_") => {
                    *first.lock() = target;
                    true
                }
                _ => false,
            }
        }
    })
    .await;
    let first = first.lock().clone();
    eventually("the alias moves on at the next boundary", || async {
        engine_alias(&engine, "news")
            .await
            .is_some_and(|target| target.starts_with("news_") && target > first)
    })
    .await;
    eventually("the first collection is retired and dropped", || async {
        !engine_has_collection(&engine, &first).await
    })
    .await;
    let status = api.object("routedaliases", "news").expect("routed")["status"].clone();
    assert!(
        status["nextAction"]["at"].is_string(),
        "status names the next action: {status}"
    );
    let reasons = api.event_reasons();
    for expected in ["CreatedCollection", "AliasRouted", "RetiredCollection"] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "no {expected} Event in {reasons:?}"
        );
    }
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(10), controllers)
        .await
        .expect("controllers stop on shutdown")
        .expect("join")
        .expect("controllers");
}
