//! The Milvus-compatible coordinator: a gRPC server for `MilvusService` over the meta
//! engine (redb by default).

pub mod engine;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

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

/// Serves MilvusService for `engine` on `listener` until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let service = MilvusServiceServer::new(CoordinatorService::new(engine))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("gRPC server failed")
}

/// Runs a coordinator process: opens the store, binds, serves until SIGINT/SIGTERM.
pub async fn run(config: CoordinatorConfig) -> anyhow::Result<()> {
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
    tracing::info!(listen = %listener.local_addr()?, data_dir = %config.data_dir.display(), "coordinator serving MilvusService");
    serve(engine.clone(), listener, shutdown_signal()).await?;
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
