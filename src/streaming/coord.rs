//! The streaming coordinator, inside `coordinator`: node sessions with leases, the
//! persisted pchannel metadata, the balance loop, and the AssignmentDiscover /
//! UpdateWALBalancePolicy service.
//!
//! The order of a reassignment is upstream's: the new term (`ASSIGNING`, old holder in
//! `histories`) is **persisted first**, then every old holder still registered gets Remove
//! at its term, then the new holder gets Assign, then `ASSIGNED` is persisted and published.
//! A crash anywhere leaves `ASSIGNING`, which the next round drives again with a newer term.
//!
//! Everything lives in the coordinator's [`MetaStore`] under `streamingcoord-meta/`, so it
//! works on redb and etcd alike: pchannel metas, registered nodes, the next server ID (IDs
//! are never reused), the balance policy with the freeze set (persisted, unlike upstream),
//! and the incarnation counter that is the `global` half of the assignment version.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::Stream;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::balancer::{self, ChannelView, NodeState, Policy};
use super::{SERVER_ID_KEY, StreamingFailure, pchannel_name};
use crate::auth::{Credential, Present};
use crate::proto::session::streaming_node_session_service_server::StreamingNodeSessionService;
use crate::proto::session::{
    DeregisterRequest, DeregisterResponse, KeepAliveRequest, KeepAliveResponse, RegisterRequest,
    RegisterResponse,
};
use crate::proto::streaming::streaming_coord_assignment_service_server::StreamingCoordAssignmentService;
use crate::proto::streaming::streaming_node_manager_service_client::StreamingNodeManagerServiceClient;
use crate::proto::streaming::*;
use crate::store::{MetaStore, WriteBatch};
use tonic::service::interceptor::InterceptedService;

/// Key prefix of everything the streaming coordinator persists.
pub const KEY_PREFIX: &str = "streamingcoord-meta/";
const PCHANNEL_PREFIX: &str = "streamingcoord-meta/pchannel/";
const NODE_PREFIX: &str = "streamingcoord-meta/node/";
const NEXT_SERVER_ID_KEY: &str = "streamingcoord-meta/next-server-id";
const POLICY_KEY: &str = "streamingcoord-meta/policy";
const INCARNATION_KEY: &str = "streamingcoord-meta/incarnation";
const CCHANNEL_KEY: &str = "streamingcoord-meta/cchannel";
/// A streaming node's manager service, called with the coordinator's credential.
type NodeClient = StreamingNodeManagerServiceClient<InterceptedService<Channel, Present>>;

/// Consecutive failed balance rounds logged at debug before they are warned about.
const QUIET_FAILED_ROUNDS: u32 = 5;

/// Settings of the streaming coordinator.
#[derive(Debug, Clone)]
pub struct StreamingCoordConfig {
    /// Number of pchannels (`rootCoord.dmlChannelNum`).
    pub pchannels: usize,
    /// Cluster prefix of the pchannel names (`by-dev`).
    pub prefix: String,
    /// A node must renew its lease within this.
    pub lease_ttl: Duration,
    /// After a lease lapses, how long its channels wait before they move (the node's
    /// self-fence has surely taken effect by then).
    pub node_lost_grace: Duration,
    /// Most pchannels per node (`None`: no cap).
    pub max_per_node: Option<usize>,
    /// Most voluntary moves per balance round.
    pub max_moves_per_round: usize,
    /// Timeout of one Assign/Remove call.
    pub operation_timeout: Duration,
    /// Presented to the streaming nodes on Assign/Remove/CollectStatus (they accept
    /// these only from the coordinator when their authentication is on).
    pub credential: Option<Credential>,
}

impl Default for StreamingCoordConfig {
    fn default() -> Self {
        Self {
            pchannels: 16,
            prefix: "by-dev".into(),
            lease_ttl: Duration::from_secs(10),
            node_lost_grace: Duration::from_secs(5),
            max_per_node: None,
            max_moves_per_round: 3,
            operation_timeout: Duration::from_secs(10),
            credential: None,
        }
    }
}

/// Streaming coordinator flags of `collection-operator coordinator`.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamingArgs {
    /// Number of WAL pchannels (named `<prefix>-rootcoord-dml_<i>`); 0 turns the streaming
    /// coordinator off.
    #[arg(long, default_value_t = 16, env = "COORDINATOR_PCHANNELS")]
    pub pchannels: usize,
    /// Cluster prefix of the pchannel names.
    #[arg(long, default_value = "by-dev", env = "COORDINATOR_PCHANNEL_PREFIX")]
    pub pchannel_prefix: String,
    /// Streaming node lease, milliseconds.
    #[arg(long, default_value_t = 10_000, env = "COORDINATOR_STREAMING_LEASE_MS")]
    pub streaming_lease_ms: u64,
    /// Wait after a lapsed lease before a node's pchannels move, milliseconds.
    #[arg(long, default_value_t = 5_000, env = "COORDINATOR_STREAMING_GRACE_MS")]
    pub streaming_grace_ms: u64,
    /// Most pchannels per streaming node (0: no cap).
    #[arg(long, default_value_t = 0, env = "COORDINATOR_MAX_PCHANNELS_PER_NODE")]
    pub max_pchannels_per_node: usize,
    /// Most voluntary pchannel moves per balance round.
    #[arg(long, default_value_t = 3, env = "COORDINATOR_MAX_MOVES_PER_ROUND")]
    pub max_moves_per_round: usize,
    /// DDL through the WAL: append every DDL to the control channel (acknowledged by a
    /// streaming node) before it is applied to the meta store, and complete interrupted
    /// ones on recovery. Needs the streaming coordinator (--pchannels > 0) and a streaming
    /// node; DDL waits for one. Off: DDL goes straight to the meta store.
    #[arg(long, env = "COORDINATOR_DDL_WAL")]
    pub ddl_wal: bool,
}

impl StreamingArgs {
    /// The configuration, or `None` when streaming is off.
    pub fn config(&self) -> Option<StreamingCoordConfig> {
        (self.pchannels > 0).then(|| StreamingCoordConfig {
            pchannels: self.pchannels,
            prefix: self.pchannel_prefix.clone(),
            lease_ttl: Duration::from_millis(self.streaming_lease_ms.max(100)),
            node_lost_grace: Duration::from_millis(self.streaming_grace_ms),
            max_per_node: (self.max_pchannels_per_node > 0).then_some(self.max_pchannels_per_node),
            max_moves_per_round: self.max_moves_per_round,
            ..StreamingCoordConfig::default()
        })
    }
}

struct NodeSession {
    info: StreamingNodeInfo,
    deadline: Instant,
}

struct State {
    channels: BTreeMap<String, PChannelMeta>,
    nodes: BTreeMap<i64, NodeSession>,
    frozen: BTreeSet<i64>,
    allow_rebalance: bool,
    next_server_id: i64,
    version: i64,
}

/// The streaming coordinator; cheap to clone.
#[derive(Clone)]
pub struct StreamingCoord {
    inner: Arc<Inner>,
}

struct Inner {
    config: StreamingCoordConfig,
    store: Arc<dyn MetaStore>,
    state: Mutex<State>,
    /// Serializes "change state + persist" so the store sees changes in state order.
    writes: tokio::sync::Mutex<()>,
    trigger: Notify,
    incarnation: i64,
    cchannel: String,
    published: watch::Sender<Arc<FullStreamingNodeAssignmentWithVersion>>,
    clients: Mutex<HashMap<String, NodeClient>>,
    balance_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn node_key(id: i64) -> String {
    format!("{NODE_PREFIX}{id:020}")
}

impl StreamingCoord {
    /// Recovers from the store (creating the pchannels on first start) and starts the
    /// balance loop.
    pub async fn start(
        store: Arc<dyn MetaStore>,
        config: StreamingCoordConfig,
    ) -> anyhow::Result<Self> {
        let recovered = {
            let store = store.clone();
            let config = config.clone();
            tokio::task::spawn_blocking(move || recover(store.as_ref(), &config))
                .await
                .context("streaming coordinator recovery task")??
        };
        let (state, incarnation, cchannel) = recovered;
        let (published, _) =
            watch::channel(Arc::new(FullStreamingNodeAssignmentWithVersion::default()));
        let coord = Self {
            inner: Arc::new(Inner {
                config,
                store,
                state: Mutex::new(state),
                writes: tokio::sync::Mutex::new(()),
                trigger: Notify::new(),
                incarnation,
                cchannel,
                published,
                clients: Mutex::new(HashMap::new()),
                balance_task: Mutex::new(None),
            }),
        };
        coord.publish();
        {
            let state = coord.inner.state.lock();
            tracing::info!(
                pchannels = state.channels.len(),
                nodes = state.nodes.len(),
                frozen = ?state.frozen,
                incarnation,
                "streaming coordinator recovered"
            );
        }
        let looping = coord.clone();
        let task = tokio::spawn(async move { looping.balance_loop().await });
        *coord.inner.balance_task.lock() = Some(task);
        Ok(coord)
    }

    /// Stops the balance loop (before the store is shut down). An interrupted round leaves
    /// ASSIGNING channels, which the next start drives again.
    pub fn stop(&self) {
        if let Some(task) = self.inner.balance_task.lock().take() {
            task.abort();
        }
    }

    /// The current published assignment.
    pub fn assignment(&self) -> Arc<FullStreamingNodeAssignmentWithVersion> {
        self.inner.published.borrow().clone()
    }

    /// Every pchannel's meta, by name (for tests and status).
    pub fn channels(&self) -> BTreeMap<String, PChannelMeta> {
        self.inner.state.lock().channels.clone()
    }

    async fn commit(&self, batch: WriteBatch) -> Result<(), Status> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.commit(&batch))
            .await
            .map_err(|error| Status::internal(format!("store task: {error}")))?
            .map_err(|error| Status::unavailable(format!("meta store: {error}")))
    }

    /// Writes one pchannel's meta.
    async fn persist_channel(&self, meta: &PChannelMeta) -> Result<(), Status> {
        let name = meta
            .channel
            .as_ref()
            .map(|c| c.name.as_str())
            .unwrap_or_default();
        let mut batch = WriteBatch::default();
        batch.put(format!("{PCHANNEL_PREFIX}{name}"), meta.encode_to_vec());
        self.commit(batch).await
    }

    /// Rebuilds and publishes the assignment view (only ASSIGNED channels are shown).
    fn publish(&self) {
        let mut state = self.inner.state.lock();
        state.version += 1;
        let mut by_node: BTreeMap<i64, StreamingNodeAssignment> = BTreeMap::new();
        for meta in state.channels.values() {
            if meta.state != PChannelMetaState::PchannelMetaStateAssigned as i32 {
                continue;
            }
            let (Some(node), Some(channel)) = (&meta.node, &meta.channel) else {
                continue;
            };
            by_node
                .entry(node.server_id)
                .or_insert_with(|| StreamingNodeAssignment {
                    node: Some(node.clone()),
                    channels: Vec::new(),
                })
                .channels
                .push(channel.clone());
        }
        // Nodes without channels are listed too, so a drain is visible as an empty list.
        for (id, session) in &state.nodes {
            by_node
                .entry(*id)
                .or_insert_with(|| StreamingNodeAssignment {
                    node: Some(session.info.clone()),
                    channels: Vec::new(),
                });
        }
        let version = VersionPair {
            global: self.inner.incarnation,
            local: state.version,
        };
        let full = FullStreamingNodeAssignmentWithVersion {
            version: Some(version),
            assignments: by_node.into_values().collect(),
            cchannel: Some(CChannelAssignment {
                meta: Some(CChannelMeta {
                    pchannel: self.inner.cchannel.clone(),
                }),
            }),
            streaming_version: Some(StreamingVersion { version: 1 }),
            version_by_revision: Some(version),
        };
        drop(state);
        self.inner.published.send_replace(Arc::new(full));
    }

    async fn balance_loop(&self) {
        let tick = (self.inner.config.lease_ttl / 4).min(Duration::from_secs(1));
        let mut failed_rounds = 0u32;
        loop {
            tokio::select! {
                _ = self.inner.trigger.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
            match self.round().await {
                Ok(true) => {
                    failed_rounds = 0;
                    self.inner.trigger.notify_one()
                }
                Ok(false) => failed_rounds = 0,
                Err(error) => {
                    failed_rounds += 1;
                    // A node that has just registered may refuse its first Assign (it has not
                    // stored its server ID yet): retried rounds are normal at start; a
                    // placement that keeps failing is not.
                    if failed_rounds >= QUIET_FAILED_ROUNDS {
                        tracing::warn!(%error, failed_rounds, "balance round failed; retrying");
                    } else {
                        tracing::debug!(%error, failed_rounds, "balance round failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.inner.trigger.notify_one();
                }
            }
        }
    }

    /// Removes node sessions durably (with their freeze marks); the next balance round
    /// moves their pchannels. The caller holds `writes`.
    async fn forget_nodes(&self, ids: &[i64]) -> Result<(), Status> {
        let mut batch = WriteBatch::default();
        let policy = {
            let mut state = self.inner.state.lock();
            for id in ids {
                state.nodes.remove(id);
                state.frozen.remove(id);
                batch.delete(node_key(*id));
            }
            policy_record(&state)
        };
        batch.put(POLICY_KEY, policy.encode_to_vec());
        self.commit(batch).await
    }

    /// One balance round. Ok(true): something changed, run another.
    async fn round(&self) -> Result<bool, Status> {
        let now = Instant::now();
        let _writes = self.inner.writes.lock().await;
        // Sessions lapsed past their grace are gone: forget them (durably).
        let gone: Vec<i64> = {
            let state = self.inner.state.lock();
            state
                .nodes
                .iter()
                .filter(|(_, session)| now >= session.deadline + self.inner.config.node_lost_grace)
                .map(|(id, _)| *id)
                .collect()
        };
        if !gone.is_empty() {
            self.forget_nodes(&gone).await?;
            // Expected after a restart (the previous process's node) and when a node dies.
            tracing::info!(nodes = ?gone, "streaming node sessions expired; their pchannels move");
            self.publish();
        }
        let decisions = {
            let state = self.inner.state.lock();
            let nodes: BTreeMap<i64, NodeState> = state
                .nodes
                .iter()
                .map(|(id, session)| {
                    let node_state = if now >= session.deadline {
                        NodeState::Lost
                    } else if state.frozen.contains(id) {
                        NodeState::Frozen
                    } else {
                        NodeState::Available
                    };
                    (*id, node_state)
                })
                .collect();
            let channels: Vec<ChannelView> = state
                .channels
                .iter()
                .map(|(name, meta)| ChannelView {
                    name: name.clone(),
                    node: meta.node.as_ref().map(|node| node.server_id),
                    unsettled: meta.state != PChannelMetaState::PchannelMetaStateAssigned as i32,
                })
                .collect();
            let policy = Policy {
                max_per_node: self.inner.config.max_per_node,
                max_moves: self.inner.config.max_moves_per_round,
                allow_rebalance: state.allow_rebalance,
            };
            balancer::balance(&channels, &nodes, policy)
        };
        if decisions.is_empty() {
            return Ok(false);
        }
        // New terms first, durably.
        let mut batch = WriteBatch::default();
        let mut moving = Vec::new();
        {
            let mut state = self.inner.state.lock();
            for decision in &decisions {
                let Some(target) = state.nodes.get(&decision.node).map(|s| s.info.clone()) else {
                    continue;
                };
                let Some(meta) = state.channels.get_mut(&decision.channel) else {
                    continue;
                };
                try_assign(meta, target);
                batch.put(
                    format!("{PCHANNEL_PREFIX}{}", decision.channel),
                    meta.encode_to_vec(),
                );
                moving.push(meta.clone());
            }
        }
        self.commit(batch).await?;
        drop(_writes);
        self.publish();
        for meta in &moving {
            if let (Some(channel), Some(node)) = (&meta.channel, &meta.node) {
                tracing::info!(
                    pchannel = channel.name,
                    term = channel.term,
                    node = node.server_id,
                    "assigning pchannel"
                );
            }
        }
        // Then Remove on old holders and Assign on the new ones, channels in parallel.
        let outcomes =
            futures::future::join_all(moving.into_iter().map(|meta| self.apply(meta))).await;
        let mut failures = 0;
        for outcome in outcomes {
            if let Err(error) = outcome {
                failures += 1;
                tracing::debug!(%error, "pchannel assignment not completed; the next round retries");
            }
        }
        if failures > 0 {
            return Err(Status::unavailable(format!(
                "{failures} assignments pending"
            )));
        }
        Ok(true)
    }

    fn client(&self, address: &str) -> Result<NodeClient, Status> {
        let mut clients = self.inner.clients.lock();
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let channel =
            crate::serve::connect_lazy(address, Duration::from_secs(2)).map_err(|error| {
                Status::invalid_argument(format!("node address {address}: {error}"))
            })?;
        let client = StreamingNodeManagerServiceClient::with_interceptor(
            channel,
            Present(self.inner.config.credential.clone()),
        );
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    fn request<T>(node: &StreamingNodeInfo, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = node.server_id.to_string().parse() {
            request.metadata_mut().insert(SERVER_ID_KEY, value);
        }
        request
    }

    async fn apply(&self, meta: PChannelMeta) -> Result<(), Status> {
        let (Some(channel), Some(target)) = (meta.channel.clone(), meta.node.clone()) else {
            return Ok(());
        };
        let timeout = self.inner.config.operation_timeout;
        for history in &meta.histories {
            let Some(old) = &history.node else { continue };
            let registered = self.inner.state.lock().nodes.contains_key(&old.server_id);
            if !registered {
                // Its session is gone (and it fenced itself): nothing to tell it.
                continue;
            }
            let mut client = self.client(&old.address)?;
            let removal = StreamingNodeManagerRemoveRequest {
                pchannel: Some(PChannelInfo {
                    name: channel.name.clone(),
                    term: history.term,
                    access_mode: history.access_mode,
                }),
            };
            let answer =
                tokio::time::timeout(timeout, client.remove(Self::request(old, removal))).await;
            match answer {
                Ok(Ok(_)) => {}
                Ok(Err(status))
                    if StreamingFailure::from_status(&status)
                        .is_some_and(|f| f.code == StreamingCode::IgnoredOperation) => {}
                other => {
                    let still_alive = self
                        .inner
                        .state
                        .lock()
                        .nodes
                        .get(&old.server_id)
                        .is_some_and(|s| Instant::now() < s.deadline);
                    if still_alive {
                        return Err(Status::unavailable(format!(
                            "remove {} term {} from node {}: {other:?}",
                            channel.name, history.term, old.server_id
                        )));
                    }
                }
            }
        }
        let mut client = self.client(&target.address)?;
        let assign = StreamingNodeManagerAssignRequest {
            pchannel: Some(channel.clone()),
        };
        match tokio::time::timeout(timeout, client.assign(Self::request(&target, assign))).await {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                return Err(Status::unavailable(format!(
                    "assign {} term {} to node {}: {}",
                    channel.name,
                    channel.term,
                    target.server_id,
                    status.message()
                )));
            }
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "assign {} term {} to node {} timed out",
                    channel.name, channel.term, target.server_id
                )));
            }
        }
        // ASSIGNED, if nothing newer happened meanwhile.
        let _writes = self.inner.writes.lock().await;
        let done = {
            let mut state = self.inner.state.lock();
            match state.channels.get_mut(&channel.name) {
                Some(current)
                    if current.channel.as_ref().map(|c| c.term) == Some(channel.term)
                        && current.state
                            == PChannelMetaState::PchannelMetaStateAssigning as i32 =>
                {
                    current.state = PChannelMetaState::PchannelMetaStateAssigned as i32;
                    current.histories.clear();
                    current.last_assign_timestamp_seconds = now_seconds();
                    Some(current.clone())
                }
                _ => None,
            }
        };
        if let Some(done) = done {
            self.persist_channel(&done).await?;
            drop(_writes);
            tracing::info!(
                pchannel = channel.name,
                term = channel.term,
                node = target.server_id,
                "pchannel assigned"
            );
            self.publish();
        }
        Ok(())
    }

    /// A client failed on `channel` at its term: mark it UNAVAILABLE (only at that exact
    /// term) so the next round reassigns it.
    pub async fn mark_unavailable(&self, channel: &PChannelInfo) -> Result<(), Status> {
        let _writes = self.inner.writes.lock().await;
        let changed = {
            let mut state = self.inner.state.lock();
            match state.channels.get_mut(&channel.name) {
                Some(meta)
                    if meta.state == PChannelMetaState::PchannelMetaStateAssigned as i32
                        && meta.channel.as_ref().map(|c| c.term) == Some(channel.term) =>
                {
                    meta.state = PChannelMetaState::PchannelMetaStateUnavailable as i32;
                    Some(meta.clone())
                }
                _ => None,
            }
        };
        if let Some(meta) = changed {
            self.persist_channel(&meta).await?;
            drop(_writes);
            self.publish();
            self.inner.trigger.notify_one();
        }
        Ok(())
    }
}

/// Upstream's `TryAssignToServerID`: the current holder goes to the histories (unless the
/// channel was never assigned), the term grows, the state becomes ASSIGNING.
fn try_assign(meta: &mut PChannelMeta, target: StreamingNodeInfo) {
    let channel = meta.channel.get_or_insert_with(Default::default);
    if meta.state != PChannelMetaState::PchannelMetaStateUninitialized as i32
        && let Some(node) = meta.node.clone()
    {
        meta.histories.push(PChannelAssignmentLog {
            term: channel.term,
            node: Some(node),
            access_mode: channel.access_mode,
        });
    }
    channel.term += 1;
    meta.node = Some(target);
    meta.state = PChannelMetaState::PchannelMetaStateAssigning as i32;
}

fn policy_record(state: &State) -> UpdateWalBalancePolicyResponse {
    UpdateWalBalancePolicyResponse {
        config: Some(WalBalancePolicyConfig {
            allow_rebalance: state.allow_rebalance,
        }),
        freeze_node_ids: state.frozen.iter().copied().collect(),
    }
}

type Recovered = (State, i64, String);

fn recover(store: &dyn MetaStore, config: &StreamingCoordConfig) -> anyhow::Result<Recovered> {
    let decode_i64 =
        |bytes: &[u8]| -> Option<i64> { bytes.try_into().ok().map(i64::from_be_bytes) };
    let mut batch = WriteBatch::default();
    let incarnation = store
        .get(INCARNATION_KEY)?
        .as_deref()
        .and_then(decode_i64)
        .unwrap_or(0)
        + 1;
    batch.put(INCARNATION_KEY, incarnation.to_be_bytes().to_vec());
    let mut channels = BTreeMap::new();
    for (key, value) in store.scan_prefix(PCHANNEL_PREFIX)? {
        let meta =
            PChannelMeta::decode(value.as_slice()).with_context(|| format!("decoding {key}"))?;
        if let Some(name) = key.strip_prefix(PCHANNEL_PREFIX) {
            channels.insert(name.to_string(), meta);
        }
    }
    for index in 0..config.pchannels {
        let name = pchannel_name(&config.prefix, index);
        if let std::collections::btree_map::Entry::Vacant(slot) = channels.entry(name.clone()) {
            let meta = PChannelMeta {
                channel: Some(PChannelInfo {
                    name: name.clone(),
                    term: 1,
                    access_mode: PChannelAccessMode::PchannelAccessReadwrite as i32,
                }),
                node: None,
                state: PChannelMetaState::PchannelMetaStateUninitialized as i32,
                histories: Vec::new(),
                last_assign_timestamp_seconds: 0,
            };
            batch.put(format!("{PCHANNEL_PREFIX}{name}"), meta.encode_to_vec());
            slot.insert(meta);
        }
    }
    let cchannel = match store.get(CCHANNEL_KEY)? {
        Some(bytes) => {
            CChannelMeta::decode(bytes.as_slice())
                .context("decoding the cchannel meta")?
                .pchannel
        }
        None => {
            let first = pchannel_name(&config.prefix, 0);
            let meta = CChannelMeta {
                pchannel: first.clone(),
            };
            batch.put(CCHANNEL_KEY, meta.encode_to_vec());
            first
        }
    };
    let now = Instant::now();
    let mut nodes = BTreeMap::new();
    for (key, value) in store.scan_prefix(NODE_PREFIX)? {
        let info = StreamingNodeInfo::decode(value.as_slice())
            .with_context(|| format!("decoding {key}"))?;
        // A fresh lease: a node that is alive renews it; a dead one lapses after the TTL.
        nodes.insert(
            info.server_id,
            NodeSession {
                info,
                deadline: now + config.lease_ttl,
            },
        );
    }
    let policy = match store.get(POLICY_KEY)? {
        Some(bytes) => UpdateWalBalancePolicyResponse::decode(bytes.as_slice())
            .context("decoding the balance policy")?,
        None => UpdateWalBalancePolicyResponse::default(),
    };
    let next_server_id = store
        .get(NEXT_SERVER_ID_KEY)?
        .as_deref()
        .and_then(decode_i64)
        .unwrap_or(1);
    store.commit(&batch)?;
    Ok((
        State {
            channels,
            nodes,
            frozen: policy.freeze_node_ids.into_iter().collect(),
            allow_rebalance: policy.config.is_some_and(|c| c.allow_rebalance),
            next_server_id,
            version: 0,
        },
        incarnation,
        cchannel,
    ))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl StreamingNodeSessionService for StreamingCoord {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let address = request.into_inner().address;
        if address.is_empty() {
            return Err(Status::invalid_argument("address is empty"));
        }
        let _writes = self.inner.writes.lock().await;
        let id = self.inner.state.lock().next_server_id;
        let info = StreamingNodeInfo {
            server_id: id,
            address: address.clone(),
        };
        let mut batch = WriteBatch::default();
        batch.put(NEXT_SERVER_ID_KEY, (id + 1).to_be_bytes().to_vec());
        batch.put(node_key(id), info.encode_to_vec());
        self.commit(batch).await?;
        {
            let mut state = self.inner.state.lock();
            state.next_server_id = id + 1;
            state.nodes.insert(
                id,
                NodeSession {
                    info,
                    deadline: Instant::now() + self.inner.config.lease_ttl,
                },
            );
        }
        drop(_writes);
        tracing::info!(server_id = id, address, "streaming node registered");
        self.publish();
        self.inner.trigger.notify_one();
        Ok(Response::new(RegisterResponse {
            server_id: id,
            lease_ttl_ms: self.inner.config.lease_ttl.as_millis() as u64,
        }))
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterResponse>, Status> {
        let id = request.into_inner().server_id;
        let _writes = self.inner.writes.lock().await;
        if !self.inner.state.lock().nodes.contains_key(&id) {
            return Ok(Response::new(DeregisterResponse { removed: false }));
        }
        self.forget_nodes(&[id]).await?;
        drop(_writes);
        tracing::info!(
            server_id = id,
            "streaming node deregistered; its pchannels move"
        );
        self.publish();
        self.inner.trigger.notify_one();
        Ok(Response::new(DeregisterResponse { removed: true }))
    }

    async fn keep_alive(
        &self,
        request: Request<KeepAliveRequest>,
    ) -> Result<Response<KeepAliveResponse>, Status> {
        let id = request.into_inner().server_id;
        let now = Instant::now();
        let alive = {
            let mut state = self.inner.state.lock();
            match state.nodes.get_mut(&id) {
                // A lapsed lease is not revived: the node has fenced itself already.
                Some(session) if now < session.deadline => {
                    session.deadline = now + self.inner.config.lease_ttl;
                    true
                }
                _ => false,
            }
        };
        Ok(Response::new(KeepAliveResponse {
            alive,
            lease_ttl_ms: self.inner.config.lease_ttl.as_millis() as u64,
        }))
    }
}

#[tonic::async_trait]
impl StreamingCoordAssignmentService for StreamingCoord {
    type AssignmentDiscoverStream = BoxStream<AssignmentDiscoverResponse>;

    async fn update_wal_balance_policy(
        &self,
        request: Request<UpdateWalBalancePolicyRequest>,
    ) -> Result<Response<UpdateWalBalancePolicyResponse>, Status> {
        let request = request.into_inner();
        let paths: Vec<String> = request
            .update_mask
            .map(|mask| mask.paths)
            .unwrap_or_default();
        let _writes = self.inner.writes.lock().await;
        let record = {
            let mut state = self.inner.state.lock();
            if let Some(config) = request.config
                && paths
                    .iter()
                    .any(|p| p == "config.allow_rebalance" || p == "config")
            {
                state.allow_rebalance = config.allow_rebalance;
            }
            if let Some(nodes) = request.nodes {
                state.frozen.extend(nodes.freeze_node_ids);
                for id in nodes.defreeze_node_ids {
                    state.frozen.remove(&id);
                }
            }
            policy_record(&state)
        };
        let mut batch = WriteBatch::default();
        batch.put(POLICY_KEY, record.encode_to_vec());
        self.commit(batch).await?;
        drop(_writes);
        tracing::info!(frozen = ?record.freeze_node_ids, allow_rebalance = record.config.as_ref().is_some_and(|c| c.allow_rebalance), "WAL balance policy updated");
        self.inner.trigger.notify_one();
        Ok(Response::new(record))
    }

    async fn assignment_discover(
        &self,
        request: Request<Streaming<AssignmentDiscoverRequest>>,
    ) -> Result<Response<Self::AssignmentDiscoverStream>, Status> {
        let mut inbound = request.into_inner();
        let mut published = self.inner.published.subscribe();
        let (out, responses) = mpsc::channel(16);
        let coord = self.clone();
        tokio::spawn(async move {
            let full = |assignment: Arc<FullStreamingNodeAssignmentWithVersion>| {
                AssignmentDiscoverResponse {
                    response: Some(assignment_discover_response::Response::FullAssignment(
                        assignment.as_ref().clone(),
                    )),
                }
            };
            let first = published.borrow_and_update().clone();
            if out.send(Ok(full(first))).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    changed = published.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let current = published.borrow_and_update().clone();
                        if out.send(Ok(full(current))).await.is_err() {
                            return;
                        }
                    }
                    command = inbound.message() => match command {
                        Ok(Some(AssignmentDiscoverRequest { command: Some(assignment_discover_request::Command::ReportError(report)) })) => {
                            if let Some(channel) = report.pchannel
                                && let Err(error) = coord.mark_unavailable(&channel).await
                            {
                                tracing::warn!(%error, "marking a reported pchannel unavailable failed");
                            }
                        }
                        Ok(Some(AssignmentDiscoverRequest { command: Some(assignment_discover_request::Command::Close(_)) })) => {
                            let _ = out.send(Ok(AssignmentDiscoverResponse {
                                response: Some(assignment_discover_response::Response::Close(CloseAssignmentDiscoverResponse {})),
                            })).await;
                            return;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: i64) -> StreamingNodeInfo {
        StreamingNodeInfo {
            server_id: id,
            address: format!("n{id}"),
        }
    }

    #[test]
    fn every_assignment_takes_a_new_term_and_remembers_the_holder_to_remove() {
        let mut meta = PChannelMeta {
            channel: Some(PChannelInfo {
                name: "ch".into(),
                term: 1,
                access_mode: 0,
            }),
            state: PChannelMetaState::PchannelMetaStateUninitialized as i32,
            ..Default::default()
        };
        try_assign(&mut meta, node(1));
        assert_eq!(meta.channel.as_ref().map(|c| c.term), Some(2));
        assert!(
            meta.histories.is_empty(),
            "never assigned: nobody to remove"
        );
        // The Assign failed (still ASSIGNING); the next round drives it again elsewhere.
        try_assign(&mut meta, node(2));
        assert_eq!(meta.channel.as_ref().map(|c| c.term), Some(3));
        let history: Vec<(i64, i64)> = meta
            .histories
            .iter()
            .map(|h| (h.term, h.node.as_ref().map_or(0, |n| n.server_id)))
            .collect();
        assert_eq!(history, vec![(2, 1)]);
        assert_eq!(meta.node.as_ref().map(|n| n.server_id), Some(2));
        assert_eq!(
            meta.state,
            PChannelMetaState::PchannelMetaStateAssigning as i32
        );
    }

    #[test]
    fn recovery_creates_the_pchannels_once_and_counts_incarnations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::RedbStore::open(dir.path()).expect("store");
        let config = StreamingCoordConfig {
            pchannels: 3,
            ..Default::default()
        };
        let (state, first, cchannel) = recover(&store, &config).expect("recover");
        assert_eq!(
            state.channels.keys().cloned().collect::<Vec<_>>(),
            vec![
                "by-dev-rootcoord-dml_0",
                "by-dev-rootcoord-dml_1",
                "by-dev-rootcoord-dml_2"
            ]
        );
        assert_eq!(cchannel, "by-dev-rootcoord-dml_0");
        let (again, second, _) = recover(&store, &config).expect("recover again");
        assert_eq!(again.channels, state.channels);
        assert_eq!(second, first + 1);
    }
}
