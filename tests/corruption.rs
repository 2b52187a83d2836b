//! Damaged files and a full disk, against the real coordinator process and real files.
//!
//! - `commit.log`: one byte flipped in one copy of the first, a middle and the last record
//!   loses nothing; both copies of the first or a middle record damaged refuses the start
//!   (naming the file and the byte offset), and `--repair` starts, dropping (and logging)
//!   the records after the damage; a truncated or deleted log refuses the start.
//! - `meta.redb`: a byte flipped at its start, middle and end, or inside an alias key, never
//!   starts with an alias lost or renamed: the start is refused naming `meta.redb`, or every
//!   alias is there; deleting it with the log kept refuses the start.
//! - A full disk (a small tmpfs; needs root): writes fail, CheckHealth says unhealthy, space
//!   freed brings writes back without a restart, a restart on the full disk works, and no
//!   write reported as failed appears afterwards.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collection_operator::proto::api::*;
use common::{Client, binary, free_port, valid_schema};

const MAGIC: u32 = 0xC0_11_EC_72;
const BLOCK: u64 = 4096;
const HEADER: u64 = 20;
const ALIASES: usize = 60;

/// The real coordinator with its stderr in a file.
struct Coordinator {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coordinator {
    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and wait for the clean exit (a checkpoint: everything in meta.redb).
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        assert!(exit.success(), "clean stop: {exit:?}\n{}", read(&self.log));
    }

    fn output(&self) -> String {
        read(&self.log)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Starts the coordinator on `data_dir`; `Err(stderr)` when it exits instead of listening.
fn start(data_dir: &Path, extra: &[&str]) -> Result<Coordinator, String> {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    // Beside the data, not in it: the disk-full test fills the data's filesystem.
    let log = std::env::temp_dir().join(format!("corruption-test-{}.log", addr.port()));
    let child = Command::new(binary())
        .args(["coordinator", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", &addr.to_string()])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("coordinator spawns");
    let mut coordinator = Coordinator { child, addr, log };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = coordinator.child.try_wait().expect("try_wait") {
            return Err(format!("exit {status}: {}", coordinator.output()));
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(coordinator);
        }
        assert!(Instant::now() < deadline, "no start within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn create_collection(client: &mut Client, name: &str) -> Result<(), String> {
    let status = client
        .create_collection(CreateCollectionRequest {
            collection_name: name.into(),
            schema: valid_schema(name),
            shards_num: 1,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    match status.code {
        0 => Ok(()),
        _ => Err(format!("{} {}", status.code, status.reason)),
    }
}

async fn create_alias(client: &mut Client, alias: &str) {
    let status = client
        .create_alias(CreateAliasRequest {
            collection_name: "c".into(),
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .expect("CreateAlias")
        .into_inner();
    assert_eq!(status.code, 0, "CreateAlias {alias}: {status:?}");
}

/// The aliases of collection `c`, or `None` when `c` is gone.
async fn aliases(addr: SocketAddr) -> Option<BTreeSet<String>> {
    let mut client = common::connect(addr).await;
    let reply = client
        .list_aliases(ListAliasesRequest {
            collection_name: "c".into(),
            ..Default::default()
        })
        .await
        .expect("ListAliases")
        .into_inner();
    let code = reply.status.map(|s| s.code).unwrap_or_default();
    (code == 0).then(|| reply.aliases.into_iter().collect())
}

fn expected_aliases() -> BTreeSet<String> {
    std::iter::once("warm".to_string())
        .chain((0..ALIASES).map(|i| format!("a{i}")))
        .collect()
}

/// A record of the commit log chain: its offset and the size of one copy.
#[derive(Debug, Clone, Copy)]
struct Record {
    offset: u64,
    size: u64,
}

/// The records of the log chain, read the way the format describes them.
fn log_records(path: &Path) -> Vec<Record> {
    let bytes = std::fs::read(path).expect("read commit.log");
    let mut records = Vec::new();
    let mut at = 0u64;
    let mut last: Option<u64> = None;
    while at + BLOCK <= bytes.len() as u64 {
        let header = &bytes[at as usize..(at + HEADER) as usize];
        let magic = u32::from_le_bytes(header[0..4].try_into().expect("4"));
        let length = u32::from_le_bytes(header[4..8].try_into().expect("4")) as u64;
        let sequence = u64::from_le_bytes(header[8..16].try_into().expect("8"));
        if magic != MAGIC || last.is_some_and(|l| l + 1 != sequence) {
            break;
        }
        let size = (HEADER + length).div_ceil(BLOCK) * BLOCK;
        records.push(Record { offset: at, size });
        last = Some(sequence);
        at += 2 * size;
    }
    records
}

fn flip(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read");
    file.write_all_at(&[byte[0] ^ 0x22], offset).expect("write");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// A data directory whose commit log holds the 60 alias creations (killed before a
/// checkpoint), and the log's records.
fn damaged_log_fixture(root: &Path) -> (PathBuf, Vec<Record>) {
    for _attempt in 0..5 {
        let data = root.join(format!("fixture-{}", rand::random::<u32>()));
        let coordinator = start(&data, &[]).expect("fresh start");
        let addr = coordinator.addr;
        runtime().block_on(async {
            let mut client = common::connect(addr).await;
            create_collection(&mut client, "c").await.expect("c");
            // The store checkpoints at the first write a second after the last one: the
            // aliases after `warm` stay in the log while they come within that second.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            create_alias(&mut client, "warm").await;
            for i in 0..ALIASES {
                create_alias(&mut client, &format!("a{i}")).await;
            }
        });
        coordinator.kill9();
        let records = log_records(&data.join("commit.log"));
        // `warm` ended the second: its commit checkpointed, so the log holds a0..a59.
        if records.len() == ALIASES {
            return (data, records);
        }
        eprintln!(
            "a checkpoint came between the aliases ({} records in the log); again",
            records.len()
        );
    }
    panic!("could not keep the aliases in the commit log within 5 attempts");
}

#[test]
fn commit_log_damage_is_recovered_refused_or_repaired_never_silent() {
    let root = tempfile::tempdir().expect("tempdir");
    let (fixture, records) = damaged_log_fixture(root.path());
    let last = records.len() - 1;
    let picks = [("first", 0), ("middle", last / 2), ("last", last)];

    // One copy damaged (a byte in the payload, or in the header): nothing is lost.
    for (name, index) in picks {
        for (copy, at) in [("record", 25), ("copy", 5)] {
            let data = root.path().join(format!("one-{name}-{copy}"));
            copy_dir(&fixture, &data);
            let record = records[index];
            let offset = record.offset + if copy == "copy" { record.size } else { 0 } + at;
            flip(&data.join("commit.log"), offset);
            let coordinator = start(&data, &[])
                .unwrap_or_else(|e| panic!("{name} {copy} damaged once: refused: {e}"));
            let found = runtime().block_on(aliases(coordinator.addr));
            assert_eq!(
                found,
                Some(expected_aliases()),
                "{name} {copy}: lost aliases"
            );
            if copy == "record" {
                assert!(
                    coordinator.output().contains("its copy is intact"),
                    "{name}: the damage is reported: {}",
                    coordinator.output()
                );
            }
        }
    }

    // Both copies of the first or a middle record: refused, naming file and offset.
    for (name, index) in &picks[..2] {
        let data = root.path().join(format!("both-{name}"));
        copy_dir(&fixture, &data);
        let record = records[*index];
        flip(&data.join("commit.log"), record.offset + 30);
        flip(&data.join("commit.log"), record.offset + record.size + 30);
        let refusal = match start(&data, &[]) {
            Ok(c) => panic!(
                "{name}: started on a damaged log: {:?}",
                runtime().block_on(aliases(c.addr)).map(|a| a.len())
            ),
            Err(refusal) => refusal,
        };
        for needed in [
            "commit.log".to_string(),
            format!("damaged at byte offset {}", record.offset),
            "--repair".to_string(),
        ] {
            assert!(refusal.contains(&needed), "{name}: {needed:?} in {refusal}");
        }
        // --repair starts, keeps what comes before the damage, and logs what it drops.
        let coordinator = start(&data, &["--repair"]).expect("repair starts");
        let found = runtime().block_on(aliases(coordinator.addr));
        let kept: BTreeSet<String> = expected_aliases()
            .into_iter()
            .filter(|a| match a.strip_prefix('a') {
                Some(i) => i.parse::<usize>().is_ok_and(|i| i < *index),
                None => true,
            })
            .collect();
        assert_eq!(found, Some(kept), "{name}: what --repair keeps");
        let dropped = coordinator.output().matches("repair: dropped").count();
        assert_eq!(
            dropped,
            records.len() - index - 1,
            "{name}: every dropped record is logged: {}",
            coordinator.output()
        );
        coordinator.stop();
        // Repaired for good: the next start needs no flag.
        start(&data, &[]).expect("starts after the repair");
    }

    // Both copies of the last record: indistinguishable from a write torn by a crash; cut
    // with a warning (the one case a double fault can cost a record).
    let data = root.path().join("both-last");
    copy_dir(&fixture, &data);
    let record = records[last];
    flip(&data.join("commit.log"), record.offset + 30);
    flip(&data.join("commit.log"), record.offset + record.size + 30);
    let coordinator = start(&data, &[]).expect("a torn tail is cut");
    assert!(
        coordinator.output().contains("torn"),
        "{}",
        coordinator.output()
    );

    // Truncated: refused.
    let data = root.path().join("truncated");
    copy_dir(&fixture, &data);
    let log = std::fs::OpenOptions::new()
        .write(true)
        .open(data.join("commit.log"))
        .expect("open");
    log.set_len(records[last / 2].offset).expect("truncate");
    drop(log);
    let refusal = start(&data, &[]).err().expect("truncated log refused");
    assert!(refusal.contains("truncated"), "{refusal}");

    // Deleted: refused.
    let data = root.path().join("no-log");
    copy_dir(&fixture, &data);
    std::fs::remove_file(data.join("commit.log")).expect("rm");
    let refusal = start(&data, &[]).err().expect("missing log refused");
    assert!(refusal.contains("commit.log is missing"), "{refusal}");
    start(&data, &["--repair"]).expect("--repair continues from meta.redb");

    // meta.redb deleted with the log kept: refused; --repair starts empty, and says so.
    let data = root.path().join("no-redb");
    copy_dir(&fixture, &data);
    std::fs::remove_file(data.join("meta.redb")).expect("rm");
    let refusal = start(&data, &[]).err().expect("missing meta.redb refused");
    assert!(refusal.contains("meta.redb is missing"), "{refusal}");
    let coordinator = start(&data, &["--repair"]).expect("--repair starts empty");
    assert_eq!(runtime().block_on(aliases(coordinator.addr)), None);
    assert!(
        coordinator
            .output()
            .contains("starting with an empty meta store")
    );
}

/// Offsets of every occurrence of `needle` in `haystack`.
fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<u64> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i as u64)
        .collect()
}

#[test]
fn meta_redb_damage_is_refused_or_harmless_never_silent() {
    let root = tempfile::tempdir().expect("tempdir");
    let fixture = root.path().join("fixture");
    let coordinator = start(&fixture, &[]).expect("fresh start");
    let addr = coordinator.addr;
    runtime().block_on(async {
        let mut client = common::connect(addr).await;
        create_collection(&mut client, "c").await.expect("c");
        create_alias(&mut client, "warm").await;
        for i in 0..ALIASES {
            create_alias(&mut client, &format!("a{i}")).await;
        }
    });
    coordinator.stop();
    let file = std::fs::read(fixture.join("meta.redb")).expect("read meta.redb");
    let len = file.len() as u64;
    let mut offsets: Vec<(String, u64)> = vec![
        ("start".into(), 0),
        ("header".into(), 70),
        ("middle".into(), len / 2),
        ("end".into(), len - 1),
    ];
    for at in occurrences(&file, b"a27") {
        offsets.push((format!("key a27 at {at}"), at + 1));
    }
    for step in 1..=10u64 {
        offsets.push((format!("spread {step}"), len * step / 11));
    }
    let mut refused = 0;
    for (name, offset) in &offsets {
        let data = root.path().join(format!("flip-{offset}"));
        copy_dir(&fixture, &data);
        flip(&data.join("meta.redb"), *offset);
        match start(&data, &[]) {
            Err(refusal) => {
                assert!(
                    refusal.contains("meta.redb"),
                    "{name}: the refusal names the file: {refusal}"
                );
                refused += 1;
            }
            Ok(coordinator) => {
                let found = runtime().block_on(aliases(coordinator.addr));
                assert_eq!(
                    found,
                    Some(expected_aliases()),
                    "{name}: started with aliases lost or renamed"
                );
            }
        }
    }
    assert!(
        refused > 0,
        "no flip hit live data (the key flips must): {offsets:?}"
    );
}

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the disk-full test fills a small filesystem)"
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem of `dir` with a file until a write fails for lack of space.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let mut chunk = 1 << 20;
    while chunk >= 512 {
        let buffer = vec![0xAAu8; chunk];
        while std::io::Write::write_all(&mut file, &buffer).is_ok() {}
        chunk /= 2;
    }
    let _ = file.sync_all();
    path
}

async fn health(addr: SocketAddr) -> (bool, Vec<String>) {
    let mut client = common::connect(addr).await;
    let reply = client
        .check_health(CheckHealthRequest {})
        .await
        .expect("CheckHealth")
        .into_inner();
    (reply.is_healthy, reply.reasons)
}

/// What a Kubernetes `grpc:` probe of the managed coordinator sees: the
/// `grpc.health.v1` status of the whole server.
async fn probe(addr: SocketAddr) -> tonic_health::pb::health_check_response::ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let reply = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("grpc.health.v1 Check")
        .into_inner();
    tonic_health::pb::health_check_response::ServingStatus::try_from(reply.status)
        .expect("a known status")
}

async fn has_collection(coordinator: &Coordinator, name: &str) -> bool {
    let mut client = common::connect(coordinator.addr).await;
    let reply = client
        .has_collection(HasCollectionRequest {
            collection_name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            std::thread::sleep(Duration::from_millis(500));
            let pid = coordinator.child.id();
            let alive = Path::new(&format!("/proc/{pid}")).exists();
            panic!(
                "HasCollection: {e} (process alive: {alive})\n{}",
                coordinator.output()
            )
        })
        .into_inner();
    reply.value
}

#[test]
fn a_full_disk_is_unhealthy_recovers_and_never_applies_a_failed_write() {
    let root = tempfile::tempdir().expect("tempdir");
    // The commit log is pre-written (64 MiB), the store holds 8 MiB back for a restart on
    // a full disk, and a few MiB more for redb.
    let mount = Tmpfs::mount(&root.path().join("mnt"), "80m");
    let data = mount.0.join("data");
    let coordinator = start(&data, &[]).expect("start");
    let addr = coordinator.addr;
    let rt = runtime();
    let mut acknowledged = Vec::new();
    let mut failed = Vec::new();
    let filler = rt.block_on(async {
        let mut client = common::connect(addr).await;
        create_collection(&mut client, "before")
            .await
            .expect("before");
        acknowledged.push("before".to_string());
        let filler = fill(&mount.0);
        // Write until the store refuses (redb has free pages left at first).
        for i in 0..5000 {
            let name = format!("full{i}");
            match create_collection(&mut client, &name).await {
                Ok(()) => acknowledged.push(name),
                Err(error) => {
                    assert!(error.starts_with("5 "), "a store failure: {error}");
                    failed.push(name);
                    break;
                }
            }
        }
        assert_eq!(failed.len(), 1, "no write failed on a full disk");
        let (healthy, reasons) = health(addr).await;
        assert!(!healthy, "CheckHealth while writes fail");
        assert!(!reasons.is_empty(), "CheckHealth gives the reason");
        assert_eq!(
            probe(addr).await,
            tonic_health::pb::health_check_response::ServingStatus::NotServing,
            "the pod's gRPC probe fails while writes fail"
        );
        let refused = "refused-while-full".to_string();
        assert!(create_collection(&mut client, &refused).await.is_err());
        failed.push(refused);
        filler
    });
    // Space comes back: healthy again and writes taken, without a restart.
    std::fs::remove_file(&filler).expect("free space");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !health(addr).await.0 {
            assert!(
                Instant::now() < deadline,
                "no recovery within 10 s of space returning"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            probe(addr).await,
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "the probe passes again"
        );
        let mut client = common::connect(addr).await;
        create_collection(&mut client, "after")
            .await
            .expect("write after recovery");
        acknowledged.push("after".to_string());
    });
    // A restart on a full disk replays and serves; nothing that failed appears.
    let filler = fill(&mount.0);
    coordinator.kill9();
    let coordinator = start(&data, &[]).expect("restart on a full disk");
    rt.block_on(async {
        for name in &acknowledged {
            assert!(has_collection(&coordinator, name).await, "{name} lost");
        }
        for name in &failed {
            assert!(
                !has_collection(&coordinator, name).await,
                "{name} was reported failed but is there"
            );
        }
    });
    std::fs::remove_file(&filler).expect("free space");
    drop(coordinator);
}
