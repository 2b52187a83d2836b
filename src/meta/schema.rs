//! Validation of the schema a CreateCollection carries, with Milvus's messages, and its
//! normalisation (field IDs from 100, as Milvus assigns them).

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

fn type_param<'a>(field: &'a FieldSchema, key: &str) -> Option<&'a str> {
    field
        .type_params
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
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
    let dim: i64 = dim.trim().parse().map_err(|_| {
        MetaError::unexpected(format!(
            "strconv.ParseInt: parsing \"{dim}\": invalid syntax"
        ))
    })?;
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
    let length: i64 = raw.trim().parse().map_err(|_| {
        MetaError::unexpected(format!(
            "strconv.ParseInt: parsing \"{raw}\": invalid syntax"
        ))
    })?;
    if length <= 0 || length > MAX_VARCHAR_LENGTH {
        return Err(MetaError::invalid_parameter(format!(
            "the maximum length specified for a VarChar field({}) should be in (0, {MAX_VARCHAR_LENGTH}], but got {length} instead",
            field.name
        )));
    }
    Ok(())
}

fn validate_field(collection: &str, field: &mut FieldSchema) -> MetaResult<()> {
    field.name = validate_field_name(&field.name)?.to_string();
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
        if type_param(field, "max_capacity").is_none() {
            return Err(MetaError::unexpected(format!(
                "type param(max_capacity) should be specified for array field {} of collection {collection}",
                field.name
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
/// The checks run in Milvus's order: the request's collection name, the schema's name and
/// its agreement with the request, field count, field names and types, duplicates, the
/// primary key, auto ID. On success field IDs are assigned from [`FIRST_FIELD_ID`].
pub fn prepare_schema(collection_name: &str, schema_bytes: &[u8]) -> MetaResult<CollectionSchema> {
    let collection_name = validate_collection_name(collection_name)?;
    let mut schema = CollectionSchema::decode(schema_bytes).map_err(|error| {
        MetaError::unexpected(format!("failed to unmarshal collection schema: {error}"))
    })?;
    validate_collection_name(&schema.name)?;
    if schema.name.trim() != collection_name {
        return Err(MetaError::invalid_parameter(format!(
            "collection name = {collection_name}, schema.Name={}",
            schema.name
        ))
        .with_suffix("[expected=collection name matches schema name][actual=don't match]"));
    }
    schema.name = collection_name.to_string();
    if schema.fields.is_empty() {
        return Err(MetaError::unexpected("schema does not contain any field"));
    }
    if schema.fields.len() > MAX_FIELDS {
        return Err(MetaError::unexpected(format!(
            "maximum field's number should be limited to {MAX_FIELDS}"
        )));
    }
    for field in &mut schema.fields {
        validate_field(collection_name, field)?;
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
    for (index, field) in schema.fields.iter_mut().enumerate() {
        field.field_id = FIRST_FIELD_ID + index as i64;
        field.state = FieldState::FieldCreated as i32;
    }
    Ok(schema)
}

/// Whether two prepared schemas describe the same collection (CreateCollection is
/// idempotent for the same parameters).
pub fn same_schema(a: &CollectionSchema, b: &CollectionSchema) -> bool {
    fn sorted(params: &[KeyValuePair]) -> Vec<(&str, &str)> {
        let mut pairs: Vec<_> = params
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_str()))
            .collect();
        pairs.sort_unstable();
        pairs
    }
    a.name == b.name
        && a.enable_dynamic_field == b.enable_dynamic_field
        && a.fields.len() == b.fields.len()
        && a.fields.iter().zip(&b.fields).all(|(x, y)| {
            x.name == y.name
                && x.data_type == y.data_type
                && x.element_type == y.element_type
                && x.is_primary_key == y.is_primary_key
                && x.auto_id == y.auto_id
                && x.nullable == y.nullable
                && x.is_partition_key == y.is_partition_key
                && sorted(&x.type_params) == sorted(&y.type_params)
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
