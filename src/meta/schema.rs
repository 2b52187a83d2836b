//! Validation of the schema a CreateCollection carries, with Milvus's messages, and its
//! normalisation (field IDs from 100, as Milvus assigns them).
//!
//! Every size a request carries is bounded, so that no single request can make the
//! server allocate without limit or store a record it cannot serve back:
//!
//! | what | bound | source |
//! | --- | --- | --- |
//! | shards | 16 ([`MAX_SHARDS`]) | `proxy.maxShardNum`, `createCollectionTask.PreExecute` (`internal/proxy/task.go`) |
//! | fields | 64 ([`MAX_FIELDS`]) | `proxy.maxFieldNum`, same function |
//! | vector dimension | 32768 ([`MAX_DIMENSION`]) | `proxy.maxDimension`, `validateDimension` (`internal/proxy/util.go`) |
//! | VarChar `max_length` | 65535 | `proxy.maxVarCharLength`, `validateMaxLengthPerRow` |
//! | Array `max_capacity` | 4096 ([`MAX_ARRAY_CAPACITY`]) | `validateMaxCapacityPerRow` |
//! | integer type params | Go `strconv.ParseInt` syntax: no spaces | `validateDimension`, `validateMaxLengthPerRow` |
//! | one key twice in a field's type params | refused | newer Milvus `validateSchema` ("duplicated type param key") |
//! | type params per field | 16 ([`MAX_TYPE_PARAMS`]) | ours (Milvus has no count) |
//! | properties / index params per request | 64 pairs ([`MAX_PROPERTIES`]) | ours (Milvus has no count) |
//! | one key or value, a description | 64 KiB ([`MAX_TEXT_BYTES`]) | ours (Milvus has none below its 64 MiB gRPC limit) |
//! | consistency level | a `common.ConsistencyLevel` value (0..=4) | ours: Milvus stores any integer |
//! | error reasons | 4 KiB ([`super::error::MAX_REASON_BYTES`]) | ours: Milvus echoes a name of any size |

use prost::Message;

use super::error::{MetaError, MetaResult};
use super::names::{validate_collection_name, validate_field_name};
use crate::proto::common::KeyValuePair;
use crate::proto::schema::{CollectionSchema, DataType, FieldSchema, FieldState};

/// The first ID Milvus gives to a user field; lower IDs are system fields.
pub const FIRST_FIELD_ID: i64 = 100;
/// `proxy.maxDimension`.
pub const MAX_DIMENSION: i64 = 32_768;
/// `proxy.maxVarCharLength`.
pub const MAX_VARCHAR_LENGTH: i64 = 65_535;
/// `proxy.maxFieldNum`.
pub const MAX_FIELDS: usize = 64;
/// `proxy.maxShardNum`.
pub const MAX_SHARDS: i32 = 16;
/// `proxy.maxArrayCapacity` (the `(0, 4096]` of `validateMaxCapacityPerRow`).
pub const MAX_ARRAY_CAPACITY: i64 = 4096;
/// Most type params one field may carry (ours: Milvus has no count; real fields carry 1–3).
pub const MAX_TYPE_PARAMS: usize = 16;
/// Most key/value pairs in the properties of a collection or database, or in the
/// parameters of an index (ours: Milvus has no count).
pub const MAX_PROPERTIES: usize = 64;
/// Longest key, value or description, in bytes (ours: keeps one record far below the
/// sizes that make reads and restarts slow).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Highest `common.ConsistencyLevel` (Customized).
pub const MAX_CONSISTENCY_LEVEL: i32 = 4;

fn type_param<'a>(field: &'a FieldSchema, key: &str) -> Option<&'a str> {
    field
        .type_params
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

/// Parses an integer type param as Go's `strconv.ParseInt(value, 10, 64)` does (Milvus
/// parses `dim` and `max_length` so, untrimmed): an optional sign and digits, with Go's
/// error text.
fn parse_go_int(value: &str) -> MetaResult<i64> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MetaError::unexpected(format!(
            "strconv.ParseInt: parsing {value:?}: invalid syntax"
        )));
    }
    value.parse().map_err(|_| {
        MetaError::unexpected(format!(
            "strconv.ParseInt: parsing {value:?}: value out of range"
        ))
    })
}

fn is_vector(data_type: DataType) -> bool {
    matches!(
        data_type,
        DataType::BinaryVector
            | DataType::FloatVector
            | DataType::Float16Vector
            | DataType::BFloat16Vector
            | DataType::SparseFloatVector
            | DataType::Int8Vector
    )
}

fn validate_dimension(field: &FieldSchema, data_type: DataType) -> MetaResult<()> {
    let name = &field.name;
    let dim = type_param(field, "dim");
    if data_type == DataType::SparseFloatVector {
        return match dim {
            Some(_) => Err(MetaError::unexpected(format!(
                "dim should not be specified for sparse vector field {name}({})",
                field.field_id
            ))),
            None => Ok(()),
        };
    }
    let Some(dim) = dim else {
        return Err(MetaError::unexpected(format!(
            "dimension is not defined in field type params of field {name}, check type param `dim` for vector field"
        )));
    };
    let dim = parse_go_int(dim)?;
    if dim <= 1 {
        return Err(MetaError::unexpected(format!(
            "invalid dimension: {dim}. should be in range 2 ~ {MAX_DIMENSION}"
        )));
    }
    if data_type == DataType::BinaryVector {
        if dim % 8 != 0 {
            return Err(MetaError::unexpected(format!(
                "invalid dimension: {dim} of field {name}. binary vector dimension should be multiple of 8. "
            )));
        }
        if dim > MAX_DIMENSION * 8 {
            return Err(MetaError::unexpected(format!(
                "invalid dimension: {dim} of field {name}. binary vector dimension should be in range 2 ~ {}",
                MAX_DIMENSION * 8
            )));
        }
    } else if dim > MAX_DIMENSION {
        return Err(MetaError::unexpected(format!(
            "invalid dimension: {dim} of field {name}. float vector dimension should be in range 2 ~ {MAX_DIMENSION}"
        )));
    }
    Ok(())
}

fn validate_max_length(collection: &str, field: &FieldSchema) -> MetaResult<()> {
    let Some(raw) = type_param(field, "max_length") else {
        return Err(MetaError::unexpected(format!(
            "type param(max_length) should be specified for varChar field({}) of collection {collection}",
            field.name
        )));
    };
    let length = parse_go_int(raw)?;
    if length <= 0 || length > MAX_VARCHAR_LENGTH {
        return Err(MetaError::invalid_parameter(format!(
            "the maximum length specified for a VarChar field({}) should be in (0, {MAX_VARCHAR_LENGTH}], but got {length} instead",
            field.name
        )));
    }
    Ok(())
}

/// Bounds the type params of a field: their count and sizes, and one value per key (Milvus
/// reads the first `dim` and stores all; a second one would be shown unvalidated).
fn validate_type_params(field: &FieldSchema) -> MetaResult<()> {
    let name = &field.name;
    if field.type_params.len() > MAX_TYPE_PARAMS {
        return Err(MetaError::invalid_parameter(format!(
            "field {name} has {} type params, at most {MAX_TYPE_PARAMS} are allowed",
            field.type_params.len()
        )));
    }
    validate_pairs(&format!("type params of field {name}"), &field.type_params)?;
    let mut seen = std::collections::HashSet::new();
    for pair in &field.type_params {
        if !seen.insert(pair.key.as_str()) {
            return Err(MetaError::invalid_parameter(format!(
                "duplicated type param key {} in field {name}",
                pair.key
            )));
        }
    }
    Ok(())
}

/// Bounds the sizes of key/value pairs (properties, type or index params).
fn validate_pairs(what: &str, pairs: &[KeyValuePair]) -> MetaResult<()> {
    for pair in pairs {
        let longest = pair.key.len().max(pair.value.len());
        if longest > MAX_TEXT_BYTES {
            return Err(MetaError::invalid_parameter(format!(
                "{what}: a key or value of {longest} bytes exceeds the limit of {MAX_TEXT_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// Bounds the properties of a collection or database, or the params of an index: at most
/// [`MAX_PROPERTIES`] pairs of at most [`MAX_TEXT_BYTES`] each.
pub fn validate_properties(what: &str, pairs: &[KeyValuePair]) -> MetaResult<()> {
    if pairs.len() > MAX_PROPERTIES {
        return Err(MetaError::invalid_parameter(format!(
            "{what}: {} pairs exceed the limit of {MAX_PROPERTIES}",
            pairs.len()
        )));
    }
    validate_pairs(what, pairs)
}

/// The shard count Milvus accepts (`createCollectionTask.PreExecute`: above
/// `proxy.maxShardNum` is refused; 0 and below mean the default).
pub fn validate_shards_num(shards_num: i32) -> MetaResult<()> {
    if shards_num > MAX_SHARDS {
        return Err(MetaError::unexpected(format!(
            "maximum shards's number should be limited to {MAX_SHARDS}"
        )));
    }
    Ok(())
}

/// A `common.ConsistencyLevel` value (ours: Milvus would store any integer, which no SDK
/// can show back).
pub fn validate_consistency_level(level: i32) -> MetaResult<()> {
    if !(0..=MAX_CONSISTENCY_LEVEL).contains(&level) {
        return Err(MetaError::invalid_parameter(format!(
            "invalid consistency level: {level}, should be in range 0 ~ {MAX_CONSISTENCY_LEVEL}"
        )));
    }
    Ok(())
}

fn validate_field(collection: &str, field: &mut FieldSchema) -> MetaResult<()> {
    field.name = validate_field_name(&field.name)?.to_string();
    validate_type_params(field)?;
    if field.description.len() > MAX_TEXT_BYTES {
        return Err(MetaError::invalid_parameter(format!(
            "the description of field {} is {} bytes, at most {MAX_TEXT_BYTES} are allowed",
            field.name,
            field.description.len()
        )));
    }
    validate_properties(
        &format!("index params of field {}", field.name),
        &field.index_params,
    )?;
    let data_type = DataType::try_from(field.data_type)
        .map_err(|_| MetaError::unexpected(format!("invalid data type: {}", field.data_type)))?;
    match data_type {
        DataType::None => return Err(MetaError::unexpected("data type None is not valid")),
        DataType::String => {
            return Err(MetaError::unexpected(
                "string data type not supported yet, please use VarChar type instead",
            ));
        }
        _ => {}
    }
    if is_vector(data_type) {
        validate_dimension(field, data_type)?;
    }
    let element = DataType::try_from(field.element_type).unwrap_or(DataType::None);
    if data_type == DataType::VarChar
        || (data_type == DataType::Array && element == DataType::VarChar)
    {
        validate_max_length(collection, field)?;
    }
    if data_type == DataType::Array {
        match element {
            DataType::Bool
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Float
            | DataType::Double
            | DataType::VarChar => {}
            DataType::None => {
                return Err(MetaError::unexpected("element data type None is not valid"));
            }
            other => {
                return Err(MetaError::unexpected(format!(
                    "element type {} is not supported",
                    other.as_str_name()
                )));
            }
        }
        let Some(raw) = type_param(field, "max_capacity") else {
            return Err(MetaError::unexpected(format!(
                "type param(max_capacity) should be specified for array field {} of collection {collection}",
                field.name
            )));
        };
        let capacity = parse_go_int(raw).map_err(|_| {
            MetaError::unexpected(format!(
                "the value for max_capacity of field {} must be an integer",
                field.name
            ))
        })?;
        if capacity <= 0 || capacity > MAX_ARRAY_CAPACITY {
            return Err(MetaError::unexpected(format!(
                "the maximum capacity specified for a Array should be in (0, {MAX_ARRAY_CAPACITY}]"
            )));
        }
    }
    if field.is_dynamic {
        return Err(MetaError::unexpected(
            "cannot explicitly set a field as a dynamic field",
        ));
    }
    Ok(())
}

/// Decodes, validates and normalises the schema of a CreateCollection request.
///
/// The checks run in Milvus's order (proxy `createCollectionTask.PreExecute`, then
/// rootcoord): shards, field count, the schema's name, field names and types, duplicates,
/// the primary key, auto ID, and last the agreement of the request's name with the
/// schema's. On success field IDs are assigned from [`FIRST_FIELD_ID`].
pub fn prepare_schema(collection_name: &str, schema_bytes: &[u8]) -> MetaResult<CollectionSchema> {
    let schema = prepare_create_collection(schema_bytes, 0)?;
    check_request_name(collection_name, &schema)?;
    Ok(schema)
}

/// The request's collection name must be the schema's. Rootcoord checks it
/// (`createCollectionTask.validateSchema`), after the proxy has checked the schema and
/// after the database lookup; a bad request name thus shows as a mismatch.
pub fn check_request_name(collection_name: &str, schema: &CollectionSchema) -> MetaResult<()> {
    let collection_name = collection_name.trim();
    if schema.name != collection_name {
        return Err(MetaError::invalid_parameter(format!(
            "collection name = {collection_name}, schema.Name={}",
            schema.name
        ))
        .with_suffix("[expected=collection name matches schema name][actual=don't match]"));
    }
    Ok(())
}

/// The proxy's part of [`prepare_schema`], with the shard count checked where Milvus
/// checks it: right after the schema is decoded (`createCollectionTask.PreExecute`). The
/// request's name is left to [`check_request_name`].
pub fn prepare_create_collection(
    schema_bytes: &[u8],
    shards_num: i32,
) -> MetaResult<CollectionSchema> {
    let mut schema = CollectionSchema::decode(schema_bytes).map_err(|error| {
        MetaError::unexpected(format!("failed to unmarshal collection schema: {error}"))
    })?;
    validate_shards_num(shards_num)?;
    if schema.fields.len() > MAX_FIELDS {
        return Err(MetaError::unexpected(format!(
            "maximum field's number should be limited to {MAX_FIELDS}"
        )));
    }
    let schema_name = validate_collection_name(&schema.name)?.to_string();
    if schema.fields.is_empty() {
        return Err(MetaError::unexpected("schema does not contain any field"));
    }
    if schema.description.len() > MAX_TEXT_BYTES {
        return Err(MetaError::invalid_parameter(format!(
            "the description of collection {schema_name} is {} bytes, at most {MAX_TEXT_BYTES} are allowed",
            schema.description.len()
        )));
    }
    validate_properties("schema properties", &schema.properties)?;
    for field in &mut schema.fields {
        validate_field(&schema_name, field)?;
    }
    let mut seen = std::collections::HashSet::new();
    for field in &schema.fields {
        if !seen.insert(field.name.as_str()) {
            return Err(MetaError::unexpected(format!(
                "duplicated field name {} found",
                field.name
            )));
        }
    }
    let primary: Vec<&FieldSchema> = schema.fields.iter().filter(|f| f.is_primary_key).collect();
    match primary.as_slice() {
        [] => return Err(MetaError::unexpected("primary key is not specified")),
        [pk] => {
            if pk.data_type != DataType::Int64 as i32 && pk.data_type != DataType::VarChar as i32 {
                return Err(MetaError::unexpected(
                    "the data type of primary key should be Int64 or VarChar",
                ));
            }
        }
        [first, second, ..] => {
            return Err(MetaError::unexpected(format!(
                "there are more than one primary key, field name = {}, {}",
                first.name, second.name
            )));
        }
    }
    if let Some(field) = schema
        .fields
        .iter()
        .find(|f| f.auto_id && !f.is_primary_key)
    {
        return Err(MetaError::unexpected(format!(
            "only primary field can speficy AutoID with true, field name = {}",
            field.name
        )));
    }
    schema.name = schema_name;
    for (index, field) in schema.fields.iter_mut().enumerate() {
        field.field_id = FIRST_FIELD_ID + index as i64;
        field.state = FieldState::FieldCreated as i32;
    }
    Ok(schema)
}

/// Key/value pairs as Milvus compares them (`common.KeyValuePairs.Equal`): as a map,
/// the last value of a key winning, order ignored.
pub fn pairs_as_map(pairs: &[KeyValuePair]) -> std::collections::BTreeMap<&str, &str> {
    pairs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect()
}

/// Whether two prepared schemas are equal as Milvus's `model.Collection.Equal` sees
/// them (`internal/metastore/model/collection.go`): name, description, dynamic field,
/// and the fields in order by `model.Field.Equal` (name, ID, type, primary key,
/// description, type and index params as maps, auto ID, partition key, dynamic,
/// default value).
pub fn same_schema(a: &CollectionSchema, b: &CollectionSchema) -> bool {
    a.name == b.name
        && a.description == b.description
        && a.enable_dynamic_field == b.enable_dynamic_field
        && a.fields.len() == b.fields.len()
        && a.fields.iter().zip(&b.fields).all(|(x, y)| {
            x.name == y.name
                && x.field_id == y.field_id
                && x.description == y.description
                && x.data_type == y.data_type
                && x.element_type == y.element_type
                && x.is_primary_key == y.is_primary_key
                && x.auto_id == y.auto_id
                && x.nullable == y.nullable
                && x.is_partition_key == y.is_partition_key
                && x.is_dynamic == y.is_dynamic
                && x.default_value == y.default_value
                && pairs_as_map(&x.type_params) == pairs_as_map(&y.type_params)
                && pairs_as_map(&x.index_params) == pairs_as_map(&y.index_params)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, data_type: DataType, pk: bool, params: &[(&str, &str)]) -> FieldSchema {
        FieldSchema {
            name: name.into(),
            data_type: data_type as i32,
            is_primary_key: pk,
            type_params: params
                .iter()
                .map(|(k, v)| KeyValuePair {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn encode(name: &str, fields: Vec<FieldSchema>) -> Vec<u8> {
        CollectionSchema {
            name: name.into(),
            fields,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn assigns_field_ids_from_100() {
        let bytes = encode(
            "c",
            vec![
                field("id", DataType::Int64, true, &[]),
                field("v", DataType::FloatVector, false, &[("dim", "8")]),
            ],
        );
        let schema = prepare_schema("c", &bytes).expect("valid");
        assert_eq!(
            schema.fields.iter().map(|f| f.field_id).collect::<Vec<_>>(),
            vec![100, 101]
        );
    }

    #[test]
    fn invalid_schemas_are_refused_with_milvus_messages() {
        let vector = || field("v", DataType::FloatVector, false, &[("dim", "8")]);
        let cases: Vec<(Vec<u8>, i32, &str)> = vec![
            (
                encode("c", vec![vector()]),
                65535,
                "primary key is not specified",
            ),
            (
                encode(
                    "c",
                    vec![
                        field("a", DataType::Int64, true, &[]),
                        field("b", DataType::Int64, true, &[]),
                        vector(),
                    ],
                ),
                65535,
                "there are more than one primary key, field name = a, b",
            ),
            (
                encode(
                    "c",
                    vec![
                        field("id", DataType::Int64, true, &[]),
                        field("v", DataType::FloatVector, false, &[]),
                    ],
                ),
                65535,
                "dimension is not defined in field type params of field v, check type param `dim` for vector field",
            ),
            (
                encode(
                    "c",
                    vec![
                        field("id", DataType::Int64, true, &[]),
                        FieldSchema {
                            name: "x".into(),
                            data_type: 999,
                            ..Default::default()
                        },
                    ],
                ),
                65535,
                "invalid data type: 999",
            ),
            (
                Vec::new(),
                1100,
                "collection name should not be empty: invalid parameter",
            ),
            (
                encode("other", vec![field("id", DataType::Int64, true, &[])]),
                1100,
                "collection name = c, schema.Name=other: invalid parameter[expected=collection name matches schema name][actual=don't match]",
            ),
            (
                vec![0xff, 0xff, 0xff],
                65535,
                "failed to unmarshal collection schema: ",
            ),
        ];
        for (bytes, code, message) in cases {
            let error = prepare_schema("c", &bytes).expect_err(message);
            assert_eq!(error.code, code, "{message}");
            assert!(
                error.message.starts_with(message),
                "{} !~ {message}",
                error.message
            );
        }
    }
}
