//! collection-operator: declarative Milvus-style collection aliases, and the embedded
//! Milvus-compatible coordinator they are reconciled against.

pub mod coordinator;
pub mod meta;
pub mod proto;
pub mod store;
