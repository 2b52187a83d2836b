//! Coordinator benchmarks: alias swaps (one client and sixteen) and DescribeAlias reads, run
//! against our coordinator (the release binary, fsync on every acknowledged write), or —
//! when `MILVUS_REFERENCE_ADDR` names a running Milvus 2.3.5 — against it with the very
//! same client code. Prints figures; asserts nothing.
//!
//! `scripts/bench.sh` starts the Milvus reference inside a private network namespace and
//! runs this; `cargo bench --bench coordinator` alone measures our coordinator only.
//!
//! Environment: `BENCH_OPS` (calls per single-client loop, default 5000), `BENCH_CLIENTS`
//! (default 16), `BENCH_RESTART_OBJECTS` (collections and aliases for the restart figure,
//! default 100000; 0 skips it), `BENCH_ETCD_ENDPOINT` (a running etcd: the loops also run
//! against our coordinator on etcd, each row beside the redb one; needs
//! `--features etcd`; `scripts/bench-etcd.sh` starts etcd and does this), `BENCH_DDL_WAL=1`
//! (the loops also run against our coordinator with `--ddl-wal` and one streaming node:
//! every DDL batch is appended to the control channel, fsynced by the node, before the
//! meta store commit).

mod support;

use support::{check, env_usize, free_port, schema};

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collection_operator::proto::api::milvus_service_client::MilvusServiceClient;
use collection_operator::proto::api::*;
use hdrhistogram::Histogram;
use tonic::transport::Channel;

type Client = MilvusServiceClient<Channel>;

async fn connect(addr: &str) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(MilvusServiceClient::new(channel))
}

async fn create_collection(client: &mut Client, name: &str) -> anyhow::Result<()> {
    let request = CreateCollectionRequest {
        collection_name: name.into(),
        schema: schema(name),
        shards_num: 1,
        ..Default::default()
    };
    check(
        &client.create_collection(request).await?.into_inner(),
        "CreateCollection",
    )
}

async fn drop_alias(client: &mut Client, alias: &str) -> anyhow::Result<()> {
    check(
        &client
            .drop_alias(DropAliasRequest {
                alias: alias.into(),
                ..Default::default()
            })
            .await?
            .into_inner(),
        "DropAlias",
    )
}

async fn create_alias(client: &mut Client, collection: &str, alias: &str) -> anyhow::Result<()> {
    let request = CreateAliasRequest {
        collection_name: collection.into(),
        alias: alias.into(),
        ..Default::default()
    };
    check(
        &client.create_alias(request).await?.into_inner(),
        "CreateAlias",
    )
}

/// Figures of one loop.
struct Figures {
    ops: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Figures {
    fn new() -> Self {
        Self {
            ops: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new(3).expect("histogram"),
        }
    }

    fn merge(&mut self, other: &Figures) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.latency_us.add(&other.latency_us).expect("same bounds");
    }

    fn row(&self, loop_name: &str, server: &str) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "| {loop_name} | {server} | {} | {} | {:.0} | {:.3} | {:.3} |",
            self.ops,
            self.errors,
            self.ops as f64 / secs,
            self.latency_us.value_at_quantile(0.50) as f64 / 1000.0,
            self.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        )
    }
}

async fn alter_swap_loop(
    client: &mut Client,
    alias: &str,
    a: &str,
    b: &str,
    ops: usize,
) -> Figures {
    let mut figures = Figures::new();
    let started = Instant::now();
    for i in 0..ops {
        let target = if i % 2 == 0 { b } else { a };
        let request = AlterAliasRequest {
            collection_name: target.into(),
            alias: alias.into(),
            ..Default::default()
        };
        let call = Instant::now();
        let ok = matches!(client.alter_alias(request).await, Ok(r) if r.get_ref().code == 0 && r.get_ref().error_code == 0);
        let _ = figures.latency_us.record(call.elapsed().as_micros() as u64);
        figures.ops += 1;
        figures.errors += u64::from(!ok);
    }
    figures.elapsed = started.elapsed();
    figures
}

async fn describe_loop(client: &mut Client, alias: &str, ops: usize) -> Figures {
    let mut figures = Figures::new();
    let started = Instant::now();
    for _ in 0..ops {
        let request = DescribeAliasRequest {
            alias: alias.into(),
            ..Default::default()
        };
        let call = Instant::now();
        let ok = matches!(client.describe_alias(request).await, Ok(r) if r.get_ref().status.as_ref().is_some_and(|s| s.code == 0));
        let _ = figures.latency_us.record(call.elapsed().as_micros() as u64);
        figures.ops += 1;
        figures.errors += u64::from(!ok);
    }
    figures.elapsed = started.elapsed();
    figures
}

/// Runs the three client loops against one server and prints their rows.
async fn client_loops(
    addr: &str,
    server: &str,
    ops: usize,
    clients: usize,
) -> anyhow::Result<Vec<String>> {
    let mut client = connect(addr).await?;
    let (a, b) = ("bench_a", "bench_b");
    create_collection(&mut client, a).await?;
    create_collection(&mut client, b).await?;
    drop_alias(&mut client, "bench_z").await?;
    create_alias(&mut client, a, "bench_z").await?;
    let mut rows = Vec::new();
    // Warm-up: connections, caches.
    let _ = alter_swap_loop(&mut client, "bench_z", a, b, 100).await;
    let figures = alter_swap_loop(&mut client, "bench_z", a, b, ops).await;
    rows.push(figures.row("AlterAlias A↔B, 1 client", server));
    let figures = describe_loop(&mut client, "bench_z", ops).await;
    rows.push(figures.row("DescribeAlias, 1 client", server));

    for i in 0..clients {
        let alias = format!("bench_z{i}");
        drop_alias(&mut client, &alias).await?;
        create_alias(&mut client, a, &alias).await?;
    }
    let per_client = ops.max(clients) * 2 / clients;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&addr).await.expect("connect");
            alter_swap_loop(&mut client, &format!("bench_z{i}"), a, b, per_client).await
        }));
    }
    let mut total = Figures::new();
    for task in tasks {
        total.merge(&task.await?);
    }
    total.elapsed = started.elapsed();
    rows.push(total.row(
        &format!("AlterAlias, {clients} clients, distinct aliases"),
        server,
    ));
    Ok(rows)
}

fn start_coordinator(data_dir: &Path, port: u16) -> anyhow::Result<(Child, Duration)> {
    start_coordinator_with(data_dir, port, &[])
}

fn start_coordinator_with(
    data_dir: &Path,
    port: u16,
    extra: &[&str],
) -> anyhow::Result<(Child, Duration)> {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_collection-operator"))
        .args(["coordinator", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "coordinator did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok((child, started.elapsed()))
}

/// The same loops against one coordinator replica on etcd (it elects itself leader first).
async fn etcd_loops(endpoint: &str, ops: usize, clients: usize) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let prefix = format!("bench-{}/", std::process::id());
    let (mut replica, _) = start_coordinator_with(
        dir.path(),
        port,
        &[
            "--meta-store",
            "etcd",
            "--etcd-endpoints",
            endpoint,
            "--etcd-prefix",
            &prefix,
        ],
    )?;
    let addr = format!("127.0.0.1:{port}");
    let mut client = connect(&addr).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = client
            .alloc_timestamp(AllocTimestampRequest::default())
            .await?
            .into_inner();
        if response.status.is_some_and(|s| s.code == 0) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the replica on etcd did not lead"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = client_loops(&addr, "ours (etcd)", ops, clients).await;
    replica.kill()?;
    replica.wait()?;
    rows
}

/// The same loops against our coordinator with `--ddl-wal` and one streaming node.
async fn ddl_wal_loops(ops: usize, clients: usize) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (mut coordinator, _) =
        start_coordinator_with(dir.path(), port, &["--ddl-wal", "--pchannels", "1"])?;
    let node_port = free_port()?;
    let mut node = Command::new(env!("CARGO_BIN_EXE_collection-operator"))
        .args(["streaming-node", "--coordinator"])
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--wal-dir")
        .arg(dir.path().join("wal"))
        .args(["--listen", &format!("127.0.0.1:{node_port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let addr = format!("127.0.0.1:{port}");
    let mut client = connect(&addr).await?;
    // DDL waits until the node holds the control channel.
    let deadline = Instant::now() + Duration::from_secs(60);
    while create_collection(&mut client, "bench_warmup")
        .await
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no DDL through the control channel within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = client_loops(&addr, "ours (ddl-wal)", ops, clients).await;
    for child in [&mut node, &mut coordinator] {
        child.kill()?;
        child.wait()?;
    }
    rows
}

/// Fills the coordinator with `objects` collections and as many aliases, 16 clients wide.
async fn fill(addr: &str, objects: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let writers = 16;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&addr).await?;
            for i in (w..objects).step_by(writers) {
                let name = format!("c{i}");
                create_collection(&mut client, &name).await?;
                create_alias(&mut client, &name, &format!("a{i}")).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

async fn restart_figures(objects: usize) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (mut child, _) = start_coordinator(dir.path(), port)?;
    let addr = format!("127.0.0.1:{port}");
    let filled = fill(&addr, objects).await?;
    let mut rows = vec![format!(
        "| fill: {objects} collections + {objects} aliases, 16 clients | ours | {} | 0 | {:.0} | | |",
        objects * 2,
        (objects * 2) as f64 / filled.as_secs_f64()
    )];
    child.kill()?;
    child.wait()?;
    let mut times = Vec::new();
    for _ in 0..3 {
        let (mut child, ready) = start_coordinator(dir.path(), port)?;
        // Ready means answering from the recovered table, not only listening.
        let mut client = connect(&addr).await?;
        let described = client
            .describe_alias(DescribeAliasRequest {
                alias: format!("a{}", objects - 1),
                ..Default::default()
            })
            .await?
            .into_inner();
        anyhow::ensure!(
            described.collection == format!("c{}", objects - 1),
            "restart lost data"
        );
        times.push(ready);
        child.kill()?;
        child.wait()?;
    }
    times.sort();
    rows.push(format!(
        "| restart (process start → serving) with {objects} collections + {objects} aliases, median of 3 | ours | | | | {:.0} ms | max {:.0} ms |",
        times[1].as_secs_f64() * 1000.0,
        times[2].as_secs_f64() * 1000.0
    ));
    Ok(rows)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ops = env_usize("BENCH_OPS", 5000);
    let clients = env_usize("BENCH_CLIENTS", 16);
    let restart_objects = env_usize("BENCH_RESTART_OBJECTS", 100_000);
    let reference = std::env::var("MILVUS_REFERENCE_ADDR")
        .ok()
        .filter(|addr| !addr.is_empty());
    // BENCH_ROWS_ONLY=1: print only table rows (scripts/bench.sh merges two runs).
    let rows_only = std::env::var("BENCH_ROWS_ONLY").is_ok_and(|v| v == "1");
    if !rows_only {
        println!(
            "collection-operator coordinator benchmark: {ops} calls per loop, fsync on every commit"
        );
        println!(
            "machine: {} cores",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        );
        println!();
        println!("| loop | server | calls | errors | ops/s | p50 ms | p99 ms |");
        println!("|---|---|---|---|---|---|---|");
    }
    if let Some(addr) = reference {
        // Only the reference: our coordinator is measured in a separate run, while the
        // reference is not running, so that the two never compete for the CPU.
        for row in client_loops(&addr, "Milvus 2.3.5", ops, clients).await? {
            println!("{row}");
        }
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (mut ours, _) = start_coordinator(dir.path(), port)?;
    let rows = client_loops(&format!("127.0.0.1:{port}"), "ours", ops, clients).await;
    ours.kill()?;
    ours.wait()?;
    let rows = rows?;
    // Variants measured after the plain coordinator, each row printed beside its own.
    let mut variants: Vec<Vec<String>> = Vec::new();
    if let Ok(endpoint) = std::env::var("BENCH_ETCD_ENDPOINT")
        && !endpoint.is_empty()
    {
        variants.push(etcd_loops(&endpoint, ops, clients).await?);
    }
    if std::env::var("BENCH_DDL_WAL").is_ok_and(|v| v == "1") {
        variants.push(ddl_wal_loops(ops, clients).await?);
    }
    for (index, row) in rows.iter().enumerate() {
        println!("{row}");
        for variant in &variants {
            if let Some(row) = variant.get(index) {
                println!("{row}");
            }
        }
    }
    if restart_objects > 0 {
        for row in restart_figures(restart_objects).await? {
            println!("{row}");
        }
    }
    Ok(())
}
