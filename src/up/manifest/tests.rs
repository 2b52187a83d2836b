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
