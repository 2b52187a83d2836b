"""Name validation (Milvus's internal/proxy/validate_util.go): collection names and aliases follow
``^[A-Za-z_][A-Za-z0-9_]*$`` with at most 255 bytes and give code 1100 with the
exact 2.3.5 messages; database names give code 802. Empty names need the raw
stub because pymilvus rejects them client-side.
"""

import pytest

from ddl import (
    BAD_NAMES,
    INVALID_DATABASE_NAME,
    INVALID_PARAMETER,
    LEGACY_ILLEGAL_ARGUMENT,
    LEGACY_UNEXPECTED,
    Msg,
    create_simple_collection,
    db_name_message,
    expect_error,
    expect_status,
    name_message,
)


def bad_id(param):
    name, rule = param
    return f"{rule}-{len(name)}bytes" if rule == "length" else f"{rule}:{name}"


@pytest.fixture
def coll(client, ns):
    name = ns.name("A")
    create_simple_collection(client, name)
    return name


@pytest.mark.parametrize("bad", BAD_NAMES, ids=bad_id)
def test_create_alias_rejects_bad_alias(client, coll, bad):
    name, rule = bad
    exc = expect_error(lambda: client.create_alias(coll, name), INVALID_PARAMETER, name_message("alias", name, rule))
    assert exc.compatible_code == LEGACY_ILLEGAL_ARGUMENT


@pytest.mark.parametrize("bad", BAD_NAMES, ids=bad_id)
def test_alter_alias_rejects_bad_alias(client, coll, bad):
    name, rule = bad
    expect_error(lambda: client.alter_alias(coll, name), INVALID_PARAMETER, name_message("alias", name, rule))


@pytest.mark.parametrize("bad", BAD_NAMES, ids=bad_id)
def test_create_alias_rejects_bad_target_name(client, ns, bad):
    name, rule = bad
    expect_error(
        lambda: client.create_alias(name, ns.name("Z")), INVALID_PARAMETER, name_message("name", name, rule)
    )


@pytest.mark.parametrize("bad", BAD_NAMES, ids=bad_id)
def test_create_collection_rejects_bad_name(client, bad):
    name, rule = bad
    exc = expect_error(
        lambda: create_simple_collection(client, name), INVALID_PARAMETER, name_message("name", name, rule)
    )
    assert exc.compatible_code == LEGACY_ILLEGAL_ARGUMENT


@pytest.mark.parametrize("bad", BAD_NAMES, ids=bad_id)
def test_create_database_rejects_bad_name(client, bad):
    name, rule = bad
    exc = expect_error(lambda: client.create_database(name), INVALID_DATABASE_NAME, db_name_message(name, rule))
    assert exc.compatible_code == LEGACY_UNEXPECTED


def test_describe_and_drop_collection_validate_the_name(client):
    msg = Msg.name_bad_first_char("name", "1bad")
    expect_error(lambda: client.describe_collection("1bad"), INVALID_PARAMETER, msg)
    expect_error(lambda: client.has_collection("1bad"), INVALID_PARAMETER, msg)
    expect_error(lambda: client.drop_collection("1bad"), INVALID_PARAMETER, msg)


def test_drop_database_validates_the_name(client):
    expect_error(lambda: client.drop_database("1bad"), INVALID_DATABASE_NAME, Msg.db_name_bad_first_char("1bad"))


def test_255_bytes_accepted_256_rejected_for_alias(client, ns, coll):
    ok = ns.name("")
    ok = ok + "z" * (255 - len(ok))
    too_long = ok + "z"
    assert (len(ok), len(too_long)) == (255, 256)
    client.create_alias(coll, ok)
    assert client.describe_alias(ok)["collection_name"] == coll
    expect_error(lambda: client.create_alias(coll, too_long), INVALID_PARAMETER, Msg.name_too_long("alias", too_long))
    client.drop_alias(ok)


def test_255_bytes_accepted_256_rejected_for_collection(client, ns):
    ok = ns.name("")
    ok = ok + "c" * (255 - len(ok))
    too_long = ok + "c"
    create_simple_collection(client, ok)
    assert client.has_collection(ok) is True
    expect_error(
        lambda: create_simple_collection(client, too_long), INVALID_PARAMETER, Msg.name_too_long("name", too_long)
    )


def test_255_bytes_accepted_256_rejected_for_database(client, ns):
    ok = ns.db("")
    ok = ok + "d" * (255 - len(ok))
    ns.databases.append(ok)
    too_long = ok + "d"
    client.create_database(ok)
    assert ok in client.list_databases()
    expect_error(lambda: client.create_database(too_long), INVALID_DATABASE_NAME, Msg.db_name_too_long(too_long))


def test_empty_alias_is_rejected(raw, coll):
    msg = Msg.name_empty("alias")
    expect_status(raw.create_alias(coll, ""), INVALID_PARAMETER, msg)
    expect_status(raw.alter_alias(coll, ""), INVALID_PARAMETER, msg)


def test_empty_collection_name_is_rejected(raw, ns):
    msg = Msg.name_empty("name")
    expect_status(raw.create_alias("", ns.name("Z")), INVALID_PARAMETER, msg)
    expect_status(raw.create_collection(""), INVALID_PARAMETER, msg)
    expect_status(raw.drop_collection(""), INVALID_PARAMETER, msg)
    expect_status(raw.describe_collection("").status, INVALID_PARAMETER, msg)


def test_empty_database_name_is_rejected(raw):
    expect_status(raw.create_database(""), INVALID_DATABASE_NAME, Msg.db_name_empty())
    expect_status(raw.drop_database(""), INVALID_DATABASE_NAME, Msg.db_name_empty())


def test_validation_status_fields(raw, coll):
    """Status encoding (§1.5): reason == detail, legacy IllegalArgument for 1100,
    UnexpectedError for 802, never retriable."""
    status = raw.create_alias(coll, "1bad")
    assert (status.code, status.error_code, status.retriable) == (INVALID_PARAMETER, LEGACY_ILLEGAL_ARGUMENT, False)
    assert status.detail == status.reason
    status = raw.create_database("1bad")
    assert (status.code, status.error_code, status.retriable) == (INVALID_DATABASE_NAME, LEGACY_UNEXPECTED, False)
    assert status.detail == status.reason


def test_valid_unusual_names_are_accepted(client, ns, coll):
    for alias in ["_", "_1", "Z9_z", "x" * 255]:
        client.create_alias(coll, alias)
        assert client.describe_alias(alias)["collection_name"] == coll
        client.drop_alias(alias)
