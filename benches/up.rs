//! `collection-operator up` convergence from cold: 10,000 CollectionAlias + 1,000
//! Collection manifests (one file each, aliases spread over the collections), the real
//! binary on a fresh data directory. Prints seconds until the engine holds everything and
//! until `up` reports every resource ready, and the peak RSS of the `up` process
//! (`VmHWM` of `/proc/<pid>/status`). Goals: ≤ 30 s and ≤ 200 MiB. Then: a restart on the
//! same data (a no-op pass over everything), and one alias edit with all resources loaded.
//!
//! ```sh
//! cargo bench --bench up
//! UP_BENCH_ALIASES=2000 UP_BENCH_COLLECTIONS=200 cargo bench --bench up   # smaller
//! UP_BENCH_RUST_LOG=collection_operator=debug cargo bench --bench up     # per-pass timings
//! ```
//!
//! Prints figures only; no assertions.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use collection_operator::proto::api::milvus_service_client::MilvusServiceClient;
use collection_operator::proto::api::{
    DescribeAliasRequest, ListAliasesRequest, ShowCollectionsRequest,
};

const BINARY: &str = env!("CARGO_BIN_EXE_collection-operator");
const TIMEOUT: Duration = Duration::from_secs(300);

fn count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn collection_yaml(index: usize) -> String {
    format!(
        "apiVersion: collections.dev/v1alpha1
kind: Collection
metadata:
  name: coll-{index:05}
spec:
  coordinatorRef: {{name: local}}
  fields:
    - {{name: id, dataType: Int64, isPrimaryKey: true, autoID: true}}
    - {{name: title, dataType: VarChar, maxLength: 512}}
    - {{name: embedding, dataType: FloatVector, dim: 768}}
"
    )
}

fn alias_yaml(index: usize, target: usize) -> String {
    format!(
        "apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata:
  name: alias-{index:05}
spec:
  coordinatorRef: {{name: local}}
  collection: coll_{target:05}
"
    )
}

fn write_manifests(dir: &Path, collections: usize, aliases: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("collections"))?;
    std::fs::create_dir_all(dir.join("aliases"))?;
    for index in 0..collections {
        std::fs::write(
            dir.join(format!("collections/coll-{index:05}.yaml")),
            collection_yaml(index),
        )?;
    }
    for index in 0..aliases {
        std::fs::write(
            dir.join(format!("aliases/alias-{index:05}.yaml")),
            alias_yaml(index, index % collections.max(1)),
        )?;
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `up` as a child process; its stdout lines arrive on `lines` with their arrival time.
struct UpProcess {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    port: u16,
}

impl UpProcess {
    fn start(manifests: &Path, data: &Path, log: &Path) -> anyhow::Result<(Self, Instant)> {
        let port = free_port()?;
        // UP_BENCH_RUST_LOG=collection_operator=debug shows up's per-pass timings.
        let verbose = std::env::var("UP_BENCH_RUST_LOG").ok();
        let stderr = match verbose {
            Some(_) => Stdio::inherit(),
            None => Stdio::from(std::fs::File::create(log)?),
        };
        let started = Instant::now();
        let mut child = Command::new(BINARY)
            .arg("up")
            .arg("--manifests")
            .arg(manifests)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", verbose.as_deref().unwrap_or("warn"))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .context("starting up")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok((Self { child, lines, port }, started))
    }

    /// Waits for a status summary saying every one of `total` resources is ready.
    fn wait_all_ready(&self, total: usize) -> anyhow::Result<Instant> {
        let wanted = format!("{total}/{total} resource(s) ready");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = self
                .lines
                .recv_timeout(left)
                .context("up did not report every resource ready in time")?;
            if line.starts_with(&wanted) {
                return Ok(at);
            }
        }
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.child.id(), "VmHWM:")
    }

    fn rss_kib(&self) -> Option<u64> {
        status_kib(self.child.id(), "VmRSS:")
    }

    /// SIGTERM (graceful), then wait.
    fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A raw gRPC client (the generated `connect` is the Milvus Connect RPC, hence by hand).
async fn client(port: u16) -> anyhow::Result<MilvusServiceClient<tonic::transport::Channel>> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect()
        .await?;
    Ok(MilvusServiceClient::new(channel))
}

async fn engine_counts(port: u16) -> anyhow::Result<(usize, usize)> {
    let mut client = client(port).await?;
    let collections = client
        .show_collections(ShowCollectionsRequest::default())
        .await?
        .into_inner()
        .collection_names
        .len();
    let aliases = client
        .list_aliases(ListAliasesRequest::default())
        .await?
        .into_inner()
        .aliases
        .len();
    Ok((collections, aliases))
}

/// Polls the engine until it holds `collections` and `aliases` (bounded).
async fn wait_engine(port: u16, collections: usize, aliases: usize) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(counts) = engine_counts(port).await
            && counts == (collections, aliases)
        {
            return Ok(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "engine did not converge in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alias_target(port: u16, alias: &str) -> anyhow::Result<String> {
    let mut client = client(port).await?;
    Ok(client
        .describe_alias(DescribeAliasRequest {
            alias: alias.to_string(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .collection)
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let collections = count("UP_BENCH_COLLECTIONS", 1000);
    let aliases = count("UP_BENCH_ALIASES", 10_000);
    let total = collections + aliases;
    let root = tempfile::tempdir()?;
    let manifests: PathBuf = root.path().join("manifests");
    let data = root.path().join("data");
    let written = Instant::now();
    write_manifests(&manifests, collections, aliases)?;
    println!(
        "up convergence: {collections} Collection + {aliases} CollectionAlias manifests \
         (one file each, written in {:.2} s), binary {BINARY}",
        written.elapsed().as_secs_f64()
    );

    // Cold: empty data directory.
    let (up, started) = UpProcess::start(&manifests, &data, &root.path().join("up-cold.log"))?;
    let engine_done = wait_engine(up.port, collections, aliases).await?;
    let reported = up.wait_all_ready(total)?;
    let cold_engine = engine_done.duration_since(started);
    let cold_ready = reported.duration_since(started);
    let cold_peak = up.peak_rss_kib();
    let cold_rss = up.rss_kib();

    // One alias edit with everything loaded: file write → engine alias moved.
    let edited = manifests.join("aliases/alias-00000.yaml");
    let new_target = 1 % collections.max(1);
    let edit_started = Instant::now();
    std::fs::write(&edited, alias_yaml(0, new_target))?;
    let wanted = format!("coll_{new_target:05}");
    let deadline = Instant::now() + TIMEOUT;
    while alias_target(up.port, "alias_00000")
        .await
        .unwrap_or_default()
        != wanted
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the edit was not applied in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let edit = edit_started.elapsed();
    let after_edit_peak = up.peak_rss_kib();
    up.stop()?;

    // Warm: restart on the same data; the first pass finds everything in place.
    let (up, started) = UpProcess::start(&manifests, &data, &root.path().join("up-warm.log"))?;
    let reported = up.wait_all_ready(total)?;
    let warm_ready = reported.duration_since(started);
    let warm_peak = up.peak_rss_kib();
    up.stop()?;

    println!("| measurement | value | goal |");
    println!("|---|---|---|");
    println!(
        "| cold start → engine holds all {collections} collections + {aliases} aliases | {:.2} s | |",
        cold_engine.as_secs_f64()
    );
    println!(
        "| cold start → up reports {total}/{total} ready (converged) | {:.2} s | ≤ 30 s |",
        cold_ready.as_secs_f64()
    );
    println!(
        "| peak RSS of up (VmHWM) at convergence | {} (RSS then {}) | ≤ 200 MiB |",
        mib(cold_peak),
        mib(cold_rss)
    );
    println!(
        "| one alias edit → AlterAlias visible (debounce 200 ms + full pass) | {} ms | |",
        edit.as_millis()
    );
    println!(
        "| peak RSS after the edit | {} | ≤ 200 MiB |",
        mib(after_edit_peak)
    );
    println!(
        "| restart on the same data → {total}/{total} ready (no-op pass) | {:.2} s (peak RSS {}) | |",
        warm_ready.as_secs_f64(),
        mib(warm_peak)
    );
    Ok(())
}
