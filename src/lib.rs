//! collection-operator: declarative Milvus-style collection aliases, and the embedded
//! Milvus-compatible coordinator they are reconciled against.

pub mod auth;
pub mod client;
pub mod coordinator;
pub mod crd;
pub mod meta;
pub mod operator;
pub mod plan;
pub mod proto;
pub mod serve;
pub mod store;
pub mod streaming;
pub mod up;
