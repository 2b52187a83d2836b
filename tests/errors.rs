//! Every error template the coordinator answers, over real gRPC on loopback, with the exact
//! `code`, legacy `error_code`, `reason` and `detail` (milvus-compat.md §1.5, §2.1, §2.5,
//! §2.7), plus the transport-level failures: undecodable requests (non-UTF-8 strings) and
//! RPCs the server does not declare.

mod common;

use collection_operator::proto::api::*;
use collection_operator::proto::common::{ErrorCode, KeyValuePair, Status};
use collection_operator::proto::schema::{CollectionSchema, DataType, FieldSchema};
use common::{
    Client, InProcess, assert_error, assert_error_msg, assert_ok, create_alias_in,
    create_collection_in, create_database, schema_with_dim, valid_schema, with_db,
};
use prost::Message;

use ErrorCode::{CollectionNotExists, IllegalArgument, IndexNotExist, MetaFailed, UnexpectedError};

async fn server() -> (InProcess, Client) {
    let server = InProcess::start().await;
    let client = server.client().await;
    (server, client)
}

async fn create_collection_raw(client: &mut Client, name: &str, schema: Vec<u8>) -> Status {
    client
        .create_collection(CreateCollectionRequest {
            collection_name: name.into(),
            schema,
            ..Default::default()
        })
        .await
        .expect("CreateCollection rpc")
        .into_inner()
}

async fn has_collection(client: &mut Client, name: &str) -> bool {
    let response = client
        .has_collection(HasCollectionRequest {
            collection_name: name.into(),
            ..Default::default()
        })
        .await
        .expect("HasCollection rpc")
        .into_inner();
    assert_ok(response.status.as_ref().unwrap(), "HasCollection");
    response.value
}

async fn show_collections(client: &mut Client) -> Vec<String> {
    let response = client
        .show_collections(ShowCollectionsRequest::default())
        .await
        .expect("ShowCollections rpc")
        .into_inner();
    assert_ok(response.status.as_ref().unwrap(), "ShowCollections");
    response.collection_names
}

async fn show_databases(client: &mut Client) -> Vec<String> {
    let response = client
        .list_databases(ListDatabasesRequest::default())
        .await
        .expect("ListDatabases rpc")
        .into_inner();
    assert_ok(response.status.as_ref().unwrap(), "ListDatabases");
    response.db_names
}

// ---- §2.1 name validation: collection names and aliases (1100) ----

/// Invalid collection-level names with the text after `Invalid collection <word>: <name>.`
/// (or the whole message for the empty name).
fn invalid_names(word: &str) -> Vec<(String, String)> {
    let long = "a".repeat(256);
    let first =
        format!("the first character of a collection {word} must be an underscore or letter");
    let chars = format!("collection {word} can only contain numbers, letters and underscores");
    let mut cases = vec![(
        String::new(),
        format!("collection {word} should not be empty: invalid parameter"),
    )];
    for (name, why) in [
        (
            long.as_str(),
            format!("the length of a collection {word} must be less than 255 characters"),
        ),
        ("1bad", first.clone()),
        ("12-s", first.clone()),
        ("$x", first.clone()),
        ("中文", first.clone()),
        ("a b", chars.clone()),
        ("a-b", chars.clone()),
        ("_x$1", chars.clone()),
        ("(mn)", first.clone()),
        ("a中", chars.clone()),
        ("é", first.clone()),
    ] {
        cases.push((
            name.to_string(),
            format!("Invalid collection {word}: {name}. {why}: invalid parameter"),
        ));
    }
    cases
}

#[tokio::test]
async fn collection_name_validation_on_every_rpc_that_checks_it() {
    let (_server, mut client) = server().await;
    create_collection_in(&mut client, "", "A").await;
    for (name, message) in invalid_names("name") {
        let what = |rpc: &str| format!("{rpc} with collection name {name:?}");
        let status = create_collection_raw(&mut client, &name, valid_schema(&name)).await;
        assert_error_msg(
            &status,
            1100,
            IllegalArgument,
            &message,
            &what("CreateCollection"),
        );

        let status = client
            .drop_collection(DropCollectionRequest {
                collection_name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            1100,
            IllegalArgument,
            &message,
            &what("DropCollection"),
        );

        let response = client
            .has_collection(HasCollectionRequest {
                collection_name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            response.status.as_ref().unwrap(),
            1100,
            IllegalArgument,
            &message,
            &what("HasCollection"),
        );
        assert!(!response.value);

        let status = client
            .create_alias(CreateAliasRequest {
                collection_name: name.clone(),
                alias: "ok_alias".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            1100,
            IllegalArgument,
            &message,
            &what("CreateAlias"),
        );

        let status = client
            .alter_alias(AlterAliasRequest {
                collection_name: name.clone(),
                alias: "ok_alias".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            1100,
            IllegalArgument,
            &message,
            &what("AlterAlias"),
        );

        let status = client
            .create_partition(CreatePartitionRequest {
                collection_name: name.clone(),
                partition_name: "p".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            1100,
            IllegalArgument,
            &message,
            &what("CreatePartition"),
        );

        if !name.is_empty() {
            // An empty collection name lists the whole database; any other is checked.
            let response = client
                .list_aliases(ListAliasesRequest {
                    collection_name: name.clone(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_error_msg(
                response.status.as_ref().unwrap(),
                1100,
                IllegalArgument,
                &message,
                &what("ListAliases"),
            );
        }
    }
    assert_eq!(show_collections(&mut client).await, ["A"]);
    assert!(
        client
            .list_aliases(ListAliasesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .aliases
            .is_empty()
    );
}

#[tokio::test]
async fn collection_name_of_255_bytes_is_accepted() {
    let (_server, mut client) = server().await;
    let name = "c".repeat(255);
    let status = create_collection_raw(&mut client, &name, valid_schema(&name)).await;
    assert_ok(&status, "CreateCollection with a 255-byte name");
    assert!(has_collection(&mut client, &name).await);
    let name = format!("_{}", "9".repeat(254));
    let status = create_collection_raw(&mut client, &name, valid_schema(&name)).await;
    assert_ok(&status, "CreateCollection _999…");
    assert_eq!(show_collections(&mut client).await.len(), 2);
}

#[tokio::test]
async fn alias_validation_on_every_alias_rpc() {
    let (_server, mut client) = server().await;
    create_collection_in(&mut client, "", "A").await;
    for (alias, message) in invalid_names("alias") {
        let what = |rpc: &str| format!("{rpc} with alias {alias:?}");
        let status = client
            .create_alias(CreateAliasRequest {
                collection_name: "A".into(),
                alias: alias.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            1100,
            IllegalArgument,
            &message,
            &what("CreateAlias"),
        );

        // The alias is checked before the collection name (proxy PreExecute order).
        let status = client
            .create_alias(CreateAliasRequest {
                collection_name: "1bad".into(),
                alias: alias.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            1100,
            IllegalArgument,
            &message,
            &what("CreateAlias (bad collection too)"),
        );

        let status = client
            .alter_alias(AlterAliasRequest {
                collection_name: "A".into(),
                alias: alias.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            1100,
            IllegalArgument,
            &message,
            &what("AlterAlias"),
        );

        let status = client
            .drop_alias(DropAliasRequest {
                alias: alias.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(&status, 1100, IllegalArgument, &message, &what("DropAlias"));

        let response = client
            .describe_alias(DescribeAliasRequest {
                alias: alias.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            response.status.as_ref().unwrap(),
            1100,
            IllegalArgument,
            &message,
            &what("DescribeAlias"),
        );
    }
    let listed = client
        .list_aliases(ListAliasesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.aliases.is_empty(), "{listed:?}");

    // 255 bytes are accepted.
    let alias = "z".repeat(255);
    create_alias_in(&mut client, "", &alias, "A").await;
    let described = client
        .describe_alias(DescribeAliasRequest {
            alias: alias.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(described.status.as_ref().unwrap(), "DescribeAlias z*255");
    assert_eq!(described.collection, "A");
}

// ---- §2.1 database names (802) ----

#[tokio::test]
async fn database_name_validation_is_802() {
    let (_server, mut client) = server().await;
    let long = "d".repeat(256);
    let cases = [
        ("", "database name couldn't be empty"),
        (
            long.as_str(),
            "the length of a database name must be less than 255 characters",
        ),
        (
            "1bad",
            "the first character of a database name must be an underscore or letter",
        ),
        (
            "数据",
            "the first character of a database name must be an underscore or letter",
        ),
        (
            "a-b",
            "database name can only contain numbers, letters and underscores",
        ),
        (
            "a b",
            "database name can only contain numbers, letters and underscores",
        ),
        (
            "db$",
            "database name can only contain numbers, letters and underscores",
        ),
        (
            "d中",
            "database name can only contain numbers, letters and underscores",
        ),
    ];
    for (name, why) in cases {
        let message = format!("{why}: invalid database name[database={name}]");
        let status = client
            .create_database(CreateDatabaseRequest {
                db_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            802,
            UnexpectedError,
            &message,
            &format!("CreateDatabase {name:?}"),
        );
        let status = client
            .drop_database(DropDatabaseRequest {
                db_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            802,
            UnexpectedError,
            &message,
            &format!("DropDatabase {name:?}"),
        );
    }
    assert_eq!(show_databases(&mut client).await, ["default"]);
    let name = "d".repeat(255);
    create_database(&mut client, &name).await;
    assert_eq!(
        show_databases(&mut client).await,
        ["default", name.as_str()]
    );
}

// ---- §2.5 database errors (65535) ----

#[tokio::test]
async fn database_errors() {
    let (_server, mut client) = server().await;
    create_database(&mut client, "db2").await;
    for name in ["db2", "default"] {
        let status = client
            .create_database(CreateDatabaseRequest {
                db_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_error_msg(
            &status,
            65535,
            UnexpectedError,
            &format!("database already exist: {name}"),
            &format!("CreateDatabase existing {name}"),
        );
    }

    let drop = |name: &str| DropDatabaseRequest {
        db_name: name.into(),
        ..Default::default()
    };
    let status = client
        .drop_database(drop("default"))
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "can not drop default database",
        "DropDatabase default",
    );

    create_collection_in(&mut client, "db2", "c").await;
    let status = client
        .drop_database(drop("db2"))
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "database:db2 not empty, must drop all collections before drop database",
        "DropDatabase non-empty db2",
    );
    assert_eq!(show_databases(&mut client).await, ["default", "db2"]);

    // Missing database: success; then the emptied database drops.
    let status = client
        .drop_database(drop("missing"))
        .await
        .unwrap()
        .into_inner();
    assert_ok(&status, "DropDatabase missing");
    let status = client
        .drop_collection(DropCollectionRequest {
            db_name: "db2".into(),
            collection_name: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(&status, "DropCollection db2.c");
    let status = client
        .drop_database(drop("db2"))
        .await
        .unwrap()
        .into_inner();
    assert_ok(&status, "DropDatabase emptied db2");
    assert_eq!(show_databases(&mut client).await, ["default"]);
    // Its name can be created again.
    create_database(&mut client, "db2").await;

    // DescribeDatabase / Connect of an unknown database: 800.
    let response = client
        .describe_database(DescribeDatabaseRequest {
            db_name: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        response.status.as_ref().unwrap(),
        800,
        UnexpectedError,
        "database not found[database=missing]",
        "DescribeDatabase missing",
    );
    let response = client
        .connect(with_db(ConnectRequest::default(), "missing"))
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        response.status.as_ref().unwrap(),
        800,
        UnexpectedError,
        "database not found[database=missing]",
        "Connect with dbname=missing",
    );
}

#[tokio::test]
async fn database_limit_is_801() {
    let (server, mut client) = server().await;
    // `default` plus 63 more reach rootCoord.maxDatabaseNum = 64. Concurrent, so that the
    // writer commits them in a few batches.
    let mut tasks = Vec::new();
    for i in 0..63 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            create_database(&mut client, &format!("db_{i}")).await;
        }));
    }
    for task in tasks {
        task.await.expect("create task");
    }
    let status = client
        .create_database(CreateDatabaseRequest {
            db_name: "one_too_many".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        801,
        UnexpectedError,
        "exceeded the limit number of database[limit=64]",
        "CreateDatabase #65",
    );
    assert_eq!(show_databases(&mut client).await.len(), 64);
}

// ---- §2.7 invalid schemas ----

fn field(name: &str, data_type: DataType, pk: bool, params: &[(&str, &str)]) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type: data_type as i32,
        is_primary_key: pk,
        type_params: params
            .iter()
            .map(|(key, value)| KeyValuePair {
                key: (*key).into(),
                value: (*value).into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn pk() -> FieldSchema {
    field("id", DataType::Int64, true, &[])
}

fn vector() -> FieldSchema {
    field("v", DataType::FloatVector, false, &[("dim", "8")])
}

fn schema(name: &str, fields: Vec<FieldSchema>) -> Vec<u8> {
    CollectionSchema {
        name: name.into(),
        fields,
        ..Default::default()
    }
    .encode_to_vec()
}

/// `(what, schema bytes for collection "c", code, exact message)`.
fn invalid_schemas() -> Vec<(&'static str, Vec<u8>, i32, String)> {
    let unexpected = |text: &str| (65535, text.to_string());
    let mut cases: Vec<(&'static str, Vec<u8>, (i32, String))> = vec![
        // The cases the reference names.
        (
            "no primary key",
            schema("c", vec![vector()]),
            unexpected("primary key is not specified"),
        ),
        (
            "two primary keys",
            schema(
                "c",
                vec![
                    field("a", DataType::Int64, true, &[]),
                    field("b", DataType::Int64, true, &[]),
                    vector(),
                ],
            ),
            unexpected("there are more than one primary key, field name = a, b"),
        ),
        (
            "vector without dim",
            schema(
                "c",
                vec![pk(), field("v", DataType::FloatVector, false, &[])],
            ),
            unexpected(
                "dimension is not defined in field type params of field v, check type param `dim` for vector field",
            ),
        ),
        (
            "unknown data type 999",
            schema(
                "c",
                vec![
                    pk(),
                    FieldSchema {
                        name: "x".into(),
                        data_type: 999,
                        ..Default::default()
                    },
                ],
            ),
            unexpected("invalid data type: 999"),
        ),
        (
            "empty schema bytes",
            Vec::new(),
            (
                1100,
                "collection name should not be empty: invalid parameter".into(),
            ),
        ),
        (
            "schema name differs from collection name",
            schema("other_name", vec![pk(), vector()]),
            (
                1100,
                "collection name = c, schema.Name=other_name: invalid parameter[expected=collection name matches schema name][actual=don't match]".into(),
            ),
        ),
        // Further templates of the server's schema checks.
        (
            "invalid schema name",
            schema("1bad", vec![pk(), vector()]),
            (
                1100,
                "Invalid collection name: 1bad. the first character of a collection name must be an underscore or letter: invalid parameter".into(),
            ),
        ),
        (
            "no fields",
            schema("c", vec![]),
            unexpected("schema does not contain any field"),
        ),
        (
            "65 fields",
            schema(
                "c",
                std::iter::once(pk())
                    .chain((0..64).map(|i| field(&format!("f{i}"), DataType::Int32, false, &[])))
                    .collect(),
            ),
            unexpected("maximum field's number should be limited to 64"),
        ),
        (
            "duplicate field name",
            schema(
                "c",
                vec![pk(), vector(), field("v", DataType::Int32, false, &[])],
            ),
            unexpected("duplicated field name v found"),
        ),
        (
            "empty field name",
            schema("c", vec![pk(), field("", DataType::Int32, false, &[])]),
            (
                1700,
                "field name should not be empty: field name invalid[field=]".into(),
            ),
        ),
        (
            "field name starting with a digit",
            schema("c", vec![pk(), field("1x", DataType::Int32, false, &[])]),
            (
                1700,
                "Invalid field name: 1x. The first character of a field name must be an underscore or letter.: field name invalid[field=1x]".into(),
            ),
        ),
        (
            "field name with a dash",
            schema("c", vec![pk(), field("a-b", DataType::Int32, false, &[])]),
            (
                1700,
                "Invalid field name: a-b. Field name can only contain numbers, letters, and underscores.: field name invalid[field=a-b]".into(),
            ),
        ),
        (
            "data type None",
            schema("c", vec![pk(), field("x", DataType::None, false, &[])]),
            unexpected("data type None is not valid"),
        ),
        (
            "data type String",
            schema("c", vec![pk(), field("x", DataType::String, false, &[])]),
            unexpected("string data type not supported yet, please use VarChar type instead"),
        ),
        (
            "dim not a number",
            schema(
                "c",
                vec![pk(), field("v", DataType::FloatVector, false, &[("dim", "x")])],
            ),
            unexpected("strconv.ParseInt: parsing \"x\": invalid syntax"),
        ),
        (
            "dim 1",
            schema(
                "c",
                vec![pk(), field("v", DataType::FloatVector, false, &[("dim", "1")])],
            ),
            unexpected("invalid dimension: 1. should be in range 2 ~ 32768"),
        ),
        (
            "float dim too large",
            schema(
                "c",
                vec![
                    pk(),
                    field("v", DataType::FloatVector, false, &[("dim", "32769")]),
                ],
            ),
            unexpected(
                "invalid dimension: 32769 of field v. float vector dimension should be in range 2 ~ 32768",
            ),
        ),
        (
            "binary dim not a multiple of 8",
            schema(
                "c",
                vec![pk(), field("v", DataType::BinaryVector, false, &[("dim", "12")])],
            ),
            unexpected(
                "invalid dimension: 12 of field v. binary vector dimension should be multiple of 8. ",
            ),
        ),
        (
            "binary dim too large",
            schema(
                "c",
                vec![
                    pk(),
                    field("v", DataType::BinaryVector, false, &[("dim", "262152")]),
                ],
            ),
            unexpected(
                "invalid dimension: 262152 of field v. binary vector dimension should be in range 2 ~ 262144",
            ),
        ),
        (
            "sparse vector with dim",
            schema(
                "c",
                vec![
                    pk(),
                    field("sv", DataType::SparseFloatVector, false, &[("dim", "8")]),
                ],
            ),
            unexpected("dim should not be specified for sparse vector field sv(0)"),
        ),
        (
            "varchar without max_length",
            schema("c", vec![pk(), field("s", DataType::VarChar, false, &[])]),
            unexpected(
                "type param(max_length) should be specified for varChar field(s) of collection c",
            ),
        ),
        (
            "varchar max_length 0",
            schema(
                "c",
                vec![pk(), field("s", DataType::VarChar, false, &[("max_length", "0")])],
            ),
            (
                1100,
                "the maximum length specified for a VarChar field(s) should be in (0, 65535], but got 0 instead: invalid parameter".into(),
            ),
        ),
        (
            "array without element type",
            schema(
                "c",
                vec![pk(), field("arr", DataType::Array, false, &[("max_capacity", "4")])],
            ),
            unexpected("element data type None is not valid"),
        ),
        (
            "array of JSON",
            schema(
                "c",
                vec![
                    pk(),
                    FieldSchema {
                        element_type: DataType::Json as i32,
                        ..field("arr", DataType::Array, false, &[("max_capacity", "4")])
                    },
                ],
            ),
            unexpected("element type JSON is not supported"),
        ),
        (
            "array without max_capacity",
            schema(
                "c",
                vec![
                    pk(),
                    FieldSchema {
                        element_type: DataType::Int64 as i32,
                        ..field("arr", DataType::Array, false, &[])
                    },
                ],
            ),
            unexpected(
                "type param(max_capacity) should be specified for array field arr of collection c",
            ),
        ),
        (
            "explicit dynamic field",
            schema(
                "c",
                vec![
                    pk(),
                    FieldSchema {
                        is_dynamic: true,
                        ..field("meta", DataType::Json, false, &[])
                    },
                ],
            ),
            unexpected("cannot explicitly set a field as a dynamic field"),
        ),
        (
            "float primary key",
            schema("c", vec![field("id", DataType::Float, true, &[]), vector()]),
            unexpected("the data type of primary key should be Int64 or VarChar"),
        ),
        (
            "auto id on a non-primary field",
            schema(
                "c",
                vec![
                    pk(),
                    FieldSchema {
                        auto_id: true,
                        ..field("x", DataType::Int64, false, &[])
                    },
                ],
            ),
            unexpected("only primary field can speficy AutoID with true, field name = x"),
        ),
    ];
    cases
        .drain(..)
        .map(|(what, bytes, (code, message))| (what, bytes, code, message))
        .collect()
}

#[tokio::test]
async fn invalid_schemas_are_refused() {
    let (_server, mut client) = server().await;
    for (what, bytes, code, message) in invalid_schemas() {
        let status = create_collection_raw(&mut client, "c", bytes).await;
        let legacy = if code == 1100 {
            IllegalArgument
        } else {
            UnexpectedError
        };
        assert_error_msg(&status, code, legacy, &message, what);
    }
    assert!(show_collections(&mut client).await.is_empty());
}

#[tokio::test]
async fn undecodable_schema_bytes_are_65535() {
    let (_server, mut client) = server().await;
    // A truncated varint, and a schema whose name is not UTF-8.
    let bad_utf8 = {
        let mut bytes = vec![0x0a, 0x02, 0xff, 0xfe];
        bytes.extend(schema("", vec![pk(), vector()]));
        bytes
    };
    for (what, bytes) in [
        ("0xff 0xff 0xff", vec![0xff, 0xff, 0xff]),
        ("non-UTF-8 name", bad_utf8),
    ] {
        let status = create_collection_raw(&mut client, "c", bytes).await;
        assert_eq!(status.code, 65535, "{what}: {status:?}");
        let legacy = status.error_code;
        assert_eq!(legacy, UnexpectedError as i32, "{what}");
        assert!(
            status
                .reason
                .starts_with("failed to unmarshal collection schema: "),
            "{what}: {}",
            status.reason
        );
        assert!(
            status.reason.len() > "failed to unmarshal collection schema: ".len(),
            "{what}: the decoder's error follows"
        );
        assert_eq!(status.detail, status.reason, "{what}");
        assert!(!status.retriable);
    }
    assert!(show_collections(&mut client).await.is_empty());
}

// ---- §2.7 CreateCollection idempotency ----

#[tokio::test]
async fn create_collection_is_idempotent_for_the_same_schema_only() {
    let (_server, mut client) = server().await;
    assert_ok(
        &create_collection_raw(&mut client, "C", schema_with_dim("C", 8)).await,
        "first CreateCollection",
    );
    let first = client
        .describe_collection(DescribeCollectionRequest {
            collection_name: "C".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(
        &create_collection_raw(&mut client, "C", schema_with_dim("C", 8)).await,
        "same schema again",
    );
    for (what, bytes) in [
        ("other dim", schema_with_dim("C", 16)),
        (
            "extra field",
            schema(
                "C",
                vec![pk(), vector(), field("x", DataType::Int32, false, &[])],
            ),
        ),
    ] {
        let status = create_collection_raw(&mut client, "C", bytes).await;
        assert_error_msg(
            &status,
            65535,
            UnexpectedError,
            "create duplicate collection with different parameters, collection: C",
            what,
        );
    }
    // Different shards_num is a different parameter too.
    let status = client
        .create_collection(CreateCollectionRequest {
            collection_name: "C".into(),
            schema: schema_with_dim("C", 8),
            shards_num: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "create duplicate collection with different parameters, collection: C",
        "other shards_num",
    );
    let after = client
        .describe_collection(DescribeCollectionRequest {
            collection_name: "C".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.collection_id, first.collection_id);
    assert_eq!(after.schema, first.schema);
    assert_eq!(after.shards_num, 1, "shards_num 0 is stored as 1");
    let field_ids: Vec<i64> = after
        .schema
        .as_ref()
        .unwrap()
        .fields
        .iter()
        .map(|f| f.field_id)
        .collect();
    assert_eq!(field_ids, [100, 101], "field IDs start at 100");
    assert_eq!(after.virtual_channel_names.len(), 1);
    let vchannel = &after.virtual_channel_names[0];
    assert!(
        vchannel.starts_with("by-dev-rootcoord-dml_")
            && vchannel.ends_with(&format!("_{}v0", after.collection_id)),
        "vchannel by-dev-rootcoord-dml_<n>_<collID>v0: {vchannel}"
    );
    assert_eq!(show_collections(&mut client).await, ["C"]);
}

// ---- §1.5 / §2.7 DescribeCollection of a missing collection (2.4+ reason text) ----

#[tokio::test]
async fn describe_missing_collection_reason_detail_and_legacy_code() {
    let (_server, mut client) = server().await;
    create_database(&mut client, "db2").await;
    for (db, shown_db) in [("", "default"), ("default", "default"), ("db2", "db2")] {
        let response = client
            .describe_collection(DescribeCollectionRequest {
                db_name: db.into(),
                collection_name: "X".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let detail = format!("collection not found[database={shown_db}][collection=X]");
        assert_error(
            response.status.as_ref().unwrap(),
            100,
            UnexpectedError,
            &format!("can't find collection[database={shown_db}][collection=X]"),
            &detail,
            &format!("DescribeCollection {db:?}.X"),
        );
        assert!(response.schema.is_none());
        assert_eq!(response.collection_id, 0);
    }
    // By a collection ID that does not exist.
    let response = client
        .describe_collection(DescribeCollectionRequest {
            collection_id: 987_654,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let detail = "collection not found[database=default][collection=987654]";
    assert_error(
        response.status.as_ref().unwrap(),
        100,
        UnexpectedError,
        "can't find collection[database=default][collection=987654]",
        detail,
        "DescribeCollection by missing ID",
    );
    // HasCollection of a missing collection: success, false (§2.7).
    assert!(!has_collection(&mut client, "X").await);
}

// ---- §2.7 partitions ----

async fn partition_status(
    client: &mut Client,
    create: bool,
    collection: &str,
    partition: &str,
) -> Status {
    if create {
        client
            .create_partition(CreatePartitionRequest {
                collection_name: collection.into(),
                partition_name: partition.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    } else {
        client
            .drop_partition(DropPartitionRequest {
                collection_name: collection.into(),
                partition_name: partition.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }
}

async fn partitions(client: &mut Client, collection: &str) -> Vec<String> {
    let response = client
        .show_partitions(ShowPartitionsRequest {
            collection_name: collection.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(response.status.as_ref().unwrap(), "ShowPartitions");
    response.partition_names
}

#[tokio::test]
async fn partition_errors_and_idempotency() {
    let (_server, mut client) = server().await;
    create_collection_in(&mut client, "", "c").await;

    let status = partition_status(&mut client, false, "c", "_default").await;
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "default partition cannot be deleted",
        "DropPartition _default",
    );

    for attempt in 0..2 {
        let status = partition_status(&mut client, true, "c", "p").await;
        assert_ok(&status, &format!("CreatePartition p #{attempt}"));
    }
    assert_ok(
        &partition_status(&mut client, true, "c", "_default").await,
        "CreatePartition _default (exists)",
    );
    assert_eq!(partitions(&mut client, "c").await, ["_default", "p"]);

    assert_ok(
        &partition_status(&mut client, false, "c", "missing").await,
        "DropPartition missing",
    );
    let has = client
        .has_partition(HasPartitionRequest {
            collection_name: "c".into(),
            partition_name: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_ok(has.status.as_ref().unwrap(), "HasPartition missing");
    assert!(!has.value);
    assert_ok(
        &partition_status(&mut client, false, "c", "p").await,
        "DropPartition p",
    );
    assert_ok(
        &partition_status(&mut client, false, "c", "p").await,
        "DropPartition p again",
    );
    assert_eq!(partitions(&mut client, "c").await, ["_default"]);

    // On a missing collection.
    let missing = "collection not found[database=default][collection=X]";
    for create in [true, false] {
        let status = partition_status(&mut client, create, "X", "p").await;
        assert_error_msg(
            &status,
            100,
            CollectionNotExists,
            missing,
            &format!(
                "{} partition on missing X",
                if create { "Create" } else { "Drop" }
            ),
        );
    }
    let has = client
        .has_partition(HasPartitionRequest {
            collection_name: "X".into(),
            partition_name: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        has.status.as_ref().unwrap(),
        100,
        CollectionNotExists,
        missing,
        "HasPartition on missing X",
    );
    let shown = client
        .show_partitions(ShowPartitionsRequest {
            collection_name: "X".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        shown.status.as_ref().unwrap(),
        100,
        CollectionNotExists,
        missing,
        "ShowPartitions on missing X",
    );

    // ShowPartitions naming a missing partition: 200.
    let shown = client
        .show_partitions(ShowPartitionsRequest {
            collection_name: "c".into(),
            partition_names: vec!["_default".into(), "nope".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        shown.status.as_ref().unwrap(),
        200,
        MetaFailed,
        "partition not found[partition=nope]",
        "ShowPartitions of a missing partition",
    );
}

#[tokio::test]
async fn partition_name_validation_is_65535() {
    let (_server, mut client) = server().await;
    create_collection_in(&mut client, "", "c").await;
    let long = "p".repeat(256);
    let cases = [
        ("", "Partition name should not be empty."),
        (
            long.as_str(),
            "The length of a partition name must be less than 255 characters.",
        ),
        (
            "-p",
            "The first character of a partition name must be an underscore or letter.",
        ),
        (
            "中",
            "The first character of a partition name must be an underscore or letter.",
        ),
        (
            "a b",
            "Partition name can only contain numbers, letters and underscores.",
        ),
        (
            "p$",
            "Partition name can only contain numbers, letters and underscores.",
        ),
    ];
    for (name, why) in cases {
        let message = format!("Invalid partition name: {name}. {why}");
        for create in [true, false] {
            let status = partition_status(&mut client, create, "c", name).await;
            assert_error_msg(
                &status,
                65535,
                UnexpectedError,
                &message,
                &format!("partition {name:?} (create: {create})"),
            );
        }
    }
    // Digits first and dashes are allowed for partitions (not for collections).
    assert_ok(
        &partition_status(&mut client, true, "c", "2024-01").await,
        "CreatePartition 2024-01",
    );
    assert_eq!(partitions(&mut client, "c").await, ["_default", "2024-01"]);
}

#[tokio::test]
async fn partition_limit_is_65535() {
    let (server, mut client) = server().await;
    create_collection_in(&mut client, "", "c").await;
    let id = client
        .describe_collection(DescribeCollectionRequest {
            collection_name: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .collection_id;
    // `_default` plus 1023 reach rootCoord.maxPartitionNum = 1024; sent concurrently so the
    // writer commits them in batches.
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let mut client = server.client().await;
        tasks.push(tokio::spawn(async move {
            for i in (worker..1023).step_by(8) {
                let status = partition_status(&mut client, true, "c", &format!("p{i}")).await;
                assert_ok(&status, &format!("CreatePartition p{i}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("partition task");
    }
    let status = partition_status(&mut client, true, "c", "overflow").await;
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        &format!(
            "partition number (1024) exceeds max configuration (1024), collection: c, id: {id}"
        ),
        "CreatePartition #1025",
    );
    assert_eq!(partitions(&mut client, "c").await.len(), 1024);
}

// ---- index / load metadata templates ----

#[tokio::test]
async fn index_and_load_errors() {
    let (_server, mut client) = server().await;
    create_collection_in(&mut client, "", "c").await;
    let id = client
        .describe_collection(DescribeCollectionRequest {
            collection_name: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .collection_id;

    let describe_index = client
        .describe_index(DescribeIndexRequest {
            collection_name: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        describe_index.status.as_ref().unwrap(),
        700,
        IndexNotExist,
        "index not found[collection=c]",
        "DescribeIndex without index",
    );

    let create_index = |field: &str, metric: &str| CreateIndexRequest {
        collection_name: "c".into(),
        field_name: field.into(),
        extra_params: vec![KeyValuePair {
            key: "metric_type".into(),
            value: metric.into(),
        }],
        ..Default::default()
    };
    let status = client
        .create_index(create_index("nope", "L2"))
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "cannot create index on non-exist field: nope",
        "CreateIndex on a missing field",
    );
    for attempt in 0..2 {
        let status = client
            .create_index(create_index("v", "L2"))
            .await
            .unwrap()
            .into_inner();
        assert_ok(&status, &format!("CreateIndex v #{attempt}"));
    }
    let status = client
        .create_index(create_index("v", "IP"))
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        65535,
        UnexpectedError,
        "at most one distinct index is allowed per field",
        "CreateIndex v with other params",
    );
    let status = client
        .create_index(CreateIndexRequest {
            collection_name: "X".into(),
            field_name: "v".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        100,
        CollectionNotExists,
        "collection not found[database=default][collection=X]",
        "CreateIndex on missing X",
    );

    let progress = client
        .get_loading_progress(GetLoadingProgressRequest {
            collection_name: "c".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        progress.status.as_ref().unwrap(),
        101,
        UnexpectedError,
        &format!("collection not loaded[collection={id}]"),
        "GetLoadingProgress of a released collection",
    );
    let progress = client
        .get_loading_progress(GetLoadingProgressRequest {
            collection_name: "X".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        progress.status.as_ref().unwrap(),
        100,
        CollectionNotExists,
        "collection not found[database=default][collection=X]",
        "GetLoadingProgress of missing X",
    );
    let state = client
        .get_load_state(GetLoadStateRequest {
            collection_name: "X".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        state.status.as_ref().unwrap(),
        100,
        CollectionNotExists,
        "collection not found[database=default][collection=X]",
        "GetLoadState of missing X",
    );
    let status = client
        .load_collection(LoadCollectionRequest {
            collection_name: "X".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_error_msg(
        &status,
        100,
        CollectionNotExists,
        "collection not found[database=default][collection=X]",
        "LoadCollection of missing X",
    );
}

// ---- transport: undecodable requests and undeclared RPCs ----

/// HasCollectionRequest / DescribeAliasRequest / CreateAliasRequest with their string
/// fields as raw bytes, so that a test can put invalid UTF-8 on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct RawNames {
    #[prost(bytes = "vec", tag = "2")]
    db_name: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    name_3: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    name_4: Vec<u8>,
}

async fn raw_unary<Req, Resp>(
    addr: std::net::SocketAddr,
    path: &'static str,
    request: Req,
) -> Result<Resp, tonic::Status>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(request), path, codec)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn non_utf8_string_fields_get_a_grpc_error_and_the_server_keeps_serving() {
    let (server, mut client) = server().await;
    create_collection_in(&mut client, "", "c").await;
    let bad = vec![b'c', 0xff, 0xfe];
    let cases: [(&'static str, RawNames); 4] = [
        (
            "/milvus.proto.milvus.MilvusService/HasCollection",
            RawNames {
                name_3: bad.clone(),
                ..Default::default()
            },
        ),
        (
            "/milvus.proto.milvus.MilvusService/DescribeCollection",
            RawNames {
                db_name: bad.clone(),
                name_3: b"c".to_vec(),
                ..Default::default()
            },
        ),
        (
            "/milvus.proto.milvus.MilvusService/CreateAlias",
            RawNames {
                name_3: b"c".to_vec(),
                name_4: bad.clone(),
                ..Default::default()
            },
        ),
        (
            "/milvus.proto.milvus.MilvusService/DescribeAlias",
            RawNames {
                name_3: bad.clone(),
                ..Default::default()
            },
        ),
    ];
    for (path, request) in cases {
        let result = raw_unary::<RawNames, ()>(server.addr, path, request).await;
        let error = result.expect_err(path);
        assert_eq!(
            error.code(),
            tonic::Code::Internal,
            "{path}: undecodable request: {error:?}"
        );
        assert!(
            !error.message().is_empty(),
            "{path}: the decode error is described"
        );
    }
    // The same raw path with valid bytes works, and so does the generated client.
    let valid = raw_unary::<RawNames, BoolResponse>(
        server.addr,
        "/milvus.proto.milvus.MilvusService/HasCollection",
        RawNames {
            name_3: b"c".to_vec(),
            ..Default::default()
        },
    )
    .await
    .expect("valid raw HasCollection");
    assert_ok(valid.status.as_ref().unwrap(), "raw HasCollection");
    assert!(valid.value);
    assert!(has_collection(&mut client, "c").await);
    let listed = client
        .list_aliases(ListAliasesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.aliases.is_empty(),
        "the refused CreateAlias did nothing"
    );
    create_alias_in(&mut client, "", "z", "c").await;
}

#[tokio::test]
async fn undeclared_rpcs_are_unimplemented() {
    let (server, mut client) = server().await;
    for path in [
        "/milvus.proto.milvus.MilvusService/Search",
        "/milvus.proto.milvus.MilvusService/Insert",
        "/milvus.proto.milvus.MilvusService/Query",
        "/milvus.proto.milvus.MilvusService/RenameCollection",
        "/milvus.proto.other.Service/Method",
    ] {
        let error = raw_unary::<(), ()>(server.addr, path, ())
            .await
            .expect_err(path);
        assert_eq!(
            error.code(),
            tonic::Code::Unimplemented,
            "{path}: {error:?}"
        );
    }
    // Still serving.
    let version = client
        .get_version(GetVersionRequest::default())
        .await
        .expect("GetVersion")
        .into_inner();
    assert_ok(version.status.as_ref().unwrap(), "GetVersion");
    assert!(!version.version.is_empty());
}
