"""Connection-level RPCs: pymilvus can connect
(Connect with a non-zero identifier), GetVersion, CheckHealth and
GetComponentStates answer like a healthy Milvus proxy, and the headers pymilvus
sends after Connect (identifier, dbname) are accepted.
"""

from pymilvus.grpc_gen import common_pb2, milvus_pb2

from ddl import expect_success


def test_milvus_client_connects_and_reports_a_version(client):
    version = client.get_server_version()
    assert isinstance(version, str) and version != ""


def test_connect_returns_identifier(raw):
    resp = raw.call("Connect", milvus_pb2.ConnectRequest(client_info=common_pb2.ClientInfo(sdk_type="Python")))
    expect_success(resp.status)
    assert resp.identifier != 0


def test_get_version(raw):
    resp = raw.call("GetVersion", milvus_pb2.GetVersionRequest())
    expect_success(resp.status)
    assert resp.version != ""


def test_check_health(raw):
    resp = raw.call("CheckHealth", milvus_pb2.CheckHealthRequest())
    expect_success(resp.status)
    assert resp.isHealthy is True
    assert list(resp.reasons) == []


def test_get_component_states(raw):
    resp = raw.call("GetComponentStates", milvus_pb2.GetComponentStatesRequest())
    expect_success(resp.status)
    assert resp.state.role == "proxy"
    assert resp.state.state_code == common_pb2.Healthy


def test_calls_with_identifier_header_are_accepted(raw, server):
    resp = raw.call("Connect", milvus_pb2.ConnectRequest())
    shown = raw.stub.ShowCollections(
        milvus_pb2.ShowCollectionsRequest(),
        timeout=10,
        metadata=[("identifier", str(resp.identifier)), ("dbname", "")],
    )
    expect_success(shown.status)
