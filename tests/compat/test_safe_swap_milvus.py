"""Safe swaps against REAL Milvus 2.3.5 with real data, through ``up --engine``.

``up`` reconciles a manifest folder against the session's Milvus 2.3.5 (no embedded
coordinator): collections v1 and v2 declare an HNSW index and ``load: WhileAliased``, the
alias declares ``switchPolicy: WhenTargetServing`` and ``guards.minRowRatio``. pymilvus
fills v2 in batches while the test checks, at every poll, that the alias still serves v1
and that searches through it succeed; the alias moves only once v2 is indexed, loaded and
past the ratio; a search through the alias returns v2's rows right after ``up`` reports
it Ready; v1 is released ``releaseDelay`` after the alias left it and not before; moving
back inside the delay needs no reload (v1 never stops being loaded).

Row counts on Milvus 2.3.5 need a flush: GetCollectionStatistics sums ``NumOfRows`` of the
segments datacoord knows (``internal/datacoord/services.go``
``Server.GetCollectionStatistics`` -> ``internal/datacoord/meta.go``
``meta.GetNumRowsOfCollection``), and a growing segment's ``NumOfRows`` is only written
when the datanode saves its binlogs (a flush, or a sync long after the insert); the live
count ``SetCurrentRows`` keeps (``internal/datacoord/server.go``,
``updateSegmentStatistics``) is not what it sums. Indexes are built on sealed segments
only, so DescribeIndex's ``total_rows``/``indexed_rows`` move with flushes too. So the
test does what a user loading a new collection does: insert, then ``flush``. Until then
the guard reads 0 rows and holds the swap with SwapBlocked.

This module always runs against Milvus 2.3.5 (the ``milvus235`` fixture): it errors,
never skips, when Milvus cannot start.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from servers import ServerStartError, coordinator_binary, stop_process, tail, with_parent_death
from test_up import alias_target, wait_for

DIM = 8
V1_ROWS = 2000
V2_BATCH = 500
V2_BATCHES = 4  # 500, 1000, 1500 rows are below 0.9 x 2000; 2000 passes
MIN_ROW_RATIO = 0.9
RELEASE_DELAY_S = 20
V2_ID_BASE = 1_000_000
WAIT_S = 90.0
# up looks again at a waiting alias every 5 s; a blocked batch is watched for longer.
BLOCKED_WATCH_S = 7.0


def collection_manifest(resource: str, engine: str) -> str:
    return f"""\
apiVersion: collections.dev/v1alpha1
kind: Collection
metadata:
  name: {resource}
spec:
  coordinatorRef: {{name: milvus}}
  name: {engine}
  fields:
    - {{name: id, dataType: Int64, isPrimaryKey: true}}
    - {{name: vec, dataType: FloatVector, dim: {DIM}}}
  indexes:
    - fieldName: vec
      indexType: HNSW
      metricType: L2
      params: {{M: "8", efConstruction: "64"}}
  load:
    policy: WhileAliased
    releaseDelay: {RELEASE_DELAY_S}s
  deletionPolicy: Delete
"""


def alias_manifest(resource: str, engine: str, target: str) -> str:
    return f"""\
apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata:
  name: {resource}
spec:
  coordinatorRef: {{name: milvus}}
  name: {engine}
  collection: {target}
  switchPolicy: WhenTargetServing
  guards:
    minRowRatio: {MIN_ROW_RATIO}
  deletionPolicy: Delete
"""


class UpOnEngine:
    """``collection-operator up --engine URI`` on a temp manifest folder and data dir."""

    def __init__(self, engine_uri: str):
        self.engine_uri = engine_uri
        self.root = Path(tempfile.mkdtemp(prefix="up-engine-"))
        self.manifests = self.root / "manifests"
        self.manifests.mkdir()
        self.data = self.root / "data"
        self.out_path = self.root / "up.out"
        self.err_path = self.root / "up.err"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [
            str(coordinator_binary()),
            "up",
            "--engine", self.engine_uri,
            "--manifests", str(self.manifests),
            "--data-dir", str(self.data),
            "--resync-secs", "60",
            "--debounce-ms", "100",
        ]
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                with_parent_death(cmd),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "RUST_LOG": "warn"},
            )
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"up exited with {self.proc.returncode}:\n{self.logs()}")
            if "against the engine at" in self.stdout():
                return
            time.sleep(0.1)
        raise ServerStartError(f"up --engine did not start within 20 s:\n{self.logs()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, grace_s=10.0)

    def write(self, name: str, text: str) -> None:
        # Write then rename, as editors and `git checkout` do: up never sees half a file.
        tmp = self.manifests / f".{name}.tmp"
        tmp.write_text(text)
        tmp.rename(self.manifests / name)

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def logs(self) -> str:
        return f"--- stdout ---\n{tail(self.out_path, 80)}\n--- stderr ---\n{tail(self.err_path, 30)}"

    def alias_statuses(self, resource: str) -> list[str]:
        """Every status line up printed for the alias resource, oldest first."""
        prefix = f"CollectionAlias default/{resource} "
        return [line for line in self.stdout().splitlines() if line.startswith(prefix)]


def is_ready(status_line: str) -> bool:
    """Whether a status line of up says READY, in the table (a column) or in the one line
    per resource up prints when the table does not fit (`status: READY;`)."""
    return re.search(r"(^|\s|status: )READY(\s|;|$)", status_line) is not None


def load_state(client: MilvusClient, collection: str) -> str:
    return str(client.get_load_state(collection)["state"]).rsplit(".", 1)[-1].rstrip(">")


def row_count(client: MilvusClient, collection: str) -> int:
    return int(client.get_collection_stats(collection)["row_count"])


def vectors(n: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.random() for _ in range(DIM)] for _ in range(n)]


def search_ids(client: MilvusClient, name: str, vector: list[float], limit: int = 3) -> list[int]:
    hits = client.search(
        name,
        data=[vector],
        anns_field="vec",
        limit=limit,
        search_params={"metric_type": "L2", "params": {"ef": 32}},
        consistency_level="Strong",
    )
    return [hit["id"] for hit in hits[0]]


@pytest.fixture
def engine_up(milvus235):
    instance = UpOnEngine(milvus235.uri)
    yield instance
    instance.stop()
    if os.environ.get("COMPAT_KEEP_LOGS"):
        print(f"\nup logs kept in {instance.root}")
    else:
        shutil.rmtree(instance.root, ignore_errors=True)


@pytest.fixture
def names(milvus235):
    """Unique engine names in Milvus' default database; dropped at teardown."""
    prefix = f"s{uuid.uuid4().hex[:6]}"
    made = {"alias": f"{prefix}_live", "v1": f"{prefix}_v1", "v2": f"{prefix}_v2"}
    yield made
    client = MilvusClient(milvus235.uri, timeout=10)
    try:
        for alias in (made["alias"],):
            try:
                client.drop_alias(alias)
            except Exception:
                pass
        for name in (made["v1"], made["v2"]):
            try:
                client.drop_collection(name)
            except Exception:
                pass
    finally:
        client.close()


def test_alias_moves_only_to_a_serving_full_target_and_the_old_one_is_released_later(
    engine_up, names, milvus235
):
    up = engine_up
    alias, v1, v2 = names["alias"], names["v1"], names["v2"]
    client = MilvusClient(milvus235.uri, timeout=30)
    up.write("v1.yaml", collection_manifest("products-v1", v1))
    up.write("v2.yaml", collection_manifest("products-v2", v2))
    up.write("alias.yaml", alias_manifest("products", alias, v1))
    up.start()

    # v1 gets its index, is loaded (an alias waits for it) and then gets the alias.
    wait_for(f"alias {alias} -> {v1}", lambda: alias_target(client, alias) == v1, up, timeout_s=WAIT_S)
    assert load_state(client, v1) == "Loaded", up.logs()
    assert client.describe_index(v1, "vec")["index_type"] == "HNSW"
    v1_vectors = vectors(V1_ROWS, seed=1)
    client.insert(v1, [{"id": i, "vec": v} for i, v in enumerate(v1_vectors)])
    client.flush(v1)
    wait_for(f"{v1} counts {V1_ROWS} rows", lambda: row_count(client, v1) == V1_ROWS, up, timeout_s=WAIT_S)
    assert search_ids(client, alias, v1_vectors[7])[0] == 7

    def alias_serves_v1() -> None:
        target = alias_target(client, alias)
        assert target == v1, f"alias moved to {target} before v2 was ready\n{up.logs()}"
        assert search_ids(client, alias, v1_vectors[3]), "search through the alias returned nothing"

    # The swap is requested while v2 is empty: the guard holds it, with the numbers.
    up.write("alias.yaml", alias_manifest("products", alias, v2))
    blocked = wait_for(
        "SwapBlocked in up's output",
        lambda: [s for s in up.alias_statuses("products") if "SwapBlocked" in s],
        up,
        every=alias_serves_v1, timeout_s=WAIT_S)
    line = blocked[-1]
    assert v2 in line and v1 in line, line
    assert re.search(r"\b0 rows\b", line), line
    assert re.search(r"2,?000", line), line
    # WhileAliased loads the collection the alias waits for, before the swap.
    wait_for(f"{v2} loaded while the alias waits for it", lambda: load_state(client, v2) == "Loaded", up,
             every=alias_serves_v1, timeout_s=WAIT_S)

    # Fill v2 in batches; below the ratio the alias stays on v1, searches keep working.
    v2_vectors = vectors(V2_BATCH * V2_BATCHES, seed=2)
    for batch in range(V2_BATCHES):
        rows = [
            {"id": V2_ID_BASE + i, "vec": v2_vectors[i]}
            for i in range(batch * V2_BATCH, (batch + 1) * V2_BATCH)
        ]
        client.insert(v2, rows)
        alias_serves_v1()
        client.flush(v2)
        held = (batch + 1) * V2_BATCH
        if held >= MIN_ROW_RATIO * V1_ROWS:
            break
        # Still short of the ratio: watch more than one of up's rechecks.
        wait_for(f"{v2} counts {held} rows", lambda: row_count(client, v2) == held, up, every=alias_serves_v1, timeout_s=WAIT_S)
        watch_until = time.monotonic() + BLOCKED_WATCH_S
        while time.monotonic() < watch_until:
            alias_serves_v1()
            time.sleep(0.3)
        assert re.search(rf"\b{held:,}\b|\b{held}\b", up.alias_statuses("products")[-1]), up.logs()

    # Past the ratio: the alias moves, and only now that v2 is full, indexed and loaded.
    wait_for(f"alias {alias} -> {v2}", lambda: alias_target(client, alias) == v2, up, timeout_s=WAIT_S)
    swapped_at = time.monotonic()
    assert row_count(client, v2) >= MIN_ROW_RATIO * V1_ROWS
    index = client.describe_index(v2, "vec")
    assert index["state"] == "Finished" and index["indexed_rows"] == index["total_rows"] > 0, index
    assert load_state(client, v2) == "Loaded"
    wait_for(
        "up reports the alias Ready on v2",
        lambda: (s := up.alias_statuses("products")) and is_ready(s[-1]) and f"-> {v2} verified" in s[-1],
        up, timeout_s=WAIT_S)
    # Right after Ready, a search through the alias answers from v2.
    assert search_ids(client, alias, v2_vectors[11])[0] == V2_ID_BASE + 11

    # v1 stays loaded (a rollback is instant) ...
    wait_for("a few seconds inside the release delay", lambda: time.monotonic() - swapped_at > 3, up, timeout_s=WAIT_S)
    assert load_state(client, v1) == "Loaded", up.logs()

    # ... and moving back inside the delay needs no reload: v1 is never anything but Loaded.
    def v1_stays_loaded() -> None:
        state = load_state(client, v1)
        assert state == "Loaded", f"{v1} was {state} during the rollback\n{up.logs()}"

    up.write("alias.yaml", alias_manifest("products", alias, v1))
    wait_for(f"rollback: alias {alias} -> {v1}", lambda: alias_target(client, alias) == v1, up,
             timeout_s=20.0, every=v1_stays_loaded)
    assert search_ids(client, alias, v1_vectors[5])[0] == 5
    # The release that was due is cancelled: v1 is still loaded after the delay has passed.
    while time.monotonic() - swapped_at < RELEASE_DELAY_S + 8:
        v1_stays_loaded()
        time.sleep(0.5)

    # Forward again; v1 is released releaseDelay after the alias left it, and not before.
    up.write("alias.yaml", alias_manifest("products", alias, v2))
    wait_for(f"alias {alias} -> {v2} again", lambda: alias_target(client, alias) == v2, up, timeout_s=30.0)
    left_at = time.monotonic()
    released_after = wait_for(
        f"{v1} released",
        lambda: load_state(client, v1) == "NotLoad" and time.monotonic() - left_at,
        up,
        timeout_s=RELEASE_DELAY_S + 30,
    )
    # The alias left v1 at most a poll before `left_at`; the release may not come earlier.
    assert released_after >= RELEASE_DELAY_S - 1.0, (released_after, up.logs())
    # v2 serves, and nothing was dropped by the swaps.
    assert search_ids(client, alias, v2_vectors[0])[0] == V2_ID_BASE
    assert client.has_collection(v1) and row_count(client, v1) == V1_ROWS
    client.close()
