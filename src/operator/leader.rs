//! Leader election through a `coordination.k8s.io` Lease (kube-lease-manager), so that two
//! replicas can run for availability while only one writes to the engine and to
//! Kubernetes. A replica that loses the lease stops its controllers and exits non-zero
//! (as controller-runtime does): restarting is simpler and safer than resuming with
//! caches and backoff state that another leader has moved past.

use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Shutdown;
use super::backoff::parse_duration;

/// Flags of leader election.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderElectionArgs {
    /// Elect a leader through a Lease; needed when more than one replica runs.
    #[arg(
        id = "leader_election",
        long = "leader-election",
        env = "LEADER_ELECTION"
    )]
    pub enabled: bool,
    /// Namespace of the Lease (default: `POD_NAMESPACE`, else `--namespace`, else
    /// `default`).
    #[arg(
        id = "leader_election_namespace",
        long = "leader-election-namespace",
        value_name = "NAMESPACE",
        env = "POD_NAMESPACE"
    )]
    pub namespace: Option<String>,
    /// Name of the Lease.
    #[arg(
        long = "leader-election-lease-name",
        default_value = "collection-operator"
    )]
    pub lease_name: String,
    /// Identity of this replica (default: `POD_NAME`, else `HOSTNAME`, else random).
    #[arg(
        id = "leader_election_identity",
        long = "leader-election-identity",
        value_name = "IDENTITY",
        env = "POD_NAME"
    )]
    pub identity: Option<String>,
    /// How long a lease is valid after its last renewal (whole seconds).
    #[arg(long = "leader-election-lease-duration", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long before expiry the leader renews (whole seconds, less than the duration).
    #[arg(long = "leader-election-renew-grace", default_value = "5s", value_parser = parse_duration)]
    pub renew_grace: Duration,
}

/// Held leadership.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

fn identity(args: &LeaderElectionArgs) -> String {
    args.identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| {
            use rand::Rng;
            let suffix: u64 = rand::rng().random();
            format!("collection-operator-{suffix:016x}")
        })
}

/// Blocks until this replica holds the lease (`Some`) or `shutdown` fires (`None`).
pub async fn acquire(
    client: Client,
    args: &LeaderElectionArgs,
    default_namespace: &str,
    shutdown: Shutdown,
) -> anyhow::Result<Option<Leadership>> {
    let duration = args.lease_duration.as_secs();
    let grace = args.renew_grace.as_secs();
    if grace == 0 || duration <= grace {
        bail!(
            "--leader-election-renew-grace ({grace} s) must be at least 1 s and less than \
             --leader-election-lease-duration ({duration} s)"
        );
    }
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| default_namespace.to_string());
    let identity = identity(args);
    let manager = LeaseManagerBuilder::new(client, &args.lease_name)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await
        .with_context(|| format!("preparing Lease {namespace}/{}", args.lease_name))?;
    let (mut state, task) = manager.watch().await;
    tracing::info!(lease = %args.lease_name, %namespace, %identity, "waiting for the leader lease");
    loop {
        if *state.borrow_and_update() {
            tracing::info!(%identity, "holding the leader lease");
            return Ok(Some(Leadership { state, task }));
        }
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    bail!("the lease manager stopped before this replica became leader");
                }
            }
            () = shutdown.clone().wait() => {
                drop(state);
                let _ = task.await;
                return Ok(None);
            }
        }
    }
}

impl Leadership {
    /// Resolves when the lease is lost (or its manager stopped).
    pub async fn lost(&mut self) {
        loop {
            if !*self.state.borrow_and_update() {
                return;
            }
            if self.state.changed().await.is_err() {
                return;
            }
        }
    }

    /// Gives the lease up (closing the channel makes the manager release it).
    pub async fn release(self) {
        drop(self.state);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(error)) => tracing::warn!(%error, "releasing the leader lease failed"),
            Err(error) => tracing::warn!(%error, "the lease manager task failed"),
        }
    }
}
