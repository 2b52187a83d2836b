//! Shared helpers of the integration tests: a coordinator served over real gRPC on a
//! loopback port (in-process, or as the real binary), and a client for it.
#![allow(dead_code)]

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod fake_api;
pub mod streaming;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collection_operator::coordinator::{Engine, EngineConfig, open_engine_async, serve};
use collection_operator::proto::api::milvus_service_client::MilvusServiceClient;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A generated MilvusService client on a loopback channel.
pub type Client = MilvusServiceClient<Channel>;

/// A coordinator running inside the test process, on its own data directory.
pub struct InProcess {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    pub data_dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Starts a server on a fresh data directory.
    pub async fn start() -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(data_dir, EngineConfig::default()).await
    }

    /// Starts a server on an existing data directory (a restart).
    pub async fn start_in(data_dir: tempfile::TempDir, config: EngineConfig) -> Self {
        let (engine, _) = open_engine_async(data_dir.path().to_path_buf(), config)
            .await
            .expect("engine opens");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(engine.clone(), listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            engine,
            data_dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// A new client connection.
    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// Stops the server and the engine; returns the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.shutdown())
            .await
            .expect("shutdown");
        let dir = tempfile::tempdir().expect("placeholder");
        std::mem::replace(&mut self.data_dir, dir)
    }
}

/// Connects a client to `addr`.
pub async fn connect(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect");
    MilvusServiceClient::new(channel)
}

/// A request with the `dbname` header set, as pymilvus sends it.
pub fn with_db<T>(message: T, db: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("dbname", db.parse().expect("ascii db name"));
    request
}

/// Path of the built `collection-operator` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_collection-operator"))
}

/// A free loopback port (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The real coordinator binary as a child process.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Process {
    /// Starts `collection-operator coordinator` on `data_dir` and waits until it accepts
    /// connections (bounded).
    pub fn start(data_dir: &Path, port: u16) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new(binary())
            .args(["coordinator", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coordinator starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "coordinator did not listen on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, addr }
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- helpers of the alias_matrix / errors / time_travel suites ----

/// An encoded `CollectionSchema` named `name`: `id` Int64 primary key and a float vector
/// `v` of dimension `dim`.
pub fn schema_with_dim(name: &str, dim: u32) -> Vec<u8> {
    use collection_operator::proto::common::KeyValuePair;
    use collection_operator::proto::schema::{CollectionSchema, DataType, FieldSchema};
    use prost::Message;
    CollectionSchema {
        name: name.into(),
        fields: vec![
            FieldSchema {
                name: "id".into(),
                data_type: DataType::Int64 as i32,
                is_primary_key: true,
                ..Default::default()
            },
            FieldSchema {
                name: "v".into(),
                data_type: DataType::FloatVector as i32,
                type_params: vec![KeyValuePair {
                    key: "dim".into(),
                    value: dim.to_string(),
                }],
                ..Default::default()
            },
        ],
        ..Default::default()
    }
    .encode_to_vec()
}

/// [`schema_with_dim`] with dimension 4.
pub fn valid_schema(name: &str) -> Vec<u8> {
    schema_with_dim(name, 4)
}

/// A request with the `db_name` field left as built and, when `header` is `Some`, the
/// `dbname` header set (also to an empty value, as pymilvus sends for `default`).
pub fn with_header<T>(message: T, header: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(db) = header {
        request
            .metadata_mut()
            .insert("dbname", db.parse().expect("ascii db name"));
    }
    request
}

/// Asserts a success status (every field zero or empty).
#[track_caller]
pub fn assert_ok(status: &collection_operator::proto::common::Status, what: &str) {
    assert_eq!(
        (status.code, status.error_code, status.reason.as_str()),
        (0, 0, ""),
        "{what}: expected success, got {status:?}"
    );
    assert_eq!(status.detail, "", "{what}: detail of a success");
}

/// Asserts an error status: `code`, legacy `error_code`, `reason`, `detail`, not retriable.
#[track_caller]
pub fn assert_error(
    status: &collection_operator::proto::common::Status,
    code: i32,
    legacy: collection_operator::proto::common::ErrorCode,
    reason: &str,
    detail: &str,
    what: &str,
) {
    assert_eq!(status.code, code, "{what}: code of {status:?}");
    assert_eq!(
        status.error_code, legacy as i32,
        "{what}: legacy error_code of {status:?}"
    );
    assert_eq!(status.reason, reason, "{what}: reason");
    assert_eq!(status.detail, detail, "{what}: detail");
    assert!(!status.retriable, "{what}: retriable");
}

/// [`assert_error`] for the usual case where `reason` and `detail` are the same text.
#[track_caller]
pub fn assert_error_msg(
    status: &collection_operator::proto::common::Status,
    code: i32,
    legacy: collection_operator::proto::common::ErrorCode,
    message: &str,
    what: &str,
) {
    assert_error(status, code, legacy, message, message, what);
}

/// CreateCollection of [`valid_schema`] in database `db` (request field); asserts success.
pub async fn create_collection_in(client: &mut Client, db: &str, name: &str) {
    use collection_operator::proto::api::CreateCollectionRequest;
    let status = client
        .create_collection(CreateCollectionRequest {
            db_name: db.into(),
            collection_name: name.into(),
            schema: valid_schema(name),
            ..Default::default()
        })
        .await
        .expect("CreateCollection rpc")
        .into_inner();
    assert_ok(&status, &format!("CreateCollection {db}.{name}"));
}

/// CreateDatabase `name`; asserts success.
pub async fn create_database(client: &mut Client, name: &str) {
    use collection_operator::proto::api::CreateDatabaseRequest;
    let status = client
        .create_database(CreateDatabaseRequest {
            db_name: name.into(),
            ..Default::default()
        })
        .await
        .expect("CreateDatabase rpc")
        .into_inner();
    assert_ok(&status, &format!("CreateDatabase {name}"));
}

/// CreateAlias `alias` → `collection` in database `db` (request field); asserts success.
pub async fn create_alias_in(client: &mut Client, db: &str, alias: &str, collection: &str) {
    use collection_operator::proto::api::CreateAliasRequest;
    let status = client
        .create_alias(CreateAliasRequest {
            db_name: db.into(),
            collection_name: collection.into(),
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .expect("CreateAlias rpc")
        .into_inner();
    assert_ok(
        &status,
        &format!("CreateAlias {db}.{alias} -> {collection}"),
    );
}

/// AllocTimestamp; asserts success and a non-zero timestamp.
pub async fn alloc_timestamp(client: &mut Client) -> u64 {
    use collection_operator::proto::api::AllocTimestampRequest;
    let response = client
        .alloc_timestamp(AllocTimestampRequest::default())
        .await
        .expect("AllocTimestamp rpc")
        .into_inner();
    assert_ok(response.status.as_ref().expect("status"), "AllocTimestamp");
    assert_ne!(response.timestamp, 0, "AllocTimestamp returned 0");
    response.timestamp
}

impl InProcess {
    /// Serves an engine that is already open (e.g. on etcd); `data_dir` is an unused,
    /// empty temp dir.
    pub async fn start_with_engine(engine: Arc<Engine>) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(engine.clone(), listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            engine,
            data_dir,
            stop: Some(stop),
            server: Some(server),
        }
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost (openssl CLI).
pub fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=collection-operator test"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the TLS tests need the openssl CLI (Debian package openssl)");
    assert!(
        output.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}
