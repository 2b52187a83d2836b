//! The structural part of what the API server checks against a CRD's `openAPIV3Schema`
//! before any CEL rule runs: types, unknown fields (kubectl's default strict field
//! validation), `required`, `enum`, `pattern`, lengths, ranges and item counts. Nulls of
//! fields that are not `nullable` are pruned first, as the API server does.
//!
//! `up` and `plan` read manifests that never pass an API server, so without this a typo
//! such as `spec.collecton` would be silently dropped by serde and an invalid `dim`
//! would only be refused by the engine, half-way through an apply.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Validates `value` against one schema node; appends `path: message` lines to `errors`.
pub struct Checker {
    patterns: HashMap<String, Option<regex::Regex>>,
}

impl Checker {
    /// A checker with an empty pattern cache.
    pub fn new() -> Self {
        Self {
            patterns: HashMap::new(),
        }
    }

    /// Prunes nulls of non-nullable fields in `value`, then checks it against `schema`.
    /// The root of a custom resource also accepts `apiVersion`, `kind` and `metadata`,
    /// which CRD schemas leave implicit.
    pub fn check_root(&mut self, schema: &Value, value: &mut Value, errors: &mut Vec<String>) {
        let Some(object) = value.as_object_mut() else {
            errors.push("the document is not a mapping".to_string());
            return;
        };
        let properties = schema.get("properties").and_then(Value::as_object);
        let implicit = ["apiVersion", "kind", "metadata"];
        let keys: Vec<String> = object.keys().cloned().collect();
        for key in keys {
            if implicit.contains(&key.as_str()) {
                continue;
            }
            match properties.and_then(|p| p.get(&key)) {
                Some(child) => {
                    if let Some(field) = object.get_mut(&key) {
                        if prune_null(child, field) {
                            object.remove(&key);
                            continue;
                        }
                        self.check(child, field, &key, errors);
                    }
                }
                None => errors.push(format!("unknown field \"{key}\"")),
            }
        }
        required(schema, object, "", errors);
    }

    fn check(&mut self, schema: &Value, value: &mut Value, path: &str, errors: &mut Vec<String>) {
        if value.is_null() {
            // Only reached for nullable fields (others were pruned by the parent).
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(short).collect();
            errors.push(format!(
                "{path}: unsupported value {}: must be one of {}",
                short(value),
                list.join(", ")
            ));
            return;
        }
        let kind = schema.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "object" => self.check_object(schema, value, path, errors),
            "array" => self.check_array(schema, value, path, errors),
            "string" => match value.as_str() {
                Some(text) => self.check_string(schema, text, path, errors),
                None => errors.push(format!(
                    "{path}: must be a string, got {}",
                    type_name(value)
                )),
            },
            "integer" => {
                if value.as_i64().is_none() && value.as_u64().is_none() {
                    errors.push(format!(
                        "{path}: must be an integer, got {}",
                        type_name(value)
                    ));
                } else {
                    check_range(schema, value, path, errors);
                }
            }
            "number" => {
                if value.is_number() {
                    check_range(schema, value, path, errors);
                } else {
                    errors.push(format!(
                        "{path}: must be a number, got {}",
                        type_name(value)
                    ));
                }
            }
            "boolean" if !value.is_boolean() => errors.push(format!(
                "{path}: must be a boolean, got {}",
                type_name(value)
            )),
            _ => {}
        }
    }

    fn check_object(
        &mut self,
        schema: &Value,
        value: &mut Value,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        let Some(object) = value.as_object_mut() else {
            errors.push(format!(
                "{path}: must be a mapping, got {}",
                type_name(value)
            ));
            return;
        };
        let preserve = schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let keys: Vec<String> = object.keys().cloned().collect();
        for key in keys {
            let child_path = format!("{path}.{key}");
            let child_schema = properties
                .and_then(|p| p.get(&key))
                .or(additional.filter(|a| a.is_object()));
            match child_schema {
                Some(child) => {
                    if let Some(field) = object.get_mut(&key) {
                        if prune_null(child, field) {
                            object.remove(&key);
                            continue;
                        }
                        self.check(child, field, &child_path, errors);
                    }
                }
                None if preserve || additional == Some(&Value::Bool(true)) => {}
                None => errors.push(format!("unknown field \"{child_path}\"")),
            }
        }
        required(schema, object, path, errors);
    }

    fn check_array(
        &mut self,
        schema: &Value,
        value: &mut Value,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        let Some(items) = value.as_array_mut() else {
            errors.push(format!("{path}: must be a list, got {}", type_name(value)));
            return;
        };
        let count = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && count < min
        {
            errors.push(format!(
                "{path}: must have at least {min} item(s), has {count}"
            ));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && count > max
        {
            errors.push(format!(
                "{path}: must have at most {max} item(s), has {count}"
            ));
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter_mut().enumerate() {
                let item_path = format!("{path}[{index}]");
                if item.is_null()
                    && !item_schema
                        .get("nullable")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                {
                    errors.push(format!("{item_path}: must not be null"));
                    continue;
                }
                self.check(item_schema, item, &item_path, errors);
            }
        }
    }

    fn check_string(&mut self, schema: &Value, text: &str, path: &str, errors: &mut Vec<String>) {
        // OpenAPI lengths count characters, not bytes.
        let length = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && length < min
        {
            errors.push(if min == 1 {
                format!("{path}: must not be empty")
            } else {
                format!("{path}: must be at least {min} characters long")
            });
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && length > max
        {
            errors.push(format!(
                "{path}: must be at most {max} characters long, is {length}"
            ));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let compiled = self
                .patterns
                .entry(pattern.to_string())
                .or_insert_with(|| regex::Regex::new(pattern).ok());
            match compiled {
                Some(regex) if !regex.is_match(text) => errors.push(format!(
                    "{path}: {text:?} does not match the pattern {pattern}"
                )),
                Some(_) => {}
                None => errors.push(format!(
                    "{path}: the schema's pattern {pattern} cannot be evaluated here"
                )),
            }
        }
    }
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

/// `true` if `value` is a null the API server would prune (the field is not nullable).
fn prune_null(schema: &Value, value: &Value) -> bool {
    value.is_null()
        && !schema
            .get("nullable")
            .and_then(Value::as_bool)
            .unwrap_or(false)
}

fn required(schema: &Value, object: &Map<String, Value>, path: &str, errors: &mut Vec<String>) {
    for name in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !object.contains_key(name) {
            if path.is_empty() {
                errors.push(format!("{name}: required field is missing"));
            } else {
                errors.push(format!("{path}.{name}: required field is missing"));
            }
        }
    }
}

fn check_range(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(number) = value.as_f64() else {
        return;
    };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && number < min
    {
        errors.push(format!(
            "{path}: must be at least {min}, got {}",
            short(value)
        ));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && number > max
    {
        errors.push(format!(
            "{path}: must be at most {max}, got {}",
            short(value)
        ));
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn short(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors_of(schema: Value, mut value: Value) -> (Vec<String>, Value) {
        let mut errors = Vec::new();
        Checker::new().check_root(&schema, &mut value, &mut errors);
        (errors, value)
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["spec"],
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
                        "dim": {"type": "integer", "minimum": 2.0, "nullable": true},
                        "level": {"type": "string", "enum": ["A", "B"]},
                        "list": {"type": "array", "maxItems": 1, "items": {"type": "boolean"}},
                        "props": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                }
            }
        })
    }

    #[test]
    fn accepts_a_valid_object_and_the_implicit_root_fields() {
        let (errors, _) = errors_of(
            schema(),
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
                   "spec": {"name": "abc", "dim": 4, "level": "A", "list": [true], "props": {"k": "v"}}}),
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn reports_unknown_fields_with_their_path() {
        let (errors, _) = errors_of(
            schema(),
            json!({"spec": {"name": "abc", "nmae": "x"}, "extra": 1}),
        );
        assert_eq!(
            errors,
            vec![
                "unknown field \"extra\"".to_string(),
                "unknown field \"spec.nmae\"".to_string()
            ]
        );
    }

    #[test]
    fn reports_types_ranges_patterns_enums_and_required_fields() {
        let (errors, _) = errors_of(
            schema(),
            json!({"spec": {"dim": 1, "level": "C", "list": [true, "x"], "props": {"k": 1}}}),
        );
        assert!(errors.contains(&"spec.dim: must be at least 2, got 1".to_string()));
        assert!(errors.contains(
            &"spec.level: unsupported value \"C\": must be one of \"A\", \"B\"".to_string()
        ));
        assert!(errors.contains(&"spec.list: must have at most 1 item(s), has 2".to_string()));
        assert!(errors.contains(&"spec.list[1]: must be a boolean, got a string".to_string()));
        assert!(errors.contains(&"spec.props.k: must be a string, got a number".to_string()));
        assert!(errors.contains(&"spec.name: required field is missing".to_string()));
        let (errors, _) = errors_of(schema(), json!({"spec": {"name": "Ab1234"}}));
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn prunes_nulls_of_fields_that_are_not_nullable() {
        let (errors, value) = errors_of(
            schema(),
            json!({"spec": {"name": "a", "level": null, "dim": null}}),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(value, json!({"spec": {"name": "a", "dim": null}}));
    }
}
