#!/usr/bin/env bash
# Records docs/transcripts/up-session.txt: one `up` session on a copy of examples/ as a
# person sees it (standard output and error in order, no terminal: 120 columns): the
# first start, the swap, a swap back with a typo, its fix, and Ctrl-C.
#
#   cargo build && docs/transcripts/up-session.sh
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${COORDINATOR_BIN:-$REPO/target/debug/collection-operator}"
OUT="$REPO/docs/transcripts/up-session.txt"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r "$REPO/examples" "$WORK/examples"
cd "$WORK"
: > session.txt
say() { printf '\n$ %s\n' "$*" >> session.txt; }
edit() { say "sed -i '$1' examples/products.yaml   # $2"; sed -i "$1" examples/products.yaml; }

say "collection-operator up --manifests examples"
"$BIN" up --manifests examples --data-dir data --listen 127.0.0.1:0 >> session.txt 2>&1 &
UP=$!
sleep 10
edit 's/collection: products_v1 /collection: products_v2 /' "the swap"
sleep 6
edit 's/  collection: products_v2 /  colection: products_v1 /' "a swap back, with a typo"
sleep 5
edit 's/  colection: /  collection: /' "the fix"
sleep 6
say "^C"
kill -INT "$UP"
code=0
wait "$UP" || code=$?
echo "(exit code $code)" >> session.txt
cp session.txt "$OUT"
