//! The Milvus-compatible coordinator: a gRPC server for `MilvusService` over the meta
//! engine (redb by default; etcd with cargo feature `etcd` and `--meta-store etcd`).

pub mod connections;
pub mod ddl_wal;
pub mod engine;
#[cfg(feature = "etcd")]
pub mod ha;
pub mod health;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

pub use crate::auth;
pub use auth::{AuthArgs, AuthConfig, Authenticator};
pub use connections::{ConnectionArgs, ConnectionLimits};
pub use engine::{Engine, EngineConfig, RecoveryStats};
pub use service::CoordinatorService;

use crate::proto::api::milvus_service_server::MilvusServiceServer;
use crate::serve::{MAX_MESSAGE_BYTES, shutdown_signal};
use crate::store::{MetaStore, RedbOptions, RedbStore};

/// Settings of a coordinator process.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where the redb file lives.
    pub data_dir: PathBuf,
    /// Which store holds the metadata (redb in `data_dir`, or etcd).
    pub meta_store: MetaStoreArgs,
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// History and batching.
    pub engine: EngineConfig,
    /// Accepted credentials; `None`: the endpoint is open.
    pub auth: Option<AuthConfig>,
    /// Credentials of the WAL plane (`--internal-token-file`): the coordinator presents
    /// the first to the streaming nodes, and its streaming endpoints (node sessions,
    /// assignment) accept only these. `None`: the client credentials of `auth` serve.
    pub internal_auth: Option<AuthConfig>,
    /// Certificate and key to serve TLS with; `None`: plaintext.
    pub tls: Option<TlsFiles>,
    /// The streaming coordinator (WAL placement); `None`: off.
    pub streaming: Option<crate::streaming::coord::StreamingCoordConfig>,
    /// DDL through the WAL (`--ddl-wal`): every DDL is appended to the control channel
    /// before the meta store (see [`ddl_wal`]); needs `streaming`.
    pub ddl_wal: bool,
    /// Connection cap and idle timeout (the cap is lowered to fit the open-file limit).
    pub connections: ConnectionLimits,
}

/// Where the metadata is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MetaStoreKind {
    /// The embedded redb file in the data directory.
    #[default]
    Redb,
    /// An etcd cluster (builds with cargo feature `etcd` only).
    Etcd,
}

/// Meta store flags of the coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct MetaStoreArgs {
    /// Where the metadata is kept: the embedded redb file in --data-dir, or etcd (needs a
    /// build with cargo feature `etcd`).
    #[arg(
        long,
        value_enum,
        default_value = "redb",
        env = "COORDINATOR_META_STORE"
    )]
    pub meta_store: MetaStoreKind,
    /// etcd endpoints, comma separated (e.g. http://127.0.0.1:2379); with --meta-store etcd.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "URL",
        env = "COORDINATOR_ETCD_ENDPOINTS"
    )]
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every key the coordinator writes in etcd.
    #[arg(
        long,
        default_value = "collection-operator/",
        env = "COORDINATOR_ETCD_PREFIX"
    )]
    pub etcd_prefix: String,
    /// The etcd server's --max-txn-ops: one DDL batch is one transaction, so batches are
    /// capped to (this - 2) / 2 DDLs.
    #[arg(long, default_value_t = 128, env = "COORDINATOR_ETCD_MAX_TXN_OPS")]
    pub etcd_max_txn_ops: usize,
    /// On etcd, replicas elect a leader: the address this replica's clients reach it at,
    /// which followers name when they refuse a write (default: the listen address; in
    /// Kubernetes pass the pod's address).
    #[arg(long, value_name = "HOST:PORT", env = "COORDINATOR_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    /// TTL of the leadership lease on etcd: a failed leader is replaced within about this
    /// long.
    #[arg(long, default_value_t = 5, env = "COORDINATOR_LEADER_LEASE_SECS")]
    pub leader_lease_secs: u64,
    /// Start on a damaged redb store anyway, dropping what is damaged (values failing their
    /// checksum, commit log records after a damaged one, a commit log whose meta.redb is
    /// gone); every drop is logged at WARN. Without it the coordinator refuses to start on
    /// damage and names the file and offset.
    #[arg(long)]
    pub repair: bool,
}

impl Default for MetaStoreArgs {
    fn default() -> Self {
        Self {
            meta_store: MetaStoreKind::Redb,
            etcd_endpoints: Vec::new(),
            etcd_prefix: "collection-operator/".into(),
            etcd_max_txn_ops: 128,
            advertise_address: None,
            leader_lease_secs: 5,
            repair: false,
        }
    }
}

impl MetaStoreArgs {
    /// Where the metadata lives, for logs.
    pub fn describe(&self, data_dir: &std::path::Path) -> String {
        match self.meta_store {
            MetaStoreKind::Redb => format!("redb in {}", data_dir.display()),
            MetaStoreKind::Etcd => format!(
                "etcd {} under {:?}",
                self.etcd_endpoints.join(","),
                self.etcd_prefix
            ),
        }
    }
}

/// TLS flags (PEM files, e.g. the `tls.crt` and `tls.key` of a mounted Secret).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Serve TLS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(
        long,
        env = "COORDINATOR_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "COORDINATOR_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files, when TLS is on.
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// Certificate and key files of the TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads both files into a tonic server TLS configuration (read once, at start: a
    /// renewed certificate is served after a restart).
    pub fn load(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        let cert = std::fs::read(&self.cert)
            .with_context(|| format!("reading TLS certificate {}", self.cert.display()))?;
        // The key's contents never appear in errors or logs.
        let key = std::fs::read(&self.key)
            .with_context(|| format!("reading TLS key {}", self.key.display()))?;
        let config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        // Parse now, so that a bad pair is reported before anything starts.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .with_context(|| {
                format!(
                    "TLS certificate {} or key {} not usable",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        Ok(config)
    }
}

/// How the gRPC endpoint is protected; the default is neither TLS nor authentication.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Checks the `authorization` header of every RPC when set.
    pub authenticator: Option<Authenticator>,
    /// Serves TLS when set.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Security {
    /// Loads the credentials and the TLS files (errors early on bad files), and starts
    /// the token file reload.
    pub fn load(auth: Option<&AuthConfig>, tls: Option<&TlsFiles>) -> anyhow::Result<Self> {
        let authenticator = match auth {
            None => None,
            Some(config) => {
                let authenticator = Authenticator::load(config)?;
                authenticator.spawn_reload(config.clone(), auth::RELOAD_INTERVAL);
                Some(authenticator)
            }
        };
        let tls = tls.map(TlsFiles::load).transpose()?;
        Ok(Self { authenticator, tls })
    }
}

/// Opens the embedded store and the engine in `data_dir`. Blocking: from async code use
/// [`open_engine_async`].
pub fn open_engine(
    data_dir: &std::path::Path,
    config: EngineConfig,
) -> anyhow::Result<(Arc<Engine>, RecoveryStats)> {
    open_engine_redb(data_dir, RedbOptions::default(), config)
}

/// [`open_engine`] with store options (`--repair`).
pub fn open_engine_redb(
    data_dir: &std::path::Path,
    options: RedbOptions,
    config: EngineConfig,
) -> anyhow::Result<(Arc<Engine>, RecoveryStats)> {
    let store = RedbStore::open_with(data_dir, options)
        .with_context(|| format!("opening meta store in {}", data_dir.display()))?;
    let (engine, stats) =
        Engine::open(Arc::new(store), config).context("recovering the meta table")?;
    Ok((Arc::new(engine), stats))
}

/// [`open_engine`] on the blocking thread pool.
pub async fn open_engine_async(
    data_dir: PathBuf,
    config: EngineConfig,
) -> anyhow::Result<(Arc<Engine>, RecoveryStats)> {
    tokio::task::spawn_blocking(move || open_engine(&data_dir, config))
        .await
        .context("meta engine start-up task failed")?
}

/// Opens the engine on any store, on the blocking thread pool.
pub async fn open_engine_on(
    store: Arc<dyn MetaStore>,
    config: EngineConfig,
) -> anyhow::Result<(Arc<Engine>, RecoveryStats)> {
    tokio::task::spawn_blocking(move || {
        let (engine, stats) = Engine::open(store, config).context("recovering the meta table")?;
        Ok((Arc::new(engine), stats))
    })
    .await
    .context("meta engine start-up task failed")?
}

/// Connects to etcd and opens the engine on it. The engine's batch is capped so that each
/// batch fits in one etcd transaction of `options.max_txn_ops` operations.
#[cfg(feature = "etcd")]
pub async fn open_engine_etcd(
    endpoints: &[String],
    prefix: &str,
    options: crate::store::EtcdOptions,
    config: EngineConfig,
) -> anyhow::Result<(Arc<Engine>, RecoveryStats)> {
    let max_batch = crate::store::etcd::max_ddls_per_batch(options.max_txn_ops);
    let store = crate::store::EtcdStore::connect_with(endpoints, prefix, options)
        .await
        .with_context(|| {
            format!(
                "opening the etcd meta store at {} (prefix {prefix:?})",
                endpoints.join(",")
            )
        })?;
    let config = EngineConfig {
        max_batch: config.max_batch.min(max_batch),
        ..config
    };
    open_engine_on(Arc::new(store), config).await
}

/// Opens the engine on the store `args` names: redb in `data_dir`, or etcd.
pub async fn open_engine_with(
    args: &MetaStoreArgs,
    data_dir: PathBuf,
    config: EngineConfig,
) -> anyhow::Result<(Arc<Engine>, RecoveryStats)> {
    match args.meta_store {
        MetaStoreKind::Redb => {
            let options = RedbOptions {
                repair: args.repair,
                ..RedbOptions::default()
            };
            tokio::task::spawn_blocking(move || open_engine_redb(&data_dir, options, config))
                .await
                .context("meta engine start-up task failed")?
        }
        #[cfg(feature = "etcd")]
        MetaStoreKind::Etcd => {
            if args.etcd_endpoints.is_empty() {
                anyhow::bail!("--meta-store etcd needs --etcd-endpoints");
            }
            let options = crate::store::EtcdOptions {
                max_txn_ops: args.etcd_max_txn_ops,
                ..Default::default()
            };
            open_engine_etcd(&args.etcd_endpoints, &args.etcd_prefix, options, config).await
        }
        #[cfg(not(feature = "etcd"))]
        MetaStoreKind::Etcd => anyhow::bail!(
            "--meta-store etcd: this binary was built without etcd support (build with \
             `cargo build --features etcd`)"
        ),
    }
}

/// Serves MilvusService for `engine` on `listener` until `shutdown` resolves, in
/// plaintext and without authentication.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_with(engine, listener, Security::default(), shutdown).await
}

/// [`serve`] with TLS and/or authentication.
pub async fn serve_with(
    engine: Arc<Engine>,
    listener: TcpListener,
    security: Security,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    serve_with_streaming(engine, listener, security, None, None, shutdown).await
}

/// [`serve_with`] plus the streaming coordinator's services on the same port: node
/// sessions accept only the WAL plane's credentials (`plane`; `None`: open), the
/// assignment service (read by the operator to drain nodes) those or a client's.
pub async fn serve_with_streaming(
    engine: Arc<Engine>,
    listener: TcpListener,
    security: Security,
    streaming: Option<crate::streaming::gate::StreamingGate>,
    plane: Option<Authenticator>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let limits = ConnectionLimits::default();
    serve_limited(
        engine, listener, security, streaming, plane, limits, shutdown,
    )
    .await
}

/// [`serve_with_streaming`] with a connection cap and idle timeout.
pub async fn serve_limited(
    engine: Arc<Engine>,
    listener: TcpListener,
    security: Security,
    streaming: Option<crate::streaming::gate::StreamingGate>,
    plane: Option<Authenticator>,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let nodes_only = auth::AuthInterceptor::new(plane.clone());
    let nodes_or_clients = auth::AuthInterceptor::new(plane).or(security.authenticator.clone());
    let streaming = streaming.map(|gate| {
        let (assignment, session) = gate.services();
        (
            tonic::service::interceptor::InterceptedService::new(assignment, nodes_or_clients),
            tonic::service::interceptor::InterceptedService::new(session, nodes_only),
        )
    });
    let (assignment, session) = streaming.unzip();
    let milvus = Arc::new(CoordinatorService::new(engine));
    let health = health::CoordinatorHealth::new(milvus.clone());
    let service = MilvusServiceServer::from_arc(milvus)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Every RPC, Connect included, passes the check first (as in Milvus).
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        auth::AuthInterceptor::new(security.authenticator),
    );
    tracing::info!(
        max_connections = limits.max_connections,
        idle_timeout_secs = limits.idle_timeout.as_secs(),
        "connection limits"
    );
    let incoming = connections::incoming(listener, limits);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = security.tls {
        builder = builder
            .tls_config(tls)
            .context("TLS certificate or key not usable")?;
    }
    builder
        .add_service(service)
        // Outside the auth check: Kubernetes probes carry no credentials.
        .add_service(health)
        .add_optional_service(assignment)
        .add_optional_service(session)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("gRPC server failed")
}

/// Runs a coordinator process: opens the store, binds, serves until SIGINT/SIGTERM. On
/// etcd the process is one replica of a set that elects a leader (see [`ha`]).
pub async fn run(mut config: CoordinatorConfig) -> anyhow::Result<()> {
    // Before any file is opened: the store and the connections count against it.
    config.connections = config
        .connections
        .within_nofile(connections::raise_nofile_limit());
    // Bad credentials or TLS files stop the start before the store is opened.
    let security = Security::load(config.auth.as_ref(), config.tls.as_ref())?;
    let plane = match config.internal_auth.as_ref().or(config.auth.as_ref()) {
        Some(plane) => {
            Some(auth::PlaneAuth::load(plane).context("loading the WAL plane's credentials")?)
        }
        None => None,
    };
    if let Some(streaming) = config.streaming.as_mut() {
        streaming.credential = plane.as_ref().map(|plane| plane.present.clone());
    }
    let plane = plane.map(|plane| plane.accept);
    #[cfg(feature = "etcd")]
    if config.meta_store.meta_store == MetaStoreKind::Etcd {
        return run_replica_process(config, security, plane).await;
    }
    // The gate exists before the engine: with --ddl-wal the meta writer finds the control
    // channel through it (and waits, refusing DDL, until a streaming node holds it).
    let gate = config.streaming.as_ref().map(|_| {
        crate::streaming::gate::StreamingGate::closed("the streaming coordinator is starting")
    });
    let engine_config = engine_config_with_wal(&config, gate.as_ref())?;
    let (engine, stats) =
        open_engine_with(&config.meta_store, config.data_dir.clone(), engine_config).await?;
    log_recovery(&engine, &stats);
    let listener = bind(&config, &security).await?;
    let streaming = match &config.streaming {
        Some(streaming) => Some(
            crate::streaming::coord::StreamingCoord::start(engine.store(), streaming.clone())
                .await
                .context("starting the streaming coordinator")?,
        ),
        None => None,
    };
    if let (Some(gate), Some(coord)) = (&gate, &streaming) {
        gate.set(Some(coord.clone()));
    }
    serve_limited(
        engine.clone(),
        listener,
        security,
        gate,
        plane,
        config.connections,
        shutdown_signal(),
    )
    .await?;
    if let Some(streaming) = streaming {
        streaming.stop();
    }
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .context("stopping the meta writer")?;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// The engine settings of `config`, with the control-channel DDL log behind `gate` when
/// `--ddl-wal` is on.
pub fn engine_config_with_wal(
    config: &CoordinatorConfig,
    gate: Option<&crate::streaming::gate::StreamingGate>,
) -> anyhow::Result<EngineConfig> {
    let mut engine = config.engine.clone();
    if config.ddl_wal {
        let Some(gate) = gate else {
            anyhow::bail!("--ddl-wal needs the streaming coordinator (--pchannels > 0)");
        };
        let credential = config
            .streaming
            .as_ref()
            .and_then(|streaming| streaming.credential.clone());
        let log = ddl_wal::ControlChannelLog::new(gate.clone(), credential)
            .context("starting the DDL log runtime")?;
        engine.ddl_log = Some(engine::DdlLogHandle(Arc::new(log)));
        tracing::info!("DDL goes through the WAL (the control channel)");
    }
    Ok(engine)
}

fn log_recovery(engine: &Engine, stats: &RecoveryStats) {
    let (databases, collections, aliases) = engine.read(0, |table, at| table.counts(at));
    tracing::info!(
        databases,
        collections,
        aliases,
        log_records = stats.log_records,
        recovery_ms = stats.elapsed.as_millis() as u64,
        "meta table recovered"
    );
}

async fn bind(config: &CoordinatorConfig, security: &Security) -> anyhow::Result<TcpListener> {
    let listener = crate::serve::bind(config.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        meta_store = %config.meta_store.describe(&config.data_dir),
        tls = security.tls.is_some(),
        authentication = security.authenticator.is_some(),
        accepted_credentials = security.authenticator.as_ref().map(Authenticator::len).unwrap_or(0),
        "coordinator serving MilvusService"
    );
    Ok(listener)
}

/// One replica on etcd: loads the meta table as a follower, serves reads at once, and
/// campaigns for leadership beside the server.
#[cfg(feature = "etcd")]
async fn run_replica_process(
    config: CoordinatorConfig,
    security: Security,
    plane: Option<Authenticator>,
) -> anyhow::Result<()> {
    let args = &config.meta_store;
    if args.etcd_endpoints.is_empty() {
        anyhow::bail!("--meta-store etcd needs --etcd-endpoints");
    }
    let options = crate::store::EtcdOptions {
        max_txn_ops: args.etcd_max_txn_ops,
        ..Default::default()
    };
    // Only the leader places pchannels; the gate opens when it takes over (and the
    // leader's writer finds the control channel through it, with --ddl-wal).
    let leader_gate = config.streaming.as_ref().map(|_| {
        crate::streaming::gate::StreamingGate::closed("this coordinator replica is not the leader")
    });
    let with_wal = engine_config_with_wal(&config, leader_gate.as_ref())?;
    let engine_config = EngineConfig {
        max_batch: config
            .engine
            .max_batch
            .min(crate::store::etcd::max_ddls_per_batch(options.max_txn_ops)),
        ..with_wal
    };
    let store = Arc::new(
        crate::store::EtcdStore::connect_with(&args.etcd_endpoints, &args.etcd_prefix, options)
            .await
            .with_context(|| {
                format!(
                    "opening the etcd meta store at {} (prefix {:?})",
                    args.etcd_endpoints.join(","),
                    args.etcd_prefix
                )
            })?,
    );
    let opening = store.clone();
    let (engine, stats) = tokio::task::spawn_blocking(move || {
        Engine::open_replica(opening, engine_config).context("loading the meta table")
    })
    .await
    .context("meta engine start-up task failed")??;
    let engine = Arc::new(engine);
    log_recovery(&engine, &stats);
    ha::name_leader(&engine, &store, leader_gate.as_ref()).await;
    let listener = bind(&config, &security).await?;
    let replica = ha::ReplicaConfig {
        member_id: ha::new_member_id(),
        advertise_address: match &args.advertise_address {
            Some(address) => address.clone(),
            None => listener.local_addr()?.to_string(),
        },
        lease_ttl: std::time::Duration::from_secs(args.leader_lease_secs.max(1)),
        compaction_interval: config.engine.compaction_interval,
    };
    tracing::info!(
        member = %replica.member_id,
        advertise = %replica.advertise_address,
        lease_secs = replica.lease_ttl.as_secs(),
        "replica on etcd: following, campaigning for leadership"
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (role, _) = tokio::sync::watch::channel(ha::Role::Follower(None));
    let streaming = config
        .streaming
        .clone()
        .zip(leader_gate)
        .map(|(streaming, gate)| ha::LeaderStreaming {
            config: streaming,
            gate,
        });
    let gate = streaming.as_ref().map(|s| s.gate.clone());
    let replica_task = tokio::spawn(ha::run_replica(
        engine.clone(),
        store,
        replica,
        stats.revision,
        streaming,
        role,
        stopped,
    ));
    let served = serve_limited(
        engine.clone(),
        listener,
        security,
        gate,
        plane,
        config.connections,
        shutdown_signal(),
    )
    .await;
    let _ = stop.send(true);
    match replica_task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(error = %format!("{error:#}"), "replica loop failed"),
        Err(error) => tracing::error!(%error, "replica task failed"),
    }
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .context("stopping the meta writer")?;
    served?;
    tracing::info!("coordinator stopped");
    Ok(())
}
