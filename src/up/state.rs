//! What `up` remembers across restarts, in `<data-dir>/up-state.json`: for every resource
//! it has seen, the last manifest it accepted, when it first saw it, and what it owns in
//! the engine (the collection ID it created or adopted, the target it bound an alias to).
//!
//! This is `up`'s stand-in for the `status` that the Kubernetes controllers keep on each
//! resource: without it a restarted `up` would find its own collections and aliases in the
//! engine and report them as `AlreadyExists`, and a manifest deleted while `up` was down
//! would be forgotten instead of having its `deletionPolicy` applied.
//!
//! The file is written atomically (temporary file, fsync, rename, fsync of the folder), and
//! before each apply phase the creates and binds about to be sent are recorded as pending:
//! if `up` dies after the engine acknowledged one but before the result was recorded, the
//! next run recognises the object as its own instead of calling it `AlreadyExists`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::manifest::{Kind, ResourceId};
use crate::plan::ObjectKey;

/// File name inside the data directory.
pub const FILE_NAME: &str = "up-state.json";

/// Format version written in the file.
const VERSION: u32 = 1;

/// One resource `up` manages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// When `up` first saw the resource (RFC 3339, seconds): its seniority when two
    /// resources claim one engine name, so the one that was there first keeps it.
    pub since: String,
    /// The last accepted manifest (`apiVersion`, `kind`, `metadata`, `spec`). Used to
    /// build the intent while its file is broken or after it was deleted, and as
    /// `oldSelf` for the CRDs' immutability rules.
    pub manifest: Value,
    /// The manifest file is gone: `deletionPolicy` is being applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Collections: the engine ID this resource created or adopted (a string, as in
    /// `status.collectionID`: int64 exceeds JSON's exact integers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_id: Option<String>,
    /// Aliases: the target this resource bound the alias to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
    /// A CreateCollection (`"create"`) or CreateAlias/AlterAlias (the target) was sent
    /// and its outcome not yet recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
}

impl Record {
    /// The owned collection ID as a number.
    pub fn owned_id(&self) -> Option<i64> {
        self.collection_id.as_deref().and_then(|id| id.parse().ok())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    version: u32,
    #[serde(default)]
    collections: BTreeMap<String, Record>,
    #[serde(default)]
    aliases: BTreeMap<String, Record>,
}

/// The state, keyed by resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Every resource `up` manages, including deleted ones still being cleaned up.
    pub records: BTreeMap<ResourceId, Record>,
}

fn parse_key(text: &str) -> Option<ObjectKey> {
    let (namespace, name) = text.split_once('/')?;
    Some(ObjectKey {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// Path of the state file in `data_dir`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

impl State {
    /// Reads the state file; a missing file is an empty state (first start).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", path.display()));
            }
        };
        let file: File = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid up state file (move it away to start over: \
                 up would then treat existing engine objects as not its own)",
                path.display()
            )
        })?;
        anyhow::ensure!(
            file.version == VERSION,
            "{}: state format version {} is not supported (this build writes {VERSION})",
            path.display(),
            file.version
        );
        let mut records = BTreeMap::new();
        for (kind, map) in [
            (Kind::Collection, file.collections),
            (Kind::CollectionAlias, file.aliases),
        ] {
            for (key, record) in map {
                let key = parse_key(&key)
                    .with_context(|| format!("{}: bad resource key {key:?}", path.display()))?;
                records.insert(ResourceId { kind, key }, record);
            }
        }
        Ok(Self { records })
    }

    /// Writes the state atomically. Serialises borrowed records: a copy of 10,000
    /// manifests just to write them would double up's memory at every save.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct FileRef<'a> {
            version: u32,
            collections: BTreeMap<String, &'a Record>,
            aliases: BTreeMap<String, &'a Record>,
        }
        let mut file = FileRef {
            version: VERSION,
            collections: BTreeMap::new(),
            aliases: BTreeMap::new(),
        };
        for (id, record) in &self.records {
            let map = match id.kind {
                Kind::Collection => &mut file.collections,
                Kind::CollectionAlias => &mut file.aliases,
            };
            map.insert(id.key.to_string(), record);
        }
        let bytes = serde_json::to_vec(&file).context("encoding the up state")?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let temporary = path.with_extension("json.tmp");
        {
            let mut out = std::fs::File::create(&temporary)
                .with_context(|| format!("creating {}", temporary.display()))?;
            out.write_all(&bytes)
                .and_then(|()| out.sync_all())
                .with_context(|| format!("writing {}", temporary.display()))?;
        }
        std::fs::rename(&temporary, path)
            .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))?;
        // The rename is durable only once the folder is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        Ok(())
    }
}

impl super::manifest::Previous for State {
    fn previous(&self, id: &ResourceId) -> Option<&Value> {
        self.records
            .get(id)
            .filter(|record| !record.deleted)
            .map(|record| &record.manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = path_in(dir.path());
        assert_eq!(State::load(&path).expect("empty"), State::default());
        let mut state = State::default();
        state.records.insert(
            ResourceId {
                kind: Kind::CollectionAlias,
                key: ObjectKey {
                    namespace: "default".into(),
                    name: "products".into(),
                },
            },
            Record {
                since: "2026-01-01T00:00:00Z".into(),
                manifest: serde_json::json!({"kind": "CollectionAlias"}),
                deleted: false,
                collection_id: None,
                bound: Some("products_v1".into()),
                pending: None,
            },
        );
        state.records.insert(
            ResourceId {
                kind: Kind::Collection,
                key: ObjectKey {
                    namespace: "default".into(),
                    name: "products".into(),
                },
            },
            Record {
                since: "2026-01-01T00:00:00Z".into(),
                manifest: serde_json::json!({"kind": "Collection"}),
                deleted: true,
                collection_id: Some("460000000000000001".into()),
                bound: None,
                pending: Some("create".into()),
            },
        );
        state.save(&path).expect("save");
        let loaded = State::load(&path).expect("load");
        assert_eq!(loaded, state);
        assert!(!dir.path().join("up-state.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = path_in(dir.path());
        std::fs::write(&path, "{not json").expect("write");
        let error = State::load(&path).expect_err("corrupt");
        assert!(format!("{error:#}").contains("not a valid up state file"));
    }
}
