"""Fixtures of the chart tests: render charts/collection-operator with the real helm binary.

HELM names the helm binary (scripts/chart-check.sh installs one and sets it); without it
the tests fail with a hint instead of skipping, so CI cannot pass without them.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "collection-operator"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
KUBE_VERSION = "1.33.0"
COORDINATOR_API = "collections.dev/v1alpha1/Coordinator"


def helm_binary() -> str:
    helm = os.environ.get("HELM") or shutil.which("helm")
    if not helm:
        pytest.fail("no helm binary: run scripts/chart-check.sh, or set HELM=/path/to/helm")
    return helm


def render(*args: str, namespace: str = "ops", release: str = "co") -> list[dict]:
    """`helm template` with the given extra args; the rendered documents."""
    result = run_helm("template", release, str(CHART), "--namespace", namespace,
                      "--kube-version", KUBE_VERSION, *args)
    if result.returncode != 0:
        pytest.fail(f"helm template {' '.join(args)} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def run_helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=120)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="session")
def default_docs() -> list[dict]:
    return render()


@pytest.fixture(scope="session")
def all_features_docs() -> list[dict]:
    return render("-f", str(ALL_FEATURES), "--api-versions", COORDINATOR_API)


@pytest.fixture(scope="session")
def upgrade_docs() -> list[dict]:
    """Default values as rendered on `helm upgrade` (the CRDs are served by then)."""
    return render("--api-versions", COORDINATOR_API)
