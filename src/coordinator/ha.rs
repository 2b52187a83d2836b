//! Several coordinator replicas on one etcd: one leader writes, the others follow.
//!
//! **Election.** Each replica campaigns for the leader key ([`LEADER_KEY`] under the store
//! prefix) with a transaction that creates it only if it does not exist, bound to a fresh
//! etcd lease of `--leader-lease-secs`. The winner keeps the lease alive; the others watch
//! the key and campaign again when it is deleted (the leader resigned, or its lease ended).
//! The key's value names the leader (its id and `--advertise-address`).
//!
//! **Leader.** From the moment it wins, a task of its own renews the lease ([`LeaseRenewal`]),
//! so that no preparation can outlive it. The new leader arms the store's write fence
//! ([`EtcdStore::arm_fence`]: every commit must find the leader key it created and the
//! fence revision it last wrote), lets its follower copy catch up to the revision of its
//! election (after it nothing but this replica can write: the previous leader's commits
//! are fenced), resumes the TSO above the persisted high-water mark, and starts the
//! engine's writer on that copy ([`Engine::take_over`]). A takeover thus costs what the
//! follower had not yet applied, not the size of the table or of its history; only a
//! follower that cannot catch up within a lease period (its watch fell behind etcd's
//! compaction, or broke) reloads everything. The leader steps down when a keep-alive
//! reports the lease gone, or when no keep-alive succeeded for a whole lease period
//! (locally, before etcd can have expired the lease, since the deadline counts from when
//! the renewal was *sent*). A leader that cannot step down in time (paused, partitioned)
//! is stopped by the fence: etcd refuses its transactions once its lease has ended, so
//! nothing it attempts is written, and each refused write is answered as a follower
//! answers (code 1, naming the leader the key holds at that moment).
//!
//! **Followers.** Serve reads from their copy of the meta table, kept current by watching
//! the store's keys from the revision their copy was read at and applying the DDL log
//! records (each DDL's record holds all of its changes, written in the same transaction).
//! They publish the revision they have applied up to, which is what a takeover waits for.
//! A watch that falls behind etcd's compaction reloads the table. Writes (DDL and
//! AllocTimestamp) are refused with Milvus code 1 (`service not ready`, retriable) and a
//! message that names the leader's address, from the first read of the leader key on:
//! we answer rather than forward, so that a write is only ever attempted by the process
//! that holds the lease, and a client (or a Service that routes writes to the leader)
//! sees where to go. A follower's reads trail the leader by the watch delay (measured in
//! `tests/etcd_ha.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::engine::{Engine, RecoveryStats};
use crate::meta::change::DDL_LOG_PREFIX;
use crate::proto::records::DdlRecord;
use crate::store::EtcdStore;
use crate::store::etcd::LEADER_KEY;
pub use crate::store::etcd::LeaderRecord;

/// How long a failed etcd call waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// How long reading the leader key (to name it in refusals) may take.
const ANNOUNCE_WITHIN: Duration = Duration::from_secs(1);

/// Identity and timing of this replica.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// Unique among replicas (logs, the leader key).
    pub member_id: String,
    /// Where clients reach this replica; followers name it in their refusals.
    pub advertise_address: String,
    /// TTL of the leadership lease: a failed leader is replaced within about this long.
    pub lease_ttl: Duration,
    /// How often a follower drops history older than the retention window.
    pub compaction_interval: Duration,
}

/// A unique member id: the host name (the pod name in Kubernetes) and a random suffix, so
/// that a restarted process never takes over its predecessor's identity.
pub fn new_member_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "coordinator".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// Whether this replica leads; published for logs and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Following; the leader when known.
    Follower(Option<LeaderRecord>),
    /// Leading: writes are accepted here.
    Leader,
}

/// Why a leadership term ended.
enum TermEnd {
    /// The process is stopping (the lease is revoked for a fast hand-over).
    Shutdown,
    /// The lease is gone or could not be renewed in time.
    Lost(String),
}

/// The streaming coordinator a leader runs (WAL placement), and the gate its services are
/// served through.
pub struct LeaderStreaming {
    /// How to start it.
    pub config: crate::streaming::coord::StreamingCoordConfig,
    /// Opened while leading, closed (refusing with the leader's name) otherwise.
    pub gate: crate::streaming::gate::StreamingGate,
}

impl LeaderStreaming {
    /// Starts the streaming coordinator on the (fenced) store and opens the gate.
    async fn start(&self, engine: &Engine) -> anyhow::Result<()> {
        let coord =
            crate::streaming::coord::StreamingCoord::start(engine.store(), self.config.clone())
                .await
                .context("starting the streaming coordinator")?;
        if let Some(previous) = self.gate.set(Some(coord)) {
            previous.stop();
        }
        Ok(())
    }

    /// Closes the gate and stops the streaming coordinator.
    fn stop(&self, refusal: &str) {
        self.gate.set_refusal(refusal);
        if let Some(coord) = self.gate.set(None) {
            coord.stop();
        }
    }
}

/// A won election.
struct Won {
    lease: i64,
    leader_revision: i64,
    /// When the lease was asked for: it cannot end before `granted + ttl`.
    granted: Instant,
    /// The TTL asked for (etcd may grant more, never less).
    ttl: Duration,
}

/// Runs the replica until `shutdown` turns true: follow, campaign, lead, step down, and
/// Runs the replica until `shutdown` turns true: follow, campaign, lead, step down, and
/// again. `engine` must be a replica opened on `store` at `revision`.
pub async fn run_replica(
    engine: Arc<Engine>,
    store: Arc<EtcdStore>,
    config: ReplicaConfig,
    mut revision: i64,
    streaming: Option<LeaderStreaming>,
    role: watch::Sender<Role>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let streaming = streaming.as_ref();
    let client = store.client();
    let leader_key = store.etcd_key(LEADER_KEY);
    // Name the leader before anything else, so that refused writes say where to go.
    announce_leader(&client, &leader_key, &engine, streaming, &role).await;
    loop {
        let follower = Follower::start(&engine, &store, revision, config.compaction_interval);
        let won = tokio::select! {
            won = campaign(&client, &leader_key, &config, &engine, streaming, &role) => won,
            _ = stopped(&mut shutdown) => {
                follower.stop().await;
                return Ok(());
            }
        };
        let elected = Instant::now();
        let mut renewal = LeaseRenewal::start(&store, &won, config.lease_ttl, &engine);
        match become_leader(
            &engine,
            &store,
            &renewal,
            &won,
            streaming,
            Some((follower, config.lease_ttl)),
        )
        .await
        {
            Ok(prepared) => {
                tracing::info!(
                    member = %config.member_id,
                    takeover_ms = elected.elapsed().as_millis() as u64,
                    caught_up = prepared.caught_up,
                    log_records = prepared.stats.log_records,
                    "leading: writes accepted"
                );
                let _ = role.send(Role::Leader);
                let end = lead(
                    &store,
                    &engine,
                    &won,
                    &mut renewal,
                    streaming,
                    &mut shutdown,
                )
                .await;
                renewal.stop();
                match end {
                    TermEnd::Shutdown => {
                        step_down(&engine, &store, streaming, "coordinator is stopping").await;
                        // Hand over at once instead of after the lease TTL.
                        if let Err(error) = client.clone().lease_revoke(won.lease).await {
                            tracing::warn!(%error, "revoking the leadership lease failed; a follower takes over when it expires");
                        }
                        return Ok(());
                    }
                    TermEnd::Lost(why) => {
                        // Queued writes are refused by the fence, naming the new leader;
                        // later ones by the engine, with the same refusal.
                        let refusal =
                            announce_leader(&client, &leader_key, &engine, streaming, &role).await;
                        step_down(&engine, &store, streaming, &refusal).await;
                        tracing::warn!(member = %config.member_id, %why, "stepped down: writes refused");
                    }
                }
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "taking over as leader failed; resigning");
                renewal.stop();
                step_down(
                    &engine,
                    &store,
                    streaming,
                    "this coordinator replica is not the leader (taking over failed)",
                )
                .await;
                let _ = client.clone().lease_revoke(won.lease).await;
            }
        }
        let _ = role.send(Role::Follower(None));
        announce_leader(&client, &leader_key, &engine, streaming, &role).await;
        // A term may end with a commit whose outcome is unknown (its answer was lost):
        // only what etcd holds is certain.
        revision = loop {
            let reloading = engine.clone();
            match tokio::task::spawn_blocking(move || reloading.reload_replica()).await {
                Ok(Ok(stats)) => break stats.revision,
                Ok(Err(error)) => tracing::warn!(%error, "reloading the meta table failed"),
                Err(error) => tracing::warn!(%error, "reloading the meta table failed"),
            }
            tokio::time::sleep(RETRY_AFTER).await;
        };
    }
}

/// Resolves when `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The refusal of a replica that does not lead.
fn not_leader(leader: Option<&LeaderRecord>) -> String {
    format!(
        "this coordinator replica is not the leader; {}",
        LeaderRecord::describe(leader)
    )
}

/// Who holds the leader key, read once (bounded; `None` also when etcd does not answer).
async fn read_leader(client: &Client, leader_key: &[u8]) -> Option<LeaderRecord> {
    let mut client = client.clone();
    let read = tokio::time::timeout(ANNOUNCE_WITHIN, client.get(leader_key.to_vec(), None)).await;
    match read {
        Ok(Ok(response)) => response
            .kvs()
            .first()
            .and_then(|kv| LeaderRecord::decode(kv.value())),
        Ok(Err(error)) => {
            tracing::warn!(%error, "reading the leader key failed");
            None
        }
        Err(_) => None,
    }
}

/// Makes a replica that is about to serve refuse writes naming the current leader (read
/// from etcd), so that its very first refusal says where to go.
pub async fn name_leader(
    engine: &Engine,
    store: &EtcdStore,
    gate: Option<&crate::streaming::gate::StreamingGate>,
) {
    let leader = read_leader(&store.client(), &store.etcd_key(LEADER_KEY)).await;
    let refusal = not_leader(leader.as_ref());
    engine.set_refusal(&refusal);
    if let Some(gate) = gate {
        gate.set_refusal(&refusal);
    }
}

/// Reads the leader key once (bounded) and refuses writes naming who holds it; returns
/// the refusal.
async fn announce_leader(
    client: &Client,
    leader_key: &[u8],
    engine: &Engine,
    streaming: Option<&LeaderStreaming>,
    role: &watch::Sender<Role>,
) -> String {
    let leader = read_leader(client, leader_key).await;
    let refusal = not_leader(leader.as_ref());
    engine.set_refusal(&refusal);
    if let Some(streaming) = streaming {
        streaming.gate.set_refusal(&refusal);
    }
    let _ = role.send(Role::Follower(leader));
    refusal
}

/// What a successful takeover did.
struct Prepared {
    /// Whether the follower copy was caught up (or else the table was reloaded).
    caught_up: bool,
    stats: RecoveryStats,
}

/// Arms the fence, brings the table up to the election (the follower's copy caught up,
/// or a full reload from etcd under the fence when there is no follower or it cannot
/// catch up within `limit`), and makes the engine the writer.
async fn become_leader(
    engine: &Arc<Engine>,
    store: &Arc<EtcdStore>,
    renewal: &LeaseRenewal,
    won: &Won,
    streaming: Option<&LeaderStreaming>,
    follower: Option<(Follower, Duration)>,
) -> anyhow::Result<Prepared> {
    let armed = store.arm_fence(won.leader_revision).await;
    let caught_up = match follower {
        Some((follower, limit)) => follower.catch_up(won.leader_revision, limit).await,
        None => false,
    };
    armed.context("arming the write fence")?;
    engine.set_lease_deadline(Some(renewal.held_until()));
    // WAL placement first, so that a replica that accepts writes also places pchannels.
    if let Some(streaming) = streaming {
        streaming.start(engine).await?;
    }
    let starting = engine.clone();
    let stats = tokio::task::spawn_blocking(move || {
        if caught_up {
            starting.take_over()
        } else {
            starting.start_writer()
        }
    })
    .await
    .context("leader start-up task failed")?
    .context("starting the meta writer")?;
    Ok(Prepared { caught_up, stats })
}

/// Stops the writer while the fence is still armed (queued commits are refused by etcd
/// if the lease is gone), refusing later writes with `refusal`, then disarms it.
async fn step_down(
    engine: &Arc<Engine>,
    store: &Arc<EtcdStore>,
    streaming: Option<&LeaderStreaming>,
    refusal: &str,
) {
    engine.set_lease_deadline(Some(Instant::now()));
    if let Some(streaming) = streaming {
        streaming.stop(refusal);
    }
    let stopping = engine.clone();
    let refusal = refusal.to_string();
    let _ = tokio::task::spawn_blocking(move || stopping.stop_writer(&refusal)).await;
    store.disarm_fence();
}

/// Campaigns until this replica holds the leader key; follows the current leader's
/// identity meanwhile. Retries etcd failures forever (reads go on being served).
async fn campaign(
    client: &Client,
    leader_key: &[u8],
    config: &ReplicaConfig,
    engine: &Engine,
    streaming: Option<&LeaderStreaming>,
    role: &watch::Sender<Role>,
) -> Won {
    let me = LeaderRecord {
        id: config.member_id.clone(),
        address: config.advertise_address.clone(),
    };
    let value = serde_json::to_vec(&me).unwrap_or_default();
    let ttl = config.lease_ttl.as_secs().max(1) as i64;
    loop {
        match try_campaign(client, leader_key, &value, ttl).await {
            Ok(Ok(won)) => return won,
            Ok(Err((leader, revision))) => {
                let refusal = not_leader(leader.as_ref());
                engine.set_refusal(&refusal);
                if let Some(streaming) = streaming {
                    streaming.gate.set_refusal(&refusal);
                }
                let _ = role.send(Role::Follower(leader));
                if let Err(error) = wait_for_deletion(client, leader_key, revision).await {
                    tracing::warn!(%error, "watching the leader key failed; campaigning again");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "campaigning for leadership failed; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

type CampaignResult = Result<Won, (Option<LeaderRecord>, i64)>;

/// One attempt: creates the leader key with a new lease, or reads who holds it (and the
/// revision to watch it from).
async fn try_campaign(
    client: &Client,
    leader_key: &[u8],
    value: &[u8],
    ttl: i64,
) -> Result<CampaignResult, etcd_client::Error> {
    let mut client = client.clone();
    let granted = Instant::now();
    let lease = client.lease_grant(ttl, None).await?.id();
    let txn = Txn::new()
        .when(vec![Compare::create_revision(
            leader_key.to_vec(),
            CompareOp::Equal,
            0,
        )])
        .and_then(vec![TxnOp::put(
            leader_key.to_vec(),
            value.to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else(vec![TxnOp::get(leader_key.to_vec(), None)]);
    let response = match client.txn(txn).await {
        Ok(response) => response,
        Err(error) => {
            let _ = client.lease_revoke(lease).await;
            return Err(error);
        }
    };
    let revision = response.header().map_or(0, |h| h.revision());
    if response.succeeded() {
        return Ok(Ok(Won {
            lease,
            leader_revision: revision,
            granted,
            ttl: Duration::from_secs(ttl.max(1) as u64),
        }));
    }
    let _ = client.lease_revoke(lease).await;
    let leader = response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .and_then(|kv| serde_json::from_slice::<LeaderRecord>(kv.value()).ok()),
        _ => None,
    });
    Ok(Err((leader, revision)))
}

/// Resolves once the leader key is deleted after `revision` (or at once if it already is).
async fn wait_for_deletion(
    client: &Client,
    leader_key: &[u8],
    revision: i64,
) -> Result<(), etcd_client::Error> {
    let mut client = client.clone();
    let mut stream = client
        .watch(
            leader_key.to_vec(),
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        )
        .await?;
    // The key may have gone between the campaign and the watch's start revision: the
    // watch replays that deletion.
    while let Some(response) = stream.message().await? {
        if response.canceled() {
            return Ok(());
        }
        if response
            .events()
            .iter()
            .any(|event| event.event_type() == EventType::Delete)
        {
            return Ok(());
        }
    }
    Ok(())
}

/// Leads until the lease is lost or on shutdown, and settles refused commits (still
/// leading: reload; not: end the term).
async fn lead(
    store: &Arc<EtcdStore>,
    engine: &Arc<Engine>,
    won: &Won,
    renewal: &mut LeaseRenewal,
    streaming: Option<&LeaderStreaming>,
    shutdown: &mut watch::Receiver<bool>,
) -> TermEnd {
    let mut client = store.client();
    let leader_key = store.etcd_key(LEADER_KEY);
    let leader_key = leader_key.as_slice();
    let fence_broken = store.fence_broken();
    loop {
        tokio::select! {
            _ = stopped(shutdown) => return TermEnd::Shutdown,
            why = renewal.lost() => return TermEnd::Lost(why),
            _ = fence_broken.notified() => {
                match holds_leader_key(&mut client, leader_key, won.leader_revision).await {
                    Ok(true) => {
                        // Our own earlier commit went through unseen (an ambiguous
                        // failure): reload what etcd holds and go on leading.
                        tracing::warn!("a commit was refused while still leading; reloading from etcd");
                        step_down(engine, store, streaming, "this coordinator replica is reloading its meta table").await;
                        if let Err(error) = become_leader(engine, store, renewal, won, streaming, None).await {
                            return TermEnd::Lost(format!("reloading after a refused commit: {error:#}"));
                        }
                    }
                    Ok(false) => return TermEnd::Lost("the leader key is gone or held by another replica".into()),
                    Err(error) => tracing::warn!(%error, "checking the leader key failed"),
                }
            }
        }
    }
}

/// How far a [`LeaseRenewal`] has kept the lease.
#[derive(Debug, Clone)]
enum LeaseState {
    /// Held at least until then.
    Held(Instant),
    /// Gone, or not renewed within its TTL; why.
    Lost(String),
}

/// Renews the leadership lease every third of its TTL on a task of its own, from the
/// election on, whatever the leader is busy with; publishes until when it holds (the
/// engine hands out timestamps only before that).
struct LeaseRenewal {
    task: JoinHandle<()>,
    state: watch::Receiver<LeaseState>,
}

impl LeaseRenewal {
    fn start(store: &EtcdStore, won: &Won, lease_ttl: Duration, engine: &Arc<Engine>) -> Self {
        let held_until = won.granted + won.ttl;
        let (publish, state) = watch::channel(LeaseState::Held(held_until));
        let task = tokio::spawn(keep_lease(
            store.client(),
            won.lease,
            held_until,
            (lease_ttl / 3).max(Duration::from_millis(100)),
            engine.clone(),
            publish,
        ));
        Self { task, state }
    }

    /// Until when the lease is known to hold (now, once it is lost).
    fn held_until(&self) -> Instant {
        match &*self.state.borrow() {
            LeaseState::Held(until) => *until,
            LeaseState::Lost(_) => Instant::now(),
        }
    }

    /// Resolves once the lease is lost; why.
    async fn lost(&mut self) -> String {
        loop {
            if let LeaseState::Lost(why) = &*self.state.borrow_and_update() {
                return why.clone();
            }
            if self.state.changed().await.is_err() {
                return "the lease renewal stopped".into();
            }
        }
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for LeaseRenewal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The renewal loop of [`LeaseRenewal`].
async fn keep_lease(
    mut client: Client,
    lease: i64,
    mut renewed_until: Instant,
    period: Duration,
    engine: Arc<Engine>,
    publish: watch::Sender<LeaseState>,
) {
    let mut keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if Instant::now() >= renewed_until {
            let _ = publish.send(LeaseState::Lost(
                "the lease could not be renewed within its TTL".into(),
            ));
            return;
        }
        let sent = Instant::now();
        match renew(&mut client, lease, &mut keeper, period).await {
            Ok(ttl) if ttl > 0 => {
                renewed_until = sent + Duration::from_secs(ttl as u64);
                engine.set_lease_deadline(Some(renewed_until));
                let _ = publish.send(LeaseState::Held(renewed_until));
            }
            Ok(_) => {
                let _ = publish.send(LeaseState::Lost("etcd reports the lease expired".into()));
                return;
            }
            Err(error) => {
                keeper = None;
                tracing::warn!(%error, "renewing the leadership lease failed");
            }
        }
    }
}

/// One keep-alive round trip (opening the keep-alive stream if needed); the TTL granted.
async fn renew(
    client: &mut Client,
    lease: i64,
    keeper: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    timeout: Duration,
) -> anyhow::Result<i64> {
    let round = async {
        if keeper.is_none() {
            // Opening the stream fails if the lease is gone.
            match client.lease_keep_alive(lease).await {
                Ok(opened) => *keeper = Some(opened),
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => return Ok(0),
                Err(error) => return Err(anyhow::Error::new(error)),
            }
        }
        let Some((sender, responses)) = keeper.as_mut() else {
            anyhow::bail!("no keep-alive stream");
        };
        sender.keep_alive().await?;
        match responses.message().await? {
            Some(response) => Ok(response.ttl()),
            None => anyhow::bail!("keep-alive stream closed"),
        }
    };
    tokio::time::timeout(timeout, round)
        .await
        .context("keep-alive timed out")?
}

/// Whether the leader key still has the create revision of our election.
async fn holds_leader_key(
    client: &mut Client,
    leader_key: &[u8],
    leader_revision: i64,
) -> Result<bool, etcd_client::Error> {
    let response = client.get(leader_key.to_vec(), None).await?;
    Ok(response
        .kvs()
        .first()
        .is_some_and(|kv| kv.create_revision() == leader_revision))
}

/// The task that keeps a replica's table current ([`follow_store`]), and how far it got.
struct Follower {
    task: JoinHandle<()>,
    applied: watch::Receiver<i64>,
    stop: watch::Sender<bool>,
}

impl Follower {
    fn start(
        engine: &Arc<Engine>,
        store: &Arc<EtcdStore>,
        revision: i64,
        compaction_interval: Duration,
    ) -> Self {
        let (publish, applied) = watch::channel(revision);
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(follow_store(
            engine.clone(),
            store.clone(),
            revision,
            compaction_interval,
            publish,
            stopping,
        ));
        Self {
            task,
            applied,
            stop,
        }
    }

    /// Stops following and waits until the task has stopped (a reload it runs is let
    /// finish, so that nothing changes the table afterwards).
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits (at most `limit`) until every store revision up to `revision` is applied,
    /// then stops following. Whether it caught up.
    async fn catch_up(mut self, revision: i64, limit: Duration) -> bool {
        let caught_up = tokio::time::timeout(limit, self.applied.wait_for(|at| *at >= revision))
            .await
            .is_ok_and(|reached| reached.is_ok());
        if !caught_up {
            tracing::warn!(
                revision,
                applied = *self.applied.borrow(),
                "the follower copy did not catch up with the election in time; reloading"
            );
        }
        self.stop().await;
        caught_up
    }
}

/// Keeps a replica's table current: watches every key of the store from `revision + 1`
/// on, applies the DDL log records the leader writes (and notes the ones it deletes), and
/// publishes the revision applied up to; reloads when the watch fell behind etcd's
/// compaction; watches again after errors. Returns when `stop` turns true.
async fn follow_store(
    engine: Arc<Engine>,
    store: Arc<EtcdStore>,
    revision: i64,
    compaction_interval: Duration,
    applied: watch::Sender<i64>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client = store.client();
    let prefix = store.etcd_key("");
    let log_prefix = store.etcd_key(DDL_LOG_PREFIX);
    let mut next = revision + 1;
    let mut compaction = tokio::time::interval(compaction_interval);
    loop {
        let watched = tokio::select! {
            watched = client.watch(
                prefix.clone(),
                Some(WatchOptions::new().with_prefix().with_start_revision(next)),
            ) => watched,
            _ = stopped(&mut stop) => return,
        };
        let mut stream = match watched {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "watching the store failed; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                _ = compaction.tick() => {
                    engine.compact_replica();
                    continue;
                }
                _ = stopped(&mut stop) => return,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "the store watch broke; watching again");
                    break;
                }
            };
            if response.compact_revision() > 0 || response.canceled() {
                tracing::warn!(
                    compact_revision = response.compact_revision(),
                    "the store watch fell behind; reloading the meta table"
                );
                let reloading = engine.clone();
                match tokio::task::spawn_blocking(move || reloading.reload_replica()).await {
                    Ok(Ok(stats)) => {
                        next = stats.revision + 1;
                        applied.send_replace(stats.revision);
                    }
                    _ => tokio::time::sleep(RETRY_AFTER).await,
                }
                break;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                if let Some(ts) = kv.key().strip_prefix(log_prefix.as_slice()) {
                    apply_log_event(&engine, event.event_type(), ts, kv.value());
                }
                next = next.max(kv.mod_revision() + 1);
            }
            applied.send_replace(next - 1);
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// Applies one change of the DDL log (`ts`: the key after the log prefix) to a replica.
fn apply_log_event(engine: &Engine, kind: EventType, ts: &[u8], value: &[u8]) {
    match kind {
        EventType::Put => match DdlRecord::decode(value) {
            Ok(record) => {
                if let Err(error) = engine.apply_replicated(&record) {
                    tracing::error!(%error, "a replicated DDL record could not be applied");
                }
            }
            Err(error) => tracing::error!(%error, "a replicated DDL record could not be decoded"),
        },
        EventType::Delete => {
            if let Some(ts) = std::str::from_utf8(ts).ok().and_then(|ts| ts.parse().ok()) {
                engine.forget_replicated(ts);
            }
        }
    }
}
