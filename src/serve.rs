//! What every gRPC server of this binary shares (the coordinator, the streaming node and
//! the engine client that talks to them): the message size limit, binding the listen
//! address, stopping on SIGINT/SIGTERM, and the `grpc.health.v1` answer. It sits below both servers so that neither
//! imports the other for these.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Address prefix of a Unix socket (`unix:/path/to.sock`); other addresses are
/// `host:port` or a URL.
pub const UNIX_PREFIX: &str = "unix:";

/// The endpoint of `address` with `timeout` to connect: `unix:PATH` goes through a
/// connector over the socket, anything else over TCP (`http://` assumed).
fn endpoint(address: &str, timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    let url = match address.strip_prefix(UNIX_PREFIX) {
        // The authority is not used; the connector dials the socket.
        Some(_) => "http://localhost".to_string(),
        None if address.contains("://") => address.to_string(),
        None => format!("http://{address}"),
    };
    Ok(Endpoint::from_shared(url)?
        .connect_timeout(timeout)
        .tcp_nodelay(true))
}

fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Send
+ Clone
+ 'static {
    tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    })
}

/// Connects to `address` (`unix:PATH`, `host:port` or a URL).
pub async fn connect(address: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    let endpoint = endpoint(address, timeout)?;
    match address.strip_prefix(UNIX_PREFIX) {
        Some(path) => {
            endpoint
                .connect_with_connector(unix_connector(PathBuf::from(path)))
                .await
        }
        None => endpoint.connect().await,
    }
}

/// [`connect`] on first use.
pub fn connect_lazy(address: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    let endpoint = endpoint(address, timeout)?;
    Ok(match address.strip_prefix(UNIX_PREFIX) {
        Some(path) => endpoint.connect_with_connector_lazy(unix_connector(PathBuf::from(path))),
        None => endpoint.connect_lazy(),
    })
}

/// Binds a Unix socket at `path` that only this user may connect to (0600); a socket file
/// left by a crashed process is replaced (the caller holds the data directory's lock).
pub fn bind_unix(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error)
                .with_context(|| format!("removing the old socket {}", path.display()));
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding the Unix socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

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

/// A connection a tonic server can serve: TCP, a Unix socket, a TLS stream.
pub trait ServerIo:
    tokio::io::AsyncRead
    + tokio::io::AsyncWrite
    + tonic::transport::server::Connected
    + Unpin
    + Send
    + 'static
{
}

impl<T> ServerIo for T where
    T: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static
{
}

/// What a server answers to `grpc.health.v1.Health`, per service name: Kubernetes `grpc:`
/// probes (and load balancers) ask the server itself whether it serves, not merely whether
/// its port accepts connections.
#[tonic::async_trait]
pub trait HealthSource: Send + Sync + 'static {
    /// The status of `service`; `NOT_FOUND` for a name this server does not answer for.
    async fn status(&self, service: &str) -> Result<ServingStatus, tonic::Status>;
}

/// `grpc.health.v1.Health` answering from a [`HealthSource`]. It belongs outside the
/// authentication check of the server: a probe carries no credentials, and the answer is
/// one of two words.
pub struct HealthAnswer<S>(pub S);

impl<S: HealthSource> HealthAnswer<S> {
    /// The health service of `source`, to add to a server.
    pub fn server(source: S) -> HealthServer<Self> {
        HealthServer::new(Self(source))
    }
}

type HealthStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<HealthCheckResponse, tonic::Status>> + Send>,
>;

#[tonic::async_trait]
impl<S: HealthSource> Health for HealthAnswer<S> {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, tonic::Status> {
        let status = self.0.status(&request.into_inner().service).await?;
        Ok(tonic::Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = HealthStream;

    /// The current status once: probes use `Check`, and a stream of changes would need a
    /// notification the servers do not have.
    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        let status = self.0.status(&request.into_inner().service).await?;
        let once = tokio_stream::once(Ok(HealthCheckResponse {
            status: status as i32,
        }));
        Ok(tonic::Response::new(Box::pin(once)))
    }
}
