"""The chart grants exactly the Kubernetes API access the operator uses, and its pod runs
under the restricted Pod Security Standard.

Three layers:
1. OPERATOR_CALLS: every Kubernetes API call in src/operator/, file by file, with the
   RBAC (group, resource, verb) it needs. A scan of the source fails when a call appears
   that is not listed (or a listed one disappears), so a new call cannot ship without a
   rule — and a rule cannot outlive its call.
2. The rendered (Cluster)Roles must grant exactly the union of those needs: no more, no
   less, no wildcards; for cluster scope, namespace scope and with leader election off.
3. The Deployment's security settings, probes and flags.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from conftest import REPO, by_kind, one, render

FULLNAME = "co-collection-operator"
SERVICE_ACCOUNT = FULLNAME
CR = "collections.dev"
ALL_KINDS = ("coordinators", "collections", "collectionaliases", "routedaliases")

# file in src/operator -> {call: [(apiGroup, resource, verb), ...]}: what each call needs.
# `call` is what the scan below finds: a method on a kube `Api` (receiver named `api`), or
# one of the helpers `watcher(`, `finalizer(`, `LeaseManagerBuilder`.
OPERATOR_CALLS: dict[str, dict[str, list[tuple[str, str, str]]]] = {
    "mod.rs": {
        # run_controllers: watcher(api::<Coordinator|Collection|CollectionAlias>) feeds
        # reflectors and controllers (a watcher lists, then watches).
        "watcher": [(CR, k, v) for k in ALL_KINDS for v in ("list", "watch")],
        # check_crds: api.list(limit 1) of each kind at start (fails with a hint if absent).
        "list": [(CR, k, "list") for k in ALL_KINDS],
    },
    "lookup.rs": {
        # coordinator(): a Coordinator missing from the cache is read from the API.
        "get_opt": [(CR, "coordinators", "get")],
    },
    "pass.rs": {
        # kube's finalizer helper, for Collections and CollectionAliases: JSON patches
        # adding/removing collections.dev/finalizer.
        "finalizer": [(CR, "collections", "patch"), (CR, "collectionaliases", "patch")],
    },
    "routed.rs": {
        # The children of a RoutedAlias: its Collections are created (POST) and retired
        # (DELETE); its CollectionAlias is server-side applied, a patch that also needs
        # create when the object does not exist yet.
        "create": [(CR, "collections", "create")],
        "delete": [(CR, "collections", "delete")],
        "patch": [(CR, "collectionaliases", "patch"), (CR, "collectionaliases", "create")],
    },
    "coordinator.rs": {
        # A managed Coordinator: get reads the StreamingNode StatefulSet's replicas before a
        # scale step; list finds its pods (label selector) to map node IPs to ordinals;
        # apply_owned server-side applies every owned object (a patch that also needs
        # create the first time).
        "get_opt": [("apps", "statefulsets", "get")],
        "list": [("", "pods", "list")],
        "patch": [(g, r, v) for g, r in (("apps", "statefulsets"), ("", "services"),
                                          ("", "configmaps"), ("policy", "poddisruptionbudgets"),
                                          ("", "serviceaccounts"),
                                          ("networking.k8s.io", "networkpolicies"))
                  for v in ("create", "patch")],
    },
    "status.rs": {
        # apply_status: server-side apply of .status, called for all four kinds
        # (coordinator.rs, collection.rs, alias.rs, routed.rs).
        "patch_status": [(CR, f"{k}/status", "patch") for k in ALL_KINDS],
    },
    "events.rs": {
        # Recorder::publish: a new events.k8s.io Event, or a merge patch of its series.
        "create": [("events.k8s.io", "events", "create")],
        "patch": [("events.k8s.io", "events", "patch")],
    },
    "engine.rs": {
        # read_credentials: Api<Secret>::get_opt of the Coordinator's credentialsSecret.
        "get_opt": [("", "secrets", "get")],
    },
    "leader.rs": {
        # kube-lease-manager 0.13.1 (src/state.rs): get, create (CreateNew/AutoCreate) and
        # patch (strategic merge / apply) of one Lease; it never lists, watches or deletes.
        "LeaseManagerBuilder": [("coordination.k8s.io", "leases", v) for v in ("get", "create", "patch")],
    },
}

API_METHODS = (
    "get|get_opt|get_status|get_metadata|get_metadata_opt|get_subresource|list|list_metadata|"
    "watch|watch_metadata|create|create_subresource|patch|patch_status|patch_metadata|"
    "patch_subresource|replace|replace_status|replace_subresource|delete|delete_collection|"
    "entry|evict"
)
CALL_PATTERNS = {
    # `api.patch_status(`, `api\n    .list(` (rustfmt), `api.patch::<K>(`
    "api": re.compile(r"\bapi\s*\.\s*(" + API_METHODS + r")\b\s*(?:::<[^>]*>)?\s*\("),
    "helpers": re.compile(r"\b(watcher|finalizer)\s*\(|\b(LeaseManagerBuilder)\b"),
}


def scan_operator_calls() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "src" / "operator").glob("*.rs")):
        text = path.read_text()
        text = text.split("#[cfg(test)]")[0]  # unit tests use mocks, not RBAC
        text = re.sub(r"//[^\n]*", "", text)  # comments and doc comments
        calls = {m.group(1) for m in CALL_PATTERNS["api"].finditer(text)}
        for match in CALL_PATTERNS["helpers"].finditer(text):
            calls.add(match.group(1) or match.group(2))
        if calls:
            found[path.name] = calls
    return found


def needed_permissions() -> set[tuple[str, str, str]]:
    return {need for calls in OPERATOR_CALLS.values() for needs in calls.values() for need in needs}


def granted(docs: list[dict]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """(apiGroup, resource, verb, resourceNames) for every rule of every (Cluster)Role."""
    out = set()
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in role["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((group, resource, verb, tuple(rule.get("resourceNames", ()))))
    return out


# --- 1. the operator's calls ---------------------------------------------------------


def test_every_kubernetes_api_call_in_src_operator_is_accounted_for():
    found = scan_operator_calls()
    expected = {name: set(calls) for name, calls in OPERATOR_CALLS.items()}
    unlisted = {f: sorted(c - expected.get(f, set())) for f, c in found.items() if c - expected.get(f, set())}
    vanished = {f: sorted(c - found.get(f, set())) for f, c in expected.items() if c - found.get(f, set())}
    assert not unlisted, (
        f"new Kubernetes API calls in src/operator: {unlisted}; add the RBAC they need to "
        "charts/collection-operator/templates/rbac.yaml and to OPERATOR_CALLS")
    assert not vanished, (
        f"calls listed in OPERATOR_CALLS no longer in src/operator: {vanished}; drop the "
        "RBAC they needed from the chart and from OPERATOR_CALLS")


def test_the_lease_verbs_were_read_from_the_locked_kube_lease_manager():
    lock = (REPO / "Cargo.lock").read_text()
    assert re.search(r'name = "kube-lease-manager"\nversion = "0\.13\.1"', lock), (
        "kube-lease-manager changed: re-read its src/state.rs for the Lease verbs it uses")


# --- 2. the rendered RBAC -----------------------------------------------------------


def expected_grants(lease_name: str | None, secret_names: tuple[str, ...] = (),
                    secrets: bool = True):
    """`secrets=False`: the render grants no Secret access at all (cluster scope without
    rbac.secretNamespaces)."""
    grants = set()
    for group, resource, verb in needed_permissions():
        if resource == "leases" or (resource == "secrets" and not secrets):
            continue
        names = secret_names if resource == "secrets" else ()
        grants.add((group, resource, verb, names))
    if lease_name:
        grants.add(("coordination.k8s.io", "leases", "create", ()))
        grants.add(("coordination.k8s.io", "leases", "get", (lease_name,)))
        grants.add(("coordination.k8s.io", "leases", "patch", (lease_name,)))
    return grants


def assert_grants(docs, expected):
    actual = granted(docs)
    extra, missing = sorted(actual - expected), sorted(expected - actual)
    assert not extra and not missing, (
        f"RBAC differs from what src/operator uses.\n granted but not used: {extra}\n"
        f" used but not granted: {missing}")


def assert_no_wildcards(docs):
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"wildcard {field} in {role['metadata']['name']}"
            for resource in rule["resources"]:
                assert "*" not in resource, f"wildcard resource {resource}"
            forbidden = {"escalate", "bind", "impersonate", "deletecollection", "update", "*"}
            # delete only for the Collections the operator generates for RoutedAliases.
            if rule["resources"] != ["collections"]:
                forbidden.add("delete")
            assert not forbidden & set(rule["verbs"]), rule


def assert_bound_to_our_service_account(docs, role_kind, role_name, binding_kind, namespace):
    binding = one(docs, binding_kind, role_name)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                                  "name": role_name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                                    "namespace": "ops"}]
    if namespace:
        assert binding["metadata"]["namespace"] == namespace


def test_cluster_scope_grants_exactly_what_the_operator_uses(default_docs):
    # No namespace was named for Secrets: the default grants no Secret access anywhere.
    assert_grants(default_docs, expected_grants(lease_name=FULLNAME, secrets=False))
    assert_no_wildcards(default_docs)
    cluster_role = one(default_docs, "ClusterRole", FULLNAME)
    assert all(r["resources"] != ["leases"] for r in cluster_role["rules"]), \
        "leases belong in the release namespace's Role, not cluster-wide"
    lease_role = one(default_docs, "Role", f"{FULLNAME}-leader-election")
    assert lease_role["metadata"]["namespace"] == "ops"
    assert_bound_to_our_service_account(default_docs, "ClusterRole", FULLNAME, "ClusterRoleBinding", None)
    assert_bound_to_our_service_account(default_docs, "Role", f"{FULLNAME}-leader-election",
                                        "RoleBinding", "ops")


def test_namespace_scope_uses_only_roles_in_the_watched_namespace(all_features_docs):
    docs = all_features_docs
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    # rbac.secretNames plus the default Coordinator's credentialsSecret
    assert_grants(docs, expected_grants(
        lease_name="collection-operator-leader",
        secret_names=("other-engine-credentials", "milvus-credentials")))
    assert_no_wildcards(docs)
    role = one(docs, "Role", FULLNAME)
    assert role["metadata"]["namespace"] == "vectors"
    assert_bound_to_our_service_account(docs, "Role", FULLNAME, "RoleBinding", "vectors")
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=vectors" in args


def secret_rules(docs):
    """(kind, namespace, rule) of every rule that touches Secrets."""
    return [(role["kind"], role["metadata"].get("namespace"), rule)
            for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role")
            for rule in role["rules"] if "secrets" in rule["resources"]]


def test_secrets_are_never_readable_cluster_wide(default_docs):
    assert not [r for r in secret_rules(default_docs) if r[0] == "ClusterRole"]
    assert secret_rules(default_docs) == [], "no namespace named: no Secret access"
    named = render("--set", "rbac.secretNames={a-creds}")
    assert not [r for r in secret_rules(named) if r[0] == "ClusterRole"], \
        "names alone never become a cluster-wide grant"


def test_secret_access_is_a_role_per_named_namespace():
    docs = render("--set", "rbac.secretNamespaces={team-a,team-b}",
                  "--set", "rbac.secretNames={engine-credentials}")
    rules = secret_rules(docs)
    assert sorted((kind, ns) for kind, ns, _ in rules) == [("Role", "team-a"), ("Role", "team-b")]
    for _, _, rule in rules:
        assert rule["verbs"] == ["get"], rule
        assert rule["resourceNames"] == ["engine-credentials"], rule
    for namespace in ("team-a", "team-b"):
        role = [r for r in by_kind(docs, "Role") if r["metadata"]["namespace"] == namespace
                and r["metadata"]["name"] == f"{FULLNAME}-credentials"]
        assert len(role) == 1, namespace
        bindings = [b for b in by_kind(docs, "RoleBinding")
                    if b["metadata"]["namespace"] == namespace]
        assert len(bindings) == 1, namespace
        assert bindings[0]["roleRef"]["name"] == f"{FULLNAME}-credentials"
        assert bindings[0]["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                                            "namespace": "ops"}]


def test_the_default_coordinators_namespace_gets_its_secret_role():
    docs = render("--set", "coordinator.credentialsSecret=milvus-credentials",
                  "--set", "coordinator.namespace=search")
    rules = secret_rules(docs)
    assert [(kind, ns) for kind, ns, _ in rules] == [("Role", "search")], rules
    assert "resourceNames" not in rules[0][2], "no names listed: any Secret of that namespace"


def test_endpoint_allow_list_reaches_the_operator():
    docs = render("--set", "managed.allowedEndpointHosts={*.svc,milvus.example.com}")
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--allowed-endpoint-hosts=*.svc,milvus.example.com" in args
    default = render()
    args = one(default, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--allowed-endpoint-hosts")]


def test_the_operator_network_policy_never_opens_the_streaming_port():
    """The operator talks to coordinators (19530) only; the streaming nodes' 22222 is for
    their coordinator (the managed NetworkPolicy admits only its pods)."""
    docs = render("--set", "networkPolicy.enabled=true")
    policy = one(docs, "NetworkPolicy")
    ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert 22222 not in ports, ports
    assert 19530 in ports, ports


def test_without_leader_election_there_is_no_lease_access():
    docs = render("--set", "replicaCount=1", "--set", "leaderElection.enabled=false")
    assert_grants(docs, expected_grants(lease_name=None, secrets=False))
    assert not any("leases" in r["resources"] for role in by_kind(docs, "Role") for r in role["rules"])
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-election" not in args


def test_rbac_can_be_left_to_the_cluster_admin():
    docs = render("--set", "rbac.create=false")
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]


def test_each_rule_says_why():
    text = (REPO / "charts/collection-operator/templates/rbac.yaml").read_text()
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            assert lines[number - 1].strip().startswith("#"), f"rule without a comment: line {number + 1}"


# --- 3. the pod -----------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "all_features"])
def test_pod_security_settings(variant, default_docs, all_features_docs):
    docs = default_docs if variant == "default" else all_features_docs
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 65532  # distroless :nonroot, Dockerfile USER
    for key in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace"):
        assert not pod.get(key)
    for volume in pod.get("volumes", []):
        assert "hostPath" not in volume
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context.get("privileged", False) is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all("hostPort" not in port for port in container["ports"])
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


def test_deployment_runs_the_operator_with_leader_election_json_logs_and_probes(default_docs):
    deployment = one(default_docs, "Deployment", FULLNAME)
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    (container,) = pod["containers"]
    assert container["image"] == "collection-operator:0.1.0"
    args = container["args"]
    assert args[0] == "operator"
    for flag in ("--log-format=json", "--leader-election", "--metrics-addr=0.0.0.0:8080",
                 f"--leader-election-lease-name={FULLNAME}"):
        assert flag in args
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    (port,) = container["ports"]
    assert port == {"name": "metrics", "containerPort": 8080, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_more_than_one_replica_without_leader_election_is_refused():
    from conftest import CHART, KUBE_VERSION, run_helm

    result = run_helm("template", "co", str(CHART), "--kube-version", KUBE_VERSION,
                      "--set", "replicaCount=2", "--set", "leaderElection.enabled=false")
    assert result.returncode != 0
    assert "needs leaderElection.enabled=true" in result.stderr
