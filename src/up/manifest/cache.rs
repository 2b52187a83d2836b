//! What the last read of each manifest file produced, so that a full read of a large
//! folder re-reads only the files that changed.
//!
//! A file's verdict (its accepted documents, ignored notes and problems) is a function
//! of its bytes and of the last accepted objects its checks looked up (`oldSelf` of the
//! CRDs' transition rules): nothing else about other files enters it (duplicates across
//! files are found afterwards, over the whole set, on every read). So a cached verdict is
//! reused only when the file's identity is the same *and* every last accepted object it
//! looked up is still the same (told by a fingerprint: the cache keeps no copy of them).
//! An unchanged file's own resources are usually the very objects `up` accepted from it:
//! then the verdict keeps only their ids and places, as the last accepted objects are
//! them, and `up` takes them by id without a copy. The check fails when the previous
//! object came from elsewhere (a resource that moved between files, or was defined
//! twice), and then the file is checked again.
//!
//! The identity is path, device, inode, size, and modification and change times with
//! nanoseconds. The change time moves on every write, also when an editor or `touch -d`
//! puts the modification time back. Timestamps are only as fine as the file system's
//! clock (a few milliseconds, or a whole second on some), so two same-size writes close
//! together can leave the same identity: a file whose times are younger than
//! [`SETTLE`] when it is read is not cached (git's "racily clean" rule), and is read
//! again on the next pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{Kind, ManifestSet, Origin, Previous, ResourceId, id_of};

/// A file changed this recently may change again without its identity changing.
pub const SETTLE: Duration = Duration::from_secs(2);

/// What identifies one version of a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Identity {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Identity {
    /// The identity of `path` (following links, as the read does), if it is settled:
    /// its times are older than `settle` before `now`.
    pub(super) fn of(path: &Path, now: SystemTime, settle: Duration) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        let identity = Identity {
            device: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        };
        let horizon = now
            .checked_sub(settle)?
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?;
        let horizon = (horizon.as_secs() as i64, i64::from(horizon.subsec_nanos()));
        (identity.modified < horizon && identity.changed < horizon).then_some(identity)
    }
}

/// A JSON object's fingerprint: two SipHash digests of it under different prefixes
/// (128 bits), so that a verdict can tell whether a last accepted object is still the
/// one it was checked against without keeping a copy of it (two different objects share
/// a fingerprint with odds of about 2^-128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint(u64, u64);

impl Fingerprint {
    pub(super) fn of(object: &Value) -> Self {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let digest = |prefix: u8| {
            let mut hasher = DefaultHasher::new();
            prefix.hash(&mut hasher);
            object.hash(&mut hasher);
            hasher.finish()
        };
        Self(digest(0), digest(1))
    }
}

/// A last accepted object a check looked up: its fingerprint, or `None` when there was
/// none.
pub(super) type Seen = (ResourceId, Option<Fingerprint>);

/// One file's verdict, as its read made it.
#[derive(Debug, Clone, Default)]
pub(super) struct FileVerdict {
    /// The accepted resources (none when `problems` is not empty) and ignored notes.
    pub(super) set: ManifestSet,
    /// The file's problems.
    pub(super) problems: Vec<String>,
    /// The last accepted objects its checks looked up, as they were then.
    previous_seen: Vec<Seen>,
}

impl FileVerdict {
    /// A file's verdict: what it declares (nothing if it has problems), its problems,
    /// and the last accepted objects its checks looked up.
    pub(super) fn new(set: ManifestSet, problems: Vec<String>, previous_seen: Vec<Seen>) -> Self {
        Self {
            set,
            problems,
            previous_seen,
        }
    }

    /// Where each declared resource sits, if every one is the very last accepted
    /// object of its id that the checks looked up (the usual case once `up` accepted
    /// the file): then the objects need not be kept, `previous` holds them.
    fn places_if_previous(&self) -> Option<Vec<(ResourceId, Place)>> {
        let set = &self.set;
        let declared = set
            .collections
            .iter()
            .map(|m| (id_of(Kind::Collection, &m.resource), &m.origin, &m.object))
            .chain(set.aliases.iter().map(|m| {
                (
                    id_of(Kind::CollectionAlias, &m.resource),
                    &m.origin,
                    &m.object,
                )
            }))
            .chain(
                set.routed
                    .iter()
                    .map(|m| (id_of(Kind::RoutedAlias, &m.resource), &m.origin, &m.object)),
            );
        // Each id looked up once (a resource declared twice is the duplicate check's).
        let mut seen: HashMap<&ResourceId, Option<Fingerprint>> = HashMap::new();
        for (id, fingerprint) in &self.previous_seen {
            seen.entry(id)
                .and_modify(|once| *once = None)
                .or_insert(*fingerprint);
        }
        let mut places: Vec<(ResourceId, Place)> = Vec::new();
        for (id, origin, object) in declared {
            let fingerprint = seen.get(&id).copied().flatten()?;
            if fingerprint != Fingerprint::of(object) {
                return None;
            }
            places.push((id, Place::of(origin)));
        }
        Some(places)
    }
}

/// Where in its file a resource is declared (the path is the cache's key).
#[derive(Debug, Clone)]
struct Place {
    document: usize,
    item: Option<usize>,
    line: u64,
}

impl Place {
    fn of(origin: &Origin) -> Self {
        Self {
            document: origin.document,
            item: origin.item,
            line: origin.line,
        }
    }

    fn origin(&self, path: &Path) -> Origin {
        Origin {
            path: path.to_path_buf(),
            document: self.document,
            item: self.item,
            line: self.line,
        }
    }
}

/// What a kept verdict declares.
#[derive(Debug)]
enum Declares {
    /// Resources whose objects are the last accepted ones (`previous`): their ids and
    /// places, collections first, then aliases, then routed aliases, each in file order.
    Previous(Vec<(ResourceId, Place)>),
    /// Resources whose objects are the file's own (a verdict made against other last
    /// accepted objects, kept only by [`super::load_by_file_cached`]).
    Own(ManifestSet),
}

/// A file's verdict as the cache keeps it: no copy of any object the previous objects
/// hold.
#[derive(Debug)]
pub(super) struct KeptVerdict {
    declares: Declares,
    ignored: Vec<String>,
    problems: Vec<String>,
    previous_seen: Vec<Seen>,
}

/// What a kept verdict that still holds gives back.
pub(super) enum Reused {
    /// The file's own resources, as a fresh read would give them.
    Set(ManifestSet),
    /// Resources whose objects are the last accepted ones, by id and origin
    /// (collections first, then aliases, then routed aliases, each in file order).
    Previous(Vec<(ResourceId, Origin)>),
}

impl KeptVerdict {
    /// The verdict to keep for `verdict`, and what of it the pass takes. With
    /// `own_too`, also a verdict whose resources are not the last accepted objects
    /// (kept as a copy); without, such a verdict (which `up` invalidates by accepting
    /// its resources) is not kept.
    pub(super) fn split(verdict: FileVerdict, own_too: bool) -> (Option<Self>, FileVerdict) {
        let kept = |declares| KeptVerdict {
            declares,
            ignored: verdict.set.ignored.clone(),
            problems: verdict.problems.clone(),
            previous_seen: verdict.previous_seen.clone(),
        };
        let kept = match verdict.places_if_previous() {
            Some(places) => Some(kept(Declares::Previous(places))),
            None if own_too => Some(kept(Declares::Own(ManifestSet {
                collections: verdict.set.collections.clone(),
                aliases: verdict.set.aliases.clone(),
                routed: verdict.set.routed.clone(),
                ..ManifestSet::default()
            }))),
            None => None,
        };
        (kept, verdict)
    }

    /// Whether every last accepted object the checks looked up is still the same.
    fn holds_with(&self, previous: Option<&(dyn Previous + Sync)>) -> bool {
        self.previous_seen.iter().all(|(id, seen)| {
            let now = previous.and_then(|previous| previous.previous(id));
            match (seen, now) {
                (None, None) => true,
                (Some(fingerprint), Some(now)) => *fingerprint == Fingerprint::of(now),
                _ => false,
            }
        })
    }

    /// The file's problems.
    pub(super) fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The file's ignored notes.
    pub(super) fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// What the verdict declares, for the file `path`: with `materialize`, as
    /// resources (the previous objects copied and typed again), else by id.
    /// `None` if a previous object is gone or no longer types (the file is read again).
    pub(super) fn reuse(
        &self,
        path: &Path,
        previous: Option<&(dyn Previous + Sync)>,
        materialize: bool,
    ) -> Option<Reused> {
        let places = match &self.declares {
            Declares::Own(set) => return Some(Reused::Set(set.clone())),
            Declares::Previous(places) => places,
        };
        if !materialize {
            let ids = places
                .iter()
                .map(|(id, place)| (id.clone(), place.origin(path)))
                .collect();
            return Some(Reused::Previous(ids));
        }
        fn typed<K: serde::de::DeserializeOwned>(
            object: &Value,
            origin: Origin,
        ) -> Option<super::Manifest<K>> {
            Some(super::Manifest {
                resource: K::deserialize(object).ok()?,
                origin,
                object: object.clone(),
            })
        }
        let mut set = ManifestSet::default();
        for (id, place) in places {
            let object = previous?.previous(id)?;
            let origin = place.origin(path);
            match id.kind {
                Kind::Collection => set.collections.push(typed(object, origin)?),
                Kind::CollectionAlias => set.aliases.push(typed(object, origin)?),
                Kind::RoutedAlias => set.routed.push(typed(object, origin)?),
            }
        }
        Some(Reused::Set(set))
    }
}

struct Entry {
    identity: Identity,
    verdict: KeptVerdict,
}

/// The verdicts of the files read by the last [`super::load_by_file_cached`], by path.
pub struct FileCache {
    entries: HashMap<PathBuf, Entry>,
    /// The size limit the verdicts were made with.
    max_file_bytes: u64,
    settle: Duration,
}

impl Default for FileCache {
    fn default() -> Self {
        Self::with_settle(SETTLE)
    }
}

impl FileCache {
    /// A cache that keeps files whose times are older than `settle` (tests use a short
    /// one rather than waiting [`SETTLE`]).
    pub fn with_settle(settle: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            max_file_bytes: 0,
            settle,
        }
    }

    /// Starts a read with size limit `max_file_bytes`: verdicts made under another
    /// limit are dropped.
    pub(super) fn begin(&mut self, max_file_bytes: u64) {
        if self.max_file_bytes != max_file_bytes {
            self.entries.clear();
            self.max_file_bytes = max_file_bytes;
        }
    }

    /// The settled identity of `path` as of `now`.
    pub(super) fn identity(&self, path: &Path, now: SystemTime) -> Option<Identity> {
        Identity::of(path, now, self.settle)
    }

    /// The verdict of `path` if its identity is `identity` and it still holds.
    pub(super) fn take(
        &mut self,
        path: &Path,
        identity: &Identity,
        previous: Option<&(dyn Previous + Sync)>,
    ) -> Option<(Identity, KeptVerdict)> {
        let entry = self.entries.remove(path)?;
        (entry.identity == *identity && entry.verdict.holds_with(previous))
            .then_some((entry.identity, entry.verdict))
    }

    /// Keeps `verdict` for `path` (read when it had `identity`).
    pub(super) fn keep(&mut self, path: PathBuf, identity: Identity, verdict: KeptVerdict) {
        self.entries.insert(path, Entry { identity, verdict });
    }

    /// Forgets every verdict not taken since the read began: the files that are gone.
    pub(super) fn forget_rest(&mut self) {
        self.entries.clear();
    }

    /// How many files have a verdict.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file has a verdict.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
