//! The controllers as they run in a cluster — watches, predicates, the Collection →
//! alias readiness mapper, requeue hints, resync, graceful shutdown — against a small
//! in-memory API server (list, watch, JSON/apply patches, Events) served over HTTPS on
//! loopback (the first test, as a kube-apiserver serves it) or plain HTTP, and the real
//! coordinator over loopback.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use collection_operator::operator::http::Health;
use collection_operator::operator::metrics::Metrics;
use collection_operator::operator::{Shutdown, run_controllers};
use collection_operator::proto::api::{AlterAliasRequest, DescribeAliasRequest};
use common::InProcess;
use common::fake_api::FakeApi;
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

    let certificates = tempfile::tempdir().expect("tempdir");
    let client = api.connect_tls(certificates.path()).await;
    let args = common::fake_api::operator_args(Duration::from_secs(1), 4);
    let health = Arc::new(Health::default());
    let (trigger, shutdown) = Shutdown::new();
    let metrics = Arc::new(Metrics::new());
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_addr = metrics_listener.local_addr().expect("addr");
    tokio::spawn(collection_operator::operator::http::serve(
        metrics_listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone().wait(),
    ));
    let controllers = tokio::spawn({
        let health = health.clone();
        let metrics = metrics.clone();
        async move { run_controllers(client, &args, metrics, health, shutdown).await }
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

    // /metrics: controller-runtime's families beside ours, counting the same passes.
    let text = scrape(metrics_addr).await;
    for family in [
        "# TYPE controller_runtime_reconcile counter",
        "# TYPE controller_runtime_reconcile_time_seconds histogram",
        "# TYPE workqueue_depth gauge",
        "# TYPE workqueue_adds counter",
        "# TYPE workqueue_queue_duration_seconds histogram",
        "# TYPE collection_operator_queue_wait_seconds histogram",
    ] {
        assert!(text.contains(family), "no {family:?} in\n{text}");
    }
    for controller in ["collection", "collectionalias", "coordinator"] {
        let label = format!("controller=\"{controller}\"");
        let runtime_total: f64 = ["success", "error", "requeue", "requeue_after"]
            .iter()
            .map(|result| {
                sample(
                    &text,
                    "controller_runtime_reconcile_total",
                    &format!("{label},result=\"{result}\""),
                )
            })
            .sum();
        assert!(
            runtime_total >= 2.0,
            "{controller}: {runtime_total} reconciles"
        );
        // (Resync passes keep running while the text is encoded: a pass that ends between
        // two families shows in the later one only.)
        let timed_reconciles = sample(
            &text,
            "controller_runtime_reconcile_time_seconds_count",
            &label,
        );
        assert!(
            (timed_reconciles - runtime_total).abs() <= 1.0,
            "{controller}: {timed_reconciles} reconcile times for {runtime_total} reconciles"
        );
        // The drift repair came from the 1 s resync: requeue_after passes.
        assert!(
            sample(
                &text,
                "controller_runtime_reconcile_total",
                &format!("{label},result=\"requeue_after\"")
            ) >= 1.0
        );
        // Errors count the `error` results (a family shows once it has a sample).
        assert_eq!(
            sample(&text, "controller_runtime_reconcile_errors_total", &label),
            sample(
                &text,
                "controller_runtime_reconcile_total",
                &format!("{label},result=\"error\"")
            ),
        );
        let queue = format!("name=\"{controller}\",controller=\"{controller}\"");
        let adds = sample(&text, "workqueue_adds_total", &queue);
        // Every pass was asked for (watch event, mapped change, hint, or a requeue
        // that came due); asks merged while waiting are one add; what is not finished
        // waits (the depth) or runs (at most one pass per object, three objects).
        let depth = sample(&text, "workqueue_depth", &queue);
        assert!((0.0..=3.0).contains(&depth), "{controller}: depth {depth}");
        assert!(
            adds >= runtime_total && adds <= runtime_total + depth + 3.0,
            "{controller}: {adds} adds for {runtime_total} reconciles, depth {depth}"
        );
        // Triggered starts are timed; the 5 ms bucket holds nearly all of them.
        let timed = sample(&text, "workqueue_queue_duration_seconds_count", &queue);
        assert!(timed >= 1.0 && timed <= adds, "{controller}: {timed} timed");
        let waits = sample(
            &text,
            "collection_operator_queue_wait_seconds_count",
            &label,
        );
        assert!(
            (waits - timed).abs() <= 1.0,
            "{controller}: {waits} vs {timed}"
        );
    }
    let alias_passes = sample(
        &text,
        "collection_operator_reconciles_total",
        "controller=\"collectionalias\"",
    );
    let alias_runtime: f64 = ["success", "error", "requeue", "requeue_after"]
        .iter()
        .map(|result| {
            sample(
                &text,
                "controller_runtime_reconcile_total",
                &format!("controller=\"collectionalias\",result=\"{result}\""),
            )
        })
        .sum();
    assert!(
        alias_passes >= 2.0 && (alias_passes - alias_runtime).abs() <= 1.0,
        "both families count the same passes: {alias_passes} vs {alias_runtime}"
    );
    assert!(
        text.contains(
            "controller_runtime_reconcile_time_seconds_bucket{le=\"0.005\",controller=\"collection\"}"
        ) || text.contains(
            "controller_runtime_reconcile_time_seconds_bucket{controller=\"collection\",le=\"0.005\"}"
        ),
        "controller-runtime's first bucket"
    );

    // The steps of each pass, timed from its start: every pass that wrote a status was
    // counted by controller-runtime's families; the swap and the drift repair are
    // acknowledged AlterAlias calls; no step comes later than the end of its pass.
    assert!(
        text.contains("# TYPE collection_operator_pass_step_seconds histogram"),
        "no pass-step family in\n{text}"
    );
    for controller in ["collection", "collectionalias"] {
        let step = |what: &str, suffix: &str| {
            sample(
                &text,
                &format!("collection_operator_pass_step_seconds_{suffix}"),
                &format!("controller=\"{controller}\",step=\"{what}\""),
            )
        };
        let reconciles: f64 = ["success", "error", "requeue", "requeue_after"]
            .iter()
            .map(|result| {
                sample(
                    &text,
                    "controller_runtime_reconcile_total",
                    &format!("controller=\"{controller}\",result=\"{result}\""),
                )
            })
            .sum();
        let written = step("status written", "count");
        assert!(
            written > 0.0 && written <= reconciles + 1.0,
            "{controller}: {written} status writes for {reconciles} reconciles"
        );
        for earlier in [
            "engine connection ready",
            "engine observed",
            "engine work done",
        ] {
            assert!(
                step(earlier, "count") + 1.0 >= written,
                "{controller}: {} passes reached {earlier:?}, {written} wrote a status",
                step(earlier, "count")
            );
        }
        let pass_time = sample(
            &text,
            "collection_operator_reconcile_duration_seconds_sum",
            &format!("controller=\"{controller}\""),
        );
        let step_time = step("status written", "sum");
        assert!(
            step_time > 0.0 && step_time <= pass_time + 0.5,
            "{controller}: steps sum to {step_time} s, passes to {pass_time} s"
        );
    }
    let acknowledged = |rpc: &str, controller: &str| {
        sample(
            &text,
            "collection_operator_pass_step_seconds_count",
            &format!("controller=\"{controller}\",step=\"{rpc} acknowledged\""),
        )
    };
    assert!(acknowledged("AlterAlias", "collectionalias") >= 2.0);
    assert!(acknowledged("CreateAlias", "collectionalias") >= 1.0);
    assert!(acknowledged("CreateCollection", "collection") >= 2.0);
    assert_eq!(acknowledged("AlterAlias", "collection"), 0.0);
    assert_breakdown_reads_as_we_do(&text);

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

/// `GET /metrics` over a plain TCP connection.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

/// The e2e suite reads the operator's histograms with `tests/e2e/breakdown.py`: fed this
/// real exposition, it must find every histogram series and read the same sums and
/// counts as [`sample`].
fn assert_breakdown_reads_as_we_do(response: &str) {
    use std::io::Write;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(response, |(_, body)| body);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/breakdown.py");
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs tests/e2e/breakdown.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write the exposition");
    let output = child.wait_with_output().expect("breakdown.py output");
    assert!(output.status.success(), "breakdown.py failed: {output:?}");
    let parsed: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    let histograms: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" histogram"))
        .collect();
    let series: Vec<&str> = body
        .lines()
        .filter(|line| {
            histograms.iter().any(|family| {
                line.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with("_count{") || rest.starts_with("_count "))
            })
        })
        .collect();
    assert!(
        series.len() >= 10,
        "histogram series in the exposition: {series:?}"
    );
    assert_eq!(parsed.len(), series.len(), "breakdown.py read {parsed:?}");
    for line in series {
        // `family_count{labels} value`: the labels as the text orders them.
        let (name, rest) = line.split_once('{').expect("labelled series");
        let family = name.strip_suffix("_count").expect("a _count line");
        let labels = rest.rsplit_once("} ").expect("value").0;
        let read = parsed
            .iter()
            .find(|entry| {
                entry["family"] == family
                    && labels.split(',').all(|pair| {
                        let (key, value) = pair.split_once('=').expect("label");
                        entry["labels"][key] == value.trim_matches('"')
                    })
                    && entry["labels"].as_object().map(|m| m.len())
                        == Some(labels.split(',').count())
            })
            .unwrap_or_else(|| panic!("breakdown.py missed {line}"));
        for (suffix, field) in [("_count", "count"), ("_sum", "sum")] {
            let ours = sample(body, &format!("{family}{suffix}"), labels);
            let theirs = read[field].as_f64().expect("a number");
            assert!(
                (ours - theirs).abs() <= 1e-9 * ours.abs().max(1.0),
                "{family}{suffix}{{{labels}}}: {ours} here, {theirs} in breakdown.py"
            );
        }
    }
}

/// The value of the sample `name{labels}` (0 when absent).
fn sample(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
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

    let client = api.connect().await;
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
