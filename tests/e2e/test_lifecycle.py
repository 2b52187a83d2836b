"""The blue/green story on a real cluster: examples/ applied with the operator running,
an alias swapped by editing its manifest (with the swap latency measured), everything
deleted without a hanging finalizer."""

from __future__ import annotations

import copy
import statistics
import time

from kubernetes.client.rest import ApiException
from pymilvus import MilvusClient

from conftest import GROUP, PLURALS, VERSION, engine_name, wait_until

SWAPS = 20


def ready(obj: dict) -> bool:
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    return status.get("observedGeneration") == generation and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
    )


def apply(custom, namespace: str, doc: dict) -> None:
    body = copy.deepcopy(doc)
    body["metadata"]["namespace"] = namespace
    kind = body["kind"]
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], body)


def get(custom, namespace: str, kind: str, name: str) -> dict:
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)


def gone(custom, namespace: str, kind: str, name: str) -> bool:
    try:
        get(custom, namespace, kind, name)
        return False
    except ApiException as exc:
        return exc.status == 404


def print_operator_timings(port: int) -> None:
    """Mean queue wait, reconcile time and engine RPC time from the operator's /metrics
    (where the swap latency goes)."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"(\w+)_(sum|count)\{(.*)\} (\S+)$", line)
        if match:
            sums[f"{match[1]}{{{match[3]}}}_{match[2]}"] = float(match[4])
    for key, total in sorted(sums.items()):
        if not key.endswith("_sum") or not key.startswith((
                "collection_operator_queue_wait_seconds", "controller_runtime_reconcile_time_seconds",
                "collection_operator_engine_rpc_duration_seconds")):
            continue
        count = sums.get(key[:-4] + "_count", 0)
        if count:
            print(f"  {key[:-4]}: mean {total / count * 1000:.2f} ms over {count:.0f}")


def test_blue_green_swap_and_cleanup(custom, namespace, coordinator, operator, examples):
    engine = MilvusClient(coordinator)
    # The Coordinator resources of examples/ point at an in-cluster address; here the
    # operator runs on this machine, so they point at the local coordinator instead.
    coordinators = examples.get("Coordinator") or [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "Coordinator",
                                                    "metadata": {"name": "main"}, "spec": {}}]
    for doc in coordinators:
        doc = copy.deepcopy(doc)
        doc["spec"] = {"external": {"endpoint": coordinator}}
        apply(custom, namespace, doc)
    for doc in examples["Collection"]:
        apply(custom, namespace, doc)
    for doc in examples["CollectionAlias"]:
        apply(custom, namespace, doc)

    for kind in ("Collection", "CollectionAlias"):
        for doc in examples[kind]:
            name = doc["metadata"]["name"]
            wait_until(f"{kind} {name} Ready", lambda: ready(get(custom, namespace, kind, name)), timeout_s=120)

    collections = [engine_name(d) for d in examples["Collection"]]
    for doc in examples["Collection"]:
        database = doc["spec"].get("database", "default")
        assert MilvusClient(coordinator, db_name=database).has_collection(engine_name(doc))

    # Swap the first alias between its target and another example collection, SWAPS times.
    alias_doc = examples["CollectionAlias"][0]
    alias_name = alias_doc["metadata"]["name"]
    alias = engine_name(alias_doc)
    database = alias_doc["spec"].get("database", "default")
    client_db = MilvusClient(coordinator, db_name=database)
    first = alias_doc["spec"]["collection"]
    other = next(c for c in collections if c != first)
    assert client_db.describe_alias(alias)["collection_name"] == first

    latencies_ms = []
    target = first
    for _ in range(SWAPS):
        target = other if target == first else first
        started = time.monotonic()
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS["CollectionAlias"], alias_name,
                                              {"spec": {"collection": target}})
        wait_until(f"alias {alias} -> {target} applied and Ready", lambda: (
            client_db.describe_alias(alias)["collection_name"] == target
            and ready(get(custom, namespace, "CollectionAlias", alias_name))
        ), timeout_s=60, interval_s=0.002)
        latencies_ms.append((time.monotonic() - started) * 1000)
    status = get(custom, namespace, "CollectionAlias", alias_name)["status"]
    assert status["collection"] == target
    assert status["previousCollection"] == (other if target == first else first)
    latencies_ms.sort()
    p50 = statistics.median(latencies_ms)
    p99 = latencies_ms[min(len(latencies_ms) - 1, int(len(latencies_ms) * 0.99))]
    print(f"\nswap latency, manifest change -> AlterAlias applied and Ready, {SWAPS} swaps: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    if operator is not None:
        print_operator_timings(operator.metrics_port)

    # Delete everything; no finalizer may hang.
    for kind in ("CollectionAlias", "Collection"):
        for doc in examples[kind]:
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], doc["metadata"]["name"])
    for kind in ("CollectionAlias", "Collection"):
        for doc in examples[kind]:
            name = doc["metadata"]["name"]
            wait_until(f"{kind} {name} deleted", lambda: gone(custom, namespace, kind, name), timeout_s=120)
    for doc in examples["CollectionAlias"]:
        policy = doc["spec"].get("deletionPolicy", "Delete")
        aliases = MilvusClient(coordinator, db_name=doc["spec"].get("database", "default")).list_aliases()["aliases"]
        assert (engine_name(doc) in aliases) == (policy == "Retain"), (doc, aliases)
    for doc in examples["Collection"]:
        policy = doc["spec"].get("deletionPolicy", "Retain")
        present = MilvusClient(coordinator, db_name=doc["spec"].get("database", "default")).has_collection(engine_name(doc))
        assert present == (policy == "Retain"), doc
    if operator is not None:
        assert operator.proc.poll() is None, operator.tail()
