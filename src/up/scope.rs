//! What a change of manifests touches: the resources a pass after a file edit must plan
//! so that its decisions equal those of a pass over everything, for the resources the
//! edit can affect. `up` plans only those after an edit (the cost of the change, not of
//! the folder) and keeps the periodic full pass for drift anywhere.
//!
//! The planner decides a resource from the engine names it claims (a collection's name,
//! an alias's name) and the one it refers to (an alias's target), and from the other
//! resources on those names (rivals that claim the same name, aliases waiting for a
//! target, a collection that cannot be dropped while aliases point at it). So a change
//! touches every resource on a name the changed resource was or is on, and the rivals of
//! those for the names they claim.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use super::manifest::{Kind, ResourceId};
use super::reconcile::{Intents, Name};

/// The engine names of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// The name it creates or binds: a collection's, or an alias's.
    pub claims: Name,
    /// The collection an alias points at.
    pub target: Option<Name>,
}

impl Footprint {
    fn names(&self) -> impl Iterator<Item = &Name> {
        std::iter::once(&self.claims).chain(self.target.as_ref())
    }
}

/// The footprints of every resource, and the resources on each engine name.
#[derive(Debug, Default)]
pub struct Index {
    footprints: HashMap<ResourceId, Footprint>,
    on_name: HashMap<Name, BTreeSet<ResourceId>>,
}

/// The footprints of the resources `intents` holds.
pub fn footprints(intents: &Intents) -> Vec<(ResourceId, Footprint)> {
    let collections = intents.collections.iter().filter_map(|intent| {
        let id = intents.resource(&intent.key)?.clone();
        let claims = (intent.database.clone(), intent.name.clone());
        Some((
            id,
            Footprint {
                claims,
                target: None,
            },
        ))
    });
    let aliases = intents.aliases.iter().filter_map(|intent| {
        let id = intents.resource(&intent.key)?.clone();
        Some((
            id,
            Footprint {
                claims: (intent.database.clone(), intent.alias.clone()),
                target: Some((intent.database.clone(), intent.target.clone())),
            },
        ))
    });
    collections.chain(aliases).collect()
}

impl Index {
    /// The index of every resource of a full pass.
    pub fn of(intents: &Intents) -> Self {
        let mut index = Index::default();
        for (id, footprint) in footprints(intents) {
            index.set(id, Some(footprint));
        }
        index
    }

    /// The footprint of `id`, if indexed.
    pub fn footprint(&self, id: &ResourceId) -> Option<&Footprint> {
        self.footprints.get(id)
    }

    /// Replaces the footprint of `id` (`None`: the resource is gone).
    pub fn set(&mut self, id: ResourceId, footprint: Option<Footprint>) {
        if let Some(old) = self.footprints.remove(&id) {
            for name in old.names() {
                if let Some(ids) = self.on_name.get_mut(name) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        self.on_name.remove(name);
                    }
                }
            }
        }
        if let Some(new) = footprint {
            for name in new.names() {
                self.on_name
                    .entry(name.clone())
                    .or_default()
                    .insert(id.clone());
            }
            self.footprints.insert(id, new);
        }
    }

    /// The resources a change on `names` touches: every resource on one of them (it
    /// claims it or points at it), and every resource claiming a name one of those
    /// claims (its rivals, which the planner weighs together).
    pub fn touched<'a>(&self, names: impl IntoIterator<Item = &'a Name>) -> BTreeSet<ResourceId> {
        let mut touched = BTreeSet::new();
        for name in names {
            if let Some(ids) = self.on_name.get(name) {
                touched.extend(ids.iter().cloned());
            }
        }
        let claimed: BTreeSet<&Name> = touched
            .iter()
            .filter_map(|id| self.footprints.get(id))
            .map(|footprint| &footprint.claims)
            .collect();
        let mut rivals = Vec::new();
        for name in claimed {
            for id in self.on_name.get(name).into_iter().flatten() {
                if self
                    .footprints
                    .get(id)
                    .is_some_and(|footprint| footprint.claims == *name)
                {
                    rivals.push(id.clone());
                }
            }
        }
        touched.extend(rivals);
        touched
    }
}

/// The names a change of one resource involves: those of its footprint before and
/// after the change.
pub fn changed_names(before: Option<&Footprint>, after: Option<&Footprint>) -> Vec<Name> {
    before
        .into_iter()
        .chain(after)
        .flat_map(|footprint| footprint.names().cloned())
        .collect()
}

/// What `up` keeps between passes to target a pass at a change: the index of engine
/// names, which file declares which resource, and the scope of the last pass.
#[derive(Debug, Default)]
pub struct Tracked {
    /// The engine names of every resource, as of the last pass.
    pub index: Index,
    files: HashMap<PathBuf, Vec<ResourceId>>,
    file_of: HashMap<ResourceId, PathBuf>,
    /// The resources of the last pass when it was targeted (`None`: it covered all).
    pub last_scope: Option<BTreeSet<ResourceId>>,
}

/// The resources of a set of changed files.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileChange {
    /// Declared by the changed files now.
    pub declared: Vec<ResourceId>,
    /// Declared by them before and no more (their deletion applies).
    pub removed: Vec<ResourceId>,
}

impl Tracked {
    /// Records which file declares each resource, after a full read.
    pub fn set_files(&mut self, declared: impl IntoIterator<Item = (PathBuf, ResourceId)>) {
        self.files.clear();
        self.file_of.clear();
        for (path, id) in declared {
            self.files.entry(path.clone()).or_default().push(id.clone());
            self.file_of.insert(id, path);
        }
    }

    /// Whether a file under `folder` declares a resource.
    pub fn declares_under(&self, folder: &std::path::Path) -> bool {
        self.files.keys().any(|path| path.starts_with(folder))
    }

    /// Takes what the `changed` files declare now (`declared`, read from exactly those
    /// files) in place of what they declared before. `None`, and nothing recorded, when
    /// a file-by-file update cannot stand for a full read: a resource also declared by
    /// an unchanged file (a duplicate the full read reports), or a RoutedAlias (its
    /// generated resources follow from the whole state).
    pub fn replace_files(
        &mut self,
        changed: &BTreeSet<PathBuf>,
        declared: Vec<(PathBuf, ResourceId)>,
    ) -> Option<FileChange> {
        let now: BTreeSet<&ResourceId> = declared.iter().map(|(_, id)| id).collect();
        for (_, id) in &declared {
            if id.kind == Kind::RoutedAlias {
                return None;
            }
            if let Some(path) = self.file_of.get(id)
                && !changed.contains(path)
            {
                return None;
            }
        }
        let mut removed = Vec::new();
        for path in changed {
            for id in self.files.get(path).into_iter().flatten() {
                if id.kind == Kind::RoutedAlias {
                    return None;
                }
                if !now.contains(id) {
                    removed.push(id.clone());
                }
            }
        }
        for path in changed {
            for id in self.files.remove(path).unwrap_or_default() {
                self.file_of.remove(&id);
            }
        }
        let mut change = FileChange {
            removed,
            ..Default::default()
        };
        for (path, id) in declared {
            self.files.entry(path.clone()).or_default().push(id.clone());
            self.file_of.insert(id.clone(), path);
            change.declared.push(id);
        }
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn id(kind: Kind, name: &str) -> ResourceId {
        ResourceId::new(kind, "default", name)
    }

    fn name(text: &str) -> Name {
        ("default".to_string(), text.to_string())
    }

    fn collection(claims: &str) -> Option<Footprint> {
        Some(Footprint {
            claims: name(claims),
            target: None,
        })
    }

    fn alias(claims: &str, target: &str) -> Option<Footprint> {
        Some(Footprint {
            claims: name(claims),
            target: Some(name(target)),
        })
    }

    /// Two collections with ten aliases each, as `up` holds them after a full pass.
    fn folder() -> Index {
        let mut index = Index::default();
        for c in 0..2 {
            index.set(
                id(Kind::Collection, &format!("coll-{c}")),
                collection(&format!("coll_{c}")),
            );
            for a in 0..10 {
                let n = c * 10 + a;
                index.set(
                    id(Kind::CollectionAlias, &format!("alias-{n}")),
                    alias(&format!("alias_{n}"), &format!("coll_{c}")),
                );
            }
        }
        index
    }

    #[test]
    fn an_alias_edit_touches_the_alias_both_targets_and_their_aliases_only() {
        let mut index = folder();
        let edited = id(Kind::CollectionAlias, "alias-0");
        let before = index.footprint(&edited).cloned();
        let after = alias("alias_0", "coll_1");
        index.set(edited.clone(), after.clone());
        let names = changed_names(before.as_ref(), after.as_ref());
        let touched = index.touched(&names);
        // The old and the new target, and whatever points at them (the serving gate and
        // a drop blocked by aliases depend on them); nothing else exists in this folder.
        assert!(touched.contains(&edited));
        assert!(touched.contains(&id(Kind::Collection, "coll-0")));
        assert!(touched.contains(&id(Kind::Collection, "coll-1")));
        assert_eq!(touched.len(), 22);

        // With a third, unrelated collection and its aliases, the edit leaves them out.
        index.set(id(Kind::Collection, "coll-2"), collection("coll_2"));
        index.set(id(Kind::CollectionAlias, "other"), alias("other", "coll_2"));
        let touched = index.touched(&names);
        assert!(!touched.contains(&id(Kind::Collection, "coll-2")));
        assert!(!touched.contains(&id(Kind::CollectionAlias, "other")));
    }

    #[test]
    fn rivals_on_a_claimed_name_come_along() {
        let mut index = Index::default();
        index.set(id(Kind::CollectionAlias, "a"), alias("shared", "coll_a"));
        // Another resource claims the same alias name, pointing elsewhere.
        index.set(id(Kind::CollectionAlias, "b"), alias("shared", "coll_b"));
        // A collection claiming an alias's name also rivals it.
        index.set(id(Kind::Collection, "shared"), collection("shared"));
        index.set(id(Kind::Collection, "coll-a"), collection("coll_a"));
        // Only the target of `a` changes: `a` is on coll_a, its rivals on `shared`.
        let touched = index.touched(&[name("coll_a")]);
        assert_eq!(
            touched,
            [
                id(Kind::CollectionAlias, "a"),
                id(Kind::CollectionAlias, "b"),
                id(Kind::Collection, "shared"),
                id(Kind::Collection, "coll-a"),
            ]
            .into()
        );
    }

    #[test]
    fn a_deleted_resource_leaves_the_index_and_its_names() {
        let mut index = folder();
        let gone = id(Kind::CollectionAlias, "alias-3");
        let before = index.footprint(&gone).cloned();
        index.set(gone.clone(), None);
        assert!(index.footprint(&gone).is_none());
        // Its names still count for this change (the engine alias must go)...
        let names = changed_names(before.as_ref(), None);
        assert_eq!(names, vec![name("alias_3"), name("coll_0")]);
        // ...but it is no longer found on them.
        assert!(!index.touched(&names).contains(&gone));
        assert!(index.touched(&[name("alias_3")]).is_empty());
    }

    #[test]
    fn footprints_follow_the_intents() {
        let mut intents = Intents::default();
        let spec: crate::crd::CollectionSpec = serde_json::from_value(serde_json::json!({
            "coordinatorRef": {"name": "local"},
            "database": "shop",
            "name": "products_v1",
            "fields": [{"name": "id", "dataType": "Int64", "isPrimaryKey": true}]
        }))
        .expect("spec");
        intents.push_collection(&crate::crd::Collection::new("products-v1", spec));
        let found = footprints(&intents);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.kind, Kind::Collection);
        assert_eq!(
            found[0].1.claims,
            ("shop".to_string(), "products_v1".to_string())
        );
        assert_eq!(found[0].1.target, None);
    }

    #[test]
    fn files_are_replaced_one_by_one_unless_a_resource_crosses_files() {
        let mut tracked = Tracked::default();
        let path = |name: &str| PathBuf::from(format!("m/{name}.yaml"));
        tracked.set_files([
            (path("a"), id(Kind::Collection, "a")),
            (path("a"), id(Kind::CollectionAlias, "a")),
            (path("b"), id(Kind::CollectionAlias, "b")),
        ]);
        // a.yaml now holds only the collection: the alias is removed.
        let changed: BTreeSet<PathBuf> = [path("a")].into();
        let change = tracked
            .replace_files(&changed, vec![(path("a"), id(Kind::Collection, "a"))])
            .expect("a file-by-file change");
        assert_eq!(change.declared, vec![id(Kind::Collection, "a")]);
        assert_eq!(change.removed, vec![id(Kind::CollectionAlias, "a")]);
        // c.yaml declares what b.yaml (unchanged) still declares: only a full read can
        // say which wins (it reports the duplicate); nothing is recorded.
        let changed: BTreeSet<PathBuf> = [path("c")].into();
        assert_eq!(
            tracked.replace_files(&changed, vec![(path("c"), id(Kind::CollectionAlias, "b"))]),
            None
        );
        // Moving it, both files changed, is fine.
        let changed: BTreeSet<PathBuf> = [path("b"), path("c")].into();
        let change = tracked
            .replace_files(&changed, vec![(path("c"), id(Kind::CollectionAlias, "b"))])
            .expect("a move");
        assert!(change.removed.is_empty());
        assert!(tracked.declares_under(Path::new("m")));
        assert!(!tracked.declares_under(Path::new("m/a")));
        // A deleted file removes all it declared; a RoutedAlias needs a full read.
        let changed: BTreeSet<PathBuf> = [path("c")].into();
        let change = tracked
            .replace_files(&changed, Vec::new())
            .expect("a deletion");
        assert_eq!(change.removed, vec![id(Kind::CollectionAlias, "b")]);
        assert_eq!(
            tracked.replace_files(&changed, vec![(path("c"), id(Kind::RoutedAlias, "r"))]),
            None
        );
    }
}
