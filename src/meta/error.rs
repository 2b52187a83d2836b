//! Milvus error codes and message templates (the `merr` package of Milvus), and their mapping
//! onto `common.Status`.
//!
//! Clients match on the integer `code` and on the message text, so every constructor here
//! reproduces the exact template observed on Milvus (see shared/reference/milvus-compat.md
//! §1.5 and §2): `msg` followed by `[key=value]` pairs, or a plain text for errors Milvus
//! raises with `fmt.Errorf` (code 65535).

use crate::proto::common::{ErrorCode, Status};

/// Milvus integer error codes (`merr`), the ones this server can return.
pub mod code {
    /// Service not ready.
    pub const SERVICE_NOT_READY: i32 = 1;
    /// Internal error of the service (store failure).
    pub const SERVICE_INTERNAL: i32 = 5;
    /// Collection not found.
    pub const COLLECTION_NOT_FOUND: i32 = 100;
    /// Partition not found.
    pub const PARTITION_NOT_FOUND: i32 = 200;
    /// Index not found.
    pub const INDEX_NOT_FOUND: i32 = 700;
    /// Database not found.
    pub const DATABASE_NOT_FOUND: i32 = 800;
    /// Invalid database name.
    pub const DATABASE_NAME_INVALID: i32 = 802;
    /// Invalid parameter (names, schemas).
    pub const PARAMETER_INVALID: i32 = 1100;
    /// Alias not found.
    pub const ALIAS_NOT_FOUND: i32 = 1600;
    /// Alias and collection name conflict.
    pub const ALIAS_COLLECTION_NAME_CONFLICT: i32 = 1601;
    /// Alias already exists for another collection.
    pub const ALIAS_ALREADY_EXIST: i32 = 1602;
    /// A plain error that wraps no merr code: `(1 << 16) - 1`.
    pub const UNEXPECTED: i32 = 65535;
}

/// An error answered to a client: the Milvus code and the exact message text.
///
/// `reason` and `detail` are the same text except for the one case where Milvus prefixes
/// the reason (DescribeCollection of a missing collection), which [`MetaError::legacy`] covers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct MetaError {
    /// The merr integer code.
    pub code: i32,
    /// The text sent as `reason`.
    pub message: String,
    /// The text sent as `detail`, when it differs from `message`.
    pub detail: Option<String>,
    /// Overrides the legacy `error_code` derived from `code`.
    pub legacy: Option<ErrorCode>,
}

/// Result alias for meta operations.
pub type MetaResult<T> = Result<T, MetaError>;

impl MetaError {
    /// An error with a code and a message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            legacy: None,
        }
    }

    /// Code 65535: what Milvus sends for a plain `fmt.Errorf`.
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::new(code::UNEXPECTED, message)
    }

    /// Code 1100 with the `: invalid parameter` suffix merr appends.
    pub fn invalid_parameter(message: impl AsRef<str>) -> Self {
        Self::new(
            code::PARAMETER_INVALID,
            format!("{}: invalid parameter", message.as_ref()),
        )
    }

    /// 100 `collection not found[database=<db>][collection=<name>]`.
    pub fn collection_not_found_in_db(db: &str, name: &str) -> Self {
        Self::new(
            code::COLLECTION_NOT_FOUND,
            format!("collection not found[database={db}][collection={name}]"),
        )
    }

    /// 100 `collection not found[collection=<name>]` (AlterAlias, ListAliases: no database).
    pub fn collection_not_found(name: &str) -> Self {
        Self::new(
            code::COLLECTION_NOT_FOUND,
            format!("collection not found[collection={name}]"),
        )
    }

    /// DescribeCollection of a missing collection: code 100, with the reason the Milvus
    /// proxy writes over rootcoord's (`describeCollectionTask.Execute` in
    /// `internal/proxy/task.go`, 2.4+): `can't find collection[database=D][collection=N]`;
    /// the detail keeps rootcoord's text and the legacy code is UnexpectedError (pymilvus'
    /// `has_collection` relies on both).
    pub fn describe_collection_not_found(db: &str, name: &str) -> Self {
        Self {
            code: code::COLLECTION_NOT_FOUND,
            message: format!("can't find collection[database={db}][collection={name}]"),
            detail: Some(format!(
                "collection not found[database={db}][collection={name}]"
            )),
            legacy: Some(ErrorCode::UnexpectedError),
        }
    }

    /// 1600 `alias not found[database=<db>][alias=<alias>]`.
    pub fn alias_not_found(db: &str, alias: &str) -> Self {
        Self::new(
            code::ALIAS_NOT_FOUND,
            format!("alias not found[database={db}][alias={alias}]"),
        )
    }

    /// 1601 `alias and collection name conflict[database=<db>][alias=<alias>]`.
    pub fn alias_collection_conflict(db: &str, alias: &str) -> Self {
        Self::new(
            code::ALIAS_COLLECTION_NAME_CONFLICT,
            format!("alias and collection name conflict[database={db}][alias={alias}]"),
        )
    }

    /// 1602 `<alias> is alias to another collection: <coll>: alias already exist[...]`.
    pub fn alias_already_exists(db: &str, alias: &str, current_target: &str) -> Self {
        Self::new(
            code::ALIAS_ALREADY_EXIST,
            format!(
                "{alias} is alias to another collection: {current_target}: alias already exist[database={db}][alias={alias}]"
            ),
        )
    }

    /// 800 `database not found[database=<db>]`.
    pub fn database_not_found(db: &str) -> Self {
        Self::new(
            code::DATABASE_NOT_FOUND,
            format!("database not found[database={db}]"),
        )
    }

    /// 802 `<reason>: invalid database name[database=<db>]`.
    pub fn invalid_database_name(reason: &str, db: &str) -> Self {
        Self::new(
            code::DATABASE_NAME_INVALID,
            format!("{reason}: invalid database name[database={db}]"),
        )
    }

    /// 5: the meta store failed; the change was not applied.
    pub fn store_failure(cause: impl std::fmt::Display) -> Self {
        Self::new(
            code::SERVICE_INTERNAL,
            format!("meta store failure: {cause}: service internal error"),
        )
    }

    /// 1: the server is shutting down or not yet serving.
    pub fn not_ready(what: &str) -> Self {
        Self::new(
            code::SERVICE_NOT_READY,
            format!("service not ready[{what}]"),
        )
    }

    /// The legacy `error_code` Milvus derives from the integer code (`merr.oldCode`).
    pub fn legacy_code(&self) -> ErrorCode {
        self.legacy.unwrap_or_else(|| legacy_error_code(self.code))
    }

    /// The `common.Status` Milvus sends for this error; reason and detail are cut to
    /// [`MAX_REASON_BYTES`] (they echo names a client sent, which may be of any size).
    pub fn to_status(&self) -> Status {
        let reason = bounded_text(&self.message);
        let detail = match &self.detail {
            Some(detail) => bounded_text(detail),
            None => reason.clone(),
        };
        Status {
            error_code: self.legacy_code() as i32,
            reason,
            code: self.code,
            retriable: false,
            detail,
            extra_info: Default::default(),
        }
    }
}

/// Longest error text sent back. Milvus echoes invalid names whole; a name of many
/// megabytes would come back in every reason, so longer texts keep their first
/// [`MAX_REASON_BYTES`] bytes (at a character boundary) and say how long they were.
pub const MAX_REASON_BYTES: usize = 4096;

/// `text`, or its first [`MAX_REASON_BYTES`] bytes and a note of the full length.
pub fn bounded_text(text: &str) -> String {
    if text.len() <= MAX_REASON_BYTES {
        return text.to_string();
    }
    let mut end = MAX_REASON_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes, truncated)", &text[..end], text.len())
}

/// `merr.oldCode`: the legacy enum for an integer code.
pub fn legacy_error_code(code: i32) -> ErrorCode {
    match code {
        0 => ErrorCode::Success,
        code::SERVICE_NOT_READY => ErrorCode::NotReadyServe,
        code::COLLECTION_NOT_FOUND => ErrorCode::CollectionNotExists,
        code::PARAMETER_INVALID => ErrorCode::IllegalArgument,
        200 | 400 => ErrorCode::MetaFailed,
        code::INDEX_NOT_FOUND => ErrorCode::IndexNotExist,
        8 => ErrorCode::RateLimit,
        9 => ErrorCode::ForceDeny,
        _ => ErrorCode::UnexpectedError,
    }
}

/// The all-zero success status.
pub fn success() -> Status {
    Status::default()
}

/// Success, or the error's status.
pub fn status_of<T>(result: &MetaResult<T>) -> Status {
    match result {
        Ok(_) => success(),
        Err(error) => error.to_status(),
    }
}

impl MetaError {
    /// Appends merr's `[key=value]` context to the message (and the detail).
    pub fn with_suffix(mut self, suffix: &str) -> Self {
        self.message.push_str(suffix);
        if let Some(detail) = self.detail.as_mut() {
            detail.push_str(suffix);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_codes_follow_merr_old_code() {
        assert_eq!(
            MetaError::collection_not_found("x").legacy_code(),
            ErrorCode::CollectionNotExists
        );
        assert_eq!(
            MetaError::invalid_parameter("x").legacy_code(),
            ErrorCode::IllegalArgument
        );
        assert_eq!(
            MetaError::alias_not_found("d", "a").legacy_code(),
            ErrorCode::UnexpectedError
        );
        assert_eq!(
            MetaError::unexpected("x").legacy_code(),
            ErrorCode::UnexpectedError
        );
        assert_eq!(
            MetaError::describe_collection_not_found("d", "c").legacy_code(),
            ErrorCode::UnexpectedError
        );
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        let name = "é".repeat(10_000);
        let status =
            MetaError::invalid_parameter(format!("Invalid collection name: {name}.")).to_status();
        assert!(
            status.reason.len() < MAX_REASON_BYTES + 64,
            "{}",
            status.reason.len()
        );
        assert!(status.reason.ends_with("bytes, truncated)"));
        assert_eq!(status.reason, status.detail);
        let short = MetaError::invalid_parameter("x").to_status();
        assert_eq!(short.reason, "x: invalid parameter");
    }

    #[test]
    fn status_carries_reason_and_detail() {
        let status = MetaError::describe_collection_not_found("default", "X").to_status();
        assert_eq!(status.code, 100);
        assert_eq!(
            status.reason,
            "can't find collection[database=default][collection=X]"
        );
        assert_eq!(
            status.detail,
            "collection not found[database=default][collection=X]"
        );
        let status = MetaError::alias_already_exists("default", "Z", "A").to_status();
        assert_eq!(status.reason, status.detail);
        assert_eq!(
            status.reason,
            "Z is alias to another collection: A: alias already exist[database=default][alias=Z]"
        );
    }
}
