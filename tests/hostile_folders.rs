//! Manifest folders built to hurt `plan` and `up`, each run as the real binary with a time
//! bound: symlinks to the folder itself (the walk used to explode), a FIFO named `*.yaml`
//! (used to block forever, `up` then ignored SIGTERM), `x.yaml -> /dev/zero` (used to read
//! until out of memory), and a file above `--max-manifest-bytes`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every run must end within this.
const BOUND: Duration = Duration::from_secs(30);

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/products-v1.yaml")
}

/// A folder holding one valid manifest.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(example(), dir.path().join("products.yaml")).expect("copy");
    dir
}

/// Runs the binary with `args`; kills it and fails when it outlives [`BOUND`].
fn run_bounded(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(common::binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + BOUND;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} still running after {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// `plan` against an engine that is not there: the manifests are read first.
fn plan(folder: &Path, extra: &[&str]) -> (i32, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec!["plan".as_ref(), "-f".as_ref(), folder.as_ref()];
    args.extend(["--coordinator", "127.0.0.1:1"].map(std::ffi::OsStr::new));
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let output = run_bounded(&args);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn symlinks_to_the_folder_itself_are_followed_once() {
    let dir = folder();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("self1")).expect("link");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("self2")).expect("link");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/up")).expect("link");
    let (code, stderr) = plan(dir.path(), &[]);
    assert_eq!(code, 1, "{stderr}");
    // The manifests were read (once each: no duplicates); the failure is the engine's.
    assert!(!stderr.contains("duplicate"), "{stderr}");
    assert!(!stderr.contains("products.yaml"), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
}

#[test]
fn a_fifo_named_yaml_is_reported_not_opened() {
    let dir = folder();
    let fifo = dir.path().join("trap.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let (code, stderr) = plan(dir.path(), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("trap.yaml: not a regular file (a FIFO)"),
        "{stderr}"
    );
}

#[test]
fn a_link_to_dev_zero_is_reported_not_read() {
    let dir = folder();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yaml")).expect("link");
    let (code, stderr) = plan(dir.path(), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("zero.yaml: not a regular file (a character device)"),
        "{stderr}"
    );
}

#[test]
fn a_file_above_the_size_limit_is_reported_not_read() {
    let dir = folder();
    let size = std::fs::metadata(dir.path().join("products.yaml"))
        .expect("size")
        .len();
    let limit = (size - 1).to_string();
    let (code, stderr) = plan(dir.path(), &["--max-manifest-bytes", &limit]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("products.yaml: larger than {limit} bytes")),
        "{stderr}"
    );
    // At the file's own size it is read.
    let (_, stderr) = plan(dir.path(), &["--max-manifest-bytes", &size.to_string()]);
    assert!(!stderr.contains("larger than"), "{stderr}");
}

#[test]
fn up_with_a_fifo_in_its_folder_stops_on_sigterm() {
    let dir = folder();
    let made = Command::new("mkfifo")
        .arg(dir.path().join("trap.yaml"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).expect("link");
    let data = tempfile::tempdir().expect("tmp");
    let port = common::free_port();
    let mut up = Command::new(common::binary())
        .arg("up")
        .arg("--manifests")
        .arg(dir.path())
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("up starts");
    // Wait until up serves (its first pass over the folder follows at once).
    let deadline = Instant::now() + BOUND;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(up.try_wait().expect("wait").is_none(), "up exited early");
        assert!(Instant::now() < deadline, "up did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let sent = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + BOUND;
    while up.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = up.kill();
            panic!("up ignored SIGTERM for {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = up.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        text.contains("trap.yaml: not a regular file (a FIFO)"),
        "{text}"
    );
}
