//! The `Coordinator` controller: `Ready` when the engine answers `Connect` (and
//! `GetVersion`), with the endpoint and engine version in status. It writes no metadata to
//! the engine and needs no finalizer; its status changes requeue the Collections and
//! aliases that reference it.
//!
//! A **managed** Coordinator is also deployed here (see [`super::managed`]): each pass
//! reads the StreamingNode StatefulSet and the coordinator's WAL placement, decides the
//! scale step (freeze → wait until drained → scale down → defreeze), calls
//! `UpdateWALBalancePolicy` when the step says so, server-side-applies every owned object,
//! and reports the pchannel → term → pod table with `WALPlacementReady` and `Draining`.

use std::sync::Arc;
use std::time::Instant;

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::backoff::{next_resync, resync_interval};
use super::context::Context;
use super::engine::{Engine, read_credentials};
use super::error::Error;
use super::events::EventSpec;
use super::managed::{self, ManagedNames, ScaleStep};
use super::status::{READY, Truth, Wanted, apply_status, conditions};
use crate::client::WalPlacement;
use crate::crd::{Coordinator, CoordinatorStatus, ManagedCoordinator, StreamingStatus};

/// How soon a pass that waits for a drain looks again.
const DRAIN_POLL: Duration = Duration::from_secs(2);

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "coordinator";

/// The status for a health check that returned `version`, or failed with `error`; a
/// managed coordinator adds its WAL placement table and conditions (`streaming`).
pub fn coordinator_status(
    coordinator: &Coordinator,
    result: &Result<String, Error>,
    streaming: Option<(StreamingStatus, Vec<Wanted>)>,
    now: k8s_openapi::jiff::Timestamp,
) -> CoordinatorStatus {
    let previous = coordinator.status.clone().unwrap_or_default();
    let generation = coordinator.metadata.generation;
    let endpoint = coordinator.endpoint();
    let wanted = match result {
        Ok(version) => Wanted::new(
            READY,
            Truth::True,
            "Connected",
            format!(
                "{} answers (version {version})",
                endpoint.as_deref().unwrap_or_default()
            ),
        ),
        Err(error) => {
            let reason = match error {
                Error::Engine(crate::client::ClientError::Unreachable { .. }) => {
                    "EngineUnreachable"
                }
                Error::Engine(_) => "EngineError",
                Error::Credentials { .. } => "CredentialsInvalid",
                Error::CredentialsRefused { .. } => "CredentialsRefused",
                Error::EndpointRefused { .. } => "EndpointRefused",
                Error::Coordinator { .. } => "InvalidSpec",
                Error::Kube { .. } if coordinator.spec.managed.is_some() => "DeployFailed",
                _ => "ReconcileError",
            };
            Wanted::new(READY, Truth::False, reason, error.to_string())
        }
    };
    let mut wanted = vec![wanted];
    let table = streaming.map(|(table, more)| {
        wanted.extend(more);
        table
    });
    CoordinatorStatus {
        observed_generation: generation,
        conditions: conditions(&previous.conditions, &wanted, generation, now),
        endpoint,
        streaming: table,
        version: match result {
            Ok(version) => Some(version.clone()),
            Err(_) => previous.version,
        },
    }
}

/// Checks one `Coordinator`.
pub async fn reconcile(coordinator: Arc<Coordinator>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_inner(coordinator, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    result
}

async fn reconcile_inner(coordinator: Arc<Coordinator>, ctx: &Context) -> Result<Requeue, Error> {
    let namespace = coordinator
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let key = ObjectRef::from_obj(&*coordinator);
    let (streaming, requeue_soon, deployed) = match coordinator.spec.managed {
        Some(_) => match reconcile_managed(&coordinator, &namespace, ctx).await {
            Ok((table, step)) => {
                let soon = matches!(step, ScaleStep::Freeze { .. } | ScaleStep::Draining { .. });
                (Some(table), soon, Ok(()))
            }
            Err(error) => {
                // A deployment that cannot be applied (RBAC, quota, an admission webhook)
                // is reported on the resource, not only in the operator's log (a refused
                // Secret gets its own Event below).
                if !matches!(error, Error::CredentialsRefused { .. }) {
                    ctx.recorder
                        .publish(
                            &EventSpec::warning("DeployFailed", "Deploy", error.to_string()),
                            &coordinator.object_ref(&()),
                        )
                        .await;
                }
                (None, false, Err(error))
            }
        },
        None => (None, false, Ok(())),
    };
    let health = match deployed {
        Ok(()) => {
            async {
                let mut engine = ctx.engines.connect(&coordinator).await?;
                Ok::<_, Error>(engine.server_version().await?)
            }
            .await
        }
        Err(error) => Err(error),
    };
    if let Err(error @ (Error::CredentialsRefused { .. } | Error::EndpointRefused { .. })) = &health
    {
        // A refusal is a policy decision someone has to act on (label the Secret, or
        // widen the allow-list): said on the resource, not only in the status.
        let reason = match error {
            Error::CredentialsRefused { .. } => "CredentialsRefused",
            _ => "EndpointRefused",
        };
        ctx.recorder
            .publish(
                &EventSpec::warning(reason, "Connect", error.to_string()),
                &coordinator.object_ref(&()),
            )
            .await;
    }
    let status = coordinator_status(&coordinator, &health, streaming, ctx.now());
    if coordinator.status.as_ref() != Some(&status) {
        let api: Api<Coordinator> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &coordinator, &status).await?;
    }
    let resync = resync_interval(&*coordinator, ctx.settings.resync_interval);
    match health {
        Ok(_) if requeue_soon => {
            ctx.coordinator_backoff.reset(&key);
            Ok(Requeue::requeue(DRAIN_POLL))
        }
        Ok(_) => {
            ctx.coordinator_backoff.reset(&key);
            Ok(Requeue::requeue(next_resync(
                &*coordinator,
                ctx.settings.resync_interval,
            )))
        }
        Err(error) => {
            ctx.metrics.failed(CONTROLLER, error.metric_label());
            let delay = ctx.coordinator_backoff.next(&key).min(resync);
            tracing::warn!(coordinator = %key, %error, retry_in = ?delay, "engine not reachable");
            Ok(Requeue::requeue(delay))
        }
    }
}

/// What a managed pass decides on: the StreamingNode StatefulSet as it stands, the
/// replicas the pchannels ask for, which pod each node runs in, and the coordinator's WAL
/// placement (`None` when it cannot be read: then no node is ever removed).
struct ManagedObserved {
    current: Option<u32>,
    desired: u32,
    pchannels: u32,
    ordinals: managed::Ordinals,
    placement: Option<WalPlacement>,
}

/// Reads everything the scale plan needs; also returns the engine connection (when the
/// coordinator answers) that the freeze list is changed through.
async fn gather_managed(
    coordinator: &Coordinator,
    spec: &ManagedCoordinator,
    namespace: &str,
    ctx: &Context,
) -> Result<(ManagedObserved, Option<Engine>), Error> {
    let names = ManagedNames::of(&coordinator.name_any());
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let current = api
        .get_opt(&names.streaming)
        .await
        .map_err(|source| Error::kube(format!("reading StatefulSet {}", names.streaming), source))?
        .and_then(|sts| sts.spec.and_then(|spec| spec.replicas))
        .map(|replicas| replicas.max(0) as u32);
    let ordinals = streaming_ordinals(ctx, namespace, coordinator, &names).await?;
    let mut engine = ctx.engines.connect(coordinator).await.ok();
    let placement: Option<WalPlacement> = match engine.as_mut() {
        Some(engine) => match engine.wal_placement().await {
            Ok(placement) => Some(placement),
            Err(error) => {
                tracing::debug!(%error, "WAL placement not readable yet");
                None
            }
        },
        None => None,
    };
    let observed = ManagedObserved {
        current,
        desired: managed::streaming_replicas(&spec.streaming),
        pchannels: spec.streaming.pchannels,
        ordinals,
        placement,
    };
    Ok((observed, engine))
}

/// Deploys a managed coordinator: gathers the StatefulSet and the WAL placement, lets
/// [`managed::plan_streaming_scale`] decide the scale step, acts on the freeze list, and
/// applies every object. Returns the placement table with its conditions, and the step.
async fn reconcile_managed(
    coordinator: &Coordinator,
    namespace: &str,
    ctx: &Context,
) -> Result<((StreamingStatus, Vec<Wanted>), ScaleStep), Error> {
    let Some(spec) = coordinator.spec.managed.as_ref() else {
        return Err(Error::MissingMetadata("spec.managed"));
    };
    if let Some(secret) = &spec.credentials_secret {
        // The coordinator pods would consume the Secret (the kubelet reads it for them):
        // the same opt-in as for what the operator sends, checked before anything is
        // deployed.
        read_credentials(&ctx.client, namespace, &secret.name).await?;
    }
    let (observed, mut engine) = gather_managed(coordinator, spec, namespace, ctx).await?;
    let ManagedObserved {
        current,
        desired,
        pchannels,
        ordinals,
        placement,
    } = observed;
    let step =
        managed::plan_streaming_scale(desired, current, placement.as_ref(), &ordinals, pchannels);
    let reference = coordinator.object_ref(&());
    match (&step, engine.as_mut()) {
        (ScaleStep::Freeze { server_ids, .. }, Some(engine)) => {
            engine.update_wal_freeze(server_ids, &[]).await?;
            ctx.recorder
                .publish(
                    &EventSpec::normal(
                        "FreezingStreamingNodes",
                        "Freeze",
                        format!(
                            "scaling streaming nodes down to {desired}: froze server IDs                              {server_ids:?} so that their pchannels move first"
                        ),
                    ),
                    &reference,
                )
                .await;
        }
        (ScaleStep::Defreeze { server_ids, .. }, Some(engine)) => {
            engine.update_wal_freeze(&[], server_ids).await?;
            ctx.recorder
                .publish(
                    &EventSpec::normal(
                        "DefrozeStreamingNodes",
                        "Defreeze",
                        format!("took server IDs {server_ids:?} off the freeze list"),
                    ),
                    &reference,
                )
                .await;
        }
        (ScaleStep::ScaleDown { replicas }, _) => {
            ctx.recorder
                .publish(
                    &EventSpec::normal(
                        "ScaledDownStreamingNodes",
                        "ScaleDown",
                        format!(
                            "streaming nodes {}..{} hold no pchannel: replicas {} -> {replicas}",
                            replicas,
                            current.unwrap_or(*replicas),
                            current.unwrap_or(*replicas)
                        ),
                    ),
                    &reference,
                )
                .await;
        }
        _ => {}
    }
    let objects =
        managed::managed_objects(coordinator, &ctx.settings.managed_image, step.replicas())
            .map_err(|error| Error::Coordinator {
                namespace: namespace.to_string(),
                name: coordinator.name_any(),
                message: error.to_string(),
            })?;
    apply_owned(&ctx.client, namespace, &objects.service_account).await?;
    apply_owned(&ctx.client, namespace, &objects.config_map).await?;
    apply_owned(&ctx.client, namespace, &objects.coordinator_headless).await?;
    apply_owned(&ctx.client, namespace, &objects.coordinator_service).await?;
    apply_owned(&ctx.client, namespace, &objects.coordinator).await?;
    if let Some(pdb) = &objects.coordinator_pdb {
        apply_owned(&ctx.client, namespace, pdb).await?;
    }
    apply_owned(&ctx.client, namespace, &objects.streaming_network_policy).await?;
    apply_owned(&ctx.client, namespace, &objects.streaming_service).await?;
    apply_owned(&ctx.client, namespace, &objects.streaming).await?;
    apply_owned(&ctx.client, namespace, &objects.streaming_pdb).await?;
    let table = managed::streaming_status(placement.as_ref(), &step, desired, &ordinals, pchannels);
    Ok((table, step))
}

/// Pod IP → ordinal of the StreamingNode pods, so that nodes that advertise an IP map to
/// their pods as well as those that advertise their stable DNS name.
async fn streaming_ordinals(
    ctx: &Context,
    namespace: &str,
    coordinator: &Coordinator,
    names: &ManagedNames,
) -> Result<managed::Ordinals, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!(
        "app.kubernetes.io/instance={},app.kubernetes.io/component=streamingnode",
        coordinator.name_any()
    );
    let listed = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| {
            Error::kube(format!("listing the pods of {}", names.streaming), source)
        })?;
    let mut ordinals = managed::Ordinals::named(&names.streaming);
    for pod in listed {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        if let (Some(ip), Some(ordinal)) = (ip, ordinals.of_pod(&pod.name_any())) {
            ordinals.by_ip.insert(ip, ordinal);
        }
    }
    Ok(ordinals)
}

/// Server-side-applies one owned object (field manager `collection-operator`, forced: the
/// operator is the only writer of what it deploys).
async fn apply_owned<K>(client: &kube::Client, namespace: &str, object: &K) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut body = serde_json::to_value(object).map_err(|source| {
        Error::kube(
            format!("encoding {} {name}", K::kind(&())),
            kube::Error::SerdeError(source),
        )
    })?;
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    api.patch(
        &name,
        &PatchParams::apply(super::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|source| Error::kube(format!("applying {} {name}", K::kind(&())), source))?;
    Ok(())
}

/// Requeue after a failed pass (a status write failed).
pub fn error_policy(coordinator: Arc<Coordinator>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.failed(CONTROLLER, error.metric_label());
    let key = ObjectRef::from_obj(&*coordinator);
    let delay = ctx.coordinator_backoff.next(&key);
    tracing::warn!(coordinator = %key, %error, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}
