//! What every gRPC server of this binary shares (the coordinator, the streaming node and
//! the engine client that talks to them): the message size limit, binding the listen
//! address, and stopping on SIGINT/SIGTERM. It sits below both servers so that neither
//! imports the other for these.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

/// Largest message a server decodes and a client accepts (Milvus's proxy allows 64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Binds the listen address of a server, naming it in the error.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))
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
