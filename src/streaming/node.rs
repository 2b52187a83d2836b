//! The streaming node: holds the pchannels the coordinator assigns to it, one WAL each.
//!
//! * **Session.** It registers with the coordinator (a server ID never reused) and renews
//!   its lease; when the lease lapses by its own clock (measured from when the last
//!   successful renewal was *sent*, so it always lapses here before it does at the
//!   coordinator) it fences every WAL and registers again under a new ID.
//! * **Per-channel lifetime.** Each pchannel has one lifetime, serialized by its own lock
//!   (the channel's actor): `(term, available)` only moves forward. An Assign or Remove that
//!   is not newer is `IGNORED_OPERATION`; Assign of the held term is idempotent.
//! * **Handler.** Produce and Consume name the pchannel *and term* in the `create-producer` /
//!   `create-consumer` metadata; a different term is `UNMATCHED_CHANNEL_TERM`, a channel not
//!   held is `CHANNEL_NOT_EXIST`, a fenced one `CHANNEL_FENCED`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::wal::{LocalDirStorage, ReadFrom, Wal, WalConfig, WalError, WalStorage};
use super::{
    CREATE_CONSUMER_KEY, CREATE_PRODUCER_KEY, PROP_VCHANNEL, SERVER_ID_KEY, StreamingFailure,
    StreamingResult,
};
use crate::auth::{AuthInterceptor, PlaneAuth, Present};
use crate::proto::session::streaming_node_session_service_client::StreamingNodeSessionServiceClient;
use crate::proto::session::{DeregisterRequest, KeepAliveRequest, RegisterRequest};
use crate::proto::streaming::streaming_node_handler_service_server::{
    StreamingNodeHandlerService, StreamingNodeHandlerServiceServer,
};
use crate::proto::streaming::streaming_node_manager_service_server::{
    StreamingNodeManagerService, StreamingNodeManagerServiceServer,
};
use crate::proto::streaming::*;

/// Settings of a streaming node process.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The coordinator's gRPC URL (`http://host:19530`).
    pub coordinator: String,
    /// Where the segments live (shared between nodes in a cluster).
    pub wal_dir: PathBuf,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Listen on this Unix socket (0600) instead of `listen`, advertised as `unix:PATH`
    /// (`up`'s in-process node).
    pub socket: Option<PathBuf>,
    /// Address the coordinator and clients use to reach this node; default: the bound
    /// listen address.
    pub advertise: Option<String>,
    /// WAL tuning.
    pub wal: WalConfig,
    /// When set, every call to this node must carry one of the accepted credentials (the
    /// coordinator's), and the node presents its own to the coordinator; `None`: open.
    pub auth: Option<PlaneAuth>,
}

/// One pchannel's lifetime on this node.
struct Lifetime {
    /// The newest term seen (Assign or Remove); -1: none.
    term: i64,
    /// Whether the WAL of `term` is open.
    wal: Option<Arc<Wal>>,
}

/// The state of a streaming node, shared by its gRPC services and its session task.
pub struct StreamingNode {
    storage: Arc<dyn WalStorage>,
    wal_config: WalConfig,
    channels: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Lifetime>>>>,
    server_id: AtomicI64,
    /// Lease deadline, in nanoseconds since `epoch`; 0: no lease.
    lease_deadline: AtomicU64,
    epoch: Instant,
    next_stream_id: AtomicI64,
}

impl StreamingNode {
    /// A node on `storage`, not yet registered.
    pub fn new(storage: Arc<dyn WalStorage>, wal_config: WalConfig) -> Self {
        Self {
            storage,
            wal_config,
            channels: Mutex::new(HashMap::new()),
            server_id: AtomicI64::new(0),
            lease_deadline: AtomicU64::new(0),
            epoch: Instant::now(),
            next_stream_id: AtomicI64::new(1),
        }
    }

    /// The server ID of the current session (0 before the first registration).
    pub fn server_id(&self) -> i64 {
        self.server_id.load(Ordering::Acquire)
    }

    fn leased(&self) -> bool {
        let deadline = self.lease_deadline.load(Ordering::Acquire);
        deadline != 0 && (self.epoch.elapsed().as_nanos() as u64) < deadline
    }

    fn renew(&self, until: Instant) {
        let nanos = until.saturating_duration_since(self.epoch).as_nanos() as u64;
        self.lease_deadline.store(nanos.max(1), Ordering::Release);
    }

    /// Stops all writing: the lease is gone, so a newer term may be open elsewhere.
    pub async fn lose_lease(&self, why: &str) {
        self.fence_all(why, false).await
    }

    /// Stops all writing before the process ends: the same fencing as a lost lease, logged
    /// as the expected step it is.
    pub async fn shut_down(&self) {
        self.fence_all("shutting down", true).await
    }

    async fn fence_all(&self, why: &str, expected: bool) {
        self.lease_deadline.store(0, Ordering::Release);
        let slots: Vec<_> = self.channels.lock().values().cloned().collect();
        for slot in slots {
            let mut life = slot.lock().await;
            if let Some(wal) = life.wal.take() {
                if expected {
                    tracing::info!(
                        pchannel = wal.pchannel(),
                        term = wal.term(),
                        why,
                        "fencing the WAL"
                    );
                } else {
                    tracing::warn!(
                        pchannel = wal.pchannel(),
                        term = wal.term(),
                        why,
                        "fencing the WAL"
                    );
                }
                wal.fence(why);
                let _ = tokio::task::spawn_blocking(move || wal.close("lease lost")).await;
            }
        }
    }

    fn slot(&self, pchannel: &str) -> Arc<tokio::sync::Mutex<Lifetime>> {
        self.channels
            .lock()
            .entry(pchannel.to_string())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Lifetime {
                    term: -1,
                    wal: None,
                }))
            })
            .clone()
    }

    /// Opens `pchannel` at `term` (closing an older term first); blocks until it is ready.
    pub async fn assign(&self, channel: &PChannelInfo) -> StreamingResult<()> {
        if !self.leased() {
            return Err(StreamingFailure::new(
                StreamingCode::OnShutdown,
                "this node holds no lease",
            ));
        }
        let slot = self.slot(&channel.name);
        let mut life = slot.lock().await;
        if channel.term < life.term || (channel.term == life.term && life.wal.is_none()) {
            return Err(StreamingFailure::ignored(format!(
                "assign {} term {}: term {} already seen",
                channel.name, channel.term, life.term
            )));
        }
        if channel.term == life.term {
            return Ok(());
        }
        if let Some(old) = life.wal.take() {
            let _ =
                tokio::task::spawn_blocking(move || old.close("a newer term was assigned")).await;
        }
        life.term = channel.term;
        let storage = self.storage.clone();
        let name = channel.name.clone();
        let term = channel.term;
        let config = self.wal_config.clone();
        let opened = tokio::task::spawn_blocking(move || Wal::open(storage, &name, term, config))
            .await
            .map_err(|error| StreamingFailure::inner(format!("WAL open task: {error}")))?;
        match opened {
            Ok(wal) => {
                tracing::info!(pchannel = channel.name, term, "pchannel assigned");
                life.wal = Some(Arc::new(wal));
                Ok(())
            }
            Err(WalError::Fenced { reason, .. }) => {
                Err(StreamingFailure::fenced(&channel.name, &reason))
            }
            Err(error @ WalError::TermTaken { .. }) => {
                Err(StreamingFailure::ignored(error.to_string()))
            }
            Err(error) => Err(StreamingFailure::inner(error.to_string())),
        }
    }

    /// Closes `pchannel` if `term` is not older than what this node saw.
    pub async fn remove(&self, channel: &PChannelInfo) -> StreamingResult<()> {
        let slot = self.slot(&channel.name);
        let mut life = slot.lock().await;
        if channel.term < life.term {
            return Err(StreamingFailure::ignored(format!(
                "remove {} term {}: term {} already seen",
                channel.name, channel.term, life.term
            )));
        }
        life.term = channel.term;
        if let Some(wal) = life.wal.take() {
            let _ = tokio::task::spawn_blocking(move || wal.close("removed")).await;
            tracing::info!(
                pchannel = channel.name,
                term = channel.term,
                "pchannel removed"
            );
        }
        Ok(())
    }

    /// The open WAL of `channel` at exactly its term.
    pub async fn wal_for(&self, channel: &PChannelInfo) -> StreamingResult<Arc<Wal>> {
        let slot = self.channels.lock().get(&channel.name).cloned();
        let Some(slot) = slot else {
            return Err(StreamingFailure::channel_not_exist(&channel.name));
        };
        let life = slot.lock().await;
        let Some(wal) = life.wal.clone() else {
            return Err(StreamingFailure::channel_not_exist(&channel.name));
        };
        if wal.term() != channel.term {
            return Err(StreamingFailure::unmatched_term(
                &channel.name,
                channel.term,
                wal.term(),
            ));
        }
        if wal.is_fenced() || !self.leased() {
            return Err(StreamingFailure::fenced(
                &channel.name,
                "lease lost or newer term",
            ));
        }
        Ok(wal)
    }

    /// The WALs open here, for CollectStatus.
    pub async fn open_channels(&self) -> Vec<PChannelInfo> {
        let slots: Vec<_> = self.channels.lock().values().cloned().collect();
        let mut open = Vec::new();
        for slot in slots {
            if let Some(wal) = slot.lock().await.wal.as_ref()
                && !wal.is_fenced()
            {
                open.push(PChannelInfo {
                    name: wal.pchannel().to_string(),
                    term: wal.term(),
                    access_mode: PChannelAccessMode::PchannelAccessReadwrite as i32,
                });
            }
        }
        open.sort_by(|a, b| a.name.cmp(&b.name));
        open
    }

    fn check_target(&self, request_metadata: &tonic::metadata::MetadataMap) -> StreamingResult<()> {
        if let Some(value) = request_metadata.get(SERVER_ID_KEY) {
            let wanted: i64 = value
                .to_str()
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| StreamingFailure::invalid_argument("malformed server id header"))?;
            let current = self.server_id();
            if wanted != current {
                return Err(StreamingFailure::ignored(format!(
                    "call meant for server {wanted}, this is server {current}"
                )));
            }
        }
        Ok(())
    }
}

/// Decodes the base64 protobuf a stream names its pchannel with.
fn channel_from_metadata<T: prost::Message + Default>(
    metadata: &tonic::metadata::MetadataMap,
    key: &str,
) -> StreamingResult<T> {
    let text = metadata
        .get(key)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| StreamingFailure::invalid_argument(format!("missing {key} metadata")))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|error| StreamingFailure::invalid_argument(format!("{key}: {error}")))?;
    T::decode(bytes.as_slice())
        .map_err(|error| StreamingFailure::invalid_argument(format!("{key}: {error}")))
}

/// Encodes a pchannel for the `create-producer` / `create-consumer` metadata.
pub fn encode_channel_metadata<T: prost::Message>(request: &T) -> String {
    base64::engine::general_purpose::STANDARD.encode(request.encode_to_vec())
}

fn wal_failure(pchannel: &str, error: WalError) -> StreamingFailure {
    match error {
        WalError::Fenced { reason, .. } => StreamingFailure::fenced(pchannel, &reason),
        WalError::BadPosition(_) | WalError::NoSuchPosition(_) => {
            StreamingFailure::invalid_argument(error.to_string())
        }
        other => StreamingFailure::inner(other.to_string()),
    }
}

/// gRPC face of a [`StreamingNode`].
#[derive(Clone)]
pub struct NodeService {
    node: Arc<StreamingNode>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl StreamingNodeManagerService for NodeService {
    async fn assign(
        &self,
        request: Request<StreamingNodeManagerAssignRequest>,
    ) -> Result<Response<StreamingNodeManagerAssignResponse>, Status> {
        self.node.check_target(request.metadata())?;
        let channel = request
            .into_inner()
            .pchannel
            .ok_or_else(|| StreamingFailure::invalid_argument("pchannel missing"))?;
        self.node.assign(&channel).await?;
        Ok(Response::new(StreamingNodeManagerAssignResponse {}))
    }

    async fn remove(
        &self,
        request: Request<StreamingNodeManagerRemoveRequest>,
    ) -> Result<Response<StreamingNodeManagerRemoveResponse>, Status> {
        self.node.check_target(request.metadata())?;
        let channel = request
            .into_inner()
            .pchannel
            .ok_or_else(|| StreamingFailure::invalid_argument("pchannel missing"))?;
        self.node.remove(&channel).await?;
        Ok(Response::new(StreamingNodeManagerRemoveResponse {}))
    }

    async fn collect_status(
        &self,
        request: Request<StreamingNodeManagerCollectStatusRequest>,
    ) -> Result<Response<StreamingNodeManagerCollectStatusResponse>, Status> {
        self.node.check_target(request.metadata())?;
        let wals = self
            .node
            .open_channels()
            .await
            .into_iter()
            .map(|info| StreamingNodeWalMetrics {
                info: Some(info),
                metrics: Some(streaming_node_wal_metrics::Metrics::Rw(
                    StreamingNodeRwwalMetrics::default(),
                )),
            })
            .collect();
        Ok(Response::new(StreamingNodeManagerCollectStatusResponse {
            metrics: Some(StreamingNodeMetrics { wals }),
        }))
    }
}

#[tonic::async_trait]
impl StreamingNodeHandlerService for NodeService {
    type ProduceStream = BoxStream<ProduceResponse>;
    type ConsumeStream = BoxStream<ConsumeResponse>;

    async fn produce(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStream>, Status> {
        let create: CreateProducerRequest =
            channel_from_metadata(request.metadata(), CREATE_PRODUCER_KEY)?;
        let channel = create
            .pchannel
            .ok_or_else(|| StreamingFailure::invalid_argument("pchannel missing"))?;
        let wal = self.node.wal_for(&channel).await?;
        let producer_id = self.node.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let mut inbound = request.into_inner();
        let (out, responses) = mpsc::channel(1024);
        let node = self.node.clone();
        tokio::spawn(async move {
            let created = ProduceResponse {
                response: Some(produce_response::Response::Create(CreateProducerResponse {
                    wal_name: String::new(),
                    producer_server_id: producer_id,
                })),
            };
            if out.send(Ok(created)).await.is_err() {
                return;
            }
            let mut pending = FuturesOrdered::new();
            let mut open = true;
            let mut closed_by_client = false;
            loop {
                tokio::select! {
                    incoming = inbound.next(), if open => match incoming {
                        Some(Ok(ProduceRequest { request: Some(produce_request::Request::Produce(produce)) })) => {
                            let request_id = produce.request_id;
                            let message = produce.message.unwrap_or_default();
                            let queued = if node.leased() {
                                wal.enqueue(message).await
                            } else {
                                wal.fence("lease lost");
                                Err(wal.fenced_error())
                            };
                            let pchannel = channel.name.clone();
                            pending.push_back(async move {
                                let outcome = match queued {
                                    Ok(answer) => answer.await.unwrap_or_else(|_| Err(WalError::Fenced { pchannel: pchannel.clone(), term: 0, reason: "writer stopped".into() })),
                                    Err(error) => Err(error),
                                };
                                let response = match outcome {
                                    Ok(appended) => produce_message_response::Response::Result(ProduceMessageResponseResult {
                                        id: Some(appended.position.to_message_id()),
                                        timetick: appended.time_tick,
                                        last_confirmed_id: Some(appended.position.to_message_id()),
                                        ..Default::default()
                                    }),
                                    Err(error) => produce_message_response::Response::Error(wal_failure(&pchannel, error).to_proto()),
                                };
                                ProduceResponse { response: Some(produce_response::Response::Produce(ProduceMessageResponse { request_id, response: Some(response) })) }
                            });
                        }
                        Some(Ok(ProduceRequest { request: Some(produce_request::Request::Close(_)) })) => {
                            open = false;
                            closed_by_client = true;
                        }
                        Some(Ok(ProduceRequest { request: None })) => {}
                        Some(Err(_)) | None => open = false,
                    },
                    Some(response) = pending.next(), if !pending.is_empty() => {
                        if out.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                    else => break,
                }
            }
            if closed_by_client {
                let _ = out
                    .send(Ok(ProduceResponse {
                        response: Some(produce_response::Response::Close(CloseProducerResponse {})),
                    }))
                    .await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }

    async fn consume(
        &self,
        request: Request<Streaming<ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let create: CreateConsumerRequest =
            channel_from_metadata(request.metadata(), CREATE_CONSUMER_KEY)?;
        let channel = create
            .pchannel
            .ok_or_else(|| StreamingFailure::invalid_argument("pchannel missing"))?;
        let wal = self.node.wal_for(&channel).await?;
        let mut inbound = request.into_inner();
        let first = inbound
            .next()
            .await
            .ok_or_else(|| StreamingFailure::invalid_argument("no consumer request"))??;
        let Some(consume_request::Request::CreateVchannelConsumer(consumer)) = first.request else {
            return Err(StreamingFailure::invalid_argument(
                "first request must create a vchannel consumer",
            )
            .into());
        };
        let start = match consumer.deliver_policy.and_then(|policy| policy.policy) {
            None | Some(deliver_policy::Policy::All(())) => ReadFrom::Beginning,
            Some(deliver_policy::Policy::Latest(())) => ReadFrom::End,
            Some(deliver_policy::Policy::StartFrom(id)) => ReadFrom::At(
                super::wal::Position::parse(&id.id).map_err(|e| wal_failure(&channel.name, e))?,
            ),
            Some(deliver_policy::Policy::StartAfter(id)) => ReadFrom::After(
                super::wal::Position::parse(&id.id).map_err(|e| wal_failure(&channel.name, e))?,
            ),
        };
        let mut reader = wal
            .reader(start)
            .map_err(|e| wal_failure(&channel.name, e))?;
        let consumer_id = self.node.next_stream_id.fetch_add(1, Ordering::Relaxed);
        let vchannel = consumer.vchannel;
        let whole_channel = vchannel.is_empty() || vchannel == channel.name;
        let (out, responses) = mpsc::channel(256);
        tokio::spawn(async move {
            let opening = [
                consume_response::Response::Create(CreateConsumerResponse {
                    wal_name: String::new(),
                    consumer_server_id: consumer_id,
                }),
                consume_response::Response::CreateVchannel(CreateVChannelConsumerResponse {
                    response: Some(create_v_channel_consumer_response::Response::ConsumerId(
                        consumer_id,
                    )),
                }),
            ];
            for response in opening {
                if out
                    .send(Ok(ConsumeResponse {
                        response: Some(response),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            loop {
                let record = tokio::select! {
                    record = reader.next() => record,
                    _ = out.closed() => return,
                };
                let record = match record {
                    Ok(Some(record)) => record,
                    Ok(None) => {
                        let _ = out
                            .send(Err(StreamingFailure::fenced(
                                &channel.name,
                                "the WAL was closed on this node",
                            )
                            .into()))
                            .await;
                        return;
                    }
                    Err(error) => {
                        let _ = out
                            .send(Err(wal_failure(&channel.name, error).into()))
                            .await;
                        return;
                    }
                };
                if !whole_channel
                    && !record.is_term_start
                    && record.message.properties.get(PROP_VCHANNEL) != Some(&vchannel)
                {
                    continue;
                }
                let response = ConsumeResponse {
                    response: Some(consume_response::Response::Consume(ConsumeMessageReponse {
                        consumer_id,
                        message: Some(record.to_immutable()),
                    })),
                };
                if out.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(responses))))
    }
}

/// Keeps the node's session with the coordinator: register, renew, and on a lapsed lease
/// fence everything and register again.
async fn keep_session(
    node: Arc<StreamingNode>,
    coordinator: String,
    address: String,
    present: Present,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let registered = async {
            let channel = crate::serve::connect(&coordinator, Duration::from_secs(2)).await?;
            let mut client =
                StreamingNodeSessionServiceClient::with_interceptor(channel, present.clone());
            let sent = Instant::now();
            let response = client
                .register(RegisterRequest {
                    address: address.clone(),
                })
                .await?
                .into_inner();
            anyhow::Ok((client, response, sent))
        }
        .await;
        let (mut client, response, sent) = match registered {
            Ok(ok) => ok,
            Err(error) => {
                tracing::warn!(%error, coordinator, "registering with the coordinator failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut ttl = Duration::from_millis(response.lease_ttl_ms.max(100));
        node.server_id.store(response.server_id, Ordering::Release);
        node.renew(sent + ttl);
        tracing::info!(
            server_id = response.server_id,
            address,
            ttl_ms = ttl.as_millis() as u64,
            "registered with the coordinator"
        );
        loop {
            tokio::time::sleep(ttl / 4).await;
            let sent = Instant::now();
            let answer = tokio::time::timeout(
                ttl / 2,
                client.keep_alive(KeepAliveRequest {
                    server_id: response.server_id,
                }),
            )
            .await;
            match answer {
                Ok(Ok(reply)) if reply.get_ref().alive => {
                    ttl = Duration::from_millis(reply.get_ref().lease_ttl_ms.max(100));
                    if node.leased() {
                        node.renew(sent + ttl);
                    } else {
                        node.lose_lease("lease lapsed before renewal").await;
                        break;
                    }
                }
                Ok(Ok(_)) => {
                    node.lose_lease("the coordinator dropped this session")
                        .await;
                    break;
                }
                Ok(Err(error)) => tracing::warn!(%error, "lease renewal failed"),
                Err(_) => tracing::warn!("lease renewal timed out"),
            }
            if !node.leased() {
                node.lose_lease("lease lapsed").await;
                break;
            }
        }
        tracing::warn!(
            server_id = response.server_id,
            "session lost; registering again"
        );
    }
}

/// Serves the node's services on `listener` until `shutdown`; with `accept`, every call
/// (Assign, Remove, Produce, Consume, ...) must carry one of its credentials.
pub async fn serve(
    node: Arc<StreamingNode>,
    listener: TcpListener,
    accept: Option<crate::auth::Authenticator>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    serve_incoming(node, incoming, accept, shutdown).await
}

/// [`serve`] on any stream of connections (a Unix socket's).
pub async fn serve_incoming<Io, IoError>(
    node: Arc<StreamingNode>,
    incoming: impl Stream<Item = Result<Io, IoError>> + Send,
    accept: Option<crate::auth::Authenticator>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()>
where
    Io: crate::serve::ServerIo,
    IoError: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let health = crate::serve::HealthAnswer::server(NodeHealth(node.clone()));
    let service = NodeService { node };
    let check = AuthInterceptor::new(accept);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Outside the auth check: Kubernetes probes carry no credentials.
        .add_service(health)
        .add_service(StreamingNodeManagerServiceServer::with_interceptor(
            service.clone(),
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            StreamingNodeHandlerServiceServer::new(service)
                .max_decoding_message_size(crate::serve::MAX_MESSAGE_BYTES),
            check,
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("streaming node gRPC server failed")
}

/// Health service names that answer readiness: `SERVING` while the node holds a live
/// session with the coordinator, so that pchannels can be placed on it.
pub const READY_HEALTH_SERVICES: [&str; 2] =
    ["", "milvus.proto.streaming.StreamingNodeHandlerService"];

/// Health service name that answers liveness: `SERVING` whenever the server answers. A
/// node that lost its coordinator registers again by itself; restarting it would not help.
pub const LIVE_HEALTH_SERVICE: &str = "liveness";

/// A streaming node's answer to `grpc.health.v1.Health`.
struct NodeHealth(Arc<StreamingNode>);

#[tonic::async_trait]
impl crate::serve::HealthSource for NodeHealth {
    async fn status(
        &self,
        service: &str,
    ) -> Result<tonic_health::pb::health_check_response::ServingStatus, Status> {
        use tonic_health::pb::health_check_response::ServingStatus;
        if service == LIVE_HEALTH_SERVICE {
            return Ok(ServingStatus::Serving);
        }
        if !READY_HEALTH_SERVICES.contains(&service) {
            return Err(Status::not_found(format!("unknown service {service:?}")));
        }
        Ok(if self.0.leased() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

/// Runs a streaming node process until SIGINT/SIGTERM.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    run_until(config, crate::serve::shutdown_signal()).await
}

/// Runs a streaming node until `shutdown` resolves (`up` runs one in-process this way).
pub async fn run_until(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let storage = LocalDirStorage::open(&config.wal_dir)
        .with_context(|| format!("opening the WAL directory {}", config.wal_dir.display()))?;
    let node = Arc::new(StreamingNode::new(Arc::new(storage), config.wal.clone()));
    let listener = match &config.socket {
        Some(path) => Listener::Unix(crate::serve::bind_unix(path)?),
        None => Listener::Tcp(crate::serve::bind(config.listen).await?),
    };
    let bound = match (&listener, &config.socket) {
        (Listener::Tcp(listener), _) => listener.local_addr()?.to_string(),
        (Listener::Unix(_), Some(path)) => {
            format!("{}{}", crate::serve::UNIX_PREFIX, path.display())
        }
        (Listener::Unix(_), None) => anyhow::bail!("a Unix listener without a path"),
    };
    let address = config.advertise.clone().unwrap_or_else(|| bound.clone());
    tracing::info!(listen = %bound, address, wal_dir = %config.wal_dir.display(), coordinator = config.coordinator, authentication = config.auth.is_some(), "streaming node serving");
    let present = Present(config.auth.as_ref().map(|auth| auth.present.clone()));
    let session = tokio::spawn(keep_session(
        node.clone(),
        config.coordinator.clone(),
        address,
        present.clone(),
    ));
    let accept = config.auth.as_ref().map(|auth| auth.accept.clone());
    let served = match listener {
        Listener::Tcp(listener) => serve(node.clone(), listener, accept, shutdown).await,
        Listener::Unix(listener) => {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            serve_incoming(node.clone(), incoming, accept, shutdown).await
        }
    };
    session.abort();
    node.shut_down().await;
    hand_over(&node, &config.coordinator, present).await;
    served
}

enum Listener {
    Tcp(TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Ends the node's session at the coordinator after its WALs are fenced, so that its
/// pchannels move at once instead of after the lease and grace. Best effort: a coordinator
/// that cannot be reached lets the lease lapse as after a crash.
async fn hand_over(node: &StreamingNode, coordinator: &str, present: Present) {
    let server_id = node.server_id();
    if server_id == 0 {
        return;
    }
    let deregistered = async {
        let channel = crate::serve::connect(coordinator, Duration::from_secs(1)).await?;
        let reply = StreamingNodeSessionServiceClient::with_interceptor(channel, present)
            .deregister(DeregisterRequest { server_id })
            .await?;
        anyhow::Ok(reply.into_inner().removed)
    };
    match tokio::time::timeout(Duration::from_secs(2), deregistered).await {
        Ok(Ok(removed)) => {
            tracing::info!(server_id, removed, "session ended; pchannels handed over")
        }
        Ok(Err(error)) => {
            tracing::info!(server_id, %error, "could not end the session; its lease will lapse")
        }
        Err(_) => tracing::info!(
            server_id,
            "ending the session timed out; its lease will lapse"
        ),
    }
}
