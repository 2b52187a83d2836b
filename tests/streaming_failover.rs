//! WAL placement with real processes on loopback: the `collection-operator coordinator`
//! binary (streaming coordinator inside) and several `collection-operator streaming-node`
//! binaries sharing one WAL directory (the ReadWriteMany story), driven over gRPC.
//!
//! Short leases (1 s, grace 0.3 s) keep failovers quick; waits are bounded but nothing
//! asserts a duration (failover times are printed; the bench measures them).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use collection_operator::proto::streaming::streaming_coord_assignment_service_client::StreamingCoordAssignmentServiceClient;
use collection_operator::proto::streaming::streaming_node_manager_service_client::StreamingNodeManagerServiceClient;
use collection_operator::proto::streaming::*;
use collection_operator::streaming::client::{
    self, AssignmentView, ClientError, Discovery, Producer, message,
};
use collection_operator::streaming::{PROP_TERM, PROP_TYPE, TYPE_TERM_START};
use common::streaming::{Proc, WAIT};
use tokio_stream::StreamExt;

struct Cluster {
    _dir: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    wal_dir: std::path::PathBuf,
    port: u16,
    coordinator: Proc,
    nodes: Vec<Proc>,
}

impl Cluster {
    fn start(pchannels: usize, nodes: usize, lease_ms: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("meta");
        let wal_dir = dir.path().join("wal");
        let port = common::free_port();
        let coordinator = Proc::coordinator(&data_dir, port, pchannels, lease_ms);
        let nodes = (0..nodes)
            .map(|_| Proc::node(&coordinator.address, &wal_dir))
            .collect();
        Self {
            _dir: dir,
            data_dir,
            wal_dir,
            port,
            coordinator,
            nodes,
        }
    }

    fn add_node(&mut self) -> usize {
        self.nodes
            .push(Proc::node(&self.coordinator.address, &self.wal_dir));
        self.nodes.len() - 1
    }

    fn node_index(&self, address: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.address == address)
            .expect("a node of ours")
    }
}

async fn all_assigned(discovery: &mut Discovery, count: usize) -> AssignmentView {
    discovery
        .wait_for(WAIT, |view| view.channels.len() == count)
        .await
        .expect("every pchannel assigned")
}

fn seq_message(seq: u64) -> collection_operator::proto::messages::Message {
    let mut payload = vec![0u8; 64];
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    message(payload, &[("seq", &seq.to_string())])
}

/// Reads `channel` from the start at its current holder until `done` says so (bounded).
async fn read_log(
    placement: &client::Placement,
    mut done: impl FnMut(&[collection_operator::proto::common::ImmutableMessage]) -> bool,
) -> Vec<collection_operator::proto::common::ImmutableMessage> {
    let mut stream = Box::pin(
        client::consume(
            &placement.address,
            placement.channel.clone(),
            deliver_policy::Policy::All(()),
        )
        .await
        .expect("consume opens"),
    );
    let mut records = Vec::new();
    let read = async {
        while !done(&records) {
            match stream.next().await {
                Some(Ok(record)) => records.push(record),
                other => panic!("consume ended early: {other:?}"),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the log was read in time");
    records
}

fn term_of(record: &collection_operator::proto::common::ImmutableMessage) -> i64 {
    record.properties[PROP_TERM].parse().expect("term")
}

fn is_term_start(record: &collection_operator::proto::common::ImmutableMessage) -> bool {
    record.properties.get(PROP_TYPE).map(String::as_str) == Some(TYPE_TERM_START)
}

fn seq_of(record: &collection_operator::proto::common::ImmutableMessage) -> Option<u64> {
    record.properties.get("seq").and_then(|s| s.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_s_pchannels_move_with_the_next_term_and_are_writable() {
    let mut cluster = Cluster::start(4, 2, 1000);
    let mut discovery = Discovery::start(&cluster.coordinator.address)
        .await
        .expect("discovery");
    let before = all_assigned(&mut discovery, 4).await;
    // One acknowledged record per channel before the kill.
    for placement in before.channels.values() {
        let mut producer = Producer::open(&placement.address, placement.channel.clone())
            .await
            .expect("producer");
        producer.produce(seq_message(1)).await.expect("acked");
    }
    let victim_address = before.channels["by-dev-rootcoord-dml_0"].address.clone();
    let victim = before.channels["by-dev-rootcoord-dml_0"].server_id;
    let moved: BTreeMap<String, i64> = before
        .channels
        .values()
        .filter(|p| p.server_id == victim)
        .map(|p| (p.channel.name.clone(), p.channel.term))
        .collect();
    let index = cluster.node_index(&victim_address);
    let killed_at = Instant::now();
    cluster.nodes[index].kill9();
    let after = discovery
        .wait_for(WAIT, |view| {
            moved.keys().all(|name| {
                view.channels
                    .get(name)
                    .is_some_and(|p| p.server_id != victim)
            })
        })
        .await
        .expect("the killed node's pchannels were reassigned");
    for (name, old_term) in &moved {
        let placement = &after.channels[name];
        assert_eq!(
            placement.channel.term,
            old_term + 1,
            "{name} moves with exactly the next term"
        );
        let mut producer = Producer::open(&placement.address, placement.channel.clone())
            .await
            .expect("producer on the new holder");
        producer
            .produce(seq_message(2))
            .await
            .expect("writable on the new holder");
        // The acknowledged record of the old holder is there, then the new term starts.
        let records = read_log(placement, |records| {
            records.iter().any(|r| seq_of(r) == Some(2))
        })
        .await;
        let summary: Vec<(i64, Option<u64>, bool)> = records
            .iter()
            .map(|r| (term_of(r), seq_of(r), is_term_start(r)))
            .collect();
        assert_eq!(
            summary,
            vec![
                (*old_term, None, true),
                (*old_term, Some(1), false),
                (old_term + 1, None, true),
                (old_term + 1, Some(2), false),
            ],
            "{name}"
        );
    }
    println!(
        "failover: {} pchannel(s) writable on another node {:?} after kill -9 (lease 1 s, grace 0.3 s)",
        moved.len(),
        killed_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_process_resumed_after_the_move_is_fenced_and_leaves_no_trace() {
    let cluster = Cluster::start(2, 2, 1000);
    let mut discovery = Discovery::start(&cluster.coordinator.address)
        .await
        .expect("discovery");
    let before = all_assigned(&mut discovery, 2).await;
    let old = before.channels["by-dev-rootcoord-dml_0"].clone();
    let mut stale = Producer::open(&old.address, old.channel.clone())
        .await
        .expect("producer");
    stale.produce(seq_message(1)).await.expect("acked before");
    let frozen = &cluster.nodes[cluster.node_index(&old.address)];
    frozen.signal("STOP");
    let after = discovery
        .wait_for(WAIT, |view| {
            view.channels
                .get(&old.channel.name)
                .is_some_and(|p| p.server_id != old.server_id)
        })
        .await
        .expect("reassigned while the holder is stopped");
    let current = after.channels[&old.channel.name].clone();
    assert!(current.channel.term > old.channel.term);
    let mut producer = Producer::open(&current.address, current.channel.clone())
        .await
        .expect("producer on the new holder");
    producer.produce(seq_message(2)).await.expect("new holder");
    frozen.signal("CONT");
    // The resumed holder refuses: fenced (its lease lapsed / newer term) or wrong term.
    let refused = stale.produce(seq_message(3)).await;
    let code = match &refused {
        Err(error) => error.code(),
        Ok(result) => panic!("the stale holder acknowledged a write: {result:?}"),
    };
    assert!(
        matches!(
            code,
            Some(StreamingCode::ChannelFenced)
                | Some(StreamingCode::UnmatchedChannelTerm)
                | Some(StreamingCode::ChannelNotExist)
        ) || matches!(refused, Err(ClientError::Ended) | Err(ClientError::Rpc(_))),
        "stale write refused: {refused:?}"
    );
    let reopened = Producer::open(&old.address, old.channel.clone()).await;
    assert!(
        matches!(
            reopened.as_ref().err().and_then(ClientError::code),
            Some(StreamingCode::ChannelFenced)
                | Some(StreamingCode::ChannelNotExist)
                | Some(StreamingCode::UnmatchedChannelTerm)
        ),
        "a new producer at the old term is refused: {:?}",
        reopened.err()
    );
    producer.produce(seq_message(4)).await.expect("new holder");
    let records = read_log(&current, |records| {
        records.iter().any(|r| seq_of(r) == Some(4))
    })
    .await;
    let start = records
        .iter()
        .position(|r| is_term_start(r) && term_of(r) == current.channel.term)
        .expect("the new term's start record");
    assert!(
        records[start..]
            .iter()
            .all(|r| term_of(r) == current.channel.term),
        "no record of an older term after the term start: {records:?}"
    );
    assert!(records.iter().all(|r| seq_of(r) != Some(3)));
    let seqs: Vec<u64> = records.iter().filter_map(seq_of).collect();
    assert_eq!(seqs, vec![1, 2, 4]);
    let terms: Vec<i64> = records.iter().map(term_of).collect();
    assert!(terms.windows(2).all(|w| w[0] <= w[1]), "{terms:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn out_of_order_assign_and_remove_are_ignored_and_terms_are_checked() {
    let cluster = Cluster::start(1, 1, 1000);
    let mut discovery = Discovery::start(&cluster.coordinator.address)
        .await
        .expect("discovery");
    all_assigned(&mut discovery, 1).await;
    let node = &cluster.nodes[0];
    let mut manager = StreamingNodeManagerServiceClient::new(
        client::connect(&node.address).await.expect("connect"),
    );
    let info = |term: i64| PChannelInfo {
        name: "manual-channel".into(),
        term,
        access_mode: 0,
    };
    let code = |result: Result<
        tonic::Response<StreamingNodeManagerAssignResponse>,
        tonic::Status,
    >| { result.err().map(|s| ClientError::from(s).code()) };
    let code_rm = |result: Result<
        tonic::Response<StreamingNodeManagerRemoveResponse>,
        tonic::Status,
    >| { result.err().map(|s| ClientError::from(s).code()) };
    let assign = |term| StreamingNodeManagerAssignRequest {
        pchannel: Some(info(term)),
    };
    let remove = |term| StreamingNodeManagerRemoveRequest {
        pchannel: Some(info(term)),
    };
    let ignored = Some(Some(StreamingCode::IgnoredOperation));
    // Remove(T+1) arrives before Assign(T): the Assign is stale.
    assert_eq!(code_rm(manager.remove(remove(6)).await), None);
    assert_eq!(code(manager.assign(assign(5)).await), ignored);
    assert_eq!(
        code(manager.assign(assign(6)).await),
        ignored,
        "same term after its Remove"
    );
    assert_eq!(code(manager.assign(assign(8)).await), None);
    assert_eq!(
        code(manager.assign(assign(8)).await),
        None,
        "Assign of the held term is idempotent"
    );
    assert_eq!(code(manager.assign(assign(7)).await), ignored);
    assert_eq!(code_rm(manager.remove(remove(7)).await), ignored);
    // Producers must name the held term.
    let wrong = Producer::open(&node.address, info(7)).await;
    assert_eq!(
        wrong.err().and_then(|e| e.code()),
        Some(StreamingCode::UnmatchedChannelTerm)
    );
    let mut producer = Producer::open(&node.address, info(8))
        .await
        .expect("term 8");
    producer.produce(seq_message(1)).await.expect("acked");
    let missing = Producer::open(
        &node.address,
        PChannelInfo {
            name: "nobody-holds-this".into(),
            term: 1,
            access_mode: 0,
        },
    )
    .await;
    assert_eq!(
        missing.err().and_then(|e| e.code()),
        Some(StreamingCode::ChannelNotExist)
    );
    // A newer Assign closes term 8: its producer is fenced.
    assert_eq!(code(manager.assign(assign(9)).await), None);
    let fenced = producer.produce(seq_message(2)).await;
    assert!(fenced.is_err(), "{fenced:?}");
    // A call addressed to another server ID is refused.
    let mut request = tonic::Request::new(assign(10));
    request
        .metadata_mut()
        .insert("streaming-server-id", "999999".parse().expect("ascii"));
    assert_eq!(code(manager.assign(request).await), ignored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_coordinator_recovers_assignments_terms_and_the_freeze_list() {
    let mut cluster = Cluster::start(4, 2, 3000);
    let mut discovery = Discovery::start(&cluster.coordinator.address)
        .await
        .expect("discovery");
    all_assigned(&mut discovery, 4).await;
    let mut policy = StreamingCoordAssignmentServiceClient::new(
        client::connect(&cluster.coordinator.address)
            .await
            .expect("connect"),
    );
    let first_node = *discovery.current().nodes.keys().min().expect("a node");
    let frozen = policy
        .update_wal_balance_policy(UpdateWalBalancePolicyRequest {
            nodes: Some(WalBalancePolicyNodes {
                freeze_node_ids: vec![first_node],
                defreeze_node_ids: vec![],
            }),
            ..Default::default()
        })
        .await
        .expect("freeze")
        .into_inner();
    assert_eq!(frozen.freeze_node_ids, vec![first_node]);
    let drained = discovery
        .wait_for(WAIT, |view| {
            view.channels.len() == 4 && view.channels.values().all(|p| p.server_id != first_node)
        })
        .await
        .expect("the frozen node drained");
    let layout = |view: &AssignmentView| -> BTreeMap<String, (i64, i64)> {
        view.channels
            .iter()
            .map(|(name, p)| (name.clone(), (p.channel.term, p.server_id)))
            .collect()
    };
    let before = layout(&drained);
    cluster.coordinator.kill9();
    cluster.coordinator = Proc::coordinator(&cluster.data_dir, cluster.port, 4, 3000);
    let mut discovery = Discovery::start(&cluster.coordinator.address)
        .await
        .expect("discovery after restart");
    let after = all_assigned(&mut discovery, 4).await;
    assert_eq!(layout(&after), before, "assignments and terms recovered");
    assert!(after.version.0 > drained.version.0, "a new incarnation");
    let mut policy = StreamingCoordAssignmentServiceClient::new(
        client::connect(&cluster.coordinator.address)
            .await
            .expect("connect"),
    );
    let current = policy
        .update_wal_balance_policy(UpdateWalBalancePolicyRequest::default())
        .await
        .expect("read policy")
        .into_inner();
    assert_eq!(
        current.freeze_node_ids,
        vec![first_node],
        "freeze list recovered"
    );
    // Still writable where the recovered assignment says.
    for placement in after.channels.values() {
        let mut producer = Producer::open(&placement.address, placement.channel.clone())
            .await
            .expect("producer");
        producer.produce(seq_message(1)).await.expect("writable");
    }
}

/// Per-channel producer state of the traffic test.
#[derive(Default)]
struct Traffic {
    acked: Vec<u64>,
    /// Sequence numbers with an attempt whose outcome is unknown (may appear twice).
    uncertain: BTreeSet<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequence_numbered_traffic_loses_nothing_through_kills_freezes_and_rebalances() {
    let mut cluster = Cluster::start(4, 3, 1000);
    let mut discovery = Discovery::start(&cluster.coordinator.address)
        .await
        .expect("discovery");
    all_assigned(&mut discovery, 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for index in 0..4 {
        let name = format!("by-dev-rootcoord-dml_{index}");
        let coordinator = cluster.coordinator.address.clone();
        let stop = stop.clone();
        producers.push(tokio::spawn(async move {
            let discovery = Discovery::start(&coordinator).await.expect("discovery");
            let mut traffic = Traffic::default();
            let mut producer: Option<(client::Placement, Producer)> = None;
            let mut seq = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(placement) = discovery.current().channels.get(&name).cloned() else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if producer.as_ref().is_none_or(|(p, _)| *p != placement) {
                    match Producer::open(&placement.address, placement.channel.clone()).await {
                        Ok(opened) => producer = Some((placement, opened)),
                        Err(_) => {
                            producer = None;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let Some((_, open)) = producer.as_mut() else {
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(3), open.produce(seq_message(seq)))
                    .await
                {
                    Ok(Ok(_)) => {
                        traffic.acked.push(seq);
                        seq += 1;
                    }
                    _ => {
                        traffic.uncertain.insert(seq);
                        producer = None;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (name, traffic)
        }));
    }
    let pause = || tokio::time::sleep(Duration::from_millis(700));
    pause().await;
    // kill -9 the holder of dml_1, then bring a fresh node.
    let holder = discovery.current().channels["by-dev-rootcoord-dml_1"]
        .address
        .clone();
    let index = cluster.node_index(&holder);
    cluster.nodes[index].kill9();
    cluster.add_node();
    discovery
        .wait_for(WAIT, |view| {
            view.channels.len() == 4 && view.channels.values().all(|p| p.address != holder)
        })
        .await
        .expect("recovered from the kill");
    pause().await;
    // Freeze the holder of dml_2 (graceful drain), then defreeze.
    let mut policy = StreamingCoordAssignmentServiceClient::new(
        client::connect(&cluster.coordinator.address)
            .await
            .expect("connect"),
    );
    let drained_id = discovery.current().channels["by-dev-rootcoord-dml_2"].server_id;
    policy
        .update_wal_balance_policy(UpdateWalBalancePolicyRequest {
            nodes: Some(WalBalancePolicyNodes {
                freeze_node_ids: vec![drained_id],
                defreeze_node_ids: vec![],
            }),
            ..Default::default()
        })
        .await
        .expect("freeze");
    discovery
        .wait_for(WAIT, |view| {
            view.channels.len() == 4 && view.channels.values().all(|p| p.server_id != drained_id)
        })
        .await
        .expect("drained");
    pause().await;
    // Defreeze and turn rebalancing on: channels move back toward even counts.
    policy
        .update_wal_balance_policy(UpdateWalBalancePolicyRequest {
            config: Some(WalBalancePolicyConfig {
                allow_rebalance: true,
            }),
            nodes: Some(WalBalancePolicyNodes {
                freeze_node_ids: vec![],
                defreeze_node_ids: vec![drained_id],
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["config.allow_rebalance".into()],
            }),
        })
        .await
        .expect("defreeze");
    discovery
        .wait_for(WAIT, |view| {
            view.channels.len() == 4
                && view.nodes.values().map(Vec::len).max().unwrap_or(0) <= 2
                && view.nodes.get(&drained_id).is_some_and(|c| !c.is_empty())
        })
        .await
        .expect("rebalanced onto the defrozen node");
    pause().await;
    // SIGSTOP the holder of dml_3 until it moves, then SIGCONT.
    let stopped_at = discovery.current().channels["by-dev-rootcoord-dml_3"].clone();
    let stopped = &cluster.nodes[cluster.node_index(&stopped_at.address)];
    stopped.signal("STOP");
    discovery
        .wait_for(WAIT, |view| {
            view.channels
                .get("by-dev-rootcoord-dml_3")
                .is_some_and(|p| p.server_id != stopped_at.server_id)
        })
        .await
        .expect("moved off the stopped node");
    stopped.signal("CONT");
    pause().await;
    stop.store(true, Ordering::Relaxed);
    let mut results = HashMap::new();
    for producer in producers {
        let (name, traffic) = producer.await.expect("producer task");
        results.insert(name, traffic);
    }
    let view = all_assigned(&mut discovery, 4).await;
    for (name, traffic) in &results {
        assert!(traffic.acked.len() > 5, "{name}: traffic flowed");
        let last = *traffic.acked.last().expect("acked");
        let records = read_log(&view.channels[name], |records| {
            records.iter().any(|r| seq_of(r) == Some(last))
        })
        .await;
        let seqs: Vec<u64> = records.iter().filter_map(seq_of).collect();
        let mut first_seen = Vec::new();
        let mut seen = BTreeSet::new();
        for seq in &seqs {
            if !seen.insert(*seq) {
                assert!(
                    traffic.uncertain.contains(seq),
                    "{name}: seq {seq} duplicated without an uncertain attempt"
                );
            } else {
                first_seen.push(*seq);
            }
        }
        assert!(
            first_seen.windows(2).all(|w| w[0] < w[1]),
            "{name}: order kept: {first_seen:?}"
        );
        for seq in &traffic.acked {
            assert!(seen.contains(seq), "{name}: acknowledged seq {seq} lost");
        }
        let terms: Vec<i64> = records.iter().map(term_of).collect();
        assert!(
            terms.windows(2).all(|w| w[0] <= w[1]),
            "{name}: terms never go back"
        );
        println!(
            "{name}: {} acked, {} uncertain attempts, {} duplicates, {} terms",
            traffic.acked.len(),
            traffic.uncertain.len(),
            seqs.len() - seen.len(),
            terms.iter().collect::<BTreeSet<_>>().len()
        );
    }
}

/// A node stopped with SIGTERM fences its WALs and ends its session: its pchannels move
/// at once, not after the lease (20 s here) and grace as after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_cleanly_hands_its_pchannels_over_at_once() {
    let lease_ms = 20_000;
    let cluster = Cluster::start(2, 2, lease_ms);
    let mut discovery = Discovery::start(&cluster.coordinator.address)
        .await
        .expect("discovery");
    let before = all_assigned(&mut discovery, 2).await;
    let victim = before.channels["by-dev-rootcoord-dml_0"].server_id;
    let victim_address = before.channels["by-dev-rootcoord-dml_0"].address.clone();
    let index = cluster.node_index(&victim_address);
    let stopped_at = Instant::now();
    cluster.nodes[index].signal("TERM");
    let after = discovery
        .wait_for(Duration::from_millis(lease_ms / 2), |view| {
            view.channels.len() == 2 && view.channels.values().all(|p| p.server_id != victim)
        })
        .await
        .expect("the stopped node's pchannels moved before its lease could have lapsed");
    let handed_over = stopped_at.elapsed();
    let placement = &after.channels["by-dev-rootcoord-dml_0"];
    let mut producer = Producer::open(&placement.address, placement.channel.clone())
        .await
        .expect("producer on the new holder");
    producer
        .produce(seq_message(1))
        .await
        .expect("writable on the new holder");
    println!("clean stop: pchannels handed over after {handed_over:?} (lease {lease_ms} ms)");
}
