//! The coordinator answers over real gRPC on loopback and keeps what it acknowledged across
//! a restart.

mod common;

use collection_operator::proto::api::*;
use collection_operator::proto::common::KeyValuePair;
use collection_operator::proto::schema::{CollectionSchema, DataType, FieldSchema};
use prost::Message;

fn schema_bytes(name: &str) -> Vec<u8> {
    CollectionSchema {
        name: name.into(),
        fields: vec![
            FieldSchema {
                name: "id".into(),
                data_type: DataType::Int64 as i32,
                is_primary_key: true,
                ..Default::default()
            },
            FieldSchema {
                name: "v".into(),
                data_type: DataType::FloatVector as i32,
                type_params: vec![KeyValuePair {
                    key: "dim".into(),
                    value: "4".into(),
                }],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
    .encode_to_vec()
}

#[tokio::test]
async fn alias_survives_restart() {
    let server = common::InProcess::start().await;
    let mut client = server.client().await;
    for name in ["a", "b"] {
        let status = client
            .create_collection(CreateCollectionRequest {
                collection_name: name.into(),
                schema: schema_bytes(name),
                ..Default::default()
            })
            .await
            .expect("rpc")
            .into_inner();
        assert_eq!(status.code, 0, "{status:?}");
    }
    let status = client
        .create_alias(CreateAliasRequest {
            collection_name: "a".into(),
            alias: "z".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(status.code, 0);
    let status = client
        .alter_alias(AlterAliasRequest {
            collection_name: "b".into(),
            alias: "z".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(status.code, 0);
    let dir = server.stop().await;

    let server = common::InProcess::start_in(dir, Default::default()).await;
    let mut client = server.client().await;
    let described = client
        .describe_alias(DescribeAliasRequest {
            alias: "z".into(),
            ..Default::default()
        })
        .await
        .expect("rpc")
        .into_inner();
    assert_eq!(described.collection, "b");
}
