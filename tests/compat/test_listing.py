"""`plan` and `up --engine` on more than 64 names: the per-database listing and its
fallback, against real Milvus 2.3.5 and against our coordinator.

From 64 names on, a reconcile pass lists each database (ListDatabases, ShowCollections,
ListAliases) instead of describing every name (``src/up/reconcile.rs``, ``observe``), and
learns the targets of existing aliases by DescribeAlias per alias or by ListAliases per
collection, whichever makes fewer calls. An engine that refuses ListAliases is observed
name by name instead (DescribeCollection, then DescribeAlias for what that leaves open).

Which engines refuse it:

* Milvus 2.3.5 does not. ``Proxy.ListAliases`` (``internal/proxy/impl.go``) and
  ``Core.ListAliases`` (``internal/rootcoord/root_coord.go``) reached the 2.3 branch with
  milvus-io/milvus#29896 (cherry-pick of #29641, January 2024), and the PyPI
  ``milvus==2.3.5`` server (GetVersion ``v2.3.5-lite``) answers it with the aliases of the
  request's database, or of one collection. So on Milvus 2.3.5 ``up`` takes the listing
  path, checked here.
* Milvus before it does: its ``Proxy.ListAliases`` (``internal/proxy/impl.go`` as of
  commit 18df2ba6fd51b59aeefc903f5c6dd8741ba2cc5e) answers
  ``merr.Status(merr.WrapErrServiceUnavailable("ListAliases unimplemented"))`` without
  asking rootcoord: code 2 (``merr.ErrServiceUnavailable``). (Its ``Proxy.DescribeAlias``
  answers the same way, so there the name-by-name observation fails too, at DescribeAlias.)

The fallback runs here against a real engine behind a forwarding gRPC proxy
(``RefusingProxy``) that passes every call through except ListAliases, which it answers
as Milvus before 2.3.5 did. The proxy also counts the calls per method: the path a
``plan`` took is read from what reached the engine, not from log text.

Each case: Collections and CollectionAliases in a database of their own (40 and 30, or
20 and 50 for the per-collection alias lookup; 140 names to observe either way, each
collection and alias name both as a collection and as an alias). ``plan`` on the empty
database lists exactly their creation and exits 2; ``up --engine`` applies them; ``plan``
then exits 0 (every name observed as applied); an alias moved behind ``up``'s back is
planned as the one AlterAlias back, and ``up``'s next full pass repairs it and says so.
Small schemas, no index, no load: Milvus 2.3.5 creates the collections in well under a
second; the six cases take about 30 s with Milvus' start.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import threading
import uuid
from concurrent import futures

import grpc
import pytest
from pymilvus.grpc_gen import common_pb2, milvus_pb2

from ddl import RawClient
from servers import coordinator_binary, with_parent_death
from test_safe_swap_milvus import UpOnEngine
from test_up import wait_for

LISTING_FROM = 64  # src/up/reconcile.rs
WAIT_S = 60.0
PLAN_TIMEOUT_S = 60.0
SERVICE = "/milvus.proto.milvus.MilvusService/"

# (collections, aliases). The listing learns alias targets one of two ways, whichever
# makes fewer calls: DescribeAlias per alias (fewer aliases than collections) or
# ListAliases per collection (more aliases than collections).
SHAPES = {"by-alias": (40, 30), "by-collection": (20, 50)}


class RefusingProxy:
    """A gRPC proxy on loopback in front of a real engine: forwards every unary call with
    its metadata (database header, token) byte for byte, counts the calls per method, and
    when ``refuse_list_aliases`` answers ListAliases itself as Milvus before 2.3.5 did."""

    def __init__(self, upstream: str, refuse_list_aliases: bool):
        self.refuse_list_aliases = refuse_list_aliases
        self._channel = grpc.insecure_channel(upstream)
        self._lock = threading.Lock()
        self._calls: collections.Counter[str] = collections.Counter()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        self._server.add_generic_rpc_handlers((self._Handler(self),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self._calls)

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()

    def stop(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()

    def _forward(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        name = method.rsplit("/", 1)[-1]
        with self._lock:
            self._calls[name] += 1
        if self.refuse_list_aliases and method == SERVICE + "ListAliases":
            # internal/proxy/impl.go before 2.3.5: Proxy.ListAliases answers
            # merr.Status(merr.WrapErrServiceUnavailable("ListAliases unimplemented")).
            return milvus_pb2.ListAliasesResponse(
                status=common_pb2.Status(
                    error_code=common_pb2.UnexpectedError,
                    code=2,
                    reason="ListAliases unimplemented: service unavailable",
                )
            ).SerializeToString()
        metadata = [
            (key, value)
            for key, value in context.invocation_metadata()
            if not key.startswith((":", "grpc-")) and key != "user-agent"
        ]
        # Without a deadline, time_remaining() is ~2^63 s, which as a timeout expires at once.
        remaining = context.time_remaining()
        timeout = remaining if remaining is not None and remaining < 3600 else None
        call = self._channel.unary_unary(method)
        try:
            return call(request, metadata=metadata, timeout=timeout)
        except grpc.RpcError as error:
            context.abort(error.code(), error.details() or "")
            raise  # unreachable: abort raises

    class _Handler(grpc.GenericRpcHandler):
        def __init__(self, proxy: RefusingProxy):
            self.proxy = proxy

        def service(self, handler_call_details):
            method = handler_call_details.method
            return grpc.unary_unary_rpc_method_handler(
                lambda request, context: self.proxy._forward(method, request, context)
            )


def collection_manifest(name: str, database: str) -> str:
    return f"""\
apiVersion: collections.dev/v1alpha1
kind: Collection
metadata:
  name: {name}
spec:
  coordinatorRef: {{name: engine}}
  database: {database}
  fields:
    - {{name: id, dataType: Int64, isPrimaryKey: true}}
    - {{name: vec, dataType: FloatVector, dim: 4}}
"""


def alias_manifest(name: str, database: str, target: str) -> str:
    return f"""\
apiVersion: collections.dev/v1alpha1
kind: CollectionAlias
metadata:
  name: {name}
spec:
  coordinatorRef: {{name: engine}}
  database: {database}
  collection: {target}
"""


def target_of(alias_index: int, collections: int) -> str:
    return f"c{alias_index % collections}"


ACTION = re.compile(
    r"^(create database|create collection|create alias|alter alias|drop alias|drop collection|adopt \w+)"
    r"\s+(\S+)\s+(\S+)\s*(.*)$"
)


def planned_actions(stdout: str) -> list[tuple[str, str, str, str]]:
    """The rows of plan's ACTION table: (action, database, object, detail)."""
    rows = []
    for line in stdout.splitlines():
        match = ACTION.match(line)
        if match:
            rows.append(tuple(match.group(i).strip() for i in range(1, 5)))
    return rows


class Case:
    """One engine behind a proxy, ``up --engine`` on it (``UpOnEngine``: its manifest
    folder, state and output), and ``plan`` runs on the same folder."""

    def __init__(self, engine_address: str, refuse_list_aliases: bool, collections: int, aliases: int):
        self.engine_address = engine_address
        self.collections = collections
        self.aliases = aliases
        # Every collection and alias name is looked at both as a collection and as an alias.
        assert 2 * (collections + aliases) >= LISTING_FROM
        self.proxy = RefusingProxy(engine_address, refuse_list_aliases)
        self.up = UpOnEngine(self.proxy.uri)
        self.database = f"lf_{uuid.uuid4().hex[:8]}"

    def plan(self) -> subprocess.CompletedProcess:
        self.proxy.reset()
        return subprocess.run(
            with_parent_death(
                [str(coordinator_binary()), "plan", "-f", str(self.up.manifests), "--coordinator", self.proxy.uri]
            ),
            capture_output=True,
            text=True,
            timeout=PLAN_TIMEOUT_S,
            env={**os.environ, "RUST_LOG": "warn"},
        )

    def start_up(self) -> None:
        self.proxy.reset()
        self.up.start()

    def stop_up(self) -> int | None:
        """Stops up (SIGTERM); its exit code."""
        proc = self.up.proc
        self.up.stop()
        return None if proc is None else proc.returncode

    def close(self) -> None:
        self.up.stop()
        self.proxy.stop()
        if os.environ.get("COMPAT_KEEP_LOGS"):
            print(f"\nup logs kept in {self.up.root}")
        else:
            shutil.rmtree(self.up.root, ignore_errors=True)


def expect_ok(response, what: str) -> None:
    status = response if isinstance(response, common_pb2.Status) else response.status
    assert status.code == 0 and status.error_code == 0, (what, status)


def drop_database(address: str, database: str, aliases: int) -> None:
    raw = RawClient(address, timeout=30)
    try:
        if database not in raw.list_databases().db_names:
            return
        for index in range(aliases):
            raw.drop_alias(f"a{index}", db_name=database)
        for name in raw.show_collections(db_name=database).collection_names:
            raw.drop_collection(name, db_name=database)
        raw.drop_database(database)
    finally:
        raw.close()


CASES = {
    # Milvus 2.3.5 answers ListAliases: the listing, both ways of learning targets.
    "milvus235-listing-by-alias": ("milvus235", False, "by-alias"),
    "milvus235-listing-by-collection": ("milvus235", False, "by-collection"),
    # ListAliases refused: every name described, on a real Milvus 2.3.5 behind the proxy.
    "milvus235-refused": ("milvus235", True, "by-alias"),
    "coordinator-listing-by-alias": ("coordinator", False, "by-alias"),
    "coordinator-listing-by-collection": ("coordinator", False, "by-collection"),
    "coordinator-refused": ("coordinator", True, "by-alias"),
}


@pytest.fixture(params=list(CASES.values()), ids=list(CASES))
def case(request):
    engine_name, refuse, shape = request.param
    engine = request.getfixturevalue(engine_name)
    instance = Case(engine.address, refuse, *SHAPES[shape])
    yield instance
    instance.close()
    drop_database(engine.address, instance.database, instance.aliases)


def engine_aliases(raw: RawClient, database: str, aliases: int) -> dict[str, str]:
    """alias -> target of the manifests' aliases, as the engine answers DescribeAlias."""
    found = {}
    for index in range(aliases):
        response = raw.describe_alias(f"a{index}", db_name=database)
        if response.status.code == 0 and response.status.error_code == 0:
            found[f"a{index}"] = response.collection
    return found


def assert_plan_path(case: Case, calls: collections.Counter[str], applied: bool, what: str) -> None:
    """The observation path of one ``plan`` run, from the calls that reached the engine:
    the listing, or every name described after ListAliases was refused. ``applied``:
    whether the aliases exist in the engine (only then are their targets looked up)."""
    if case.proxy.refuse_list_aliases:
        assert calls["ListAliases"] == 1, (what, calls)  # one database, refused once
        # Every collection and alias name described as a collection, one call each.
        assert calls["DescribeCollection"] >= case.collections + case.aliases, (what, calls)
        return
    assert calls["ShowCollections"] >= 1, (what, calls)
    # The listing settles the collection names without describing them.
    assert calls["DescribeCollection"] == 0, (what, calls)
    if not applied:
        assert (calls["ListAliases"], calls["DescribeAlias"]) == (1, 0), (what, calls)
    elif case.aliases < case.collections:
        # One DescribeAlias per existing alias.
        assert calls["ListAliases"] == 1 and 0 < calls["DescribeAlias"] <= case.aliases, (what, calls)
    else:
        # One ListAliases for the database, then one per collection.
        assert calls["ListAliases"] == 1 + case.collections and calls["DescribeAlias"] == 0, (what, calls)


def test_plan_and_up_observe_more_than_64_names(case):
    # Milvus 2.3.5 takes the database of DescribeAlias and ListAliases from the request's
    # db_name field only (pymilvus 3 sends a dbname header, which it ignores there): the
    # engine is read and changed with raw requests carrying the field.
    raw = RawClient(case.engine_address, timeout=30)
    database = case.database
    last = case.collections - 1
    try:
        # The database exists and is empty: the listing has something to list.
        expect_ok(raw.create_database(database), "CreateDatabase")
        for index in range(case.collections):
            (case.up.manifests / f"c{index}.yaml").write_text(collection_manifest(f"c{index}", database))
        declared = {f"a{i}": target_of(i, case.collections) for i in range(case.aliases)}
        for alias, target in declared.items():
            (case.up.manifests / f"{alias}.yaml").write_text(alias_manifest(alias, database, target))

        # 1. The empty engine: exactly the creations, and the "changes" exit code.
        planned = case.plan()
        assert planned.returncode == 2, planned.stdout + planned.stderr
        rows = planned_actions(planned.stdout)
        expected = {("create collection", database, f"c{i}") for i in range(case.collections)} | {
            ("create alias", database, alias) for alias in declared
        }
        assert {row[:3] for row in rows} == expected, planned.stdout
        assert len(rows) == len(expected), planned.stdout
        for action, _, name, detail in rows:
            if action == "create alias":
                assert detail.startswith(f"-> {declared[name]} "), (name, detail)
        assert_plan_path(case, case.proxy.calls(), False, "plan on the empty engine")

        # 2. up applies everything.
        case.start_up()
        applied = lambda: engine_aliases(raw, database, case.aliases) == declared  # noqa: E731
        wait_for("every alias on its target", applied, case.up, timeout_s=WAIT_S)
        shown = raw.show_collections(db_name=database)
        assert sorted(shown.collection_names) == sorted(f"c{i}" for i in range(case.collections))
        table_row = f"CollectionAlias default/a{case.aliases - 1}"
        wait_for("up's status table", lambda: table_row in case.up.stdout(), case.up, timeout_s=WAIT_S)
        # up's first full pass asked for the listing too.
        assert case.proxy.calls()["ListAliases"] >= 1, case.proxy.calls()
        assert "AlreadyExists" not in case.up.stdout(), case.up.logs()
        assert case.stop_up() == 0, case.up.logs()

        # 3. In sync: every name observed as applied.
        planned = case.plan()
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert planned_actions(planned.stdout) == [], planned.stdout
        assert_plan_path(case, case.proxy.calls(), True, "plan on the applied engine")

        # 4. Drift: an alias moved behind up's back (to another managed collection) is
        # planned as the one AlterAlias back...
        expect_ok(raw.alter_alias(f"c{last}", "a0", db_name=database), "AlterAlias")
        assert engine_aliases(raw, database, case.aliases)["a0"] == f"c{last}"
        planned = case.plan()
        assert planned.returncode == 2, planned.stdout + planned.stderr
        rows = planned_actions(planned.stdout)
        assert [row[:3] for row in rows] == [("alter alias", database, "a0")], planned.stdout
        assert re.match(rf"c{last} -> c0\b", rows[0][3]), rows[0]
        assert_plan_path(case, case.proxy.calls(), True, "plan on the drifted engine")

        # ... and up's next full pass (at its start) moves it back, and says so.
        case.start_up()
        repaired = lambda: engine_aliases(raw, database, case.aliases).get("a0") == "c0"  # noqa: E731
        wait_for("a0 back on c0", repaired, case.up, timeout_s=WAIT_S)
        wait_for(
            "the repair printed",
            lambda: f"drift repaired: alter alias {database} a0 c{last} -> c0 " in case.up.stdout(),
            case.up,
            timeout_s=WAIT_S,
        )
        assert case.stop_up() == 0, case.up.logs()
        planned = case.plan()
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert engine_aliases(raw, database, case.aliases) == declared
    finally:
        raw.close()
