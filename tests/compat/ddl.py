"""Shared helpers: outcomes of calls, exact-error assertions, raw gRPC access,
schemas, and the Milvus error codes and message templates
(shared/reference/milvus-compat.md §1.5, §2.1, §2.2, §2.5, §2.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import grpc
import pytest
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc, schema_pb2

# --- codes (merr) -----------------------------------------------------------

SUCCESS = 0
COLLECTION_NOT_FOUND = 100
DATABASE_NOT_FOUND = 800
INVALID_DATABASE_NAME = 802
INVALID_PARAMETER = 1100
ALIAS_NOT_FOUND = 1600
ALIAS_COLLECTION_NAME_CONFLICT = 1601
ALIAS_ALREADY_EXISTS = 1602
UNEXPECTED = 65535

# Legacy common.ErrorCode values (status.error_code / MilvusException.compatible_code).
LEGACY_UNEXPECTED = common_pb2.UnexpectedError  # 1
LEGACY_COLLECTION_NOT_EXISTS = common_pb2.CollectionNotExists  # 4
LEGACY_ILLEGAL_ARGUMENT = common_pb2.IllegalArgument  # 5


class Msg:
    """Exact message templates."""

    @staticmethod
    def collection_not_found_db(db: str, coll: str) -> str:
        return f"collection not found[database={db}][collection={coll}]"

    @staticmethod
    def collection_not_found(coll: str) -> str:
        return f"collection not found[collection={coll}]"

    @staticmethod
    def describe_collection_not_found(db: str, coll: str) -> str:
        # Milvus >= 2.4 internal/proxy/task.go describeCollectionTask.Execute
        return f"can't find collection[database={db}][collection={coll}]"

    @staticmethod
    def describe_collection_not_found_235(db: str, coll: str) -> str:
        # Milvus 2.3.5: rootcoord's text behind the proxy's prefix
        return f"can't find collection collection not found[database={db}][collection={coll}]"

    @staticmethod
    def alias_not_found(db: str, alias: str) -> str:
        return f"alias not found[database={db}][alias={alias}]"

    @staticmethod
    def alias_name_conflict(db: str, alias: str) -> str:
        return f"alias and collection name conflict[database={db}][alias={alias}]"

    @staticmethod
    def alias_already_exists(db: str, alias: str, current_target: str) -> str:
        return (
            f"{alias} is alias to another collection: {current_target}: "
            f"alias already exist[database={db}][alias={alias}]"
        )

    @staticmethod
    def drop_via_alias(alias: str) -> str:
        return f"cannot drop the collection via alias = {alias}"

    @staticmethod
    def drop_with_aliases(coll: str, aliases: list[str]) -> str:
        return (
            f"unable to drop the collection [{coll}] because it has associated aliases "
            f"[{' '.join(aliases)}], please remove all aliases before dropping the collection"
        )

    @staticmethod
    def create_collection_alias_conflict(name: str) -> str:
        return (
            f"collection name [{name}] conflicts with an existing alias, "
            "please choose a unique name"
        )

    @staticmethod
    def duplicate_collection_different_params(name: str) -> str:
        return f"create duplicate collection with different parameters, collection: {name}"

    # name validation, code 1100; kind is "alias" or "name"
    @staticmethod
    def name_empty(kind: str) -> str:
        return f"collection {kind} should not be empty: invalid parameter"

    @staticmethod
    def name_too_long(kind: str, name: str) -> str:
        return (
            f"Invalid collection {kind}: {name}. the length of a collection {kind} "
            "must be less than 255 characters: invalid parameter"
        )

    @staticmethod
    def name_bad_first_char(kind: str, name: str) -> str:
        return (
            f"Invalid collection {kind}: {name}. the first character of a collection {kind} "
            "must be an underscore or letter: invalid parameter"
        )

    @staticmethod
    def name_bad_chars(kind: str, name: str) -> str:
        return (
            f"Invalid collection {kind}: {name}. collection {kind} can only contain "
            "numbers, letters and underscores: invalid parameter"
        )

    # databases
    @staticmethod
    def database_not_found(db: str) -> str:
        return f"database not found[database={db}]"

    @staticmethod
    def db_name_empty() -> str:
        return "database name couldn't be empty: invalid database name[database=]"

    @staticmethod
    def db_name_bad_first_char(db: str) -> str:
        return (
            "the first character of a database name must be an underscore or letter: "
            f"invalid database name[database={db}]"
        )

    @staticmethod
    def db_name_bad_chars(db: str) -> str:
        return (
            "database name can only contain numbers, letters and underscores: "
            f"invalid database name[database={db}]"
        )

    @staticmethod
    def db_name_too_long(db: str) -> str:
        return (
            "the length of a database name must be less than 255 characters: "
            f"invalid database name[database={db}]"
        )

    @staticmethod
    def database_exists(db: str) -> str:
        return f"database already exist: {db}"

    @staticmethod
    def database_not_empty(db: str) -> str:
        return f"database:{db} not empty, must drop all collections before drop database"

    CANNOT_DROP_DEFAULT_DB = "can not drop default database"
    CANNOT_DROP_DEFAULT_PARTITION = "default partition cannot be deleted"


# Names that break one validation rule each: (name, rule), rule in first/chars/length.
BAD_NAMES = [
    ("1bad", "first"),
    ("12-s", "first"),
    ("(mn)", "first"),
    ("中文", "first"),
    ("a-b", "chars"),
    ("a b", "chars"),
    ("_x$1", "chars"),
    ("a中", "chars"),
    ("a" * 256, "length"),
]


def name_message(kind: str, name: str, rule: str) -> str:
    """Code-1100 message for a bad collection name (kind "name") or alias."""
    return {
        "first": Msg.name_bad_first_char,
        "chars": Msg.name_bad_chars,
        "length": Msg.name_too_long,
    }[rule](kind, name)


def db_name_message(name: str, rule: str) -> str:
    """Code-802 message for a bad database name."""
    return {
        "first": Msg.db_name_bad_first_char,
        "chars": Msg.db_name_bad_chars,
        "length": Msg.db_name_too_long,
    }[rule](name)


# --- outcomes ----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """Result of one call: code 0 and a value, or an error code and message.

    gRPC-level failures (e.g. UNIMPLEMENTED) are recorded with code
    ``"grpc:<STATUS>"`` and the gRPC details as message.
    """

    code: Any
    message: str = ""
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS

    def __str__(self) -> str:
        if self.ok:
            return f"ok {self.value!r}"
        return f"error code={self.code} message={self.message!r}"


def outcome_of(fn: Callable[[], Any], normalize: Callable[[Any], Any] = lambda v: v) -> Outcome:
    try:
        value = fn()
    except MilvusException as exc:
        code = exc.code
        if isinstance(code, grpc.StatusCode):  # pymilvus wraps some RpcErrors
            return Outcome(f"grpc:{code.name}", exc.message)
        return Outcome(code, exc.message)
    except grpc.RpcError as exc:
        return Outcome(f"grpc:{exc.code().name}", exc.details() or "")
    except Exception as exc:  # e.g. pymilvus choking on a malformed response
        return Outcome(f"exception:{type(exc).__name__}", str(exc))
    return Outcome(SUCCESS, "", normalize(value))


def expect_error(fn: Callable[[], Any], code: int, message: str) -> MilvusException:
    """Call ``fn`` (a pymilvus call) and assert it raises exactly (code, message)."""
    with pytest.raises(MilvusException) as info:
        fn()
    exc = info.value
    assert (exc.code, exc.message) == (code, message), (
        f"\nexpected: code={code} message={message!r}"
        f"\nactual:   code={exc.code} message={exc.message!r}"
    )
    return exc


def expect_status(status: common_pb2.Status, code: int, message: str) -> None:
    """Assert a raw common.Status carries exactly (code, message) in code/reason."""
    assert (status.code, status.reason) == (code, message), (
        f"\nexpected: code={code} reason={message!r}"
        f"\nactual:   code={status.code} reason={status.reason!r} "
        f"error_code={status.error_code} detail={status.detail!r}"
    )


def expect_success(status: common_pb2.Status) -> None:
    assert (status.code, status.error_code, status.reason) == (0, 0, ""), (
        f"expected success, got code={status.code} error_code={status.error_code} "
        f"reason={status.reason!r}"
    )


# --- schemas -----------------------------------------------------------------

DIM = 8


def simple_schema(dim: int = DIM):
    """id INT64 primary key + FLOAT_VECTOR; with no index params, create_collection
    sends only the CreateCollection RPC."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    return schema


def raw_schema_bytes(name: str, dim: int = DIM) -> bytes:
    schema = schema_pb2.CollectionSchema(
        name=name,
        fields=[
            schema_pb2.FieldSchema(name="id", data_type=schema_pb2.Int64, is_primary_key=True),
            schema_pb2.FieldSchema(
                name="vector",
                data_type=schema_pb2.FloatVector,
                type_params=[common_pb2.KeyValuePair(key="dim", value=str(dim))],
            ),
        ],
    )
    return schema.SerializeToString()


def create_simple_collection(client: MilvusClient, name: str) -> None:
    client.create_collection(name, schema=simple_schema())


# --- raw gRPC ----------------------------------------------------------------


class RawClient:
    """Generated MilvusService stub, for what pymilvus cannot express:
    empty names, the request's db_name field, an explicit dbname header, and
    response fields pymilvus hides (collection_name echo, db_name, legacy codes).
    """

    def __init__(self, address: str, timeout: float = 10.0):
        self.channel = grpc.insecure_channel(address)
        self.stub = milvus_pb2_grpc.MilvusServiceStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def call(self, rpc: str, request, header_db: str | None = None):
        metadata = None if header_db is None else [("dbname", header_db)]
        return getattr(self.stub, rpc)(request, timeout=self.timeout, metadata=metadata)

    # thin, named wrappers -------------------------------------------------
    def create_collection(self, name: str, db_name: str = "", header_db=None, schema_name=None):
        req = milvus_pb2.CreateCollectionRequest(
            db_name=db_name,
            collection_name=name,
            schema=raw_schema_bytes(name if schema_name is None else schema_name),
            consistency_level=common_pb2.Bounded,
        )
        return self.call("CreateCollection", req, header_db)

    def drop_collection(self, name: str, db_name: str = "", header_db=None):
        req = milvus_pb2.DropCollectionRequest(db_name=db_name, collection_name=name)
        return self.call("DropCollection", req, header_db)

    def has_collection(self, name: str, db_name: str = "", header_db=None):
        req = milvus_pb2.HasCollectionRequest(db_name=db_name, collection_name=name)
        return self.call("HasCollection", req, header_db)

    def describe_collection(self, name: str, db_name: str = "", header_db=None):
        req = milvus_pb2.DescribeCollectionRequest(db_name=db_name, collection_name=name)
        return self.call("DescribeCollection", req, header_db)

    def show_collections(self, db_name: str = "", header_db=None):
        req = milvus_pb2.ShowCollectionsRequest(db_name=db_name)
        return self.call("ShowCollections", req, header_db)

    def create_alias(self, coll: str, alias: str, db_name: str = "", header_db=None):
        req = milvus_pb2.CreateAliasRequest(db_name=db_name, collection_name=coll, alias=alias)
        return self.call("CreateAlias", req, header_db)

    def alter_alias(self, coll: str, alias: str, db_name: str = "", header_db=None):
        req = milvus_pb2.AlterAliasRequest(db_name=db_name, collection_name=coll, alias=alias)
        return self.call("AlterAlias", req, header_db)

    def drop_alias(self, alias: str, db_name: str = "", header_db=None):
        req = milvus_pb2.DropAliasRequest(db_name=db_name, alias=alias)
        return self.call("DropAlias", req, header_db)

    def describe_alias(self, alias: str, db_name: str = "", header_db=None):
        req = milvus_pb2.DescribeAliasRequest(db_name=db_name, alias=alias)
        return self.call("DescribeAlias", req, header_db)

    def list_aliases(self, coll: str = "", db_name: str = "", header_db=None):
        req = milvus_pb2.ListAliasesRequest(db_name=db_name, collection_name=coll)
        return self.call("ListAliases", req, header_db)

    def create_partition(self, coll: str, part: str, db_name: str = "", header_db=None):
        req = milvus_pb2.CreatePartitionRequest(
            db_name=db_name, collection_name=coll, partition_name=part
        )
        return self.call("CreatePartition", req, header_db)

    def drop_partition(self, coll: str, part: str, db_name: str = "", header_db=None):
        req = milvus_pb2.DropPartitionRequest(
            db_name=db_name, collection_name=coll, partition_name=part
        )
        return self.call("DropPartition", req, header_db)

    def has_partition(self, coll: str, part: str, db_name: str = "", header_db=None):
        req = milvus_pb2.HasPartitionRequest(
            db_name=db_name, collection_name=coll, partition_name=part
        )
        return self.call("HasPartition", req, header_db)

    def show_partitions(self, coll: str, db_name: str = "", header_db=None):
        req = milvus_pb2.ShowPartitionsRequest(db_name=db_name, collection_name=coll)
        return self.call("ShowPartitions", req, header_db)

    def create_database(self, db: str):
        return self.call("CreateDatabase", milvus_pb2.CreateDatabaseRequest(db_name=db))

    def drop_database(self, db: str):
        return self.call("DropDatabase", milvus_pb2.DropDatabaseRequest(db_name=db))

    def list_databases(self):
        return self.call("ListDatabases", milvus_pb2.ListDatabasesRequest())

    def describe_database(self, db: str):
        return self.call("DescribeDatabase", milvus_pb2.DescribeDatabaseRequest(db_name=db))


def status_of(resp) -> common_pb2.Status:
    """The common.Status of a response (or the response itself when it is one)."""
    return resp if isinstance(resp, common_pb2.Status) else resp.status


def raw_outcome(fn: Callable[[], Any], normalize: Callable[[Any], Any] = lambda r: None) -> Outcome:
    """Outcome of a raw stub call: (status.code, status.reason), or the gRPC error."""
    try:
        resp = fn()
    except grpc.RpcError as exc:
        return Outcome(f"grpc:{exc.code().name}", exc.details() or "")
    status = status_of(resp)
    if status.code != 0:
        return Outcome(status.code, status.reason)
    if status.error_code != 0:  # legacy-only failure: keep it distinguishable
        return Outcome(f"legacy:{status.error_code}", status.reason)
    return Outcome(SUCCESS, "", normalize(resp))
