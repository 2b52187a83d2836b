#!/usr/bin/env bash
# The coordinator's client loops on the etcd meta store beside the redb one, in one run:
# starts a single-member etcd (Debian `etcd-server`) on free loopback ports with a
# temporary data directory, runs `cargo bench --features etcd --bench coordinator` with
# BENCH_ETCD_ENDPOINT, and removes etcd again. Prints one markdown table.
#
#   scripts/bench-etcd.sh                 # 5000 calls per loop, 16 clients
#   BENCH_OPS=2000 scripts/bench-etcd.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v etcd >/dev/null || [ ! -e /usr/include/google/protobuf/descriptor.proto ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server protobuf-compiler libprotobuf-dev </dev/null >/dev/null
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client="http://127.0.0.1:$(free_port)"
peer="http://127.0.0.1:$(free_port)"
work=$(mktemp -d)
etcd --name bench --data-dir "$work/data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "bench=$peer" > "$work/etcd.log" 2>&1 &
etcd_pid=$!
stop_etcd() { kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; rm -rf "$work"; }
trap stop_etcd EXIT
for _ in $(seq 1 100); do
    curl -fs "$client/health" >/dev/null 2>&1 && break
    sleep 0.2
done
status=0
BENCH_ETCD_ENDPOINT="$client" BENCH_RESTART_OBJECTS="${BENCH_RESTART_OBJECTS:-0}" \
    cargo bench --locked --features etcd --bench coordinator 2>/dev/null || status=$?
stop_etcd
trap - EXIT
exit "$status"
