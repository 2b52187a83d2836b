"""Fixtures of the end-to-end suite: a namespace of its own on the cluster named by
E2E_KUBECONFIG, the Helm chart installed there, and the coordinator and operator (binaries
on this machine, or the operator image in the cluster with E2E_IMAGE). Only run through tests/e2e/run.sh, which skips loudly without a cluster."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

REPO_ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "collections.dev", "v1alpha1"
PLURALS = {"Coordinator": "coordinators", "Collection": "collections", "CollectionAlias": "collectionaliases"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(what: str, predicate, timeout_s: float = 60.0, interval_s: float = 0.05):
    """Polls `predicate` until it returns a truthy value; fails with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


def engine_name(doc: dict) -> str:
    return doc["spec"].get("name") or doc["metadata"]["name"].replace("-", "_").replace(".", "_")


@pytest.fixture(scope="session")
def kube():
    config.load_kube_config(config_file=os.environ["E2E_KUBECONFIG"])
    return client.ApiClient()


@pytest.fixture(scope="session")
def namespace(kube):
    core = client.CoreV1Api(kube)
    name = f"collection-operator-e2e-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def in_cluster_operator() -> bool:
    """E2E_IMAGE: the chart runs the operator image in the cluster."""
    return bool(os.environ.get("E2E_IMAGE"))


@pytest.fixture(scope="session")
def release(kube, namespace):
    """Installs charts/collection-operator into the test namespace (namespace-scoped RBAC,
    CRDs from the chart's templates) and waits until every CRD is Established."""
    helm = os.environ["E2E_HELM"]
    args = [helm, "install", "e2e", str(REPO_ROOT / "charts" / "collection-operator"),
            "--namespace", namespace, "--kubeconfig", os.environ["E2E_KUBECONFIG"],
            "--set", "watch.scope=Namespace", "--set", "crds.install=true", "--wait", "--timeout", "5m"]
    image = os.environ.get("E2E_IMAGE")
    if image:
        repository, _, tag = image.rpartition(":")
        args += ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
    else:
        # The operator runs on this machine; the chart provides everything around it.
        args += ["--set", "replicaCount=0", "--set", "podDisruptionBudget.enabled=false"]
    subprocess.run(args, check=True)
    ext = client.ApiextensionsV1Api(kube)
    for plural in PLURALS.values():
        name = f"{plural}.{GROUP}"
        wait_until(f"CRD {name} established", lambda: any(
            c.type == "Established" and c.status == "True"
            for c in (ext.read_custom_resource_definition(name).status.conditions or [])
        ))
    yield "e2e"
    subprocess.run([helm, "uninstall", "e2e", "--namespace", namespace, "--kubeconfig",
                    os.environ["E2E_KUBECONFIG"], "--wait"], check=False)


class Process:
    """A binary of ours started for the session, stopped with SIGTERM at the end."""

    def __init__(self, args: list[str], env: dict, log: Path):
        self.log = log
        handle = open(log, "wb")
        self.proc = subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT)
        handle.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])


@pytest.fixture(scope="session")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="collection-operator-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def coordinator(workdir):
    endpoint = os.environ.get("E2E_COORDINATOR_ENDPOINT")
    if in_cluster_operator():
        assert endpoint, "E2E_IMAGE needs E2E_COORDINATOR_ENDPOINT (reachable from the pods and from here)"
    if endpoint:
        yield endpoint
        return
    port = free_port()
    binary = os.environ["COLLECTION_OPERATOR_BIN"]
    proc = Process([binary, "coordinator", "--data-dir", str(workdir / "data"), "--listen", f"127.0.0.1:{port}"],
                   dict(os.environ), workdir / "coordinator.log")
    wait_until("coordinator listening", lambda: _accepts(port) or (proc.proc.poll() is not None and proc.tail()))
    assert proc.proc.poll() is None, proc.tail()
    yield f"http://127.0.0.1:{port}"
    proc.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def operator(release, namespace, coordinator, workdir):
    if in_cluster_operator():
        apps = client.AppsV1Api()
        wait_until("operator Deployment available", lambda: any(
            d.status.available_replicas for d in apps.list_namespaced_deployment(namespace).items
        ), timeout_s=300)
        yield None
        return
    metrics_port = free_port()
    env = dict(os.environ, KUBECONFIG=os.environ["E2E_KUBECONFIG"], RUST_LOG="info")
    binary = os.environ["COLLECTION_OPERATOR_BIN"]
    proc = Process([binary, "operator", "--namespace", namespace, "--metrics-addr", f"127.0.0.1:{metrics_port}"],
                   env, workdir / "operator.log")
    wait_until("operator /readyz", lambda: _ready(metrics_port) or (proc.proc.poll() is not None and proc.tail()),
               timeout_s=120)
    assert proc.proc.poll() is None, proc.tail()
    proc.metrics_port = metrics_port
    yield proc
    proc.stop()


def _ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def custom(kube):
    return client.CustomObjectsApi(kube)


@pytest.fixture(scope="session")
def examples():
    """Every document of examples/*.yaml, by kind."""
    docs: dict[str, list[dict]] = {}
    for path in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion") == f"{GROUP}/{VERSION}":
                docs.setdefault(doc["kind"], []).append(doc)
    assert docs.get("Collection") and docs.get("CollectionAlias"), "examples/ must hold Collections and a CollectionAlias"
    return docs
