#!/usr/bin/env bash
# Milvus compatibility suite: pymilvus against our coordinator, plus the
# differential test against real Milvus 2.3.5.
#
#   tests/compat/run.sh [pytest args...]     e.g. -k alias, or tests/compat/test_alias.py
#
# Env:
#   COORDINATOR_BIN  coordinator binary (default target/debug/collection-operator,
#                    relative to the repo root)
#   COMPAT_TARGET    coordinator (default) | milvus235: where the pymilvus suite points
#   COMPAT_VENV      venv path (default <repo>/.venv-compat)
#   COMPAT_SETUP_ONLY=1  only create/update the venv (used by scripts/bench.sh)
#   COMPAT_KEEP_LOGS set to keep coordinator logs (path printed at teardown)
#
# Creates or reuses the venv, installs the pinned requirements, then runs pytest
# inside a private network namespace (unshare -n): Milvus 2.3.5 listens on all
# interfaces with fixed ports, so nothing may leak outside loopback. Non-zero exit
# on any failure, including pytest's "no tests ran" (exit 5).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"

VENV="${COMPAT_VENV:-$REPO_ROOT/.venv-compat}"
REQUIREMENTS="tests/compat/requirements.txt"
PYTHON_BOOTSTRAP="${PYTHON:-python3}"

log() { printf '[compat] %s\n' "$*" >&2; }

# --- venv --------------------------------------------------------------------
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv at $VENV"
    rm -rf "$VENV"
    "$PYTHON_BOOTSTRAP" -m venv "$VENV"
fi
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
stamp="$VENV/.compat-requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    log "installing $REQUIREMENTS"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        --timeout 120 -r "$REQUIREMENTS"
    echo "$want" > "$stamp"
fi

if [ "${COMPAT_SETUP_ONLY:-0}" = 1 ]; then
    log "venv ready at $VENV (COMPAT_SETUP_ONLY=1: not running pytest)"
    exit 0
fi

# --- coordinator binary ----------------------------------------------------------
COORDINATOR_BIN="${COORDINATOR_BIN:-target/debug/collection-operator}"
case "$COORDINATOR_BIN" in
    /*) ;;
    *) COORDINATOR_BIN="$REPO_ROOT/$COORDINATOR_BIN" ;;
esac
export COORDINATOR_BIN
if [ ! -x "$COORDINATOR_BIN" ]; then
    log "coordinator binary not found or not executable: $COORDINATOR_BIN (run cargo build)"
    exit 1
fi

# --- private network namespace -------------------------------------------------------
IP_BIN="$(command -v ip || true)"
if [ -z "$IP_BIN" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    log "installing iproute2 for 'ip'"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iproute2 >/dev/null; }
    IP_BIN="$(command -v ip)"
fi
[ -n "$IP_BIN" ] || { log "'ip' (iproute2) is required"; exit 1; }

UNSHARE=(unshare -n)
if [ "$(id -u)" -ne 0 ]; then
    UNSHARE=(unshare -r -n)  # unprivileged: a user namespace maps us to root inside
fi

# Run the whole suite unless the caller names test files/dirs (e.g. a single module).
TARGETS=(tests/compat)
for arg in "$@"; do
    case "$arg" in
        -*) ;;
        *) if [ -e "${arg%%::*}" ]; then TARGETS=(); break; fi ;;
    esac
done

export PYTHONDONTWRITEBYTECODE=1
log "running pytest in a private network namespace (coordinator: $COORDINATOR_BIN)"
rc=0
"${UNSHARE[@]}" -- bash -c '
    set -e
    "$1" link set lo up
    shift
    exec "$@"
' _ "$IP_BIN" "$VENV/bin/python" -m pytest "${TARGETS[@]}" "$@" || rc=$?

if [ "$rc" -eq 5 ]; then
    log "pytest collected no tests: treated as failure"
    exit 1
fi
exit "$rc"
