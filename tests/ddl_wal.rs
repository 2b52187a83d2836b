//! DDL through the WAL (`coordinator --ddl-wal`) with real processes on loopback: the
//! coordinator binary and a `streaming-node` binary holding the control channel.
//!
//! * An alias DDL acknowledged just before the coordinator is killed (SIGKILL) is present
//!   after the restart, for concurrent DDL clients; timestamps stay monotonic.
//! * A DDL appended to the control channel but not applied to the meta store (the
//!   `ddl-after-append` failpoint aborts the process between the two) is completed when the
//!   coordinator starts again.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use collection_operator::proto::api::{
    AllocTimestampRequest, AlterAliasRequest, CreateAliasRequest, CreateCollectionRequest,
    DescribeAliasRequest,
};
use collection_operator::proto::common::Status;
use common::Client;
use common::streaming::Proc;

/// How long DDL may take to become possible (a streaming node must hold the control
/// channel: after a restart the old session's lease lapses first).
const READY: Duration = Duration::from_secs(60);

fn code(status: &Status) -> i32 {
    status.code
}

async fn connect(address: &str) -> Client {
    let addr: SocketAddr = address.parse().expect("address");
    common::connect(addr).await
}

/// Retries `call` while the server answers with the retriable code 1 (DDL waits for the
/// control channel); panics on any other failure.
async fn until_ready<F, Fut>(what: &str, mut call: F) -> Status
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Status, tonic::Status>>,
{
    let deadline = Instant::now() + READY;
    loop {
        match call().await {
            Ok(status) if code(&status) == 0 => return status,
            Ok(status) if code(&status) == 1 && Instant::now() < deadline => {}
            Ok(status) => panic!("{what}: {status:?}"),
            Err(error) if Instant::now() < deadline => {
                eprintln!("{what}: {error}; retrying");
            }
            Err(error) => panic!("{what}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_collection(client: &Client, name: &str) {
    until_ready(&format!("CreateCollection {name}"), || {
        let mut c = client.clone();
        let name = name.to_string();
        async move {
            c.create_collection(CreateCollectionRequest {
                collection_name: name.clone(),
                schema: common::valid_schema(&name),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
        }
    })
    .await;
}

async fn alias_target(client: &mut Client, alias: &str) -> Option<String> {
    let response = client
        .describe_alias(DescribeAliasRequest {
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .expect("DescribeAlias rpc")
        .into_inner();
    match response.status.as_ref().map_or(0, |s| s.code) {
        0 => Some(response.collection),
        _ => None,
    }
}

async fn timestamp(client: &mut Client) -> u64 {
    let deadline = Instant::now() + READY;
    loop {
        let response = client
            .alloc_timestamp(AllocTimestampRequest::default())
            .await
            .expect("AllocTimestamp rpc")
            .into_inner();
        if response.status.as_ref().map_or(0, |s| s.code) == 0 {
            return response.timestamp;
        }
        assert!(Instant::now() < deadline, "AllocTimestamp: {response:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a client knows about one alias: the target of the last acknowledged DDL, and the
/// target of a DDL in flight when the coordinator died (it may or may not have happened).
#[derive(Debug, Default, Clone)]
struct Known {
    acknowledged: Option<String>,
    in_flight: Option<String>,
}

/// Creates `alias-<client>-<i>` → `a`, then alters it to `b`, for ever more `i`, until an RPC
/// fails (the kill). Returns what it knows per alias.
async fn ddl_client(mut client: Client, id: usize) -> BTreeMap<String, Known> {
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    for i in 0.. {
        let alias = format!("alias_{id}_{i}");
        for (step, target) in ["a", "b"].into_iter().enumerate() {
            known.entry(alias.clone()).or_default().in_flight = Some(target.to_string());
            let answer = if step == 0 {
                client
                    .create_alias(CreateAliasRequest {
                        alias: alias.clone(),
                        collection_name: target.into(),
                        ..Default::default()
                    })
                    .await
            } else {
                client
                    .alter_alias(AlterAliasRequest {
                        alias: alias.clone(),
                        collection_name: target.into(),
                        ..Default::default()
                    })
                    .await
            };
            match answer.map(|r| r.into_inner()) {
                Ok(status) if status.code == 0 => {
                    let entry = known.entry(alias.clone()).or_default();
                    entry.acknowledged = Some(target.to_string());
                    entry.in_flight = None;
                }
                // Refused before the kill (not expected) or cut by it: stop here.
                Ok(status) => {
                    eprintln!("client {id}: {alias} -> {target}: {status:?}");
                    return known;
                }
                Err(_) => return known,
            }
        }
    }
    known
}

/// The targets of every DDL record on the control channel, in log order.
async fn logged_targets(coordinator: &str) -> Vec<String> {
    use collection_operator::proto::records::DdlWalEntry;
    use collection_operator::proto::streaming::deliver_policy;
    use collection_operator::streaming::PROP_TYPE;
    use collection_operator::streaming::client::{self, Discovery};
    use prost::Message as _;
    use tokio_stream::StreamExt;

    let mut discovery = Discovery::start(coordinator).await.expect("discovery");
    let view = discovery
        .wait_for(READY, |v| v.channels.contains_key(&v.cchannel))
        .await
        .expect("the control channel has a holder");
    let placement = &view.channels[&view.cchannel];
    let stream = client::consume(
        &placement.address,
        placement.channel.clone(),
        deliver_policy::Policy::All(()),
    )
    .await
    .expect("consume");
    tokio::pin!(stream);
    let mut targets = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), stream.next()).await
    {
        let message = message.expect("message");
        if message.properties.get(PROP_TYPE).map(String::as_str) == Some("ddl") {
            let entry = DdlWalEntry::decode(message.payload.as_slice()).expect("entry");
            targets.extend(entry.records.into_iter().map(|r| r.target));
        }
    }
    targets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_alias_ddl_survives_kill9_of_the_coordinator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("meta");
    let wal_dir = dir.path().join("wal");
    let port = common::free_port();
    let flags = ["--ddl-wal"];
    let mut coordinator = Proc::coordinator_with(&data_dir, port, 2, 1000, &flags);
    let _node = Proc::node(&coordinator.address, &wal_dir);
    let mut client = connect(&coordinator.address).await;
    create_collection(&client, "a").await;
    create_collection(&client, "b").await;

    for round in 0..3 {
        // Concurrent DDL clients; the coordinator dies right after one of the main client's
        // CreateAlias/AlterAlias is acknowledged.
        let workers: Vec<_> = (1..=3)
            .map(|id| tokio::spawn(ddl_client(client.clone(), round * 10 + id)))
            .collect();
        let main_alias = format!("main_{round}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        common::create_alias_in(&mut client, "", &main_alias, "a").await;
        let status = client
            .alter_alias(AlterAliasRequest {
                alias: main_alias.clone(),
                collection_name: "b".into(),
                ..Default::default()
            })
            .await
            .expect("AlterAlias rpc")
            .into_inner();
        assert_eq!(status.code, 0, "AlterAlias {main_alias}: {status:?}");
        let before_kill = timestamp(&mut client).await;
        coordinator.kill9();
        let acknowledged_at = Instant::now();
        let mut known = BTreeMap::new();
        for worker in workers {
            known.extend(worker.await.expect("client task"));
        }

        coordinator = Proc::coordinator_with(&data_dir, port, 2, 1000, &flags);
        client = connect(&coordinator.address).await;
        // The first timestamp after the restart: above everything handed out before.
        let after = timestamp(&mut client).await;
        assert!(
            after > before_kill,
            "round {round}: TSO went backwards: {after} after {before_kill}"
        );
        assert_eq!(
            alias_target(&mut client, &main_alias).await.as_deref(),
            Some("b"),
            "round {round}: the acknowledged AlterAlias {main_alias} -> b is lost"
        );
        let mut checked = 0;
        for (alias, known) in &known {
            let actual = alias_target(&mut client, alias).await;
            let allowed: Vec<Option<String>> = match (&known.acknowledged, &known.in_flight) {
                (acknowledged, None) => vec![acknowledged.clone()],
                (acknowledged, Some(in_flight)) => {
                    vec![acknowledged.clone(), Some(in_flight.clone())]
                }
            };
            assert!(
                allowed.contains(&actual),
                "round {round}: alias {alias} is {actual:?}, expected one of {allowed:?} ({known:?})"
            );
            checked += 1;
        }
        // DDL works again (through a streaming node that took the control channel over).
        let probe = format!("probe_{round}");
        until_ready("CreateAlias after restart", || {
            let mut c = client.clone();
            let probe = probe.clone();
            async move {
                c.create_alias(CreateAliasRequest {
                    alias: probe,
                    collection_name: "a".into(),
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
            }
        })
        .await;
        let logged = logged_targets(&coordinator.address).await;
        assert!(
            logged.iter().filter(|t| **t == main_alias).count() >= 2,
            "round {round}: CreateAlias and AlterAlias of {main_alias} went through the control channel"
        );
        println!(
            "round {round}: {checked} aliases of 3 concurrent clients checked after kill -9; \
             DDL writable again {:?} after the kill",
            acknowledged_at.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_appended_but_not_applied_is_completed_on_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("meta");
    let wal_dir = dir.path().join("wal");
    let port = common::free_port();
    let flags = ["--ddl-wal"];
    let mut coordinator = Proc::coordinator_with(&data_dir, port, 1, 1000, &flags);
    let _node = Proc::node(&coordinator.address, &wal_dir);
    let mut client = connect(&coordinator.address).await;
    create_collection(&client, "target").await;
    coordinator.kill9();

    // The failpoint aborts the process after the control channel acknowledged the
    // CreateAlias and before the meta store commit: the client sees the connection die.
    coordinator = Proc::coordinator_env(
        &data_dir,
        port,
        1,
        1000,
        &flags,
        &[("COLLECTION_OPERATOR_FAILPOINT", "ddl-after-append")],
    );
    client = connect(&coordinator.address).await;
    let deadline = Instant::now() + READY;
    loop {
        let answer = client
            .create_alias(CreateAliasRequest {
                alias: "interrupted".into(),
                collection_name: "target".into(),
                ..Default::default()
            })
            .await;
        match answer.map(|r| r.into_inner()) {
            Ok(status) if status.code == 1 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(status) => panic!("CreateAlias was answered despite the failpoint: {status:?}"),
            Err(error) => {
                println!("CreateAlias cut by the failpoint: {error}");
                break;
            }
        }
    }
    let status = coordinator.child.wait().expect("reap");
    assert!(!status.success(), "the failpoint aborts the coordinator");

    coordinator = Proc::coordinator_with(&data_dir, port, 1, 1000, &flags);
    client = connect(&coordinator.address).await;
    // Reads are served from the store at once; the writer completes the DDL when it has
    // synced with the control channel, before it takes any other DDL.
    until_ready("CreateAlias after restart", || {
        let mut c = client.clone();
        async move {
            c.create_alias(CreateAliasRequest {
                alias: "after".into(),
                collection_name: "target".into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
        }
    })
    .await;
    assert_eq!(
        alias_target(&mut client, "interrupted").await.as_deref(),
        Some("target"),
        "the DDL appended before the abort was not completed on recovery"
    );
    assert_eq!(
        alias_target(&mut client, "after").await.as_deref(),
        Some("target")
    );
}
