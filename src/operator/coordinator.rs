//! The `Coordinator` controller: `Ready` when the engine answers `Connect` (and
//! `GetVersion`), with the endpoint and engine version in status. It writes nothing to
//! the engine and needs no finalizer; its status changes requeue the Collections and
//! aliases that reference it.

use std::sync::Arc;
use std::time::Instant;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::reflector::ObjectRef;

use super::backoff::{next_resync, resync_interval};
use super::context::Context;
use super::error::Error;
use super::status::{READY, Truth, Wanted, apply_status, conditions};
use crate::crd::{Coordinator, CoordinatorStatus};

/// Controller name (metrics label, logs).
pub const CONTROLLER: &str = "coordinator";

/// The status for a health check that returned `version`, or failed with `error`.
pub fn coordinator_status(
    coordinator: &Coordinator,
    result: &Result<String, Error>,
    now: k8s_openapi::jiff::Timestamp,
) -> CoordinatorStatus {
    let previous = coordinator.status.clone().unwrap_or_default();
    let generation = coordinator.metadata.generation;
    let endpoint = coordinator
        .spec
        .external
        .as_ref()
        .map(|e| e.endpoint.clone());
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
                Error::Coordinator { .. } => "InvalidSpec",
                _ => "ReconcileError",
            };
            Wanted::new(READY, Truth::False, reason, error.to_string())
        }
    };
    CoordinatorStatus {
        observed_generation: generation,
        conditions: conditions(&previous.conditions, &[wanted], generation, now),
        endpoint,
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
    let health = async {
        let mut engine = ctx.engines.connect(&coordinator).await?;
        Ok::<_, Error>(engine.server_version().await?)
    }
    .await;
    let status = coordinator_status(&coordinator, &health, ctx.now());
    if coordinator.status.as_ref() != Some(&status) {
        let api: Api<Coordinator> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &coordinator, &status).await?;
    }
    let resync = resync_interval(&*coordinator, ctx.settings.resync_interval);
    match health {
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

/// Requeue after a failed pass (a status write failed).
pub fn error_policy(coordinator: Arc<Coordinator>, error: &Error, ctx: Arc<Context>) -> Requeue {
    ctx.metrics.failed(CONTROLLER, error.metric_label());
    let key = ObjectRef::from_obj(&*coordinator);
    let delay = ctx.coordinator_backoff.next(&key);
    tracing::warn!(coordinator = %key, %error, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}
