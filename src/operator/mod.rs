//! The Kubernetes controllers (`collection-operator operator`).
//!
//! Four controllers share one [`Context`]: `Coordinator` (is the engine reachable),
//! `Collection` and `CollectionAlias` (one shared [`pass`]: gather the engine's view of the
//! object's names and rivals and target readiness from the informer caches ([`lookup`]) →
//! plan with the pure [`crate::plan`] functions → apply through
//! [`crate::client::EngineClient`] → status),
//! and `RoutedAlias` ([`routed`]: a schedule that generates owned `Collection`s and a
//! `CollectionAlias`, requeued at its next boundary).
//!
//! What the operator writes to Kubernetes: `.status` (server-side apply, field manager
//! [`FIELD_MANAGER`]), the finalizer `collections.dev/finalizer` (JSON patches with a
//! `test` op, from kube's finalizer helper), Events and, with leader election, a Lease.
//! Never `.spec`, so Helm and Argo CD keep sole ownership of it.
//!
//! # Finalizers and a missing Coordinator
//!
//! Deleting a `Collection` or `CollectionAlias` waits for its engine clean-up
//! (`deletionPolicy: Delete`). If its `Coordinator` resource no longer exists (e.g. the
//! namespace is being deleted and the Coordinator went first), the finalizer is released
//! without touching the engine and a `CoordinatorGone` Warning Event says what was left
//! behind. If the Coordinator exists but the engine is unreachable, the finalizer stays
//! and the clean-up is retried with backoff; to give up on it, remove the finalizer by
//! hand: `kubectl patch collectionalias NAME --type=json -p
//! '[{"op":"remove","path":"/metadata/finalizers/0"}]'`.

pub mod alias;
pub mod backoff;
pub mod collection;
pub mod context;
pub mod coordinator;
pub mod engine;
pub mod error;
pub mod events;
pub mod http;
pub mod leader;
pub mod lookup;
pub mod managed;
pub mod metrics;
pub mod pass;
pub mod queue;
pub mod routed;
pub mod status;

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

pub use context::Context;
pub use error::Error;

use crate::crd::{Collection, CollectionAlias, Coordinator, RoutedAlias};
use context::{Cache, CacheSync, Hints, Settings, Stores};
use events::Reporter;
use http::Health;
use metrics::Metrics;
use queue::WorkQueue;

/// Field manager of every status write (and the Event reporter's name).
pub const FIELD_MANAGER: &str = "collection-operator";

/// Flags of `collection-operator operator`.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080", env = "METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Default drift-correction interval (jittered ±10 %; the annotation
    /// `collections.dev/resync-interval` overrides it per object).
    #[arg(long, default_value = "60s", value_parser = backoff::parse_duration, env = "RESYNC_INTERVAL")]
    pub resync_interval: Duration,
    /// Most reconciles running at once, per controller.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Image of managed Coordinators (coordinator and streaming node pods) whose spec
    /// names none; the chart passes the operator's own image.
    #[arg(long, default_value = context::DEFAULT_MANAGED_IMAGE, env = "MANAGED_IMAGE")]
    pub managed_image: String,
    /// Hosts engine endpoints may name, as globs (`*` any run of characters), comma
    /// separated, e.g. `*.svc,milvus.example.com`; empty allows any. The in-cluster Service
    /// of a managed Coordinator is always allowed. A refused endpoint is never connected to.
    #[arg(long, value_delimiter = ',', env = "ALLOWED_ENDPOINT_HOSTS")]
    pub allowed_endpoint_hosts: Vec<String>,
    /// Leader election.
    #[command(flatten)]
    pub leader_election: leader::LeaderElectionArgs,
}

/// Fires once, on SIGTERM / Ctrl-C or when leadership is lost; every part of the
/// process waits on a clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The firing side of [`Shutdown`].
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    /// A new, unfired shutdown signal.
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (sender, receiver) = watch::channel(false);
        (ShutdownTrigger(sender), Shutdown(receiver))
    }

    /// Resolves once fired (or once the trigger is gone).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

impl ShutdownTrigger {
    /// Fires.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the controllers until SIGTERM (drains running reconciles, releases the lease).
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster service account or KUBECONFIG)")?;
    let (trigger, shutdown) = Shutdown::new();
    let trigger = Arc::new(trigger);
    {
        let trigger = trigger.clone();
        tokio::spawn(async move {
            termination_signal().await;
            tracing::info!("termination requested; finishing running reconciles");
            trigger.fire();
        });
    }

    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", args.metrics_addr))?;
    tracing::info!(addr = %args.metrics_addr, "serving /metrics, /healthz, /readyz");
    let http_server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        health.clone(),
        shutdown.clone().wait(),
    ));

    check_crds(&client, args.namespace.as_deref()).await?;

    let mut leadership = None;
    if args.leader_election.enabled {
        // A standby is healthy and ready: it is doing its job, which is to wait.
        health.set_ready(true);
        let namespace = args.namespace.as_deref().unwrap_or("default");
        match leader::acquire(
            client.clone(),
            &args.leader_election,
            namespace,
            shutdown.clone(),
        )
        .await?
        {
            Some(held) => leadership = Some(held),
            None => {
                let _ = http_server.await;
                return Ok(());
            }
        }
        health.set_ready(false);
    }
    metrics.set_leader(true);

    let controllers = run_controllers(client, &args, metrics.clone(), health, shutdown.clone());
    tokio::pin!(controllers);
    let result = match leadership.as_mut() {
        None => controllers.await,
        Some(held) => {
            tokio::select! {
                result = &mut controllers => result,
                () = held.lost() => {
                    metrics.set_leader(false);
                    trigger.fire();
                    let _ = controllers.await;
                    Err(anyhow::anyhow!("lost the leader lease; exiting so that a restart rejoins the election"))
                }
            }
        }
    };
    if let Some(held) = leadership {
        held.release().await;
    }
    trigger.fire();
    let _ = http_server.await;
    result
}

/// Fails with a hint when the CRDs are not installed (rather than watch errors forever).
async fn check_crds(client: &Client, namespace: Option<&str>) -> anyhow::Result<()> {
    async fn check<K>(client: &Client, namespace: Option<&str>) -> anyhow::Result<()>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = match namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => bail!(
                "the {} CRD is not installed; apply it first: kubectl apply -f crds/",
                K::kind(&())
            ),
            Err(error) => Err(error).with_context(|| format!("listing {}", K::plural(&()))),
        }
    }
    check::<Coordinator>(client, namespace).await?;
    check::<Collection>(client, namespace).await?;
    check::<CollectionAlias>(client, namespace).await?;
    check::<RoutedAlias>(client, namespace).await
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What makes an own object worth a pass: spec (generation; deletion bumps it too),
/// annotations (paused, reconcile-requested-at, adopt, resync-interval) and finalizers
/// (the finalizer helper waits for its own patch). Status writes are filtered out, so the
/// operator does not re-trigger itself.
fn own_changes<K: Resource + 'static>() -> impl Predicate<K> + Clone + 'static {
    predicates::generation
        .combine(predicates::annotations)
        .combine(predicates::finalizers)
}

/// What aliases care about in a Collection: its identity and whether it is Ready and
/// Serving.
fn collection_readiness(collection: &Collection) -> Option<u64> {
    Some(hash_of((
        collection.metadata.namespace.as_deref(),
        &collection.spec.coordinator_ref.name,
        &collection.spec.database,
        collection.engine_name(),
        context::collection_is_ready(collection),
        collection_is_serving(collection),
        collection.metadata.deletion_timestamp.is_some(),
    )))
}

/// Whether a Collection reports `Serving=True` (the gate of `WhenTargetServing` aliases).
fn collection_is_serving(collection: &Collection) -> bool {
    collection.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == collection::SERVING && c.status == "True")
    })
}

/// What a `RoutedAlias` cares about in its `CollectionAlias`: the target it asks for and
/// the one it is bound to (the move is done when they agree).
fn alias_binding(alias: &CollectionAlias) -> Option<u64> {
    Some(hash_of((
        &alias.spec.collection,
        alias.status.as_ref().and_then(|s| s.collection.as_deref()),
        alias.metadata.deletion_timestamp.is_some(),
    )))
}

/// What referencing objects care about in a Coordinator: its spec and readiness.
fn coordinator_state(coordinator: &Coordinator) -> Option<u64> {
    let ready = coordinator.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::READY)
            .map(|c| c.status.clone())
    });
    Some(hash_of((coordinator.metadata.generation, ready)))
}

async fn log_results<K, E>(
    result: Result<(reflector::ObjectRef<K>, kube::runtime::controller::Action), E>,
) where
    K: Resource,
    K::DynamicType: std::fmt::Debug,
    E: std::fmt::Display,
{
    match result {
        Ok((object, _)) => tracing::debug!(%object, "reconciled"),
        // Reconcile failures are logged by the error policies; these are queue errors.
        Err(error) => tracing::debug!(%error, "controller"),
    }
}

/// Records every object a trigger stream yields as asked for in `queue`.
fn enqueued<K: Resource<DynamicType = ()>>(
    queue: Arc<WorkQueue>,
    cause: &'static str,
) -> impl FnMut(&K) {
    move |object| queue.add(&reflector::ObjectRef::from_obj(object), cause)
}

/// Records every reference a hint stream yields as asked for in `queue`.
fn enqueued_ref<K: Resource<DynamicType = ()>>(
    queue: Arc<WorkQueue>,
    cause: &'static str,
) -> impl FnMut(&reflector::ObjectRef<K>) {
    move |object| queue.add(object, cause)
}

/// A `watches_stream` mapper that also records the objects it asks for in `queue`.
fn mapped<T, K, I>(
    queue: Arc<WorkQueue>,
    cause: &'static str,
    mapper: impl Fn(T) -> I + Send + Sync + 'static,
) -> impl Fn(T) -> Vec<reflector::ObjectRef<K>> + Send + Sync + 'static
where
    K: Resource<DynamicType = ()>,
    I: IntoIterator<Item = reflector::ObjectRef<K>>,
{
    move |changed| {
        let objects: Vec<_> = mapper(changed).into_iter().collect();
        for object in &objects {
            queue.add(object, cause);
        }
        objects
    }
}

/// A reconciler timed through `queue` (queue wait, duration, result; see [`queue`]).
fn timed<K, F, Fut>(
    queue: Arc<WorkQueue>,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> BoxFuture<'static, Result<Requeue, Error>>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Requeue, Error>> + Send + 'static,
{
    move |object, ctx| {
        let key = reflector::ObjectRef::from_obj(&*object).to_string();
        Box::pin(queue.clone().run(key, reconcile(object, ctx)))
    }
}

/// Marks `cache` as synced when its reflector has applied a complete list.
fn synced<K>(
    sync: CacheSync,
    cache: Cache,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            sync.mark(cache);
        }
    }
}

/// Builds and runs the three controllers until `shutdown` (what [`run`] does once it
/// leads; public so that tests can drive it with a mocked API server).
pub async fn run_controllers(
    client: Client,
    args: &OperatorArgs,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let namespace = args.namespace.as_deref();
    let watch_config = watcher::Config::default().any_semantic();
    let (coordinator_store, coordinator_writer) = reflector::store::<Coordinator>();
    let (collection_store, collection_writer) = reflector::store::<Collection>();
    let (alias_store, alias_writer) = reflector::store::<CollectionAlias>();
    let sync = CacheSync::new();
    let stores = Stores {
        coordinators: coordinator_store.clone(),
        collections: collection_store.clone(),
        aliases: alias_store.clone(),
        sync: sync.clone(),
    };
    let (hints, receivers) = Hints::channels(4096);
    let settings = Settings {
        resync_interval: args.resync_interval.max(Duration::from_secs(1)),
        reporter: Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance: std::env::var("POD_NAME")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok()),
        },
        managed_image: args.managed_image.clone(),
        allowed_endpoint_hosts: args
            .allowed_endpoint_hosts
            .iter()
            .map(|host| host.trim().to_string())
            .filter(|host| !host.is_empty())
            .collect(),
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        stores,
        settings,
        metrics,
        hints,
    ));
    {
        let sync = sync.clone();
        tokio::spawn(async move {
            sync.wait().await;
            tracing::info!("informer caches synced");
            health.set_ready(true);
        });
    }
    let controller_config = ControllerConfig::default().concurrency(args.concurrency);
    let coordinator_queue = WorkQueue::new(coordinator::CONTROLLER, ctx.metrics.clone());
    let collection_queue = WorkQueue::new(collection::CONTROLLER, ctx.metrics.clone());
    let alias_queue = WorkQueue::new(alias::CONTROLLER, ctx.metrics.clone());
    let routed_queue = WorkQueue::new(routed::CONTROLLER, ctx.metrics.clone());

    let coordinators = watcher(api::<Coordinator>(&client, namespace), watch_config.clone())
        .default_backoff()
        .reflect(coordinator_writer)
        .inspect(synced(sync.clone(), Cache::Coordinators))
        .applied_objects()
        .predicate_filter(own_changes(), Default::default())
        .inspect_ok(enqueued(coordinator_queue.clone(), "watch"));
    let coordinator_controller = Controller::for_stream(coordinators, coordinator_store)
        .with_config(controller_config.clone())
        .graceful_shutdown_on(shutdown.clone().wait())
        .run(
            timed(coordinator_queue, coordinator::reconcile),
            coordinator::error_policy,
            ctx.clone(),
        )
        .for_each(log_results);

    let collections = watcher(api::<Collection>(&client, namespace), watch_config.clone())
        .default_backoff()
        .reflect(collection_writer)
        .inspect(synced(sync.clone(), Cache::Collections))
        .applied_objects()
        .predicate_filter(own_changes(), Default::default())
        .inspect_ok(enqueued(collection_queue.clone(), "watch"));
    let coordinator_changes = watcher(api::<Coordinator>(&client, namespace), watch_config.clone())
        .default_backoff()
        .touched_objects()
        .predicate_filter(coordinator_state, Default::default());
    let collection_controller = {
        let mapper_ctx = ctx.clone();
        Controller::for_stream(collections, collection_store)
            .with_config(controller_config.clone())
            .watches_stream(
                coordinator_changes,
                mapped(
                    collection_queue.clone(),
                    "coordinator",
                    move |coordinator| {
                        collection::collections_for_coordinator(&mapper_ctx, &coordinator)
                    },
                ),
            )
            .reconcile_on(
                ReceiverStream::new(receivers.collections)
                    .inspect(enqueued_ref(collection_queue.clone(), "hint")),
            )
            .graceful_shutdown_on(shutdown.clone().wait())
            .run(
                timed(collection_queue, collection::reconcile),
                collection::error_policy,
                ctx.clone(),
            )
            .for_each(log_results)
    };

    let aliases = watcher(
        api::<CollectionAlias>(&client, namespace),
        watch_config.clone(),
    )
    .default_backoff()
    .reflect(alias_writer)
    .inspect(synced(sync.clone(), Cache::Aliases))
    .applied_objects()
    .predicate_filter(own_changes(), Default::default())
    .inspect_ok(enqueued(alias_queue.clone(), "watch"));
    let target_changes = watcher(api::<Collection>(&client, namespace), watch_config.clone())
        .default_backoff()
        .touched_objects()
        .predicate_filter(collection_readiness, Default::default());
    let coordinator_changes = watcher(api::<Coordinator>(&client, namespace), watch_config.clone())
        .default_backoff()
        .touched_objects()
        .predicate_filter(coordinator_state, Default::default());
    let alias_controller = {
        let target_ctx = ctx.clone();
        let coordinator_ctx = ctx.clone();
        Controller::for_stream(aliases, alias_store)
            .with_config(controller_config.clone())
            .watches_stream(
                target_changes,
                mapped(alias_queue.clone(), "target", move |collection| {
                    alias::aliases_for_collection(&target_ctx, &collection)
                }),
            )
            .watches_stream(
                coordinator_changes,
                mapped(alias_queue.clone(), "coordinator", move |coordinator| {
                    alias::aliases_for_coordinator(&coordinator_ctx, &coordinator)
                }),
            )
            .reconcile_on(
                ReceiverStream::new(receivers.aliases)
                    .inspect(enqueued_ref(alias_queue.clone(), "hint")),
            )
            .graceful_shutdown_on(shutdown.clone().wait())
            .run(
                timed(alias_queue, alias::reconcile),
                alias::error_policy,
                ctx.clone(),
            )
            .for_each(log_results)
    };

    // RoutedAliases: no engine calls of their own; their generated Collections and
    // CollectionAlias requeue them when readiness or the alias binding changes, and the
    // schedule requeues them at the next boundary.
    let (routed_store, routed_writer) = reflector::store::<RoutedAlias>();
    let routed = watcher(api::<RoutedAlias>(&client, namespace), watch_config.clone())
        .default_backoff()
        .reflect(routed_writer)
        .applied_objects()
        .predicate_filter(own_changes(), Default::default())
        .inspect_ok(enqueued(routed_queue.clone(), "watch"));
    let member_changes = watcher(api::<Collection>(&client, namespace), watch_config.clone())
        .default_backoff()
        .touched_objects()
        .predicate_filter(collection_readiness, Default::default());
    let alias_changes = watcher(api::<CollectionAlias>(&client, namespace), watch_config)
        .default_backoff()
        .touched_objects()
        .predicate_filter(alias_binding, Default::default());
    let routed_controller = Controller::for_stream(routed, routed_store)
        .with_config(controller_config)
        .watches_stream(
            member_changes,
            mapped(routed_queue.clone(), "member", |collection| {
                routed::owner_of(&collection)
            }),
        )
        .watches_stream(
            alias_changes,
            mapped(routed_queue.clone(), "alias", |alias| {
                routed::owner_of(&alias)
            }),
        )
        .graceful_shutdown_on(shutdown.clone().wait())
        .run(
            timed(routed_queue, routed::reconcile),
            routed::error_policy,
            ctx.clone(),
        )
        .for_each(log_results);

    tracing::info!(
        namespace = namespace.unwrap_or("<all>"),
        resync = ?ctx.settings.resync_interval,
        "controllers started"
    );
    tokio::join!(
        coordinator_controller,
        collection_controller,
        alias_controller,
        routed_controller
    );
    tracing::info!("controllers stopped");
    Ok(())
}

/// A reflector store filled with `objects` and marked ready, plus its writer for later
/// updates; for tests and tools that call the reconcilers without watches.
pub fn filled_store<K>(
    objects: impl IntoIterator<Item = K>,
) -> (Store<K>, reflector::store::Writer<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    (store, writer)
}
