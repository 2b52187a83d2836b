"""Databases (milvus-compat.md §2.5, §1.5): database DDL and its errors (800, 802,
65535 templates), and per-database scoping of collections and aliases when the
database is chosen with ``MilvusClient(uri, db_name=...)`` (the ``dbname``
header) or with the request's ``db_name`` field.
"""

import pytest

from ddl import (
    ALIAS_NOT_FOUND,
    COLLECTION_NOT_FOUND,
    DATABASE_NOT_FOUND,
    UNEXPECTED,
    Msg,
    create_simple_collection,
    expect_error,
    expect_status,
    expect_success,
)


def test_create_list_drop_database(client, ns):
    db = ns.db("db")
    assert "default" in client.list_databases()
    client.create_database(db)
    assert db in client.list_databases()
    client.drop_database(db)
    assert db not in client.list_databases()


def test_create_existing_database(client, ns):
    db = ns.db("db")
    client.create_database(db)
    expect_error(lambda: client.create_database(db), UNEXPECTED, Msg.database_exists(db))
    expect_error(lambda: client.create_database("default"), UNEXPECTED, Msg.database_exists("default"))


def test_drop_default_database_is_refused(client):
    expect_error(lambda: client.drop_database("default"), UNEXPECTED, Msg.CANNOT_DROP_DEFAULT_DB)


def test_drop_missing_database_succeeds(client, ns):
    client.drop_database(ns.name("never_created"))


def test_drop_non_empty_database_is_refused(client, make_client, ns):
    db = ns.db("db")
    client.create_database(db)
    create_simple_collection(make_client(db), "c1")
    expect_error(lambda: client.drop_database(db), UNEXPECTED, Msg.database_not_empty(db))
    make_client(db).drop_collection("c1")
    client.drop_database(db)


def test_list_databases_raw_fields(raw, client, ns):
    db = ns.db("db")
    client.create_database(db)
    resp = raw.list_databases()
    expect_success(resp.status)
    assert {"default", db} <= set(resp.db_names)
    assert len(resp.created_timestamp) == len(resp.db_names)


@pytest.mark.since_2_5_5(reason="DescribeDatabase is UNIMPLEMENTED on 2.3.5 (added in 2.4)")
def test_describe_database(raw, client, ns):
    db = ns.db("db")
    client.create_database(db)
    resp = raw.describe_database(db)
    expect_success(resp.status)
    assert resp.db_name == db
    missing = ns.name("missing")
    expect_status(raw.describe_database(missing).status, DATABASE_NOT_FOUND, Msg.database_not_found(missing))


def test_unknown_database_errors(raw, make_client, ns):
    """800 for alias DDL and ShowCollections."""
    db = ns.name("nosuch")
    msg = Msg.database_not_found(db)
    expect_status(raw.create_alias("A", "Q", db_name=db), DATABASE_NOT_FOUND, msg)
    expect_status(raw.create_alias("A", "Q", header_db=db), DATABASE_NOT_FOUND, msg)
    expect_status(raw.alter_alias("A", "Q", header_db=db), DATABASE_NOT_FOUND, msg)
    expect_status(raw.describe_alias("Q", db_name=db).status, DATABASE_NOT_FOUND, msg)
    expect_status(raw.list_aliases("", db_name=db).status, DATABASE_NOT_FOUND, msg)
    expect_status(raw.show_collections(db_name=db).status, DATABASE_NOT_FOUND, msg)
    expect_status(raw.show_collections(header_db=db).status, DATABASE_NOT_FOUND, msg)
    in_missing = make_client(db)  # Connect does not check the database
    expect_error(lambda: in_missing.list_collections(), DATABASE_NOT_FOUND, msg)
    expect_error(lambda: in_missing.create_alias("A", "Q"), DATABASE_NOT_FOUND, msg)


@pytest.mark.since_2_5_5(reason="2.3.5 answers 100 (collection not found) for a missing database")
def test_describe_collection_in_unknown_database_is_800(make_client, raw, ns):
    """Rootcoord's meta table looks the database up first (Milvus >= 2.4
    internal/rootcoord/meta_table.go getCollectionByNameInternal): DescribeCollection,
    HasPartition and ShowPartitions answer 800, so pymilvus' has_collection raises it."""
    db = ns.name("nosuch")
    msg = Msg.database_not_found(db)
    in_missing = make_client(db)
    expect_error(lambda: in_missing.describe_collection("A"), DATABASE_NOT_FOUND, msg)
    expect_error(lambda: in_missing.has_collection("A"), DATABASE_NOT_FOUND, msg)
    expect_status(raw.show_partitions("A", db_name=db).status, DATABASE_NOT_FOUND, msg)
    expect_status(raw.has_partition("A", "_default", db_name=db).status, DATABASE_NOT_FOUND, msg)


@pytest.mark.since_2_5_5(reason="2.3.5's DescribeCollection not-found reason is the older text")
def test_collections_are_per_database(client, make_client, ns):
    db = ns.db("db")
    client.create_database(db)
    in_db = make_client(db)
    name = ns.name("C")
    create_simple_collection(in_db, name)
    assert in_db.has_collection(name) is True
    assert client.has_collection(name) is False
    assert name in in_db.list_collections()
    assert name not in client.list_collections()
    expect_error(
        lambda: client.describe_collection(name),
        COLLECTION_NOT_FOUND,
        Msg.describe_collection_not_found("default", name),
    )
    # the same name may exist in both databases
    create_simple_collection(client, name)
    assert client.describe_collection(name)["collection_id"] != in_db.describe_collection(name)["collection_id"]


@pytest.fixture
def two_dbs_same_alias(client, make_client, ns):
    """db1: A1 <- Q, db2: A2 <- Q (same alias name, different collections)."""
    db1, db2 = ns.db("db1"), ns.db("db2")
    client.create_database(db1)
    client.create_database(db2)
    c1, c2 = make_client(db1), make_client(db2)
    create_simple_collection(c1, "A1")
    create_simple_collection(c2, "A2")
    c1.create_alias("A1", "Q")
    c2.create_alias("A2", "Q")
    return db1, db2, c1, c2


def test_same_alias_in_two_databases_via_db_name_field(raw, two_dbs_same_alias):
    db1, db2, _, _ = two_dbs_same_alias
    for db, target in [(db1, "A1"), (db2, "A2")]:
        resp = raw.describe_alias("Q", db_name=db)
        expect_success(resp.status)
        assert (resp.alias, resp.collection, resp.db_name) == ("Q", target, db)
        listed = raw.list_aliases("", db_name=db)
        expect_success(listed.status)
        assert list(listed.aliases) == ["Q"]
        assert listed.db_name == db


def test_same_alias_in_two_databases_describe_collection(two_dbs_same_alias):
    _, _, c1, c2 = two_dbs_same_alias
    assert c1.describe_collection("Q")["collection_name"] == "A1"
    assert c2.describe_collection("Q")["collection_name"] == "A2"


@pytest.mark.since_2_5_5(reason="2.3.5 ignores the dbname header for DescribeAlias/ListAliases")
def test_same_alias_in_two_databases_via_dbname_header(client, two_dbs_same_alias):
    _, _, c1, c2 = two_dbs_same_alias
    assert c1.describe_alias("Q")["collection_name"] == "A1"
    assert c2.describe_alias("Q")["collection_name"] == "A2"
    assert c1.list_aliases()["aliases"] == ["Q"]
    assert c2.list_aliases()["aliases"] == ["Q"]
    assert c1.list_aliases("A1")["aliases"] == ["Q"]
    assert c2.list_aliases("A2")["aliases"] == ["Q"]
    expect_error(lambda: client.describe_alias("Q"), ALIAS_NOT_FOUND, Msg.alias_not_found("default", "Q"))


def test_alias_ddl_in_one_database_leaves_the_other_alone(two_dbs_same_alias):
    db1, db2, c1, c2 = two_dbs_same_alias
    create_simple_collection(c1, "B1")
    c1.alter_alias("B1", "Q")
    assert c1.describe_collection("Q")["collection_name"] == "B1"
    assert c2.describe_collection("Q")["collection_name"] == "A2"
    c2.drop_alias("Q")
    assert c2.has_collection("Q") is False
    assert c1.has_collection("Q") is True


def test_alias_target_must_be_in_the_same_database(client, make_client, ns):
    db = ns.db("db")
    client.create_database(db)
    a = ns.name("A")
    create_simple_collection(client, a)  # in default only
    expect_error(
        lambda: make_client(db).create_alias(a, "Q"),
        COLLECTION_NOT_FOUND,
        Msg.collection_not_found_db(db, a),
    )


def test_request_db_name_field_wins_over_header(raw, client, make_client, ns):
    db = ns.db("db")
    client.create_database(db)
    create_simple_collection(make_client(db), "F")
    # field says db, header says default: the collection is found
    resp = raw.describe_collection("F", db_name=db, header_db="default")
    expect_success(resp.status)
    assert resp.schema.name == "F"
