#!/usr/bin/env bash
# Benchmarks the coordinator and real Milvus 2.3.5 side by side: the same Rust client loops
# (benches/coordinator.rs) against both in one run, inside a private network namespace
# (Milvus 2.3.5 listens on all interfaces). Our coordinator is measured first, before
# Milvus starts, so that an idle Milvus does not take CPU from it; then Milvus. Prints one
# markdown table with the rows of both.
#
#   scripts/bench.sh                      # defaults: 5000 calls per loop, 16 clients, 100k restart
#   BENCH_OPS=2000 BENCH_RESTART_OBJECTS=0 scripts/bench.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

COMPAT_SETUP_ONLY=1 tests/compat/run.sh
cargo bench --locked --bench coordinator --no-run

UNSHARE=(unshare -n)
[ "$(id -u)" -eq 0 ] || UNSHARE=(unshare -r -n)
"${UNSHARE[@]}" -- bash -c '
    set -euo pipefail
    ip link set lo up
    work=$(mktemp -d)
    BENCH_ROWS_ONLY=1 cargo bench --offline --locked --bench coordinator 2>/dev/null > "$work/ours"
    # Milvus lives as long as this pipe stays open.
    exec 3> >(.venv-compat/bin/python benches/milvus_reference.py > "$work/ready")
    for _ in $(seq 1 360); do
        grep -q "^READY " "$work/ready" && break
        sleep 0.5
    done
    addr=$(sed -n "s/^READY //p" "$work/ready")
    if [ -n "$addr" ]; then
        MILVUS_REFERENCE_ADDR="$addr" BENCH_ROWS_ONLY=1 BENCH_RESTART_OBJECTS=0 \
            cargo bench --offline --locked --bench coordinator 2>/dev/null > "$work/milvus"
    else
        echo "Milvus 2.3.5 did not start: no reference rows" >&2
        : > "$work/milvus"
    fi
    exec 3>&-
    echo "collection-operator coordinator vs Milvus 2.3.5: ${BENCH_OPS:-5000} calls per loop, $(nproc) cores, fsync on every acknowledged write"
    echo
    echo "| loop | server | calls | errors | ops/s | p50 ms | p99 ms |"
    echo "|---|---|---|---|---|---|---|"
    # Row i of ours, then row i of Milvus; the restart rows (ours only) come last.
    paste -d "\n" "$work/ours" "$work/milvus" | sed "/^$/d"
    sleep 3
    rm -rf "$work"
'
