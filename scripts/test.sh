#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, Rust unit and integration tests (real
# gRPC on loopback, real coordinator processes killed with SIGKILL), then the pymilvus
# compatibility suite and the differential test against real Milvus 2.3.5 (PyPI), which
# run inside a private network namespace. Installs what it needs itself (Python venv with
# pinned packages; iproute2 if missing). CI runs exactly this (see .ci/run).
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

step "pymilvus compatibility + differential test against Milvus 2.3.5"
COORDINATOR_BIN=target/debug/collection-operator tests/compat/run.sh

step "all tests passed"
