//! What every reconcile shares: the Kubernetes client, the informer caches (the queries
//! over them are in [`super::lookup`]), engine connections, the Event recorder, metrics,
//! per-object backoff, requeue hints between controllers, the statuses last computed,
//! and a clock (fixed in tests so statuses are comparable byte for byte).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::backoff::{Backoff, BackoffPolicy};
use super::engine::Engines;
use super::error::Error;
use super::events::{EventSpec, Recorder, Reporter};
use super::metrics::Metrics;
use super::status::READY;
use crate::crd::{
    Collection, CollectionAlias, CollectionAliasStatus, CollectionStatus, Coordinator, RoutedAlias,
};
use crate::plan::TargetReadiness;

/// How long a reconcile waits for the informer caches before failing (and retrying).
pub const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the controllers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Default drift-correction interval (jittered; per-object annotation overrides).
    pub resync_interval: Duration,
    /// Failure backoff.
    pub backoff: BackoffPolicy,
    /// Who reports Events.
    pub reporter: Reporter,
    /// Image of managed coordinators and streaming nodes whose spec names none.
    pub managed_image: String,
    /// Host globs engine endpoints must match (empty: any host).
    pub allowed_endpoint_hosts: Vec<String>,
}

/// The image managed Coordinators run by default: this build's own.
pub const DEFAULT_MANAGED_IMAGE: &str = concat!("collection-operator:", env!("CARGO_PKG_VERSION"));

impl Default for Settings {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(60),
            backoff: BackoffPolicy::default(),
            reporter: Reporter {
                controller: super::FIELD_MANAGER.to_string(),
                instance: None,
            },
            managed_image: DEFAULT_MANAGED_IMAGE.to_string(),
            allowed_endpoint_hosts: Vec::new(),
        }
    }
}

/// The informer caches the reconcilers read.
#[derive(Clone)]
pub struct Stores {
    /// Coordinators (endpoint lookups).
    pub coordinators: Store<Coordinator>,
    /// Collections (rivals, target readiness).
    pub collections: Store<Collection>,
    /// Aliases (rivals, requeue mapping).
    pub aliases: Store<CollectionAlias>,
    /// Which of them have listed once.
    pub sync: CacheSync,
}

/// One of the informer caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Coordinators.
    Coordinators = 0,
    /// Collections.
    Collections = 1,
    /// CollectionAliases.
    Aliases = 2,
}

/// Which informer caches have completed their first list.
///
/// `Store::wait_until_ready` cannot be awaited from many tasks at once: it polls one
/// oneshot receiver, which keeps a single waker, so all but one waiter may never wake
/// (and a starved waiter would leave its object "running" forever). Readiness is
/// therefore published here, on a `watch` channel, by the reflector streams themselves.
#[derive(Clone)]
pub struct CacheSync(Arc<watch::Sender<[bool; 3]>>);

impl Default for CacheSync {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheSync {
    /// Nothing synced yet.
    pub fn new() -> Self {
        Self(Arc::new(watch::Sender::new([false; 3])))
    }

    /// Everything synced (stores filled by hand, in tests and tools).
    pub fn all_synced() -> Self {
        Self(Arc::new(watch::Sender::new([true; 3])))
    }

    /// Marks one cache as listed.
    pub fn mark(&self, cache: Cache) {
        self.0.send_modify(|synced| synced[cache as usize] = true);
    }

    /// Whether every cache has listed.
    pub fn is_synced(&self) -> bool {
        self.0.borrow().iter().all(|synced| *synced)
    }

    /// Waits until every cache has listed.
    pub async fn wait(&self) {
        let mut receiver = self.0.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = receiver.wait_for(|synced| synced.iter().all(|s| *s)).await;
    }
}

/// Requests to reconcile other objects soon, sent by one reconcile to a controller's
/// `reconcile_on` stream: a collection whose aliases just moved (its `status.aliases`, a
/// `HasAliases` wait), or the losers of a conflict whose winner is gone. Best effort:
/// a full queue drops hints, and the resync interval catches up.
#[derive(Clone, Default)]
pub struct Hints {
    collections: Option<mpsc::Sender<ObjectRef<Collection>>>,
    aliases: Option<mpsc::Sender<ObjectRef<CollectionAlias>>>,
}

/// The receiving ends of [`Hints`].
pub struct HintReceivers {
    /// For the Collection controller.
    pub collections: mpsc::Receiver<ObjectRef<Collection>>,
    /// For the CollectionAlias controller.
    pub aliases: mpsc::Receiver<ObjectRef<CollectionAlias>>,
}

impl Hints {
    /// Connected hint channels of `capacity` each.
    pub fn channels(capacity: usize) -> (Self, HintReceivers) {
        let (collections, collection_rx) = mpsc::channel(capacity);
        let (aliases, alias_rx) = mpsc::channel(capacity);
        (
            Self {
                collections: Some(collections),
                aliases: Some(aliases),
            },
            HintReceivers {
                collections: collection_rx,
                aliases: alias_rx,
            },
        )
    }

    /// Asks for a reconcile of a Collection.
    pub fn collection(&self, object: ObjectRef<Collection>) {
        if let Some(sender) = &self.collections {
            let _ = sender.try_send(object);
        }
    }

    /// Asks for a reconcile of a CollectionAlias.
    pub fn alias(&self, object: ObjectRef<CollectionAlias>) {
        if let Some(sender) = &self.aliases {
            let _ = sender.try_send(object);
        }
    }
}

/// The status this process last computed for each object of one kind, by UID.
///
/// The operator is the only writer of these statuses, so what it last computed is the
/// truth, while the informer cache may still hold an older version: a pass that runs
/// right after a status write (requeued by a hint or another watch) would otherwise read
/// a status without the collection ID it has just recorded, call its own collection
/// `AlreadyExists` and write that, losing the ownership. It also carries ownership when a
/// status write failed after an engine create. Entries go when the finalizer is released;
/// a new leader starts empty with freshly listed caches.
pub struct Remembered<S> {
    statuses: Mutex<HashMap<String, S>>,
}

impl<S> Default for Remembered<S> {
    fn default() -> Self {
        Self {
            statuses: Mutex::new(HashMap::new()),
        }
    }
}

impl<S: Clone> Remembered<S> {
    /// The status last computed for `uid`.
    pub fn get(&self, uid: &str) -> Option<S> {
        self.statuses.lock().get(uid).cloned()
    }

    /// Remembers a computed status.
    pub fn set(&self, uid: &str, status: &S) {
        self.statuses.lock().insert(uid.to_string(), status.clone());
    }

    /// Forgets an object.
    pub fn forget(&self, uid: &str) {
        self.statuses.lock().remove(uid);
    }
}

/// The time source.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Shared state of the controllers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Settings.
    pub settings: Settings,
    /// Informer caches.
    pub stores: Stores,
    /// Engine connections.
    pub engines: Engines,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Failure backoff of Collections.
    pub collection_backoff: Backoff<Collection>,
    /// Failure backoff of CollectionAliases.
    pub alias_backoff: Backoff<CollectionAlias>,
    /// Failure backoff of Coordinators.
    pub coordinator_backoff: Backoff<Coordinator>,
    /// Failure backoff of RoutedAliases.
    pub routed_backoff: Backoff<RoutedAlias>,
    /// Requeue hints.
    pub hints: Hints,
    /// Collection statuses last computed.
    pub remembered_collections: Remembered<CollectionStatus>,
    /// CollectionAlias statuses last computed.
    pub remembered_aliases: Remembered<CollectionAliasStatus>,
    clock: Clock,
}

impl Context {
    /// A context over `client` and `stores`.
    pub fn new(
        client: Client,
        stores: Stores,
        settings: Settings,
        metrics: Arc<Metrics>,
        hints: Hints,
    ) -> Self {
        Self {
            engines: Engines::new(
                client.clone(),
                metrics.clone(),
                settings.allowed_endpoint_hosts.clone(),
            ),
            recorder: Recorder::new(client.clone(), settings.reporter.clone()),
            collection_backoff: Backoff::new(settings.backoff),
            alias_backoff: Backoff::new(settings.backoff),
            coordinator_backoff: Backoff::new(settings.backoff),
            routed_backoff: Backoff::new(settings.backoff),
            client,
            settings,
            stores,
            metrics,
            hints,
            remembered_collections: Remembered::default(),
            remembered_aliases: Remembered::default(),
            clock: Arc::new(Timestamp::now),
        }
    }

    /// The same context with another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Now, in whole seconds: the precision Kubernetes stores times with, so that a
    /// status read back from the API server compares equal to the one computed.
    pub fn now(&self) -> Timestamp {
        let now = (self.clock)();
        Timestamp::from_second(now.as_second()).unwrap_or(now)
    }

    /// Waits until every informer cache has listed once. Before that, a missing rival or
    /// target would look absent, and e.g. an alias would switch to a target whose
    /// `Collection` is not Ready.
    /// Bounded, so that a cache that cannot list (e.g. missing RBAC) turns into a retried
    /// error rather than reconciles that hang and block graceful shutdown.
    pub async fn caches_ready(&self) -> Result<(), Error> {
        tokio::time::timeout(CACHE_SYNC_TIMEOUT, self.stores.sync.wait())
            .await
            .map_err(|_| Error::CachesNotSynced(CACHE_SYNC_TIMEOUT))
    }

    /// Publishes an Event that is not about an engine mutation.
    pub async fn publish(&self, event: &EventSpec, regarding: &ObjectReference) {
        self.recorder.publish(event, regarding).await;
    }
}

/// Whether a Collection reports `Ready=True` for its current generation.
pub fn collection_is_ready(collection: &Collection) -> bool {
    collection.status.as_ref().is_some_and(|status| {
        status.observed_generation == collection.metadata.generation
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == READY && c.status == "True")
    })
}

/// Readiness of a target from the Collections managing it: none → `Unmanaged`; any Ready
/// (the winner of a conflict) → `Ready`; else `NotReady`.
pub fn target_readiness_of(managing: &[Arc<Collection>]) -> TargetReadiness {
    if managing.is_empty() {
        TargetReadiness::Unmanaged
    } else if managing.iter().any(|c| collection_is_ready(c)) {
        TargetReadiness::Ready
    } else {
        TargetReadiness::NotReady
    }
}
