"""`collection-operator up` end to end, seen through pymilvus.

Each test starts its own ``$COORDINATOR_BIN up`` on a temp manifest folder, data
directory and loopback port, writes manifests, and watches the engine change through
pymilvus: collections and the alias appear, editing the alias target swaps it, removing a
file applies the resource's deletionPolicy (Delete drops, Retain keeps), drift made with
pymilvus is repaired at the resync, a file deleted while ``up`` was down is handled at the
next start, a broken file holds only its own resources (and every deletion) while the
valid files apply, and a collection kept by Retain is taken back when its file returns.
What ``up`` prints is checked too: each action as ``plan`` lists it, drift repairs named,
the blocking file and the field's line. Every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from pymilvus import MilvusClient

from conftest import compat_target
from servers import (
    ServerStartError,
    with_parent_death,
    coordinator_binary,
    free_port,
    grpc_connect_ok,
    stop_process,
    tail,
    tcp_accepts,
)

pytestmark = pytest.mark.skipif(
    compat_target() != "coordinator",
    reason="up embeds our coordinator; there is nothing to run against Milvus 2.3.5",
)

WAIT_S = 20.0
READY_TIMEOUT_S = 20.0


def collection_manifest(name: str, dim: int, deletion_policy: str = "Retain") -> str:
    return f"""\
apiVersion: collections.dev/v1alpha1
kind: Collection
metadata:
  name: {name}
spec:
  coordinatorRef: {{name: local}}
  fields:
    - {{name: id, dataType: Int64, isPrimaryKey: true, autoID: true}}
    - {{name: title, dataType: VarChar, maxLength: 256}}
    - {{name: embedding, dataType: FloatVector, dim: {dim}}}
  deletionPolicy: {deletion_policy}
"""


def alias_manifest(name: str, target: str, deletion_policy: str = "Delete") -> str:
    return f"""\
apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata:
  name: {name}
spec:
  coordinatorRef: {{name: local}}
  collection: {target}
  deletionPolicy: {deletion_policy}
"""


class Up:
    """One ``collection-operator up`` process with its own folders and port."""

    def __init__(self, root: Path, resync_s: int = 60):
        self.root = root
        self.manifests = root / "manifests"
        self.data = root / "data"
        self.manifests.mkdir(exist_ok=True)
        self.resync_s = resync_s
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def out_path(self) -> Path:
        return self.root / f"up-{self.starts}.out"

    @property
    def err_path(self) -> Path:
        return self.root / f"up-{self.starts}.err"

    def start(self) -> None:
        self.starts += 1
        self.port = free_port()
        cmd = [
            str(coordinator_binary()),
            "up",
            "--manifests", str(self.manifests),
            "--data-dir", str(self.data),
            "--listen", f"127.0.0.1:{self.port}",
            "--resync-secs", str(self.resync_s),
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
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"up exited with {self.proc.returncode}:\n{self.logs()}")
            if tcp_accepts("127.0.0.1", self.port) and grpc_connect_ok(f"127.0.0.1:{self.port}"):
                return
            time.sleep(0.1)
        self.stop()
        raise ServerStartError(f"up not serving on {self.port} within {READY_TIMEOUT_S}s:\n{self.logs()}")

    def stop(self) -> int | None:
        """SIGTERM (graceful), then the exit code."""
        proc, self.proc = self.proc, None
        stop_process(proc, grace_s=10.0)
        return None if proc is None else proc.returncode

    def write(self, name: str, text: str) -> None:
        # Write then rename, as editors and `git checkout` do: up never sees half a file.
        path = self.manifests / name
        tmp = self.manifests / f".{name}.tmp"
        tmp.write_text(text)
        tmp.rename(path)

    def remove(self, name: str) -> None:
        (self.manifests / name).unlink()

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") if self.err_path.exists() else ""

    def logs(self) -> str:
        return f"--- stdout ---\n{tail(self.out_path, 60)}\n--- stderr ---\n{tail(self.err_path, 30)}"


def wait_for(what: str, predicate, up: Up, timeout_s: float = WAIT_S, every=None):
    """Polls ``predicate`` until it returns a truthy value; fails with up's logs.
    ``every()``, if given, runs at each poll (an invariant that must hold meanwhile)."""
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        if every is not None:
            every()
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the engine may answer "not found" until up has run
            last_error = exc
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what} (last error: {last_error})\n{up.logs()}")


def alias_target(client: MilvusClient, alias: str) -> str | None:
    try:
        return client.describe_alias(alias)["collection_name"]
    except Exception:
        return None


@pytest.fixture
def up():
    root = Path(tempfile.mkdtemp(prefix="up-"))
    instance = Up(root)
    yield instance
    instance.stop()
    if os.environ.get("COMPAT_KEEP_LOGS"):
        print(f"\nup logs kept in {root}")
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def milvus(up):
    """A pymilvus client for the up under test (connects after ``up.start()``)."""
    clients = []

    def connect() -> MilvusClient:
        c = MilvusClient(up.uri, timeout=10)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        c.close()


def test_up_creates_swaps_and_applies_deletion_policies(up, milvus):
    up.start()
    client = milvus()
    up.write("products-v1.yaml", collection_manifest("products-v1", 8, "Retain"))
    up.write("products-v2.yaml", collection_manifest("products-v2", 16, "Delete"))
    up.write("products.yaml", alias_manifest("products", "products_v1", "Delete"))

    wait_for("the alias products -> products_v1", lambda: alias_target(client, "products") == "products_v1", up)
    assert sorted(client.list_collections()) == ["products_v1", "products_v2"]
    desc = client.describe_collection("products_v2")
    assert {f["name"] for f in desc["fields"]} == {"id", "title", "embedding"}
    embedding = next(f for f in desc["fields"] if f["name"] == "embedding")
    assert embedding["params"]["dim"] == 16
    assert client.describe_collection("products")["collection_name"] == "products_v1"
    wait_for("the status table", lambda: "CollectionAlias default/products" in up.stdout(), up)

    out = up.stdout()
    assert "create collection default products_v1 3 field(s), primary key id (for Collection default/products-v1)" in out, out
    assert "create alias default products -> products_v1 (for CollectionAlias default/products)" in out, out

    # The one-line swap: said as the action, not as a count.
    up.write("products.yaml", alias_manifest("products", "products_v2", "Delete"))
    wait_for("the swap to products_v2", lambda: alias_target(client, "products") == "products_v2", up)
    wait_for(
        "the swap printed",
        lambda: "alter alias default products products_v1 -> products_v2 (for CollectionAlias default/products)"
        in up.stdout(),
        up,
    )
    assert "engine change(s)" not in up.stdout(), up.stdout()
    assert client.list_aliases("products_v1")["aliases"] == []
    assert client.list_aliases("products_v2")["aliases"] == ["products"]

    # Retain: the file goes, the engine collection stays.
    up.remove("products-v1.yaml")
    wait_for(
        "products-v1 reported deleted",
        lambda: "Collection default/products-v1" in up.stdout() and "DELETED (Retain" in up.stdout(),
        up,
    )
    assert client.has_collection("products_v1") is True

    # Delete on a collection the alias still points to waits (never drops an alias
    # it does not manage), then goes once the alias resource is deleted too.
    up.remove("products-v2.yaml")
    wait_for("products-v2 waiting for its aliases", lambda: "HasAliases" in up.stdout(), up)
    assert client.has_collection("products_v2") is True
    up.remove("products.yaml")
    wait_for("alias products dropped (Delete)", lambda: alias_target(client, "products") is None, up)
    wait_for("products_v2 dropped (Delete)", lambda: not client.has_collection("products_v2"), up)
    assert client.list_collections() == ["products_v1"]
    assert "AlreadyExists" not in up.stdout(), up.logs()


def test_up_alias_retain_keeps_the_engine_alias(up, milvus):
    up.start()
    client = milvus()
    up.write("c.yaml", collection_manifest("items", 8))
    up.write("a.yaml", alias_manifest("items-live", "items", "Retain"))
    wait_for("alias items_live", lambda: alias_target(client, "items_live") == "items", up)
    up.remove("a.yaml")
    wait_for("items-live reported deleted", lambda: "DELETED (Retain: engine alias kept)" in up.stdout(), up)
    assert alias_target(client, "items_live") == "items"


def test_up_repairs_drift_at_the_resync(up, milvus):
    up.resync_s = 1
    up.start()
    client = milvus()
    up.write("blue.yaml", collection_manifest("blue", 8))
    up.write("green.yaml", collection_manifest("green", 8))
    up.write("live.yaml", alias_manifest("live", "blue"))
    wait_for("alias live -> blue", lambda: alias_target(client, "live") == "blue", up)
    # Someone moves the alias behind up's back; up moves it back.
    client.alter_alias("green", "live")
    assert alias_target(client, "live") == "green"
    wait_for("drift repaired", lambda: alias_target(client, "live") == "blue", up, timeout_s=10)
    wait_for(
        "the repair printed as such",
        lambda: "drift repaired: alter alias default live green -> blue (for CollectionAlias default/live)"
        in up.stdout(),
        up,
    )
    # A collection dropped behind up's back is made again, and said so.
    client.drop_collection("green")
    wait_for("green made again", lambda: client.has_collection("green"), up, timeout_s=10)
    wait_for(
        "the re-creation printed as a repair",
        lambda: "drift repaired: create collection default green 3 field(s), primary key id (for Collection default/green)"
        in up.stdout(),
        up,
    )


def test_up_restart_keeps_ownership_and_applies_deletions_made_while_down(up, milvus):
    up.start()
    client = milvus()
    up.write("c.yaml", collection_manifest("docs", 8, "Delete"))
    up.write("a.yaml", alias_manifest("docs-live", "docs", "Delete"))
    wait_for("alias docs_live", lambda: alias_target(client, "docs_live") == "docs", up)
    client.close()
    assert up.stop() == 0, up.logs()
    assert (up.data / "up-state.json").is_file()

    # While up is down the alias manifest is deleted.
    up.remove("a.yaml")
    up.start()
    client = milvus()
    wait_for("docs-live deleted at start", lambda: alias_target(client, "docs_live") is None, up)
    wait_for("the status table", lambda: "Collection default/docs" in up.stdout(), up)
    # The collection it created before the restart is still its own, not AlreadyExists.
    assert "AlreadyExists" not in up.stdout(), up.logs()
    assert client.has_collection("docs") is True
    up.remove("c.yaml")
    wait_for("docs dropped (Delete)", lambda: not client.has_collection("docs"), up)


def test_up_broken_file_holds_its_own_resources_and_every_deletion(up, milvus):
    up.start()
    client = milvus()
    up.write("c.yaml", collection_manifest("kept", 8))
    up.write("doomed.yaml", collection_manifest("doomed", 8, "Delete"))
    up.write("a.yaml", alias_manifest("kept-live", "kept"))
    wait_for("alias kept_live", lambda: alias_target(client, "kept_live") == "kept", up)
    wait_for("doomed created", lambda: client.has_collection("doomed"), up)

    # A typo in a.yaml: its alias keeps its last accepted manifest; the report names the
    # file and the line of the misspelt field (line 7), not the document's first line.
    up.write("a.yaml", alias_manifest("kept-live", "other").replace("collection:", "colection:"))
    wait_for("the block report", lambda: "BLOCKED by a.yaml" in up.stderr(), up)
    err = up.stderr()
    assert 'a.yaml: document 1 (line 7): CollectionAlias default/kept-live: unknown field "spec.colection"' in err, err
    assert "kept as last accepted (their file is broken or gone): CollectionAlias default/kept-live" in err, err
    assert alias_target(client, "kept_live") == "kept"

    # Meanwhile a valid file applies, and the report is repeated for that change.
    up.write("fresh.yaml", collection_manifest("fresh", 8))
    wait_for("fresh created while a.yaml is broken", lambda: client.has_collection("fresh"), up)
    wait_for("the report repeated", lambda: up.stderr().count("BLOCKED by a.yaml") >= 2, up)
    # But nothing is deleted while a file is broken: a resource may have moved into it.
    up.remove("doomed.yaml")
    wait_for(
        "doomed held",
        lambda: "kept as last accepted (their file is broken or gone): Collection default/doomed" in up.stderr(),
        up,
    )
    time.sleep(1.0)
    assert client.has_collection("doomed") is True
    assert alias_target(client, "kept_live") == "kept"

    # Fixed: everything applies again, the held deletion too.
    up.write("a.yaml", alias_manifest("kept-live", "kept"))
    wait_for("valid again", lambda: "every manifest file is valid again" in up.stderr(), up)
    wait_for("doomed dropped (Delete)", lambda: not client.has_collection("doomed"), up)
    assert alias_target(client, "kept_live") == "kept"


def test_up_takes_back_the_collection_it_retained(up, milvus):
    """Removing a Retain collection's file and putting it back is an undo: the same
    resource takes back the collection up created (same ID), without the adopt
    annotation. A collection up never created still needs it."""
    up.start()
    client = milvus()
    up.write("v2.yaml", collection_manifest("products-v2", 8, "Retain"))
    wait_for("products_v2 created", lambda: client.has_collection("products_v2"), up)
    created_id = client.describe_collection("products_v2")["collection_id"]
    up.remove("v2.yaml")
    wait_for("products-v2 deleted (Retain)", lambda: "DELETED (Retain: engine collection kept)" in up.stdout(), up)
    assert client.describe_collection("products_v2")["collection_id"] == created_id

    up.write("v2.yaml", collection_manifest("products-v2", 8, "Retain"))
    wait_for(
        "taken back",
        lambda: f"took back collection default products_v2 (ID {created_id}) for Collection default/products-v2"
        in up.stdout(),
        up,
    )
    assert "AlreadyExists" not in up.stdout(), up.logs()
    assert client.describe_collection("products_v2")["collection_id"] == created_id

    # Made by someone else: adopting it still takes the annotation.
    client.create_collection("foreign", dimension=8)
    up.write("foreign.yaml", collection_manifest("foreign", 8))
    wait_for("foreign refused", lambda: "collections.dev/adopt" in up.stdout(), up)

    # Retained, then dropped and made again by someone else: not up's any more.
    up.remove("v2.yaml")
    wait_for("products-v2 deleted again", lambda: up.stdout().count("DELETED (Retain: engine collection kept)") >= 2, up)
    client.drop_collection("products_v2")
    client.create_collection("products_v2", dimension=8)
    up.write("v2.yaml", collection_manifest("products-v2", 8, "Retain"))
    wait_for(
        "the replacement refused",
        lambda: [line for line in up.stdout().splitlines() if "products-v2" in line and "AlreadyExists" in line],
        up,
    )


def test_up_recognises_objects_sent_before_a_crash(up, milvus):
    """A create acknowledged by the engine but never recorded (up killed in between)
    is recognised through the pending mark written before sending it."""
    import json

    up.start()
    client = milvus()
    up.write("c.yaml", collection_manifest("orders", 8))
    up.write("a.yaml", alias_manifest("orders-live", "orders"))
    wait_for("alias orders_live", lambda: alias_target(client, "orders_live") == "orders", up)
    wait_for("the status table", lambda: "CollectionAlias default/orders-live" in up.stdout(), up)
    assert up.stop() == 0, up.logs()

    # Rewrite the state as a crash after the engine acknowledged but before the outcome
    # was recorded would leave it: only the pending marks.
    path = up.data / "up-state.json"
    state = json.loads(path.read_text())
    collection = state["collections"]["default/orders"]
    alias = state["aliases"]["default/orders-live"]
    created_id = collection.pop("collectionId")
    collection["pending"] = "create"
    alias.pop("bound")
    alias["pending"] = "orders"
    path.write_text(json.dumps(state))

    up.start()
    wait_for("the status table", lambda: "CollectionAlias default/orders-live" in up.stdout(), up)
    out = up.stdout()
    assert "AlreadyExists" not in out, up.logs()
    assert out.count("READY") >= 2, up.logs()
    wait_for("the state rewritten", lambda: "pending" not in path.read_text(), up)
    state = json.loads(path.read_text())
    assert state["collections"]["default/orders"]["collectionId"] == created_id
    assert state["aliases"]["default/orders-live"]["bound"] == "orders"


def served_collection_manifest(name: str) -> str:
    """A collection with an HNSW index and ``load: WhileAliased``."""
    return f"""\
apiVersion: collections.dev/v1alpha1
kind: Collection
metadata:
  name: {name}
spec:
  coordinatorRef: {{name: local}}
  fields:
    - {{name: id, dataType: Int64, isPrimaryKey: true}}
    - {{name: embedding, dataType: FloatVector, dim: 8}}
  indexes:
    - {{fieldName: embedding, indexType: HNSW, metricType: L2, params: {{M: "8", efConstruction: "64"}}}}
  load: {{policy: WhileAliased, releaseDelay: 1h}}
"""


def gated_alias_manifest(name: str, target: str, guards: str) -> str:
    return f"""\
apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata:
  name: {name}
spec:
  coordinatorRef: {{name: local}}
  collection: {target}
  switchPolicy: WhenTargetServing
  guards: {guards}
"""


def test_up_gated_swap_on_the_embedded_coordinator(up, milvus):
    """The embedded coordinator keeps metadata only and says so: an index is Finished
    with 0 rows, a collection Loaded once loaded, every row count 0. So the serving gate
    opens there (index created, collection loaded, then the alias), a row ratio against an
    empty collection holds, and a minRowCount blocks with the engine's 0 rows named."""
    up.start()
    client = milvus()
    up.write("v1.yaml", served_collection_manifest("items-v1"))
    up.write("v2.yaml", served_collection_manifest("items-v2"))
    up.write("a.yaml", gated_alias_manifest("items", "items_v1", "{minRowRatio: 0.95}"))
    wait_for("alias items -> items_v1", lambda: alias_target(client, "items") == "items_v1", up)
    index = client.describe_index("items_v1", "embedding")
    assert index["index_type"] == "HNSW" and index["state"] == "Finished", index
    assert index["total_rows"] == 0 and index["indexed_rows"] == 0, index
    assert str(client.get_load_state("items_v1")["state"]).endswith("Loaded")
    assert client.get_collection_stats("items_v1")["row_count"] == 0
    # Nothing waits for items_v2 yet: WhileAliased leaves it unloaded.
    assert str(client.get_load_state("items_v2")["state"]).endswith("NotLoad")

    up.write("a.yaml", gated_alias_manifest("items", "items_v2", "{minRowRatio: 0.95}"))
    wait_for("alias items -> items_v2", lambda: alias_target(client, "items") == "items_v2", up)
    assert str(client.get_load_state("items_v2")["state"]).endswith("Loaded")
    wait_for("the swap verified", lambda: "items_v1 -> items_v2 verified" in up.stdout(), up)

    # A guard on rows the embedded engine never has: blocked, and says why.
    up.write("a.yaml", gated_alias_manifest("items", "items_v1", "{minRowCount: 10}"))
    blocked = wait_for(
        "SwapBlocked",
        lambda: [line for line in up.stdout().splitlines() if "SwapBlocked" in line],
        up,
    )
    assert "items_v1 has 0 rows, needs >= 10 (the engine reports 0 rows)" in blocked[-1], blocked[-1]
    time.sleep(1.0)
    assert alias_target(client, "items") == "items_v2"
