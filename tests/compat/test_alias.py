"""Alias DDL through pymilvus MilvusClient: the full lifecycle and every row of the
alias behaviour of Milvus 2.5.5+ (internal/rootcoord/meta_table.go CreateAlias,
AlterAlias, DropAlias), with exact codes and
messages. Rows that need fields pymilvus hides use the raw gRPC stub.
"""

import itertools

import pytest

from ddl import (
    ALIAS_ALREADY_EXISTS,
    ALIAS_COLLECTION_NAME_CONFLICT,
    ALIAS_NOT_FOUND,
    COLLECTION_NOT_FOUND,
    INVALID_PARAMETER,
    LEGACY_COLLECTION_NOT_EXISTS,
    LEGACY_UNEXPECTED,
    UNEXPECTED,
    Msg,
    create_simple_collection,
    expect_error,
    expect_status,
    expect_success,
)


@pytest.fixture
def colls(client, ns):
    """Two fresh collections A and B; returns their names."""
    a, b = ns.name("A"), ns.name("B")
    create_simple_collection(client, a)
    create_simple_collection(client, b)
    return a, b


def test_alias_lifecycle(client, ns, colls):
    a, b = colls
    z = ns.name("Z")

    client.create_alias(a, z)
    desc = client.describe_collection(z)
    assert (desc["collection_name"], desc["aliases"]) == (a, [z])
    assert client.describe_alias(z)["collection_name"] == a
    assert client.list_aliases(a)["aliases"] == [z]
    assert client.has_collection(z) is True

    client.alter_alias(b, z)
    desc = client.describe_collection(z)
    assert (desc["collection_name"], desc["aliases"]) == (b, [z])
    assert client.describe_collection(a)["aliases"] == []
    assert client.describe_alias(z)["collection_name"] == b
    assert client.list_aliases(a)["aliases"] == []
    assert client.list_aliases(b)["aliases"] == [z]

    expect_error(lambda: client.drop_collection(z), UNEXPECTED, Msg.drop_via_alias(z))
    assert client.has_collection(b) is True

    client.drop_alias(z)
    expect_error(lambda: client.describe_alias(z), ALIAS_NOT_FOUND, Msg.alias_not_found("default", z))
    assert client.list_aliases(b)["aliases"] == []
    client.drop_collection(b)
    assert client.has_collection(b) is False
    assert client.has_collection(a) is True


def test_describe_collection_via_alias_raw_fields(client, raw, ns, colls):
    """§2.4: schema.name = real name, collection_name = requested name,
    aliases = every alias of the target, db_name = default, collectionID = target's."""
    a, _ = colls
    z1, z2 = ns.name("Z1"), ns.name("Z2")
    client.create_alias(a, z1)
    client.create_alias(a, z2)
    by_name = raw.describe_collection(a)
    by_alias = raw.describe_collection(z1)
    expect_success(by_alias.status)
    assert by_alias.schema.name == a
    assert by_alias.collection_name == z1
    assert sorted(by_alias.aliases) == sorted([z1, z2])
    assert by_alias.db_name == "default"
    assert by_alias.collectionID == by_name.collectionID != 0
    assert sorted(client.describe_collection(z2)["aliases"]) == sorted([z1, z2])


# --- matrix rows ---------------------------------------------------------------


def test_row01_create_same_alias_same_target_is_idempotent(client, ns, colls):
    a, _ = colls
    z = ns.name("Z")
    client.create_alias(a, z)
    client.create_alias(a, z)
    assert client.list_aliases(a)["aliases"] == [z]


def test_row02_create_alias_already_pointing_elsewhere(client, ns, colls):
    a, b = colls
    z = ns.name("Z")
    client.create_alias(a, z)
    exc = expect_error(
        lambda: client.create_alias(b, z), ALIAS_ALREADY_EXISTS, Msg.alias_already_exists("default", z, a)
    )
    assert exc.compatible_code == LEGACY_UNEXPECTED
    assert client.describe_alias(z)["collection_name"] == a


def test_row03_alias_named_like_a_collection(client, colls):
    a, b = colls
    exc = expect_error(
        lambda: client.create_alias(b, a), ALIAS_COLLECTION_NAME_CONFLICT, Msg.alias_name_conflict("default", a)
    )
    assert exc.compatible_code == LEGACY_UNEXPECTED


def test_row04_create_alias_to_missing_collection(client, ns):
    missing, z = ns.name("X"), ns.name("Z")
    exc = expect_error(
        lambda: client.create_alias(missing, z),
        COLLECTION_NOT_FOUND,
        Msg.collection_not_found_db("default", missing),
    )
    assert exc.compatible_code == LEGACY_COLLECTION_NOT_EXISTS


def test_row05_alias_target_is_never_resolved_through_an_alias(client, ns, colls):
    a, _ = colls
    w, z = ns.name("W"), ns.name("Z")
    client.create_alias(a, w)
    expect_error(
        lambda: client.create_alias(w, z), COLLECTION_NOT_FOUND, Msg.collection_not_found_db("default", w)
    )
    assert client.list_aliases(a)["aliases"] == [w]


@pytest.mark.since_2_5_5(reason="2.3.5 says 'create duplicate collection with different parameters'")
def test_row06_create_collection_with_an_alias_name(client, ns, colls):
    a, _ = colls
    z = ns.name("Z")
    client.create_alias(a, z)
    expect_error(
        lambda: create_simple_collection(client, z), UNEXPECTED, Msg.create_collection_alias_conflict(z)
    )
    assert client.describe_collection(z)["collection_name"] == a


def test_row07_alter_alias_to_missing_collection(client, ns, colls):
    a, _ = colls
    z, missing = ns.name("Z"), ns.name("X")
    client.create_alias(a, z)
    exc = expect_error(
        lambda: client.alter_alias(missing, z), COLLECTION_NOT_FOUND, Msg.collection_not_found(missing)
    )
    assert exc.compatible_code == LEGACY_COLLECTION_NOT_EXISTS
    assert client.describe_alias(z)["collection_name"] == a


def test_row08_alter_missing_alias_never_creates_it(client, ns, colls):
    a, _ = colls
    y = ns.name("Y")
    expect_error(lambda: client.alter_alias(a, y), ALIAS_NOT_FOUND, Msg.alias_not_found("default", y))
    expect_error(lambda: client.describe_alias(y), ALIAS_NOT_FOUND, Msg.alias_not_found("default", y))


def test_row09_alter_alias_named_like_a_collection(client, colls):
    a, _ = colls
    expect_error(
        lambda: client.alter_alias(a, a), ALIAS_COLLECTION_NAME_CONFLICT, Msg.alias_name_conflict("default", a)
    )


def test_row10_alter_alias_to_another_alias(client, ns, colls):
    a, b = colls
    z, w = ns.name("Z"), ns.name("W")
    client.create_alias(a, z)
    client.create_alias(b, w)
    expect_error(lambda: client.alter_alias(w, z), COLLECTION_NOT_FOUND, Msg.collection_not_found(w))
    assert client.describe_alias(z)["collection_name"] == a


def test_row11_alter_alias_to_its_current_target_is_a_noop(client, ns, colls):
    a, _ = colls
    z = ns.name("Z")
    client.create_alias(a, z)
    client.alter_alias(a, z)
    assert client.describe_alias(z)["collection_name"] == a
    assert client.list_aliases(a)["aliases"] == [z]


def test_row12_drop_existing_alias(client, ns, colls):
    a, _ = colls
    z = ns.name("Z")
    client.create_alias(a, z)
    client.drop_alias(z)
    expect_error(lambda: client.describe_alias(z), ALIAS_NOT_FOUND, Msg.alias_not_found("default", z))
    assert client.has_collection(z) is False
    assert client.has_collection(a) is True


def test_row13_drop_missing_alias_succeeds(client, ns):
    client.drop_alias(ns.name("never_created"))


def test_row14_drop_alias_with_invalid_name(raw):
    """2.3.5 validates the name (1100); newer servers relaxed it (PR #43064) and the
    reference leaves their answer unverified. Either documented answer passes,
    anything else fails."""
    for bad in ["1bad", "a-b"]:
        status = raw.drop_alias(bad)
        observed = (status.code, status.reason)
        accepted = [(0, ""), (INVALID_PARAMETER, Msg.name_bad_first_char("alias", bad)
                              if bad[0].isdigit() else Msg.name_bad_chars("alias", bad))]
        assert observed in accepted, f"drop_alias({bad!r}) -> {observed}, accepted {accepted}"


def test_row15_describe_alias(client, raw, ns, colls):
    a, _ = colls
    z = ns.name("Z")
    client.create_alias(a, z)
    described = client.describe_alias(z)
    assert (described["alias"], described["collection_name"]) == (z, a)
    resp = raw.describe_alias(z, db_name="default")
    expect_success(resp.status)
    assert (resp.alias, resp.collection, resp.db_name) == (z, a, "default")


def test_row16_describe_missing_alias(client, raw, ns):
    y = ns.name("Y")
    exc = expect_error(lambda: client.describe_alias(y), ALIAS_NOT_FOUND, Msg.alias_not_found("default", y))
    assert exc.compatible_code == LEGACY_UNEXPECTED
    resp = raw.describe_alias(y)
    expect_status(resp.status, ALIAS_NOT_FOUND, Msg.alias_not_found("default", y))
    assert resp.collection == ""


def test_row17_list_aliases_of_a_database(client, make_client, ns):
    db = ns.db("db")
    client.create_database(db)
    in_db = make_client(db)
    a, b = ns.name("A"), ns.name("B")
    create_simple_collection(in_db, a)
    create_simple_collection(in_db, b)
    in_db.create_alias(a, "x1")
    in_db.create_alias(a, "x2")
    in_db.create_alias(b, "x3")
    # The db_name request field works on every Milvus version (the header does not on 2.3.5).
    listed = client.list_aliases(db_name=db)
    assert sorted(listed["aliases"]) == ["x1", "x2", "x3"]


def test_row18_list_aliases_of_a_collection(client, ns, colls):
    a, b = colls
    z1, z2, w = ns.name("Z1"), ns.name("Z2"), ns.name("W")
    client.create_alias(a, z1)
    client.create_alias(a, z2)
    client.create_alias(b, w)
    assert sorted(client.list_aliases(a)["aliases"]) == sorted([z1, z2])
    assert client.list_aliases(b)["aliases"] == [w]


def test_row19_list_aliases_of_missing_collection(client, ns):
    missing = ns.name("X")
    exc = expect_error(
        lambda: client.list_aliases(missing), COLLECTION_NOT_FOUND, Msg.collection_not_found(missing)
    )
    assert exc.compatible_code == LEGACY_COLLECTION_NOT_EXISTS


def test_row20_list_aliases_by_alias_is_not_resolved(client, ns, colls):
    a, _ = colls
    z = ns.name("Z")
    client.create_alias(a, z)
    expect_error(lambda: client.list_aliases(z), COLLECTION_NOT_FOUND, Msg.collection_not_found(z))


def test_row21_drop_collection_via_alias_is_refused(client, ns, colls):
    a, _ = colls
    z = ns.name("Z")
    client.create_alias(a, z)
    exc = expect_error(lambda: client.drop_collection(z), UNEXPECTED, Msg.drop_via_alias(z))
    assert exc.compatible_code == LEGACY_UNEXPECTED
    assert client.has_collection(a) is True
    assert client.describe_alias(z)["collection_name"] == a


@pytest.mark.since_2_5_5(reason="2.3.5 drops the collection and its aliases vanish")
def test_row22_drop_collection_with_one_alias_is_refused(client, ns, colls):
    _, b = colls
    z = ns.name("Z")
    client.create_alias(b, z)
    expect_error(lambda: client.drop_collection(b), UNEXPECTED, Msg.drop_with_aliases(b, [z]))
    assert client.has_collection(b) is True
    assert client.describe_alias(z)["collection_name"] == b
    client.drop_alias(z)
    client.drop_collection(b)
    assert client.has_collection(b) is False


@pytest.mark.since_2_5_5(reason="2.3.5 drops the collection and its aliases vanish")
def test_row22_drop_collection_with_two_aliases_lists_both(client, ns, colls):
    _, b = colls
    z1, z2 = ns.name("Z1"), ns.name("Z2")
    client.create_alias(b, z1)
    client.create_alias(b, z2)
    # Go %v of the alias slice; Milvus does not promise an order, so both orders pass.
    accepted = [Msg.drop_with_aliases(b, list(p)) for p in itertools.permutations([z1, z2])]
    with pytest.raises(Exception) as info:
        client.drop_collection(b)
    exc = info.value
    assert getattr(exc, "code", None) == UNEXPECTED and exc.message in accepted, (
        f"\nexpected: code={UNEXPECTED} message in {accepted}"
        f"\nactual:   code={getattr(exc, 'code', None)} message={getattr(exc, 'message', exc)!r}"
    )


def test_row23_drop_missing_collection_succeeds(client, ns):
    client.drop_collection(ns.name("never_created"))


def test_row24_collection_calls_via_alias_act_on_the_target(client, ns, colls):
    a, _ = colls
    z = ns.name("Z")
    client.create_alias(a, z)
    assert client.has_collection(z) is True
    client.create_partition(z, "p1")
    assert client.has_partition(a, "p1") is True
    assert client.has_partition(z, "p1") is True
    assert sorted(client.list_partitions(z)) == ["_default", "p1"]
    client.drop_partition(z, "p1")
    assert client.has_partition(a, "p1") is False
    assert client.list_partitions(a) == ["_default"]
