"""Collection DDL through pymilvus (milvus-compat.md §2.7, §3.2): quick-setup
create_collection(name, dimension=8) (needs the CreateIndex / DescribeIndex /
LoadCollection / GetLoadingProgress stubs), create with a schema, idempotency,
has/list/describe/drop, and the raw response fields pymilvus does not show.
"""

import pytest

from ddl import (
    COLLECTION_NOT_FOUND,
    INVALID_PARAMETER,
    LEGACY_UNEXPECTED,
    UNEXPECTED,
    Msg,
    create_simple_collection,
    expect_error,
    expect_status,
    expect_success,
    simple_schema,
)
from pymilvus import DataType


def test_quick_setup_create_collection(client, ns):
    name = ns.name("quick")
    client.create_collection(name, dimension=8)
    assert client.has_collection(name) is True
    desc = client.describe_collection(name)
    assert desc["collection_name"] == name
    fields = {f["name"]: f for f in desc["fields"]}
    assert set(fields) == {"id", "vector"}
    assert fields["id"]["type"] == DataType.INT64 and fields["id"]["is_primary"] is True
    assert fields["vector"]["type"] == DataType.FLOAT_VECTOR
    assert fields["vector"]["params"] == {"dim": 8}
    assert desc["enable_dynamic_field"] is True
    assert desc["aliases"] == []
    assert name in client.list_collections()


def test_create_with_schema_and_describe(client, ns):
    name = ns.name("C")
    create_simple_collection(client, name)
    desc = client.describe_collection(name)
    assert desc["collection_name"] == name
    assert [(f["field_id"], f["name"]) for f in desc["fields"]] == [(100, "id"), (101, "vector")]
    assert desc["fields"][1]["params"] == {"dim": 8}
    assert desc["num_partitions"] == 1, "num_partitions counts the partitions, _default included"
    assert desc["num_shards"] == 1
    assert desc["enable_dynamic_field"] is False
    assert desc["collection_id"] != 0


def test_create_same_collection_twice_is_idempotent(client, ns):
    name = ns.name("C")
    create_simple_collection(client, name)
    first_id = client.describe_collection(name)["collection_id"]
    create_simple_collection(client, name)
    assert client.describe_collection(name)["collection_id"] == first_id


def test_create_same_name_different_schema(client, ns):
    name = ns.name("C")
    create_simple_collection(client, name)
    other = simple_schema(dim=16)
    expect_error(
        lambda: client.create_collection(name, schema=other),
        UNEXPECTED,
        Msg.duplicate_collection_different_params(name),
    )


def test_has_list_drop(client, ns):
    a, b = ns.name("A"), ns.name("B")
    assert client.has_collection(a) is False
    create_simple_collection(client, a)
    create_simple_collection(client, b)
    listed = client.list_collections()
    assert a in listed and b in listed
    client.drop_collection(a)
    assert client.has_collection(a) is False
    assert a not in client.list_collections()
    assert b in client.list_collections()


def test_drop_missing_collection_succeeds(client, ns):
    client.drop_collection(ns.name("never_created"))


@pytest.mark.since_2_5_5(reason="2.3.5's reason is \"can't find collection collection not found[...]\"")
def test_describe_missing_collection(client, raw, ns):
    name = ns.name("X")
    exc = expect_error(
        lambda: client.describe_collection(name),
        COLLECTION_NOT_FOUND,
        Msg.describe_collection_not_found("default", name),
    )
    # Legacy UnexpectedError and rootcoord's detail, as the 2.4+ proxy leaves them
    assert exc.compatible_code == LEGACY_UNEXPECTED
    status = raw.describe_collection(name).status
    assert status.detail == Msg.collection_not_found_db("default", name)


def test_raw_has_collection_missing_is_success_false(raw, ns):
    resp = raw.has_collection(ns.name("X"))
    expect_success(resp.status)
    assert resp.value is False


def test_raw_has_collection_present(raw, client, ns):
    name = ns.name("C")
    create_simple_collection(client, name)
    resp = raw.has_collection(name)
    expect_success(resp.status)
    assert resp.value is True


def test_raw_describe_collection_fields(raw, client, ns):
    name = ns.name("C")
    create_simple_collection(client, name)
    resp = raw.describe_collection(name)
    expect_success(resp.status)
    assert resp.collection_name == name
    assert resp.schema.name == name
    assert resp.db_name == "default"
    assert resp.shards_num == 1
    assert resp.num_partitions == 1, "num_partitions counts the partitions, _default included"
    assert list(resp.aliases) == []
    assert [(f.fieldID, f.name) for f in resp.schema.fields] == [(100, "id"), (101, "vector")]
    assert resp.collectionID != 0
    assert resp.created_timestamp != 0


def test_raw_show_collections_fields(raw, client, ns):
    a, b = ns.name("A"), ns.name("B")
    create_simple_collection(client, a)
    create_simple_collection(client, b)
    resp = raw.show_collections()
    expect_success(resp.status)
    names = list(resp.collection_names)
    assert a in names and b in names
    assert len(resp.collection_ids) == len(names)
    assert len(resp.created_timestamps) == len(names)
    assert len(resp.created_utc_timestamps) == len(names)
    ids = dict(zip(names, resp.collection_ids))
    assert ids[a] == raw.describe_collection(a).collectionID
    assert ids[a] != ids[b]


def test_raw_schema_name_must_match_collection_name(raw, ns):
    name = ns.name("C2")
    expect_status(
        raw.create_collection(name, schema_name="other_name"),
        INVALID_PARAMETER,
        f"collection name = {name}, schema.Name=other_name: invalid parameter"
        "[expected=collection name matches schema name][actual=don't match]",
    )


def test_collection_ids_are_unique_and_not_reused(client, ns):
    a = ns.name("A")
    create_simple_collection(client, a)
    first = client.describe_collection(a)["collection_id"]
    client.drop_collection(a)
    create_simple_collection(client, a)
    assert client.describe_collection(a)["collection_id"] != first
