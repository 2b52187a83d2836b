"""Differential test: the same DDL sequences run against real Milvus 2.3.5 (PyPI
``milvus==2.3.5``) and against our coordinator, through the same helper, and are
compared step by step on (code, message, relevant result fields).

Every difference must be listed in ALLOWED_DIFFERENCES with its reason and the
exact outcome expected from each side. An unlisted difference fails, and so does
a listed one that no longer occurs (the table must stay true). If Milvus 2.3.5
cannot be started the tests error out; they never skip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
from pymilvus import MilvusClient
from pymilvus.grpc_gen import common_pb2, milvus_pb2

from ddl import (
    ALIAS_NOT_FOUND,
    BAD_NAMES,
    COLLECTION_NOT_FOUND,
    DATABASE_NOT_FOUND,
    INVALID_PARAMETER,
    UNEXPECTED,
    Msg,
    Outcome,
    RawClient,
    name_message,
    outcome_of,
    raw_outcome,
    simple_schema,
)
from servers import CoordinatorServer

ANY = object()  # in an expected Outcome: any result value


def ok(value: Any = ANY) -> Outcome:
    return Outcome(0, "", value)


def err(code: Any, message: str) -> Outcome:
    return Outcome(code, message)


@dataclass(frozen=True)
class Allowed:
    """One allowed difference: why, and exactly what each side answers."""

    reason: str
    milvus235: Outcome
    ours: Outcome


def matches(expected: Outcome, actual: Outcome) -> bool:
    return (
        expected.code == actual.code
        and expected.message == actual.message
        and (expected.value is ANY or expected.value == actual.value)
    )


# --- the servers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def diff_coordinator():
    """A coordinator of its own, so the comparison starts from an empty server."""
    server = CoordinatorServer()
    try:
        yield server.start()
    finally:
        server.stop()


class Driver:
    """One server seen through pymilvus (per-database MilvusClients) and the raw
    stub. Every step's Outcome is recorded under a unique label."""

    def __init__(self, handle):
        self.handle = handle
        self.raw = RawClient(handle.address)
        self._clients: dict[str, MilvusClient] = {}
        self.steps: list[tuple[str, Outcome]] = []

    def client(self, db: str = "") -> MilvusClient:
        if db not in self._clients:
            self._clients[db] = MilvusClient(self.handle.uri, db_name=db, timeout=10)
        return self._clients[db]

    def _record(self, label: str, outcome: Outcome) -> Outcome:
        assert label not in dict(self.steps), f"duplicate step label {label!r}"
        self.steps.append((label, outcome))
        return outcome

    def step(self, label: str, fn: Callable[[], Any], normalize=lambda v: v) -> Outcome:
        """A pymilvus call; errors become (MilvusException.code, .message)."""
        return self._record(label, outcome_of(fn, normalize))

    def raw_step(self, label: str, fn: Callable[[RawClient], Any], normalize=lambda r: None) -> Outcome:
        """A raw stub call; errors become (status.code, status.reason)."""
        return self._record(label, raw_outcome(lambda: fn(self.raw), normalize))

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self.raw.close()


# --- normalizers: keep the fields that matter, drop IDs and timestamps ------------


def n_describe(d: dict) -> dict:
    return {
        "collection_name": d["collection_name"],
        "aliases": sorted(d["aliases"]),
        "fields": [
            (f["field_id"], f["name"], int(f["type"]), f.get("params", {}), f.get("is_primary", False),
             f.get("auto_id", False))
            for f in d["fields"]
        ],
        "num_partitions": d["num_partitions"],
        "num_shards": d["num_shards"],
        "consistency_level": d["consistency_level"],
        "enable_dynamic_field": d["enable_dynamic_field"],
        "auto_id": d["auto_id"],
        "description": d["description"],
        "properties": d["properties"],
    }


def n_raw_describe(resp) -> dict:
    return {
        "collection_name": resp.collection_name,
        "schema.name": resp.schema.name,
        "aliases": sorted(resp.aliases),
        "db_name": resp.db_name,
        "shards_num": resp.shards_num,
        "num_partitions": resp.num_partitions,
        "consistency_level": resp.consistency_level,
        "fields": [
            (f.fieldID, f.name, f.data_type, {kv.key: kv.value for kv in f.type_params}, f.is_primary_key)
            for f in resp.schema.fields
        ],
    }


def n_list_aliases(d: dict) -> dict:
    return {**d, "aliases": sorted(d["aliases"])}


def n_raw_describe_alias(resp) -> tuple:
    return (resp.db_name, resp.alias, resp.collection)


def n_raw_list_aliases(resp) -> tuple:
    return (resp.db_name, resp.collection_name, sorted(resp.aliases))


def n_sorted(values) -> list:
    return sorted(values)


def n_with_prefix(prefix: str):
    return lambda names: sorted(n for n in names if n.startswith(prefix))


def n_index(d: dict) -> dict:
    keep = ("field_name", "index_name", "index_type", "metric_type")
    return {k: d.get(k) for k in keep}


# --- scenarios -----------------------------------------------------------------
# Names are fixed per scenario so both servers see identical requests and messages.


def create(d: Driver, name: str, db: str = "") -> None:
    d.step(f"create collection {name}" + (f" in {db}" if db else ""),
           lambda: d.client(db).create_collection(name, schema=simple_schema()))


def scenario_alias_lifecycle(d: Driver) -> None:
    a, b, z = "dxl_A", "dxl_B", "dxl_Z"
    create(d, a)
    create(d, b)
    c = d.client()
    d.step("create alias Z->A", lambda: c.create_alias(a, z))
    d.step("describe_collection Z", lambda: c.describe_collection(z), n_describe)
    d.step("describe_alias Z", lambda: c.describe_alias(z))
    d.step("list_aliases A", lambda: c.list_aliases(a), n_list_aliases)
    d.step("alter alias Z->B", lambda: c.alter_alias(b, z))
    d.step("describe_collection Z after alter", lambda: c.describe_collection(z), n_describe)
    d.step("describe_collection A after alter", lambda: c.describe_collection(a), n_describe)
    d.step("list_aliases A after alter", lambda: c.list_aliases(a), n_list_aliases)
    d.step("list_aliases B after alter", lambda: c.list_aliases(b), n_list_aliases)
    d.step("drop_collection via alias Z", lambda: c.drop_collection(z))
    d.step("drop_collection B while Z->B", lambda: c.drop_collection(b))
    # re-synchronise: on 2.3.5 B and Z are already gone; both drops are idempotent
    d.step("drop_alias Z", lambda: c.drop_alias(z))
    d.step("drop_collection B", lambda: c.drop_collection(b))
    d.step("describe_alias Z after drops", lambda: c.describe_alias(z))
    d.step("has_collection B after drops", lambda: c.has_collection(b))
    d.step("has_collection A at end", lambda: c.has_collection(a))
    d.step("drop_collection A", lambda: c.drop_collection(a))


def scenario_alias_matrix(d: Driver) -> None:
    a, b, z, w, y, x = "dxm_A", "dxm_B", "dxm_Z", "dxm_W", "dxm_Y", "dxm_X"
    c = d.client()
    create(d, a)
    create(d, b)
    d.step("row01 create Z->A", lambda: c.create_alias(a, z))
    d.step("row01 create Z->A again", lambda: c.create_alias(a, z))
    d.step("row02 create Z->B", lambda: c.create_alias(b, z))
    d.step("row03 alias named like collection A", lambda: c.create_alias(b, a))
    d.step("row04 alias to missing X", lambda: c.create_alias(x, y))
    d.step("row05 alias to alias Z", lambda: c.create_alias(z, w))
    d.step("row07 alter Z to missing X", lambda: c.alter_alias(x, z))
    d.step("row08 alter missing Y", lambda: c.alter_alias(a, y))
    d.step("row09 alter A->A", lambda: c.alter_alias(a, a))
    d.step("row10 create W->B", lambda: c.create_alias(b, w))
    d.step("row10 alter Z to alias W", lambda: c.alter_alias(w, z))
    d.step("row11 alter Z->A (current)", lambda: c.alter_alias(a, z))
    d.step("row15 describe_alias Z", lambda: c.describe_alias(z))
    d.raw_step("row15 raw describe_alias Z db field", lambda r: r.describe_alias(z, db_name="default"),
               n_raw_describe_alias)
    d.raw_step("row15 raw describe_alias Z no db", lambda r: r.describe_alias(z), n_raw_describe_alias)
    d.step("row16 describe missing Y", lambda: c.describe_alias(y))
    d.raw_step("row16 raw describe missing Y", lambda r: r.describe_alias(y), n_raw_describe_alias)
    d.step("row18 list_aliases A", lambda: c.list_aliases(a), n_list_aliases)
    d.raw_step("row18 raw list_aliases A", lambda r: r.list_aliases(a), n_raw_list_aliases)
    d.raw_step("row18 raw list_aliases A db field", lambda r: r.list_aliases(a, db_name="default"),
               n_raw_list_aliases)
    d.step("row19 list_aliases missing X", lambda: c.list_aliases(x))
    d.step("row20 list_aliases by alias Z", lambda: c.list_aliases(z))
    d.step("row21 drop_collection via alias Z", lambda: c.drop_collection(z))
    d.step("row24 has_collection via Z", lambda: c.has_collection(z))
    d.step("row24 create_partition via Z", lambda: c.create_partition(z, "p1"))
    d.step("row24 has_partition via A", lambda: c.has_partition(a, "p1"))
    d.step("row24 list_partitions via Z", lambda: c.list_partitions(z), n_sorted)
    d.step("row24 drop_partition via Z", lambda: c.drop_partition(z, "p1"))
    d.step("row24 list_partitions A", lambda: c.list_partitions(a), n_sorted)
    d.step("row12 drop alias Z", lambda: c.drop_alias(z))
    d.step("row12 describe dropped Z", lambda: c.describe_alias(z))
    d.step("row13 drop missing alias Z", lambda: c.drop_alias(z))
    d.step("row14 drop alias invalid name", lambda: c.drop_alias("1bad"))
    d.step("drop alias W", lambda: c.drop_alias(w))
    d.step("row23 drop A", lambda: c.drop_collection(a))
    d.step("row23 drop B", lambda: c.drop_collection(b))
    d.step("row23 drop missing A", lambda: c.drop_collection(a))


def scenario_create_collection_named_like_alias(d: Driver) -> None:
    a, z = "dxc_A", "dxc_Z"
    c = d.client()
    create(d, a)
    d.step("create alias Z->A", lambda: c.create_alias(a, z))
    d.step("row06 create collection Z", lambda: c.create_collection(z, schema=simple_schema()))
    d.step("describe Z", lambda: c.describe_collection(z), n_describe)
    d.step("drop alias Z", lambda: c.drop_alias(z))
    d.step("drop A", lambda: c.drop_collection(a))


def scenario_describe_via_alias_raw(d: Driver) -> None:
    b, z1, z2 = "dxr_B", "dxr_Z1", "dxr_Z2"
    c = d.client()
    create(d, b)
    d.step("create Z1->B", lambda: c.create_alias(b, z1))
    d.step("create Z2->B", lambda: c.create_alias(b, z2))
    d.raw_step("raw describe by Z1", lambda r: r.describe_collection(z1), n_raw_describe)
    d.raw_step("raw describe by B", lambda r: r.describe_collection(b), n_raw_describe)
    d.raw_step("raw has by Z2", lambda r: r.has_collection(z2), lambda resp: resp.value)
    d.step("describe_collection Z2", lambda: c.describe_collection(z2), n_describe)
    d.raw_step("raw describe missing", lambda r: r.describe_collection("dxr_missing"), n_raw_describe)
    for alias in (z1, z2):
        d.step(f"drop alias {alias}", lambda alias=alias: c.drop_alias(alias))
    d.step("drop B", lambda: c.drop_collection(b))


def name_tag(name: str) -> str:
    return name if len(name) < 20 else f"<{len(name)} bytes>"


def scenario_name_validation(d: Driver) -> None:
    a = "dxn_A"
    c = d.client()
    create(d, a)
    for bad, _rule in BAD_NAMES:
        tag = name_tag(bad)
        d.step(f"create_alias alias={tag}", lambda bad=bad: c.create_alias(a, bad))
        d.step(f"alter_alias alias={tag}", lambda bad=bad: c.alter_alias(a, bad))
        d.step(f"create_alias target={tag}", lambda bad=bad: c.create_alias(bad, "dxn_Z"))
        d.step(f"create_collection {tag}", lambda bad=bad: c.create_collection(bad, schema=simple_schema()))
        d.step(f"describe_collection {tag}", lambda bad=bad: c.describe_collection(bad), n_describe)
        d.step(f"has_collection {tag}", lambda bad=bad: c.has_collection(bad))
        d.raw_step(f"raw HasCollection {tag}", lambda r, bad=bad: r.has_collection(bad),
                   lambda resp: resp.value)
        d.step(f"drop_collection {tag}", lambda bad=bad: c.drop_collection(bad))
        d.step(f"describe_alias {tag}", lambda bad=bad: c.describe_alias(bad))
        d.step(f"list_aliases {tag}", lambda bad=bad: c.list_aliases(bad))
        d.step(f"create_database {tag}", lambda bad=bad: c.create_database(bad))
        d.step(f"drop_database {tag}", lambda bad=bad: c.drop_database(bad))
        d.step(f"create_partition {tag}", lambda bad=bad: c.create_partition(a, bad))
    alias255 = "dxn_" + "z" * 251
    coll255 = "dxn_" + "c" * 251
    db255 = "dxn_" + "d" * 251
    d.step("create_alias 255 bytes", lambda: c.create_alias(a, alias255))
    d.step("describe_alias 255 bytes", lambda: c.describe_alias(alias255))
    d.step("drop_alias 255 bytes", lambda: c.drop_alias(alias255))
    d.step("create_collection 255 bytes", lambda: c.create_collection(coll255, schema=simple_schema()))
    d.step("drop_collection 255 bytes", lambda: c.drop_collection(coll255))
    d.step("create_database 255 bytes", lambda: c.create_database(db255))
    d.step("drop_database 255 bytes", lambda: c.drop_database(db255))
    d.raw_step("raw create_alias empty alias", lambda r: r.create_alias(a, ""))
    d.raw_step("raw create_alias empty target", lambda r: r.create_alias("", "dxn_Z"))
    d.raw_step("raw alter_alias empty alias", lambda r: r.alter_alias(a, ""))
    d.raw_step("raw drop_alias empty", lambda r: r.drop_alias(""))
    d.raw_step("raw describe_alias empty", lambda r: r.describe_alias(""), n_raw_describe_alias)
    d.raw_step("raw list_aliases empty collection", lambda r: r.list_aliases(""), n_raw_list_aliases)
    d.raw_step("raw create_collection empty", lambda r: r.create_collection(""))
    d.raw_step("raw drop_collection empty", lambda r: r.drop_collection(""))
    d.raw_step("raw describe_collection empty", lambda r: r.describe_collection(""))
    d.raw_step("raw has_collection empty", lambda r: r.has_collection(""))
    d.raw_step("raw create_database empty", lambda r: r.create_database(""))
    d.raw_step("raw drop_database empty", lambda r: r.drop_database(""))
    d.raw_step("raw create_partition empty", lambda r: r.create_partition(a, ""))
    d.raw_step("raw drop_partition empty", lambda r: r.drop_partition(a, ""))
    d.raw_step("raw has_partition empty", lambda r: r.has_partition(a, ""))
    d.raw_step("raw schema name mismatch", lambda r: r.create_collection("dxn_C", schema_name="other_name"))
    d.raw_step(
        "raw empty schema bytes",
        lambda r: r.call("CreateCollection", milvus_pb2.CreateCollectionRequest(collection_name="dxn_C")),
    )
    d.step("list_partitions A", lambda: c.list_partitions(a), n_sorted)
    d.step("drop A", lambda: c.drop_collection(a))


def scenario_database_scoping(d: Driver) -> None:
    db1, db2, q = "dxd_db1", "dxd_db2", "dxd_Q"
    c0 = d.client()
    d.step("create db1", lambda: c0.create_database(db1))
    d.step("create db2", lambda: c0.create_database(db2))
    c1, c2 = d.client(db1), d.client(db2)
    create(d, "A1", db1)
    create(d, "A2", db2)
    d.step("db1 create Q->A1", lambda: c1.create_alias("A1", q))
    d.step("db2 create Q->A2", lambda: c2.create_alias("A2", q))
    d.step("db1 describe_collection Q", lambda: c1.describe_collection(q), n_describe)
    d.step("db2 describe_collection Q", lambda: c2.describe_collection(q), n_describe)
    d.step("default has_collection Q", lambda: c0.has_collection(q))
    d.step("db1 describe_alias Q (header)", lambda: c1.describe_alias(q))
    d.step("db2 describe_alias Q (header)", lambda: c2.describe_alias(q))
    d.step("db1 list_aliases (header)", lambda: c1.list_aliases(), n_list_aliases)
    d.step("db1 list_aliases A1 (header)", lambda: c1.list_aliases("A1"), n_list_aliases)
    d.raw_step("db1 raw describe_alias Q (field)", lambda r: r.describe_alias(q, db_name=db1), n_raw_describe_alias)
    d.raw_step("db2 raw describe_alias Q (field)", lambda r: r.describe_alias(q, db_name=db2), n_raw_describe_alias)
    d.raw_step("db2 raw list_aliases (field)", lambda r: r.list_aliases("", db_name=db2), n_raw_list_aliases)
    d.raw_step("db2 raw list_aliases A2 (field)", lambda r: r.list_aliases("A2", db_name=db2), n_raw_list_aliases)
    d.step("db1 list_collections", lambda: c1.list_collections(), n_sorted)
    d.step("default list_collections has none of them",
           lambda: c0.list_collections(), lambda names: sorted({"A1", "A2"} & set(names)))
    d.step("db2 alias to collection of db1", lambda: c2.create_alias("A1", "dxd_R"))
    create(d, "B1", db1)
    d.step("db1 alter Q->B1", lambda: c1.alter_alias("B1", q))
    d.step("db2 describe_collection Q unchanged", lambda: c2.describe_collection(q), n_describe)
    d.step("drop db1 while not empty", lambda: c0.drop_database(db1))
    d.step("db2 drop alias Q", lambda: c2.drop_alias(q))
    d.step("db1 describe_collection Q still", lambda: c1.describe_collection(q), n_describe)
    d.step("db1 drop alias Q", lambda: c1.drop_alias(q))
    for db, names in ((db1, ["A1", "B1"]), (db2, ["A2"])):
        for name in names:
            d.step(f"{db} drop {name}", lambda db=db, name=name: d.client(db).drop_collection(name))
        d.step(f"drop {db}", lambda db=db: c0.drop_database(db))
    d.step("list_databases", lambda: c0.list_databases(), n_with_prefix("dxd_"))


def scenario_unknown_database(d: Driver) -> None:
    db = "dxu_nosuch"
    cx = d.client(db)
    d.step("list_collections", lambda: cx.list_collections())
    d.step("create_alias", lambda: cx.create_alias("A", "Q"))
    d.step("alter_alias", lambda: cx.alter_alias("A", "Q"))
    d.step("drop_alias", lambda: cx.drop_alias("Q"))
    d.step("describe_collection", lambda: cx.describe_collection("A"), n_describe)
    d.step("has_collection", lambda: cx.has_collection("A"))
    d.step("create_collection", lambda: cx.create_collection("A", schema=simple_schema()))
    d.step("drop_collection", lambda: cx.drop_collection("A"))
    d.step("create_partition", lambda: cx.create_partition("A", "p"))
    d.step("list_partitions", lambda: cx.list_partitions("A"))
    d.raw_step("raw describe_alias (field)", lambda r: r.describe_alias("Q", db_name=db), n_raw_describe_alias)
    d.raw_step("raw list_aliases (field)", lambda r: r.list_aliases("", db_name=db), n_raw_list_aliases)
    d.raw_step("raw create_alias (field)", lambda r: r.create_alias("A", "Q", db_name=db))
    d.raw_step("raw show_collections (field)", lambda r: r.show_collections(db_name=db))


def scenario_database_ddl(d: Driver) -> None:
    db = "dxb_db"
    c = d.client()
    d.step("create db", lambda: c.create_database(db))
    d.step("list_databases", lambda: c.list_databases(), n_with_prefix("dxb_"))
    d.step("default listed", lambda: "default" in c.list_databases())
    d.step("create db again", lambda: c.create_database(db))
    d.step("create default", lambda: c.create_database("default"))
    d.step("drop default", lambda: c.drop_database("default"))
    d.step("drop missing db", lambda: c.drop_database("dxb_missing"))
    d.raw_step("raw describe_database", lambda r: r.describe_database(db), lambda resp: resp.db_name)
    d.raw_step("raw list_databases", lambda r: r.list_databases(),
               lambda resp: (n_with_prefix("dxb_")(resp.db_names), len(resp.created_timestamp) == len(resp.db_names)))
    d.step("drop db", lambda: c.drop_database(db))
    d.step("list_databases after drop", lambda: c.list_databases(), n_with_prefix("dxb_"))


def scenario_partitions(d: Driver) -> None:
    a = "dxp_A"
    c = d.client()
    create(d, a)
    d.step("list_partitions", lambda: c.list_partitions(a), n_sorted)
    d.step("has _default", lambda: c.has_partition(a, "_default"))
    d.step("create p1", lambda: c.create_partition(a, "p1"))
    d.step("create p1 again", lambda: c.create_partition(a, "p1"))
    d.step("create _default", lambda: c.create_partition(a, "_default"))
    d.step("has p1", lambda: c.has_partition(a, "p1"))
    d.step("has missing", lambda: c.has_partition(a, "nope"))
    d.step("describe num_partitions", lambda: c.describe_collection(a)["num_partitions"])
    d.raw_step("raw show_partitions", lambda r: r.show_partitions(a),
               lambda resp: (sorted(resp.partition_names), len(set(resp.partitionIDs)),
                             len(resp.created_timestamps)))
    d.step("drop _default", lambda: c.drop_partition(a, "_default"))
    d.step("drop missing", lambda: c.drop_partition(a, "nope"))
    d.step("drop p1", lambda: c.drop_partition(a, "p1"))
    d.step("list after drop", lambda: c.list_partitions(a), n_sorted)
    d.step("create on missing collection", lambda: c.create_partition("dxp_X", "p"))
    d.step("drop on missing collection", lambda: c.drop_partition("dxp_X", "p"))
    d.step("has on missing collection", lambda: c.has_partition("dxp_X", "p"))
    d.step("list on missing collection", lambda: c.list_partitions("dxp_X"))
    d.step("drop A", lambda: c.drop_collection(a))


def scenario_collections(d: Driver) -> None:
    a, b = "dxk_A", "dxk_B"
    c = d.client()
    create(d, a)
    d.step("create A again (same schema)", lambda: c.create_collection(a, schema=simple_schema()))
    d.step("create A with other schema", lambda: c.create_collection(a, schema=simple_schema(dim=16)))
    create(d, b)
    d.step("describe A", lambda: c.describe_collection(a), n_describe)
    d.raw_step("raw describe A", lambda r: r.describe_collection(a), n_raw_describe)
    d.step("has A", lambda: c.has_collection(a))
    d.step("has missing", lambda: c.has_collection("dxk_X"))
    d.raw_step("raw has missing", lambda r: r.has_collection("dxk_X"), lambda resp: resp.value)
    d.step("describe missing", lambda: c.describe_collection("dxk_X"), n_describe)
    d.step("list_collections", lambda: c.list_collections(), n_with_prefix("dxk_"))
    d.raw_step("raw show_collections", lambda r: r.show_collections(),
               lambda resp: (n_with_prefix("dxk_")(resp.collection_names),
                             len(resp.collection_ids) == len(resp.collection_names)))
    d.step("drop A", lambda: c.drop_collection(a))
    d.step("drop A again", lambda: c.drop_collection(a))
    d.step("list after drop", lambda: c.list_collections(), n_with_prefix("dxk_"))
    d.step("drop B", lambda: c.drop_collection(b))


def scenario_quick_setup(d: Driver) -> None:
    q = "dxq_quick"
    c = d.client()
    d.step("create_collection dimension=8", lambda: c.create_collection(q, dimension=8))
    d.step("describe", lambda: c.describe_collection(q), n_describe)
    d.step("has", lambda: c.has_collection(q))
    d.step("list_indexes", lambda: c.list_indexes(q))
    d.step("describe_index", lambda: c.describe_index(q, "vector"), n_index)
    d.step("drop", lambda: c.drop_collection(q))


def scenario_connection(d: Driver) -> None:
    d.raw_step("Connect", lambda r: r.call("Connect", milvus_pb2.ConnectRequest()),
               lambda resp: resp.identifier != 0)
    d.raw_step("GetVersion", lambda r: r.call("GetVersion", milvus_pb2.GetVersionRequest()),
               lambda resp: resp.version != "")
    d.raw_step("CheckHealth", lambda r: r.call("CheckHealth", milvus_pb2.CheckHealthRequest()),
               lambda resp: (resp.isHealthy, list(resp.reasons)))
    d.raw_step("GetComponentStates",
               lambda r: r.call("GetComponentStates", milvus_pb2.GetComponentStatesRequest()),
               lambda resp: (resp.state.role, common_pb2.StateCode.Name(resp.state.state_code)))


SCENARIOS = {
    "alias_lifecycle": scenario_alias_lifecycle,
    "alias_matrix": scenario_alias_matrix,
    "create_collection_named_like_alias": scenario_create_collection_named_like_alias,
    "describe_via_alias_raw": scenario_describe_via_alias_raw,
    "name_validation": scenario_name_validation,
    "database_scoping": scenario_database_scoping,
    "unknown_database": scenario_unknown_database,
    "database_ddl": scenario_database_ddl,
    "partitions": scenario_partitions,
    "collections": scenario_collections,
    "quick_setup": scenario_quick_setup,
    "connection": scenario_connection,
}

# --- allowed differences ---------------------------------------------------------
# (scenario, step label) -> Allowed(reason, what Milvus 2.3.5 answers, what we answer).
# Each entry is a behaviour that changed in Milvus after 2.3.5 (we follow 2.5.5+, per
# milvus-compat.md §5 item 4) or a 2.3.5 bug we deliberately do not copy.

DB_HEADER_BUG = (
    "2.3.5's internal/proxy/database_interceptor.go fillDatabase copies the dbname header into "
    "most requests but not DescribeAliasRequest/ListAliasesRequest, so these are served from "
    "'default'; we honour the header for every RPC, a deliberate superset "
    "(milvus-compat.md §2.5, §5 item 2)"
)
NEWER_DESCRIBE_ALIAS_VALIDATION = (
    "Milvus >= 2.4 internal/proxy/task_alias.go DescribeAliasTask.PreExecute validates the alias "
    "(ValidateCollectionAlias); 2.3.5's PreExecute only sets the message type"
)
NEWER_LIST_ALIASES_VALIDATION = (
    "Milvus >= 2.4 internal/proxy/task_alias.go ListAliasesTask.PreExecute validates a non-empty "
    "collection name; 2.3.5 skips validation and answers collection-not-found"
)
NEWER_PARTITION_DASH = (
    "Milvus 2.5 internal/proxy/util.go validatePartitionTag accepts '-' in partition names "
    "(strict check: `c != '-'`); 2.3.5 rejects it"
)
NEWER_DB_NOT_FOUND = (
    "Milvus >= 2.4 internal/rootcoord/meta_table.go getDatabaseByNameInternal answers merr 800 "
    "(WrapErrDatabaseNotFound) for an unknown database; 2.3.5 used a plain error "
    "'database:<db> not found' (65535)"
)
NEWER_DB_CHECKED_FIRST = (
    "Milvus 2.5 internal/rootcoord/meta_table.go getCollectionByNameInternal looks the database "
    "up (getDatabaseByNameInternal) before the collection, so create/drop/has/show partitions and "
    "DescribeCollection on a collection of an unknown database answer 800; 2.3.5 looked the name "
    "up first and answered 100. (DropCollection is not among them: dropCollectionTask.Execute "
    "ignores ErrDatabaseNotFound like ErrCollectionNotFound, PR #38078, so both answer success.)"
)
NEWER_DESCRIBE_NOT_FOUND_TEXT = (
    "Milvus >= 2.4 internal/proxy/task.go describeCollectionTask.Execute rewrites the reason of "
    "a collection-not-found to \"can't find collection[database=D][collection=N]\"; 2.3.5 put "
    "\"can't find collection \" before rootcoord's text"
)


def _allowed_differences() -> dict[tuple[str, str], Allowed]:
    table = {
        ("alias_lifecycle", "drop_collection B while Z->B"): Allowed(
            "Milvus >= 2.5.5 (PRs #40143/#40147/#40148) internal/rootcoord/drop_collection_task.go "
            "dropCollectionTask (Prepare: "
            "ListAliasesByID, 'unable to drop the collection ... associated aliases') refuses a "
            "collection that has aliases; 2.3.5 drops it and the alias vanishes",
            milvus235=ok(),
            ours=err(UNEXPECTED, Msg.drop_with_aliases("dxl_B", ["dxl_Z"])),
        ),
        ("create_collection_named_like_alias", "row06 create collection Z"): Allowed(
            "Milvus >= 2.5.5 internal/rootcoord/create_collection_task.go createCollectionTask."
            "validateIfCollectionExists refuses a name used by an alias (meta.DescribeAlias); 2.3.5 "
            "resolves Z to A and fails the same-parameters check",
            milvus235=err(UNEXPECTED, Msg.duplicate_collection_different_params("dxc_Z")),
            ours=err(UNEXPECTED, Msg.create_collection_alias_conflict("dxc_Z")),
        ),
        ("database_scoping", "db1 describe_alias Q (header)"): Allowed(
            DB_HEADER_BUG,
            milvus235=err(ALIAS_NOT_FOUND, Msg.alias_not_found("default", "dxd_Q")),
            ours=ok({"alias": "dxd_Q", "collection_name": "A1"}),
        ),
        ("database_scoping", "db2 describe_alias Q (header)"): Allowed(
            DB_HEADER_BUG,
            milvus235=err(ALIAS_NOT_FOUND, Msg.alias_not_found("default", "dxd_Q")),
            ours=ok({"alias": "dxd_Q", "collection_name": "A2"}),
        ),
        ("database_scoping", "db1 list_aliases (header)"): Allowed(
            DB_HEADER_BUG + " (2.3.5 lists default's aliases: none)",
            milvus235=ok({"aliases": []}),
            ours=ok({"aliases": ["dxd_Q"]}),
        ),
        ("database_scoping", "db1 list_aliases A1 (header)"): Allowed(
            DB_HEADER_BUG + " (2.3.5 looks A1 up in default)",
            milvus235=err(COLLECTION_NOT_FOUND, Msg.collection_not_found("A1")),
            ours=ok({"aliases": ["dxd_Q"]}),
        ),
        ("database_ddl", "raw describe_database"): Allowed(
            "DescribeDatabase was added in Milvus 2.4 (internal/proxy/impl.go Proxy.DescribeDatabase); "
            "2.3.5 has no such RPC",
            milvus235=err("grpc:UNIMPLEMENTED",
                          "unknown method DescribeDatabase for service milvus.proto.milvus.MilvusService"),
            ours=ok("dxb_db"),
        ),
        ("name_validation", "raw describe_alias empty"): Allowed(
            NEWER_DESCRIBE_ALIAS_VALIDATION,
            milvus235=err(1101, "no input alias: missing parameter[missing_param=alias]"),
            ours=err(INVALID_PARAMETER, Msg.name_empty("alias")),
        ),
        ("unknown_database", "drop_alias"): Allowed(
            NEWER_DB_NOT_FOUND,
            milvus235=err(UNEXPECTED, "database:dxu_nosuch not found"),
            ours=err(DATABASE_NOT_FOUND, Msg.database_not_found("dxu_nosuch")),
        ),
        ("unknown_database", "create_collection"): Allowed(
            NEWER_DB_NOT_FOUND,
            milvus235=err(UNEXPECTED, "database:dxu_nosuch not found"),
            ours=err(DATABASE_NOT_FOUND, Msg.database_not_found("dxu_nosuch")),
        ),
        ("unknown_database", "create_partition"): Allowed(
            NEWER_DB_CHECKED_FIRST,
            milvus235=err(COLLECTION_NOT_FOUND, Msg.collection_not_found_db("dxu_nosuch", "A")),
            ours=err(DATABASE_NOT_FOUND, Msg.database_not_found("dxu_nosuch")),
        ),
        ("unknown_database", "list_partitions"): Allowed(
            NEWER_DB_CHECKED_FIRST,
            milvus235=err(COLLECTION_NOT_FOUND, Msg.collection_not_found_db("dxu_nosuch", "A")),
            ours=err(DATABASE_NOT_FOUND, Msg.database_not_found("dxu_nosuch")),
        ),
        ("unknown_database", "describe_collection"): Allowed(
            NEWER_DB_CHECKED_FIRST,
            milvus235=err(COLLECTION_NOT_FOUND, Msg.describe_collection_not_found_235("dxu_nosuch", "A")),
            ours=err(DATABASE_NOT_FOUND, Msg.database_not_found("dxu_nosuch")),
        ),
        ("unknown_database", "has_collection"): Allowed(
            NEWER_DB_CHECKED_FIRST + "; pymilvus has_collection (DescribeCollection) then raises the 800",
            milvus235=ok(False),
            ours=err(DATABASE_NOT_FOUND, Msg.database_not_found("dxu_nosuch")),
        ),
        ("describe_via_alias_raw", "raw describe missing"): Allowed(
            NEWER_DESCRIBE_NOT_FOUND_TEXT,
            milvus235=err(COLLECTION_NOT_FOUND, Msg.describe_collection_not_found_235("default", "dxr_missing")),
            ours=err(COLLECTION_NOT_FOUND, Msg.describe_collection_not_found("default", "dxr_missing")),
        ),
        ("collections", "describe missing"): Allowed(
            NEWER_DESCRIBE_NOT_FOUND_TEXT,
            milvus235=err(COLLECTION_NOT_FOUND, Msg.describe_collection_not_found_235("default", "dxk_X")),
            ours=err(COLLECTION_NOT_FOUND, Msg.describe_collection_not_found("default", "dxk_X")),
        ),
    }
    for bad, rule in BAD_NAMES:
        tag = name_tag(bad)
        table[("name_validation", f"describe_alias {tag}")] = Allowed(
            NEWER_DESCRIBE_ALIAS_VALIDATION,
            milvus235=err(ALIAS_NOT_FOUND, Msg.alias_not_found("default", bad)),
            ours=err(INVALID_PARAMETER, name_message("alias", bad, rule)),
        )
        table[("name_validation", f"list_aliases {tag}")] = Allowed(
            NEWER_LIST_ALIASES_VALIDATION,
            milvus235=err(COLLECTION_NOT_FOUND, Msg.collection_not_found(bad)),
            ours=err(INVALID_PARAMETER, name_message("name", bad, rule)),
        )
    for bad in ("12-s", "a-b"):
        table[("name_validation", f"create_partition {bad}")] = Allowed(
            NEWER_PARTITION_DASH,
            milvus235=err(UNEXPECTED, f"Invalid partition name: {bad}. Partition name can only "
                                      "contain numbers, letters and underscores."),
            ours=ok(None),
        )
    table[("name_validation", "list_partitions A")] = Allowed(
        NEWER_PARTITION_DASH + " (so 12-s and a-b exist on our side)",
        milvus235=ok(["1bad", "_default"]),
        ours=ok(["12-s", "1bad", "_default", "a-b"]),
    )
    return table


ALLOWED_DIFFERENCES = _allowed_differences()


def _fmt(outcome: Outcome) -> str:
    return str(outcome)


def _field_diff(m: Outcome, o: Outcome) -> str:
    """For two successful dict results, name the fields that differ."""
    if not (m.ok and o.ok and isinstance(m.value, dict) and isinstance(o.value, dict)):
        return ""
    keys = sorted(set(m.value) | set(o.value))
    diffs = [f"{k}: {m.value.get(k, '<absent>')!r} vs {o.value.get(k, '<absent>')!r}"
             for k in keys if m.value.get(k, "<absent>") != o.value.get(k, "<absent>")]
    return "\n       differing fields (2.3.5 vs ours): " + "; ".join(diffs) if diffs else ""


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_differential(scenario, milvus235, diff_coordinator):
    results = {}
    for side, handle in (("milvus235", milvus235), ("ours", diff_coordinator)):
        driver = Driver(handle)
        try:
            SCENARIOS[scenario](driver)
        finally:
            driver.close()
        results[side] = driver.steps

    theirs, ours = results["milvus235"], results["ours"]
    assert [label for label, _ in theirs] == [label for label, _ in ours], "scenarios diverged in shape"

    problems = []
    report = []
    equal = 0
    for (label, m), (_, o) in zip(theirs, ours):
        allowed = ALLOWED_DIFFERENCES.get((scenario, label))
        same = m == o
        if same and allowed is None:
            equal += 1
            continue
        if allowed is None:
            problems.append(label)
            report.append(f"  !! {label}\n       milvus 2.3.5: {_fmt(m)}\n       ours:         {_fmt(o)}"
                          + _field_diff(m, o))
            continue
        if same:
            problems.append(label)
            report.append(f"  !! {label}: listed as allowed difference but both answer {_fmt(m)}")
            continue
        if not (matches(allowed.milvus235, m) and matches(allowed.ours, o)):
            problems.append(label)
            report.append(
                f"  !! {label}: allowed difference, but not the recorded one\n"
                f"       milvus 2.3.5: {_fmt(m)}\n       (recorded)    {_fmt(allowed.milvus235)}\n"
                f"       ours:         {_fmt(o)}\n       (recorded)    {_fmt(allowed.ours)}"
            )
            continue
        report.append(f"  ~  {label}: allowed ({allowed.reason})")

    labels = {label for label, _ in theirs}
    for (scen, label) in ALLOWED_DIFFERENCES:
        if scen == scenario and label not in labels:
            problems.append(label)
            report.append(f"  !! allowed difference for unknown step {label!r}")

    report.append(f"  ({equal} of {len(theirs)} steps answered identically)")
    assert not problems, f"{len(problems)} unexpected difference(s) in {scenario}:\n" + "\n".join(report)


def test_allowed_differences_name_real_scenarios():
    unknown = sorted({scen for scen, _ in ALLOWED_DIFFERENCES} - set(SCENARIOS))
    assert not unknown, f"ALLOWED_DIFFERENCES names unknown scenarios: {unknown}"
    for key, allowed in ALLOWED_DIFFERENCES.items():
        assert allowed.reason.strip(), f"{key} has no reason"
        assert ".go" in allowed.reason or "PRs #" in allowed.reason, f"{key}: the reason names no Milvus source"
        assert allowed.milvus235 != allowed.ours, f"{key} records no difference"
