//! What a change of manifests touches: the resources a pass after a file edit must plan
//! so that its decisions equal those of a pass over everything, for the resources the
//! edit can affect. `up` plans only those after an edit (the cost of the change, not of
//! the folder) and keeps the periodic full pass for drift anywhere.
//!
//! The planner decides a resource from the engine names it claims (a collection's name,
//! an alias's name) and the one it refers to (an alias's target), and from the other
//! resources on those names (rivals that claim the same name, aliases waiting for a
//! target, a collection that cannot be dropped while aliases point at it). So a change
//! touches every resource on a name the changed resource was or is on, and, to decide
//! those as a full pass would, the claimers of every name they claim or point at, and of
//! theirs in turn (a property test checks both against the planner).

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
    /// claims it or points at it), and everything the planner weighs to decide those:
    /// the claimers of each name they claim (rivals) or point at (the target's
    /// collection and its rivals), and so on for those, until nothing is added.
    pub fn touched<'a>(&self, names: impl IntoIterator<Item = &'a Name>) -> BTreeSet<ResourceId> {
        let mut touched = BTreeSet::new();
        for name in names {
            if let Some(ids) = self.on_name.get(name) {
                touched.extend(ids.iter().cloned());
            }
        }
        let mut pending: Vec<ResourceId> = touched.iter().cloned().collect();
        let mut seen_names: BTreeSet<&Name> = BTreeSet::new();
        while let Some(id) = pending.pop() {
            let Some(footprint) = self.footprints.get(&id) else {
                continue;
            };
            for name in footprint.names() {
                if !seen_names.insert(name) {
                    continue;
                }
                for claimer in self.on_name.get(name).into_iter().flatten() {
                    let claims = self
                        .footprints
                        .get(claimer)
                        .is_some_and(|footprint| footprint.claims == *name);
                    if claims && touched.insert(claimer.clone()) {
                        pending.push(claimer.clone());
                    }
                }
            }
        }
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

    /// One resource of a random folder: a collection claiming an engine name, or an
    /// alias claiming one and pointing at a target. Names come from a small set, so
    /// rivals, shared targets and aliases named like collections are common.
    #[derive(Debug, Clone)]
    enum Declared {
        Collection { engine: String },
        Alias { engine: String, target: String },
    }

    fn declared() -> impl proptest::strategy::Strategy<Value = Declared> {
        use proptest::prelude::*;
        let engine = prop::sample::select(vec!["c0", "c1", "c2", "a0", "a1"]);
        let target = prop::sample::select(vec!["c0", "c1", "c2", "a0"]);
        prop_oneof![
            engine.clone().prop_map(|e| Declared::Collection {
                engine: e.to_string()
            }),
            (engine, target).prop_map(|(e, t)| Declared::Alias {
                engine: e.to_string(),
                target: t.to_string(),
            }),
        ]
    }

    /// The intents of `folder` (resource `r<i>` for entry i, seniority by position),
    /// `deleting` marking resources whose file is gone.
    fn intents_of(folder: &[Option<Declared>], deleting: &BTreeSet<usize>) -> Intents {
        let mut intents = Intents::default();
        for (index, entry) in folder.iter().enumerate() {
            let created = format!("2026-01-01T00:00:{index:02}Z");
            let resource = format!("r{index}");
            match entry {
                None => {}
                Some(Declared::Collection { engine }) => {
                    let spec = serde_json::from_value(serde_json::json!({
                        "coordinatorRef": {"name": "local"},
                        "name": engine,
                        "fields": [{"name": "id", "dataType": "Int64", "isPrimaryKey": true}]
                    }))
                    .expect("collection spec");
                    let intent =
                        intents.push_collection(&crate::crd::Collection::new(&resource, spec));
                    intent.seniority.created = created;
                    intent.deleting = deleting.contains(&index);
                }
                Some(Declared::Alias { engine, target }) => {
                    let spec = serde_json::from_value(serde_json::json!({
                        "coordinatorRef": {"name": "local"},
                        "name": engine,
                        "collection": target
                    }))
                    .expect("alias spec");
                    let intent =
                        intents.push_alias(&crate::crd::CollectionAlias::new(&resource, spec));
                    intent.seniority.created = created;
                    intent.deleting = deleting.contains(&index);
                }
            }
        }
        intents
    }

    /// What the plan decides for the resources in `of`: their verdicts and their
    /// actions, in plan order.
    fn decisions(
        plan: &crate::plan::Plan,
        intents: &Intents,
        of: &BTreeSet<ResourceId>,
    ) -> (Vec<String>, Vec<String>) {
        let mine =
            |key: &crate::plan::ObjectKey| intents.resource(key).is_some_and(|id| of.contains(id));
        let verdicts = plan
            .verdicts
            .iter()
            .filter(|(key, _)| mine(key))
            .map(|(key, verdict)| format!("{key}: {verdict:?}"))
            .collect();
        let actions = plan
            .actions
            .iter()
            .filter(|action| action.key().is_some_and(mine))
            .map(|action| format!("{action:?}"))
            .collect();
        (verdicts, actions)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// A pass planning only what an edit touches decides, for those resources, what
        /// a pass over the whole folder decides, and the edit changes no decision of a
        /// resource outside them: targeted passes are as good as full ones.
        #[test]
        fn a_targeted_plan_decides_as_the_full_plan(
            folder in proptest::collection::vec(declared(), 1..8),
            edited in 0usize..8,
            edit in proptest::option::of(declared()),
            remove in proptest::bool::ANY,
            engine_has in proptest::collection::btree_set(
                proptest::sample::select(vec!["c0", "c1", "c2", "a0"]), 0..3),
        ) {
            let edited = edited % folder.len();
            let before: Vec<Option<Declared>> = folder.into_iter().map(Some).collect();
            let mut after = before.clone();
            let mut deleting = BTreeSet::new();
            match (edit, remove) {
                (_, true) => {
                    deleting.insert(edited);
                }
                (Some(edit), false) => after[edited] = Some(edit),
                (None, false) => {}
            }
            // An engine holding some collections already (not owned: rivals to decide).
            let mut observed = crate::plan::Observed::default();
            observed.databases.insert("default".into());
            for (n, name) in engine_has.iter().enumerate() {
                observed.collections.insert(
                    ("default".into(), name.to_string()),
                    crate::plan::ObservedCollection { id: 100 + n as i64, aliases: BTreeSet::new() },
                );
            }
            let full_before = intents_of(&before, &BTreeSet::new());
            let full_after = intents_of(&after, &deleting);
            let plan_before = crate::plan::plan_all(
                &full_before.collections, &full_before.aliases, &observed);
            let plan_after = crate::plan::plan_all(
                &full_after.collections, &full_after.aliases, &observed);

            // What run.rs's scope_of computes.
            let mut index = Index::of(&full_before);
            let edited_id = id(
                match &after[edited] {
                    Some(Declared::Collection { .. }) => Kind::Collection,
                    _ => Kind::CollectionAlias,
                },
                &format!("r{edited}"),
            );
            let mut changed: BTreeSet<ResourceId> = [edited_id.clone()].into();
            // A kind change is a removal of the old resource and a new one.
            let old_id = id(
                match &before[edited] {
                    Some(Declared::Collection { .. }) => Kind::Collection,
                    _ => Kind::CollectionAlias,
                },
                &format!("r{edited}"),
            );
            changed.insert(old_id.clone());
            let now: std::collections::HashMap<ResourceId, Footprint> =
                footprints(&full_after).into_iter().collect();
            let mut names = Vec::new();
            for id in &changed {
                let was = index.footprint(id).cloned();
                let is = now.get(id).cloned();
                names.extend(changed_names(was.as_ref(), is.as_ref()));
                index.set(id.clone(), is);
            }
            let mut scope = index.touched(&names);
            scope.extend(changed.iter().filter(|id| now.contains_key(*id)).cloned());

            // The targeted pass: the intents of the scope only.
            let mut targeted = Intents::default();
            for intent in &full_after.collections {
                if full_after.resource(&intent.key).is_some_and(|id| scope.contains(id)) {
                    targeted.collections.push(intent.clone());
                }
            }
            for intent in &full_after.aliases {
                if full_after.resource(&intent.key).is_some_and(|id| scope.contains(id)) {
                    targeted.aliases.push(intent.clone());
                }
            }
            let plan_targeted = crate::plan::plan_all(
                &targeted.collections, &targeted.aliases, &observed);
            proptest::prop_assert_eq!(
                decisions(&plan_targeted, &full_after, &scope),
                decisions(&plan_after, &full_after, &scope),
                "scope {:?}", scope
            );

            // Outside the scope nothing changed.
            let outside: BTreeSet<ResourceId> = now
                .keys()
                .filter(|id| !scope.contains(*id) && !changed.contains(*id))
                .cloned()
                .collect();
            proptest::prop_assert_eq!(
                decisions(&plan_before, &full_before, &outside),
                decisions(&plan_after, &full_after, &outside),
                "scope {:?}", scope
            );
        }
    }
}
