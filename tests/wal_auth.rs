//! The WAL plane under authentication, with real processes on loopback (the coordinator
//! binary with `--ddl-wal` and `streaming-node` binaries):
//!
//! * `coordinator --auth-token-file F --ddl-wal` with nodes given the same file: DDL
//!   through raw gRPC with the token succeeds (it used to fail after 10 s with the nodes
//!   refused as "missing authorization in header").
//! * With a separate internal credential, every attack of a local process that knows no
//!   credential, or only a client's, is refused: registering a fake node, reading the
//!   control channel, producing a forged DDL, and Assign with a huge term (which would brick
//!   every later DDL); the assignment without any credential. DDL keeps working, also after
//!   a restart.
//! * An entry on the control channel with a TSO bound of 2^47 and an ID allocator at
//!   i64::MAX (what only a holder of the internal credential could write) is refused by the
//!   recovery: timestamps and IDs stay sane after the restart.
//! * A node that requires credentials answers `grpc.health.v1` probes without one: ready
//!   while it holds its coordinator session, alive throughout.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use collection_operator::auth::Credential;
use collection_operator::proto::api::{
    AllocTimestampRequest, CreateAliasRequest, CreateCollectionRequest, DescribeAliasRequest,
    DescribeCollectionRequest, ShowCollectionsRequest,
};
use collection_operator::proto::common::Status;
use collection_operator::proto::session::RegisterRequest;
use collection_operator::proto::session::streaming_node_session_service_client::StreamingNodeSessionServiceClient;
use collection_operator::proto::streaming::streaming_node_manager_service_client::StreamingNodeManagerServiceClient;
use collection_operator::proto::streaming::{
    PChannelInfo, StreamingNodeManagerAssignRequest, deliver_policy,
};
use collection_operator::streaming::client::{self, ClientError, Discovery, Producer};
use collection_operator::streaming::{PROP_TYPE, PROP_VCHANNEL, cchannel_name};
use common::Client;
use common::streaming::Proc;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const CLIENT_TOKEN: &str = "client-s3cret";
const INTERNAL_TOKEN: &str = "internal-s3cret";
/// How long DDL may take to become possible (a node must hold the control channel).
const READY: Duration = Duration::from_secs(60);

fn write_tokens(dir: &Path, name: &str, token: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).expect("token file");
    path.to_str().expect("utf-8 path").to_string()
}

fn header(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(token)
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        header(token).parse().expect("ascii header"),
    );
    request
}

async fn connect(address: &str) -> Client {
    let addr: SocketAddr = address.parse().expect("address");
    common::connect(addr).await
}

/// Runs a DDL until it succeeds; retries while the control channel has no holder yet
/// (code 1) and panics on any other answer.
async fn ddl<F, Fut>(what: &str, mut call: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<Status>, tonic::Status>>,
{
    let deadline = Instant::now() + READY;
    loop {
        match call().await {
            Ok(status) if status.get_ref().code == 0 => return,
            Ok(status) if status.get_ref().code == 1 && Instant::now() < deadline => {}
            Ok(status) => panic!("{what}: {:?}", status.get_ref()),
            Err(error) if Instant::now() < deadline => eprintln!("{what}: {error}; retrying"),
            Err(error) => panic!("{what}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_collection(client: &Client, token: &str, name: &str) {
    ddl(&format!("CreateCollection {name}"), || {
        let mut client = client.clone();
        let request = authorized(
            CreateCollectionRequest {
                collection_name: name.into(),
                schema: common::valid_schema(name),
                ..Default::default()
            },
            token,
        );
        async move { client.create_collection(request).await }
    })
    .await;
}

async fn create_alias(client: &Client, token: &str, alias: &str, collection: &str) {
    ddl(&format!("CreateAlias {alias} -> {collection}"), || {
        let mut client = client.clone();
        let request = authorized(
            CreateAliasRequest {
                alias: alias.into(),
                collection_name: collection.into(),
                ..Default::default()
            },
            token,
        );
        async move { client.create_alias(request).await }
    })
    .await;
}

async fn alias_target(client: &mut Client, token: &str, alias: &str) -> String {
    let response = client
        .describe_alias(authorized(
            DescribeAliasRequest {
                alias: alias.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .expect("DescribeAlias rpc")
        .into_inner();
    common::assert_ok(response.status.as_ref().expect("status"), "DescribeAlias");
    response.collection
}

async fn timestamp(client: &mut Client, token: &str) -> u64 {
    let response = client
        .alloc_timestamp(authorized(AllocTimestampRequest::default(), token))
        .await
        .expect("AllocTimestamp rpc")
        .into_inner();
    common::assert_ok(response.status.as_ref().expect("status"), "AllocTimestamp");
    response.timestamp
}

/// Asserts the call was refused as unauthenticated (not merely failed).
#[track_caller]
fn assert_unauthenticated<T>(what: &str, result: Result<T, ClientError>) {
    match result {
        Err(ClientError::Rpc(status)) => assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{what}: {status:?}"
        ),
        Err(other) => panic!("{what}: refused for another reason: {other}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_and_ddl_through_the_wal_work_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    // What a managed Coordinator with credentials runs: one token file for the clients,
    // the coordinator's WAL plane and the nodes.
    let tokens = write_tokens(dir.path(), "tokens", CLIENT_TOKEN);
    let port = common::free_port();
    let flags = ["--ddl-wal", "--auth-token-file", tokens.as_str()];
    let coordinator = Proc::coordinator_with(&dir.path().join("meta"), port, 2, 1000, &flags);
    let node_flags = ["--auth-token-file", tokens.as_str()];
    let _nodes: Vec<Proc> = ["127.0.0.1", "127.0.0.2"]
        .iter()
        .map(|ip| {
            Proc::node_with(
                &coordinator.address,
                &dir.path().join("wal"),
                ip,
                &node_flags,
            )
        })
        .collect();
    let mut client = connect(&coordinator.address).await;
    let started = Instant::now();
    create_collection(&client, CLIENT_TOKEN, "books").await;
    create_alias(&client, CLIENT_TOKEN, "library", "books").await;
    assert_eq!(
        alias_target(&mut client, CLIENT_TOKEN, "library").await,
        "books"
    );
    eprintln!("first DDL through the WAL after {:?}", started.elapsed());
    // The Milvus endpoint still refuses a client without the token, as Milvus does.
    let refused = client
        .show_collections(ShowCollectionsRequest::default())
        .await
        .expect_err("no credential");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert_eq!(refused.message(), "missing authorization in header");
}

/// The holder of the control channel, seen with the internal credential.
async fn control_channel(coordinator: &str, internal: &Credential) -> (String, PChannelInfo) {
    let mut discovery = Discovery::start_as(coordinator, Some(internal))
        .await
        .expect("discovery with the internal credential");
    let view = discovery
        .wait_for(READY, |v| v.channels.contains_key(&v.cchannel))
        .await
        .expect("the control channel has a holder");
    let placement = &view.channels[&view.cchannel];
    (placement.address.clone(), placement.channel.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_plane_refuses_every_caller_without_the_internal_credential() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client_tokens = write_tokens(dir.path(), "client", CLIENT_TOKEN);
    let internal_tokens = write_tokens(dir.path(), "internal", INTERNAL_TOKEN);
    let port = common::free_port();
    let data_dir = dir.path().join("meta");
    let flags = [
        "--ddl-wal",
        "--auth-token-file",
        client_tokens.as_str(),
        "--internal-token-file",
        internal_tokens.as_str(),
    ];
    let mut coordinator = Proc::coordinator_with(&data_dir, port, 1, 1000, &flags);
    let node_flags = ["--auth-token-file", internal_tokens.as_str()];
    let wal_dir = dir.path().join("wal");
    let _node = Proc::node_with(&coordinator.address, &wal_dir, "127.0.0.1", &node_flags);
    let client = connect(&coordinator.address).await;
    create_collection(&client, CLIENT_TOKEN, "a").await;
    create_collection(&client, CLIENT_TOKEN, "b").await;
    create_alias(&client, CLIENT_TOKEN, "prod", "a").await;

    let internal = Credential::new(INTERNAL_TOKEN).expect("credential");
    let client_credential = Credential::new(CLIENT_TOKEN).expect("credential");
    let (holder, channel) = control_channel(&coordinator.address, &internal).await;
    for (who, credential) in [
        ("no credential", None),
        ("a client's credential", Some(&client_credential)),
    ] {
        // The assignment (where the control channel is) is for the nodes and clients
        // (the operator drains nodes with it), not for anyone.
        if credential.is_none() {
            assert_unauthenticated(
                "AssignmentDiscover with no credential",
                Discovery::start_as(&coordinator.address, credential).await,
            );
        }
        // Read the control channel: every DDL.
        assert_unauthenticated(
            &format!("Consume of the control channel with {who}"),
            client::consume_as(
                &holder,
                channel.clone(),
                deliver_policy::Policy::All(()),
                credential,
            )
            .await,
        );
        // Produce a forged DDL entry.
        assert_unauthenticated(
            &format!("Produce to the control channel with {who}"),
            Producer::open_as(&holder, channel.clone(), credential).await,
        );
        // Assign with a term of 1e9: the coordinator's terms could never catch up.
        let mut manager = StreamingNodeManagerServiceClient::new(
            client::connect(&holder).await.expect("connect"),
        );
        let mut assign = tonic::Request::new(StreamingNodeManagerAssignRequest {
            pchannel: Some(PChannelInfo {
                term: 1_000_000_000,
                ..channel.clone()
            }),
        });
        if let Some(credential) = credential {
            credential.attach(assign.metadata_mut());
        }
        assert_unauthenticated(
            &format!("Assign(term = 1e9) with {who}"),
            manager.assign(assign).await.map_err(ClientError::Rpc),
        );
        // Register a fake node to be handed the control channel.
        let mut session = StreamingNodeSessionServiceClient::new(
            client::connect(&coordinator.address)
                .await
                .expect("connect"),
        );
        let mut register = tonic::Request::new(RegisterRequest {
            address: "127.0.0.1:1".into(),
        });
        if let Some(credential) = credential {
            credential.attach(register.metadata_mut());
        }
        assert_unauthenticated(
            &format!("Register of a fake node with {who}"),
            session.register(register).await.map_err(ClientError::Rpc),
        );
    }
    // A node that does not know the internal credential is never registered, so it is
    // never handed a channel (it keeps retrying, refused).
    let _stranger = Proc::node_with(&coordinator.address, &wal_dir, "127.0.0.2", &[]);

    // Nothing was bricked: DDL works, and again after a restart.
    create_alias(&client, CLIENT_TOKEN, "staging", "b").await;
    coordinator.kill9();
    coordinator = Proc::coordinator_with(&data_dir, port, 1, 1000, &flags);
    let mut client = connect(&coordinator.address).await;
    create_alias(&client, CLIENT_TOKEN, "canary", "b").await;
    assert_eq!(alias_target(&mut client, CLIENT_TOKEN, "prod").await, "a");
    assert_eq!(
        alias_target(&mut client, CLIENT_TOKEN, "staging").await,
        "b"
    );
    let (holder_after, channel_after) = control_channel(&coordinator.address, &internal).await;
    assert_eq!(
        holder_after, holder,
        "the stranger node was handed the control channel"
    );
    assert!(channel_after.term < 1_000_000, "{channel_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_refuses_entries_with_a_wrapped_tso_or_id() {
    use collection_operator::proto::records::DdlWalEntry;
    use prost::Message as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = write_tokens(dir.path(), "tokens", CLIENT_TOKEN);
    let port = common::free_port();
    let data_dir = dir.path().join("meta");
    let flags = ["--ddl-wal", "--auth-token-file", tokens.as_str()];
    let mut coordinator = Proc::coordinator_with(&data_dir, port, 1, 1000, &flags);
    let node_flags = ["--auth-token-file", tokens.as_str()];
    let _node = Proc::node_with(
        &coordinator.address,
        &dir.path().join("wal"),
        "127.0.0.1",
        &node_flags,
    );
    let mut client = connect(&coordinator.address).await;
    create_collection(&client, CLIENT_TOKEN, "first").await;
    let before = timestamp(&mut client, CLIENT_TOKEN).await;

    // An entry no coordinator writes, appended with the credential.
    let credential = Credential::new(CLIENT_TOKEN).expect("credential");
    let (holder, channel) = control_channel(&coordinator.address, &credential).await;
    let mut producer = Producer::open_as(&holder, channel.clone(), Some(&credential))
        .await
        .expect("producer with the credential");
    let forged = DdlWalEntry {
        records: Vec::new(),
        next_id: i64::MAX,
        tso_bound_ms: 1 << 47,
    };
    let vchannel = cchannel_name(&channel.name);
    producer
        .produce(client::message(
            forged.encode_to_vec(),
            &[(PROP_TYPE, "ddl"), (PROP_VCHANNEL, vchannel.as_str())],
        ))
        .await
        .expect("appended");
    drop(producer);

    coordinator.kill9();
    coordinator = Proc::coordinator_with(&data_dir, port, 1, 1000, &flags);
    client = connect(&coordinator.address).await;
    create_collection(&client, CLIENT_TOKEN, "second").await;
    let after = timestamp(&mut client, CLIENT_TOKEN).await;
    assert!(after > before, "TSO went backwards: {after} after {before}");
    let physical_ms = after >> 18;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    assert!(
        physical_ms <= now_ms + 60_000,
        "the TSO jumped to {physical_ms} ms (now {now_ms} ms): the forged bound was trusted"
    );
    for name in ["first", "second"] {
        let described = client
            .describe_collection(authorized(
                DescribeCollectionRequest {
                    collection_name: name.into(),
                    ..Default::default()
                },
                CLIENT_TOKEN,
            ))
            .await
            .expect("DescribeCollection rpc")
            .into_inner();
        common::assert_ok(
            described.status.as_ref().expect("status"),
            "DescribeCollection",
        );
        assert!(
            (100..1 << 40).contains(&described.collection_id),
            "{name}: collection ID {} (the forged allocator was trusted)",
            described.collection_id
        );
    }
}

/// `grpc.health.v1` status of `service` on a node, asked without any credential (as the
/// kubelet's `grpc:` probe asks).
async fn node_health(address: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the node");
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("grpc.health.v1 Check without a credential")
        .into_inner();
    ServingStatus::try_from(reply.status).expect("a known status")
}

/// Polls `service` on `address` until it reports `want`.
async fn await_health(address: &str, service: &str, want: ServingStatus) {
    let deadline = Instant::now() + READY;
    loop {
        let status = node_health(address, service).await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{service:?} stayed {status:?}, wanted {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A streaming node that requires credentials still answers the kubelet's health probes,
/// which carry none: ready while it holds a session with the coordinator, not ready once
/// the coordinator is gone (its lease lapses), ready again when a coordinator is back;
/// alive throughout, so losing the coordinator never restarts the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_health_follows_its_coordinator_session_without_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let internal_tokens = write_tokens(dir.path(), "internal", INTERNAL_TOKEN);
    let port = common::free_port();
    let data_dir = dir.path().join("meta");
    let flags = ["--internal-token-file", internal_tokens.as_str()];
    let mut coordinator = Proc::coordinator_with(&data_dir, port, 1, 1000, &flags);
    let node_flags = ["--auth-token-file", internal_tokens.as_str()];
    let node = Proc::node_with(
        &coordinator.address,
        &dir.path().join("wal"),
        "127.0.0.1",
        &node_flags,
    );
    let ready = collection_operator::streaming::node::READY_HEALTH_SERVICES;
    let live = collection_operator::streaming::node::LIVE_HEALTH_SERVICE;

    for service in ready {
        await_health(&node.address, service, ServingStatus::Serving).await;
    }
    assert_eq!(
        node_health(&node.address, live).await,
        ServingStatus::Serving
    );

    coordinator.kill9();
    // The 1 s lease lapses without renewals.
    await_health(&node.address, ready[0], ServingStatus::NotServing).await;
    assert_eq!(
        node_health(&node.address, ready[1]).await,
        ServingStatus::NotServing
    );
    assert_eq!(
        node_health(&node.address, live).await,
        ServingStatus::Serving
    );

    let _coordinator = Proc::coordinator_with(&data_dir, port, 1, 1000, &flags);
    await_health(&node.address, ready[0], ServingStatus::Serving).await;

    // A name the node does not answer for is NOT_FOUND, as the health protocol asks.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.address))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let unknown = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "milvus.proto.milvus.MilvusService".into(),
        })
        .await
        .expect_err("an unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
}
