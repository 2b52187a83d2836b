//! Manifest loading for `up` and `plan`: files or folders (recursively; `.yaml`, `.yml`,
//! `.json`; multi-document YAML; `kind: List`), keeping `Collection`, `CollectionAlias`
//! and `RoutedAlias` documents of `collections.dev/v1alpha1` and noting every other
//! document as ignored (a `Coordinator` is for `kubectl` users: `up` and `plan` talk to
//! the one engine named on their command line).
//!
//! - `walk.rs` finds the files (folder walk, size limit, file types);
//! - `parse.rs` splits a file into documents and `List` items and sorts them by kind;
//! - `validate.rs` checks each resource the way the API server would before anything
//!   reaches the engine: the CRD's OpenAPI schema (types, unknown fields, patterns,
//!   ranges; see [`super::schema`]), its CEL rules evaluated with `kube`'s `cel` feature
//!   against the very CRDs `collection-operator crds` prints (so the messages are the
//!   CRD's own), object metadata, and finally the engine's own name and schema rules
//!   (what CreateCollection would refuse), so that an apply never stops half-way on
//!   input it could have refused up front.
//!
//! Errors name the file, the document (1-based, counting non-empty documents) and a
//! line: the field's own when the problem is about a field of a YAML document (`locate.rs`),
//! else the document's first. [`load_by_file`] keeps the resources of the valid files
//! (what `up` applies while another file is broken); [`load`] is all or nothing (`plan`).

mod cache;
mod locate;
mod parse;
mod validate;
mod walk;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::crd::{Collection, CollectionAlias, RoutedAlias};
use crate::plan::ObjectKey;
pub use cache::FileCache;
use cache::{FileVerdict, Identity, KeptVerdict, Reused};
use parse::Loader;
pub use validate::Checked;
pub use walk::{DEFAULT_MAX_FILE_BYTES, set_max_file_bytes};
use walk::{collect, max_file_bytes, read_limited};

/// The one API version this build reads.
pub const API_VERSION: &str = "collections.dev/v1alpha1";

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

impl ResourceId {
    /// The resource `kind` `namespace/name`.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            key: ObjectKey {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
        }
    }
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

/// What the manifests under some paths hold, file by file.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The resources of every file without problems.
    pub set: ManifestSet,
    /// Every problem, in file order, each naming its file (and document and line).
    pub problems: Vec<String>,
    /// Files with a problem: none of their resources is in `set`.
    pub broken: BTreeSet<PathBuf>,
    /// Files read and checked (the others' verdicts came from the cache).
    pub read: usize,
    /// Only from [`load_by_file_reusing`]: the resources of files whose cached verdict
    /// held, whose objects are the last accepted ones (`previous`), in file order (by
    /// kind, as in `set`); not in `set`.
    pub kept: Vec<(ResourceId, Origin)>,
}

/// Reads and validates every manifest under `paths`; any problem is an error (what
/// `plan` and a one-shot apply need: all or nothing).
pub fn load(
    paths: &[PathBuf],
    previous: Option<&(dyn Previous + Sync)>,
) -> Result<ManifestSet, LoadError> {
    let loaded = load_by_file(paths, previous);
    if loaded.problems.is_empty() {
        Ok(loaded.set)
    } else {
        Err(LoadError {
            problems: loaded.problems,
        })
    }
}

/// Reads and validates every manifest under `paths` (files, folders, or `-` for
/// standard input), keeping the resources of the files that have no problem. A file
/// with any problem contributes no resource, so a half-written file never yields part
/// of its resources; a resource defined twice makes the later file broken. Blocking:
/// run it on the blocking pool from async code. Large sets are read on several threads
/// (parsing and CEL dominate `up`'s pass over 10,000 files); the result and the order
/// of problems are the same either way.
pub fn load_by_file(paths: &[PathBuf], previous: Option<&(dyn Previous + Sync)>) -> Loaded {
    load_by_file_cached(paths, previous, &mut FileCache::default())
}

/// [`load_by_file`], re-reading only the files whose verdict in `cache` no longer holds
/// (see [`cache`]); the result is the same as reading everything. Checks across files
/// (a resource defined twice, one that moved, a file that is gone) run over the whole
/// set every time.
pub fn load_by_file_cached(
    paths: &[PathBuf],
    previous: Option<&(dyn Previous + Sync)>,
    cache: &mut FileCache,
) -> Loaded {
    load_reusing(paths, previous, cache, true)
}

/// [`load_by_file_cached`] for a caller that keeps the last accepted objects itself
/// (`up`): the resources of a file whose cached verdict holds and whose objects are the
/// ones `previous` gives come in [`Loaded::kept`], by id, rather than as copies in
/// [`Loaded::set`]. With 10,000 resources the copies would double what `up` holds.
/// A verdict whose resources are not the previous objects is not cached: the caller
/// accepts them, which would invalidate it.
pub fn load_by_file_reusing(
    paths: &[PathBuf],
    previous: Option<&(dyn Previous + Sync)>,
    cache: &mut FileCache,
) -> Loaded {
    load_reusing(paths, previous, cache, false)
}

/// A file's verdict in a read: taken from the cache, or made by reading the file.
enum Verdict {
    Cached(KeptVerdict, Reused),
    Read(FileVerdict),
}

/// Resources defined a second time, found in file order.
#[derive(Default)]
struct Duplicates {
    first: HashMap<ResourceId, Origin>,
    /// The problems of each kind (reported collections first, then aliases, then
    /// routed aliases, each in file order).
    problems: [Vec<String>; 3],
    /// The files of the second definitions.
    files: BTreeSet<PathBuf>,
}

impl Duplicates {
    fn check(&mut self, id: ResourceId, origin: &Origin) {
        if let Some(first) = self.first.get(&id) {
            let bucket = match id.kind {
                Kind::Collection => 0,
                Kind::CollectionAlias => 1,
                Kind::RoutedAlias => 2,
            };
            self.problems[bucket].push(format!("{origin}: {id} is already defined in {first}"));
            self.files.insert(origin.path.clone());
        } else {
            self.first.insert(id, origin.clone());
        }
    }

    fn check_set(&mut self, set: &ManifestSet) {
        for m in &set.collections {
            self.check(id_of(Kind::Collection, &m.resource), &m.origin);
        }
        for m in &set.aliases {
            self.check(id_of(Kind::CollectionAlias, &m.resource), &m.origin);
        }
        for m in &set.routed {
            self.check(id_of(Kind::RoutedAlias, &m.resource), &m.origin);
        }
    }
}

/// Moves the resources and notes of `from` to the end of `to`.
fn append(to: &mut ManifestSet, from: ManifestSet) {
    to.collections.extend(from.collections);
    to.aliases.extend(from.aliases);
    to.routed.extend(from.routed);
    to.ignored.extend(from.ignored);
}

/// The read behind [`load_by_file_cached`] (`materialize`: cached resources as
/// copies in `set`) and [`load_by_file_reusing`] (by id in `kept`).
fn load_reusing(
    paths: &[PathBuf],
    previous: Option<&(dyn Previous + Sync)>,
    cache: &mut FileCache,
    materialize: bool,
) -> Loaded {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files, &mut problems);
    }
    cache.begin(max_file_bytes());
    let now = std::time::SystemTime::now();
    // Identities are taken before the files are read: a write in between leaves a
    // verdict newer than its identity, which only costs a read next time.
    let mut verdicts: Vec<Option<(Option<Identity>, Verdict)>> = files
        .iter()
        .map(|file| {
            let identity = (file.as_os_str() != "-")
                .then(|| cache.identity(file, now))
                .flatten()?;
            let (identity, kept) = cache.take(file, &identity, previous)?;
            let reused = kept.reuse(file, previous, materialize)?;
            Some((Some(identity), Verdict::Cached(kept, reused)))
        })
        .collect();
    cache.forget_rest();
    let to_read: Vec<(usize, Option<Identity>)> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, verdict)| verdict.is_none())
        .map(|(index, _)| {
            let file = &files[index];
            let identity = (file.as_os_str() != "-")
                .then(|| cache.identity(file, now))
                .flatten();
            (index, identity)
        })
        .collect();
    let workers = if to_read.len() >= PARALLEL_FROM {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4)
    } else {
        1
    };
    let chunk = to_read.len().div_ceil(workers).max(1);
    let read_part = |part: &[(usize, Option<Identity>)]| {
        let names: Vec<&Path> = part
            .iter()
            .map(|(index, _)| files[*index].as_path())
            .collect();
        load_files(&names, previous)
    };
    let parts: Vec<Vec<(FileVerdict, bool)>> = if workers == 1 {
        vec![read_part(&to_read)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = to_read
                .chunks(chunk)
                .map(|part| scope.spawn(move || read_part(part)))
                .collect();
            handles
                .into_iter()
                .zip(to_read.chunks(chunk))
                .map(|(handle, part)| {
                    handle.join().unwrap_or_else(|_| {
                        part.iter()
                            .map(|_| {
                                let problem = "internal error: a manifest reader thread panicked";
                                let verdict = FileVerdict::new(
                                    ManifestSet::default(),
                                    vec![problem.to_string()],
                                    Vec::new(),
                                );
                                (verdict, false)
                            })
                            .collect()
                    })
                })
                .collect()
        })
    };
    let read = to_read.len();
    for ((index, identity), (verdict, readable)) in
        to_read.into_iter().zip(parts.into_iter().flatten())
    {
        // A file that could not be read is tried again on every pass.
        verdicts[index] = Some((identity.filter(|_| readable), Verdict::Read(verdict)));
    }
    let mut loaded = Loaded {
        set: ManifestSet {
            files: files.len(),
            ..Default::default()
        },
        read,
        ..Loaded::default()
    };
    let mut duplicates = Duplicates::default();
    for (file, verdict) in files.into_iter().zip(verdicts) {
        let Some((identity, verdict)) = verdict else {
            continue;
        };
        let (kept, file_problems) = match verdict {
            Verdict::Cached(kept, reused) => {
                loaded.set.ignored.extend(kept.ignored().iter().cloned());
                match reused {
                    Reused::Set(set) => {
                        duplicates.check_set(&set);
                        append(&mut loaded.set, set);
                    }
                    Reused::Previous(ids) => {
                        for (id, origin) in &ids {
                            duplicates.check(id.clone(), origin);
                        }
                        loaded.kept.extend(ids);
                    }
                }
                let file_problems = kept.problems().to_vec();
                (Some(kept), file_problems)
            }
            Verdict::Read(verdict) => {
                let (kept, verdict) = KeptVerdict::split(verdict, materialize);
                duplicates.check_set(&verdict.set);
                append(&mut loaded.set, verdict.set);
                (kept, verdict.problems)
            }
        };
        if !file_problems.is_empty() {
            loaded.broken.insert(file.clone());
        }
        problems.extend(file_problems);
        if let (Some(identity), Some(kept)) = (identity, kept) {
            cache.keep(file, identity, kept);
        }
    }
    let Duplicates {
        problems: duplicate_problems,
        files: duplicated,
        ..
    } = duplicates;
    problems.extend(duplicate_problems.into_iter().flatten());
    if !duplicated.is_empty() {
        let set = &mut loaded.set;
        set.collections
            .retain(|m| !duplicated.contains(&m.origin.path));
        set.aliases.retain(|m| !duplicated.contains(&m.origin.path));
        set.routed.retain(|m| !duplicated.contains(&m.origin.path));
        loaded
            .kept
            .retain(|(_, origin)| !duplicated.contains(&origin.path));
        loaded.broken.extend(duplicated);
    }
    loaded.problems = problems;
    loaded
}

/// Reads and checks `files`, one verdict each, with whether the file could be read.
fn load_files(
    files: &[&Path],
    previous: Option<&(dyn Previous + Sync)>,
) -> Vec<(FileVerdict, bool)> {
    let mut loader = Loader::new(previous.map(|p| p as &dyn Previous));
    let mut verdicts = Vec::with_capacity(files.len());
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
        let mut set = ManifestSet::default();
        let mut problems = Vec::new();
        let readable = text.is_ok();
        match text {
            Ok(text) => loader.file(file, &text, &mut set, &mut problems),
            Err(problem) => problems.push(problem),
        }
        if !problems.is_empty() {
            set.collections.clear();
            set.aliases.clear();
            set.routed.clear();
        }
        let looked_up = std::mem::take(&mut loader.previous_seen);
        let verdict = FileVerdict::new(set, problems, looked_up);
        verdicts.push((verdict, readable));
    }
    verdicts
}

/// The resource id of a typed resource.
pub fn id_of<K: kube::Resource>(kind: Kind, resource: &K) -> ResourceId {
    ResourceId {
        kind,
        key: crate::plan::intent::key_of(resource),
    }
}

#[cfg(test)]
mod tests;
