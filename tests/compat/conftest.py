"""Fixtures for the Milvus compatibility suite.

Target selection for the pymilvus suite (every module but test_differential.py):

* ``COMPAT_TARGET=coordinator`` (default): our binary, ``$COORDINATOR_BIN``.
* ``COMPAT_TARGET=milvus235``: real Milvus 2.3.5, to debug the tests themselves.
  Tests marked ``since_2_5_5`` expect behaviour that Milvus changed after 2.3.5
  (or that our coordinator deliberately does better); on the 2.3.5 target they
  become strict xfails, so they must *fail* there, which proves they can fail.

test_differential.py always uses both servers.
"""

from __future__ import annotations

import logging
import os
import re
import uuid

import pytest
from pymilvus import MilvusClient

from ddl import RawClient
from servers import CoordinatorServer, Milvus235Server

# pymilvus logs every failed RPC with a traceback at ERROR; the tests assert on
# the exceptions themselves, so keep the output readable.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

TARGETS = ("coordinator", "milvus235")


def compat_target() -> str:
    target = os.environ.get("COMPAT_TARGET", "coordinator")
    if target not in TARGETS:
        raise pytest.UsageError(f"COMPAT_TARGET must be one of {TARGETS}, got {target!r}")
    return target


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "since_2_5_5(reason): behaviour of Milvus >= 2.5.5 (or a deliberate coordinator "
        "improvement) that Milvus 2.3.5 does not have; strict xfail on the 2.3.5 target",
    )


def pytest_report_header(config):
    return f"compat target: {compat_target()}"


def pytest_collection_modifyitems(config, items):
    if compat_target() != "milvus235":
        return
    for item in items:
        marker = item.get_closest_marker("since_2_5_5")
        if marker is not None and "test_differential" not in item.nodeid:
            reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"2.3.5 differs: {reason}"))


# --- servers -----------------------------------------------------------------


@pytest.fixture(scope="session")
def milvus235():
    """One real Milvus 2.3.5 per session (startup ~10 s)."""
    server = Milvus235Server()
    try:
        handle = server.start()  # raises ServerStartError: the test errors, never skips
        yield handle
    finally:
        server.stop()


@pytest.fixture(scope="session")
def coordinator():
    """Our coordinator for the pymilvus suite, shared by the session."""
    server = CoordinatorServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(request):
    """The target of the pymilvus suite (see COMPAT_TARGET)."""
    return request.getfixturevalue(compat_target())


@pytest.fixture
def client(server):
    c = MilvusClient(server.uri, timeout=10)
    yield c
    c.close()


@pytest.fixture
def raw(server):
    r = RawClient(server.address)
    yield r
    r.close()


# --- unique names and cleanup ----------------------------------------------


class Namespace:
    """Unique, valid names for one test, plus best-effort cleanup at teardown.

    ``ns.name("A")`` -> ``t<hex>_<test>_A``: collection and alias names in the
    shared ``default`` database never collide across tests. ``ns.db("x")`` gives
    a database name and registers it for cleanup (the test creates it).
    """

    def __init__(self, server, test_name: str):
        self.server = server
        slug = re.sub(r"[^A-Za-z0-9_]", "_", test_name)[:40]
        self.prefix = f"t{uuid.uuid4().hex[:6]}_{slug}"
        self.databases: list[str] = []

    def name(self, suffix: str) -> str:
        return f"{self.prefix}_{suffix}"

    def db(self, suffix: str) -> str:
        name = self.name(suffix)
        self.databases.append(name)
        return name

    def cleanup(self) -> None:
        raw = RawClient(self.server.address, timeout=10)
        try:
            for db in ["default", *self.databases]:
                self._empty_database(raw, db)
            for db in self.databases:
                raw.drop_database(db)
        except Exception as exc:  # cleanup must not mask the test result
            logging.getLogger(__name__).warning("cleanup of %s failed: %s", self.prefix, exc)
        finally:
            raw.close()

    def _empty_database(self, raw: RawClient, db: str) -> None:
        shown = raw.show_collections(db_name=db)
        if shown.status.code != 0:
            return
        for coll in shown.collection_names:
            if db == "default" and not coll.startswith(self.prefix):
                continue
            aliases = raw.list_aliases(coll, db_name=db)
            for alias in aliases.aliases:
                raw.drop_alias(alias, db_name=db)
            raw.drop_collection(coll, db_name=db)


@pytest.fixture
def ns(server, request):
    namespace = Namespace(server, request.node.name)
    yield namespace
    namespace.cleanup()


@pytest.fixture
def make_client(server):
    """``make_client(db_name=...)``: extra MilvusClients, closed at teardown."""
    made = []

    def factory(db_name: str = "") -> MilvusClient:
        c = MilvusClient(server.uri, db_name=db_name, timeout=10)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()

