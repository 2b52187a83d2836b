#!/usr/bin/env bash
# End-to-end suite against a real Kubernetes API server.
#
#   E2E_KUBECONFIG=~/.kube/config tests/e2e/run.sh [pytest args...]
#
# Without E2E_KUBECONFIG it prints a loud SKIPPED banner and exits 0: no API server can
# run on the development machines or in CI, so this suite runs wherever a cluster is at
# hand (kind, k3d, a test cluster). With it, it creates its own namespace and installs
# the Helm chart there (CRDs, RBAC, ServiceAccount, namespace-scoped). By default the
# chart runs no operator pod and the coordinator and operator binaries run on this
# machine (the operator talks to the cluster through the kubeconfig; the Coordinator
# resource points at the local coordinator). With E2E_IMAGE (an image built from the
# Dockerfile and available to the cluster) the chart runs the operator in the cluster,
# and E2E_COORDINATOR_ENDPOINT must name a coordinator reachable from the pods and from
# here. Then it applies examples/, swaps an alias by editing the manifest, checks the
# engine with pymilvus, measures the swap latency, deletes everything and checks that
# nothing is left and no finalizer hangs. With E2E_IMAGE it also deploys a managed
# Coordinator (test_managed.py) and checks that streaming nodes are drained before the
# StatefulSet is scaled down.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"

if [ -z "${E2E_KUBECONFIG:-}" ]; then
    cat >&2 <<'BANNER'
################################################################################
##  SKIPPED: tests/e2e (end-to-end against a real cluster)                     ##
##  E2E_KUBECONFIG is not set, so no Kubernetes API server is available.       ##
##  Run: E2E_KUBECONFIG=/path/to/kubeconfig tests/e2e/run.sh                   ##
################################################################################
BANNER
    exit 0
fi
[ -r "$E2E_KUBECONFIG" ] || { echo "E2E_KUBECONFIG=$E2E_KUBECONFIG is not readable" >&2; exit 1; }

VENV="${E2E_VENV:-$REPO_ROOT/.venv-e2e}"
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
want="$(sha256sum tests/e2e/requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r tests/e2e/requirements.txt
    echo "$want" > "$VENV/.requirements.sha256"
fi

# Release binaries: the swap latency printed here is what a deployment sees. Debug builds
# of the coordinator and operator make a gated swap 3-5 times slower (benches/swap.rs on
# an idle machine: p50 ~6 ms release, ~20-30 ms debug; ~90 ms debug while other builds
# share the cores).
cargo build --locked --release
export COLLECTION_OPERATOR_BIN="${COLLECTION_OPERATOR_BIN:-$REPO_ROOT/target/release/collection-operator}"
# The suite installs with the Helm chart; scripts/chart-check.sh fetches the pinned helm.
E2E_HELM="$(CHART_TOOLS_ONLY=1 scripts/chart-check.sh)"
export E2E_HELM
rc=0
"$VENV/bin/python" -m pytest tests/e2e -ra -p no:cacheprovider "$@" || rc=$?
[ "$rc" -eq 5 ] && { echo "pytest collected no tests" >&2; exit 1; }
exit "$rc"
