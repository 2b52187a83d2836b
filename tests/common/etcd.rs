//! A real single-member etcd (Debian `etcd-server`, binary `etcd`) on free loopback ports
//! with a temporary data directory, for the etcd store and replica tests. Killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collection_operator::store::{EtcdOptions, EtcdStore};

use super::free_port;

/// How long etcd may take to answer after it was started.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a replica may take to load and listen.
const LISTEN_WITHIN: Duration = Duration::from_secs(300);

/// A single-member etcd on loopback; killed and its data removed on drop.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    peer_url: String,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let child = spawn(&dir, &client_url, &peer_url);
        let mut etcd = Self {
            child,
            endpoint: client_url,
            peer_url,
            dir,
        };
        etcd.wait_ready();
        etcd
    }

    /// SIGKILLs etcd (no clean shutdown).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts etcd again on the same data directory and ports (after [`Etcd::kill9`]).
    pub fn restart(&mut self) {
        self.child = spawn(&self.dir, &self.endpoint, &self.peer_url);
        self.wait_ready();
    }

    /// Bounded wait until etcd answers a status request.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        let runtime = runtime();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited early ({status}); log:\n{}", self.log());
            }
            let options = EtcdOptions {
                connect_timeout: Duration::from_millis(500),
                request_timeout: Duration::from_secs(1),
                ..EtcdOptions::default()
            };
            if runtime
                .block_on(EtcdStore::connect_with(
                    &self.endpoints(),
                    "ready/",
                    options,
                ))
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer within {READY_WITHIN:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What etcd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Its client endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    /// Connects a store (from sync code).
    pub fn store(&self, prefix: &str) -> EtcdStore {
        self.store_with(prefix, EtcdOptions::default())
    }

    /// Connects a store with options (from sync code).
    pub fn store_with(&self, prefix: &str, options: EtcdOptions) -> EtcdStore {
        runtime()
            .block_on(EtcdStore::connect_with(&self.endpoints(), prefix, options))
            .expect("store connects")
    }
}

fn spawn(dir: &tempfile::TempDir, client_url: &str, peer_url: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("etcd.log"))
        .expect("etcd log file");
    Command::new("etcd")
        .args(["--name", "test"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", &format!("test={peer_url}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd starts (Debian package etcd-server; scripts/test.sh installs it)")
}

/// [`Etcd::start`] from async code.
pub async fn start_etcd() -> Etcd {
    tokio::task::spawn_blocking(Etcd::start)
        .await
        .expect("etcd start task")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A small runtime for sync test code.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One coordinator replica on etcd: the real binary as a child process, logging to a file.
pub struct Replica {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub log_path: std::path::PathBuf,
}

impl Replica {
    /// Starts `coordinator --meta-store etcd` on a free port with a leadership lease of
    /// `lease_secs`, and waits until it accepts connections (bounded).
    pub fn start(etcd: &Etcd, prefix: &str, lease_secs: u64, log_dir: &std::path::Path) -> Self {
        let port = free_port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let log_path = log_dir.join(format!("coordinator-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("replica log file");
        let child = Command::new(super::binary())
            .args(["coordinator", "--meta-store", "etcd"])
            .args(["--etcd-endpoints", &etcd.endpoint])
            .args(["--etcd-prefix", prefix])
            .args(["--listen", &addr.to_string()])
            .args(["--leader-lease-secs", &lease_secs.to_string()])
            .arg("--data-dir")
            .arg(std::path::Path::new("/nonexistent/unused-with-etcd"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("coordinator starts");
        // A replica listens once it has loaded the table and its history (a long history
        // on a busy machine takes a while).
        let deadline = Instant::now() + LISTEN_WITHIN;
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "coordinator did not listen on {addr} within {LISTEN_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            addr,
            log_path,
        }
    }

    /// Sends a signal with kill(1) (SIGSTOP / SIGCONT).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the replica logged, without terminal colour codes.
    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut plain = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI sequences: ESC [ parameters final-letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly.
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(self.child.id().to_string())
                .stderr(Stdio::null())
                .status();
        }
        self.kill9();
    }
}

/// AllocTimestamp on `client`: the timestamp, or the refusal (code and reason, or the
/// transport error).
pub async fn try_alloc_timestamp(client: &mut super::Client) -> Result<u64, String> {
    use collection_operator::proto::api::AllocTimestampRequest;
    match client
        .alloc_timestamp(AllocTimestampRequest::default())
        .await
    {
        Ok(response) => {
            let response = response.into_inner();
            let status = response.status.unwrap_or_default();
            if status.code == 0 {
                Ok(response.timestamp)
            } else {
                Err(format!("code {}: {}", status.code, status.reason))
            }
        }
        Err(status) => Err(format!("rpc: {status}")),
    }
}

/// Polls AllocTimestamp until the replica at `addr` accepts writes (it leads); how long
/// that took. Panics after `within`.
pub async fn wait_writable(addr: std::net::SocketAddr, within: Duration) -> Duration {
    let started = Instant::now();
    let mut client = super::connect(addr).await;
    loop {
        match try_alloc_timestamp(&mut client).await {
            Ok(_) => return started.elapsed(),
            Err(why) => assert!(
                started.elapsed() < within,
                "{addr} did not accept writes within {within:?}: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
