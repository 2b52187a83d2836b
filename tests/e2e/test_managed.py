"""A managed Coordinator on a real cluster (needs E2E_IMAGE: its pods run the image): the
operator deploys the coordinator and the StreamingNode StatefulSet, places 4 pchannels, and
when the spec asks for fewer nodes it freezes the highest ordinal, waits until it holds no
pchannel, and only then lowers replicas. Deleting the Coordinator removes what it owns."""

from __future__ import annotations

import os
import time

import pytest
from kubernetes import client

from conftest import GROUP, VERSION, wait_until

pytestmark = pytest.mark.skipif(
    not os.environ.get("E2E_IMAGE"),
    reason="managed Coordinators run the operator image in the cluster: set E2E_IMAGE",
)

NAME = "wal"
STS = f"{NAME}-streamingnode"


def condition(obj: dict, type_: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return c["status"]
    return None


def test_streaming_nodes_are_drained_before_they_are_removed(kube, custom, namespace, operator):
    image = os.environ["E2E_IMAGE"]
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "coordinators", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Coordinator",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {"managed": {"image": image, "streaming": {
            "pchannels": 4, "maxPChannelsPerNode": 2, "spareNodes": 1, "minReplicas": 1}}},
    })
    apps = client.AppsV1Api(kube)

    def coordinator() -> dict:
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "coordinators", NAME)

    def placed_on(obj: dict) -> dict[str, int]:
        rows = ((obj.get("status") or {}).get("streaming") or {}).get("pchannels", [])
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.get("pod", "")] = counts.get(row.get("pod", ""), 0) + 1
        return counts

    wait_until("4 pchannels placed on 3 streaming nodes", lambda: (
        condition(coordinator(), "WALPlacementReady") == "True"
        and apps.read_namespaced_stateful_set(STS, namespace).spec.replicas == 3
        and sum(placed_on(coordinator()).values()) == 4
    ), timeout_s=300, interval_s=1)

    # Fewer nodes: ceil(4 / 4) + 1 spare = 2; ordinal 2 must be emptied first.
    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "coordinators", NAME, {
        "spec": {"managed": {"streaming": {"maxPChannelsPerNode": 4}}}})
    last_seen: dict[str, int] = {}
    started = time.monotonic()
    while True:
        obj = coordinator()
        replicas = apps.read_namespaced_stateful_set(STS, namespace).spec.replicas
        if replicas == 2:
            assert last_seen.get(f"{STS}-2", 0) == 0, f"scaled down while {STS}-2 held {last_seen}"
            break
        last_seen = placed_on(obj)
        assert time.monotonic() - started < 300, f"no scale-down; placement {last_seen}"
        time.sleep(0.2)
    wait_until("the placement settles on ordinals 0 and 1", lambda: (
        set(placed_on(coordinator())) <= {f"{STS}-0", f"{STS}-1"}
        and sum(placed_on(coordinator()).values()) == 4
        and condition(coordinator(), "Draining") == "False"
    ), timeout_s=300, interval_s=1)

    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "coordinators", NAME)

    def owned_gone() -> bool:
        names = {s.metadata.name for s in apps.list_namespaced_stateful_set(namespace).items}
        return not names & {STS, f"{NAME}-coordinator"}

    wait_until("owned StatefulSets garbage-collected", owned_gone, timeout_s=300, interval_s=1)
