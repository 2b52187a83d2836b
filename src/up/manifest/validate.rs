//! Checking one resource as the API server and the engine would: metadata, the CRD's
//! OpenAPI schema and CEL rules (edits as updates, against the last accepted object),
//! then the engine's own name and schema rules.

use kube::core::cel::ErrorKind;
use serde_json::Value;

use super::parse::Loader;
use super::{Kind, Manifest, Origin, ResourceId};
use crate::client::create_collection_request;
use crate::crd::{Collection, CollectionAlias, RoutedAlias};
use crate::meta::names::{validate_alias, validate_collection_name, validate_database_name};
use crate::meta::schema::prepare_schema;
use crate::plan::ObjectKey;

impl Loader<'_> {
    pub(super) fn resource<K>(
        &mut self,
        kind: Kind,
        mut value: Value,
        origin: &Origin,
        source: Option<&str>,
        problems: &mut Vec<String>,
    ) -> Option<Manifest<K>>
    where
        K: serde::de::DeserializeOwned + kube::Resource + Checked,
    {
        if let Some(problem) = &self.schema_problem {
            problems.push(format!("{origin}: {problem}"));
            return None;
        }
        let mut errors = Vec::new();
        if let Some(object) = value.as_object_mut() {
            object.remove("status");
        }
        let key = check_metadata(&value, &mut errors);
        let what = match &key {
            Some(key) => format!("{} {key}", kind.as_str()),
            None => kind.as_str().to_string(),
        };
        let label = format!("{origin}: {what}");
        // A problem with a field names the field's own line.
        let located = |error: String| match source.and_then(|text| {
            let path = super::locate::path_in_message(&error)?;
            super::locate::field_line(text, origin.line, path)
        }) {
            Some(line) => format!(
                "{}: {what}: {error}",
                Origin {
                    line,
                    ..origin.clone()
                }
            ),
            None => format!("{label}: {error}"),
        };
        let schema = match kind {
            Kind::Collection => self.collection.as_ref(),
            Kind::CollectionAlias => self.alias.as_ref(),
            Kind::RoutedAlias => self.routed.as_ref(),
        };
        let Some(schema) = schema else {
            problems.push(format!("{label}: no CRD schema for this kind"));
            return None;
        };
        self.checker
            .check_root(&schema.openapi, &mut value, &mut errors);
        // CEL rules run even after a structural problem, so that one pass reports
        // everything the API server would; their evaluation errors on a value of the
        // wrong shape are noise then and are left out.
        let structural = !errors.is_empty();
        let old = key.as_ref().and_then(|key| {
            let id = ResourceId {
                kind,
                key: key.clone(),
            };
            let old = self.previous.and_then(|previous| previous.previous(&id));
            // Also when there is none: the verdict then holds only while there is none.
            self.previous_seen
                .push((id, old.map(super::cache::Fingerprint::of)));
            old
        });
        if let Err(failures) = self.validator.validate_compiled(&schema.cel, &value, old) {
            for failure in failures.iter() {
                if !structural || failure.kind == ErrorKind::ValidationFailure {
                    errors.push(failure.to_string());
                }
            }
        }
        if !errors.is_empty() {
            problems.extend(errors.into_iter().map(located));
            return None;
        }
        let resource: K = match serde_json::from_value(value.clone()) {
            Ok(resource) => resource,
            Err(error) => {
                problems.push(format!("{label}: {error}"));
                return None;
            }
        };
        let engine_problems = resource.engine_problems();
        if !engine_problems.is_empty() {
            problems.extend(engine_problems.into_iter().map(located));
            return None;
        }
        Some(Manifest {
            resource,
            origin: origin.clone(),
            object: value,
        })
    }
}

/// Checks `metadata` as the API server does for any object; returns the key if the
/// name is usable.
fn check_metadata(value: &Value, errors: &mut Vec<String>) -> Option<ObjectKey> {
    let Some(metadata) = value.get("metadata").and_then(Value::as_object) else {
        errors.push("metadata.name: required field is missing".to_string());
        return None;
    };
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(namespace)) => {
            if let Err(problem) = dns_label(namespace) {
                errors.push(format!("metadata.namespace: {namespace:?} {problem}"));
            }
            namespace.clone()
        }
        Some(_) => {
            errors.push("metadata.namespace: must be a string".to_string());
            "default".to_string()
        }
    };
    match metadata.get("name") {
        Some(Value::String(name)) => match dns_subdomain(name) {
            Ok(()) => Some(ObjectKey {
                namespace,
                name: name.clone(),
            }),
            Err(problem) => {
                errors.push(format!("metadata.name: {name:?} {problem}"));
                None
            }
        },
        Some(_) => {
            errors.push("metadata.name: must be a string".to_string());
            None
        }
        None if metadata.contains_key("generateName") => {
            errors.push(
                "metadata.name: required (generateName cannot be used: up and plan need a \
                 stable name to track the resource)"
                    .to_string(),
            );
            None
        }
        None => {
            errors.push("metadata.name: required field is missing".to_string());
            None
        }
    }
}

/// RFC 1123 subdomain (the rule for object names): lower-case alphanumerics, `-` and `.`,
/// starting and ending with an alphanumeric, at most 253 characters.
fn dns_subdomain(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters long");
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let edges = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !ok || !edges(name.as_bytes()[0]) || !edges(name.as_bytes()[name.len() - 1]) {
        return Err(
            "is not a valid name: lower-case letters, digits, '-' and '.', starting and \
             ending with a letter or digit (RFC 1123)",
        );
    }
    Ok(())
}

/// RFC 1123 label (the rule for namespaces): like a subdomain without `.`, at most 63.
fn dns_label(name: &str) -> Result<(), &'static str> {
    if name.len() > 63 || name.contains('.') {
        return Err("is not a valid namespace: at most 63 characters, no '.' (RFC 1123 label)");
    }
    dns_subdomain(name).map_err(|_| {
        "is not a valid namespace: lower-case letters, digits and '-', starting and ending \
         with a letter or digit (RFC 1123 label)"
    })
}

/// Engine-side rules the CRD schema cannot express, with the engine's own messages.
pub trait Checked {
    /// What the engine would refuse, one line each.
    fn engine_problems(&self) -> Vec<String>;
}

fn name_source(spec_name: &Option<String>) -> &'static str {
    if spec_name.is_some() {
        "spec.name"
    } else {
        "metadata.name (engine name: '-' and '.' become '_')"
    }
}

impl Checked for Collection {
    fn engine_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = validate_database_name(&self.spec.database) {
            problems.push(format!("spec.database: {}", error.message));
        }
        let name = self.engine_name();
        if let Err(error) = validate_collection_name(&name) {
            problems.push(format!(
                "{}: {}",
                name_source(&self.spec.name),
                error.message
            ));
            return problems;
        }
        let request = create_collection_request(&self.spec.database, &name, &self.spec);
        if let Err(error) = prepare_schema(&name, &request.schema) {
            problems.push(format!(
                "spec.fields: the engine would refuse this schema: {}",
                error.message
            ));
        }
        problems
    }
}

impl Checked for CollectionAlias {
    fn engine_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = validate_database_name(&self.spec.database) {
            problems.push(format!("spec.database: {}", error.message));
        }
        let alias = self.engine_name();
        if let Err(error) = validate_alias(&alias) {
            problems.push(format!(
                "{}: {}",
                name_source(&self.spec.name),
                error.message
            ));
        }
        if let Err(error) = validate_collection_name(&self.spec.collection) {
            problems.push(format!("spec.collection: {}", error.message));
        }
        if alias == self.spec.collection {
            problems.push(format!(
                "spec.collection: an alias cannot have the name of its target collection \
                 ({alias})"
            ));
        }
        problems
    }
}

impl Checked for RoutedAlias {
    /// The alias name, a sample collection name of the series, the template schema (what
    /// CreateCollection would refuse for every collection of the series) and the schedule
    /// (time zone, start).
    fn engine_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = validate_database_name(&self.spec.database) {
            problems.push(format!("spec.database: {}", error.message));
        }
        let alias = self.engine_name();
        if let Err(error) = validate_alias(&alias) {
            problems.push(format!(
                "{}: {}",
                name_source(&self.spec.name),
                error.message
            ));
            return problems;
        }
        let sample = format!("{alias}_20260101T000000Z");
        if let Err(error) = validate_collection_name(&sample) {
            problems.push(format!(
                "{}: the series' collection names ({sample}) would be refused: {}",
                name_source(&self.spec.name),
                error.message
            ));
            return problems;
        }
        let template = self.member_collection(&self.spec.template, &sample, "", "", "");
        let request = create_collection_request(&self.spec.database, &sample, &template.spec);
        if let Err(error) = prepare_schema(&sample, &request.schema) {
            problems.push(format!(
                "spec.template.fields: the engine would refuse this schema: {}",
                error.message
            ));
        }
        if let Err(error) = crate::plan::routed::Schedule::from_spec(&self.spec) {
            problems.push(format!("spec: {error}"));
        }
        problems
    }
}
