//! Real coordinator and streaming-node processes for the WAL placement tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process may take to listen.
pub const WAIT: Duration = Duration::from_secs(30);

/// A child process of the real binary and the address it serves on.
pub struct Proc {
    pub child: Child,
    pub address: String,
}

impl Proc {
    fn wait_listening(mut self) -> Self {
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(&self.address).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited early: {status}", self.address);
            }
            assert!(Instant::now() < deadline, "{} did not listen", self.address);
            std::thread::sleep(Duration::from_millis(20));
        }
        self
    }

    /// `coordinator` on redb in `data_dir` with `pchannels` and a node lease of
    /// `lease_ms` (grace 300 ms).
    pub fn coordinator(data_dir: &Path, port: u16, pchannels: usize, lease_ms: u64) -> Self {
        Self::coordinator_with(data_dir, port, pchannels, lease_ms, &[])
    }

    /// [`Proc::coordinator`] with more flags.
    pub fn coordinator_with(
        data_dir: &Path,
        port: u16,
        pchannels: usize,
        lease_ms: u64,
        extra: &[&str],
    ) -> Self {
        Self::coordinator_env(data_dir, port, pchannels, lease_ms, extra, &[])
    }

    /// [`Proc::coordinator_with`] with environment variables (e.g. a failpoint).
    pub fn coordinator_env(
        data_dir: &Path,
        port: u16,
        pchannels: usize,
        lease_ms: u64,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let address = format!("127.0.0.1:{port}");
        let child = Command::new(super::binary())
            .envs(env.iter().copied())
            .args(["coordinator", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &address])
            .args(["--pchannels", &pchannels.to_string()])
            .args(["--streaming-lease-ms", &lease_ms.to_string()])
            .args(["--streaming-grace-ms", "300"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("coordinator starts");
        Self { child, address }.wait_listening()
    }

    /// `streaming-node` on a free port of 127.0.0.1.
    pub fn node(coordinator: &str, wal_dir: &Path) -> Self {
        Self::node_on(coordinator, wal_dir, "127.0.0.1")
    }

    /// `streaming-node` on a free port of loopback address `ip` (any of 127.0.0.0/8), so
    /// that nodes can be told apart by IP as pods are.
    pub fn node_on(coordinator: &str, wal_dir: &Path, ip: &str) -> Self {
        Self::node_with(coordinator, wal_dir, ip, &[])
    }

    /// [`Proc::node_on`] with more flags (e.g. `--auth-token-file`).
    pub fn node_with(coordinator: &str, wal_dir: &Path, ip: &str, extra: &[&str]) -> Self {
        let address = format!("{ip}:{}", super::free_port());
        let child = Command::new(super::binary())
            .args(["streaming-node", "--coordinator"])
            .arg(format!("http://{coordinator}"))
            .arg("--wal-dir")
            .arg(wal_dir)
            .args(["--listen", &address])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("streaming node starts");
        Self { child, address }.wait_listening()
    }

    /// Sends a signal with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name}");
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
