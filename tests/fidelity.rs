//! Answers where the coordinator once differed from Milvus 2.5, found by randomized
//! differential runs against real Milvus; each row over real gRPC on loopback with the
//! exact code and message, and the Milvus source it follows.

mod common;

use collection_operator::proto::api::*;
use collection_operator::proto::common::{ErrorCode, KeyValuePair, Status};
use common::{
    Client, InProcess, assert_error, assert_error_msg, assert_ok, create_collection_in,
    create_database, valid_schema,
};

use ErrorCode::{CollectionNotExists, IllegalArgument, UnexpectedError};

async fn server() -> (InProcess, Client) {
    let server = InProcess::start().await;
    let client = server.client().await;
    (server, client)
}

fn pair(key: &str, value: &str) -> KeyValuePair {
    KeyValuePair {
        key: key.into(),
        value: value.into(),
    }
}

async fn create(client: &mut Client, request: CreateCollectionRequest) -> Status {
    client
        .create_collection(request)
        .await
        .expect("CreateCollection rpc")
        .into_inner()
}

fn create_c(consistency_level: i32, properties: Vec<KeyValuePair>) -> CreateCollectionRequest {
    CreateCollectionRequest {
        collection_name: "c".into(),
        schema: valid_schema("c"),
        shards_num: 1,
        consistency_level,
        properties,
        ..Default::default()
    }
}

async fn create_partition(client: &mut Client, db: &str, coll: &str, part: &str) -> Status {
    client
        .create_partition(CreatePartitionRequest {
            db_name: db.into(),
            collection_name: coll.into(),
            partition_name: part.into(),
            ..Default::default()
        })
        .await
        .expect("CreatePartition rpc")
        .into_inner()
}

async fn drop_partition(client: &mut Client, db: &str, coll: &str, part: &str) -> Status {
    client
        .drop_partition(DropPartitionRequest {
            db_name: db.into(),
            collection_name: coll.into(),
            partition_name: part.into(),
            ..Default::default()
        })
        .await
        .expect("DropPartition rpc")
        .into_inner()
}

const DUPLICATE_C: &str = "create duplicate collection with different parameters, collection: c";

/// Milvus compares an existing collection with `model.Collection.Equal`
/// (`internal/metastore/model/collection.go`, called by rootcoord
/// `createCollectionTask.Execute`): consistency level, properties (as a map), description,
/// fields, shards and partitions by name.
#[tokio::test]
async fn create_of_an_existing_collection_compares_every_parameter() {
    let (_server, mut client) = server().await;
    let properties = || vec![pair("k", "v"), pair("j", "w")];
    assert_ok(
        &create(&mut client, create_c(0, properties())).await,
        "first",
    );
    // Same parameters, properties in another order: idempotent.
    assert_ok(
        &create(
            &mut client,
            create_c(0, vec![pair("j", "w"), pair("k", "v")]),
        )
        .await,
        "same again",
    );
    for (what, request) in [
        ("other consistency level", create_c(2, properties())),
        (
            "other property value",
            create_c(0, vec![pair("k", "x"), pair("j", "w")]),
        ),
        ("no properties", create_c(0, Vec::new())),
        ("one property less", create_c(0, vec![pair("k", "v")])),
    ] {
        assert_error_msg(
            &create(&mut client, request).await,
            65535,
            UnexpectedError,
            DUPLICATE_C,
            what,
        );
    }
    // Once it has another partition it is no longer the collection the request describes.
    assert_ok(
        &create_partition(&mut client, "", "c", "p1").await,
        "CreatePartition p1",
    );
    assert_error_msg(
        &create(&mut client, create_c(0, properties())).await,
        65535,
        UnexpectedError,
        DUPLICATE_C,
        "identical create after CreatePartition",
    );
    assert_ok(
        &drop_partition(&mut client, "", "c", "p1").await,
        "DropPartition p1",
    );
    assert_ok(
        &create(&mut client, create_c(0, properties())).await,
        "identical create after the partition is dropped again",
    );
}

/// rootcoord `dropCollectionTask.Execute` (Milvus >= 2.4.18 / 2.5): a missing database is
/// success, like a missing collection.
#[tokio::test]
async fn drop_collection_in_a_missing_database_succeeds() {
    let (_server, mut client) = server().await;
    let status = client
        .drop_collection(DropCollectionRequest {
            db_name: "nosuch".into(),
            collection_name: "c1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&status, "DropCollection nosuch.c1");
}

async fn show_partitions(client: &mut Client, db: &str, name: &str) -> ShowPartitionsResponse {
    client
        .show_partitions(ShowPartitionsRequest {
            db_name: db.into(),
            collection_name: name.into(),
            ..Default::default()
        })
        .await
        .expect("ShowPartitions rpc")
        .into_inner()
}

/// Proxy `showPartitionsTask.PreExecute` validates the collection name (2.3–2.6).
#[tokio::test]
async fn show_partitions_validates_the_collection_name() {
    let (_server, mut client) = server().await;
    let long = "a".repeat(256);
    let cases = [
        (
            "",
            "collection name should not be empty: invalid parameter".to_string(),
        ),
        (
            "1bad",
            "Invalid collection name: 1bad. the first character of a collection name must be an underscore or letter: invalid parameter".to_string(),
        ),
        (
            "a-b",
            "Invalid collection name: a-b. collection name can only contain numbers, letters and underscores: invalid parameter".to_string(),
        ),
        (
            long.as_str(),
            format!("Invalid collection name: {long}. the length of a collection name must be less than 255 characters: invalid parameter"),
        ),
    ];
    for (name, message) in cases {
        let response = show_partitions(&mut client, "", name).await;
        assert_error_msg(
            response.status.as_ref().unwrap(),
            1100,
            IllegalArgument,
            &message,
            &format!("ShowPartitions {name:?}"),
        );
        assert!(response.partition_names.is_empty());
    }
}

/// Proxy `createPartitionTask.PreExecute` / `dropPartitionTask.PreExecute`: the collection
/// name, then the collection (and database) lookup, then the partition name; rootcoord
/// `dropPartitionTask.Prepare` refuses `_default` only after that.
#[tokio::test]
async fn partition_ddl_checks_the_collection_before_the_partition_name() {
    let (_server, mut client) = server().await;
    create_collection_in(&mut client, "", "c1").await;
    let long = "x".repeat(256);
    let missing = "collection not found[database=default][collection=nope]";
    assert_error_msg(
        &create_partition(&mut client, "", "nope", &long).await,
        100,
        CollectionNotExists,
        missing,
        "CreatePartition(nope, 256 x)",
    );
    assert_error_msg(
        &drop_partition(&mut client, "", "nope", "p$").await,
        100,
        CollectionNotExists,
        missing,
        "DropPartition(nope, p$)",
    );
    assert_error_msg(
        &drop_partition(&mut client, "", "nope", "_default").await,
        100,
        CollectionNotExists,
        missing,
        "DropPartition(nope, _default)",
    );
    assert_error_msg(
        &drop_partition(&mut client, "nosuch", "c1", "_default").await,
        800,
        UnexpectedError,
        "database not found[database=nosuch]",
        "DropPartition(db=nosuch, c1, _default)",
    );
    assert_error_msg(
        &create_partition(&mut client, "nosuch", "c1", "p$").await,
        800,
        UnexpectedError,
        "database not found[database=nosuch]",
        "CreatePartition(db=nosuch, c1, p$)",
    );
    // With the collection present, the partition name decides.
    assert_error_msg(
        &create_partition(&mut client, "", "c1", &long).await,
        65535,
        UnexpectedError,
        &format!(
            "Invalid partition name: {long}. The length of a partition name must be less than 255 characters."
        ),
        "CreatePartition(c1, 256 x)",
    );
    assert_error_msg(
        &drop_partition(&mut client, "", "c1", "p$").await,
        65535,
        UnexpectedError,
        "Invalid partition name: p$. Partition name can only contain numbers, letters and underscores.",
        "DropPartition(c1, p$)",
    );
    assert_error_msg(
        &drop_partition(&mut client, "", "c1", "_default").await,
        65535,
        UnexpectedError,
        "default partition cannot be deleted",
        "DropPartition(c1, _default)",
    );
    // The server keeps serving: the collection still has only `_default`.
    let response = show_partitions(&mut client, "", "c1").await;
    assert_ok(response.status.as_ref().unwrap(), "ShowPartitions c1");
    assert_eq!(response.partition_names, ["_default"]);
}

/// A missing database answers 800 on HasPartition, ShowPartitions and DescribeCollection
/// (rootcoord's meta table looks the database up before the collection); the
/// DescribeCollection not-found reason is the proxy's 2.4+ text (`describeCollectionTask.Execute`).
#[tokio::test]
async fn a_missing_database_is_800_on_reads_that_name_a_collection() {
    let (_server, mut client) = server().await;
    create_database(&mut client, "db2").await;
    let not_found = "database not found[database=nosuch]";
    let has = client
        .has_partition(HasPartitionRequest {
            db_name: "nosuch".into(),
            collection_name: "c1".into(),
            partition_name: "_default".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        has.status.as_ref().unwrap(),
        800,
        UnexpectedError,
        not_found,
        "HasPartition",
    );
    let show = show_partitions(&mut client, "nosuch", "c1").await;
    assert_error_msg(
        show.status.as_ref().unwrap(),
        800,
        UnexpectedError,
        not_found,
        "ShowPartitions",
    );
    let describe = client
        .describe_collection(DescribeCollectionRequest {
            db_name: "nosuch".into(),
            collection_name: "c1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        describe.status.as_ref().unwrap(),
        800,
        UnexpectedError,
        not_found,
        "DescribeCollection",
    );
    // An existing database without the collection: 100 with the 2.4+ reason.
    let describe = client
        .describe_collection(DescribeCollectionRequest {
            db_name: "db2".into(),
            collection_name: "c1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error(
        describe.status.as_ref().unwrap(),
        100,
        UnexpectedError,
        "can't find collection[database=db2][collection=c1]",
        "collection not found[database=db2][collection=c1]",
        "DescribeCollection db2.c1",
    );
}
