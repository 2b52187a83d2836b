//! From a file's text to resources: YAML (multi-document) or JSON, `kind: List` items,
//! group and version checks, and dispatch by kind to [`super::validate`].

use std::path::Path;

use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use serde_json::Value;

use super::{API_VERSION, Kind, ManifestSet, Origin, Previous};
use crate::crd::{Collection, CollectionAlias, GROUP, RoutedAlias};
use crate::up::schema::Checker;

pub(super) struct KindSchema {
    pub(super) openapi: Value,
    pub(super) cel: CompiledSchema,
}

pub(super) struct Loader<'a> {
    pub(super) previous: Option<&'a dyn Previous>,
    /// Every last accepted object a check looked up, since last taken: a file's verdict
    /// holds only while these stay the same (see [`super::cache`]).
    pub(super) previous_seen: Vec<super::cache::Seen>,
    pub(super) checker: Checker,
    pub(super) validator: Validator,
    pub(super) collection: Option<KindSchema>,
    pub(super) alias: Option<KindSchema>,
    pub(super) routed: Option<KindSchema>,
    pub(super) schema_problem: Option<String>,
}

impl<'a> Loader<'a> {
    pub(super) fn new(previous: Option<&'a dyn Previous>) -> Self {
        let mut loader = Self {
            previous,
            previous_seen: Vec::new(),
            checker: Checker::new(),
            validator: Validator::new(),
            collection: None,
            alias: None,
            routed: None,
            schema_problem: None,
        };
        // The schemas are the ones `collection-operator crds` prints, so `up` and `plan`
        // accept exactly what the API server accepts.
        for crd in crate::crd::all() {
            let kind = crd.spec.names.kind.clone();
            let schema = crd
                .spec
                .versions
                .iter()
                .find(|v| v.name == "v1alpha1")
                .and_then(|v| v.schema.as_ref())
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok());
            let Some(openapi) = schema else {
                loader.schema_problem = Some(format!("the {kind} CRD has no v1alpha1 schema"));
                continue;
            };
            let cel = compile_schema(&openapi);
            let entry = Some(KindSchema { openapi, cel });
            match kind.as_str() {
                "Collection" => loader.collection = entry,
                "CollectionAlias" => loader.alias = entry,
                "RoutedAlias" => loader.routed = entry,
                _ => {}
            }
        }
        loader
    }

    pub(super) fn file(
        &mut self,
        path: &Path,
        text: &str,
        set: &mut ManifestSet,
        problems: &mut Vec<String>,
    ) {
        let json = path.extension().and_then(|e| e.to_str()) == Some("json");
        // Field lines are looked up in YAML text only (a JSON file's problems name its
        // document).
        let source = (!json).then_some(text);
        let documents: Vec<(Value, u64)> = if json {
            match serde_json::from_str::<Value>(text) {
                Ok(value) => vec![(value, 1)],
                Err(error) => {
                    problems.push(format!("{}: invalid JSON: {error}", path.display()));
                    return;
                }
            }
        } else {
            match serde_saphyr::from_multiple::<serde_saphyr::Spanned<Value>>(text) {
                Ok(documents) => documents
                    .into_iter()
                    .map(|doc| (doc.value, doc.referenced.line()))
                    .collect(),
                Err(error) => {
                    problems.push(format!("{}: invalid YAML: {error}", path.display()));
                    return;
                }
            }
        };
        for (index, (value, line)) in documents.into_iter().enumerate() {
            let origin = Origin {
                path: path.to_path_buf(),
                document: index + 1,
                item: None,
                line,
            };
            if value.is_null() {
                continue;
            }
            let is_list = value
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("List"))
                && value.get("items").is_some_and(Value::is_array);
            if is_list {
                let items = match value {
                    Value::Object(mut map) => match map.remove("items") {
                        Some(Value::Array(items)) => items,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                for (item_index, item) in items.into_iter().enumerate() {
                    let origin = Origin {
                        item: Some(item_index + 1),
                        ..origin.clone()
                    };
                    self.document(item, origin, None, set, problems);
                }
            } else {
                self.document(value, origin, source, set, problems);
            }
        }
    }

    fn document(
        &mut self,
        value: Value,
        origin: Origin,
        source: Option<&str>,
        set: &mut ManifestSet,
        problems: &mut Vec<String>,
    ) {
        let Some(object) = value.as_object() else {
            problems.push(format!("{origin}: not a mapping (a Kubernetes object)"));
            return;
        };
        let api_version = object.get("apiVersion").and_then(Value::as_str);
        let kind = object.get("kind").and_then(Value::as_str);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            problems.push(format!("{origin}: apiVersion and kind are required"));
            return;
        };
        let name = object
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("<no name>");
        let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
        if group != GROUP {
            set.ignored.push(format!(
                "{origin}: {kind} {name} ({api_version}) ignored: not a {GROUP} resource"
            ));
            return;
        }
        if api_version != API_VERSION {
            problems.push(format!(
                "{origin}: {kind} {name}: apiVersion {api_version} is not served by this build \
                 (it reads {API_VERSION})"
            ));
            return;
        }
        match kind {
            "Collection" => {
                if let Some(manifest) =
                    self.resource::<Collection>(Kind::Collection, value, &origin, source, problems)
                {
                    set.collections.push(manifest);
                }
            }
            "CollectionAlias" => {
                if let Some(manifest) = self.resource::<CollectionAlias>(
                    Kind::CollectionAlias,
                    value,
                    &origin,
                    source,
                    problems,
                ) {
                    set.aliases.push(manifest);
                }
            }
            "RoutedAlias" => {
                if let Some(manifest) = self.resource::<RoutedAlias>(
                    Kind::RoutedAlias,
                    value,
                    &origin,
                    source,
                    problems,
                ) {
                    set.routed.push(manifest);
                }
            }
            "Coordinator" => set.ignored.push(format!(
                "{origin}: Coordinator {name} ignored: up and plan use the one engine given \
                 on their command line"
            )),
            other => problems.push(format!(
                "{origin}: unknown kind {other} in {API_VERSION} (known: Collection, \
                 CollectionAlias, RoutedAlias, Coordinator)"
            )),
        }
    }
}
