//! Shared helpers of the integration tests: a coordinator served over real gRPC on a
//! loopback port (in-process, or as the real binary), and a client for it.
#![allow(dead_code)]

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
