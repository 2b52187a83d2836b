//! Generated protobuf and gRPC code for the Milvus-compatible wire (`proto/`).
//!
//! The generated code refers to other packages by their protobuf path, so the modules mirror
//! the packages; the short re-exports below are what the rest of the crate uses.

/// Mirrors the protobuf package tree `milvus.proto.*`.
#[allow(clippy::all, missing_docs)]
pub mod milvus {
    /// `milvus.proto`
    pub mod proto {
        /// `milvus.proto.common`: Status, MsgBase, enums shared by every message.
        pub mod common {
            tonic::include_proto!("milvus.proto.common");
        }
        /// `milvus.proto.schema`: collection and field schemas.
        pub mod schema {
            tonic::include_proto!("milvus.proto.schema");
        }
        /// `milvus.proto.milvus`: MilvusService requests, responses, client and server.
        pub mod milvus {
            tonic::include_proto!("milvus.proto.milvus");
        }
        /// `milvus.proto.messages`: the message envelope the WAL carries.
        pub mod messages {
            tonic::include_proto!("milvus.proto.messages");
        }
        /// `milvus.proto.streaming`: pchannel placement, streaming node services, errors.
        pub mod streaming {
            tonic::include_proto!("milvus.proto.streaming");
        }
    }
}

/// Mirrors the protobuf package tree `collection_operator.*`.
#[allow(clippy::all, missing_docs)]
pub mod collection_operator {
    /// `collection_operator.meta`: the records of our meta store.
    pub mod meta {
        tonic::include_proto!("collection_operator.meta");
    }
    /// `collection_operator.streaming`: streaming node registration and lease.
    pub mod streaming {
        tonic::include_proto!("collection_operator.streaming");
    }
}

pub use collection_operator::meta as records;
pub use collection_operator::streaming as session;
pub use milvus::proto::messages;
pub use milvus::proto::milvus as api;
pub use milvus::proto::streaming;
pub use milvus::proto::{common, schema};
