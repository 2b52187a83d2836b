//! The Milvus-compatible coordinator: a gRPC server for `MilvusService` over the meta
//! engine (redb by default).

pub mod auth;
pub mod engine;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

pub use auth::{AuthArgs, AuthConfig, Authenticator};
pub use engine::{Engine, EngineConfig, RecoveryStats};
pub use service::CoordinatorService;

use crate::proto::api::milvus_service_server::MilvusServiceServer;
use crate::store::RedbStore;

/// Largest request the server decodes (Milvus's proxy allows 64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Settings of a coordinator process.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where the redb file lives.
    pub data_dir: PathBuf,
    /// The gRPC listen address.
    pub listen: SocketAddr,
    /// History and batching.
    pub engine: EngineConfig,
    /// Accepted credentials; `None`: the endpoint is open.
    pub auth: Option<AuthConfig>,
    /// Certificate and key to serve TLS with; `None`: plaintext.
    pub tls: Option<TlsFiles>,
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
    let store = RedbStore::open(data_dir)
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
    let service = MilvusServiceServer::new(CoordinatorService::new(engine))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Every RPC, Connect included, passes the check first (as in Milvus).
    let service = tonic::service::interceptor::InterceptedService::new(
        service,
        auth::AuthInterceptor::new(security.authenticator),
    );
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = security.tls {
        builder = builder
            .tls_config(tls)
            .context("TLS certificate or key not usable")?;
    }
    builder
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("gRPC server failed")
}

/// Runs a coordinator process: opens the store, binds, serves until SIGINT/SIGTERM.
pub async fn run(config: CoordinatorConfig) -> anyhow::Result<()> {
    // Bad credentials or TLS files stop the start before the store is opened.
    let security = Security::load(config.auth.as_ref(), config.tls.as_ref())?;
    let (engine, stats) = open_engine_async(config.data_dir.clone(), config.engine.clone()).await?;
    let (databases, collections, aliases) = engine.read(0, |table, at| table.counts(at));
    tracing::info!(
        databases,
        collections,
        aliases,
        log_records = stats.log_records,
        recovery_ms = stats.elapsed.as_millis() as u64,
        "meta table recovered"
    );
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        data_dir = %config.data_dir.display(),
        tls = security.tls.is_some(),
        authentication = security.authenticator.is_some(),
        accepted_credentials = security.authenticator.as_ref().map(Authenticator::len).unwrap_or(0),
        "coordinator serving MilvusService"
    );
    serve_with(engine.clone(), listener, security, shutdown_signal()).await?;
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .context("stopping the meta writer")?;
    tracing::info!("coordinator stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
