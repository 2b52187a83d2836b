"""The blue/green story on a real cluster: examples/ applied with the operator running,
an alias swapped by editing its manifest (with the swap latency measured, and where it
goes), everything deleted without a hanging finalizer."""

from __future__ import annotations

import copy
import functools
import statistics
import threading
import time
import urllib.request

from kubernetes import watch
from kubernetes.client.rest import ApiException
from pymilvus import MilvusClient

from breakdown import (ENGINE_RPC, QUEUE_WAIT, WatchEvent, first_arrival, format_table, histogram_delta,
                       mean_ms, operator_stages, parse_histograms, summarize)
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


def operator_histograms(port: int) -> dict:
    """The histograms of the operator's /metrics (sum and count per series)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse_histograms(response.read().decode())


def print_operator_timings(port: int) -> None:
    """Mean queue wait, reconcile time and engine RPC time from the operator's /metrics
    over the whole run."""
    families = (QUEUE_WAIT, "controller_runtime_reconcile_time_seconds", ENGINE_RPC)
    for (family, labels), totals in sorted(operator_histograms(port).items()):
        if family in families and totals.count:
            shown = ",".join(f'{k}="{v}"' for k, v in labels)
            print(f"  {family}{{{shown}}}: mean {mean_ms(totals):.2f} ms over {totals.count:.0f}")


class AliasWatch:
    """A plain watch of one CollectionAlias in a background thread: the arrival time of each
    event with the object's generation and readiness. It shows when the API server
    delivers a change to *a* client (the operator's watch gets the same events), to tell
    the API server's part of a swap from the operator's."""

    def __init__(self, custom, namespace: str, name: str, resource_version: str):
        self.events: list[WatchEvent] = []
        self.error: Exception | None = None
        self._watch = watch.Watch()
        self._connected = threading.Event()
        list_call = custom.list_namespaced_custom_object

        @functools.wraps(list_call)
        def connect(*args, **kwargs):
            # Returns once the API server answered the watch request (headers received).
            response = list_call(*args, **kwargs)
            self._connected.set()
            return response

        self._thread = threading.Thread(
            target=self._run, daemon=True,
            args=(connect, namespace, f"metadata.name={name}", resource_version))
        self._thread.start()
        if not self._connected.wait(timeout=30):
            raise AssertionError(f"the plain watch of {name} did not connect: {self.error!r}")

    def _run(self, connect, namespace: str, selector: str, resource_version: str):
        try:
            for event in self._watch.stream(connect, GROUP, VERSION, namespace, PLURALS["CollectionAlias"],
                                            field_selector=selector, resource_version=resource_version):
                arrived = time.monotonic()
                obj = event.get("object")
                if event.get("type") in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                    self.events.append(WatchEvent(arrived, obj["metadata"].get("generation", 0), ready(obj)))
        except Exception as exc:  # reported with the breakdown; the swaps do not depend on it
            self.error = exc
            self._connected.set()

    def stop(self) -> list[WatchEvent]:
        """Stops at its next event (the thread is a daemon); the events so far."""
        self._watch.stop()
        return list(self.events)


def poll_swap(client_db, alias: str, target: str, is_ready, timeout_s: float = 60.0,
              interval_s: float = 0.002) -> tuple[float, float]:
    """Polls DescribeAlias until it shows `target`, then `is_ready` until true; the monotonic
    times of both."""
    deadline = time.monotonic() + timeout_s
    flipped = None
    while time.monotonic() < deadline:
        if flipped is None and client_db.describe_alias(alias)["collection_name"] == target:
            flipped = time.monotonic()
        if flipped is not None and is_ready():
            return flipped, time.monotonic()
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for alias {alias} -> {target} applied and "
                         f"Ready (DescribeAlias flipped: {flipped is not None})")


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

    # Per swap: when the patch returned, the plain watch saw the new generation,
    # DescribeAlias showed the target and the resource reported Ready (ms after the patch
    # was sent), and what the operator's histograms gained meanwhile (only when it runs
    # here: in the cluster its /metrics is not reachable from the suite). One scrape
    # between swaps, outside the timed window.
    alias_watch = AliasWatch(custom, namespace, alias_name,
                             get(custom, namespace, "CollectionAlias", alias_name)["metadata"]["resourceVersion"])
    histograms = operator_histograms(operator.metrics_port) if operator is not None else None
    swaps = []  # (sent, generation, stages)
    latencies_ms = []
    target = first
    for _ in range(SWAPS):
        target = other if target == first else first
        started = time.monotonic()
        patched = custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS["CollectionAlias"],
                                                        alias_name, {"spec": {"collection": target}})
        patch_returned = time.monotonic()
        flipped, ready_at = poll_swap(client_db, alias, target,
                                      lambda: ready(get(custom, namespace, "CollectionAlias", alias_name)))
        latencies_ms.append((ready_at - started) * 1000)
        stages = {"patch returned": (patch_returned - started) * 1000,
                  "DescribeAlias flipped": (flipped - started) * 1000,
                  "Ready (polled)": (ready_at - started) * 1000}
        if histograms is not None:
            after = operator_histograms(operator.metrics_port)
            stages.update(operator_stages(histogram_delta(histograms, after), "collectionalias"))
            histograms = after
        swaps.append((started, patched["metadata"]["generation"], stages))
    status = get(custom, namespace, "CollectionAlias", alias_name)["status"]
    assert status["collection"] == target
    assert status["previousCollection"] == (other if target == first else first)
    latencies_ms.sort()
    p50 = statistics.median(latencies_ms)
    p99 = latencies_ms[min(len(latencies_ms) - 1, int(len(latencies_ms) * 0.99))]
    print(f"\nswap latency, manifest change -> AlterAlias applied and Ready, {SWAPS} swaps: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    time.sleep(0.2)  # the last status event may still be on its way to the plain watch
    events = alias_watch.stop()
    for sent, generation, stages in swaps:
        for stage, accept in (("watch: new generation", lambda e: e.generation >= generation),
                              ("watch: Ready", lambda e: e.generation >= generation and e.ready)):
            arrived = first_arrival(events, sent, accept)
            if arrived is not None:
                stages[stage] = (arrived - sent) * 1000
    print(format_table(summarize([stages for _, _, stages in swaps]), SWAPS))
    if alias_watch.error is not None:
        print(f"  (the plain watch failed: {alias_watch.error!r})")
    if operator is None:
        print("  (operator in the cluster: its /metrics is not reachable from here; client stages only)")
    else:
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
