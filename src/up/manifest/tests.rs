use std::path::Path;

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
    let problems = problems_of(&COLLECTION.replace("isPrimaryKey: true", "isPrimaryKey: false"));
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
    let problems = problems_of(&COLLECTION.replace("FloatVector, dim: 8", "BinaryVector, dim: 12"));
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
    let problems = problems_of(&ALIAS.replace("collection: products_v1", "collection: products"));
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

#[test]
fn a_broken_file_holds_only_its_own_resources() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "a.yaml", COLLECTION);
    let broken = write(
        dir.path(),
        "b.yaml",
        &format!(
            "{}---\n{ALIAS}",
            COLLECTION
                .replace("products-v1", "products-v2")
                .replace("dim: 8", "dim: 1")
        ),
    );
    // Defined again in a later file: that file is the broken one.
    let again = write(dir.path(), "c.yaml", COLLECTION);
    let loaded = load_by_file(&[dir.path().to_path_buf()], None);
    let names: Vec<String> = loaded
        .set
        .collections
        .iter()
        .map(|m| m.resource.engine_name())
        .collect();
    assert_eq!(names, ["products_v1"], "{:?}", loaded.problems);
    assert!(
        loaded.set.aliases.is_empty(),
        "b.yaml's valid alias is held too"
    );
    assert_eq!(
        loaded.broken.iter().collect::<Vec<_>>(),
        [&broken, &again],
        "{:?}",
        loaded.problems
    );
    assert_eq!(loaded.problems.len(), 2, "{:?}", loaded.problems);
    // The field's own line (the `dim: 1` entry is on line 9), not the document's.
    assert!(
        loaded.problems[0].ends_with(
            "b.yaml: document 1 (line 9): Collection default/products-v2: \
             spec.fields[1].dim: must be at least 2, got 1"
        ),
        "{:?}",
        loaded.problems
    );
    assert!(loaded.problems[1].contains("c.yaml: document 1"));
    assert!(loaded.problems[1].contains("already defined in"));
    // `load` (what `plan` uses) stays all or nothing.
    let error = load(&[dir.path().to_path_buf()], None).expect_err("problems");
    assert_eq!(error.problems, loaded.problems);
}

/// A cache that keeps files at once (the default waits [`cache::SETTLE`] after a write);
/// writes in these tests are apart by more than the file system's clock step.
fn eager_cache() -> FileCache {
    FileCache::with_settle(std::time::Duration::ZERO)
}

/// Longer than a step of the file system's clock, so that a later write gets later
/// times.
fn clock_step() {
    std::thread::sleep(std::time::Duration::from_millis(50));
}

fn alias_targets(set: &ManifestSet) -> Vec<String> {
    set.aliases
        .iter()
        .map(|m| m.resource.spec.collection.clone())
        .collect()
}

#[test]
fn a_full_read_rereads_only_the_files_that_changed() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "a.yaml", COLLECTION);
    let alias = write(dir.path(), "b.yaml", ALIAS);
    clock_step();
    let mut cache = eager_cache();
    let folder = [dir.path().to_path_buf()];
    let first = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!((first.read, first.set.files), (2, 2));
    assert_eq!(cache.len(), 2);

    let again = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!(again.read, 0, "nothing changed: nothing is read");
    assert_eq!(again.set.collections.len(), 1);
    assert_eq!(alias_targets(&again.set), ["products_v1"]);
    assert_eq!(again.set.aliases[0].origin, first.set.aliases[0].origin);

    // Same size, new target.
    std::fs::write(&alias, ALIAS.replace("products_v1", "products_v2")).expect("write");
    clock_step();
    let edited = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!(edited.read, 1, "only the edited file is read");
    assert_eq!(alias_targets(&edited.set), ["products_v2"]);
    assert_eq!(
        edited.set.collections.len(),
        1,
        "the unchanged file still counts"
    );

    // A file that is gone takes its resources and its verdict with it.
    std::fs::remove_file(&alias).expect("rm");
    let removed = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!((removed.read, removed.set.aliases.len()), (0, 0));
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_same_size_edit_within_the_same_second_is_seen() {
    let dir = tempfile::tempdir().expect("tmp");
    let alias = write(dir.path(), "b.yaml", ALIAS);
    let written = std::fs::metadata(&alias)
        .expect("stat")
        .modified()
        .expect("mtime");
    // The default cache: a file written this recently is not kept.
    let mut cache = FileCache::default();
    let folder = [dir.path().to_path_buf()];
    let first = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!(alias_targets(&first.set), ["products_v1"]);
    // Same size, and the modification time put back, as some editors and `touch -d`
    // do; possibly within the same tick of the file system's clock.
    std::fs::write(&alias, ALIAS.replace("products_v1", "products_v2")).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&alias)
        .and_then(|file| file.set_modified(written))
        .expect("set mtime");
    let edited = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!(edited.read, 1);
    assert_eq!(alias_targets(&edited.set), ["products_v2"]);
}

#[test]
fn an_edit_that_keeps_the_modification_time_is_seen_by_its_change_time() {
    let dir = tempfile::tempdir().expect("tmp");
    let alias = write(dir.path(), "b.yaml", ALIAS);
    let written = std::fs::metadata(&alias)
        .expect("stat")
        .modified()
        .expect("mtime");
    clock_step();
    let mut cache = eager_cache();
    let folder = [dir.path().to_path_buf()];
    load_by_file_cached(&folder, None, &mut cache);
    assert_eq!(cache.len(), 1);
    std::fs::write(&alias, ALIAS.replace("products_v1", "products_v2")).expect("write");
    std::fs::File::options()
        .write(true)
        .open(&alias)
        .and_then(|file| file.set_modified(written))
        .expect("set mtime");
    clock_step();
    let edited = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!(edited.read, 1);
    assert_eq!(alias_targets(&edited.set), ["products_v2"]);
}

#[test]
fn checks_across_files_run_over_cached_files_too() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "b.yaml", ALIAS);
    clock_step();
    let mut cache = eager_cache();
    let folder = [dir.path().to_path_buf()];
    load_by_file_cached(&folder, None, &mut cache);
    // A new file defines the same resource again: the later file is broken, though the
    // earlier one was not read again.
    write(dir.path(), "c.yaml", ALIAS);
    clock_step();
    let twice = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!(twice.read, 1);
    assert_eq!(twice.set.aliases.len(), 1);
    assert_eq!(twice.problems.len(), 1, "{:?}", twice.problems);
    assert!(twice.problems[0].contains("already defined in"));
    assert!(twice.broken.contains(&dir.path().join("c.yaml")));
    // Still so with both files cached.
    let again = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!(again.read, 0);
    assert_eq!(again.problems, twice.problems);
    // The resource moves: only c.yaml defines it now.
    std::fs::remove_file(dir.path().join("b.yaml")).expect("rm");
    let moved = load_by_file_cached(&folder, None, &mut cache);
    assert_eq!(moved.read, 0);
    assert!(moved.problems.is_empty(), "{:?}", moved.problems);
    assert_eq!(moved.set.aliases[0].origin.path, dir.path().join("c.yaml"));
}

#[test]
fn a_cached_verdict_is_checked_again_when_its_previous_object_changes() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "a.yaml", COLLECTION);
    clock_step();
    let mut cache = eager_cache();
    let folder = [dir.path().to_path_buf()];
    let first = load_by_file_cached(&folder, None, &mut cache);
    let id = id_of(Kind::Collection, &first.set.collections[0].resource);
    let mut previous = HashMap::new();
    previous.insert(id.clone(), first.set.collections[0].object.clone());
    // Checked against its own object: the first verdict was made with none, so the
    // file is checked again, then kept.
    let same = load_by_file_cached(&folder, Some(&previous), &mut cache);
    assert_eq!((same.read, same.problems.len()), (1, 0));
    let kept = load_by_file_cached(&folder, Some(&previous), &mut cache);
    assert_eq!((kept.read, kept.problems.len()), (0, 0));
    // The last accepted object came from elsewhere (say the resource was defined in
    // another file, since deleted) with another schema: the unchanged file is now an
    // update that changes an immutable schema.
    let mut other = first.set.collections[0].object.clone();
    other["spec"]["fields"][1]["dim"] = serde_json::json!(16);
    previous.insert(id, other);
    let rechecked = load_by_file_cached(&folder, Some(&previous), &mut cache);
    assert_eq!(rechecked.read, 1);
    assert!(
        rechecked
            .problems
            .iter()
            .any(|p| p.contains("the schema is immutable")),
        "{:?}",
        rechecked.problems
    );
    // That verdict holds while that object stays the last accepted one.
    let same_again = load_by_file_cached(&folder, Some(&previous), &mut cache);
    assert_eq!(same_again.read, 0);
    assert_eq!(same_again.problems, rechecked.problems);
}

/// What `up` does after a read: every resource read becomes the last accepted object of
/// its id.
fn accept_all(loaded: &Loaded, previous: &mut HashMap<ResourceId, Value>) {
    let set = &loaded.set;
    for m in &set.collections {
        previous.insert(id_of(Kind::Collection, &m.resource), m.object.clone());
    }
    for m in &set.aliases {
        previous.insert(id_of(Kind::CollectionAlias, &m.resource), m.object.clone());
    }
}

fn kept_ids(loaded: &Loaded) -> Vec<String> {
    loaded.kept.iter().map(|(id, _)| id.to_string()).collect()
}

#[test]
fn up_s_read_names_the_resources_of_unchanged_files_instead_of_copying_them() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "a.yaml", COLLECTION);
    let alias = write(dir.path(), "b.yaml", ALIAS);
    clock_step();
    let mut cache = eager_cache();
    let folder = [dir.path().to_path_buf()];
    let mut previous = HashMap::new();
    // Nothing accepted yet: what is read is not kept, as accepting it changes the last
    // accepted objects its checks saw.
    let first = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!(
        (first.read, first.set.aliases.len(), cache.len()),
        (2, 1, 0)
    );
    assert!(first.kept.is_empty());
    accept_all(&first, &mut previous);
    let second = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!((second.read, cache.len()), (2, 2));
    assert_eq!(alias_targets(&second.set), ["products_v1"]);

    // Nothing changed: nothing read, nothing copied, both named with their origins.
    let again = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!(again.read, 0);
    assert_eq!(
        (again.set.collections.len(), again.set.aliases.len()),
        (0, 0)
    );
    assert_eq!(
        kept_ids(&again),
        [
            "Collection default/products-v1",
            "CollectionAlias default/products"
        ]
    );
    assert_eq!(again.kept[1].1, second.set.aliases[0].origin);
    assert_eq!(again.set.files, 2);

    // An edited file is read; the other one stays named.
    std::fs::write(&alias, ALIAS.replace("products_v1", "products_v2")).expect("write");
    clock_step();
    let edited = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!(edited.read, 1);
    assert_eq!(alias_targets(&edited.set), ["products_v2"]);
    assert_eq!(kept_ids(&edited), ["Collection default/products-v1"]);

    // The last accepted alias is no longer the unchanged file's (say another file
    // defined it meanwhile): the file is read again, not named.
    accept_all(&edited, &mut previous);
    let accepted = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!((accepted.read, accepted.kept.len()), (1, 1));
    let kept = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!((kept.read, kept.kept.len()), (0, 2));
    let id = ResourceId::new(Kind::CollectionAlias, "default", "products");
    let mut other = previous[&id].clone();
    other["spec"]["collection"] = serde_json::json!("products_v3");
    previous.insert(id, other);
    let reread = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!(reread.read, 1);
    assert_eq!(alias_targets(&reread.set), ["products_v2"]);
    assert_eq!(kept_ids(&reread), ["Collection default/products-v1"]);
}

#[test]
fn up_s_read_finds_a_resource_defined_twice_across_named_and_read_files() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "b.yaml", ALIAS);
    clock_step();
    let mut cache = eager_cache();
    let folder = [dir.path().to_path_buf()];
    let mut previous = HashMap::new();
    accept_all(
        &load_by_file_reusing(&folder, Some(&previous), &mut cache),
        &mut previous,
    );
    load_by_file_reusing(&folder, Some(&previous), &mut cache);
    // A new file defines the alias again: the later file is broken, though the earlier
    // one is only named.
    write(dir.path(), "c.yaml", ALIAS);
    clock_step();
    let twice = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!((twice.read, twice.set.aliases.len()), (1, 0));
    assert_eq!(kept_ids(&twice), ["CollectionAlias default/products"]);
    assert_eq!(twice.kept[0].1.path, dir.path().join("b.yaml"));
    assert_eq!(twice.problems.len(), 1, "{:?}", twice.problems);
    assert!(twice.problems[0].contains("c.yaml: document 1"));
    assert!(twice.problems[0].contains("already defined in"));
    assert!(twice.broken.contains(&dir.path().join("c.yaml")));
    // Still so with both files named, and the same as a read of everything.
    let again = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!((again.read, again.kept.len()), (0, 1));
    assert_eq!(again.problems, twice.problems);
    assert_eq!(
        again.problems,
        load_by_file(&folder, Some(&previous)).problems
    );
    // The first definition goes: the resource is the other file's now.
    std::fs::remove_file(dir.path().join("b.yaml")).expect("rm");
    let moved = load_by_file_reusing(&folder, Some(&previous), &mut cache);
    assert_eq!(moved.read, 0);
    assert!(moved.problems.is_empty(), "{:?}", moved.problems);
    assert_eq!(moved.kept[0].1.path, dir.path().join("c.yaml"));
}

/// One step of a random folder history for the reusing read's property test.
#[derive(Debug, Clone)]
enum FolderStep {
    /// Writes file `file` with these resources (see [`random_resource`]).
    Write(usize, Vec<(u8, usize, usize)>),
    /// Writes file `file` with a document that does not parse.
    Break(usize),
    Remove(usize),
}

/// A resource of a small pool, so that files share ids, define them twice and move
/// them: kind 0 a Collection `coll-<n>` whose database and dimension come from
/// `variant` (both immutable: a changed one is refused against the accepted object),
/// else an alias `alias-<n>` pointing at `coll_<variant % 2>`.
fn random_resource((kind, n, variant): (u8, usize, usize)) -> String {
    if kind == 0 {
        let database = ["default", "other"][variant % 2];
        let dim = [4, 8][variant / 2 % 2];
        format!(
            "apiVersion: collections.dev/v1alpha1\nkind: Collection\nmetadata:\n  \
             name: coll-{n}\nspec:\n  coordinatorRef: {{name: local}}\n  database: {database}\n  \
             fields:\n    - {{name: id, dataType: Int64, isPrimaryKey: true}}\n    \
             - {{name: v, dataType: FloatVector, dim: {dim}}}\n"
        )
    } else {
        format!(
            "apiVersion: collections.dev/v1alpha1\nkind: CollectionAlias\nmetadata:\n  \
             name: alias-{n}\nspec:\n  coordinatorRef: {{name: local}}\n  \
             collection: coll_{}\n",
            variant % 2
        )
    }
}

fn folder_step() -> impl proptest::strategy::Strategy<Value = FolderStep> {
    use proptest::prelude::*;
    let resource = (0u8..2, 0usize..2, 0usize..4);
    prop_oneof![
        6 => (0usize..3, proptest::collection::vec(resource, 0..4))
            .prop_map(|(file, resources)| FolderStep::Write(file, resources)),
        1 => (0usize..3).prop_map(FolderStep::Break),
        1 => (0usize..3).prop_map(FolderStep::Remove),
    ]
}

/// Every resource a read gives, the named ones resolved through `previous`, as
/// comparable lines (id, origin, object).
fn resolved(loaded: &Loaded, previous: &HashMap<ResourceId, Value>) -> Vec<String> {
    let set = &loaded.set;
    let mut lines: Vec<String> = set
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
        .map(|(id, origin, object)| format!("{id} {origin:?} {object}"))
        .collect();
    for (id, origin) in &loaded.kept {
        let object = previous
            .get(id)
            .unwrap_or_else(|| panic!("{id} is named but has no accepted object"));
        lines.push(format!("{id} {origin:?} {object}"));
    }
    lines.sort();
    lines
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 32,
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Whatever the history of the folder, `up`'s read (cached verdicts, unchanged
    /// resources named by id) says what a fresh read of every file says: the same
    /// resources with the same origins and objects, the same problems, the same broken
    /// files. Between reads the last accepted objects change as `up` changes them.
    #[test]
    fn up_s_read_says_what_a_fresh_read_says(
        steps in proptest::collection::vec(folder_step(), 1..10)
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let folder = [dir.path().to_path_buf()];
        let mut cache = eager_cache();
        let mut previous: HashMap<ResourceId, Value> = HashMap::new();
        for step in &steps {
            let file = |n: usize| dir.path().join(format!("f{n}.yaml"));
            match step {
                FolderStep::Write(n, resources) => {
                    let text: Vec<String> =
                        resources.iter().copied().map(random_resource).collect();
                    std::fs::write(file(*n), text.join("---\n")).expect("write");
                }
                FolderStep::Break(n) => {
                    std::fs::write(file(*n), "kind: CollectionAlias\nspec: [\n").expect("write");
                }
                FolderStep::Remove(n) => {
                    let _ = std::fs::remove_file(file(*n));
                }
            }
            clock_step();
            // Twice: once after the change, once with nothing changed (all cached).
            for _ in 0..2 {
                let reusing = load_by_file_reusing(&folder, Some(&previous), &mut cache);
                let fresh = load_by_file(&folder, Some(&previous));
                proptest::prop_assert_eq!(resolved(&reusing, &previous), resolved(&fresh, &previous));
                proptest::prop_assert_eq!(&reusing.problems, &fresh.problems);
                proptest::prop_assert_eq!(&reusing.broken, &fresh.broken);
                // What `up` then accepts: what was read; with no problems, what is gone
                // is no longer accepted.
                let present: BTreeSet<ResourceId> = resolved_ids(&reusing);
                for m in &reusing.set.collections {
                    previous.insert(id_of(Kind::Collection, &m.resource), m.object.clone());
                }
                for m in &reusing.set.aliases {
                    previous.insert(id_of(Kind::CollectionAlias, &m.resource), m.object.clone());
                }
                if reusing.problems.is_empty() {
                    previous.retain(|id, _| present.contains(id));
                }
            }
        }
    }
}

fn resolved_ids(loaded: &Loaded) -> BTreeSet<ResourceId> {
    let set = &loaded.set;
    set.collections
        .iter()
        .map(|m| id_of(Kind::Collection, &m.resource))
        .chain(
            set.aliases
                .iter()
                .map(|m| id_of(Kind::CollectionAlias, &m.resource)),
        )
        .chain(loaded.kept.iter().map(|(id, _)| id.clone()))
        .collect()
}
