"""common.Status encoding (Milvus's pkg/util/merr Status and oldCode): for each error class
the raw status carries the merr ``code``, the legacy ``error_code`` from Milvus'
oldCode map (100 -> CollectionNotExists, 1100 -> IllegalArgument, everything else
here -> UnexpectedError), ``detail == reason``, and ``retriable == false``.
Success is all zero/empty.
"""

import pytest

from ddl import (
    ALIAS_ALREADY_EXISTS,
    ALIAS_COLLECTION_NAME_CONFLICT,
    ALIAS_NOT_FOUND,
    COLLECTION_NOT_FOUND,
    DATABASE_NOT_FOUND,
    INVALID_DATABASE_NAME,
    INVALID_PARAMETER,
    LEGACY_COLLECTION_NOT_EXISTS,
    LEGACY_ILLEGAL_ARGUMENT,
    LEGACY_UNEXPECTED,
    UNEXPECTED,
    create_simple_collection,
    expect_success,
    status_of,
)


@pytest.fixture
def setup(client, ns):
    """A <- Z, and a collection B."""
    a, b, z = ns.name("A"), ns.name("B"), ns.name("Z")
    create_simple_collection(client, a)
    create_simple_collection(client, b)
    client.create_alias(a, z)
    return a, b, z


CASES = {
    # name: (call(raw, a, b, z, ns), code, legacy error_code)
    "100 create alias to missing collection": (
        lambda r, a, b, z, ns: r.create_alias(ns.name("X"), ns.name("Y")), COLLECTION_NOT_FOUND,
        LEGACY_COLLECTION_NOT_EXISTS),
    "100 list aliases of missing collection": (
        lambda r, a, b, z, ns: r.list_aliases(ns.name("X")), COLLECTION_NOT_FOUND, LEGACY_COLLECTION_NOT_EXISTS),
    "1100 invalid alias": (
        lambda r, a, b, z, ns: r.create_alias(a, "1bad"), INVALID_PARAMETER, LEGACY_ILLEGAL_ARGUMENT),
    "1600 alias not found": (
        lambda r, a, b, z, ns: r.describe_alias(ns.name("Y")), ALIAS_NOT_FOUND, LEGACY_UNEXPECTED),
    "1601 alias/collection name conflict": (
        lambda r, a, b, z, ns: r.create_alias(b, a), ALIAS_COLLECTION_NAME_CONFLICT, LEGACY_UNEXPECTED),
    "1602 alias already exists": (
        lambda r, a, b, z, ns: r.create_alias(b, z), ALIAS_ALREADY_EXISTS, LEGACY_UNEXPECTED),
    "800 database not found": (
        lambda r, a, b, z, ns: r.list_aliases("", db_name=ns.name("nodb")), DATABASE_NOT_FOUND, LEGACY_UNEXPECTED),
    "802 invalid database name": (
        lambda r, a, b, z, ns: r.create_database("1bad"), INVALID_DATABASE_NAME, LEGACY_UNEXPECTED),
    "65535 drop via alias": (
        lambda r, a, b, z, ns: r.drop_collection(z), UNEXPECTED, LEGACY_UNEXPECTED),
    "65535 drop default partition": (
        lambda r, a, b, z, ns: r.drop_partition(a, "_default"), UNEXPECTED, LEGACY_UNEXPECTED),
}


@pytest.mark.parametrize("case", list(CASES))
def test_error_status_fields(raw, ns, setup, case):
    call, code, legacy = CASES[case]
    a, b, z = setup
    status = status_of(call(raw, a, b, z, ns))
    observed = (status.code, status.error_code, status.retriable, status.detail == status.reason, status.reason != "")
    assert observed == (code, legacy, False, True, True), (
        f"\nexpected: code={code} error_code={legacy} retriable=False detail==reason non-empty"
        f"\nactual:   code={status.code} error_code={status.error_code} retriable={status.retriable} "
        f"reason={status.reason!r} detail={status.detail!r}"
    )


def test_success_status_is_empty(raw, setup):
    a, _, z = setup
    for status in (
        raw.create_alias(a, z),  # idempotent
        raw.describe_alias(z).status,
        raw.list_aliases(a).status,
        raw.has_collection(a).status,
    ):
        expect_success(status)
        assert (status.detail, status.retriable, dict(status.extra_info)) == ("", False, {})
