//! Helpers the coordinator benches share (each bench is its own binary and includes this).
#![allow(dead_code)]

use collection_operator::proto::common::{KeyValuePair, Status};
use collection_operator::proto::schema::{CollectionSchema, DataType, FieldSchema};
use prost::Message;

/// A count from the environment, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free loopback port (bound and released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// An `id` primary key and an 8-dimension float vector: the collection every loop uses.
pub fn schema(name: &str) -> Vec<u8> {
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
                name: "vector".into(),
                data_type: DataType::FloatVector as i32,
                type_params: vec![KeyValuePair {
                    key: "dim".into(),
                    value: "8".into(),
                }],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Ok for a success status, else an error naming `what` and the code.
pub fn check(status: &Status, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        status.code == 0 && status.error_code == 0,
        "{what}: {} {}",
        status.code,
        status.reason
    );
    Ok(())
}
