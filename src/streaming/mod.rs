//! WAL placement: the streaming coordinator that assigns physical WAL channels
//! (pchannels) to streaming nodes, the streaming node that holds them, and the segment log
//! each pchannel is written to. Follows Milvus 2.6's streaming model
//! (Milvus's `pkg/proto/streaming.proto` and `internal/streamingcoord`): terms grow on every assignment, a new term is
//! persisted before the old holder is told to let go, and every record carries its term,
//! so a stale holder can never extend the log past the new holder's start.

pub mod balancer;
pub mod client;
pub mod coord;
pub mod error;
pub mod gate;
pub mod node;

pub mod wal;

pub use error::{StreamingFailure, StreamingResult};

/// gRPC metadata key carrying a base64 `CreateProducerRequest` (as upstream).
pub const CREATE_PRODUCER_KEY: &str = "create-producer";
/// gRPC metadata key carrying a base64 `CreateConsumerRequest`.
pub const CREATE_CONSUMER_KEY: &str = "create-consumer";
/// gRPC metadata key naming the server ID a manager call is meant for; a restarted node
/// on the same address (a new server ID) refuses calls meant for its predecessor.
pub const SERVER_ID_KEY: &str = "streaming-server-id";

/// Message property: the WAL term the record was written under (upstream `_wt`).
pub const PROP_TERM: &str = "_wt";
/// Message property: time tick of the record (upstream `_tt`).
pub const PROP_TIME_TICK: &str = "_tt";
/// Message property: the vchannel a record belongs to (upstream `_vc`).
pub const PROP_VCHANNEL: &str = "_vc";
/// Message property: the message type (upstream `_t`); ours adds `term_start`.
pub const PROP_TYPE: &str = "_t";
/// `_t` value of the record a holder writes first when it opens a term.
pub const TYPE_TERM_START: &str = "term_start";

/// Name of pchannel `index` under `prefix` (`by-dev-rootcoord-dml_3`), as Milvus names them.
pub fn pchannel_name(prefix: &str, index: usize) -> String {
    format!("{prefix}-rootcoord-dml_{index}")
}

/// Name of the control channel that sits on `pchannel` (DDL and broadcasts go there).
pub fn cchannel_name(pchannel: &str) -> String {
    format!("{pchannel}_vcchan")
}
