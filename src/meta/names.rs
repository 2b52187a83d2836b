//! Name validation, with the exact messages Milvus returns (`internal/proxy/validate_util.go`:
//! `validateCollectionNameOrAlias`, `validatePartitionTag`, `ValidateDatabaseName`).
//!
//! Names are ASCII `^[A-Za-z_][A-Za-z0-9_]*$` of at most [`MAX_NAME_LENGTH`] bytes. Like the
//! Milvus proxy, collection names and aliases are trimmed of surrounding white space before
//! they are checked and used.

use super::error::MetaError;

/// `proxy.maxNameLength`: 255 bytes are accepted, 256 are refused.
pub const MAX_NAME_LENGTH: usize = 255;

/// The database used when a request names none.
pub const DEFAULT_DATABASE: &str = "default";

/// The partition every collection has and that cannot be dropped.
pub const DEFAULT_PARTITION: &str = "_default";

fn is_name_start(byte: u8) -> bool {
    byte == b'_' || byte.is_ascii_alphabetic()
}

fn is_name_char(byte: u8) -> bool {
    byte == b'_' || byte.is_ascii_alphanumeric()
}

/// Which kind of collection-level name is checked; it appears in the message.
#[derive(Debug, Clone, Copy)]
enum EntityKind {
    Name,
    Alias,
}

impl EntityKind {
    fn word(self) -> &'static str {
        match self {
            EntityKind::Name => "name",
            EntityKind::Alias => "alias",
        }
    }
}

fn validate_collection_name_or_alias(raw: &str, kind: EntityKind) -> Result<&str, MetaError> {
    let name = raw.trim();
    let word = kind.word();
    if name.is_empty() {
        return Err(MetaError::invalid_parameter(format!(
            "collection {word} should not be empty"
        )));
    }
    let invalid = format!("Invalid collection {word}: {name}.");
    if name.len() > MAX_NAME_LENGTH {
        return Err(MetaError::invalid_parameter(format!(
            "{invalid} the length of a collection {word} must be less than {MAX_NAME_LENGTH} characters"
        )));
    }
    let bytes = name.as_bytes();
    if !is_name_start(bytes[0]) {
        return Err(MetaError::invalid_parameter(format!(
            "{invalid} the first character of a collection {word} must be an underscore or letter"
        )));
    }
    if !bytes[1..].iter().all(|&b| is_name_char(b)) {
        return Err(MetaError::invalid_parameter(format!(
            "{invalid} collection {word} can only contain numbers, letters and underscores"
        )));
    }
    Ok(name)
}

/// Validates a collection name (code 1100 on failure); returns it trimmed.
pub fn validate_collection_name(raw: &str) -> Result<&str, MetaError> {
    validate_collection_name_or_alias(raw, EntityKind::Name)
}

/// Validates an alias (code 1100 on failure); returns it trimmed.
pub fn validate_alias(raw: &str) -> Result<&str, MetaError> {
    validate_collection_name_or_alias(raw, EntityKind::Alias)
}

/// Validates a database name (code 802 on failure).
pub fn validate_database_name(name: &str) -> Result<&str, MetaError> {
    if name.is_empty() {
        return Err(MetaError::invalid_database_name(
            "database name couldn't be empty",
            name,
        ));
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(MetaError::invalid_database_name(
            &format!(
                "the length of a database name must be less than {MAX_NAME_LENGTH} characters"
            ),
            name,
        ));
    }
    let bytes = name.as_bytes();
    if !is_name_start(bytes[0]) {
        return Err(MetaError::invalid_database_name(
            "the first character of a database name must be an underscore or letter",
            name,
        ));
    }
    if !bytes[1..].iter().all(|&b| is_name_char(b)) {
        return Err(MetaError::invalid_database_name(
            "database name can only contain numbers, letters and underscores",
            name,
        ));
    }
    Ok(name)
}

/// Validates a partition name. Milvus raises these with `errors.New`, hence code 65535.
/// Like Milvus, a partition name may start with a digit and contain `-`.
pub fn validate_partition_name(raw: &str) -> Result<&str, MetaError> {
    let name = raw.trim();
    let invalid = format!("Invalid partition name: {name}.");
    if name.is_empty() {
        return Err(MetaError::unexpected(format!(
            "{invalid} Partition name should not be empty."
        )));
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(MetaError::unexpected(format!(
            "{invalid} The length of a partition name must be less than {MAX_NAME_LENGTH} characters."
        )));
    }
    let bytes = name.as_bytes();
    if !(is_name_start(bytes[0]) || bytes[0].is_ascii_digit()) {
        return Err(MetaError::unexpected(format!(
            "{invalid} The first character of a partition name must be an underscore or letter."
        )));
    }
    if !bytes[1..].iter().all(|&b| is_name_char(b) || b == b'-') {
        return Err(MetaError::unexpected(format!(
            "{invalid} Partition name can only contain numbers, letters and underscores."
        )));
    }
    Ok(name)
}

/// Validates a field name (Milvus: code 1700 `field name invalid`); returns it trimmed.
pub fn validate_field_name(raw: &str) -> Result<&str, MetaError> {
    let name = raw.trim();
    let fail =
        |msg: String| MetaError::new(1700, format!("{msg}: field name invalid[field={name}]"));
    if name.is_empty() {
        return Err(fail("field name should not be empty".to_string()));
    }
    let invalid = format!("Invalid field name: {name}.");
    if name.len() > MAX_NAME_LENGTH {
        return Err(fail(format!(
            "{invalid} The length of a field name must be less than {MAX_NAME_LENGTH} characters."
        )));
    }
    let bytes = name.as_bytes();
    if !is_name_start(bytes[0]) {
        return Err(fail(format!(
            "{invalid} The first character of a field name must be an underscore or letter."
        )));
    }
    if !bytes[1..].iter().all(|&b| is_name_char(b)) {
        return Err(fail(format!(
            "{invalid} Field name can only contain numbers, letters, and underscores."
        )));
    }
    Ok(name)
}

/// The database a request addresses: its `db_name` field, else the `dbname` header, else
/// `default` (a superset of Milvus, which forgets the header on DescribeAlias/ListAliases).
pub fn resolve_database<'a>(field: &'a str, header: Option<&'a str>) -> &'a str {
    let field = field.trim();
    if !field.is_empty() {
        return field;
    }
    match header.map(str::trim) {
        Some(header) if !header.is_empty() => header,
        _ => DEFAULT_DATABASE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_messages_match_milvus() {
        let cases = [
            (
                "",
                "collection alias should not be empty: invalid parameter",
            ),
            (
                "12-s",
                "Invalid collection alias: 12-s. the first character of a collection alias must be an underscore or letter: invalid parameter",
            ),
            (
                "a b",
                "Invalid collection alias: a b. collection alias can only contain numbers, letters and underscores: invalid parameter",
            ),
            (
                "_x$1",
                "Invalid collection alias: _x$1. collection alias can only contain numbers, letters and underscores: invalid parameter",
            ),
            (
                "中文",
                "Invalid collection alias: 中文. the first character of a collection alias must be an underscore or letter: invalid parameter",
            ),
        ];
        for (name, message) in cases {
            let error = validate_alias(name).expect_err(name);
            assert_eq!(error.code, 1100, "{name}");
            assert_eq!(error.message, message);
        }
    }

    #[test]
    fn length_limit_is_255_bytes() {
        let ok = "a".repeat(255);
        assert_eq!(validate_collection_name(&ok), Ok(ok.as_str()));
        let long = "a".repeat(256);
        let error = validate_collection_name(&long).expect_err("256 bytes");
        assert_eq!(
            error.message,
            format!(
                "Invalid collection name: {long}. the length of a collection name must be less than 255 characters: invalid parameter"
            )
        );
    }

    #[test]
    fn names_are_trimmed() {
        assert_eq!(validate_alias("  z "), Ok("z"));
    }

    #[test]
    fn database_names() {
        assert_eq!(
            validate_database_name("1bad").expect_err("digit").message,
            "the first character of a database name must be an underscore or letter: invalid database name[database=1bad]"
        );
        let empty = validate_database_name("").expect_err("empty");
        assert_eq!(empty.code, 802);
        assert_eq!(
            empty.message,
            "database name couldn't be empty: invalid database name[database=]"
        );
    }

    #[test]
    fn database_resolution_order() {
        assert_eq!(resolve_database("db1", Some("db2")), "db1");
        assert_eq!(resolve_database("", Some("db2")), "db2");
        assert_eq!(resolve_database("", Some("")), "default");
        assert_eq!(resolve_database("", None), "default");
    }

    #[test]
    fn partition_names_allow_leading_digit_and_dash() {
        assert_eq!(validate_partition_name("2024-01"), Ok("2024-01"));
        assert_eq!(
            validate_partition_name("a b").expect_err("space").code,
            65535
        );
    }
}
