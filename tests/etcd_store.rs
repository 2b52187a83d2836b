//! The etcd meta store against a real etcd (Debian `etcd-server`, binary `etcd`), started by
//! each test on free loopback ports with a temporary data directory and killed at the end:
//! puts, gets, scans and deletes; all-or-nothing batches (also when etcd refuses one) seen
//! atomically by paginated scans; a 5,000-key scan; and the coordinator on etcd (in-process
//! and as the real binary) keeping its state and history across a restart.
#![cfg(feature = "etcd")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use collection_operator::coordinator::{EngineConfig, open_engine_etcd};
use collection_operator::proto::api::*;
use collection_operator::proto::schema::CollectionSchema;
use collection_operator::store::etcd::{DEFAULT_PREFIX, max_ddls_per_batch};
use collection_operator::store::{EtcdOptions, EtcdStore, MetaStore, WriteBatch};
use common::etcd::{Etcd, Replica, runtime, start_etcd, wait_writable};
use common::{Client, InProcess, alloc_timestamp, assert_ok, create_alias_in, schema_with_dim};

fn batch(ops: &[(&str, Option<&[u8]>)]) -> WriteBatch {
    let mut batch = WriteBatch::default();
    for (key, value) in ops {
        match value {
            Some(value) => batch.put(*key, value.to_vec()),
            None => batch.delete(*key),
        }
    }
    batch
}

fn pairs(items: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

#[test]
fn put_get_scan_delete() {
    let etcd = Etcd::start();
    let store = etcd.store("one/");
    store
        .commit(&batch(&[
            ("a/2", Some(b"two")),
            ("a/1", Some(b"one")),
            ("b/1", Some(b"other")),
            ("a", Some(b"not under a/")),
        ]))
        .expect("commit");
    assert_eq!(store.get("a/1").expect("get"), Some(b"one".to_vec()));
    assert_eq!(store.get("missing").expect("get"), None);
    assert_eq!(
        store.scan_prefix("a/").expect("scan"),
        pairs(&[("a/1", b"one"), ("a/2", b"two")])
    );
    assert_eq!(store.scan_prefix("none/").expect("scan"), vec![]);

    // Deletes, and several ops on one key in one batch: the last one wins.
    store
        .commit(&batch(&[
            ("a/1", None),
            ("b/1", Some(b"first")),
            ("b/1", None),
            ("b/2", None),
            ("b/2", Some(b"last")),
            ("b/3", None),
        ]))
        .expect("commit");
    assert_eq!(store.get("a/1").expect("get"), None);
    assert_eq!(
        store.scan_prefix("").expect("scan everything"),
        pairs(&[("a", b"not under a/"), ("a/2", b"two"), ("b/2", b"last")])
    );
    store.checkpoint().expect("checkpoint is a no-op");
    store.commit(&WriteBatch::default()).expect("empty batch");

    // Two prefixes on one etcd do not see each other; a new connection sees the data.
    let other = etcd.store("two/");
    assert_eq!(other.scan_prefix("").expect("scan"), vec![]);
    assert_eq!(other.get("a/2").expect("get"), None);
    drop(store);
    let again = etcd.store("one/");
    assert_eq!(again.get("a/2").expect("get"), Some(b"two".to_vec()));
}

#[test]
fn batches_are_all_or_nothing() {
    let etcd = Etcd::start();

    // Refused by the store before sending: more ops than etcd's default --max-txn-ops
    // leaves beside the fence key.
    let store = etcd.store("atomic/");
    let mut too_big = WriteBatch::default();
    for i in 0..128 {
        too_big.put(format!("k/{i:03}"), b"v".to_vec());
    }
    let error = store.commit(&too_big).expect_err("128 ops are refused");
    let message = error.to_string();
    assert!(
        message.contains("128 operations") && message.contains("the 127 a transaction"),
        "{message}"
    );
    too_big.put("k/128", b"v".to_vec());
    assert_eq!(store.scan_prefix("k/").expect("scan"), vec![]);

    // Refused by etcd itself (the store is told a higher limit than the server's): nothing
    // of the batch is applied.
    let lax = etcd.store_with(
        "atomic/",
        EtcdOptions {
            max_txn_ops: 1000,
            ..EtcdOptions::default()
        },
    );
    let error = lax.commit(&too_big).expect_err("etcd refuses 129 ops");
    assert!(error.to_string().contains("too many operations"), "{error}");
    assert_eq!(lax.scan_prefix("k/").expect("scan"), vec![]);
    // A batch over etcd's request size limit (1.5 MiB) with small puts in it.
    let mut oversized = batch(&[("small/1", Some(b"x")), ("small/2", Some(b"y"))]);
    oversized.put("huge", vec![7u8; 2 << 20]);
    lax.commit(&oversized)
        .expect_err("etcd refuses a 2 MiB request");
    assert_eq!(store.scan_prefix("small/").expect("scan"), vec![]);
    assert_eq!(store.get("huge").expect("get"), None);
    // Exactly at the limit is fine.
    let mut full = WriteBatch::default();
    for i in 0..127 {
        full.put(format!("k/{i:03}"), b"0".to_vec());
    }
    store.commit(&full).expect("127 ops commit");

    // Readers never see half a batch: a writer rewrites all 100 keys per batch while
    // paginated scans (10 keys a page) check that every key has the same generation.
    let store = Arc::new(store);
    let reader = Arc::new(etcd.store_with(
        "atomic/",
        EtcdOptions {
            page_size: 10,
            ..EtcdOptions::default()
        },
    ));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for generation in 1..=40u32 {
                let mut batch = WriteBatch::default();
                for i in 0..100 {
                    batch.put(format!("g/{i:03}"), generation.to_be_bytes().to_vec());
                }
                store.commit(&batch).expect("generation commits");
            }
            done.store(true, Ordering::Release);
        })
    };
    let mut scans = 0;
    let mut generations = std::collections::BTreeSet::new();
    while !done.load(Ordering::Acquire) || scans == 0 {
        let seen = reader.scan_prefix("g/").expect("scan");
        scans += 1;
        if seen.is_empty() {
            continue;
        }
        assert_eq!(seen.len(), 100, "scan {scans}: a whole batch or none");
        let first = &seen[0].1;
        assert!(
            seen.iter().all(|(_, v)| v == first),
            "scan {scans} saw two generations"
        );
        generations.insert(first.clone());
    }
    writer.join().expect("writer thread");
    let last = reader.scan_prefix("g/").expect("scan");
    assert!(last.iter().all(|(_, v)| v == &40u32.to_be_bytes().to_vec()));
    println!(
        "{scans} paginated scans during 40 batches of 100 keys saw {} distinct generations, \
         never a mix",
        generations.len()
    );
}

#[test]
fn large_scans_paginate() {
    let etcd = Etcd::start();
    let store = etcd.store(DEFAULT_PREFIX);
    let keys: Vec<String> = (0..5_000).map(|i| format!("big/{i:05}")).collect();
    let started = Instant::now();
    for chunk in keys.chunks(100) {
        let mut batch = WriteBatch::default();
        for key in chunk {
            batch.put(key.clone(), key.as_bytes().to_vec());
        }
        store.commit(&batch).expect("commit");
    }
    let written = started.elapsed();
    let started = Instant::now();
    let scanned = store.scan_prefix("big/").expect("scan");
    let scan_time = started.elapsed();
    assert_eq!(scanned.len(), 5_000);
    assert!(
        scanned
            .iter()
            .zip(&keys)
            .all(|((k, v), want)| k == want && v == want.as_bytes())
    );
    // Pages that do not divide the key count evenly.
    let small_pages = etcd.store_with(
        DEFAULT_PREFIX,
        EtcdOptions {
            page_size: 7,
            ..EtcdOptions::default()
        },
    );
    assert_eq!(small_pages.scan_prefix("big/").expect("scan"), scanned);
    assert_eq!(small_pages.scan_prefix("big/0001").expect("scan").len(), 10);
    println!("5,000 keys: written in {written:?} (50 txns), scanned in {scan_time:?}");
}

async fn create(client: &mut Client, name: &str, dim: u32) {
    let status = client
        .create_collection(CreateCollectionRequest {
            collection_name: name.into(),
            schema: schema_with_dim(name, dim),
            ..Default::default()
        })
        .await
        .expect("CreateCollection rpc")
        .into_inner();
    assert_ok(&status, &format!("CreateCollection {name}"));
}

/// The real collection behind `name` (a collection or an alias) as of `ts` (0: now).
async fn resolves_to(client: &mut Client, name: &str, ts: u64) -> Option<String> {
    let response = client
        .describe_collection(DescribeCollectionRequest {
            collection_name: name.into(),
            time_stamp: ts,
            ..Default::default()
        })
        .await
        .expect("DescribeCollection rpc")
        .into_inner();
    let status = response.status.expect("status");
    if status.code != 0 {
        return None;
    }
    let schema: CollectionSchema = response.schema.expect("schema");
    Some(schema.name)
}

async fn open_on(etcd: &Etcd, prefix: &str) -> InProcess {
    let (engine, _) = open_engine_etcd(
        &etcd.endpoints(),
        prefix,
        EtcdOptions::default(),
        EngineConfig::default(),
    )
    .await
    .expect("engine opens on etcd");
    InProcess::start_with_engine(engine).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_on_etcd_keeps_state_and_history_across_restart() {
    let etcd = start_etcd().await;
    let server = open_on(&etcd, "coord/").await;
    let mut client = server.client().await;
    let t0 = alloc_timestamp(&mut client).await;
    create(&mut client, "A", 4).await;
    create(&mut client, "B", 4).await;
    create_alias_in(&mut client, "", "Z", "A").await;
    let t1 = alloc_timestamp(&mut client).await;
    let status = client
        .alter_alias(AlterAliasRequest {
            collection_name: "B".into(),
            alias: "Z".into(),
            ..Default::default()
        })
        .await
        .expect("AlterAlias rpc")
        .into_inner();
    assert_ok(&status, "AlterAlias Z->B");
    let t2 = alloc_timestamp(&mut client).await;
    // Many concurrent DDLs: the engine batches them, each batch one etcd transaction within
    // the 128-op limit.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            create(&mut client, &format!("c{i:03}"), 4).await;
        }));
    }
    for task in tasks {
        task.await.expect("create task");
    }
    let t3 = alloc_timestamp(&mut client).await;
    assert!(t0 < t1 && t1 < t2 && t2 < t3);
    assert_eq!(resolves_to(&mut client, "Z", 0).await.as_deref(), Some("B"));
    server.stop().await;

    // The same keys as the redb layout, under the prefix.
    let store = Arc::new(
        EtcdStore::connect(&etcd.endpoints(), "coord/")
            .await
            .expect("store connects"),
    );
    let (aliases, collections, log) = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            (
                store
                    .scan_prefix("root-coord/collection-alias/")
                    .expect("scan"),
                store
                    .scan_prefix("root-coord/database/collection-info/")
                    .expect("scan"),
                store.scan_prefix("root-coord/ddl-log/").expect("scan"),
            )
        })
        .await
        .expect("scan task")
    };
    assert_eq!(aliases.len(), 1, "{aliases:?}");
    assert!(aliases[0].0.ends_with("/Z"));
    assert_eq!(collections.len(), 202);
    // default database + A + B + alias Z + alter + 200 collections.
    assert_eq!(log.len(), 205);

    // Restart on the same etcd: state and history are back.
    let server = open_on(&etcd, "coord/").await;
    let mut client = server.client().await;
    assert_eq!(resolves_to(&mut client, "Z", 0).await.as_deref(), Some("B"));
    assert_eq!(
        resolves_to(&mut client, "Z", t1).await.as_deref(),
        Some("A")
    );
    assert_eq!(
        resolves_to(&mut client, "Z", t2).await.as_deref(),
        Some("B")
    );
    assert_eq!(resolves_to(&mut client, "A", t0).await, None);
    assert_eq!(
        resolves_to(&mut client, "c199", t2).await,
        None,
        "not yet created at t2"
    );
    assert_eq!(
        resolves_to(&mut client, "c199", t3).await.as_deref(),
        Some("c199")
    );
    let t4 = alloc_timestamp(&mut client).await;
    assert!(t4 > t3, "the TSO continues above the persisted bound");
    // Another prefix on the same etcd is another, empty coordinator.
    let fresh = open_on(&etcd, "other/").await;
    let mut other = fresh.client().await;
    assert_eq!(resolves_to(&mut other, "A", 0).await, None);
    fresh.stop().await;
    server.stop().await;
}

/// The real binary with `--meta-store etcd`: a DDL survives SIGKILL and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_binary_on_etcd() {
    let etcd = start_etcd().await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut replica = Replica::start(&etcd, "bin/", 2, logs.path());
    wait_writable(replica.addr, Duration::from_secs(20)).await;
    let mut client = common::connect(replica.addr).await;
    create(&mut client, "A", 4).await;
    create_alias_in(&mut client, "", "Z", "A").await;
    replica.kill9();

    // Reads are served at once by the restarted replica (still a follower while the dead
    // one's lease runs out).
    let replica = Replica::start(&etcd, "bin/", 2, logs.path());
    let mut client = common::connect(replica.addr).await;
    assert_eq!(resolves_to(&mut client, "Z", 0).await.as_deref(), Some("A"));
    drop(replica);

    // The engine's batch cap for etcd's default limit.
    assert_eq!(max_ddls_per_batch(128), 62);
}

/// History compaction on etcd deletes expired DDL log records in transactions etcd
/// accepts (at most `--max-txn-ops` operations each), so more than 128 expiring at once
/// still leave the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_of_many_log_records_fits_etcd_transactions() {
    use collection_operator::meta::change::DDL_LOG_PREFIX;
    use std::time::Duration;

    let etcd = start_etcd().await;
    let config = EngineConfig {
        history_retention: Duration::from_millis(300),
        compaction_interval: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let (engine, _) = open_engine_etcd(
        &etcd.endpoints(),
        "compact/",
        EtcdOptions::default(),
        config.clone(),
    )
    .await
    .expect("engine opens on etcd");
    let server = InProcess::start_with_engine(engine).await;
    let mut client = server.client().await;
    for i in 0..300 {
        create(&mut client, &format!("c{i}"), 4).await;
    }
    drop(client);
    let _ = server.stop().await;
    // Reopen with a short compaction interval: the writer compacts 300 records at once.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let config = EngineConfig {
        compaction_interval: Duration::from_millis(50),
        ..config
    };
    let (engine, _) = open_engine_etcd(
        &etcd.endpoints(),
        "compact/",
        EtcdOptions::default(),
        config,
    )
    .await
    .expect("engine reopens on etcd");
    let server = InProcess::start_with_engine(engine).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = tokio::task::spawn_blocking({
        let endpoints = etcd.endpoints();
        move || {
            runtime()
                .block_on(EtcdStore::connect(&endpoints, "compact/"))
                .expect("store connects")
                .scan_prefix(DDL_LOG_PREFIX)
                .expect("scan")
                .len()
        }
    })
    .await
    .expect("scan task");
    assert_eq!(left, 0, "every expired DDL log record was deleted");
    let _ = server.stop().await;
}
