//! Manifest loading for `up` and `plan`: files or folders (recursively; `.yaml`, `.yml`,
//! `.json`; multi-document YAML; `kind: List`), keeping `Collection`, `CollectionAlias`
//! and `RoutedAlias` documents of `collections.dev/v1alpha1` and noting every other
//! document as ignored (a `Coordinator` is for `kubectl` users: `up` and `plan` talk to
//! the one engine named on their command line).
//!
//! Every document is checked the way the API server would check it before anything
//! reaches the engine: the CRD's OpenAPI schema (types, unknown fields, patterns, ranges;
//! see [`super::schema`]), its CEL rules evaluated with `kube`'s `cel` feature against the
//! very CRDs `collection-operator crds` prints (so the messages are the CRD's own), object
//! metadata, and finally the engine's own name and schema rules (what CreateCollection
//! would refuse), so that an apply never stops half-way on input it could have refused up
//! front. Errors name the file, the document (1-based, counting non-empty documents) and
//! its first line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use kube::core::cel::{CompiledSchema, ErrorKind, Validator, compile_schema};
use serde_json::Value;

use super::schema::Checker;
use crate::client::create_collection_request;
use crate::crd::{Collection, CollectionAlias, GROUP, RoutedAlias};
use crate::meta::names::{validate_alias, validate_collection_name, validate_database_name};
use crate::meta::schema::prepare_schema;
use crate::plan::ObjectKey;

/// The one API version this build reads.
pub const API_VERSION: &str = "collections.dev/v1alpha1";

/// Folders are searched at most this deep.
const MAX_DEPTH: usize = 32;

/// Default of the largest manifest file read (`--max-manifest-bytes`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

static MAX_FILE_BYTES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_FILE_BYTES);

/// Sets the largest manifest file [`load`] reads (a bigger one is a problem, never read
/// to its end: `x.yaml -> /dev/zero` must not exhaust memory).
pub fn set_max_file_bytes(bytes: u64) {
    MAX_FILE_BYTES.store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
}

fn max_file_bytes() -> u64 {
    MAX_FILE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// The kinds `up` and `plan` reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    /// `Collection`.
    Collection,
    /// `CollectionAlias`.
    CollectionAlias,
    /// `RoutedAlias` (expanded into generated Collections and a CollectionAlias).
    RoutedAlias,
}

impl Kind {
    /// The `kind` field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Collection => "Collection",
            Kind::CollectionAlias => "CollectionAlias",
            Kind::RoutedAlias => "RoutedAlias",
        }
    }
}

/// A resource: kind and `namespace/name`. Needed because a `Collection` and a
/// `CollectionAlias` may share a namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    /// The kind.
    pub kind: Kind,
    /// `namespace/name` (no namespace counts as `default`, like `kubectl apply`).
    pub key: ObjectKey,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.key)
    }
}

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file (`-` for standard input).
    pub path: PathBuf,
    /// 1-based index among the file's non-empty documents.
    pub document: usize,
    /// 1-based index inside a `kind: List` document.
    pub item: Option<usize>,
    /// First line of the document (0 when unknown).
    pub line: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.path.display(), self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        if self.line > 0 {
            write!(f, " (line {})", self.line)?;
        }
        Ok(())
    }
}

/// One validated resource.
#[derive(Debug, Clone)]
pub struct Manifest<K> {
    /// The typed resource (no `status`: the API server ignores it on create, and `up`
    /// must never take ownership claims from a file).
    pub resource: K,
    /// Where it was read.
    pub origin: Origin,
    /// The validated object as JSON (what `up` records as last applied).
    pub object: Value,
}

/// Everything read from the given paths.
#[derive(Debug, Clone, Default)]
pub struct ManifestSet {
    /// `Collection` resources, in file order.
    pub collections: Vec<Manifest<Collection>>,
    /// `CollectionAlias` resources, in file order.
    pub aliases: Vec<Manifest<CollectionAlias>>,
    /// `RoutedAlias` resources, in file order.
    pub routed: Vec<Manifest<RoutedAlias>>,
    /// Documents that were skipped, one line each.
    pub ignored: Vec<String>,
    /// Files read.
    pub files: usize,
}

/// Every problem found in the manifests; nothing is applied while there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// One line per problem, each naming its file and document.
    pub problems: Vec<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} manifest problem(s):", self.problems.len())?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// The last accepted object of each resource, so that edits are checked like updates
/// (the CRDs' immutability rules use `oldSelf`). A trait so that `up` can lend its state
/// without copying 10,000 objects on every pass.
pub trait Previous {
    /// The last accepted object of `id`, if any.
    fn previous(&self, id: &ResourceId) -> Option<&Value>;
}

impl Previous for HashMap<ResourceId, Value> {
    fn previous(&self, id: &ResourceId) -> Option<&Value> {
        self.get(id)
    }
}

/// Below this many files one thread reads them all.
const PARALLEL_FROM: usize = 256;

/// Reads and validates every manifest under `paths` (files, folders, or `-` for
/// standard input). Blocking: run it on the blocking pool from async code. Large sets
/// are read on several threads (parsing and CEL dominate `up`'s pass over 10,000 files);
/// the result and the order of problems are the same either way.
pub fn load(
    paths: &[PathBuf],
    previous: Option<&(dyn Previous + Sync)>,
) -> Result<ManifestSet, LoadError> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files, &mut problems);
    }
    let workers = if files.len() >= PARALLEL_FROM {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4)
    } else {
        1
    };
    let chunk = files.len().div_ceil(workers).max(1);
    let parts: Vec<(ManifestSet, Vec<String>)> = if workers == 1 {
        vec![load_files(&files, previous)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| scope.spawn(move || load_files(part, previous)))
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle.join().unwrap_or_else(|_| {
                        (
                            ManifestSet::default(),
                            vec!["internal error: a manifest reader thread panicked".to_string()],
                        )
                    })
                })
                .collect()
        })
    };
    let mut set = ManifestSet {
        files: files.len(),
        ..Default::default()
    };
    for (part, part_problems) in parts {
        set.collections.extend(part.collections);
        set.aliases.extend(part.aliases);
        set.routed.extend(part.routed);
        set.ignored.extend(part.ignored);
        problems.extend(part_problems);
    }
    find_duplicates(&set, &mut problems);
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(LoadError { problems })
    }
}

fn load_files(
    files: &[PathBuf],
    previous: Option<&(dyn Previous + Sync)>,
) -> (ManifestSet, Vec<String>) {
    let mut problems = Vec::new();
    let mut loader = Loader::new(previous.map(|p| p as &dyn Previous));
    let mut set = ManifestSet::default();
    for file in files {
        let text = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map(|_| text)
                .map_err(|error| format!("-: cannot read standard input: {error}"))
        } else {
            read_limited(file, max_file_bytes())
        };
        match text {
            Ok(text) => loader.file(file, &text, &mut set, &mut problems),
            Err(problem) => problems.push(problem),
        }
    }
    (set, problems)
}

/// Reads `path` up to `limit` bytes. Opened without blocking (a FIFO that appeared after
/// the walk does not hang the pass) and refused unless it is a regular file, or named on
/// the command line as a pipe (`plan -f <(generate)`), which is then read to the limit.
fn read_limited(path: &Path, limit: u64) -> Result<String, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let cannot = |error: std::io::Error| format!("{}: cannot read: {error}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let kind = file.metadata().map_err(cannot)?.file_type();
    if !kind.is_file() && !kind.is_fifo() {
        return Err(format!(
            "{}: not a regular file ({}): not read",
            path.display(),
            describe_type(&kind)
        ));
    }
    let mut bytes = Vec::new();
    let mut reader = std::io::Read::take(file, limit.saturating_add(1));
    loop {
        match reader.read_to_end(&mut bytes) {
            Ok(_) => break,
            // A pipe with no writer yet: wait for it (only named pipes get here).
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(error) => return Err(cannot(error)),
        }
    }
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{}: larger than {limit} bytes (--max-manifest-bytes): not read",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: cannot read: not UTF-8", path.display()))
}

fn describe_type(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

fn is_manifest_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn collect(path: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<String>) {
    if path.as_os_str() == "-" {
        files.push(path.to_path_buf());
        return;
    }
    match std::fs::metadata(path) {
        Err(error) => problems.push(format!("{}: cannot read: {error}", path.display())),
        Ok(meta) if meta.is_dir() => walk(path, 0, &mut HashSet::new(), files, problems),
        // A file named explicitly is read whatever its extension.
        Ok(_) => files.push(path.to_path_buf()),
    }
}

/// Collects manifest files below `dir`, sorted by name so the order (and therefore
/// error lists and tie-breaks) is stable. Names starting with `.` are skipped: editor
/// swap files, and the `..data` links of a mounted ConfigMap, which would otherwise
/// make every manifest appear twice. A symlinked folder is followed once per real folder
/// (`seen` holds device and inode), so links to the folder itself cannot make the walk
/// explode; only regular files are taken, a FIFO or a device named `*.yaml` is a problem.
fn walk(
    dir: &Path,
    depth: usize,
    seen: &mut HashSet<(u64, u64)>,
    files: &mut Vec<PathBuf>,
    problems: &mut Vec<String>,
) {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(dir) {
        Ok(meta) if !seen.insert((meta.dev(), meta.ino())) => return,
        _ => {}
    }
    if depth > MAX_DEPTH {
        problems.push(format!(
            "{}: folders nested deeper than {MAX_DEPTH} levels (a symlink loop?)",
            dir.display()
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            problems.push(format!("{}: cannot list: {error}", dir.display()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.path())
        .collect();
    paths.sort();
    for path in paths {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => walk(&path, depth + 1, seen, files, problems),
            Ok(meta) if meta.is_file() && is_manifest_file(&path) => files.push(path),
            Ok(meta) if is_manifest_file(&path) => problems.push(format!(
                "{}: not a regular file ({}): not read",
                path.display(),
                describe_type(&meta.file_type())
            )),
            Ok(_) => {}
            // A dangling symlink, or a file removed while listing: skip it, like kubectl.
            Err(_) => {}
        }
    }
}

fn find_duplicates(set: &ManifestSet, problems: &mut Vec<String>) {
    let mut seen: BTreeMap<ResourceId, &Origin> = BTreeMap::new();
    let ids = set
        .collections
        .iter()
        .map(|m| (id_of(Kind::Collection, &m.resource), &m.origin))
        .chain(
            set.aliases
                .iter()
                .map(|m| (id_of(Kind::CollectionAlias, &m.resource), &m.origin)),
        )
        .chain(
            set.routed
                .iter()
                .map(|m| (id_of(Kind::RoutedAlias, &m.resource), &m.origin)),
        );
    for (id, origin) in ids {
        if let Some(first) = seen.get(&id) {
            problems.push(format!("{origin}: {id} is already defined in {first}"));
        } else {
            seen.insert(id, origin);
        }
    }
}

/// The resource id of a typed resource.
pub fn id_of<K: kube::Resource>(kind: Kind, resource: &K) -> ResourceId {
    ResourceId {
        kind,
        key: crate::plan::intent::key_of(resource),
    }
}

struct KindSchema {
    openapi: Value,
    cel: CompiledSchema,
}

struct Loader<'a> {
    previous: Option<&'a dyn Previous>,
    checker: Checker,
    validator: Validator,
    collection: Option<KindSchema>,
    alias: Option<KindSchema>,
    routed: Option<KindSchema>,
    schema_problem: Option<String>,
}

impl<'a> Loader<'a> {
    fn new(previous: Option<&'a dyn Previous>) -> Self {
        let mut loader = Self {
            previous,
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

    fn file(&mut self, path: &Path, text: &str, set: &mut ManifestSet, problems: &mut Vec<String>) {
        let documents: Vec<(Value, u64)> =
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
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
                    self.document(item, origin, set, problems);
                }
            } else {
                self.document(value, origin, set, problems);
            }
        }
    }

    fn document(
        &mut self,
        value: Value,
        origin: Origin,
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
                    self.resource::<Collection>(Kind::Collection, value, &origin, problems)
                {
                    set.collections.push(manifest);
                }
            }
            "CollectionAlias" => {
                if let Some(manifest) = self.resource::<CollectionAlias>(
                    Kind::CollectionAlias,
                    value,
                    &origin,
                    problems,
                ) {
                    set.aliases.push(manifest);
                }
            }
            "RoutedAlias" => {
                if let Some(manifest) =
                    self.resource::<RoutedAlias>(Kind::RoutedAlias, value, &origin, problems)
                {
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

    fn resource<K>(
        &mut self,
        kind: Kind,
        mut value: Value,
        origin: &Origin,
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
        let label = match &key {
            Some(key) => format!("{origin}: {} {key}", kind.as_str()),
            None => format!("{origin}: {}", kind.as_str()),
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
            self.previous?.previous(&ResourceId {
                kind,
                key: key.clone(),
            })
        });
        if let Err(failures) = self.validator.validate_compiled(&schema.cel, &value, old) {
            for failure in failures.iter() {
                if !structural || failure.kind == ErrorKind::ValidationFailure {
                    errors.push(failure.to_string());
                }
            }
        }
        if !errors.is_empty() {
            problems.extend(errors.into_iter().map(|e| format!("{label}: {e}")));
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
            problems.extend(engine_problems.into_iter().map(|e| format!("{label}: {e}")));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, text).expect("write");
        path
    }

    const COLLECTION: &str = "\
apiVersion: collections.dev/v1alpha1
kind: Collection
metadata:
  name: products-v1
spec:
  coordinatorRef: {name: local}
  fields:
    - {name: id, dataType: Int64, isPrimaryKey: true}
    - {name: embedding, dataType: FloatVector, dim: 8}
";

    const ALIAS: &str = "\
apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata:
  name: products
spec:
  coordinatorRef: {name: local}
  collection: products_v1
";

    fn problems_of(text: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write(dir.path(), "m.yaml", text);
        match load(&[path], None) {
            Ok(set) => panic!(
                "expected problems, loaded {} collections",
                set.collections.len()
            ),
            Err(error) => error.problems,
        }
    }

    #[test]
    fn reads_folders_recursively_with_multi_document_yaml_json_and_lists() {
        let dir = tempfile::tempdir().expect("tmp");
        write(
            dir.path(),
            "a.yaml",
            &format!(
                "{COLLECTION}---\n---\napiVersion: collections.dev/v1alpha1\nkind: Coordinator\n\
                 metadata: {{name: local}}\nspec: {{external: {{endpoint: http://x:19530}}}}\n"
            ),
        );
        write(dir.path(), "nested/b.yml", ALIAS);
        write(
            dir.path(),
            "nested/deeper/c.json",
            r#"{"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
                {"apiVersion": "collections.dev/v1alpha1", "kind": "CollectionAlias",
                 "metadata": {"name": "other", "namespace": "team"},
                 "spec": {"coordinatorRef": {"name": "local"}, "collection": "products_v1",
                          "deletionPolicy": "Retain"}}]}"#,
        );
        write(dir.path(), ".hidden.yaml", "not: [valid");
        write(dir.path(), "notes.txt", "ignored");
        let set = load(&[dir.path().to_path_buf()], None).expect("loads");
        assert_eq!(set.files, 3);
        assert_eq!(set.collections.len(), 1);
        assert_eq!(set.aliases.len(), 2);
        assert_eq!(set.collections[0].resource.engine_name(), "products_v1");
        assert_eq!(set.collections[0].resource.spec.database, "default");
        assert_eq!(
            set.aliases[1].resource.metadata.namespace.as_deref(),
            Some("team")
        );
        assert_eq!(set.ignored.len(), 2, "{:?}", set.ignored);
        assert!(set.ignored[0].contains("document 2"), "{:?}", set.ignored);
        assert!(set.ignored[0].contains("Coordinator local ignored"));
        assert!(
            set.ignored[1].contains("document 1, item 1"),
            "{:?}",
            set.ignored
        );
    }

    #[test]
    fn status_in_a_file_is_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write(
            dir.path(),
            "a.yaml",
            &format!("{ALIAS}status:\n  collection: someone_elses\n"),
        );
        let set = load(&[path], None).expect("loads");
        assert!(set.aliases[0].resource.status.is_none());
    }

    #[test]
    fn unknown_fields_and_schema_violations_name_file_and_document() {
        let problems = problems_of(&format!(
            "{COLLECTION}---\n{}",
            ALIAS.replace("  collection: products_v1", "  collecton: products_v1")
        ));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].ends_with(
                "m.yaml: document 2 (line 1): CollectionAlias default/products: unknown field \"spec.collecton\""
            ) || problems[0].contains("document 2"),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("unknown field \"spec.collecton\""))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.collection: required field is missing"))
        );
        assert!(
            problems.iter().all(|p| p.contains("m.yaml: document 2")),
            "{problems:?}"
        );
    }

    #[test]
    fn cel_rules_of_the_crd_apply() {
        let problems =
            problems_of(&COLLECTION.replace("isPrimaryKey: true", "isPrimaryKey: false"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("exactly one field must be the primary key")),
            "{problems:?}"
        );
        let problems = problems_of(&COLLECTION.replace(", dim: 8", ""));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("vector fields need dim")),
            "{problems:?}"
        );
        let problems = problems_of(&COLLECTION.replace(
            "{name: embedding, dataType: FloatVector, dim: 8}",
            "{name: title, dataType: VarChar}",
        ));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("VarChar fields need maxLength")),
            "{problems:?}"
        );
    }

    #[test]
    fn ranges_patterns_and_engine_rules_apply() {
        let problems = problems_of(&COLLECTION.replace("dim: 8", "dim: 1"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.fields[1].dim: must be at least 2")),
            "{problems:?}"
        );
        let problems = problems_of(&COLLECTION.replace(
            "name: products-v1",
            "name: products-v1\n  namespace: Bad_NS",
        ));
        assert!(
            problems.iter().any(|p| p.contains("metadata.namespace")),
            "{problems:?}"
        );
        let problems = problems_of(&ALIAS.replace("collection: products_v1", "collection: 1bad"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.collection") && p.contains("does not match")),
            "{problems:?}"
        );
        // The engine refuses BinaryVector dims that are not a multiple of 8.
        let problems =
            problems_of(&COLLECTION.replace("FloatVector, dim: 8", "BinaryVector, dim: 12"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("the engine would refuse this schema")),
            "{problems:?}"
        );
        // Engine name derived from metadata.name must follow Milvus's rule.
        let problems = problems_of(&ALIAS.replace("name: products", "name: 9products"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("metadata.name (engine name")),
            "{problems:?}"
        );
        let problems =
            problems_of(&ALIAS.replace("collection: products_v1", "collection: products"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("cannot have the name of its target")),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_yaml_unknown_kinds_versions_and_duplicates_are_errors() {
        let problems = problems_of("apiVersion: [unclosed\n");
        assert!(problems[0].contains("m.yaml: invalid YAML"), "{problems:?}");
        let problems = problems_of(&COLLECTION.replace("kind: Collection", "kind: Colection"));
        assert!(
            problems[0].contains("unknown kind Colection"),
            "{problems:?}"
        );
        let problems = problems_of(&COLLECTION.replace("v1alpha1", "v1"));
        assert!(
            problems[0].contains("apiVersion collections.dev/v1 is not served"),
            "{problems:?}"
        );
        let problems = problems_of(&format!("{ALIAS}---\n{ALIAS}"));
        assert!(problems[0].contains("already defined in"), "{problems:?}");
        let problems = problems_of("- just\n- a list\n");
        assert!(problems[0].contains("not a mapping"), "{problems:?}");
    }

    #[test]
    fn a_collection_and_an_alias_may_share_a_name() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write(
            dir.path(),
            "a.yaml",
            &format!(
                "{}---\n{ALIAS}",
                COLLECTION
                    .replace("name: products-v1", "name: products\nspec_placeholder")
                    .replace("spec_placeholder\n", "")
                    .replace("spec:\n", "spec:\n  name: products_v1\n")
            ),
        );
        let set = load(&[path], None).expect("loads");
        assert_eq!(set.collections.len(), 1);
        assert_eq!(set.aliases.len(), 1);
    }

    #[test]
    fn large_folders_load_in_parallel_with_the_same_result_and_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let count = PARALLEL_FROM + 44;
        for index in 0..count {
            write(
                dir.path(),
                &format!("a-{index:04}.yaml"),
                &ALIAS.replace("name: products", &format!("name: alias-{index:04}")),
            );
        }
        let set = load(&[dir.path().to_path_buf()], None).expect("loads");
        assert_eq!(set.files, count);
        let names: Vec<String> = set
            .aliases
            .iter()
            .map(|a| a.resource.engine_name())
            .collect();
        let expected: Vec<String> = (0..count).map(|i| format!("alias_{i:04}")).collect();
        assert_eq!(names, expected);
        // Problems keep file order; a duplicate across threads is found.
        write(dir.path(), "a-0001.yaml", "kind: [broken\n");
        write(
            dir.path(),
            "a-0290.yaml",
            &ALIAS.replace("name: products", "name: alias-0000"),
        );
        let error = load(&[dir.path().to_path_buf()], None).expect_err("problems");
        assert_eq!(error.problems.len(), 2, "{:?}", error.problems);
        assert!(error.problems[0].contains("a-0001.yaml: invalid YAML"));
        assert!(error.problems[1].contains("a-0290.yaml: document 1"));
        assert!(error.problems[1].contains("already defined in"));
    }

    #[test]
    fn edits_are_checked_like_updates() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write(dir.path(), "a.yaml", COLLECTION);
        let first = load(std::slice::from_ref(&path), None).expect("loads");
        let mut previous = HashMap::new();
        previous.insert(
            id_of(Kind::Collection, &first.collections[0].resource),
            first.collections[0].object.clone(),
        );
        write(
            dir.path(),
            "a.yaml",
            &COLLECTION.replace("dim: 8", "dim: 16"),
        );
        let error = load(std::slice::from_ref(&path), Some(&previous)).expect_err("immutable");
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.contains("the schema is immutable")),
            "{:?}",
            error.problems
        );
        // deletionPolicy may change.
        write(
            dir.path(),
            "a.yaml",
            &format!("{COLLECTION}  deletionPolicy: Delete\n"),
        );
        load(&[path], Some(&previous)).expect("deletionPolicy is mutable");
    }
}
