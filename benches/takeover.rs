//! Takeover time of coordinator replicas on etcd against the size of the DDL history.
//!
//! For each size: a fresh prefix on the etcd at `BENCH_ETCD_ENDPOINT` gets collections
//! `base` and `other` and 1,000 aliases (through one replica, over gRPC), then that many
//! AlterAlias swaps, written by an engine in this process straight to etcd (the history
//! a busy cluster retains within `--history-retention-secs`). Then two replica processes
//! (the real binary, lease 2 s) start on it, one leads, it takes a few more DDLs, and it
//! is SIGKILLed. Printed per size: how long a replica took to load the table and history
//! at start (what every takeover used to cost), the survivor's takeover (election →
//! writes accepted, from its log) and whether its follower copy caught up, and SIGKILL →
//! first accepted write (which also waits out the dead leader's lease).
//!
//! ```sh
//! scripts/bench-takeover.sh                                   # 1k, 10k, 100k
//! TAKEOVER_BENCH_SIZES=1000,10000,100000,1000000 scripts/bench-takeover.sh
//! ```
//!
//! Prints figures only; no assertions.

mod support;

use support::{free_port, schema};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use collection_operator::coordinator::{Engine, EngineConfig};
use collection_operator::meta::Ddl;
use collection_operator::meta::names::DEFAULT_DATABASE;
use collection_operator::proto::api::milvus_service_client::MilvusServiceClient;
use collection_operator::proto::api::*;
use collection_operator::store::EtcdStore;
use collection_operator::store::etcd::{DEFAULT_MAX_TXN_OPS, max_ddls_per_batch};
use tonic::transport::Channel;

type Client = MilvusServiceClient<Channel>;

const BINARY: &str = env!("CARGO_BIN_EXE_collection-operator");
/// Aliases the history swaps between `base` and `other`.
const ALIASES: usize = 1000;
const LEASE_SECS: u64 = 2;

/// A replica process logging to a file.
struct Replica {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Replica {
    fn start(endpoint: &str, prefix: &str, dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = dir.join(format!("replica-{port}.log"));
        let child = Command::new(BINARY)
            .args(["coordinator", "--meta-store", "etcd"])
            .args(["--etcd-endpoints", endpoint, "--etcd-prefix", prefix])
            .args(["--listen", &addr.to_string()])
            .args(["--leader-lease-secs", &LEASE_SECS.to_string()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(600);
        while std::net::TcpStream::connect(addr).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "replica did not listen");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Self { child, addr, log })
    }

    /// The value of `field=` on the last log line containing `message`.
    fn logged(&self, message: &str, field: &str) -> Option<String> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        let line = log.lines().rev().find(|line| line.contains(message))?;
        let start = line.find(&format!("{field}="))? + field.len() + 1;
        Some(
            line[start..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        )
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await?;
    Ok(MilvusServiceClient::new(channel))
}

/// Whether the replica accepts a write now.
async fn writable(client: &mut Client) -> bool {
    client
        .alloc_timestamp(AllocTimestampRequest::default())
        .await
        .is_ok_and(|r| r.into_inner().status.is_some_and(|s| s.code == 0))
}

async fn wait_writable(addr: SocketAddr, within: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut client = connect(addr).await?;
    while !writable(&mut client).await {
        anyhow::ensure!(started.elapsed() < within, "{addr} did not lead");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

fn check(
    status: Option<collection_operator::proto::common::Status>,
    what: &str,
) -> anyhow::Result<()> {
    let status = status.unwrap_or_default();
    anyhow::ensure!(
        status.code == 0,
        "{what}: {} {}",
        status.code,
        status.reason
    );
    Ok(())
}

/// Collections and aliases through a single replica (which then stops cleanly).
async fn setup(endpoint: &str, prefix: &str, dir: &Path) -> anyhow::Result<()> {
    let replica = Replica::start(endpoint, prefix, dir)?;
    wait_writable(replica.addr, Duration::from_secs(30)).await?;
    let mut client = connect(replica.addr).await?;
    for name in ["base", "other"] {
        let request = CreateCollectionRequest {
            collection_name: name.into(),
            schema: schema(name),
            shards_num: 1,
            ..Default::default()
        };
        check(
            Some(client.create_collection(request).await?.into_inner()),
            "CreateCollection",
        )?;
    }
    for k in 0..ALIASES {
        let request = CreateAliasRequest {
            collection_name: "base".into(),
            alias: format!("a{k}"),
            ..Default::default()
        };
        check(
            Some(client.create_alias(request).await?.into_inner()),
            "CreateAlias",
        )?;
    }
    // SIGTERM: the replica revokes its lease, so the next ones need not wait it out.
    Command::new("kill")
        .arg(replica.child.id().to_string())
        .status()?;
    let mut replica = replica;
    let _ = replica.child.wait();
    Ok(())
}

/// `ddls` AlterAlias swaps (each round moves every alias once), written by an engine in
/// this process, in batches as large as an etcd transaction allows.
async fn fill(endpoint: &str, prefix: &str, ddls: usize) -> anyhow::Result<Duration> {
    let store = EtcdStore::connect(&[endpoint.to_string()], prefix).await?;
    let config = EngineConfig {
        max_batch: max_ddls_per_batch(DEFAULT_MAX_TXN_OPS),
        ..EngineConfig::default()
    };
    let started = Instant::now();
    let engine = tokio::task::spawn_blocking(move || Engine::open(Arc::new(store), config))
        .await??
        .0;
    let engine = Arc::new(engine);
    let mut done = 0;
    let mut round = 0;
    while done < ddls {
        let target = if round % 2 == 0 { "other" } else { "base" };
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..ALIASES.min(ddls - done) {
            let engine = engine.clone();
            tasks.spawn(async move {
                engine
                    .execute(Ddl::AlterAlias {
                        db: DEFAULT_DATABASE.into(),
                        collection: target.into(),
                        alias: format!("a{k}"),
                    })
                    .await
            });
        }
        while let Some(result) = tasks.join_next().await {
            result?.map_err(|e| anyhow::anyhow!("AlterAlias: {e}"))?;
            done += 1;
        }
        round += 1;
    }
    let filled = started.elapsed();
    tokio::task::spawn_blocking(move || engine.shutdown()).await?;
    Ok(filled)
}

struct Figures {
    ddls: usize,
    fill: Duration,
    load_ms: String,
    takeover_ms: String,
    caught_up: String,
    failover: Duration,
}

async fn measure(endpoint: &str, ddls: usize) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let prefix = format!("takeover-{}-{ddls}/", std::process::id());
    setup(endpoint, &prefix, dir.path())
        .await
        .context("setting up")?;
    let fill = fill(endpoint, &prefix, ddls).await.context("filling")?;
    let mut replicas = [
        Replica::start(endpoint, &prefix, dir.path())?,
        Replica::start(endpoint, &prefix, dir.path())?,
    ];
    let leader = loop {
        let mut found = None;
        for (index, replica) in replicas.iter().enumerate() {
            if let Ok(mut client) = connect(replica.addr).await
                && writable(&mut client).await
            {
                found = Some(index);
            }
        }
        if let Some(index) = found {
            break index;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let follower = 1 - leader;
    let mut client = connect(replicas[leader].addr).await?;
    for k in 0..10 {
        let request = AlterAliasRequest {
            collection_name: "base".into(),
            alias: format!("a{k}"),
            ..Default::default()
        };
        check(
            Some(client.alter_alias(request).await?.into_inner()),
            "AlterAlias",
        )?;
    }
    // The follower loaded at start, after the fill: let it settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let load_ms = replicas[follower]
        .logged("meta table recovered", "recovery_ms")
        .unwrap_or_default();
    let killed = Instant::now();
    replicas[leader].kill9();
    wait_writable(replicas[follower].addr, Duration::from_secs(120)).await?;
    let failover = killed.elapsed();
    let takeover_ms = replicas[follower]
        .logged("leading", "takeover_ms")
        .unwrap_or_default();
    let caught_up = replicas[follower]
        .logged("leading", "caught_up")
        .unwrap_or_default();
    Ok(Figures {
        ddls,
        fill,
        load_ms,
        takeover_ms,
        caught_up,
        failover,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoint = std::env::var("BENCH_ETCD_ENDPOINT")
        .context("BENCH_ETCD_ENDPOINT: a running etcd (scripts/bench-takeover.sh starts one)")?;
    let sizes: Vec<usize> = std::env::var("TAKEOVER_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .filter_map(|size| size.trim().parse().ok())
        .collect();
    println!(
        "takeover of a coordinator replica on etcd vs DDL history (lease {LEASE_SECS} s, {ALIASES} aliases swapped), {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!(
        "| DDLs in history | fill s | replica load at start ms | takeover: elected → writes ms | follower copy caught up | SIGKILL → writes accepted ms |"
    );
    println!("|---|---|---|---|---|---|");
    for size in sizes {
        let figures = measure(&endpoint, size).await?;
        println!(
            "| {} | {:.1} | {} | {} | {} | {} |",
            figures.ddls,
            figures.fill.as_secs_f64(),
            figures.load_ms,
            figures.takeover_ms,
            figures.caught_up,
            figures.failover.as_millis()
        );
    }
    Ok(())
}
