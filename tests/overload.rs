//! One client cannot take the real coordinator process from the others:
//!
//! - heavy ShowCollections (a 200k-name filter over 4,000 collections, three at once, for
//!   several seconds) leave an unrelated DescribeAlias answering within [`PROBE_BOUND`];
//! - hundreds of idle connections at `nofile = 256` do not starve a new client (the
//!   connection idle the longest makes room), the refusal is logged, idle connections are
//!   closed after `--idle-timeout-secs`, and a soft `nofile` below the hard one is raised.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collection_operator::proto::api::*;
use common::{Client, Process, binary, free_port, valid_schema};

/// Longest an unrelated DescribeAlias may take while heavy requests run.
const PROBE_BOUND: Duration = Duration::from_millis(1500);
const COLLECTIONS: usize = 4000;
const FILTER_NAMES: usize = 200_000;
/// Clients sending the heavy ShowCollections at once (as many as the server has workers).
const HEAVY_CLIENTS: usize = 3;

fn collection(index: usize) -> String {
    format!("c{index:07}")
}

async fn describe_alias(client: &mut Client, alias: &str) -> DescribeAliasResponse {
    client
        .describe_alias(DescribeAliasRequest {
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .expect("DescribeAlias")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_show_collections_do_not_stall_other_clients() {
    let data = tempfile::tempdir().expect("tempdir");
    let server = Process::start(data.path(), free_port());
    let addr = server.addr;
    // 3,000 collections from 8 clients (group commit keeps it quick).
    let mut writers = Vec::new();
    for w in 0..8 {
        writers.push(tokio::spawn(async move {
            let mut client = common::connect(addr).await;
            for i in (w..COLLECTIONS).step_by(8) {
                let name = collection(i);
                let status = client
                    .create_collection(CreateCollectionRequest {
                        collection_name: name.clone(),
                        schema: valid_schema(&name),
                        shards_num: 1,
                        ..Default::default()
                    })
                    .await
                    .expect("CreateCollection")
                    .into_inner();
                assert_eq!(status.code, 0, "{name}: {status:?}");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let mut probe = common::connect(addr).await;
    let status = probe
        .create_alias(CreateAliasRequest {
            collection_name: collection(7),
            alias: "probe".into(),
            ..Default::default()
        })
        .await
        .expect("CreateAlias")
        .into_inner();
    assert_eq!(status.code, 0, "{status:?}");

    // Every third filter name exists: the answer is checked, not only its speed. All names
    // have the same length, so a linear filter compares their bytes.
    let filter: Vec<String> = (0..FILTER_NAMES)
        .map(|i| {
            if i % 3 == 0 && i / 3 < COLLECTIONS {
                collection(i / 3)
            } else {
                format!("m{i:07}")
            }
        })
        .collect();
    let expected = COLLECTIONS.min(FILTER_NAMES.div_ceil(3));
    let heavy_until = Instant::now() + Duration::from_secs(6);
    let mut heavy = Vec::new();
    for _ in 0..HEAVY_CLIENTS {
        let filter = filter.clone();
        heavy.push(tokio::spawn(async move {
            let mut client = common::connect(addr).await;
            let mut calls = 0;
            while Instant::now() < heavy_until {
                let reply = client
                    .show_collections(ShowCollectionsRequest {
                        collection_names: filter.clone(),
                        ..Default::default()
                    })
                    .await
                    .expect("ShowCollections")
                    .into_inner();
                assert_eq!(reply.collection_names.len(), expected);
                calls += 1;
            }
            calls
        }));
    }
    // Let the heavy requests start, then probe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    let mut probes = 0;
    while Instant::now() + Duration::from_millis(500) < heavy_until {
        let started = Instant::now();
        let reply =
            tokio::time::timeout(Duration::from_secs(30), describe_alias(&mut probe, "probe"))
                .await
                .expect("DescribeAlias within 30 s");
        slowest = slowest.max(started.elapsed());
        assert_eq!(reply.collection, collection(7));
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut heavy_calls = 0;
    for task in heavy {
        heavy_calls += task.await.expect("heavy client");
    }
    eprintln!("{probes} probes, slowest {slowest:?}; {heavy_calls} heavy ShowCollections");
    assert!(heavy_calls >= HEAVY_CLIENTS, "the heavy requests ran");
    assert!(
        slowest <= PROBE_BOUND,
        "DescribeAlias took {slowest:?} while heavy ShowCollections ran (bound {PROBE_BOUND:?})"
    );
}

/// The coordinator started under `ulimit` settings, stderr in a file.
struct Limited {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_limited(data_dir: &Path, ulimit: &str, extra: &str) -> Limited {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let log = data_dir.join("stderr.log");
    let script = format!(
        "ulimit {ulimit} && exec '{}' coordinator --data-dir '{}/data' --listen {addr} {extra}",
        binary().display(),
        data_dir.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("sh spawns");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "no listen within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    Limited { child, addr, log }
}

/// The log without ANSI colour sequences.
fn plain_log(path: &Path) -> String {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether the server closed `stream` (EOF or reset) within `within`; what it sends before
/// (its HTTP/2 settings) is read and ignored.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buffer = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test]
async fn idle_connections_do_not_starve_a_new_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_limited(dir.path(), "-n 256", "--idle-timeout-secs 4");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = plain_log(&server.log);
        if log.contains("allowed=128") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cap fits nofile 256 minus the reserve: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 400 connections that never send a byte, more than the process may hold.
    let idle: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        let mut client = common::connect(server.addr).await;
        describe_alias(&mut client, "nothing").await
    })
    .await
    .expect("a new client is served within 5 s despite 400 idle connections");
    assert_eq!(
        answered.status.map(|s| s.code),
        Some(1600),
        "DescribeAlias answered (alias not found)"
    );
    eprintln!("new client answered in {:?}", started.elapsed());
    let log = plain_log(&server.log);
    assert!(
        log.contains("connection limit reached"),
        "refusals are logged: {log}"
    );
    drop(idle);

    // A quiet connection stays open for a while, and is closed after the idle timeout.
    let mut quiet = TcpStream::connect(server.addr).expect("connect");
    assert!(
        !closed_by_server(&mut quiet, Duration::from_secs(1)),
        "closed before the idle timeout"
    );
    assert!(
        closed_by_server(&mut quiet, Duration::from_secs(6)),
        "not closed after the idle timeout"
    );
}

#[tokio::test]
async fn the_soft_nofile_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hard = String::from_utf8(
        Command::new("sh")
            .args(["-c", "ulimit -Hn"])
            .output()
            .expect("sh")
            .stdout,
    )
    .expect("utf8");
    let hard = hard.trim().to_string();
    let server = start_limited(dir.path(), "-Sn 256", "");
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).expect("limits");
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let soft = open_files.split_whitespace().nth(3).expect("soft column");
    assert_eq!(soft, hard, "{open_files}");
}
