//! What the processes create is private to their user: files 0600 and directories 0700
//! (the redb file, the commit log, the LOCK file, `up-state.json`, WAL segments and their
//! directories), checked on the real `up`, `coordinator` and `streaming-node` binaries.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::streaming::Proc;

/// Every path under `root` (itself included) with its permission bits.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path).expect("metadata");
        found.push((
            path.clone(),
            metadata.is_dir(),
            metadata.permissions().mode() & 0o777,
        ));
        if metadata.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                pending.push(entry.expect("entry").path());
            }
        }
    }
    found
}

/// Asserts directories 0700 and files 0600 under `root`, and that `expected` names exist.
#[track_caller]
fn assert_private(root: &Path, expected: &[&str]) {
    let found = modes(root);
    for (path, is_dir, mode) in &found {
        let wanted = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(
            *mode,
            wanted,
            "{} is {mode:o}, expected {wanted:o}",
            path.display()
        );
    }
    for name in expected {
        assert!(
            found
                .iter()
                .any(|(path, _, _)| path.file_name().is_some_and(|n| n == *name)),
            "{name} not found under {}: {found:?}",
            root.display()
        );
    }
}

/// The TCP ports process `pid` listens on (from /proc: its socket inodes, matched with
/// the LISTEN rows of /proc/net/tcp and tcp6).
fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fds") {
        let Ok(target) = std::fs::read_link(entry.expect("fd").path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1 (ADDR:PORT in hex), st field 3 (0A = LISTEN),
            // inode field 9.
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().expect("port");
                ports.push(u16::from_str_radix(port, 16).expect("hex port"));
            }
        }
    }
    ports.sort_unstable();
    ports
}

#[test]
fn up_creates_its_data_directory_private() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().join("data");
    let port = common::free_port();
    let mut up = Command::new(common::binary())
        .arg("up")
        .arg("--manifests")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("up starts");
    let state = data_dir.join("up-state.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !state.exists() {
        assert!(up.try_wait().expect("wait").is_none(), "up exited early");
        assert!(Instant::now() < deadline, "no up-state.json within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The WAL plane is on Unix sockets: the only TCP port up listens on is its --listen.
    assert_eq!(listening_ports(up.id()), vec![port]);
    let status = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let _ = up.wait();
    assert_private(
        &data_dir,
        &[
            "up-state.json",
            "LOCK",
            "wal",
            "streaming-coord.sock",
            "streaming-node.sock",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_and_streaming_node_create_private_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let data_dir = dir.path().join("meta");
    let wal_dir = dir.path().join("wal");
    let port = common::free_port();
    let coordinator = Proc::coordinator_with(&data_dir, port, 1, 1000, &["--ddl-wal"]);
    let node = Proc::node(&coordinator.address, &wal_dir);
    let mut client = common::connect(coordinator.address.parse().expect("address")).await;
    // One DDL through the WAL: a segment and the meta store are written.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client
            .create_database(collection_operator::proto::api::CreateDatabaseRequest {
                db_name: "modes".into(),
                ..Default::default()
            })
            .await
            .expect("CreateDatabase rpc")
            .into_inner();
        if status.code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(node);
    drop(coordinator);
    assert_private(&data_dir, &["LOCK"]);
    assert_private(&wal_dir, &[]);
    assert!(
        modes(&wal_dir)
            .iter()
            .filter(|(_, is_dir, _)| !is_dir)
            .count()
            > 0,
        "the WAL holds no file"
    );
}
