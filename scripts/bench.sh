#!/usr/bin/env bash
# Benchmarks the coordinator and real Milvus 2.3.5 side by side: the same Rust client loops
# (benches/coordinator.rs) against both, in one run, inside a private network namespace
# (Milvus 2.3.5 listens on all interfaces). Prints a markdown table.
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
    ready=$(mktemp)
    # Milvus lives as long as this pipe stays open.
    exec 3> >(.venv-compat/bin/python benches/milvus_reference.py > "$ready")
    for _ in $(seq 1 360); do
        grep -q "^READY " "$ready" && break
        sleep 0.5
    done
    addr=$(sed -n "s/^READY //p" "$ready")
    if [ -z "$addr" ]; then
        echo "Milvus 2.3.5 did not start; benchmarking the coordinator alone" >&2
    fi
    MILVUS_REFERENCE_ADDR="$addr" cargo bench --offline --locked --bench coordinator 2>/dev/null
    exec 3>&-
    sleep 3
'
