//! `up` pays for a change, not for the folder: the real binary reconciles against our
//! coordinator (`--engine`, over loopback gRPC) whose server counts every RPC by method.
//! After one file edit the pass plans only that file's resources and what depends on
//! them (a handful of calls), where a full pass lists the engine per database and asks
//! for alias targets per collection; the periodic full pass still repairs drift on a
//! resource no edit touched.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use collection_operator::coordinator::service::CoordinatorService;
use collection_operator::coordinator::{EngineConfig, open_engine_async};
use collection_operator::proto::api::milvus_service_client::MilvusServiceClient;
use collection_operator::proto::api::milvus_service_server::MilvusServiceServer;
use collection_operator::proto::api::{AlterAliasRequest, DescribeAliasRequest};
use tokio::sync::oneshot;

/// Collections and aliases in the folder: enough that a full pass lists the engine
/// (from 64 names on) and that the listing's cost is far above an edit's.
const COLLECTIONS: usize = 50;
const ALIASES: usize = 100;

type Calls = Arc<Mutex<BTreeMap<String, usize>>>;

/// Our coordinator on loopback, its MilvusService behind a counter of calls by method.
struct CountingEngine {
    port: u16,
    calls: Calls,
    stop: Option<oneshot::Sender<()>>,
    _data: tempfile::TempDir,
}

impl CountingEngine {
    async fn start() -> Self {
        let data = tempfile::tempdir().expect("tmp");
        let (engine, _) = open_engine_async(data.path().to_path_buf(), EngineConfig::default())
            .await
            .expect("engine opens");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let calls: Calls = Arc::default();
        let counted = calls.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = MilvusServiceServer::new(CoordinatorService::new(engine))
            .max_decoding_message_size(collection_operator::serve::MAX_MESSAGE_BYTES);
        tokio::spawn(
            tonic::transport::Server::builder()
                // Called once per request with its path, `/milvus.proto.milvus.MilvusService/<RPC>`.
                .trace_fn(move |request: &http::Request<()>| {
                    let method = request
                        .uri()
                        .path()
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    *counted.lock().expect("counter").entry(method).or_default() += 1;
                    tracing::Span::none()
                })
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Self {
            port,
            calls,
            stop: Some(stop),
            _data: data,
        }
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.calls.lock().expect("counter").clone()
    }

    async fn client(&self) -> MilvusServiceClient<tonic::transport::Channel> {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
                .expect("uri")
                .connect()
                .await
                .expect("connect");
        MilvusServiceClient::new(channel)
    }

    async fn target(&self, alias: &str) -> String {
        self.client()
            .await
            .describe_alias(DescribeAliasRequest {
                alias: alias.to_string(),
                ..Default::default()
            })
            .await
            .expect("DescribeAlias")
            .into_inner()
            .collection
    }
}

impl Drop for CountingEngine {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The calls made between two snapshots, by method.
fn made(
    before: &BTreeMap<String, usize>,
    after: &BTreeMap<String, usize>,
) -> BTreeMap<String, usize> {
    after
        .iter()
        .map(|(method, n)| (method.clone(), n - before.get(method).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn total(calls: &BTreeMap<String, usize>) -> usize {
    calls.values().sum()
}

fn collection_yaml(index: usize) -> String {
    format!(
        "apiVersion: collections.dev/v1alpha1
kind: Collection
metadata:
  name: coll-{index:02}
spec:
  coordinatorRef: {{name: local}}
  fields:
    - {{name: id, dataType: Int64, isPrimaryKey: true}}
    - {{name: embedding, dataType: FloatVector, dim: 8}}
"
    )
}

fn alias_yaml(index: usize, target: usize) -> String {
    format!(
        "apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata:
  name: alias-{index:03}
spec:
  coordinatorRef: {{name: local}}
  collection: coll_{target:02}
"
    )
}

fn alias_file(dir: &Path, index: usize) -> std::path::PathBuf {
    dir.join(format!("aliases/alias-{index:03}.yaml"))
}

/// The `up` process; the `reconcile pass` debug lines of its log arrive on `passes`.
struct Up {
    child: Child,
    passes: mpsc::Receiver<String>,
}

impl Up {
    fn start(engine_port: u16, manifests: &Path, data: &Path, resync_secs: u64) -> Self {
        Self::start_in(Path::new("."), engine_port, manifests, data, resync_secs)
    }

    /// [`Up::start`] in the working directory `cwd` (the paths may be relative to it).
    fn start_in(
        cwd: &Path,
        engine_port: u16,
        manifests: &Path,
        data: &Path,
        resync_secs: u64,
    ) -> Self {
        let mut child = Command::new(common::binary())
            .current_dir(cwd)
            .arg("up")
            .arg("--manifests")
            .arg(manifests)
            .arg("--data-dir")
            .arg(data)
            .args(["--engine", &format!("http://127.0.0.1:{engine_port}")])
            .args(["--resync-secs", &resync_secs.to_string()])
            .args(["--debounce-ms", "20"])
            .env("RUST_LOG", "warn,collection_operator::up=debug")
            .env_remove("COLLECTION_OPERATOR_ENGINE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("up starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, passes) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("reconcile pass") && tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, passes }
    }

    /// The next pass line, within `within`.
    fn next_pass(&self, within: Duration) -> String {
        self.passes
            .recv_timeout(within)
            .expect("up reports a reconcile pass in time")
    }

    /// Waits for a full pass that found nothing to do.
    fn settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = self.next_pass(deadline.saturating_duration_since(Instant::now()));
            if line.contains("targeted=false") && line.contains(" actions=0") {
                return;
            }
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Inode and modification time: the state file is replaced by a rename on every write.
fn file_identity(path: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).expect("the state file exists");
    (meta.ino(), meta.modified().expect("mtime"))
}

fn field(line: &str, name: &str) -> Option<usize> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{name}=")))
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_reconciles_its_resources_and_the_resync_repairs_drift_anywhere() {
    let engine = CountingEngine::start().await;
    let root = tempfile::tempdir().expect("tmp");
    let manifests = root.path().join("manifests");
    std::fs::create_dir_all(manifests.join("collections")).expect("mkdir");
    std::fs::create_dir_all(manifests.join("aliases")).expect("mkdir");
    for index in 0..COLLECTIONS {
        std::fs::write(
            manifests.join(format!("collections/coll-{index:02}.yaml")),
            collection_yaml(index),
        )
        .expect("write");
    }
    for index in 0..ALIASES {
        std::fs::write(
            alias_file(&manifests, index),
            alias_yaml(index, index % COLLECTIONS),
        )
        .expect("write");
    }
    let data = root.path().join("data");
    let up = Up::start(engine.port, &manifests, &data, 3);

    // Converged: a full pass with nothing left to do. The next full pass comes 3 s
    // after it; everything below up to the edit's pass happens well within that.
    up.settled();
    assert_eq!(engine.target("alias_099").await, "coll_49");

    // A full pass over 150 resources: ListDatabases, then per database ShowCollections
    // and ListAliases, and the alias targets per collection (50 < 100 aliases).
    let before = engine.counts();
    let state_file = collection_operator::up::state::path_in(&data);
    let state_before = file_identity(&state_file);
    let line = up.next_pass(Duration::from_secs(10));
    assert!(line.contains("targeted=false"), "{line}");
    let full = made(&before, &engine.counts());
    // Nothing changed: the state file is not written.
    assert_eq!(field(&line, "state_writes"), Some(0), "{line}");
    assert_eq!(file_identity(&state_file), state_before);
    assert_eq!(
        field(&line, "resources"),
        Some(COLLECTIONS + ALIASES),
        "{line}"
    );
    assert_eq!(full.get("ShowCollections"), Some(&1), "{full:?}");
    assert_eq!(
        full.get("ListAliases"),
        Some(&(1 + COLLECTIONS)),
        "{full:?}"
    );
    assert_eq!(full.get("DescribeCollection"), None, "{full:?}");
    assert_eq!(full.get("DescribeAlias"), None, "{full:?}");
    assert_eq!(total(&full), 1 + 1 + 1 + COLLECTIONS, "{full:?}");

    // One alias edit, right after that full pass: alias-000 moves from coll_00 to coll_01.
    let before = engine.counts();
    std::fs::write(alias_file(&manifests, 0), alias_yaml(0, 1)).expect("edit");
    let line = up.next_pass(Duration::from_secs(10));
    let edit = made(&before, &engine.counts());
    assert!(line.contains("targeted=true"), "{line}");
    assert_eq!(engine.target("alias_000").await, "coll_01");
    // Planned: the alias, its old and new target, and the aliases on those two
    // (alias-050 on coll_00, alias-001 and alias-051 on coll_01): 6 of 150.
    assert_eq!(field(&line, "resources"), Some(6), "{line}");
    assert_eq!(field(&line, "actions"), Some(1), "{line}");
    assert_eq!(edit.get("AlterAlias"), Some(&1), "{edit:?}");
    assert_eq!(edit.get("ShowCollections"), None, "{edit:?}");
    assert_eq!(edit.get("ListAliases"), None, "{edit:?}");
    // ListDatabases, DescribeCollection of the 6 names that may be collections (the
    // two targets and four alias names), DescribeAlias of the two collection names (an
    // alias could hold them), then the swap's verification (DescribeAlias and
    // DescribeCollection through the alias) and the AlterAlias itself.
    assert_eq!(edit.get("DescribeCollection"), Some(&(6 + 1)), "{edit:?}");
    assert_eq!(edit.get("DescribeAlias"), Some(&(2 + 1)), "{edit:?}");
    // The serving gate (switchPolicy WhenTargetServing by default) reads the current
    // and the new target: indexes, load state, row count.
    for read in ["DescribeIndex", "GetLoadState", "GetCollectionStatistics"] {
        assert_eq!(edit.get(read), Some(&2), "{edit:?}");
    }
    assert_eq!(total(&edit), 1 + 7 + 3 + 6 + 1, "{edit:?}");

    // Drift on a resource no edit touches: alias_099 moved behind up's back.
    let mut client = engine.client().await;
    let moved = client
        .alter_alias(AlterAliasRequest {
            alias: "alias_099".into(),
            collection_name: "coll_00".into(),
            ..Default::default()
        })
        .await
        .expect("AlterAlias")
        .into_inner();
    assert_eq!(moved.code, 0, "{moved:?}");
    // Removing another file is targeted too: its alias is dropped (deletionPolicy
    // Delete, the default), the drift elsewhere stays until the resync.
    std::fs::remove_file(alias_file(&manifests, 3)).expect("remove");
    let line = up.next_pass(Duration::from_secs(10));
    assert!(line.contains("targeted=true"), "{line}");
    assert_eq!(field(&line, "actions"), Some(1), "{line}");
    let gone = client
        .describe_alias(DescribeAliasRequest {
            alias: "alias_003".into(),
            ..Default::default()
        })
        .await
        .expect("DescribeAlias")
        .into_inner();
    assert_ne!(gone.status.map(|s| s.code), Some(0), "alias_003 is dropped");
    assert_eq!(engine.target("alias_099").await, "coll_00");

    // The periodic full pass repairs it. Of the files, it reads only the edited one:
    // the previous full pass came more than 2 s after the files were written, so
    // their verdicts were kept.
    let line = up.next_pass(Duration::from_secs(10));
    assert!(line.contains("targeted=false"), "{line}");
    assert_eq!(field(&line, "actions"), Some(1), "{line}");
    assert_eq!(field(&line, "files_read"), Some(1), "{line}");
    assert_eq!(engine.target("alias_099").await, "coll_49");
    assert_eq!(engine.target("alias_000").await, "coll_01");
}

/// `up --manifests manifests` from the folder above: the watcher's paths and the full
/// read's name the same files differently; an edit is still a targeted pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_under_a_relative_folder_is_targeted() {
    let engine = CountingEngine::start().await;
    let root = tempfile::tempdir().expect("tmp");
    let manifests = root.path().join("manifests");
    std::fs::create_dir_all(manifests.join("collections")).expect("mkdir");
    std::fs::create_dir_all(manifests.join("aliases")).expect("mkdir");
    for index in 0..2 {
        std::fs::write(
            manifests.join(format!("collections/coll-{index:02}.yaml")),
            collection_yaml(index),
        )
        .expect("write");
        std::fs::write(alias_file(&manifests, index), alias_yaml(index, index)).expect("write");
    }
    let up = Up::start_in(
        root.path(),
        engine.port,
        Path::new("manifests"),
        Path::new("data"),
        3600,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.target("alias_001").await != "coll_01" {
        assert!(Instant::now() < deadline, "up did not converge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Passes that follow at once (none is due for an hour otherwise) are over by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while up.passes.try_recv().is_ok() {}
    std::fs::write(alias_file(&manifests, 0), alias_yaml(0, 1)).expect("edit");
    let line = up.next_pass(Duration::from_secs(10));
    assert!(line.contains("targeted=true"), "{line}");
    assert_eq!(field(&line, "actions"), Some(1), "{line}");
    assert_eq!(engine.target("alias_000").await, "coll_01");
}
