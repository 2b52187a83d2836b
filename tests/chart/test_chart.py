"""The chart's CRDs, optional parts, values schema, and its agreement with Cargo.toml and
the Dockerfile."""

from __future__ import annotations

import copy
import pathlib
import fnmatch
import re
import subprocess

import pytest
import yaml

from conftest import (ALL_FEATURES, CHART, COORDINATOR_API, KUBE_VERSION, REPO, by_kind,
                      one, render, run_helm)

FULLNAME = "co-collection-operator"


def crds_dir_documents() -> list[dict]:
    return [d for d in yaml.safe_load_all((REPO / "crds/collections.dev.yaml").read_text()) if d]


# --- CRDs -----------------------------------------------------------------------------


def test_sync_script_output_is_committed():
    result = subprocess.run([str(REPO / "scripts/sync-chart-crds.sh"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rendered_crds_equal_crds_dir_plus_keep_and_labels(default_docs):
    rendered = by_kind(default_docs, "CustomResourceDefinition")
    expected = crds_dir_documents()
    assert [c["metadata"]["name"] for c in rendered] == [c["metadata"]["name"] for c in expected]
    for chart_crd, source in zip(rendered, expected):
        stripped = copy.deepcopy(chart_crd)
        metadata = stripped["metadata"]
        assert metadata.pop("annotations") == {"helm.sh/resource-policy": "keep"}
        labels = metadata.pop("labels")
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert stripped == source, f"{source['metadata']['name']} differs from crds/"


def test_crds_install_false_leaves_them_out():
    docs = render("--set", "crds.install=false")
    assert not by_kind(docs, "CustomResourceDefinition")
    # the CRDs were applied beforehand, so the default Coordinator can be created now
    assert one(docs, "Coordinator", "milvus")


# --- the default Coordinator -------------------------------------------------------------


def test_default_coordinator_waits_until_its_crd_is_served(default_docs, upgrade_docs):
    # first install: this release creates the CRDs, Helm could not map a Coordinator yet
    assert not by_kind(default_docs, "Coordinator")
    coordinator = one(upgrade_docs, "Coordinator", "milvus")
    assert coordinator["metadata"]["namespace"] == "ops"
    assert coordinator["spec"] == {
        "external": {"endpoint": "http://milvus.milvus.svc.cluster.local:19530"}}


def test_default_coordinator_matches_the_examples(upgrade_docs):
    """`kubectl apply` of examples/products*.yaml works against the chart's Coordinator."""
    coordinator = one(upgrade_docs, "Coordinator")
    example = yaml.safe_load((REPO / "examples/coordinator.yaml").read_text())
    assert coordinator["metadata"]["name"] == example["metadata"]["name"]
    assert coordinator["spec"] == example["spec"]
    for path in ("products-v1.yaml", "products-v2.yaml", "products.yaml"):
        doc = yaml.safe_load((REPO / "examples" / path).read_text())
        assert doc["spec"]["coordinatorRef"]["name"] == coordinator["metadata"]["name"]


def test_default_coordinator_with_credentials_in_the_watched_namespace(all_features_docs):
    coordinator = one(all_features_docs, "Coordinator", "milvus")
    assert coordinator["metadata"]["namespace"] == "vectors"
    assert coordinator["spec"]["external"] == {
        "endpoint": "https://milvus.vectors.svc.cluster.local:19530",
        "credentialsSecret": {"name": "milvus-credentials"}}


def test_no_default_coordinator_when_not_wanted():
    assert not by_kind(render("--set", "coordinator.create=false", "--api-versions", COORDINATOR_API),
                       "Coordinator")


# --- optional parts ------------------------------------------------------------------


def test_defaults_render_no_optional_extras(default_docs):
    kinds = sorted(d["kind"] for d in default_docs)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                            "RoleBinding", "Service", "Deployment", "PodDisruptionBudget",
                            "CustomResourceDefinition", "CustomResourceDefinition",
                            "CustomResourceDefinition", "CustomResourceDefinition"])


def test_all_features_render_every_optional_part(all_features_docs):
    kinds = {d["kind"] for d in all_features_docs}
    assert {"ServiceMonitor", "NetworkPolicy", "Coordinator", "PodDisruptionBudget", "Role",
            "RoleBinding"} <= kinds


def test_service_monitor_scrapes_the_metrics_service(all_features_docs):
    # Not schema-checked offline (a Prometheus Operator CRD): its shape is checked here.
    monitor = one(all_features_docs, "ServiceMonitor")
    service = one(all_features_docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings",
                             "metricRelabelings"}


def test_metrics_service_selects_the_operator_pods(default_docs):
    service = one(default_docs, "Service", f"{FULLNAME}-metrics")
    pod_labels = one(default_docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics",
                                         "protocol": "TCP"}]


def test_network_policy_allows_only_metrics_in_and_dns_api_engine_out(all_features_docs):
    policy = one(all_features_docs, "NetworkPolicy")
    pod_labels = one(all_features_docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    egress_ports = [sorted((p["port"], p["protocol"]) for p in rule["ports"])
                    for rule in policy["spec"]["egress"]]
    assert egress_ports == [[(53, "TCP"), (53, "UDP")], [(443, "TCP"), (6443, "TCP")],
                            [(19530, "TCP")], [(4317, "TCP")]]
    api_rule = policy["spec"]["egress"][1]
    assert api_rule["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}]


def test_pod_disruption_budget(default_docs, all_features_docs):
    assert one(default_docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    spec = one(all_features_docs, "PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == 1 and "maxUnavailable" not in spec
    assert not by_kind(render("--set", "podDisruptionBudget.enabled=false"), "PodDisruptionBudget")


def test_every_namespaced_object_names_its_namespace(all_features_docs):
    for doc in all_features_docs:
        if doc["kind"] not in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"].get("namespace"), f"{doc['kind']} {doc['metadata']['name']}"


# --- values schema --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    ["--set", "unknownKey=1"],
    ["--set", "image.unknown=1"],
    ["--set", "watch.scope=Everything"],
    ["--set", "operator.logFormat=xml"],
    ["--set", "coordinator.endpoint=milvus:19530"],
    ["--set", "leaderElection.leaseDuration=15"],
    ["--set", "operator.resyncInterval=1d"],
    ["--set", "replicaCount=-1"],
    ["--set-string", "replicaCount=two"],
    ["--set", "rbac.secretNames[0]=Not_A_Name"],
])
def test_values_schema_rejects(bad):
    result = run_helm("template", "co", str(CHART), "--kube-version", KUBE_VERSION, *bad)
    assert result.returncode != 0, f"accepted {bad}"
    assert "schema" in result.stderr, result.stderr


def test_watch_namespace_needs_namespace_scope():
    result = run_helm("template", "co", str(CHART), "--kube-version", KUBE_VERSION,
                      "--set", "watch.namespace=vectors")
    assert result.returncode != 0 and "watch.scope=Namespace" in result.stderr


# --- chart <-> Cargo.toml <-> Dockerfile -----------------------------------------------


def cargo_version() -> str:
    match = re.search(r'^\[package\][^\[]*?^version = "([^"]+)"',
                      (REPO / "Cargo.toml").read_text(), re.M | re.S)
    assert match
    return match.group(1)


def test_app_version_is_the_crate_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == cargo_version()


def test_image_defaults_match_the_dockerfile(default_docs):
    dockerfile = (REPO / "Dockerfile").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = one(default_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{values['image']['repository']}:{cargo_version()}"
    assert f"docker build -t {values['image']['repository']}:{cargo_version()} ." in dockerfile
    assert f'org.opencontainers.image.version="{cargo_version()}"' in dockerfile


def test_dockerfile_builds_locked_release_into_a_nonroot_runtime():
    lines = [l for l in (REPO / "Dockerfile").read_text().splitlines() if l and not l.startswith("#")]
    text = "\n".join(lines)
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["rust:1.95-slim-bookworm", "gcr.io/distroless/cc-debian12:nonroot"]
    assert "cargo build --release --locked" in text
    assert re.search(r"^USER 65532:65532$", text, re.M)
    assert re.search(r"^EXPOSE 19530 8080$", text, re.M)
    assert 'ENTRYPOINT ["/usr/local/bin/collection-operator"]' in text
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["operator"]["metricsPort"] == 8080
    assert values["podSecurityContext"]["runAsUser"] == 65532


def test_dockerignore_keeps_what_the_build_reads():
    patterns = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", (REPO / "Dockerfile").read_text(), re.M)
    needed = [p for line in copied for p in line.split()]
    assert set(needed) == {"Cargo.toml", "Cargo.lock", "build.rs", "proto", "src", "benches"}
    for path in needed:
        assert not any(fnmatch.fnmatch(path, p) for p in patterns), f".dockerignore drops {path}"
    for path in ("target", ".git", "tests", ".venv-compat", "data"):
        assert any(fnmatch.fnmatch(path, p) for p in patterns), f".dockerignore keeps {path}"
    # every [[bench]] of Cargo.toml must exist in the context, or cargo refuses the manifest
    for bench in re.findall(r'\[\[bench\]\]\s*name = "([^"]+)"', (REPO / "Cargo.toml").read_text()):
        assert (REPO / "benches" / f"{bench}.rs").exists()


def test_the_binary_accepts_the_rendered_args_and_env(all_features_docs):
    """The chart's flags exist in the operator (it gets as far as connecting to Kubernetes).
    Uses target/debug/collection-operator (scripts/test.sh builds it before this check)."""
    import os

    binary = pathlib.Path(os.environ.get("COLLECTION_OPERATOR_BIN", REPO / "target/debug/collection-operator"))
    if not binary.exists():
        pytest.skip(f"{binary} not built (cargo build); flags not checked against the binary")
    container = one(all_features_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {"PATH": os.environ.get("PATH", ""), "KUBECONFIG": "/nonexistent", "RUST_BACKTRACE": "0",
           "POD_NAME": "co-0", "POD_NAMESPACE": "ops"}
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    args = [a.replace("0.0.0.0:8080", "127.0.0.1:0") for a in container["args"]]
    result = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode != 0
    assert "connecting to Kubernetes" in result.stderr, result.stderr
