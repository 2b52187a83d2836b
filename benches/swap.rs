//! Swap latency of the operator: from a manifest change of `CollectionAlias.spec.collection`
//! to the AlterAlias applied in the engine and the resource reporting `Ready` for the new
//! generation. The controllers run as in a cluster, against the in-memory API server of
//! the tests (real HTTP on loopback through kube's own client: chunked long-lived
//! watches, status patches, Events) and the real coordinator over loopback — a stand-in
//! for a kube-apiserver, whose own latency this figure does not include; the e2e suite
//! (tests/e2e) measures the same against a real cluster.
//!
//! The figures depend on the build and the machine's load: on an idle machine a gated
//! swap takes p50 ~6 ms in release and ~20-30 ms in a debug build (`cargo test
//! --benches`); with other builds sharing the two cores, debug reaches ~90 ms. Queue
//! wait (watch event to reconcile start) stays in the low milliseconds throughout.
//! `RUST_LOG=collection_operator::operator=debug` prints each step of each swap with its
//! timing.
//!
//! Run three times: with the serving gate off (`WhenTargetReady`) and on
//! (`WhenTargetServing`, collections with an index and `load: Always`) over HTTP, and gated
//! over HTTPS (kube's rustls client against a TLS listener, as against a kube-apiserver),
//! with the engine calls each swap costs.
//!
//! `cargo bench --bench swap` (`SWAPS`, default 50). Prints figures; asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use collection_operator::operator::http::Health;
use collection_operator::operator::metrics::Metrics;
use collection_operator::operator::{Shutdown, run_controllers};
use collection_operator::proto::api::DescribeAliasRequest;
use common::InProcess;
use common::fake_api::FakeApi;
use serde_json::{Value, json};

fn ready(object: &Option<Value>) -> bool {
    object.as_ref().is_some_and(|o| {
        o["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        }) && o["status"]["observedGeneration"] == o["metadata"]["generation"]
    })
}

async fn alias_target(client: &mut common::Client) -> Option<String> {
    let response = client
        .describe_alias(DescribeAliasRequest {
            alias: "products".into(),
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    (response.status.unwrap_or_default().code == 0).then_some(response.collection)
}

async fn wait(what: &str, mut done: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        anyhow::ensure!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Sums the engine call counters of the metrics (`Serving` counts one round of reads).
fn engine_calls(metrics: &Metrics, method: Option<&str>) -> u64 {
    let text = metrics.encode().unwrap_or_default();
    text.lines()
        .filter(|line| line.contains("engine_rpc_duration_seconds_count"))
        .filter(|line| method.is_none_or(|m| line.contains(&format!("method=\"{m}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Latencies of `swaps` swaps, and engine calls and serving rounds per swap. `gated`: the
/// collections declare an index and `load: Always` and the alias swaps `WhenTargetServing`
/// (the gate reads the target's and the current target's serving state, and the swap is
/// read back); otherwise `WhenTargetReady`, the behaviour before the gate.
async fn run(swaps: usize, gated: bool, tls: bool) -> anyhow::Result<(Vec<Duration>, f64, f64)> {
    let engine = InProcess::start().await;
    let api = FakeApi::default();
    let mut spec = json!({
        "coordinatorRef": {"name": "engine"},
        "fields": [
            {"name": "id", "dataType": "Int64", "isPrimaryKey": true},
            {"name": "v", "dataType": "FloatVector", "dim": 4}
        ]
    });
    if gated {
        spec["indexes"] = json!([{"fieldName": "v", "indexType": "HNSW", "metricType": "L2"}]);
        spec["load"] = json!({"policy": "Always"});
    }
    let policy = if gated {
        "WhenTargetServing"
    } else {
        "WhenTargetReady"
    };
    api.create(
        "coordinators",
        "engine",
        json!({"external": {"endpoint": format!("http://{}", engine.addr)}}),
        json!({}),
    );
    api.create("collections", "products-v1", spec.clone(), json!({}));
    api.create("collections", "products-v2", spec, json!({}));
    api.create(
        "collectionaliases",
        "products",
        json!({"coordinatorRef": {"name": "engine"}, "collection": "products_v1",
               "switchPolicy": policy}),
        json!({}),
    );
    let certificates = tempfile::tempdir()?;
    let client = if tls {
        api.connect_tls(certificates.path()).await
    } else {
        api.connect().await
    };
    let args = common::fake_api::operator_args(Duration::from_secs(60), 16);
    let (trigger, shutdown) = Shutdown::new();
    let metrics = Arc::new(Metrics::new());
    let controller_metrics = metrics.clone();
    let controllers = tokio::spawn(async move {
        run_controllers(
            client,
            &args,
            controller_metrics,
            Arc::new(Health::default()),
            shutdown,
        )
        .await
    });
    let mut client = engine.client().await;
    let serving_or_ungated = |name: &str| {
        !gated
            || api.object("collections", name).is_some_and(|o| {
                o["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Serving" && c["status"] == "True")
                })
            })
    };
    wait("initial convergence", async || {
        alias_target(&mut client).await.as_deref() == Some("products_v1")
            && ready(&api.object("collectionaliases", "products"))
            && ready(&api.object("collections", "products-v2"))
            && serving_or_ungated("products-v1")
            && serving_or_ungated("products-v2")
    })
    .await?;

    let calls_before = engine_calls(&metrics, None);
    let rounds_before = engine_calls(&metrics, Some("Serving"));
    let mut latencies = Vec::with_capacity(swaps);
    for i in 0..swaps {
        let target = if i % 2 == 0 {
            "products_v2"
        } else {
            "products_v1"
        };
        let started = Instant::now();
        api.edit_spec("collectionaliases", "products", |spec| {
            spec["collection"] = json!(target)
        });
        wait("swap applied and Ready", async || {
            alias_target(&mut client).await.as_deref() == Some(target)
                && ready(&api.object("collectionaliases", "products"))
        })
        .await?;
        latencies.push(started.elapsed());
    }
    // The passes a swap triggers (the collections whose aliases changed) settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls = (engine_calls(&metrics, None) - calls_before) as f64 / swaps as f64;
    let rounds = (engine_calls(&metrics, Some("Serving")) - rounds_before) as f64 / swaps as f64;
    trigger.fire();
    let _ = tokio::time::timeout(Duration::from_secs(10), controllers).await;
    latencies.sort();
    Ok((latencies, calls, rounds))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `RUST_LOG=collection_operator::operator=debug` shows each step of each swap, timed.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let swaps: usize = std::env::var("SWAPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for (gated, tls) in [(false, false), (true, false), (true, true)] {
        let (latencies, calls, rounds) = run(swaps, gated, tls).await?;
        println!(
            "operator swap latency (manifest change -> AlterAlias applied and Ready), gate {}, {swaps} swaps, in-memory API server over {} + real coordinator: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; engine calls per swap {calls:.1} (serving read rounds {rounds:.1})",
            if gated {
                "on (WhenTargetServing, index + load: Always)"
            } else {
                "off (WhenTargetReady)"
            },
            if tls { "HTTPS" } else { "HTTP" },
            ms(latencies[swaps / 2]),
            ms(latencies[(swaps * 99 / 100).min(swaps - 1)]),
            ms(latencies[swaps - 1]),
        );
    }
    Ok(())
}
