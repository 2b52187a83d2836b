//! The streaming error model: a `StreamingError{code, cause}` carried as a gRPC status detail,
//! mapped to gRPC codes as upstream does, so a client can tell "retry elsewhere" (fenced,
//! wrong term) from "give up".

use prost::Message;

use crate::proto::streaming::{StreamingCode, StreamingError};

/// Result of a streaming operation.
pub type StreamingResult<T> = Result<T, StreamingFailure>;

/// A failed streaming operation with its upstream error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {cause}", code.as_str_name())]
pub struct StreamingFailure {
    /// Why it failed.
    pub code: StreamingCode,
    /// Human-readable detail.
    pub cause: String,
}

/// `google.rpc.Status`, the envelope gRPC rich errors travel in (`grpc-status-details-bin`).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

const TYPE_URL: &str = "type.googleapis.com/milvus.proto.streaming.StreamingError";

impl StreamingFailure {
    /// A failure with `code`.
    pub fn new(code: StreamingCode, cause: impl Into<String>) -> Self {
        Self {
            code,
            cause: cause.into(),
        }
    }

    /// The channel is not held here (or not open).
    pub fn channel_not_exist(pchannel: &str) -> Self {
        Self::new(
            StreamingCode::ChannelNotExist,
            format!("pchannel {pchannel} is not held by this streaming node"),
        )
    }

    /// The holder was fenced: a newer term owns the channel, or the node lost its lease.
    pub fn fenced(pchannel: &str, why: &str) -> Self {
        Self::new(
            StreamingCode::ChannelFenced,
            format!("pchannel {pchannel} is fenced: {why}"),
        )
    }

    /// The caller's term is not the term this node holds.
    pub fn unmatched_term(pchannel: &str, asked: i64, held: i64) -> Self {
        Self::new(
            StreamingCode::UnmatchedChannelTerm,
            format!("pchannel {pchannel}: term {asked} asked, term {held} held"),
        )
    }

    /// An Assign/Remove that is not newer than what the node already did.
    pub fn ignored(cause: impl Into<String>) -> Self {
        Self::new(StreamingCode::IgnoredOperation, cause)
    }

    /// An underlying failure (I/O, store).
    pub fn inner(cause: impl Into<String>) -> Self {
        Self::new(StreamingCode::Inner, cause)
    }

    /// A malformed request.
    pub fn invalid_argument(cause: impl Into<String>) -> Self {
        Self::new(StreamingCode::InvaildArgument, cause)
    }

    /// The proto form.
    pub fn to_proto(&self) -> StreamingError {
        StreamingError {
            code: self.code as i32,
            cause: self.cause.clone(),
        }
    }

    /// From the proto form (unknown codes become UNKNOWN).
    pub fn from_proto(error: &StreamingError) -> Self {
        Self::new(
            StreamingCode::try_from(error.code).unwrap_or(StreamingCode::Unknown),
            error.cause.clone(),
        )
    }

    /// The gRPC status upstream would send: code by upstream's mapping, the
    /// StreamingError as a `google.rpc.Status` detail.
    pub fn to_status(&self) -> tonic::Status {
        let code = match self.code {
            StreamingCode::Inner => tonic::Code::Internal,
            StreamingCode::InvaildArgument => tonic::Code::InvalidArgument,
            StreamingCode::Unknown => tonic::Code::Unknown,
            _ => tonic::Code::FailedPrecondition,
        };
        let details = RpcStatus {
            code: code as i32,
            message: self.to_string(),
            details: vec![prost_types::Any {
                type_url: TYPE_URL.into(),
                value: self.to_proto().encode_to_vec(),
            }],
        }
        .encode_to_vec();
        tonic::Status::with_details(code, self.to_string(), details.into())
    }

    /// The StreamingError inside a gRPC status, if it carries one.
    pub fn from_status(status: &tonic::Status) -> Option<Self> {
        let envelope = RpcStatus::decode(status.details()).ok()?;
        envelope
            .details
            .iter()
            .find(|any| any.type_url == TYPE_URL)
            .and_then(|any| StreamingError::decode(any.value.as_slice()).ok())
            .map(|error| Self::from_proto(&error))
    }
}

impl From<StreamingFailure> for tonic::Status {
    fn from(failure: StreamingFailure) -> Self {
        failure.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_survives_the_status_round_trip_with_upstream_code_mapping() {
        let failure = StreamingFailure::unmatched_term("ch", 3, 4);
        let status = failure.to_status();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(StreamingFailure::from_status(&status), Some(failure));
        assert_eq!(
            StreamingFailure::inner("disk").to_status().code(),
            tonic::Code::Internal
        );
        assert_eq!(
            StreamingFailure::invalid_argument("x").to_status().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            StreamingFailure::from_status(&tonic::Status::unavailable("down")),
            None
        );
    }
}
