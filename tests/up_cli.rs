//! `up` as a person reads it: start-up errors (a port in use is reported before anything
//! is created, a data directory held by another process names that process), and what a
//! running `up` prints when a file breaks: the file and the field's line, the valid files
//! still applied, each engine call as `plan` lists it.

mod common;

use std::path::Path;
use std::process::Command;

use collection_operator::store::lock::DataDirLock;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Runs `up` and returns its exit code and standard error.
fn up(data_dir: &Path, listen: &str) -> (i32, String) {
    let output = Command::new(common::binary())
        .arg("up")
        .arg("--manifests")
        .arg(examples())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen])
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LOG", "warn")
        .output()
        .expect("up runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_port_in_use_is_reported_before_the_data_directory_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().join("data");
    let (code, stderr) = up(&data_dir, &address);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {address}")),
        "{stderr}"
    );
    assert!(
        !data_dir.exists(),
        "nothing is created when the port is taken"
    );
}

#[test]
fn a_data_directory_in_use_names_the_process_that_holds_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let _held = DataDirLock::acquire(dir.path()).expect("free directory");
    let port = common::free_port();
    let (code, stderr) = up(dir.path(), &format!("127.0.0.1:{port}"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "is in use by another collection-operator process (pid {})",
            std::process::id()
        )),
        "{stderr}"
    );
}

/// A running `up` on its own folders, its output in files.
struct Running {
    child: std::process::Child,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Running {
    fn output(&self) -> (String, String) {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        (read(&self.out), read(&self.err))
    }

    /// Waits until `check` holds for (stdout, stderr); panics with both after 30 s.
    fn wait(&self, what: &str, check: impl Fn(&str, &str) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (out, err) = self.output();
            if check(&out, &err) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const COLLECTION: &str = "\
apiVersion: collections.dev/v1alpha1
kind: Collection
metadata:
  name: NAME
spec:
  coordinatorRef: {name: local}
  fields:
    - {name: id, dataType: Int64, isPrimaryKey: true}
    - name: embedding
      dataType: FloatVector
      dim: 8
";

const ALIAS: &str = "\
apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata:
  name: live
spec:
  coordinatorRef: {name: local}
  collection: TARGET
";

/// Writes through a hidden temporary file and a rename, as editors do.
fn put(dir: &Path, name: &str, text: &str) {
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, text).expect("write");
    std::fs::rename(&temporary, dir.join(name)).expect("rename");
}

#[test]
fn a_broken_file_names_its_field_line_while_valid_files_apply() {
    let dir = tempfile::tempdir().expect("tmp");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("mkdir");
    put(&manifests, "blue.yaml", &COLLECTION.replace("NAME", "blue"));
    put(
        &manifests,
        "green.yaml",
        &COLLECTION.replace("NAME", "green"),
    );
    put(&manifests, "live.yaml", &ALIAS.replace("TARGET", "blue"));
    let out = dir.path().join("up.out");
    let err = dir.path().join("up.err");
    let child = Command::new(common::binary())
        .arg("up")
        .arg("--manifests")
        .arg(&manifests)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--debounce-ms", "100"])
        .env("RUST_LOG", "warn")
        .env_remove("COLUMNS")
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(std::fs::File::create(&err).expect("err"))
        .spawn()
        .expect("up starts");
    let up = Running { child, out, err };
    up.wait("the alias created", |out, _| {
        out.contains("create alias default live -> blue (for CollectionAlias default/live)")
    });
    let (out, _) = up.output();
    assert!(
        out.contains(
            "create collection default green 2 field(s), primary key id (for Collection \
             default/green)"
        ),
        "{out}"
    );
    assert!(!out.contains("engine change(s)"), "{out}");

    // green.yaml breaks (line 11: `dim: 1`); the swap to green in live.yaml still applies,
    // since green's last accepted manifest stays in force.
    put(
        &manifests,
        "green.yaml",
        &COLLECTION
            .replace("NAME", "green")
            .replace("dim: 8", "dim: 1"),
    );
    up.wait("the block report", |_, err| {
        err.contains("BLOCKED by green.yaml")
    });
    put(&manifests, "live.yaml", &ALIAS.replace("TARGET", "green"));
    up.wait("the swap", |out, _| {
        out.contains("alter alias default live blue -> green (for CollectionAlias default/live)")
    });
    let (_, err) = up.output();
    assert!(
        err.contains(
            "green.yaml: document 1 (line 11): Collection default/green: spec.fields[1].dim: \
             must be at least 2, got 1"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "kept as last accepted (their file is broken or gone): Collection default/green"
        ),
        "{err}"
    );
    // Said again at the change of live.yaml, so the swap is not read as ignored.
    assert!(err.matches("BLOCKED by green.yaml").count() >= 2, "{err}");

    put(
        &manifests,
        "green.yaml",
        &COLLECTION.replace("NAME", "green"),
    );
    up.wait("valid again", |_, err| {
        err.contains("every manifest file is valid again")
    });
}
