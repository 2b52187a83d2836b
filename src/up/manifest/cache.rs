//! What the last read of each manifest file produced, so that a full read of a large
//! folder re-reads only the files that changed.
//!
//! A file's verdict (its accepted documents, ignored notes and problems) is a function
//! of its bytes and of the last accepted objects its checks looked up (`oldSelf` of the
//! CRDs' transition rules): nothing else about other files enters it (duplicates across
//! files are found afterwards, over the whole set, on every read). So a cached verdict is
//! reused only when the file's identity is the same *and* every last accepted object it
//! looked up is still the same. An unchanged file's own resources are usually the very
//! objects `up` accepted from it, so that holds; it fails when the previous object came
//! from elsewhere (a resource that moved between files, or was defined twice), and then
//! the file is checked again.
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

use super::{Kind, ManifestSet, Previous, ResourceId};
use crate::plan::intent::key_of;

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

/// One file's verdict.
#[derive(Debug, Clone, Default)]
pub(super) struct FileVerdict {
    /// The accepted resources (none when `problems` is not empty) and ignored notes.
    pub(super) set: ManifestSet,
    /// The file's problems.
    pub(super) problems: Vec<String>,
    /// The last accepted objects its checks looked up, as they were then.
    previous_seen: Vec<(ResourceId, Seen)>,
}

/// A last accepted object a check looked up, as it was then.
#[derive(Debug, Clone)]
enum Seen {
    /// There was none.
    Absent,
    /// The very object the file now declares (the usual case once `up` accepted it;
    /// not kept a second time).
    Own,
    /// Another object.
    Object(Value),
}

/// The object `set` declares for `id`.
fn declared<'a>(set: &'a ManifestSet, id: &ResourceId) -> Option<&'a Value> {
    let of = |kind, object: &'a Value, key: crate::plan::ObjectKey| {
        (kind == id.kind && key == id.key).then_some(object)
    };
    set.collections
        .iter()
        .find_map(|m| of(Kind::Collection, &m.object, key_of(&m.resource)))
        .or_else(|| {
            set.aliases
                .iter()
                .find_map(|m| of(Kind::CollectionAlias, &m.object, key_of(&m.resource)))
        })
        .or_else(|| {
            set.routed
                .iter()
                .find_map(|m| of(Kind::RoutedAlias, &m.object, key_of(&m.resource)))
        })
}

impl FileVerdict {
    /// A file's verdict: what it declares (nothing if it has problems), its problems,
    /// and the last accepted objects its checks looked up.
    pub(super) fn new(
        set: ManifestSet,
        problems: Vec<String>,
        looked_up: Vec<(ResourceId, Option<Value>)>,
    ) -> Self {
        let previous_seen = looked_up
            .into_iter()
            .map(|(id, object)| {
                let seen = match object {
                    None => Seen::Absent,
                    Some(object) if declared(&set, &id) == Some(&object) => Seen::Own,
                    Some(object) => Seen::Object(object),
                };
                (id, seen)
            })
            .collect();
        Self {
            set,
            problems,
            previous_seen,
        }
    }

    /// Whether every last accepted object the checks looked up is still the same.
    fn holds_with(&self, previous: Option<&(dyn Previous + Sync)>) -> bool {
        self.previous_seen.iter().all(|(id, seen)| {
            let now = previous.and_then(|previous| previous.previous(id));
            match seen {
                Seen::Absent => now.is_none(),
                Seen::Own => now.is_some() && now == declared(&self.set, id),
                Seen::Object(object) => now == Some(object),
            }
        })
    }
}

struct Entry {
    identity: Identity,
    verdict: FileVerdict,
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
    ) -> Option<(Identity, FileVerdict)> {
        let entry = self.entries.remove(path)?;
        (entry.identity == *identity && entry.verdict.holds_with(previous))
            .then_some((entry.identity, entry.verdict))
    }

    /// Keeps `verdict` for `path` (read when it had `identity`).
    pub(super) fn keep(&mut self, path: PathBuf, identity: Identity, verdict: FileVerdict) {
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
