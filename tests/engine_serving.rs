//! The engine client's serving reads and writes (CreateIndex, DescribeIndex, LoadCollection,
//! ReleaseCollection, GetLoadState, GetLoadingProgress, GetCollectionStatistics) against the
//! embedded coordinator over loopback gRPC, and the gate decided on what it answers: the
//! coordinator's metadata-only answers are honest (indexes Finished with 0 rows, Loaded once
//! loaded, 0 rows), so a gate passes once the target is indexed and loaded, and a row guard
//! says the engine reports 0 rows.

mod common;

use std::collections::BTreeMap;

use collection_operator::client::{ClientError, EngineClient};
use collection_operator::crd::{IndexSpec, SwapGuards, SwitchPolicy};
use collection_operator::plan::serving::{
    Gate, GateCurrent, GateTarget, IndexBuild, LoadState, ServingAction, gate,
};
use common::{InProcess, create_alias_in, create_collection_in};

fn hnsw() -> IndexSpec {
    IndexSpec {
        field_name: "v".to_string(),
        index_name: None,
        index_type: "HNSW".to_string(),
        metric_type: Some("L2".to_string()),
        params: BTreeMap::from([("M".to_string(), "16".to_string())]),
    }
}

async fn engine() -> (InProcess, EngineClient) {
    let server = InProcess::start().await;
    let client = EngineClient::connect(&format!("http://{}", server.addr), None)
        .await
        .expect("connects");
    (server, client)
}

#[tokio::test]
async fn indexes_load_and_rows_as_the_coordinator_reports_them() {
    let (server, mut engine) = engine().await;
    let mut raw = server.client().await;
    create_collection_in(&mut raw, "", "products_v2").await;

    // Fresh: no index, not loaded, no rows.
    let fresh = engine
        .serving("default", "products_v2")
        .await
        .expect("reads");
    assert!(fresh.indexes.is_empty(), "{fresh:?}");
    assert_eq!(fresh.load, LoadState::NotLoad);
    assert_eq!(fresh.row_count, 0);

    engine
        .apply_serving(
            "default",
            "products_v2",
            &ServingAction::CreateIndex(hnsw()),
        )
        .await
        .expect("CreateIndex");
    let indexes = engine
        .indexes("default", "products_v2")
        .await
        .expect("reads");
    assert_eq!(indexes.len(), 1, "{indexes:?}");
    // The name the operator sent (the field name), not Milvus's `_default_idx_<fieldID>`.
    assert_eq!(indexes[0].name, "v");
    assert_eq!(indexes[0].field, "v");
    assert_eq!(indexes[0].state, IndexBuild::Finished);
    assert_eq!(
        (
            indexes[0].indexed_rows,
            indexes[0].total_rows,
            indexes[0].pending_rows
        ),
        (0, 0, 0)
    );
    assert!(indexes[0].built_for_all_rows());

    let load = ServingAction::LoadCollection {
        replicas: Some(1),
        resource_groups: Vec::new(),
    };
    engine
        .apply_serving("default", "products_v2", &load)
        .await
        .expect("LoadCollection");
    let loaded = engine
        .serving("default", "products_v2")
        .await
        .expect("reads");
    assert_eq!(loaded.load, LoadState::Loaded);
    assert_eq!(loaded.load_progress, 100);
    assert_eq!(
        engine
            .loading_progress("default", "products_v2")
            .await
            .expect("progress"),
        100
    );

    engine
        .apply_serving("default", "products_v2", &ServingAction::ReleaseCollection)
        .await
        .expect("ReleaseCollection");
    assert_eq!(
        engine
            .load_state("default", "products_v2")
            .await
            .expect("state"),
        LoadState::NotLoad
    );
}

#[tokio::test]
async fn statistics_of_a_missing_collection_fail_like_milvus() {
    let (_server, mut engine) = engine().await;
    match engine.row_count("default", "nothing_here").await {
        Err(ClientError::Engine { rpc, code, message }) => {
            assert_eq!(rpc, "GetCollectionStatistics");
            assert_eq!(code, 100, "{message}");
            assert!(message.contains("nothing_here"), "{message}");
        }
        other => panic!("expected collection-not-found, got {other:?}"),
    }
}

#[tokio::test]
async fn an_alias_resolves_to_its_collection_id() {
    let (server, mut engine) = engine().await;
    let mut raw = server.client().await;
    create_collection_in(&mut raw, "", "products_v1").await;
    create_alias_in(&mut raw, "", "products", "products_v1").await;
    let (name, id) = engine
        .resolve("default", "products")
        .await
        .expect("reads")
        .expect("the alias resolves");
    assert_eq!(name, "products_v1");
    let direct = engine
        .collection("default", "products_v1")
        .await
        .expect("reads")
        .expect("exists");
    assert_eq!(id, direct.id);
    assert_eq!(
        engine.resolve("default", "missing").await.expect("reads"),
        None
    );
}

#[tokio::test]
async fn the_gate_on_the_embedded_coordinator() {
    let (server, mut engine) = engine().await;
    let mut raw = server.client().await;
    create_collection_in(&mut raw, "", "products_v1").await;
    create_collection_in(&mut raw, "", "products_v2").await;
    let declared = [hnsw()];
    let current_of = |loaded: bool| GateCurrent {
        name: "products_v1",
        loaded,
        row_count: 0,
    };

    // v1 serves (loaded), v2 has no index yet and is not loaded: wait, with both named.
    engine
        .load_collection("default", "products_v1", None, &[])
        .await
        .expect("load v1");
    let observed = engine
        .serving("default", "products_v2")
        .await
        .expect("reads");
    let target = GateTarget {
        name: "products_v2",
        exists: true,
        matches_spec: true,
        declared: Some(&declared),
        load_managed: true,
        observed: &observed,
    };
    assert_eq!(
        gate(
            SwitchPolicy::WhenTargetServing,
            &target,
            Some(&current_of(true)),
            None
        ),
        Gate::Wait {
            waits: vec![
                "index v on v not created yet".to_string(),
                "not loaded".to_string()
            ]
        }
    );

    // Indexed and loaded: the gate opens.
    engine
        .create_index("default", "products_v2", &hnsw())
        .await
        .expect("index");
    engine
        .load_collection("default", "products_v2", None, &[])
        .await
        .expect("load v2");
    let observed = engine
        .serving("default", "products_v2")
        .await
        .expect("reads");
    let target = GateTarget {
        observed: &observed,
        ..target
    };
    assert_eq!(
        gate(
            SwitchPolicy::WhenTargetServing,
            &target,
            Some(&current_of(true)),
            None
        ),
        Gate::Swap
    );

    // A row guard sees the coordinator's 0 rows and says so.
    let guards = SwapGuards {
        min_row_count: Some(1_000),
        min_row_ratio: Some(0.95),
    };
    assert_eq!(
        gate(
            SwitchPolicy::WhenTargetServing,
            &target,
            Some(&current_of(true)),
            Some(&guards)
        ),
        Gate::Blocked {
            message: "products_v2 has 0 rows, needs >= 1,000 (the engine reports 0 rows)"
                .to_string()
        }
    );
}
