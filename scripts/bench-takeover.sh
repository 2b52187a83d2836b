#!/usr/bin/env bash
# Takeover time of coordinator replicas on etcd against the size of the DDL history:
# starts a single-member etcd (Debian `etcd-server`) on free loopback ports with a
# temporary data directory, runs `cargo bench --features etcd --bench takeover` with
# BENCH_ETCD_ENDPOINT, and removes etcd again. Prints one markdown table.
#
#   scripts/bench-takeover.sh                                          # 1k, 10k, 100k DDLs
#   TAKEOVER_BENCH_SIZES=1000,10000,100000,1000000 scripts/bench-takeover.sh
#   BENCH_PROFILE=dev scripts/bench-takeover.sh     # reuse the debug build (no release build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v etcd >/dev/null || [ ! -e /usr/include/google/protobuf/descriptor.proto ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server protobuf-compiler libprotobuf-dev </dev/null >/dev/null
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client="http://127.0.0.1:$(free_port)"
peer="http://127.0.0.1:$(free_port)"
work=$(mktemp -d)
# A million DDLs with their revisions exceed etcd's default 2 GiB backend quota.
etcd --name bench --data-dir "$work/data" --quota-backend-bytes $((8 * 1024 * 1024 * 1024)) \
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
BENCH_ETCD_ENDPOINT="$client" cargo bench --locked --profile "${BENCH_PROFILE:-bench}" --features etcd --bench takeover 2>/dev/null || status=$?
stop_etcd
trap - EXIT
exit "$status"
