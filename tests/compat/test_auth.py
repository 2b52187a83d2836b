"""Authentication and TLS of the engine endpoint.

With authentication on, Milvus refuses every RPC, Connect included, with the gRPC
status UNAUTHENTICATED and one of four messages (measured on Milvus 2.3.5 with
``common.security.authorizationEnabled: true``; same texts in
``internal/proxy/authentication_interceptor.go``). pymilvus 3.0.2 does not retry
UNAUTHENTICATED and turns it, while constructing a client, into
``MilvusException(code=2, "Fail connecting to server on HOST:PORT, illegal connection
params or server unavailable")`` whose ``__cause__`` is that gRPC error.

The pymilvus suite's target decides the server (see conftest.py):

* ``COMPAT_TARGET=coordinator``: our coordinator with a token file holding an API
  token and ``root:Milvus``, plus one token in ``COORDINATOR_AUTH_TOKENS``.
* ``COMPAT_TARGET=milvus235``: real Milvus 2.3.5 with authorization enabled, whose
  only credential is the default ``root:Milvus`` (open-source Milvus has no API
  tokens). This proves the expected codes and messages below.

The TLS tests always start their own coordinator with a certificate generated at test
time by the ``openssl`` CLI.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import grpc
import pytest
from pymilvus import MilvusClient
from pymilvus.exceptions import MilvusException
from pymilvus.grpc_gen import milvus_pb2, milvus_pb2_grpc

from conftest import compat_target
from ddl import expect_success
from servers import CoordinatorServer, Milvus235Server, auth_metadata, open_channel

# --- what Milvus answers (measured on 2.3.5) --------------------------------------

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
MISSING = "missing authorization in header"
INVALID_FORMAT = "invalid token format"
WRONG_API_KEY = "auth check failure, please check api key is correct"
WRONG_USER_PASSWORD = "auth check failure, please check username and password are correct"
PYMILVUS_CONNECT_FAILED = 2  # pymilvus Status.CONNECT_FAILED


def pymilvus_connect_failed(address: str) -> str:
    return (
        f"Fail connecting to server on {address}, illegal connection params or server "
        "unavailable"
    )


# --- credentials -------------------------------------------------------------------

ROOT_USER, ROOT_PASSWORD = "root", "Milvus"  # Milvus's default root user
API_TOKEN = "s3cret-" + uuid.uuid4().hex  # coordinator only
ENV_TOKEN = "env-" + uuid.uuid4().hex  # coordinator only, via COORDINATOR_AUTH_TOKENS


def accepted_tokens() -> list[str]:
    """Credentials the target accepts, as pymilvus ``token=`` values."""
    if compat_target() == "milvus235":
        return [f"{ROOT_USER}:{ROOT_PASSWORD}"]
    return [API_TOKEN, f"{ROOT_USER}:{ROOT_PASSWORD}", ENV_TOKEN]


@pytest.fixture(scope="module")
def secured():
    """A server of the compat target with authentication on."""
    root_token = f"{ROOT_USER}:{ROOT_PASSWORD}"
    if compat_target() == "milvus235":
        server = Milvus235Server(config={"authorization_enabled": True}, ready_token=root_token)
        try:
            yield server.start()
        finally:
            server.stop()
        return
    folder = Path(tempfile.mkdtemp(prefix="auth-tokens-"))
    token_file = folder / "tokens"
    token_file.write_text(f"{API_TOKEN}\n\n  {root_token}  \n")
    server = CoordinatorServer(
        extra_args=["--auth-token-file", str(token_file)],
        env={"COORDINATOR_AUTH_TOKENS": f"{ENV_TOKEN}, unused-{uuid.uuid4().hex}"},
        ready_token=API_TOKEN,
    )
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def raw_call(handle, rpc: str, request, metadata):
    channel = grpc.insecure_channel(handle.address)
    try:
        return getattr(milvus_pb2_grpc.MilvusServiceStub(channel), rpc)(
            request, timeout=10, metadata=metadata
        )
    finally:
        channel.close()


def expect_unauthenticated(handle, rpc: str, request, metadata, message: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        raw_call(handle, rpc, request, metadata)
    assert info.value.code() == UNAUTHENTICATED, info.value
    assert info.value.details() == message


def expect_client_refused(handle, message: str, **credentials) -> None:
    """``MilvusClient(uri, **credentials)`` fails as pymilvus reports a refused Connect."""
    with pytest.raises(MilvusException) as info:
        MilvusClient(handle.uri, timeout=10, **credentials)
    assert info.value.code == PYMILVUS_CONNECT_FAILED, info.value
    assert info.value.message == pymilvus_connect_failed(handle.address)
    cause = info.value.__cause__
    assert isinstance(cause, grpc.RpcError), repr(cause)
    assert cause.code() == UNAUTHENTICATED
    assert cause.details() == message


RPCS = [
    ("Connect", milvus_pb2.ConnectRequest()),
    ("GetVersion", milvus_pb2.GetVersionRequest()),
    ("CheckHealth", milvus_pb2.CheckHealthRequest()),
    ("ShowCollections", milvus_pb2.ShowCollectionsRequest()),
    ("DescribeAlias", milvus_pb2.DescribeAliasRequest(alias="nosuch")),
    ("CreateAlias", milvus_pb2.CreateAliasRequest(collection_name="nosuch", alias="z")),
]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- accepted -------------------------------------------------------------------------


@pytest.mark.parametrize("token", accepted_tokens(), ids=lambda t: t.split(":")[0][:6])
def test_right_token_works(secured, token):
    client = MilvusClient(secured.uri, token=token, timeout=10)
    name = f"auth_{uuid.uuid4().hex[:8]}"
    try:
        client.create_collection(name, dimension=4)
        client.create_alias(name, f"{name}_live")
        assert client.describe_alias(f"{name}_live")["collection_name"] == name
        assert name in client.list_collections()
    finally:
        try:
            client.drop_alias(f"{name}_live")
            client.drop_collection(name)
        finally:
            client.close()


def test_user_and_password_work(secured):
    client = MilvusClient(secured.uri, user=ROOT_USER, password=ROOT_PASSWORD, timeout=10)
    try:
        assert isinstance(client.list_collections(), list)
        assert client.get_server_version() != ""
    finally:
        client.close()


@pytest.mark.parametrize("rpc,request_", RPCS, ids=[r for r, _ in RPCS])
def test_right_header_passes_every_rpc(secured, rpc, request_):
    response = raw_call(secured, rpc, request_, auth_metadata(accepted_tokens()[0]))
    status = response if rpc == "CreateAlias" else response.status
    if rpc in ("DescribeAlias", "CreateAlias"):
        assert status.code != 0  # a normal Milvus error: the call got through
    else:
        expect_success(status)


# --- refused ----------------------------------------------------------------------------


def test_missing_token_is_refused(secured):
    expect_client_refused(secured, MISSING)


def test_wrong_token_is_refused(secured):
    expect_client_refused(secured, WRONG_API_KEY, token="not-a-valid-token")


def test_wrong_password_is_refused(secured):
    expect_client_refused(secured, WRONG_USER_PASSWORD, user=ROOT_USER, password="wrong")
    expect_client_refused(secured, WRONG_USER_PASSWORD, token=f"{ROOT_USER}:wrong")
    expect_client_refused(secured, WRONG_USER_PASSWORD, user="nobody", password=ROOT_PASSWORD)


@pytest.mark.parametrize("rpc,request_", RPCS, ids=[r for r, _ in RPCS])
@pytest.mark.parametrize(
    "metadata,message",
    [
        (None, MISSING),
        ([("authorization", b64("not-a-valid-token"))], WRONG_API_KEY),
        ([("authorization", b64(f"{ROOT_USER}:wrong"))], WRONG_USER_PASSWORD),
        ([("authorization", "")], WRONG_API_KEY),
        ([("authorization", "%%%not-base64")], INVALID_FORMAT),
        ([("authorization", "Bearer " + b64(f"{ROOT_USER}:{ROOT_PASSWORD}"))], INVALID_FORMAT),
    ],
    ids=["missing", "wrong-token", "wrong-password", "empty", "not-base64", "bearer"],
)
def test_every_rpc_refuses_bad_credentials(secured, rpc, request_, metadata, message):
    expect_unauthenticated(secured, rpc, request_, metadata, message)


# --- TLS (our coordinator) ----------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate():
    """A self-signed certificate for 127.0.0.1 / localhost and its key (PEM files)."""
    openssl = shutil.which("openssl")
    assert openssl, "the TLS tests need the openssl CLI (Debian package openssl)"
    folder = Path(tempfile.mkdtemp(prefix="auth-tls-"))
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=collection-operator test",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature",
            "-addext", "extendedKeyUsage=serverAuth",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield cert, key
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_coordinator(certificate):
    """Our coordinator with TLS and a token, logging at debug (see the log test)."""
    cert, key = certificate
    folder = Path(tempfile.mkdtemp(prefix="auth-tls-tokens-"))
    (folder / "tokens").write_text(f"{API_TOKEN}\n{ROOT_USER}:{ROOT_PASSWORD}\n")
    server = CoordinatorServer(
        extra_args=[
            "--tls-cert", str(cert), "--tls-key", str(key),
            "--auth-token-file", str(folder / "tokens"),
        ],
        env={"RUST_LOG": "debug"},
        ready_token=API_TOKEN,
        root_cert=cert.read_bytes(),
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_server(tls_coordinator):
    return tls_coordinator.handle


def test_tls_with_token(tls_server, certificate):
    cert, _ = certificate
    assert tls_server.uri.startswith("https://")
    client = MilvusClient(
        tls_server.uri, token=API_TOKEN, server_pem_path=str(cert), timeout=10
    )
    try:
        assert isinstance(client.list_collections(), list)
    finally:
        client.close()


def test_tls_refuses_missing_token(tls_server, certificate):
    cert, _ = certificate
    channel = open_channel(tls_server.address, cert.read_bytes())
    try:
        with pytest.raises(grpc.RpcError) as info:
            milvus_pb2_grpc.MilvusServiceStub(channel).Connect(
                milvus_pb2.ConnectRequest(), timeout=10
            )
    finally:
        channel.close()
    assert info.value.code() == UNAUTHENTICATED
    assert info.value.details() == MISSING


def test_plaintext_client_cannot_talk_to_tls_server(tls_server):
    with pytest.raises(grpc.RpcError) as info:
        raw_call(tls_server, "Connect", milvus_pb2.ConnectRequest(), auth_metadata(API_TOKEN))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_untrusted_certificate_is_refused(tls_server):
    # The system roots do not contain the self-signed certificate.
    channel = grpc.secure_channel(tls_server.address, grpc.ssl_channel_credentials())
    try:
        with pytest.raises(grpc.RpcError) as info:
            milvus_pb2_grpc.MilvusServiceStub(channel).Connect(
                milvus_pb2.ConnectRequest(), timeout=10, metadata=auth_metadata(API_TOKEN)
            )
    finally:
        channel.close()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_secrets_never_reach_the_log(tls_coordinator, certificate):
    """Even at debug level, the log names no token, password or header value."""
    cert, _ = certificate
    handle = tls_coordinator.handle
    for credentials in (
        {"token": API_TOKEN},
        {"user": ROOT_USER, "password": ROOT_PASSWORD},
        {"token": "not-a-valid-token"},
        {"user": ROOT_USER, "password": "wrong-password"},
    ):
        try:
            MilvusClient(handle.uri, server_pem_path=str(cert), timeout=10, **credentials).close()
        except MilvusException:
            pass
    log = tls_coordinator.log_path.read_text(errors="replace")
    assert "coordinator serving MilvusService" in log
    assert "request rejected: not authenticated" in log  # the debug lines are there
    for secret in (
        API_TOKEN,
        f"{ROOT_USER}:{ROOT_PASSWORD}",
        "not-a-valid-token",
        "wrong-password",
    ):
        assert secret not in log
        assert b64(secret) not in log
