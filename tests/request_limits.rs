//! Every size a CreateCollection / CreateDatabase / CreateIndex request carries is bounded:
//! against the real coordinator binary over real gRPC, each oversized or malformed
//! request gets its Milvus-style error, the process stays up and keeps serving, and
//! nothing of the refused request is stored. Limits and sources: `src/meta/schema.rs`.

mod common;

use std::time::{Duration, Instant};

use collection_operator::proto::api::*;
use collection_operator::proto::common::{ErrorCode, KeyValuePair, Status};
use collection_operator::proto::schema::{CollectionSchema, DataType, FieldSchema};
use common::{Client, Process, assert_error_msg, assert_ok, connect, free_port};
use prost::Message;

use ErrorCode::{IllegalArgument, UnexpectedError};

fn pair(key: &str, value: impl Into<String>) -> KeyValuePair {
    KeyValuePair {
        key: key.into(),
        value: value.into(),
    }
}

fn pk() -> FieldSchema {
    FieldSchema {
        name: "id".into(),
        data_type: DataType::Int64 as i32,
        is_primary_key: true,
        ..Default::default()
    }
}

fn vector(params: Vec<KeyValuePair>) -> FieldSchema {
    FieldSchema {
        name: "v".into(),
        data_type: DataType::FloatVector as i32,
        type_params: params,
        ..Default::default()
    }
}

fn array(capacity: &str) -> FieldSchema {
    FieldSchema {
        name: "arr".into(),
        data_type: DataType::Array as i32,
        element_type: DataType::Int64 as i32,
        type_params: vec![pair("max_capacity", capacity)],
        ..Default::default()
    }
}

fn schema(name: &str, fields: Vec<FieldSchema>) -> CollectionSchema {
    CollectionSchema {
        name: name.into(),
        fields,
        ..Default::default()
    }
}

fn request(name: &str, schema: CollectionSchema) -> CreateCollectionRequest {
    CreateCollectionRequest {
        collection_name: name.into(),
        schema: schema.encode_to_vec(),
        ..Default::default()
    }
}

fn plain(name: &str) -> CreateCollectionRequest {
    request(
        name,
        schema(name, vec![pk(), vector(vec![pair("dim", "8")])]),
    )
}

async fn create(client: &mut Client, request: CreateCollectionRequest) -> Status {
    client
        .create_collection(request)
        .await
        .expect("CreateCollection rpc")
        .into_inner()
}

async fn collections(client: &mut Client) -> Vec<String> {
    let response = client
        .show_collections(ShowCollectionsRequest::default())
        .await
        .expect("ShowCollections rpc")
        .into_inner();
    assert_ok(response.status.as_ref().unwrap(), "ShowCollections");
    let mut names = response.collection_names;
    names.sort();
    names
}

/// The process is alive and answers a small request within a bound.
async fn assert_serving(server: &mut Process, client: &mut Client, what: &str) {
    assert!(
        server.child.try_wait().expect("try_wait").is_none(),
        "{what}: the coordinator exited"
    );
    let started = Instant::now();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_version(GetVersionRequest::default()),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: GetVersion did not answer within 5 s"))
    .expect("GetVersion rpc");
    assert!(!response.into_inner().version.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5), "{what}");
}

#[tokio::test]
async fn oversized_and_malformed_requests_are_refused_and_the_server_keeps_serving() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut server = Process::start(data.path(), free_port());
    let mut client = connect(server.addr).await;

    let shards = "maximum shards's number should be limited to 16";
    let mut too_many_fields = vec![pk(), vector(vec![pair("dim", "8")])];
    too_many_fields.extend((0..63).map(|i| FieldSchema {
        name: format!("f{i}"),
        data_type: DataType::Int32 as i32,
        ..Default::default()
    }));
    let many_type_params: Vec<KeyValuePair> = std::iter::once(pair("dim", "8"))
        .chain((0..1_000_000).map(|i| pair(&format!("k{i}"), "x")))
        .collect();
    let mut described = schema("c", vec![pk(), vector(vec![pair("dim", "8")])]);
    described.description = "d".repeat(100 * 1024);
    let cases: Vec<(&str, CreateCollectionRequest, i32, ErrorCode, String)> = vec![
        (
            "shards 2^31-1",
            CreateCollectionRequest {
                shards_num: i32::MAX,
                ..plain("c")
            },
            65535,
            UnexpectedError,
            shards.into(),
        ),
        (
            "shards 17",
            CreateCollectionRequest {
                shards_num: 17,
                ..plain("c")
            },
            65535,
            UnexpectedError,
            shards.into(),
        ),
        (
            "65 fields",
            request("c", schema("c", too_many_fields)),
            65535,
            UnexpectedError,
            "maximum field's number should be limited to 64".into(),
        ),
        (
            "two dim params",
            request(
                "c",
                schema(
                    "c",
                    vec![pk(), vector(vec![pair("dim", "8"), pair("dim", "99999")])],
                ),
            ),
            1100,
            IllegalArgument,
            "duplicated type param key dim in field v: invalid parameter".into(),
        ),
        (
            "1M type params",
            request("c", schema("c", vec![pk(), vector(many_type_params)])),
            1100,
            IllegalArgument,
            "field v has 1000001 type params, at most 16 are allowed: invalid parameter".into(),
        ),
        (
            "dim with spaces",
            request("c", schema("c", vec![pk(), vector(vec![pair("dim", " 8 ")])])),
            65535,
            UnexpectedError,
            "strconv.ParseInt: parsing \" 8 \": invalid syntax".into(),
        ),
        (
            "dim out of range",
            request(
                "c",
                schema(
                    "c",
                    vec![pk(), vector(vec![pair("dim", "99999999999999999999")])],
                ),
            ),
            65535,
            UnexpectedError,
            "strconv.ParseInt: parsing \"99999999999999999999\": value out of range".into(),
        ),
        (
            "negative max_capacity",
            request(
                "c",
                schema("c", vec![pk(), vector(vec![pair("dim", "8")]), array("-1")]),
            ),
            65535,
            UnexpectedError,
            "the maximum capacity specified for a Array should be in (0, 4096]".into(),
        ),
        (
            "max_capacity not an integer",
            request(
                "c",
                schema("c", vec![pk(), vector(vec![pair("dim", "8")]), array("x")]),
            ),
            65535,
            UnexpectedError,
            "the value for max_capacity of field arr must be an integer".into(),
        ),
        (
            "unknown consistency level",
            CreateCollectionRequest {
                consistency_level: 99,
                ..plain("c")
            },
            1100,
            IllegalArgument,
            "invalid consistency level: 99, should be in range 0 ~ 4: invalid parameter".into(),
        ),
        (
            "65 properties",
            CreateCollectionRequest {
                properties: (0..65).map(|i| pair(&format!("p{i}"), "v")).collect(),
                ..plain("c")
            },
            1100,
            IllegalArgument,
            "collection properties: 65 pairs exceed the limit of 64: invalid parameter".into(),
        ),
        (
            "one 50 MB property",
            CreateCollectionRequest {
                properties: vec![pair("big", "x".repeat(50 << 20))],
                ..plain("c")
            },
            1100,
            IllegalArgument,
            format!(
                "collection properties: a key or value of {} bytes exceeds the limit of 65536 bytes: invalid parameter",
                50 << 20
            ),
        ),
        (
            "100 KiB description",
            request("c", described),
            1100,
            IllegalArgument,
            "the description of collection c is 102400 bytes, at most 65536 are allowed: invalid parameter".into(),
        ),
    ];
    for (what, request, code, legacy, message) in cases {
        let status = create(&mut client, request).await;
        assert_error_msg(&status, code, legacy, &message, what);
        assert_serving(&mut server, &mut client, what).await;
    }

    // A 20 MB name: refused, and the reason echoes at most 4 KiB of it.
    let huge = "a".repeat(20 << 20);
    let full = format!(
        "Invalid collection name: {huge}. the length of a collection name must be less than 255 characters: invalid parameter"
    );
    let status = create(&mut client, plain(&huge)).await;
    assert_eq!(status.code, 1100, "20 MB name");
    assert!(
        status
            .reason
            .starts_with(&format!("Invalid collection name: {}", &huge[..1000])),
        "20 MB name: reason starts with the name"
    );
    assert!(
        status
            .reason
            .ends_with(&format!("... ({} bytes, truncated)", full.len())),
        "20 MB name: {}",
        &status.reason[status.reason.len() - 60..]
    );
    assert!(status.reason.len() < 4200, "{}", status.reason.len());
    assert_serving(&mut server, &mut client, "20 MB name").await;

    // Databases and indexes: the same property bounds.
    let status = client
        .create_database(CreateDatabaseRequest {
            db_name: "db1".into(),
            properties: (0..65).map(|i| pair(&format!("p{i}"), "v")).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        1100,
        IllegalArgument,
        "database properties: 65 pairs exceed the limit of 64: invalid parameter",
        "CreateDatabase with 65 properties",
    );

    // Nothing refused was stored; the limits themselves are accepted.
    assert!(collections(&mut client).await.is_empty());
    assert_ok(
        &create(
            &mut client,
            CreateCollectionRequest {
                shards_num: 16,
                consistency_level: 4,
                properties: (0..64).map(|i| pair(&format!("p{i}"), "v")).collect(),
                ..plain("c")
            },
        )
        .await,
        "16 shards, 64 properties",
    );
    let status = client
        .create_index(CreateIndexRequest {
            collection_name: "c".into(),
            field_name: "v".into(),
            extra_params: (0..65).map(|i| pair(&format!("p{i}"), "v")).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        1100,
        IllegalArgument,
        "index params: 65 pairs exceed the limit of 64: invalid parameter",
        "CreateIndex with 65 params",
    );
    let described = client
        .describe_collection(DescribeCollectionRequest {
            collection_name: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(described.status.as_ref().unwrap(), "DescribeCollection c");
    assert_eq!(described.shards_num, 16);
    assert_eq!(described.virtual_channel_names.len(), 16);
    assert_eq!(described.properties.len(), 64);
    assert_eq!(collections(&mut client).await, ["c"]);
    assert_serving(&mut server, &mut client, "end").await;
    server.kill9();
}
