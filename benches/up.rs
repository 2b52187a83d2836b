//! `collection-operator up` at two folder sizes (by default 100 Collection + 1,000
//! CollectionAlias manifests, then 1,000 + 10,000; one file each, aliases spread over the
//! collections), the real binary on a fresh data directory:
//! - cold start until the engine holds everything and `up` reports every resource ready;
//! - a full resync pass over everything with nothing to do (the periodic drift repair;
//!   its duration from `up`'s own `pass done` log line): the first after the start, which
//!   reads every file again, and the median of the 3 after it;
//! - one alias edit: file written → AlterAlias visible through DescribeAlias (with a
//!   20 ms debounce; `--debounce-ms` defaults to 200), and that pass's own duration,
//!   p50 and max over 5 edits;
//! - peak RSS of the `up` process (`VmHWM` of `/proc/<pid>/status`).
//!
//! ```sh
//! cargo bench --bench up
//! UP_BENCH_ALIASES=2000 UP_BENCH_COLLECTIONS=200 cargo bench --bench up   # larger size
//! UP_BENCH_BINARY=/path/to/other/collection-operator cargo bench --bench up  # compare
//! ```
//!
//! Prints figures only; no assertions.

mod support;

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
use support::{env_usize, free_port};

const BINARY: &str = env!("CARGO_BIN_EXE_collection-operator");
const TIMEOUT: Duration = Duration::from_secs(300);

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

/// `up` as a child process; its stdout lines arrive on `lines`, its pass log lines on
/// `passes`, each with its arrival time.
struct UpProcess {
    child: Child,
    lines: mpsc::Receiver<(Instant, String)>,
    passes: mpsc::Receiver<(Instant, String)>,
    port: u16,
}

/// The binary measured: this build's, or `UP_BENCH_BINARY` (e.g. a build of main).
fn binary() -> PathBuf {
    std::env::var_os("UP_BENCH_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BINARY))
}

fn forward(
    stream: impl std::io::Read + Send + 'static,
    keep: fn(&str) -> bool,
) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if keep(&line) && tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

impl UpProcess {
    fn start(manifests: &Path, data: &Path) -> anyhow::Result<(Self, Instant)> {
        let port = free_port()?;
        let started = Instant::now();
        let mut child = Command::new(binary())
            .arg("up")
            .arg("--manifests")
            .arg(manifests)
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--resync-secs", &RESYNC.as_secs().to_string()])
            .args(["--debounce-ms", &DEBOUNCE.as_millis().to_string()])
            .env("RUST_LOG", "warn,collection_operator::up=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .context("starting up")?;
        let lines = forward(child.stdout.take().context("stdout")?, |_| true);
        let passes = forward(child.stderr.take().context("stderr")?, |line| {
            line.contains("reconcile pass") || line.contains("pass done")
        });
        Ok((
            Self {
                child,
                lines,
                passes,
                port,
            },
            started,
        ))
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

    /// The next pass: whether it was a full one (a build without targeted passes logs
    /// no `targeted` field: all its passes are full), its actions and its duration.
    fn next_pass(&self) -> anyhow::Result<Pass> {
        let deadline = Instant::now() + TIMEOUT;
        let next = || {
            self.passes
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .context("up logged no pass in time")
        };
        loop {
            let (_, line) = next()?;
            if !line.contains("reconcile pass") {
                continue;
            }
            let full = !line.contains("targeted=true");
            let parts = [
                "files_read",
                "state_writes",
                "load_ms",
                "observe_ms",
                "plan_ms",
                "apply_ms",
                "save_ms",
                "print_ms",
            ]
            .iter()
            .map(|name| format!("{name}={}", field(&line, name).unwrap_or(0)))
            .collect::<Vec<_>>()
            .join(" ");
            let actions = field(&line, "actions").unwrap_or(0);
            let (ended, done) = next()?;
            let elapsed = field(&done, "elapsed_ms").context("pass done without elapsed_ms")?;
            return Ok(Pass {
                full,
                actions,
                elapsed: Duration::from_millis(elapsed),
                ended,
                parts,
            });
        }
    }

    /// Drops what arrived on `passes` so far.
    fn skip_logged(&self) {
        while self.passes.try_recv().is_ok() {}
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.child.id(), "VmHWM:")
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

#[derive(Debug)]
struct Pass {
    full: bool,
    actions: u64,
    elapsed: Duration,
    ended: Instant,
    /// The pass's own split (`load_ms=… observe_ms=…`).
    parts: String,
}

fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
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

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".to_string())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Between full passes; long enough for an edit and its pass to fit in between.
const RESYNC: Duration = Duration::from_secs(2);
/// Quiet time after a file event before the pass.
const DEBOUNCE: Duration = Duration::from_millis(20);
const EDITS: usize = 5;
const RESYNCS: usize = 3;

/// The figures of one folder size.
struct Figures {
    collections: usize,
    aliases: usize,
    cold_engine: Duration,
    cold_ready: Duration,
    first_resync: Duration,
    resync: Vec<Duration>,
    edit_visible: Vec<Duration>,
    edit_pass: Vec<Duration>,
    edit_full: usize,
    peak: Option<u64>,
}

fn sorted(mut values: Vec<Duration>) -> Vec<Duration> {
    values.sort();
    values
}

async fn measure(collections: usize, aliases: usize) -> anyhow::Result<Figures> {
    let total = collections + aliases;
    let root = tempfile::tempdir()?;
    let manifests: PathBuf = root.path().join("manifests");
    let data = root.path().join("data");
    write_manifests(&manifests, collections, aliases)?;

    let (up, started) = UpProcess::start(&manifests, &data)?;
    let engine_done = wait_engine(up.port, collections, aliases).await?;
    let reported = up.wait_all_ready(total)?;
    let cold_engine = engine_done.duration_since(started);
    let cold_ready = reported.duration_since(started);

    // Full passes with nothing to do: the periodic resync. The first one after the start
    // reads every file again (the start checked them against no accepted objects), so it
    // is reported on its own.
    up.skip_logged();
    let mut first_resync = None;
    let mut resync = Vec::new();
    while resync.len() < RESYNCS {
        let pass = up.next_pass()?;
        if pass.full && pass.actions == 0 {
            println!(
                "  full pass {} ms: {}",
                pass.elapsed.as_millis(),
                pass.parts
            );
            if first_resync.is_none() {
                first_resync = Some(pass.elapsed);
            } else {
                resync.push(pass.elapsed);
            }
        }
    }
    let first_resync = first_resync.unwrap_or_default();

    // Edits, each right after a pass (the resync is RESYNC away): alias-00000 moves
    // to the next collection and back.
    let mut rpc = client(up.port).await?;
    let mut edit_visible = Vec::new();
    let mut edit_pass = Vec::new();
    let mut edit_full = 0;
    for round in 0..EDITS {
        let new_target = (round + 1) % 2 % collections.max(1);
        let wanted = format!("coll_{new_target:05}");
        up.skip_logged();
        let edit_started = Instant::now();
        std::fs::write(
            manifests.join("aliases/alias-00000.yaml"),
            alias_yaml(0, new_target),
        )?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let target = rpc
                .describe_alias(DescribeAliasRequest {
                    alias: "alias_00000".to_string(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .collection;
            if target == wanted {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the edit was not applied in time"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        edit_visible.push(edit_started.elapsed());
        let pass = loop {
            let pass = up.next_pass()?;
            if pass.actions > 0 {
                break pass;
            }
        };
        println!(
            "  edit: visible after {} ms; its pass {} ms: {}",
            edit_visible[edit_visible.len() - 1].as_millis(),
            pass.elapsed.as_millis(),
            pass.parts
        );
        edit_full += usize::from(pass.full);
        edit_pass.push(pass.elapsed);
        // Let the pass's table print before the next edit.
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(pass.ended.elapsed())).await;
    }
    let peak = up.peak_rss_kib();
    up.stop()?;
    Ok(Figures {
        collections,
        aliases,
        cold_engine,
        cold_ready,
        first_resync,
        resync: sorted(resync),
        edit_visible: sorted(edit_visible),
        edit_pass: sorted(edit_pass),
        edit_full,
        peak,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let collections = env_usize("UP_BENCH_COLLECTIONS", 1000);
    let aliases = env_usize("UP_BENCH_ALIASES", 10_000);
    println!("up: binary {}", binary().display());
    let mut rows = Vec::new();
    for (collections, aliases) in [(collections / 10, aliases / 10), (collections, aliases)] {
        println!("measuring {collections} Collection + {aliases} CollectionAlias manifests ...");
        rows.push(measure(collections, aliases).await?);
    }
    println!(
        "| resources | cold start → engine holds all | → up reports all ready | first resync after the start | full resync pass (median of the next {RESYNCS}) | one edit → AlterAlias visible, p50 / max of {EDITS} | that edit's pass, p50 / max | edit passes that were full | peak RSS (VmHWM) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for f in &rows {
        println!(
            "| {} ({} + {}) | {:.2} s | {:.2} s | {} | {} | {} / {} | {} / {} | {}/{EDITS} | {} |",
            f.collections + f.aliases,
            f.collections,
            f.aliases,
            f.cold_engine.as_secs_f64(),
            f.cold_ready.as_secs_f64(),
            ms(f.first_resync),
            ms(f.resync[f.resync.len() / 2]),
            ms(f.edit_visible[f.edit_visible.len() / 2]),
            ms(f.edit_visible[f.edit_visible.len() - 1]),
            ms(f.edit_pass[f.edit_pass.len() / 2]),
            ms(f.edit_pass[f.edit_pass.len() - 1]),
            f.edit_full,
            mib(f.peak),
        );
    }
    println!(
        "goals at 11,000 resources: one edit applied ≤ 100 ms, a full resync ≤ 0.5 s; \
         debounce {} ms included in \"visible\"",
        DEBOUNCE.as_millis()
    );
    Ok(())
}
