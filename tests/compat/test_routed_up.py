"""A RoutedAlias under `collection-operator up`, seen through pymilvus, with a 2-second
interval: collections of the series appear (named after their UTC interval start, one
interval apart), the alias moves to each new one, retired ones are dropped, a template
edit reaches only new collections, and removing the file drops the alias and (Delete)
the collections.

Every wait polls with a generous bound (a loaded 2-core machine may run a pass late; the
assertions only need the series to move forward, never a particular interval).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from conftest import compat_target  # noqa: F401  (the skip below uses it)
from test_up import alias_target, milvus, up, wait_for  # noqa: F401  (fixtures)

import pytest

pytestmark = pytest.mark.skipif(
    compat_target() != "coordinator",
    reason="up embeds our coordinator; there is nothing to run against Milvus 2.3.5",
)

SLOW_S = 60.0
NAME = re.compile(r"^ticks_(\d{8}T\d{6}Z)$")


def routed_manifest(dim: int) -> str:
    return f"""\
apiVersion: collections.dev/v1alpha1
kind: RoutedAlias
metadata:
  name: ticks
spec:
  coordinatorRef: {{name: local}}
  start: "2026-01-01T00:00:00Z"
  interval: 2s
  preemptiveCreate: 1s
  autoDeleteAge: 2s
  maxCollections: 10
  deletionPolicy: Delete
  template:
    fields:
      - {{name: id, dataType: Int64, isPrimaryKey: true, autoID: true}}
      - {{name: embedding, dataType: FloatVector, dim: {dim}}}
"""


def start_of(name: str) -> datetime:
    match = NAME.match(name)
    assert match, f"{name} is not a collection of the series"
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def series(client) -> list[str]:
    return sorted(c for c in client.list_collections() if c.startswith("ticks_"))


def dim_of(client, collection: str) -> int:
    fields = client.describe_collection(collection)["fields"]
    return next(f for f in fields if f["name"] == "embedding")["params"]["dim"]


def test_up_rolls_a_routed_alias_every_two_seconds(up, milvus):
    up.start()
    client = milvus()
    up.write("ticks.yaml", routed_manifest(8))

    first = wait_for(
        "the alias ticks on a collection of the series",
        lambda: (t := alias_target(client, "ticks")) and NAME.match(t) and t,
        up,
        timeout_s=SLOW_S,
    )
    # Named after the UTC start of an interval of the series (whole 2-second steps from
    # start), and created from the template.
    assert start_of(first).second % 2 == 0, first
    assert dim_of(client, first) == 8
    assert first in series(client)

    # The alias moves forward at a boundary, to a later interval's collection.
    second = wait_for(
        "the alias moved on",
        lambda: (t := alias_target(client, "ticks")) and NAME.match(t) and t > first and t,
        up,
        timeout_s=SLOW_S,
    )
    assert (start_of(second) - start_of(first)).total_seconds() % 2 == 0

    # The first one is retired (its interval ended more than 2 s ago) and dropped.
    wait_for("the first collection dropped", lambda: not client.has_collection(first), up, timeout_s=SLOW_S)
    # Never more than past + current + next are live: the cap was never near.
    assert len(series(client)) <= 5, series(client)
    # The status table is printed when the pass ends, after the drop is visible.
    wait_for(
        "the drop reported",
        lambda: "DELETED (Delete: engine collection dropped)" in up.stdout(),
        up,
        timeout_s=SLOW_S,
    )
    out = up.stdout()
    assert "RoutedAlias default/ticks" in out, up.logs()

    # A template edit applies to collections created from then on.
    up.write("ticks.yaml", routed_manifest(16))
    wait_for(
        "the alias on a collection with the new template",
        lambda: (t := alias_target(client, "ticks")) and NAME.match(t) and dim_of(client, t) == 16,
        up,
        timeout_s=SLOW_S,
    )

    # Removing the file: the alias is dropped, and (deletionPolicy Delete) the collections.
    up.remove("ticks.yaml")
    wait_for("the alias ticks dropped", lambda: alias_target(client, "ticks") is None, up, timeout_s=SLOW_S)
    wait_for("every collection of the series dropped", lambda: series(client) == [], up, timeout_s=SLOW_S)
    assert "AlreadyExists" not in up.stdout(), up.logs()
