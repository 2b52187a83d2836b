"""Partition DDL through pymilvus: `_default` exists and
cannot be dropped, create is idempotent, drop/has of a missing partition succeed,
and partition calls on a missing collection give 100 with the database.
"""

import pytest

from ddl import (
    COLLECTION_NOT_FOUND,
    UNEXPECTED,
    Msg,
    create_simple_collection,
    expect_error,
    expect_success,
)


@pytest.fixture
def coll(client, ns):
    name = ns.name("C")
    create_simple_collection(client, name)
    return name


def test_default_partition_exists(client, coll):
    assert client.list_partitions(coll) == ["_default"]
    assert client.has_partition(coll, "_default") is True


def test_create_has_list_drop(client, coll):
    assert client.has_partition(coll, "p1") is False
    client.create_partition(coll, "p1")
    client.create_partition(coll, "p2")
    assert client.has_partition(coll, "p1") is True
    assert sorted(client.list_partitions(coll)) == ["_default", "p1", "p2"]
    client.drop_partition(coll, "p1")
    assert client.has_partition(coll, "p1") is False
    assert sorted(client.list_partitions(coll)) == ["_default", "p2"]


def test_create_existing_partition_is_idempotent(client, coll):
    client.create_partition(coll, "p1")
    client.create_partition(coll, "p1")
    client.create_partition(coll, "_default")
    assert sorted(client.list_partitions(coll)) == ["_default", "p1"]


def test_drop_default_partition_is_refused(client, coll):
    expect_error(lambda: client.drop_partition(coll, "_default"), UNEXPECTED, Msg.CANNOT_DROP_DEFAULT_PARTITION)
    assert client.has_partition(coll, "_default") is True


def test_drop_missing_partition_succeeds(client, coll):
    client.drop_partition(coll, "never_created")


def test_partition_calls_on_missing_collection(client, ns):
    missing = ns.name("X")
    msg = Msg.collection_not_found_db("default", missing)
    expect_error(lambda: client.create_partition(missing, "p"), COLLECTION_NOT_FOUND, msg)
    expect_error(lambda: client.drop_partition(missing, "p"), COLLECTION_NOT_FOUND, msg)
    expect_error(lambda: client.has_partition(missing, "p"), COLLECTION_NOT_FOUND, msg)
    expect_error(lambda: client.list_partitions(missing), COLLECTION_NOT_FOUND, msg)


def test_num_partitions_follows_ddl(client, coll):
    counts = [client.describe_collection(coll)["num_partitions"]]
    client.create_partition(coll, "p1")
    counts.append(client.describe_collection(coll)["num_partitions"])
    client.drop_partition(coll, "p1")
    counts.append(client.describe_collection(coll)["num_partitions"])
    assert counts == [1, 2, 1], "num_partitions after create, create p1, drop p1"


def test_raw_show_partitions_fields(raw, client, coll):
    client.create_partition(coll, "p1")
    resp = raw.show_partitions(coll)
    expect_success(resp.status)
    assert sorted(resp.partition_names) == ["_default", "p1"]
    assert len(resp.partitionIDs) == 2 and len(set(resp.partitionIDs)) == 2
    assert len(resp.created_timestamps) == 2


def test_partitions_are_per_collection(client, ns, coll):
    other = ns.name("D")
    create_simple_collection(client, other)
    client.create_partition(coll, "p1")
    assert client.has_partition(other, "p1") is False
    assert client.list_partitions(other) == ["_default"]
