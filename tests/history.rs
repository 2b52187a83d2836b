//! History stays linear in changes and bounded in size, on the real coordinator binary:
//!
//! - many aliases of one collection: history keeps one version per alias change, so a
//!   restart (which replays the retained DDL log) stays small in memory;
//! - Load/Release of a collection with a large record version a small load record, not the
//!   whole collection record, so neither the redb file nor memory grows by the record's
//!   size per call;
//! - `--history-max-entries` bounds the retained DDL log whatever the retention time: a
//!   restart replays at most that many records, reads inside the bound answer exactly and
//!   older reads answer as of the oldest retained state.
//!
//! Each test kills the process with SIGKILL before the restart, so recovery replays what
//! the store holds, not what a clean shutdown tidied.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collection_operator::proto::api::*;
use collection_operator::proto::common::{KeyValuePair, LoadState};
use common::{
    Client, assert_ok, binary, connect, create_alias_in, create_collection_in, free_port,
    valid_schema,
};

/// The coordinator binary with extra flags; its stderr (info logs of the coordinator
/// module) goes to a file, so that the recovery line can be read.
struct Coordinator {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Coordinator {
    fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = data_dir.with_extension(format!("{}.log", addr.port()));
        let child = Command::new(binary())
            .args(["coordinator", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &addr.to_string()])
            .args(extra)
            .env("RUST_LOG", "warn,collection_operator::coordinator=info")
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("coordinator starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "coordinator did not listen on {addr} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, addr, log }
    }

    /// Peak resident memory of the process (VmHWM), in bytes.
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM line");
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("VmHWM value");
        kib * 1024
    }

    /// `log_records` of the "meta table recovered" line: DDL log records replayed.
    fn replayed_log_records(&self) -> usize {
        let log = std::fs::read_to_string(&self.log).expect("log");
        let line = log
            .lines()
            .find(|l| l.contains("meta table recovered"))
            .unwrap_or_else(|| panic!("no recovery line in:\n{log}"));
        let (_, rest) = line
            .split_once("\"log_records\":")
            .unwrap_or_else(|| panic!("no log_records in {line:?}"));
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().expect("log_records is a number")
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn describe(client: &mut Client, name: &str, ts: u64) -> DescribeCollectionResponse {
    let response = client
        .describe_collection(DescribeCollectionRequest {
            collection_name: name.into(),
            time_stamp: ts,
            ..Default::default()
        })
        .await
        .expect("DescribeCollection rpc")
        .into_inner();
    assert_ok(
        response.status.as_ref().expect("status"),
        "DescribeCollection",
    );
    response
}

async fn show(client: &mut Client, ts: u64) -> Vec<String> {
    let response = client
        .show_collections(ShowCollectionsRequest {
            time_stamp: ts,
            ..Default::default()
        })
        .await
        .expect("ShowCollections rpc")
        .into_inner();
    assert_ok(response.status.as_ref().expect("status"), "ShowCollections");
    response.collection_names
}

/// Creates `count` aliases `a<i>` of `collection` from `clients` concurrent connections.
async fn create_aliases(addr: SocketAddr, collection: &str, count: usize, clients: usize) {
    let mut tasks = Vec::new();
    for client_index in 0..clients {
        let collection = collection.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = connect(addr).await;
            for i in (client_index..count).step_by(clients) {
                create_alias_in(&mut client, "", &format!("a{i:05}"), &collection).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("alias task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_aliases_of_one_collection_restart_small() {
    const ALIASES: usize = 5000;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let first = Coordinator::start(&data, &[]);
    let mut client = connect(first.addr).await;
    create_collection_in(&mut client, "", "base").await;
    create_aliases(first.addr, "base", ALIASES / 2, 8).await;
    let half = describe(&mut client, "base", 0).await;
    let half_ts = half.created_timestamp.max(
        client
            .alloc_timestamp(AllocTimestampRequest::default())
            .await
            .expect("AllocTimestamp")
            .into_inner()
            .timestamp,
    );
    let remaining: Vec<usize> = (ALIASES / 2..ALIASES).collect();
    let mut tasks = Vec::new();
    for chunk in remaining.chunks(ALIASES / 16) {
        let chunk = chunk.to_vec();
        let addr = first.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = connect(addr).await;
            for i in chunk {
                create_alias_in(&mut client, "", &format!("b{i:05}"), "base").await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("alias task");
    }
    first.kill9();

    // Every change is still in the retention window: the restart replays all of them.
    let second = Coordinator::start(&data, &[]);
    let mut client = connect(second.addr).await;
    let now = describe(&mut client, "base", 0).await;
    assert_eq!(now.aliases.len(), ALIASES, "every alias after the restart");
    let mut sorted = now.aliases.clone();
    sorted.sort();
    assert_eq!(sorted, now.aliases, "aliases are listed in order");
    let then = describe(&mut client, "base", half_ts).await;
    assert_eq!(
        then.aliases.len(),
        ALIASES / 2,
        "as of the middle, only the first half"
    );
    assert!(then.aliases.iter().all(|a| a.starts_with('a')));
    assert!(second.replayed_log_records() >= ALIASES);
    let peak = second.peak_rss();
    eprintln!(
        "{ALIASES} aliases of one collection: peak RSS after restart {} MiB",
        peak >> 20
    );
    // One full copy of the alias list per change was ~700 MB at 5k aliases.
    assert!(
        peak < 200 << 20,
        "peak RSS after replaying {ALIASES} alias changes: {} MiB",
        peak >> 20
    );
}

fn data_file_bytes(data: &Path) -> u64 {
    std::fs::metadata(data.join("meta.redb"))
        .expect("meta.redb")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_release_of_a_large_record_do_not_copy_it() {
    // A large record within the request bounds: 8 properties of 64,000 bytes.
    const PROPERTY_BYTES: usize = 64_000;
    const PROPERTIES: usize = 8;
    const RECORD_BYTES: usize = PROPERTY_BYTES * PROPERTIES;
    const ROUNDS: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let first = Coordinator::start(&data, &[]);
    let mut client = connect(first.addr).await;
    let status = client
        .create_collection(CreateCollectionRequest {
            collection_name: "big".into(),
            schema: valid_schema("big"),
            properties: (0..PROPERTIES)
                .map(|i| KeyValuePair {
                    key: format!("blob{i}"),
                    value: "x".repeat(PROPERTY_BYTES),
                })
                .collect(),
            ..Default::default()
        })
        .await
        .expect("CreateCollection rpc")
        .into_inner();
    assert_ok(&status, "CreateCollection big");
    create_collection_in(&mut client, "", "small").await;
    first.kill9();
    let second = Coordinator::start(&data, &[]);
    let before = data_file_bytes(&data);
    let mut client = connect(second.addr).await;
    for round in 0..ROUNDS {
        let status = client
            .load_collection(LoadCollectionRequest {
                collection_name: "big".into(),
                ..Default::default()
            })
            .await
            .expect("LoadCollection rpc")
            .into_inner();
        assert_ok(&status, &format!("LoadCollection round {round}"));
        if round + 1 < ROUNDS {
            let status = client
                .release_collection(ReleaseCollectionRequest {
                    collection_name: "big".into(),
                    ..Default::default()
                })
                .await
                .expect("ReleaseCollection rpc")
                .into_inner();
            assert_ok(&status, &format!("ReleaseCollection round {round}"));
        }
    }
    second.kill9();

    let third = Coordinator::start(&data, &[]);
    let after = data_file_bytes(&data);
    // A copy of the record (old and new value in the DDL log, the record itself) per call
    // grew the file by ~1.5 MiB per call: ~300 MiB here.
    assert!(
        after < before + (16 << 20),
        "meta.redb grew from {before} to {after} bytes over {} load/release calls",
        2 * ROUNDS - 1
    );
    let mut client = connect(third.addr).await;
    let state = client
        .get_load_state(GetLoadStateRequest {
            collection_name: "big".into(),
            ..Default::default()
        })
        .await
        .expect("GetLoadState rpc")
        .into_inner();
    assert_eq!(
        state.state,
        LoadState::Loaded as i32,
        "the last call loaded it"
    );
    let loaded = client
        .show_collections(ShowCollectionsRequest {
            r#type: ShowType::InMemory as i32,
            ..Default::default()
        })
        .await
        .expect("ShowCollections rpc")
        .into_inner();
    assert_eq!(loaded.collection_names, vec!["big".to_string()]);
    assert_eq!(third.replayed_log_records(), 2 * ROUNDS - 1 + 3);
    let peak = third.peak_rss();
    eprintln!(
        "{} load/release calls of a {RECORD_BYTES}-byte record: meta.redb {before} -> {after} bytes, peak RSS after restart {} MiB",
        2 * ROUNDS - 1,
        peak >> 20
    );
    // 199 versions of a 512 KiB record are ~100 MiB before any other cost.
    assert!(
        peak < 80 << 20,
        "peak RSS after replaying the load history: {} MiB",
        peak >> 20
    );
    // Dropping a loaded collection releases it: nothing of it is left in memory listings.
    let status = client
        .drop_collection(DropCollectionRequest {
            collection_name: "big".into(),
            ..Default::default()
        })
        .await
        .expect("DropCollection rpc")
        .into_inner();
    assert_ok(&status, "DropCollection big");
    assert_eq!(show(&mut client, 0).await, vec!["small".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_max_entries_bounds_the_replayed_log() {
    const MAX_ENTRIES: usize = 50;
    const COLLECTIONS: usize = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let flags = ["--history-max-entries", "50"];
    let first = Coordinator::start(&data, &flags);
    let mut client = connect(first.addr).await;
    let mut created = Vec::new();
    for i in 0..COLLECTIONS {
        let name = format!("c{i:03}");
        create_collection_in(&mut client, "", &name).await;
        created.push(describe(&mut client, &name, 0).await.created_timestamp);
    }
    first.kill9();

    let second = Coordinator::start(&data, &flags);
    let replayed = second.replayed_log_records();
    // Compaction runs once the log is an eighth over its bound.
    assert!(
        replayed <= MAX_ENTRIES + MAX_ENTRIES / 8 + 1,
        "replayed {replayed} DDL log records with --history-max-entries {MAX_ENTRIES}"
    );
    assert!(replayed >= MAX_ENTRIES, "replayed only {replayed}");
    let mut client = connect(second.addr).await;
    let names = |n: usize| (0..n).map(|i| format!("c{i:03}")).collect::<Vec<_>>();
    // Inside the bound: exact.
    let recent = COLLECTIONS - 10;
    assert_eq!(show(&mut client, created[recent]).await, names(recent + 1));
    // Older than what is kept: as of the oldest retained state, the same for any older
    // timestamp.
    let oldest = show(&mut client, created[10]).await;
    assert_eq!(show(&mut client, created[0]).await, oldest);
    let kept = oldest.len();
    assert!(
        (COLLECTIONS - replayed..COLLECTIONS).contains(&kept),
        "the oldest retained state has {kept} collections, replayed {replayed}"
    );
    assert_eq!(oldest, names(kept));
    assert_eq!(show(&mut client, 0).await, names(COLLECTIONS));
}
