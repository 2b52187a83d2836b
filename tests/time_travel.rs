//! Reads with a non-zero timestamp (HasCollection / DescribeCollection / ShowCollections
//! `time_stamp`) answer as of that timestamp: collection existence, schemas, alias targets and
//! alias lists, databases. Timestamps come from AllocTimestamp between DDLs; the history is
//! answered the same after a restart on the same data directory.

mod common;

use collection_operator::coordinator::EngineConfig;
use collection_operator::proto::api::*;
use collection_operator::proto::common::ErrorCode;
use collection_operator::proto::schema::CollectionSchema;
use common::{
    Client, InProcess, alloc_timestamp, assert_error, assert_error_msg, assert_ok, create_alias_in,
    create_database, schema_with_dim, with_db,
};

/// Timestamps allocated between the DDLs of [`run_history`]; `tN` is taken right after
/// step N.
#[derive(Debug, Clone, Copy)]
struct History {
    /// Before anything.
    t0: u64,
    /// `A` created (dim 4).
    t1: u64,
    /// Alias `Z` → `A`.
    t2: u64,
    /// `B` created.
    t3: u64,
    /// `Z` altered to `B`.
    t4: u64,
    /// `Z` dropped.
    t5: u64,
    /// `A` dropped.
    t6: u64,
    /// `A` created again, dim 8.
    t7: u64,
    /// Database `db2` created.
    t8: u64,
    /// `C` created in `db2`, alias `Q` → `C` there.
    t9: u64,
    /// ID of the first `A`.
    first_a: i64,
}

fn ok_status(status: tonic::Response<collection_operator::proto::common::Status>, what: &str) {
    assert_ok(&status.into_inner(), what);
}

async fn create(client: &mut Client, db: &str, name: &str, dim: u32) {
    let status = client
        .create_collection(CreateCollectionRequest {
            db_name: db.into(),
            collection_name: name.into(),
            schema: schema_with_dim(name, dim),
            ..Default::default()
        })
        .await
        .expect("CreateCollection rpc");
    ok_status(status, &format!("CreateCollection {name}"));
}

async fn run_history(client: &mut Client) -> History {
    let t0 = alloc_timestamp(client).await;
    create(client, "", "A", 4).await;
    let t1 = alloc_timestamp(client).await;
    create_alias_in(client, "", "Z", "A").await;
    let t2 = alloc_timestamp(client).await;
    create(client, "", "B", 4).await;
    let t3 = alloc_timestamp(client).await;
    let status = client
        .alter_alias(AlterAliasRequest {
            collection_name: "B".into(),
            alias: "Z".into(),
            ..Default::default()
        })
        .await
        .expect("AlterAlias rpc");
    ok_status(status, "AlterAlias Z->B");
    let t4 = alloc_timestamp(client).await;
    let status = client
        .drop_alias(DropAliasRequest {
            alias: "Z".into(),
            ..Default::default()
        })
        .await
        .expect("DropAlias rpc");
    ok_status(status, "DropAlias Z");
    let t5 = alloc_timestamp(client).await;
    let first_a = describe(client, "", "A", 0).await.collection_id;
    let status = client
        .drop_collection(DropCollectionRequest {
            collection_name: "A".into(),
            ..Default::default()
        })
        .await
        .expect("DropCollection rpc");
    ok_status(status, "DropCollection A");
    let t6 = alloc_timestamp(client).await;
    create(client, "", "A", 8).await;
    let t7 = alloc_timestamp(client).await;
    create_database(client, "db2").await;
    let t8 = alloc_timestamp(client).await;
    create(client, "db2", "C", 4).await;
    create_alias_in(client, "db2", "Q", "C").await;
    let t9 = alloc_timestamp(client).await;
    let history = History {
        t0,
        t1,
        t2,
        t3,
        t4,
        t5,
        t6,
        t7,
        t8,
        t9,
        first_a,
    };
    let all = [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9];
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "timestamps increase: {history:?}"
    );
    history
}

async fn has(client: &mut Client, db: &str, name: &str, ts: u64) -> bool {
    let response = client
        .has_collection(HasCollectionRequest {
            db_name: db.into(),
            collection_name: name.into(),
            time_stamp: ts,
            ..Default::default()
        })
        .await
        .expect("HasCollection rpc")
        .into_inner();
    assert_ok(response.status.as_ref().unwrap(), "HasCollection");
    response.value
}

async fn describe(
    client: &mut Client,
    db: &str,
    name: &str,
    ts: u64,
) -> DescribeCollectionResponse {
    client
        .describe_collection(DescribeCollectionRequest {
            db_name: db.into(),
            collection_name: name.into(),
            time_stamp: ts,
            ..Default::default()
        })
        .await
        .expect("DescribeCollection rpc")
        .into_inner()
}

/// DescribeCollection as of `ts` succeeds; returns (real name, sorted aliases, dim, ID).
async fn described(
    client: &mut Client,
    db: &str,
    name: &str,
    ts: u64,
) -> (String, Vec<String>, String, i64) {
    let response = describe(client, db, name, ts).await;
    assert_ok(
        response.status.as_ref().unwrap(),
        &format!("DescribeCollection {db}.{name} @ {ts}"),
    );
    assert_eq!(response.collection_name, name, "requested name echoed");
    let schema: CollectionSchema = response.schema.expect("schema");
    let dim = schema
        .fields
        .iter()
        .flat_map(|f| &f.type_params)
        .find(|kv| kv.key == "dim")
        .map(|kv| kv.value.clone())
        .unwrap_or_default();
    let mut aliases = response.aliases;
    aliases.sort();
    (schema.name, aliases, dim, response.collection_id)
}

/// DescribeCollection as of `ts` answers "not found" (the 2.4+ proxy reason, §1.5 codes).
async fn assert_not_described(client: &mut Client, db: &str, name: &str, ts: u64) {
    let response = describe(client, db, name, ts).await;
    let shown_db = if db.is_empty() { "default" } else { db };
    let detail = format!("collection not found[database={shown_db}][collection={name}]");
    assert_error(
        response.status.as_ref().unwrap(),
        100,
        ErrorCode::UnexpectedError,
        &format!("can't find collection[database={shown_db}][collection={name}]"),
        &detail,
        &format!("DescribeCollection {db}.{name} @ {ts}"),
    );
}

async fn show(client: &mut Client, db: &str, ts: u64) -> ShowCollectionsResponse {
    client
        .show_collections(ShowCollectionsRequest {
            db_name: db.into(),
            time_stamp: ts,
            ..Default::default()
        })
        .await
        .expect("ShowCollections rpc")
        .into_inner()
}

async fn shown(client: &mut Client, db: &str, ts: u64) -> Vec<String> {
    let response = show(client, db, ts).await;
    assert_ok(
        response.status.as_ref().unwrap(),
        &format!("ShowCollections {db} @ {ts}"),
    );
    assert_eq!(
        response.collection_ids.len(),
        response.collection_names.len()
    );
    assert_eq!(
        response.created_timestamps.len(),
        response.collection_names.len()
    );
    assert_eq!(
        response.created_utc_timestamps.len(),
        response.collection_names.len()
    );
    assert!(
        response.in_memory_percentages.is_empty() && response.query_service_available.is_empty(),
        "ShowCollections leaves in-memory fields empty (§2.7)"
    );
    let mut names = response.collection_names;
    names.sort();
    names
}

/// Every as-of answer [`run_history`] implies.
async fn check_history(client: &mut Client, h: &History) {
    let History {
        t0,
        t1,
        t2,
        t3,
        t4,
        t5,
        t6,
        t7,
        t8,
        t9,
        first_a,
    } = *h;

    // HasCollection: collections, and aliases resolving to them.
    let expectations = [
        (
            "A",
            [false, true, true, true, true, true, false, true, true, true],
        ),
        (
            "B",
            [
                false, false, false, true, true, true, true, true, true, true,
            ],
        ),
        (
            "Z",
            [
                false, false, true, true, true, false, false, false, false, false,
            ],
        ),
    ];
    let stamps = [t0, t1, t2, t3, t4, t5, t6, t7, t8, t9];
    for (name, expected) in expectations {
        for (i, (ts, expect)) in stamps.iter().zip(expected).enumerate() {
            assert_eq!(
                has(client, "", name, *ts).await,
                expect,
                "HasCollection {name} @ t{i}"
            );
        }
    }

    // DescribeCollection: schemas and IDs of the two incarnations of A.
    assert_not_described(client, "", "A", t0).await;
    let (name, aliases, dim, id) = described(client, "", "A", t1).await;
    assert_eq!((name.as_str(), dim.as_str(), id), ("A", "4", first_a));
    assert!(aliases.is_empty());
    let created = describe(client, "", "A", t1).await.created_timestamp;
    assert!(t0 < created && created < t1, "A created between t0 and t1");
    assert_not_described(client, "", "A", t6).await;
    let (_, _, dim, id) = described(client, "", "A", t7).await;
    assert_eq!(dim, "8", "the second A");
    assert_ne!(id, first_a, "the second A has a new ID");
    let latest = described(client, "", "A", 0).await;
    assert_eq!((latest.2.as_str(), latest.3), ("8", id));

    // Alias targets and alias lists as of each timestamp.
    assert_not_described(client, "", "Z", t1).await;
    let (name, aliases, _, id) = described(client, "", "Z", t2).await;
    assert_eq!(
        (name.as_str(), aliases.as_slice(), id),
        ("A", &["Z".to_string()][..], first_a)
    );
    let (name, aliases, _, _) = described(client, "", "Z", t3).await;
    assert_eq!(
        (name.as_str(), aliases.as_slice()),
        ("A", &["Z".to_string()][..])
    );
    let (name, aliases, _, _) = described(client, "", "Z", t4).await;
    assert_eq!(
        (name.as_str(), aliases.as_slice()),
        ("B", &["Z".to_string()][..])
    );
    assert_not_described(client, "", "Z", t5).await;
    assert_not_described(client, "", "Z", 0).await;

    assert_eq!(described(client, "", "A", t2).await.1, ["Z"]);
    assert_eq!(described(client, "", "A", t3).await.1, ["Z"]);
    assert!(described(client, "", "A", t4).await.1.is_empty());
    assert!(described(client, "", "B", t3).await.1.is_empty());
    assert_eq!(described(client, "", "B", t4).await.1, ["Z"]);
    assert!(described(client, "", "B", t5).await.1.is_empty());

    // ShowCollections.
    let listings: [(u64, &[&str]); 10] = [
        (t0, &[]),
        (t1, &["A"]),
        (t2, &["A"]),
        (t3, &["A", "B"]),
        (t4, &["A", "B"]),
        (t5, &["A", "B"]),
        (t6, &["B"]),
        (t7, &["A", "B"]),
        (t9, &["A", "B"]),
        (0, &["A", "B"]),
    ];
    for (ts, expected) in listings {
        assert_eq!(
            shown(client, "", ts).await,
            expected,
            "ShowCollections @ {ts}"
        );
    }
    let at_t5 = show(client, "", t5).await;
    let a_index = at_t5
        .collection_names
        .iter()
        .position(|n| n == "A")
        .expect("A listed at t5");
    assert_eq!(at_t5.collection_ids[a_index], first_a, "the first A at t5");

    // Another database: it did not exist before t8.
    for ts in [t0, t7] {
        let response = show(client, "db2", ts).await;
        assert_error_msg(
            response.status.as_ref().unwrap(),
            800,
            ErrorCode::UnexpectedError,
            "database not found[database=db2]",
            &format!("ShowCollections db2 @ {ts}"),
        );
        assert!(!has(client, "db2", "C", ts).await);
    }
    assert!(shown(client, "db2", t8).await.is_empty());
    assert_eq!(shown(client, "db2", t9).await, ["C"]);
    assert_not_described(client, "db2", "C", t8).await;
    assert_not_described(client, "db2", "Q", t8).await;
    let (name, aliases, _, _) = described(client, "db2", "Q", t9).await;
    assert_eq!(
        (name.as_str(), aliases.as_slice()),
        ("C", &["Q".to_string()][..])
    );
    // The same through the `dbname` header.
    let response = client
        .describe_collection(with_db(
            DescribeCollectionRequest {
                collection_name: "Q".into(),
                time_stamp: t9,
                ..Default::default()
            },
            "db2",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ok(
        response.status.as_ref().unwrap(),
        "DescribeCollection Q via header @ t9",
    );
    assert_eq!(
        (
            response.schema.unwrap().name.as_str(),
            response.db_name.as_str()
        ),
        ("C", "db2")
    );
    let response = client
        .has_collection(with_db(
            HasCollectionRequest {
                collection_name: "C".into(),
                time_stamp: t8,
                ..Default::default()
            },
            "db2",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!response.value, "HasCollection db2.C via header @ t8");
    let response = client
        .show_collections(with_db(
            ShowCollectionsRequest {
                time_stamp: t9,
                ..Default::default()
            },
            "db2",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        response.collection_names,
        ["C"],
        "ShowCollections via header @ t9"
    );
    // The default database is unaffected by db2's history.
    assert!(!has(client, "", "C", t9).await);
    assert!(!has(client, "", "Q", t9).await);
}

#[tokio::test]
async fn reads_answer_as_of_their_timestamp() {
    let server = InProcess::start().await;
    let mut client = server.client().await;
    let history = run_history(&mut client).await;
    check_history(&mut client, &history).await;
}

#[tokio::test]
async fn history_is_answered_after_a_restart() {
    let server = InProcess::start().await;
    let mut client = server.client().await;
    let history = run_history(&mut client).await;
    check_history(&mut client, &history).await;
    drop(client);
    let dir = server.stop().await;

    let server = InProcess::start_in(dir, EngineConfig::default()).await;
    let mut client = server.client().await;
    check_history(&mut client, &history).await;

    // Timestamps keep increasing across the restart, and new DDL builds on the history.
    let t10 = alloc_timestamp(&mut client).await;
    assert!(
        t10 > history.t9,
        "AllocTimestamp after a restart: {t10} > {}",
        history.t9
    );
    create_alias_in(&mut client, "", "Y", "B").await;
    let t11 = alloc_timestamp(&mut client).await;
    assert!(described(&mut client, "", "B", t10).await.1.is_empty());
    assert_eq!(described(&mut client, "", "B", t11).await.1, ["Y"]);
    assert!(!has(&mut client, "", "Y", t10).await);
    assert!(has(&mut client, "", "Y", t11).await);
    drop(client);
    let dir = server.stop().await;

    // A second restart replays the history written by both processes.
    let server = InProcess::start_in(dir, EngineConfig::default()).await;
    let mut client = server.client().await;
    check_history(&mut client, &history).await;
    assert!(!has(&mut client, "", "Y", t10).await);
    assert!(has(&mut client, "", "Y", t11).await);
    let (name, aliases, _, _) = described(&mut client, "", "Y", t11).await;
    assert_eq!(
        (name.as_str(), aliases.as_slice()),
        ("B", &["Y".to_string()][..])
    );
    assert!(alloc_timestamp(&mut client).await > t11);
}

/// History older than the retention window is compacted: the DDL log leaves the store,
/// and a read as of a compacted timestamp answers with the oldest state still retained.
#[tokio::test]
async fn history_beyond_retention_is_compacted() {
    use collection_operator::coordinator::EngineConfig;
    use collection_operator::meta::change::DDL_LOG_PREFIX;
    use collection_operator::store::{MetaStore, RedbStore};
    use std::time::Duration;

    let config = EngineConfig {
        history_retention: Duration::from_millis(200),
        compaction_interval: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let server =
        common::InProcess::start_in(tempfile::tempdir().expect("dir"), config.clone()).await;
    let mut client = server.client().await;
    common::create_collection_in(&mut client, "default", "first").await;
    let before_second = common::alloc_timestamp(&mut client).await;
    common::create_collection_in(&mut client, "default", "second").await;
    assert!(
        !has(&mut client, "default", "second", before_second).await,
        "history is answered inside the window"
    );

    // Let the window pass; the writer compacts on its own timer.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        has(&mut client, "default", "second", before_second).await,
        "a read older than the window sees the oldest retained state"
    );
    let dir = server.stop().await;
    let store = RedbStore::open(dir.path()).expect("store reopens");
    let log = store.scan_prefix(DDL_LOG_PREFIX).expect("scan");
    assert!(
        log.is_empty(),
        "compacted DDL log records leave the store: {} left",
        log.len()
    );
    drop(store);

    // Without the log the state itself is intact.
    let server = common::InProcess::start_in(dir, config).await;
    let mut client = server.client().await;
    assert_eq!(
        shown(&mut client, "default", 0).await,
        vec!["first".to_string(), "second".to_string()]
    );
}
