//! Client connections of the gRPC server: a cap, an idle timeout, and the open-file limit.
//!
//! Every accepted socket is wrapped in a [`TrackedStream`] that records when bytes last
//! moved. A connection quiet for [`ConnectionLimits::idle_timeout`] is closed. At the cap,
//! a new client is not left waiting behind idle ones: the connection quiet the longest
//! (at least [`EVICTABLE_AFTER`]) is closed to make room; when every connection is busy
//! the new one is closed at once. Both, and running out of file descriptors, are logged
//! (at most once per [`REFUSAL_LOG_INTERVAL`], with counts).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::Stream;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// File descriptors kept free of client connections (store files, WAL segments, the
/// streaming node clients, the blocking pool).
pub const FD_RESERVE: u64 = 128;

/// A connection quiet for less than this is never closed to make room for another.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

/// Refusals are logged at most this often.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Connection flags of the coordinator.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// Most client connections held at once (lowered to the open-file limit minus a
    /// reserve). At the cap, the connection idle the longest makes room for a new one.
    #[arg(long, default_value_t = 4096, env = "COORDINATOR_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// A connection that sends and receives nothing for this long is closed (seconds; gRPC
    /// clients reconnect on their next call, and keepalive pings count as traffic).
    #[arg(long, default_value_t = 600, env = "COORDINATOR_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: u64,
}

impl ConnectionArgs {
    /// The limits these flags ask for.
    pub fn limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: self.max_connections.max(1),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs.max(1)),
        }
    }
}

/// How many connections the server holds, and for how long while idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections held at once.
    pub max_connections: usize,
    /// Quiet connections are closed after this long.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

impl ConnectionLimits {
    /// The cap lowered so that connections leave [`FD_RESERVE`] descriptors of the
    /// process's open-file limit `nofile` free.
    pub fn within_nofile(self, nofile: Option<u64>) -> Self {
        let Some(nofile) = nofile else {
            return self;
        };
        let fits = nofile.saturating_sub(FD_RESERVE).max(1) as usize;
        if fits < self.max_connections {
            tracing::warn!(
                requested = self.max_connections,
                allowed = fits,
                nofile,
                "the open-file limit allows fewer connections than --max-connections; capped"
            );
        }
        Self {
            max_connections: self.max_connections.min(fits),
            ..self
        }
    }
}

/// Raises the soft open-file limit to the hard one and returns the limit now in force
/// (`None` where it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot read the open-file limit");
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = limit.rlim_cur,
                to = raised.rlim_cur,
                "raised the soft open-file limit to the hard limit"
            );
            limit = raised;
        } else {
            tracing::warn!(
                error = %io::Error::last_os_error(),
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                "cannot raise the soft open-file limit"
            );
        }
    }
    Some(limit.rlim_cur)
}

/// What the accept loop and the streams share about one connection.
struct Tracked {
    /// Milliseconds after the tracker's epoch of the last byte read or written.
    last_active_ms: AtomicU64,
    /// Set to close the connection; its stream's next poll fails.
    close: AtomicBool,
    /// Wakes the stream's reader so that it sees `close`.
    waker: Mutex<Option<Waker>>,
}

/// The open connections.
struct Tracker {
    epoch: Instant,
    limits: ConnectionLimits,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    next_id: AtomicU64,
    refusals: Mutex<Refusals>,
}

/// Counts of refused and evicted connections since the last log line.
struct Refusals {
    last_logged: Option<Instant>,
    refused: u64,
    evicted: u64,
    fd_exhausted: u64,
}

impl Tracker {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Closes the connection quiet the longest, if one has been quiet long enough.
    fn evict_idlest(&self) -> bool {
        let now = self.now_ms();
        let open = self.open.lock();
        let idlest = open
            .values()
            .filter(|t| !t.close.load(Ordering::Acquire))
            .min_by_key(|t| t.last_active_ms.load(Ordering::Acquire));
        let Some(idlest) = idlest else {
            return false;
        };
        if now.saturating_sub(idlest.last_active_ms.load(Ordering::Acquire))
            < EVICTABLE_AFTER.as_millis() as u64
        {
            return false;
        }
        idlest.close.store(true, Ordering::Release);
        if let Some(waker) = idlest.waker.lock().take() {
            waker.wake();
        }
        true
    }

    fn note(&self, what: impl FnOnce(&mut Refusals)) {
        let mut refusals = self.refusals.lock();
        what(&mut refusals);
        let due = refusals
            .last_logged
            .is_none_or(|at| at.elapsed() >= REFUSAL_LOG_INTERVAL);
        if due {
            tracing::warn!(
                open = self.open.lock().len(),
                max_connections = self.limits.max_connections,
                refused = refusals.refused,
                closed_idle_to_make_room = refusals.evicted,
                out_of_file_descriptors = refusals.fd_exhausted,
                "connection limit reached"
            );
            refusals.last_logged = Some(Instant::now());
            refusals.refused = 0;
            refusals.evicted = 0;
            refusals.fd_exhausted = 0;
        }
    }

    fn track(self: &Arc<Self>, stream: TcpStream) -> TrackedStream {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracked = Arc::new(Tracked {
            last_active_ms: AtomicU64::new(self.now_ms()),
            close: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        self.open.lock().insert(id, tracked.clone());
        TrackedStream {
            inner: stream,
            tracked,
            tracker: self.clone(),
            id,
            idle: Box::pin(tokio::time::sleep(self.limits.idle_timeout)),
        }
    }
}

/// Accepts connections from `listener` within `limits`, as a stream for tonic.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = Result<TrackedStream, io::Error>> {
    let tracker = Arc::new(Tracker {
        epoch: Instant::now(),
        limits,
        open: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        refusals: Mutex::new(Refusals {
            last_logged: None,
            refused: 0,
            evicted: 0,
            fd_exhausted: 0,
        }),
    });
    futures::stream::unfold((listener, tracker), |(listener, tracker)| async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) if is_fd_exhaustion(&error) => {
                    // Accepting fails until a descriptor frees up: free one, and do not spin.
                    tracker.evict_idlest();
                    tracker.note(|r| r.fd_exhausted += 1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
            };
            if tracker.open.lock().len() >= tracker.limits.max_connections {
                if tracker.evict_idlest() {
                    tracker.note(|r| r.evicted += 1);
                } else {
                    tracker.note(|r| r.refused += 1);
                    drop(stream);
                    continue;
                }
            }
            let _ = stream.set_nodelay(true);
            let tracked = tracker.track(stream);
            return Some((Ok(tracked), (listener, tracker)));
        }
    })
}

fn is_fd_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A client connection that records its activity and closes when idle or evicted.
pub struct TrackedStream {
    inner: TcpStream,
    tracked: Arc<Tracked>,
    tracker: Arc<Tracker>,
    id: u64,
    idle: Pin<Box<Sleep>>,
}

impl TrackedStream {
    fn touch(&mut self) {
        self.tracked
            .last_active_ms
            .store(self.tracker.now_ms(), Ordering::Release);
        let deadline = Instant::now() + self.tracker.limits.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }

    fn closed(&self) -> Option<io::Error> {
        self.tracked.close.load(Ordering::Acquire).then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            )
        })
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.tracker.open.lock().remove(&self.id);
    }
}

impl Connected for TrackedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(error) = self.closed() {
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                *self.tracked.waker.lock() = Some(cx.waker().clone());
                if let Some(error) = self.closed() {
                    return Poll::Ready(Err(error));
                }
                if self.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for longer than the idle timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.closed() {
            return Poll::Ready(Err(error));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.closed() {
            return Poll::Ready(Err(error));
        }
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
