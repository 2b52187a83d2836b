"""examples/gitops/: the Argo CD health check (run in real Lua interpreters: 5.1 as Argo
CD's gopher-lua, and 5.4), the Flux health expressions (run in a CEL interpreter), and the
Application / Flux objects pointing at examples/."""

from __future__ import annotations

import copy

import celpy
import lupa.lua51
import lupa.lua54
import pytest
import yaml

from conftest import REPO

GITOPS = REPO / "examples" / "gitops"
KINDS = ("Coordinator", "Collection", "CollectionAlias", "RoutedAlias")


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((GITOPS / name).read_text()) if d]


def health_scripts() -> dict[str, str]:
    (config_map,) = load("argocd-cm-health.yaml")
    assert config_map["metadata"] == {"name": "argocd-cm", "namespace": "argocd", "labels": {
        "app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}}
    return config_map["data"]


def alias(generation=2, observed=2, ready=None, reason="Available", message="", ready_generation=None,
          status=True):
    obj = {"apiVersion": "collections.dev/v1alpha1", "kind": "CollectionAlias",
           "metadata": {"name": "products", "namespace": "products", "generation": generation},
           "spec": {"coordinatorRef": {"name": "milvus"}, "collection": "products_v2"}}
    if not status:
        return obj
    obj["status"] = {"observedGeneration": observed, "conditions": []}
    if ready is not None:
        obj["status"]["conditions"] = [
            {"type": "Ready", "status": ready, "reason": reason, "message": message,
             "observedGeneration": generation if ready_generation is None else ready_generation,
             "lastTransitionTime": "2026-11-22T10:00:00Z"},
            {"type": "Synced", "status": "True", "reason": "ReconcileSuccess", "message": "",
             "observedGeneration": generation, "lastTransitionTime": "2026-11-22T10:00:00Z"}]
    return obj


# (name, object, Argo CD status, message contains, Flux verdict)
CASES = [
    ("ready for the current generation", alias(ready="True", message="alias products -> products_v2"),
     "Healthy", "products_v2", "Current"),
    ("no status yet (just applied)", alias(status=False), "Progressing", "report a status", "InProgress"),
    ("status without conditions", alias(), "Progressing", "Ready condition", "InProgress"),
    ("stale: Ready=True but for the previous generation (the swap commit not seen yet)",
     alias(generation=3, observed=2, ready="True", ready_generation=2),
     "Progressing", "generation 3", "InProgress"),
    ("stale condition only", alias(generation=3, observed=3, ready="True", ready_generation=2),
     "Progressing", "generation 3", "InProgress"),
    ("waiting for the new collection", alias(ready="False", reason="WaitingForTarget",
                                             message="waiting for collection products_v2 to become Ready"),
     "Progressing", "WaitingForTarget", "InProgress"),
    ("being deleted", alias(ready="False", reason="Deleting"), "Progressing", "Deleting", "InProgress"),
    ("a routed alias waiting for its current collection",
     alias(ready="False", reason="WaitingForCollection", message="waiting for news_20261122T000000Z"),
     "Progressing", "WaitingForCollection", "InProgress"),
    ("a routed alias at its maxCollections", alias(ready="False", reason="LimitReached"), "Degraded",
     "LimitReached", "Failed"),
    ("paused", alias(ready="False", reason="Paused", message="collections.dev/paused"),
     "Suspended", "Paused", "Current"),
    ("engine error", alias(ready="False", reason="EngineError", message="code 1602: alias exists"),
     "Degraded", "EngineError: code 1602", "Failed"),
    ("engine unreachable", alias(ready="Unknown", reason="EngineUnreachable"), "Degraded",
     "EngineUnreachable", "Failed"),
    ("conflict", alias(ready="False", reason="Conflict"), "Degraded", "Conflict", "Failed"),
    ("coordinator missing", alias(ready="False", reason="CoordinatorNotFound"), "Degraded",
     "CoordinatorNotFound", "Failed"),
]


def to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def run_health(runtime, script: str, obj: dict) -> dict:
    lua = runtime.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script)
    return dict(result.items())


def test_one_script_for_every_kind():
    scripts = health_scripts()
    assert set(scripts) == {f"resource.customizations.health.collections.dev_{k}" for k in KINDS}
    assert len(set(scripts.values())) == 1


@pytest.mark.parametrize("runtime", [lupa.lua51, lupa.lua54], ids=["lua5.1", "lua5.4"])
@pytest.mark.parametrize("name,obj,status,message,_flux", CASES, ids=[c[0] for c in CASES])
def test_argocd_health(runtime, name, obj, status, message, _flux):
    script = next(iter(health_scripts().values()))
    for kind in KINDS:
        subject = copy.deepcopy(obj)
        subject["kind"] = kind
        health = run_health(runtime, script, subject)
        assert health["status"] == status, f"{kind}: {health}"
        assert message in health["message"], health


def flux_verdict(check: dict, obj: dict) -> str:
    """kustomize-controller's order: inProgress, then failed, then current; an expression
    that cannot be evaluated (a field not there yet) keeps the resource in progress."""
    env = celpy.Environment()
    activation = celpy.json_to_cel(obj)
    for key, verdict in (("inProgress", "InProgress"), ("failed", "Failed"), ("current", "Current")):
        try:
            if env.program(env.compile(check[key])).evaluate(activation):
                return verdict
        except celpy.CELEvalError:
            return "InProgress"
    return "InProgress"


def flux_objects():
    docs = load("flux.yaml")
    source = next(d for d in docs if d["kind"] == "GitRepository")
    kustomization = next(d for d in docs if d["kind"] == "Kustomization")
    return source, kustomization


@pytest.mark.parametrize("name,obj,_status,_message,flux", CASES, ids=[c[0] for c in CASES])
def test_flux_health_expressions(name, obj, _status, _message, flux):
    _, kustomization = flux_objects()
    checks = {c["kind"]: c for c in kustomization["spec"]["healthCheckExprs"]}
    assert set(checks) == set(KINDS)
    for kind in KINDS:
        assert flux_verdict(checks[kind], obj) == flux, kind


def test_flux_applies_examples_without_this_folder():
    source, kustomization = flux_objects()
    assert source["apiVersion"] == "source.toolkit.fluxcd.io/v1"
    assert kustomization["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    assert source["spec"]["ignore"].split() == ["/*", "!/examples/", "/examples/gitops/"]
    spec = kustomization["spec"]
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": source["metadata"]["name"]}
    assert spec["path"] == "./examples" and spec["prune"] is True and spec["wait"] is True


def test_argocd_application_syncs_examples_only():
    (app,) = load("argocd-application.yaml")
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    source = app["spec"]["source"]
    assert source["path"] == "examples"
    assert source["directory"] == {"recurse": False, "include": "*.yaml"}
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    assert app["spec"]["source"]["repoURL"] == flux_objects()[0]["spec"]["url"]


def test_examples_leave_the_namespace_to_the_gitops_tool():
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert "namespace" not in doc["metadata"], path
