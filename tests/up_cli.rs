//! `up`'s start-up errors as a person reads them: a port in use is reported before
//! anything is created, and a data directory held by another process names that process.

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
