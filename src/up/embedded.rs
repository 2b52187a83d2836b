//! The embedded coordinator of `up` with its in-process WAL plane: a streaming
//! coordinator, its internal endpoint and a streaming node, started before the engine
//! and stopped after it, as `coordinator --ddl-wal` runs them in a cluster.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::auth::{AuthInterceptor, PlaneAuth};
use crate::coordinator::ddl_wal::ControlChannelLog;
use crate::coordinator::engine::DdlLogHandle;
use crate::coordinator::{Engine, EngineConfig, open_engine_async};
use crate::streaming::coord::{StreamingCoord, StreamingCoordConfig};
use crate::streaming::gate::StreamingGate;
use tonic::service::interceptor::InterceptedService;

/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The WAL side of `up`: the streaming coordinator, its internal endpoint, and the
/// in-process streaming node; stopped after the engine, the node before the endpoint so
/// that it can end its session there (the next `up` then takes the control channel
/// without waiting for this node's lease).
pub(super) struct UpWal {
    coord: StreamingCoord,
    stop_node: watch::Sender<bool>,
    node: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop_endpoint: watch::Sender<bool>,
    endpoint: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Opens the engine with DDL through the WAL, as `coordinator --ddl-wal` does: a streaming
/// coordinator with one pchannel (the control channel) and a streaming node in this process,
/// its segments in `<data-dir>/wal`. The node reaches the streaming coordinator on a
/// loopback endpoint of its own; both ends check a random credential generated for this
/// process (not the MilvusService endpoint's), so no other process can use them. So the
/// single-machine path is the cluster's: every DDL is acknowledged by the WAL first, and one
/// interrupted by a crash is completed at the next start.
pub(super) async fn start_with_wal(data_dir: &Path) -> anyhow::Result<(Arc<Engine>, UpWal)> {
    let gate = StreamingGate::closed("the streaming coordinator is starting");
    // The WAL plane's credential: random, known only to this process, so that no other
    // local process can talk to the internal endpoint or the node.
    let plane = PlaneAuth::generate()?;
    let log = ControlChannelLog::new(gate.clone(), Some(plane.present.clone()))
        .context("starting the DDL log runtime")?;
    let config = EngineConfig {
        ddl_log: Some(DdlLogHandle(Arc::new(log))),
        ..EngineConfig::default()
    };
    let (engine, _) = open_engine_async(data_dir.to_path_buf(), config).await?;
    // One node that lives and dies with this process: a short lease and no grace, so that
    // after a crash the new node takes the control channel over within seconds.
    let coord = StreamingCoord::start(
        engine.store(),
        StreamingCoordConfig {
            pchannels: 1,
            lease_ttl: Duration::from_secs(2),
            node_lost_grace: Duration::ZERO,
            credential: Some(plane.present.clone()),
            ..StreamingCoordConfig::default()
        },
    )
    .await
    .context("starting the streaming coordinator")?;
    gate.set(Some(coord.clone()));
    let (stop_endpoint, endpoint_stopped) = watch::channel(false);
    let (stop_node, node_stopped) = watch::channel(false);
    let until = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    // Both ends of the plane live in this process: they talk over Unix sockets in the data
    // directory (0600), or over loopback when its path is too long for a socket address.
    let coord_socket = data_dir.join("streaming-coord.sock");
    let node_socket = data_dir.join("streaming-node.sock");
    let on_sockets = [&coord_socket, &node_socket]
        .iter()
        .all(|path| path.as_os_str().len() <= MAX_SOCKET_PATH);
    let (assignment, session) = gate.services();
    let check = AuthInterceptor::new(Some(plane.accept.clone()));
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(InterceptedService::new(assignment, check.clone()))
        .add_service(InterceptedService::new(session, check));
    let serving = until(endpoint_stopped);
    let (coordinator, endpoint) = if on_sockets {
        let internal = crate::serve::bind_unix(&coord_socket)?;
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(internal);
        let endpoint = spawn_endpoint(server, incoming, serving);
        let address = format!("{}{}", crate::serve::UNIX_PREFIX, coord_socket.display());
        (address, endpoint)
    } else {
        tracing::warn!(
            data_dir = %data_dir.display(),
            "the data directory's path is too long for a Unix socket: the WAL plane uses loopback TCP (still authenticated)"
        );
        let internal = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the internal streaming endpoint")?;
        let address = format!("http://{}", internal.local_addr()?);
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(internal);
        let endpoint = spawn_endpoint(server, incoming, serving);
        (address, endpoint)
    };
    let node = crate::streaming::node::NodeConfig {
        coordinator,
        wal_dir: data_dir.join("wal"),
        listen: "127.0.0.1:0".parse()?,
        socket: on_sockets.then_some(node_socket),
        advertise: None,
        wal: Default::default(),
        auth: Some(plane),
    };
    let node = tokio::spawn(crate::streaming::node::run_until(node, until(node_stopped)));
    // The writer syncs with the control channel first (and creates `default` on a new
    // store then); the reconcile passes start once it has.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !engine.is_synced()
        || !engine.read(0, |table, at| {
            table
                .database(crate::meta::names::DEFAULT_DATABASE, at)
                .is_some()
        })
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the embedded streaming node did not take the control channel within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((
        engine,
        UpWal {
            coord,
            stop_node,
            node,
            stop_endpoint,
            endpoint,
        },
    ))
}

/// Serves the internal streaming endpoint on `incoming` until `stopped`.
pub(super) fn spawn_endpoint<Io, IoError>(
    server: tonic::transport::server::Router,
    incoming: impl futures::Stream<Item = Result<Io, IoError>> + Send + 'static,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<anyhow::Result<()>>
where
    Io: crate::serve::ServerIo,
    IoError: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    tokio::spawn(async move {
        server
            .serve_with_incoming_shutdown(incoming, stopped)
            .await
            .context("internal streaming endpoint")
    })
}

pub(super) async fn stop(
    engine: Arc<Engine>,
    stop_server: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    wal: UpWal,
) {
    let _ = stop_server.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("up: coordinator server: {error:#}"),
        Err(error) => eprintln!("up: coordinator server task: {error}"),
    }
    if let Err(error) = tokio::task::spawn_blocking(move || engine.shutdown()).await {
        eprintln!("up: stopping the meta engine: {error}");
    }
    let _ = wal.stop_node.send(true);
    report_wal_task(wal.node.await);
    let _ = wal.stop_endpoint.send(true);
    report_wal_task(wal.endpoint.await);
    wal.coord.stop();
    println!("up: stopped");
}

fn report_wal_task(outcome: Result<anyhow::Result<()>, tokio::task::JoinError>) {
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("up: WAL: {error:#}"),
        Err(error) => eprintln!("up: WAL task: {error}"),
    }
}
