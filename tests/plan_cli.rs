//! `collection-operator plan`, the real binary against a real coordinator over loopback:
//! exit code 2 with changes, 0 once applied, 2 again after the one-line swap, 1 for bad
//! manifests and for an unreachable engine; the table names what would change.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use collection_operator::up::apply_once;

/// Runs `plan -f <paths> --coordinator <url>` on the blocking pool.
async fn plan(paths: &[&Path], coordinator: &str) -> Output {
    let mut command = std::process::Command::new(common::binary());
    command.arg("plan");
    for path in paths {
        command.arg("-f").arg(path);
    }
    command
        .args(["--coordinator", coordinator])
        .env("RUST_LOG", "warn")
        .env_remove("COLLECTION_OPERATOR_COORDINATOR")
        .env_remove("MILVUS_TOKEN");
    tokio::task::spawn_blocking(move || command.output().expect("plan runs"))
        .await
        .expect("plan task")
}

fn text(output: &Output) -> (i32, String, String) {
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A copy of `examples/` the test may edit.
fn examples_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    for entry in std::fs::read_dir(examples()).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let name = path.file_name().expect("name");
            std::fs::copy(&path, dir.path().join(name)).expect("copy");
        }
    }
    dir
}

/// The table row of `verb` for `object` (columns split on runs of spaces).
fn row<'a>(stdout: &'a str, verb: &str, object: &str) -> Option<&'a str> {
    stdout
        .lines()
        .find(|line| line.starts_with(verb) && line.split_whitespace().any(|cell| cell == object))
}

/// The line of `stdout` that starts with `prefix`.
fn line_of<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{stdout}"))
}

/// The examples declare HNSW indexes, `load: WhileAliased` and an alias with
/// `switchPolicy: WhenTargetServing`: on the embedded coordinator (indexes `Finished` with
/// 0 rows, `Loaded` once loaded) the gate holds the alias until its target has its index
/// and is loaded, and `plan` says so at each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reports_changes_then_in_sync_then_the_gated_swap() {
    let server = common::InProcess::start().await;
    let url = format!("http://{}", server.addr);
    let manifests = examples_copy();

    // Fresh engine: the collections are to be created; the alias waits for its target.
    let (code, stdout, stderr) = text(&plan(&[manifests.path()], &url).await);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ACTION") && header.contains("DETAIL"),
        "{stdout}"
    );
    for name in ["products_v1", "products_v2"] {
        let create = row(&stdout, "create collection", name).expect("create collection row");
        assert!(create.contains("3 field(s), primary key id"), "{create}");
    }
    assert!(
        row(&stdout, "create alias", "products").is_none(),
        "{stdout}"
    );
    // The target is created in this plan, empty: it has neither its index nor a load yet.
    let gate = line_of(&stdout, "CollectionAlias default/products  ");
    assert!(
        gate.contains(
            "waits: products_v1 index embedding on embedding not created yet; not loaded"
        ),
        "{gate}"
    );
    assert!(
        stdout.contains(
            "Plan: 2 to create, 0 to alter, 0 to drop, 0 to adopt; 0 index(es) to create, 0 \
             collection(s) to load, 0 to release; 1 of 3 resource(s) not ready."
        ),
        "{stdout}"
    );
    // The Coordinator document is for kubectl users; plan says it skipped it.
    assert!(stderr.contains("Coordinator milvus ignored"), "{stderr}");

    // Apply with the same planner (collections, then their indexes, then the load of the
    // collection the alias waits for, then the alias), then the engine is in sync.
    let paths = vec![manifests.path().to_path_buf()];
    let applied = apply_once(&url, &paths).await.expect("apply");
    assert_eq!(applied.actions.len(), 3, "{:?}", applied.actions);
    let (code, stdout, stderr) = text(&plan(&[manifests.path()], &url).await);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("No engine changes."), "{stdout}");
    let alias = line_of(&stdout, "CollectionAlias default/products  ");
    assert!(alias.ends_with("Ready"), "{stdout}");
    let v1 = line_of(&stdout, "Collection default/products-v1  ");
    assert!(
        v1.contains("Ready; Serving: indexed and loaded, 0 rows"),
        "{v1}"
    );
    // products_v2 has its index but nothing waits for it: WhileAliased leaves it alone.
    let v2 = line_of(&stdout, "Collection default/products-v2  ");
    assert!(v2.contains("Ready; NotLoaded: not loaded"), "{v2}");
    assert!(stdout.contains("0 of 3 resource(s) not ready"), "{stdout}");

    // The one-line swap: the alias now waits for products_v2, which is loaded first.
    let alias_file = manifests.path().join("products.yaml");
    let original = std::fs::read_to_string(&alias_file).expect("read");
    std::fs::write(
        &alias_file,
        original.replace("collection: products_v1", "collection: products_v2"),
    )
    .expect("write");
    let (code, stdout, _) = text(&plan(&[manifests.path()], &url).await);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        row(&stdout, "alter alias", "products").is_none(),
        "{stdout}"
    );
    let load = row(&stdout, "load collection", "products_v2").expect("load row");
    assert!(load.contains("Collection default/products-v2"), "{load}");
    let gate = line_of(&stdout, "CollectionAlias default/products  ");
    assert!(gate.contains("waits: products_v2 not loaded"), "{gate}");
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("CollectionAlias default/products ")
                && line.ends_with(
                    "NotReady WaitingForTarget: waiting for products_v2: not loaded; alias \
                     products still points to products_v1"
                )),
        "{stdout}"
    );

    let applied = apply_once(&url, &paths).await.expect("apply the swap");
    assert_eq!(applied.actions.len(), 1, "{:?}", applied.actions);
    let alter = table_row_of(&applied.actions[0]);
    assert_eq!(alter, "products_v1 -> products_v2");
    let (code, stdout, _) = text(&plan(&[manifests.path()], &url).await);
    assert_eq!(code, 0, "{stdout}");
    // products_v1 stays loaded for its releaseDelay: a rollback needs no reload.
    let v1 = line_of(&stdout, "Collection default/products-v1  ");
    assert!(v1.contains("release due at"), "{v1}");

    // Rolling back inside the delay is one AlterAlias at once. Files can be named one by
    // one as well as by folder; plan infers ownership from the manifests it is given.
    std::fs::write(&alias_file, &original).expect("write");
    let files: Vec<PathBuf> = ["products-v1.yaml", "products-v2.yaml", "products.yaml"]
        .iter()
        .map(|name| manifests.path().join(name))
        .collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let (code, stdout, _) = text(&plan(&refs, &url).await);
    assert_eq!(code, 2, "{stdout}");
    let alter = row(&stdout, "alter alias", "products").expect("alter alias row");
    assert!(alter.contains("products_v2 -> products_v1"), "{alter}");
    assert!(
        row(&stdout, "load collection", "products_v1").is_none(),
        "{stdout}"
    );
    let gate = line_of(&stdout, "CollectionAlias default/products  ");
    assert!(gate.contains("opens: products_v1 serves"), "{gate}");

    server.stop().await;
}

/// `from -> to` of an AlterAlias.
fn table_row_of(action: &collection_operator::plan::Action) -> String {
    match action {
        collection_operator::plan::Action::AlterAlias { from, to, .. } => format!("{from} -> {to}"),
        other => panic!("expected an AlterAlias, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_someone_else_made_is_not_in_sync() {
    let server = common::InProcess::start().await;
    let url = format!("http://{}", server.addr);
    let mut client = server.client().await;
    common::create_collection_in(&mut client, "default", "theirs").await;
    common::create_collection_in(&mut client, "default", "products_v1").await;
    common::create_alias_in(&mut client, "default", "products", "theirs").await;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(
        examples().join("products.yaml"),
        dir.path().join("products.yaml"),
    )
    .expect("copy");
    // No action would be taken, but the resource would not be Ready: exit 2, not 0.
    let (code, stdout, stderr) = text(&plan(&[dir.path()], &url).await);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.starts_with("No engine changes."), "{stdout}");
    assert!(stdout.contains("NotReady AlreadyExists"), "{stdout}");
    assert!(stdout.contains("pointing to theirs"), "{stdout}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_exit_1_naming_file_and_document() {
    let server = common::InProcess::start().await;
    let url = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata: {name: ok}
spec: {coordinatorRef: {name: c}, collection: products_v1}
---
apiVersion: collections.dev/v1alpha1
kind: Collection
metadata: {name: products-v3}
spec:
  coordinatorRef: {name: c}
  fields:
    - {name: id, dataType: Int64}
    - {name: embedding, dataType: FloatVector, dimension: 8}
",
    )
    .expect("write");
    let (code, stdout, stderr) = text(&plan(&[&bad], &url).await);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    // Each problem names the line of its field: the misspelt key is on line 13, the
    // `fields:` list (where a primary key is missing) starts on line 11.
    for (line, problem) in [
        (13, "unknown field \"spec.fields[1].dimension\""),
        (11, "exactly one field must be the primary key"),
    ] {
        let prefix = format!(
            "{}: document 2 (line {line}): Collection default/products-v3",
            bad.display()
        );
        assert!(
            stderr.contains(&format!("{prefix}: {problem}"))
                || stderr
                    .lines()
                    .any(|l| l.contains(&prefix) && l.contains(problem)),
            "missing {problem:?} in:\n{stderr}"
        );
    }

    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: [unclosed\n").expect("write");
    let (code, _, stderr) = text(&plan(&[&broken], &url).await);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("broken.yaml: invalid YAML"), "{stderr}");

    let (code, _, stderr) = text(&plan(&[&dir.path().join("missing.yaml")], &url).await);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("missing.yaml: cannot read"), "{stderr}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_exits_1() {
    let port = common::free_port();
    let (code, stdout, stderr) = text(&plan(&[&examples()], &format!("127.0.0.1:{port}")).await);
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(&format!("connecting to http://127.0.0.1:{port}")),
        "{stderr}"
    );
}

/// A RoutedAlias stands for what it would generate now: on a fresh engine, the current
/// interval's collection and the alias to it (exit 2); applied, nothing (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_expands_a_routed_alias() {
    let server = common::InProcess::start().await;
    let url = format!("http://{}", server.addr);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-routed/news.yaml");
    let (code, stdout, stderr) = text(&plan(&[&path], &url).await);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let created = stdout
        .lines()
        .find(|line| line.starts_with("create collection"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        created
            .split_whitespace()
            .any(|cell| cell.starts_with("news_")),
        "{stdout}"
    );
    assert!(row(&stdout, "create alias", "news").is_some(), "{stdout}");
    assert!(stderr.contains("RoutedAlias default/news"), "{stderr}");

    apply_once(&url, std::slice::from_ref(&path))
        .await
        .expect("apply");
    // Across an interval boundary between the two runs the series legitimately moves on;
    // a daily interval makes that a one-in-many-thousands event.
    let (code, stdout, stderr) = text(&plan(&[&path], &url).await);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    server.stop().await;
}

/// `plan` finds a routed series by listing its database, so a collection of the series
/// older than the last `maxCollections` intervals (left over by an earlier, longer
/// retention) shows, and is retired like any other: here dropped (deletionPolicy Delete).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_sees_a_routed_collection_older_than_max_collections() {
    let server = common::InProcess::start().await;
    let url = format!("http://{}", server.addr);
    let mut client = server.client().await;
    // The first day of a daily series that started in 2020, years beyond a window of 2.
    let old = "news_20200101T000000Z";
    common::create_collection_in(&mut client, "default", old).await;
    common::create_collection_in(&mut client, "default", "unrelated_20200101T000000Z").await;
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("news.yaml");
    std::fs::write(
        &path,
        "apiVersion: collections.dev/v1alpha1
kind: RoutedAlias
metadata:
  name: news
spec:
  coordinatorRef: {name: local}
  start: \"2020-01-01\"
  interval: 1d
  autoDeleteAge: 1d
  maxCollections: 2
  deletionPolicy: Delete
  template:
    fields:
      - {name: id, dataType: Int64, isPrimaryKey: true}
      - {name: v, dataType: FloatVector, dim: 4}
",
    )
    .expect("write");
    let (code, stdout, stderr) = text(&plan(&[&path], &url).await);
    assert_eq!(code, 2, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        row(&stdout, "drop collection", old).is_some(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("unrelated_"),
        "another name is not part of the series:\n{stdout}"
    );
    server.stop().await;
}

/// The binary run with `args` and no engine settings from the environment.
fn run_binary(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(common::binary())
        .args(args)
        .env_remove("COLLECTION_OPERATOR_COORDINATOR")
        .env_remove("MILVUS_TOKEN")
        .output()
        .expect("binary runs");
    text(&output)
}

/// A usage error is 1, never 2: a CI check must not read a mistyped flag as "changes".
#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let examples = examples();
    let examples = examples.to_str().expect("utf-8 path");
    let (code, _, stderr) = run_binary(&["plan", "-f", examples]);
    assert_eq!(code, 1, "missing --coordinator: {stderr}");
    assert!(stderr.contains("--coordinator"), "{stderr}");
    let (code, _, stderr) = run_binary(&[
        "plan",
        "-f",
        examples,
        "--coordinator",
        "http://127.0.0.1:1",
        "--no-such-flag",
    ]);
    assert_eq!(code, 1, "unknown flag: {stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    let (code, _, stderr) = run_binary(&["no-such-subcommand"]);
    assert_eq!(code, 1, "unknown subcommand: {stderr}");
    let (code, stdout, _) = run_binary(&["plan", "--help"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("--coordinator"), "{stdout}");
}

/// `operator --help` names every kind the controllers reconcile.
#[test]
fn operator_help_names_every_kind() {
    let (code, stdout, _) = run_binary(&["--help"]);
    assert_eq!(code, 0);
    let line = stdout
        .lines()
        .find(|line| line.trim_start().starts_with("operator"))
        .expect("an operator line");
    for kind in [
        "Collection",
        "CollectionAlias",
        "RoutedAlias",
        "Coordinator",
    ] {
        assert!(line.contains(kind), "{kind} missing from: {line}");
    }
}

/// Logs written to a pipe (a file, a pod's log) carry no ANSI colour codes.
#[test]
fn logs_to_a_pipe_have_no_colour_codes() {
    let wal = tempfile::tempdir().expect("tmp");
    let mut child = std::process::Command::new(common::binary())
        .args(["streaming-node", "--coordinator", "http://127.0.0.1:1"])
        .arg("--wal-dir")
        .arg(wal.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("streaming node starts");
    std::thread::sleep(std::time::Duration::from_millis(800));
    let _ = child.kill();
    let output = child.wait_with_output().expect("reaped");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("streaming node serving"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in: {stderr}");
}
