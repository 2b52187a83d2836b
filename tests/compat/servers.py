"""Start and stop the servers the compat suite talks to.

Two kinds of server:

* ``CoordinatorServer``: our binary, ``$COORDINATOR_BIN coordinator --data-dir DIR
  --listen 127.0.0.1:PORT``.
* ``Milvus235Server``: real Milvus v2.3.5 standalone from the PyPI package ``milvus``
  (embedded etcd + rocksmq). It binds many fixed ports on all interfaces, which is
  why run.sh runs the whole suite inside a private network namespace.

Both are started with a bounded readiness wait; a server that exits or does not
become ready in time raises ``ServerStartError`` with the tail of its log.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_COORDINATOR_BIN = "target/debug/collection-operator"
COORDINATOR_READY_TIMEOUT_S = 20.0
MILVUS_READY_TIMEOUT_S = 120.0


class ServerStartError(RuntimeError):
    """A server under test could not be started or never became ready."""


@dataclass(frozen=True)
class ServerHandle:
    """What a test needs to reach one running server."""

    kind: str  # "coordinator" or "milvus235"
    host: str
    port: int
    scheme: str = "http"  # "https" when the server speaks TLS

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def auth_metadata(token: str | None) -> list[tuple[str, str]] | None:
    """The ``authorization`` header pymilvus sends for ``token`` (or ``user:password``)."""
    if token is None:
        return None
    return [("authorization", base64.b64encode(token.encode()).decode())]


def open_channel(address: str, root_cert: bytes | None = None) -> grpc.Channel:
    """A plaintext channel, or a TLS one trusting ``root_cert`` (PEM)."""
    if root_cert is None:
        return grpc.insecure_channel(address)
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=root_cert))


def grpc_connect_ok(
    address: str,
    timeout: float = 2.0,
    *,
    token: str | None = None,
    root_cert: bytes | None = None,
) -> bool:
    """True when the server answers the MilvusService Connect RPC with success.

    This is exactly what ``MilvusClient(uri)`` needs; using the raw stub avoids
    pymilvus' connection cache and its long retry loops. ``token`` is sent as
    pymilvus sends it; ``root_cert`` makes it a TLS connection.
    """
    channel = open_channel(address, root_cert)
    try:
        stub = milvus_pb2_grpc.MilvusServiceStub(channel)
        resp = stub.Connect(
            milvus_pb2.ConnectRequest(), timeout=timeout, metadata=auth_metadata(token)
        )
        return resp.status.code == 0 and resp.status.error_code == 0
    except grpc.RpcError:
        return False
    finally:
        channel.close()


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen | None, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; only the process we started."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def with_parent_death(cmd):
    """``cmd`` run under ``setpriv --pdeathsig KILL`` (util-linux): the kernel SIGKILLs the
    server if the pytest process dies (Linux PR_SET_PDEATHSIG), so a killed run leaves no
    server behind. Not a ``preexec_fn``: Python code between fork and exec in a process
    with gRPC threads (pymilvus) can abort the child before it starts (seen as exit -6)."""
    if shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
    return list(cmd)


def coordinator_binary() -> Path:
    raw = os.environ.get("COORDINATOR_BIN", DEFAULT_COORDINATOR_BIN)
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


class CoordinatorServer:
    """Our coordinator binary on a free loopback port with a temp data dir.

    ``extra_args`` are appended to the command line and ``env`` added to the
    environment (e.g. ``--auth-token-file``, ``COORDINATOR_AUTH_TOKENS``). When the
    server requires credentials or speaks TLS, the readiness probe needs
    ``ready_token`` (sent as pymilvus sends a token) and ``root_cert`` (PEM bytes
    trusted for TLS; the handle's scheme is then ``https``).
    """

    def __init__(
        self,
        binary: Path | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ready_token: str | None = None,
        root_cert: bytes | None = None,
    ):
        self.extra_args = [str(arg) for arg in extra_args]
        self.env = dict(env or {})
        self.ready_token = ready_token
        self.root_cert = root_cert
        self.binary = binary or coordinator_binary()
        self.root = Path(tempfile.mkdtemp(prefix="coordinator-"))
        self.data_dir = self.root / "data"
        self.data_dir.mkdir()
        self.log_path = self.root / "coordinator.log"
        self.proc: subprocess.Popen | None = None
        self.handle: ServerHandle | None = None

    def start(self, timeout_s: float = COORDINATOR_READY_TIMEOUT_S) -> ServerHandle:
        if not self.binary.is_file():
            raise ServerStartError(
                f"coordinator binary not found at {self.binary} "
                "(set COORDINATOR_BIN or run `cargo build`)"
            )
        port = free_port()
        log = open(self.log_path, "wb")
        cmd = [
            str(self.binary),
            "coordinator",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{port}",
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            with_parent_death(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env} if self.env else None,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"coordinator exited with {self.proc.returncode} during startup: "
                    f"{' '.join(cmd)}\n--- log tail ---\n{tail(self.log_path)}"
                )
            if tcp_accepts("127.0.0.1", port) and grpc_connect_ok(
                f"127.0.0.1:{port}", token=self.ready_token, root_cert=self.root_cert
            ):
                scheme = "http" if self.root_cert is None else "https"
                self.handle = ServerHandle("coordinator", "127.0.0.1", port, scheme)
                return self.handle
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(
            f"coordinator not ready on 127.0.0.1:{port} within {timeout_s:.0f}s: "
            f"{' '.join(cmd)}\n--- log tail ---\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if os.environ.get("COMPAT_KEEP_LOGS"):
            shutil.rmtree(self.data_dir, ignore_errors=True)
            print(f"\ncoordinator log kept at {self.log_path}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


class _PopenWithParentDeath:
    """Stand-in for the ``subprocess`` module inside the ``milvus`` package."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(args, *rest, **kwargs):  # noqa: N802 (mirrors subprocess.Popen)
        if isinstance(args, (list, tuple)) and not kwargs.get("shell"):
            args = with_parent_death(args)
        return subprocess.Popen(args, *rest, **kwargs)


class Milvus235Server:
    """Real Milvus 2.3.5 standalone (PyPI ``milvus==2.3.5``), default ports.

    The package's own launcher (``milvus.MilvusServer``) unpacks the binary into the
    data dir, writes milvus.yaml and resolves the listen ports (19530 for the proxy
    when free). We poll the gRPC Connect RPC ourselves instead of its HTTP health
    check, with a bounded deadline.
    """

    def __init__(self, config: dict | None = None, ready_token: str | None = None):
        """``config``: launcher settings (``MilvusServerConfig.set``), e.g.
        ``{"authorization_enabled": True}``; then pass ``ready_token="root:Milvus"``
        (the default root user) so that the readiness probes authenticate."""
        self.data_dir = Path(tempfile.mkdtemp(prefix="milvus235-data-"))
        self.config = dict(config or {})
        self.ready_token = ready_token
        self._server = None
        self.handle: ServerHandle | None = None

    def start(self, timeout_s: float = MILVUS_READY_TIMEOUT_S) -> ServerHandle:
        try:
            import milvus
            from milvus import MilvusServer, MilvusServerConfig, __version__
        except ImportError as exc:  # the package failed to install
            raise ServerStartError(f"PyPI package milvus==2.3.5 is not importable: {exc}")
        if __version__ != "2.3.5":
            raise ServerStartError(f"expected milvus 2.3.5, found {__version__}")
        # The launcher calls subprocess.Popen itself; give the milvus module a
        # subprocess shim whose Popen also sets the parent-death signal.
        milvus.subprocess = _PopenWithParentDeath()
        config = MilvusServerConfig(data_dir=str(self.data_dir))
        for key, value in self.config.items():
            config.set(key, value)
        self._server = MilvusServer(config, wait_for_started=False)
        self._server.start()
        port = self._server.listen_port
        address = f"127.0.0.1:{port}"
        log_dir = self.data_dir / "logs"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self._server.server_proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise ServerStartError(
                    f"milvus 2.3.5 exited with {code} during startup\n--- stderr tail ---\n"
                    f"{tail(log_dir / 'milvus-stderr.log')}\n--- stdout tail ---\n"
                    f"{tail(log_dir / 'milvus-stdout.log')}"
                )
            if tcp_accepts("127.0.0.1", port) and grpc_connect_ok(address, token=self.ready_token):
                if self._ddl_ready(address, self.ready_token):
                    self.handle = ServerHandle("milvus235", "127.0.0.1", port)
                    return self.handle
            time.sleep(0.5)
        self.stop()
        raise ServerStartError(
            f"milvus 2.3.5 not ready on {address} within {timeout_s:.0f}s\n--- stdout tail ---\n"
            f"{tail(log_dir / 'milvus-stdout.log')}"
        )

    @staticmethod
    def _ddl_ready(address: str, token: str | None = None) -> bool:
        """Connect succeeds before rootcoord is up; ShowCollections needs rootcoord."""
        channel = grpc.insecure_channel(address)
        try:
            stub = milvus_pb2_grpc.MilvusServiceStub(channel)
            resp = stub.ShowCollections(
                milvus_pb2.ShowCollectionsRequest(), timeout=2.0, metadata=auth_metadata(token)
            )
            return resp.status.code == 0 and resp.status.error_code == 0
        except grpc.RpcError:
            return False
        finally:
            channel.close()

    def stop(self) -> None:
        if self._server is not None:
            proc = self._server.server_proc
            stop_process(proc, grace_s=10.0)
            self._server.stop()  # closes its log files; the process is already gone
            self._server = None
        shutil.rmtree(self.data_dir, ignore_errors=True)
