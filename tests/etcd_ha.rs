//! Coordinator replicas on a real etcd (Debian `etcd-server`, started by each test on
//! loopback ports), as real processes: leader failover under DDL load after a long DDL
//! history (SIGKILL; `ETCD_HA_DDLS` sets the history's size), a paused
//! leader fenced off (SIGSTOP past its lease, SIGCONT), follower reads trailing alias swaps,
//! an etcd restart under load, and the store's write fence refusing a deposed writer.
//! Figures (failover time, follower lag) are printed; run with `--nocapture` to see them.
#![cfg(feature = "etcd")]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use collection_operator::meta::error::code;
use collection_operator::proto::api::milvus_service_client::MilvusServiceClient;
use collection_operator::proto::api::*;
use collection_operator::store::etcd::{LEADER_KEY, LeaderRecord};
use collection_operator::store::{MetaStore, StoreError, WriteBatch};
use common::Client;
use common::etcd::{Replica, runtime, start_etcd, try_alloc_timestamp, wait_writable};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

/// Leadership lease of the replicas under test.
const LEASE_SECS: u64 = 2;
/// What these tests state as the failover bound: lease expiry (≤ TTL after the last
/// renewal), etcd's expiry check, the campaign and the reload.
const FAILOVER_BOUND: Duration = Duration::from_secs(2 * LEASE_SECS + 2);
/// How long a client keeps retrying one DDL before the test fails.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// A client whose channel connects lazily (a dead replica is just an error per call).
fn lazy_client(addr: SocketAddr) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    MilvusServiceClient::new(channel)
}

/// Which of `replicas` accepts writes (polls until one does).
async fn leader_of(replicas: &[&Replica]) -> usize {
    let started = Instant::now();
    let mut clients: Vec<Client> = replicas.iter().map(|r| lazy_client(r.addr)).collect();
    loop {
        for (index, client) in clients.iter_mut().enumerate() {
            if try_alloc_timestamp(client).await.is_ok() {
                return index;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no replica leads"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Status of a CreateAlias / AlterAlias (code 0 = done), or the transport error.
fn outcome(
    result: Result<tonic::Response<collection_operator::proto::common::Status>, tonic::Status>,
) -> Result<(), (i32, String)> {
    match result {
        Ok(response) => {
            let status = response.into_inner();
            if status.code == 0 {
                Ok(())
            } else {
                Err((status.code, status.reason))
            }
        }
        Err(status) => Err((-1, status.to_string())),
    }
}

async fn create_alias(
    client: &mut Client,
    alias: &str,
    collection: &str,
) -> Result<(), (i32, String)> {
    outcome(
        client
            .create_alias(CreateAliasRequest {
                collection_name: collection.into(),
                alias: alias.into(),
                ..Default::default()
            })
            .await,
    )
}

/// One DDL client of the load: creates aliases `w<id>_<n>` of `base`, retrying each on the
/// other replicas until it is acknowledged. A retry answered "already exists" counts as
/// acknowledged: the earlier attempt was applied although its answer was lost (the only
/// duplicate these tests allow). Returns the acknowledged names.
async fn alias_client(addrs: Vec<SocketAddr>, id: usize, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut clients: Vec<Client> = addrs.iter().map(|a| lazy_client(*a)).collect();
    let mut current = id % clients.len();
    let mut acknowledged = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("w{id}_{n}");
        let started = Instant::now();
        loop {
            match create_alias(&mut clients[current], &name, "base").await {
                Ok(()) => break,
                Err((code::ALIAS_ALREADY_EXIST, _)) => break,
                Err((_, why)) => {
                    assert!(
                        started.elapsed() < RETRY_FOR,
                        "{name} not acknowledged within {RETRY_FOR:?}: {why}"
                    );
                    current = (current + 1) % clients.len();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        acknowledged.push(name);
        n += 1;
    }
    acknowledged
}

/// Allocates timestamps from whichever replica leads, asserting that every one is greater
/// than all before it. Returns how many it got.
async fn tso_checker(addrs: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> usize {
    let mut clients: Vec<Client> = addrs.iter().map(|a| lazy_client(*a)).collect();
    let mut current = 0;
    let mut last = 0u64;
    let mut count = 0;
    while !stop.load(Ordering::Relaxed) {
        match try_alloc_timestamp(&mut clients[current]).await {
            Ok(ts) => {
                assert!(ts > last, "TSO went backwards: {ts} after {last}");
                last = ts;
                count += 1;
            }
            Err(_) => current = (current + 1) % clients.len(),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    count
}

/// Every alias of `base` as the replica at `addr` reads it.
async fn aliases_of_base(addr: SocketAddr) -> BTreeSet<String> {
    let response = lazy_client(addr)
        .list_aliases(ListAliasesRequest {
            collection_name: "base".into(),
            ..Default::default()
        })
        .await
        .expect("ListAliases")
        .into_inner();
    assert_eq!(response.status.unwrap_or_default().code, 0);
    response.aliases.into_iter().collect()
}

async fn describe_alias(addr: SocketAddr, alias: &str) -> Result<String, (i32, String)> {
    let response = lazy_client(addr)
        .describe_alias(DescribeAliasRequest {
            alias: alias.into(),
            ..Default::default()
        })
        .await
        .map_err(|status| (-1, status.to_string()))?
        .into_inner();
    let status = response.status.unwrap_or_default();
    if status.code == 0 {
        Ok(response.collection)
    } else {
        Err((status.code, status.reason))
    }
}

/// Waits until the replica at `addr` reads every alias of `expected` (it follows the
/// leader's log); how long that took.
async fn wait_caught_up(
    addr: SocketAddr,
    expected: &BTreeSet<String>,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let seen = aliases_of_base(addr).await;
        if expected.is_subset(&seen) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{addr} still misses {} aliases after {within:?}",
            expected.difference(&seen).count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn setup_base(addr: SocketAddr) {
    let mut client = lazy_client(addr);
    common::create_collection_in(&mut client, "", "base").await;
}

/// Acknowledged DDLs before the leader is killed in [`leader_sigkill_after_long_history_fails_over`]:
/// `ETCD_HA_DDLS`, by default [`DEFAULT_HISTORY_DDLS`].
fn history_ddls() -> usize {
    std::env::var("ETCD_HA_DDLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_HISTORY_DDLS)
}
/// What CI runs (about a minute on a busy 2-core VM); `ETCD_HA_DDLS=100000` by hand.
const DEFAULT_HISTORY_DDLS: usize = 20_000;
/// How long acknowledging the history may take.
const FILL_WITHIN: Duration = Duration::from_secs(3600);
/// DDL clients of the load, and aliases each one owns.
const LOAD_CLIENTS: usize = 16;
const ALIASES_PER_CLIENT: usize = 32;

/// AlterAlias of `alias` to `collection`.
async fn alter_alias(
    client: &mut Client,
    alias: &str,
    collection: &str,
) -> Result<(), (i32, String)> {
    outcome(
        client
            .alter_alias(AlterAliasRequest {
                collection_name: collection.into(),
                alias: alias.into(),
                ..Default::default()
            })
            .await,
    )
}

/// One DDL client of the long-history load: creates its aliases `h<id>_<k>` on `base`,
/// then swaps them between `other` and `base` in turn until `stop`, retrying each DDL
/// (on the other replicas too) until it is acknowledged; counts acknowledged DDLs in
/// `done`. A retried create answered "already exists" counts as acknowledged (its first
/// attempt was applied, the answer lost); a retried swap simply applies again. Returns
/// each alias's last acknowledged target.
async fn swapping_client(
    addrs: Vec<SocketAddr>,
    id: usize,
    done: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<(String, &'static str)> {
    let mut clients: Vec<Client> = addrs.iter().map(|a| lazy_client(*a)).collect();
    let mut current = id % clients.len();
    let mut targets: Vec<(String, &'static str)> = (0..ALIASES_PER_CLIENT)
        .map(|k| (format!("h{id}_{k}"), "base"))
        .collect();
    let mut created = 0;
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let k = round % ALIASES_PER_CLIENT;
        let creating = created < ALIASES_PER_CLIENT;
        let target = if creating {
            "base"
        } else if targets[k].1 == "base" {
            "other"
        } else {
            "base"
        };
        let started = Instant::now();
        loop {
            let alias = targets[k].0.clone();
            let result = if creating {
                create_alias(&mut clients[current], &alias, target).await
            } else {
                alter_alias(&mut clients[current], &alias, target).await
            };
            match result {
                Ok(()) => break,
                Err((code::ALIAS_ALREADY_EXIST, _)) if creating => break,
                Err((_, why)) => {
                    assert!(
                        started.elapsed() < RETRY_FOR,
                        "{alias} -> {target} not acknowledged within {RETRY_FOR:?}: {why}"
                    );
                    current = (current + 1) % clients.len();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        targets[k].1 = target;
        if creating {
            created += 1;
        }
        done.fetch_add(1, Ordering::Relaxed);
        round += 1;
    }
    targets
}

/// The target of every alias of `collections` as the replica at `addr` reads it.
async fn alias_targets(
    addr: SocketAddr,
    collections: &[&'static str],
) -> std::collections::BTreeMap<String, &'static str> {
    let mut targets = std::collections::BTreeMap::new();
    for collection in collections {
        let response = lazy_client(addr)
            .list_aliases(ListAliasesRequest {
                collection_name: (*collection).into(),
                ..Default::default()
            })
            .await
            .expect("ListAliases")
            .into_inner();
        assert_eq!(response.status.unwrap_or_default().code, 0);
        for alias in response.aliases {
            targets.insert(alias, *collection);
        }
    }
    targets
}

/// A long DDL history (`ETCD_HA_DDLS` acknowledged alias DDLs, 16 clients), then SIGKILL
/// of the leader under that load: the follower, which kept its copy current, takes over
/// within 2 × lease + 2 s however long the history is (it catches up from what it had
/// applied instead of reloading); every alias holds its last acknowledged target on the
/// survivor and on the killed replica restarted as a follower (which names the leader in
/// its first refusal); timestamps keep increasing across the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_after_long_history_fails_over() {
    let etcd = start_etcd().await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut replicas = [
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
    ];
    let leader = leader_of(&[&replicas[0], &replicas[1]]).await;
    let follower = 1 - leader;
    setup_base(replicas[leader].addr).await;
    common::create_collection_in(&mut lazy_client(replicas[leader].addr), "", "other").await;
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..LOAD_CLIENTS)
        .map(|id| {
            tokio::spawn(swapping_client(
                addrs.clone(),
                id,
                done.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let tso = tokio::spawn(tso_checker(addrs.clone(), stop.clone()));

    let wanted = history_ddls();
    let loading = Instant::now();
    while done.load(Ordering::Relaxed) < wanted {
        // Generous: filling is not what is measured (a busy 2-core VM managed ~150/s).
        assert!(
            loading.elapsed() < FILL_WITHIN,
            "only {} of {wanted} DDLs acknowledged in {FILL_WITHIN:?}",
            done.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_kill = done.load(Ordering::Relaxed);
    println!(
        "history: {before_kill} DDLs acknowledged in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let killed_at = Instant::now();
    replicas[leader].kill9();
    let writable_after = wait_writable(replicas[follower].addr, FAILOVER_BOUND * 3).await;
    let failover = killed_at.elapsed();
    println!(
        "failover after {before_kill} DDLs: leader SIGKILLed -> follower accepts writes after \
         {} ms (lease {LEASE_SECS} s, stated bound {} ms)",
        failover.as_millis(),
        FAILOVER_BOUND.as_millis()
    );
    assert!(writable_after <= failover);
    assert!(
        failover <= FAILOVER_BOUND,
        "failover took {failover:?}, over the stated {FAILOVER_BOUND:?}"
    );
    let log = replicas[follower].log();
    let leading = log
        .lines()
        .find(|line| line.contains("leading: writes accepted"))
        .unwrap_or_default();
    assert!(
        leading.contains("caught_up=true"),
        "the follower caught up instead of reloading: {log}"
    );
    println!("the survivor's takeover: {leading}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut expected = std::collections::BTreeMap::new();
    for client in clients {
        expected.extend(client.await.expect("client task"));
    }
    let timestamps = tso.await.expect("TSO checker");
    assert!(
        timestamps > 10,
        "the TSO checker got only {timestamps} timestamps"
    );
    let after_kill = done.load(Ordering::Relaxed) - before_kill;
    assert!(after_kill > 0, "no DDL acknowledged after the failover");

    // The killed replica comes back as a follower: it names the leader at once.
    replicas[leader] = Replica::start(&etcd, "ha/", LEASE_SECS, logs.path());
    let refusal = try_alloc_timestamp(&mut common::connect(replicas[leader].addr).await).await;
    let Err(refusal) = refusal else {
        panic!("a restarted replica accepted a write while another leads");
    };
    assert!(
        refusal.contains("code 1") && refusal.contains(&replicas[follower].addr.to_string()),
        "the restarted follower's first refusal names the leader: {refusal}"
    );
    let caught_up_within = Duration::from_secs(60);
    for replica in [&replicas[follower], &replicas[leader]] {
        // The restarted replica may still be applying the last swaps: bounded wait.
        let started = Instant::now();
        loop {
            let found = alias_targets(replica.addr, &["base", "other"]).await;
            let wrong: Vec<_> = expected
                .iter()
                .filter(|(alias, target)| found.get(*alias) != Some(*target))
                .map(|(alias, target)| (alias.clone(), *target, found.get(alias).copied()))
                .take(10)
                .collect();
            if wrong.is_empty() {
                break;
            }
            assert!(
                started.elapsed() < caught_up_within,
                "{}: aliases not at their last acknowledged target (alias, expected, found): \
                 {wrong:?}",
                replica.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!(
        "{} aliases at their last acknowledged target on both replicas; {after_kill} DDLs \
         acknowledged after the failover; {timestamps} timestamps increasing across it",
        expected.len()
    );
}

/// SIGSTOP the leader past its lease, then SIGCONT it: writes it was sent meanwhile are
/// refused with the retriable code 1 naming the new leader (by etcd's fence, or by the
/// replica once it knows it stepped down), nothing it attempted appears anywhere, and its
/// timestamps never run below its successor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_leader_is_fenced_and_its_attempts_vanish() {
    let etcd = start_etcd().await;
    let logs = tempfile::tempdir().expect("log dir");
    let replicas = [
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
    ];
    let old = leader_of(&[&replicas[0], &replicas[1]]).await;
    let new = 1 - old;
    setup_base(replicas[old].addr).await;
    // Connected before the pause, so that requests reach the paused process's socket.
    let mut paused_clients: Vec<Client> = Vec::new();
    for _ in 0..8 {
        let mut client = common::connect(replicas[old].addr).await;
        try_alloc_timestamp(&mut client)
            .await
            .expect("leader answers");
        paused_clients.push(client);
    }
    let mut tso_client = common::connect(replicas[old].addr).await;
    let last_old_ts = try_alloc_timestamp(&mut tso_client)
        .await
        .expect("timestamp");

    replicas[old].signal("STOP");
    let paused_at = Instant::now();
    let took = wait_writable(replicas[new].addr, FAILOVER_BOUND * 3).await;
    println!(
        "paused leader replaced after {} ms (lease {LEASE_SECS} s)",
        took.as_millis()
    );
    let first_new_ts = try_alloc_timestamp(&mut lazy_client(replicas[new].addr))
        .await
        .expect("new leader timestamp");
    assert!(
        first_new_ts > last_old_ts,
        "the new leader's TSO starts above the old one's"
    );
    // The new leader writes, moving the fence on.
    create_alias(&mut lazy_client(replicas[new].addr), "fresh", "base")
        .await
        .expect("new leader writes");

    // DDL (and a timestamp request) sent to the paused leader wait in its socket.
    let attempts: Vec<_> = paused_clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(
                async move { create_alias(&mut client, &format!("stale_{i}"), "base").await },
            )
        })
        .collect();
    let stale_ts = tokio::spawn(async move { try_alloc_timestamp(&mut tso_client).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(paused_at.elapsed() > Duration::from_secs(LEASE_SECS));
    replicas[old].signal("CONT");
    let new_address = replicas[new].addr.to_string();

    let (mut by_fence, mut by_role) = (0, 0);
    for attempt in attempts {
        match tokio::time::timeout(Duration::from_secs(20), attempt)
            .await
            .expect("the resumed replica answers")
            .expect("task")
        {
            Ok(()) => panic!("a write sent to the deposed leader was acknowledged"),
            Err((code, why)) => {
                // Retriable, naming where to retry, whether etcd's fence refused the
                // commit or the replica had stepped down already.
                assert_eq!(code, code::SERVICE_NOT_READY, "{why}");
                assert!(why.contains(&new_address), "names the new leader: {why}");
                if why.contains("etcd refused the transaction") {
                    by_fence += 1;
                } else {
                    by_role += 1;
                }
            }
        }
    }
    match stale_ts.await.expect("task") {
        Ok(ts) => assert!(
            ts > first_new_ts,
            "the deposed leader handed out {ts}, below its successor's {first_new_ts}"
        ),
        // Refused before the writer learns who leads (its lease deadline passed): retriable.
        Err(why) => assert!(why.contains("code 1"), "{why}"),
    }
    println!(
        "deposed leader: {by_fence} writes refused by etcd's fence, {by_role} refused after it \
         stepped down; none applied"
    );
    for i in 0..8 {
        let name = format!("stale_{i}");
        for replica in &replicas {
            let found = describe_alias(replica.addr, &name).await;
            assert!(
                matches!(found, Err((code::ALIAS_NOT_FOUND, _))),
                "{name} on {}: {found:?}",
                replica.addr
            );
        }
    }
    // The resumed replica follows the new leader.
    let fresh: BTreeSet<String> = ["fresh".to_string()].into();
    wait_caught_up(replicas[old].addr, &fresh, Duration::from_secs(10)).await;
}

/// A follower's reads reflect each alias swap on the leader within a bound (printed), and
/// a follower refuses writes with a retriable error naming the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_reads_follow_alias_swaps() {
    let etcd = start_etcd().await;
    let logs = tempfile::tempdir().expect("log dir");
    let replicas = [
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
    ];
    let leader = leader_of(&[&replicas[0], &replicas[1]]).await;
    let follower = &replicas[1 - leader];
    let mut writer = lazy_client(replicas[leader].addr);
    for name in ["blue", "green"] {
        common::create_collection_in(&mut writer, "", name).await;
    }
    create_alias(&mut writer, "live", "blue")
        .await
        .expect("alias");

    let refused = create_alias(&mut lazy_client(follower.addr), "nope", "blue").await;
    let Err((refusal_code, refusal)) = refused else {
        panic!("a follower accepted a write");
    };
    assert_eq!(refusal_code, code::SERVICE_NOT_READY, "{refusal}");
    assert!(
        refusal.contains(&replicas[leader].addr.to_string()),
        "the refusal names the leader: {refusal}"
    );

    let mut lags = Vec::new();
    for swap in 0..30 {
        let target = if swap % 2 == 0 { "green" } else { "blue" };
        outcome(
            writer
                .alter_alias(AlterAliasRequest {
                    collection_name: target.into(),
                    alias: "live".into(),
                    ..Default::default()
                })
                .await,
        )
        .expect("AlterAlias on the leader");
        let acknowledged = Instant::now();
        loop {
            if describe_alias(follower.addr, "live").await.as_deref() == Ok(target) {
                break;
            }
            assert!(
                acknowledged.elapsed() < Duration::from_secs(5),
                "the follower did not see swap {swap} within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lags.push(acknowledged.elapsed());
    }
    lags.sort();
    println!(
        "follower lag after an acknowledged AlterAlias: p50 {:.1} ms, max {:.1} ms over {} swaps \
         (bound asserted: 5 s)",
        lags[lags.len() / 2].as_secs_f64() * 1e3,
        lags[lags.len() - 1].as_secs_f64() * 1e3,
        lags.len()
    );
}

/// etcd SIGKILLed and restarted while 8 clients run DDL: the replicas reconnect, the
/// clients' retries succeed, and every acknowledged alias is present.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_restart_under_load_loses_nothing() {
    let mut etcd = start_etcd().await;
    let logs = tempfile::tempdir().expect("log dir");
    let replicas = [
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
    ];
    let leader = leader_of(&[&replicas[0], &replicas[1]]).await;
    setup_base(replicas[leader].addr).await;
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|id| tokio::spawn(alias_client(addrs.clone(), id, stop.clone())))
        .collect();
    let tso = tokio::spawn(tso_checker(addrs.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let etcd = tokio::task::spawn_blocking(move || {
        etcd.kill9();
        std::thread::sleep(Duration::from_millis(500));
        etcd.restart();
        etcd
    })
    .await
    .expect("etcd restart");
    let restarted = Instant::now();
    let leader = leader_of(&[&replicas[0], &replicas[1]]).await;
    println!(
        "etcd restarted: writes accepted again {} ms after etcd answered",
        restarted.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = BTreeSet::new();
    for client in clients {
        acknowledged.extend(client.await.expect("client task"));
    }
    tso.await.expect("TSO checker");
    let present = aliases_of_base(replicas[leader].addr).await;
    let missing: Vec<_> = acknowledged.difference(&present).collect();
    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
    wait_caught_up(
        replicas[1 - leader].addr,
        &acknowledged,
        Duration::from_secs(10),
    )
    .await;
    println!(
        "etcd restart under load: {} aliases acknowledged, all present on both replicas",
        acknowledged.len()
    );
    drop(etcd);
}

/// The store's write fence: a writer whose leader key is gone (its lease ended) is refused
/// by etcd, and so is one whose expected revision is stale (another writer committed);
/// nothing of a refused batch is written.
#[test]
fn fence_refuses_a_deposed_writer() {
    let etcd = common::etcd::Etcd::start();
    let runtime = runtime();
    let old = etcd.store("fence/");
    let new = etcd.store("fence/");
    let mut client = old.client();
    let leader_key = old.etcd_key(LEADER_KEY);
    let elect = |client: &mut etcd_client::Client, address: &str| {
        let leader_key = leader_key.clone();
        let record = LeaderRecord {
            id: format!("member-{address}"),
            address: address.into(),
        };
        let value = serde_json::to_vec(&record).expect("leader record");
        let mut client = client.clone();
        runtime.block_on(async move {
            let lease = client.lease_grant(60, None).await.expect("lease").id();
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    leader_key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(
                    leader_key,
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            let response = client.txn(txn).await.expect("campaign");
            assert!(response.succeeded(), "the key was free");
            (lease, response.header().expect("header").revision())
        })
    };
    let write = |store: &collection_operator::store::EtcdStore, key: &str| {
        let mut batch = WriteBatch::default();
        batch.put(key, b"v".to_vec());
        store.commit(&batch)
    };

    let (old_lease, old_revision) = elect(&mut client, "10.0.0.1:19530");
    runtime.block_on(old.arm_fence(old_revision)).expect("arm");
    write(&old, "a").expect("the leader writes");
    write(&old, "b").expect("the leader writes again (the fence moved on with it)");

    // The lease ends (as when the leader is paused past its TTL); another replica leads.
    runtime
        .block_on(client.lease_revoke(old_lease))
        .expect("revoke");
    let (_, new_revision) = elect(&mut client, "10.0.0.2:19530");
    runtime.block_on(new.arm_fence(new_revision)).expect("arm");
    write(&new, "c").expect("the new leader writes");

    let refused = write(&old, "stale").expect_err("the deposed leader is refused");
    // The refusal names the leader the key holds now (read in the refused transaction).
    assert!(
        matches!(&refused, StoreError::Fenced(why)
            if why.ends_with("the leader is 10.0.0.2:19530 (id member-10.0.0.2:19530)")),
        "{refused}"
    );
    assert_eq!(new.get("stale").expect("get"), None);

    // Same leader key, stale expected revision: a second writer armed before the new
    // leader's last commit is refused too.
    let twin = etcd.store("fence/");
    runtime.block_on(twin.arm_fence(new_revision)).expect("arm");
    write(&new, "d").expect("the leader writes");
    let refused = write(&twin, "twin").expect_err("a stale expected revision is refused");
    assert!(matches!(refused, StoreError::Fenced(_)), "{refused}");
    assert_eq!(new.get("twin").expect("get"), None);
    for key in ["a", "b", "c", "d"] {
        assert_eq!(
            new.get(key).expect("get").as_deref(),
            Some(&b"v"[..]),
            "{key}"
        );
    }
}

/// The freeze list as the streaming coordinator at `addr` holds it (an empty update reads
/// it), or the refusal.
async fn freeze_list(addr: SocketAddr, freeze: &[i64]) -> Result<Vec<i64>, tonic::Status> {
    use collection_operator::proto::streaming::streaming_coord_assignment_service_client::StreamingCoordAssignmentServiceClient;
    use collection_operator::proto::streaming::{
        UpdateWalBalancePolicyRequest, WalBalancePolicyNodes,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy();
    let response = StreamingCoordAssignmentServiceClient::new(channel)
        .update_wal_balance_policy(UpdateWalBalancePolicyRequest {
            nodes: Some(WalBalancePolicyNodes {
                freeze_node_ids: freeze.to_vec(),
                defreeze_node_ids: Vec::new(),
            }),
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().freeze_node_ids)
}

/// WAL placement on replicas: only the leader runs the streaming coordinator (its state
/// goes through the fenced store); a follower refuses its RPCs naming the leader; after a
/// failover the new leader serves the same pchannels and the persisted freeze list, under
/// a new incarnation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_places_pchannels() {
    use collection_operator::streaming::client::{ClientError, Discovery};
    let etcd = start_etcd().await;
    let logs = tempfile::tempdir().expect("log dir");
    let mut replicas = [
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
        Replica::start(&etcd, "ha/", LEASE_SECS, logs.path()),
    ];
    let leader = leader_of(&[&replicas[0], &replicas[1]]).await;
    let follower = 1 - leader;
    let (leader_addr, follower_addr) = (replicas[leader].addr, replicas[follower].addr);

    let mut discovery = Discovery::start(&leader_addr.to_string())
        .await
        .expect("the leader serves AssignmentDiscover");
    let before = discovery
        .wait_for(Duration::from_secs(10), |view| !view.cchannel.is_empty())
        .await
        .expect("the leader's placement names the control channel");
    assert_eq!(
        freeze_list(leader_addr, &[42]).await.expect("freeze"),
        vec![42]
    );

    match Discovery::start(&follower_addr.to_string()).await {
        Err(ClientError::Rpc(status)) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
            assert!(
                status.message().contains(&leader_addr.to_string()),
                "the refusal names the leader: {status}"
            );
        }
        Err(other) => panic!("unexpected failure: {other}"),
        Ok(_) => panic!("a follower served AssignmentDiscover"),
    }
    let refused = freeze_list(follower_addr, &[7])
        .await
        .expect_err("a follower refuses");
    assert_eq!(refused.code(), tonic::Code::Unavailable);

    replicas[leader].kill9();
    wait_writable(follower_addr, FAILOVER_BOUND * 3).await;
    // The streaming coordinator starts right after the meta writer.
    let started = Instant::now();
    let mut discovery = loop {
        match Discovery::start(&follower_addr.to_string()).await {
            Ok(discovery) => break discovery,
            Err(error) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "the new leader does not serve AssignmentDiscover: {error}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let after = discovery
        .wait_for(Duration::from_secs(10), |view| !view.cchannel.is_empty())
        .await
        .expect("the new leader's placement");
    assert_eq!(
        after.cchannel, before.cchannel,
        "the same pchannels, from etcd"
    );
    assert!(
        after.version.0 > before.version.0,
        "a new incarnation: {:?} after {:?}",
        after.version,
        before.version
    );
    assert_eq!(
        freeze_list(follower_addr, &[]).await.expect("read"),
        vec![42],
        "the freeze list survived the failover"
    );
}
