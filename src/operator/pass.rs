//! One reconcile pass of a resource that stands for one engine object (`Collection`,
//! `CollectionAlias`), shared by their controllers. Each pass reads, in one place:
//!
//! 1. **gather** ([`EngineResource::gather`]): the resource's engine observation, its
//!    rivals and whatever else its planner needs, into one plain value;
//! 2. **plan** ([`EngineResource::plan`]): the pure planner of [`crate::plan`] decides the
//!    engine actions and the verdict;
//! 3. **apply** ([`execute`], then [`EngineResource::status`]): the actions run in order
//!    with an Event each, and the status is written.
//!
//! The skeleton around it is the same for both kinds and lives here: kube's finalizer
//! helper (a pass on a deleted resource is the clean-up), the status this process last
//! computed ([`super::context::Remembered`]), a missing Coordinator (wait, or release the
//! finalizer when deleting), paused resources, the failure status, and the requeue.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::backoff::{Backoff, next_resync};
use super::context::{Context, Remembered};
use super::engine::Engine;
use super::error::Error;
use super::events::{EventSpec, failure_event, mutation_event};
use super::lookup;
use super::status::{Outcome, apply_status};
use crate::client::{Applied, ClientError};
use crate::crd::{CoordinatorRef, FINALIZER};
use crate::plan::{Action, Verdict};

/// A resource reconciled against one engine object, and what its controller adds to the
/// shared pass.
pub trait EngineResource:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Its status.
    type Status: Clone + PartialEq + Serialize + Send + Sync;
    /// Everything its planner needs, read once per pass.
    type Gathered: Send + Sync;

    /// Controller name (metrics label, logs).
    const CONTROLLER: &'static str;
    /// What the engine object is called in messages ("collection", "alias").
    const ENGINE_OBJECT: &'static str;

    /// The Coordinator it is applied through.
    fn coordinator_ref(&self) -> &CoordinatorRef;
    /// The engine database and name it manages.
    fn engine_object(&self) -> (String, String);
    /// The status as the object carries it.
    fn current_status(&self) -> Option<&Self::Status>;
    /// The status, to replace.
    fn status_mut(&mut self) -> &mut Option<Self::Status>;
    /// Its failure backoff.
    fn backoff(ctx: &Context) -> &Backoff<Self>;
    /// The statuses this process last computed for this kind.
    fn remembered(ctx: &Context) -> &Remembered<Self::Status>;
    /// Asks for a pass of the resources that lost a conflict to this one.
    fn wake_claimants(&self, ctx: &Context);

    /// Reads what the planner needs: the engine observation, and the caches' answers.
    /// `deleting`: the clean-up pass (no rivals: a resource that goes gives way).
    fn gather(
        &self,
        ctx: &Context,
        engine: &mut Engine,
        deleting: bool,
    ) -> impl Future<Output = Result<Self::Gathered, Error>> + Send;
    /// The pure planner: actions and verdict.
    fn plan(gathered: &Self::Gathered) -> (Vec<Action>, Verdict);
    /// What the status recorded (owned collection ID, bound alias target), to tell drift
    /// correction from ordinary changes in Events.
    fn recorded(gathered: &Self::Gathered) -> Option<String>;
    /// Whether the resource asks for no engine changes.
    fn paused(gathered: &Self::Gathered) -> bool;
    /// After the pass (its status written, or its clean-up done): e.g. ask other
    /// controllers to look again.
    fn applied(&self, _ctx: &Context, _gathered: &Self::Gathered, _executed: &Executed) {}
    /// After the plan's actions (not in a clean-up pass): engine work that depends on
    /// them, e.g. indexes and load after a create, or reading back an alias just moved.
    /// It may record its results in `gathered` and revise `verdict`.
    fn follow_up(
        &self,
        _ctx: &Context,
        _engine: &mut Engine,
        _gathered: &mut Self::Gathered,
        _verdict: &mut Verdict,
        _executed: &Executed,
    ) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The status after a pass whose plan ran (or stopped on an engine failure).
    fn status(
        &self,
        gathered: &Self::Gathered,
        verdict: &Verdict,
        executed: &Executed,
        now: Timestamp,
    ) -> Self::Status;
    /// The status after a pass that stopped on `outcome` before planning.
    fn failed_status(&self, outcome: &Outcome, now: Timestamp) -> Self::Status;
    /// When to look again after a successful pass.
    fn requeue_after(
        &self,
        ctx: &Context,
        _verdict: &Verdict,
        _gathered: &Self::Gathered,
    ) -> Duration {
        Self::backoff(ctx).reset(&ObjectRef::from_obj(self));
        next_resync(self, ctx.settings.resync_interval)
    }
}

/// Reconciles one resource: the controller's entry point.
pub async fn reconcile<K: EngineResource>(
    object: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    let clock = PassClock::start(K::CONTROLLER);
    let result = reconcile_inner(object, &ctx, clock).await;
    ctx.metrics
        .reconciled(K::CONTROLLER, clock.started.elapsed());
    result
}

async fn reconcile_inner<K: EngineResource>(
    object: Arc<K>,
    ctx: &Context,
    clock: PassClock,
) -> Result<Requeue, Error> {
    ctx.caches_ready().await?;
    let namespace = object
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, object, |event| async {
        match event {
            FinalizerEvent::Apply(object) => {
                run(View::new(object, ctx), ctx, &api, clock, false).await
            }
            FinalizerEvent::Cleanup(object) => {
                run(View::new(object, ctx), ctx, &api, clock, true).await
            }
        }
    })
    .await
    .map_err(Error::from_finalizer)
}

/// Requeue after a failed pass: terminal errors wait for the resync interval (an edit
/// triggers a pass anyway), others back off exponentially per object.
pub fn error_policy<K: EngineResource>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Requeue {
    Requeue::requeue(super::backoff::after_error(
        &*object,
        error,
        K::backoff(&ctx),
        ctx.settings.resync_interval,
        &ctx.metrics,
        K::CONTROLLER,
    ))
}

/// The object as cached (what the API server has, as far as the watch told) and as this
/// process knows it (its status replaced by the one last computed).
struct View<K> {
    cached: Arc<K>,
    known: Arc<K>,
}

impl<K: EngineResource> View<K> {
    fn new(cached: Arc<K>, ctx: &Context) -> Self {
        let remembered = cached.uid().and_then(|uid| K::remembered(ctx).get(&uid));
        let known = match remembered {
            Some(status) => {
                let mut known = (*cached).clone();
                *known.status_mut() = Some(status);
                Arc::new(known)
            }
            None => cached.clone(),
        };
        Self { cached, known }
    }

    /// Remembers `status` and writes it unless the API server already has it.
    async fn write(&self, api: &Api<K>, ctx: &Context, status: K::Status) -> Result<(), Error> {
        if let Some(uid) = self.cached.uid() {
            K::remembered(ctx).set(&uid, &status);
        }
        if self.cached.current_status() != Some(&status) {
            apply_status(api, &*self.cached, &status).await?;
        }
        Ok(())
    }

    /// Records a failure in the status (best effort) and returns the error.
    async fn fail(&self, api: &Api<K>, ctx: &Context, error: Error) -> Result<Requeue, Error> {
        let status = self
            .known
            .failed_status(&Outcome::from_error(&error), ctx.now());
        if let Err(status_error) = self.write(api, ctx, status).await {
            tracing::warn!(error = %status_error, "could not record the failure in status");
        }
        Err(error)
    }
}

/// One pass: gather → plan → apply → status. `deleting`: the finalizer's clean-up.
async fn run<K: EngineResource>(
    view: View<K>,
    ctx: &Context,
    api: &Api<K>,
    clock: PassClock,
    deleting: bool,
) -> Result<Requeue, Error> {
    let object = view.known.clone();
    let namespace = object.namespace().unwrap_or_default();
    let coordinator_name = &object.coordinator_ref().name;
    let Some(coordinator) = lookup::coordinator(ctx, &namespace, coordinator_name).await? else {
        return coordinator_missing(&view, ctx, api, deleting).await;
    };
    let mut engine = match ctx.engines.connect(&coordinator).await {
        Ok(engine) => engine,
        Err(error) => return view.fail(api, ctx, error).await,
    };
    clock.step(ctx, "engine connection ready");
    let mut gathered = match object.gather(ctx, &mut engine, deleting).await {
        Ok(gathered) => gathered,
        Err(error) => return view.fail(api, ctx, error).await,
    };
    clock.step(ctx, "engine observed");
    let (actions, mut verdict) = K::plan(&gathered);
    let executed = execute(
        ctx,
        clock,
        &mut engine,
        &object.object_ref(&()),
        actions,
        K::recorded(&gathered).as_deref(),
        !deleting && K::paused(&gathered),
    )
    .await;
    if deleting {
        object.applied(ctx, &gathered, &executed);
        return cleaned_up(&view, ctx, api, &gathered, verdict, executed).await;
    }
    if !K::paused(&gathered) {
        object
            .follow_up(ctx, &mut engine, &mut gathered, &mut verdict, &executed)
            .await;
    }
    clock.step(ctx, "engine work done");
    let status = object.status(&gathered, &verdict, &executed, ctx.now());
    let written = view.write(api, ctx, status).await;
    clock.step(ctx, "status written");
    // Other objects' passes (e.g. the collections whose alias lists a swap changed) are
    // asked for only now: started earlier, they read the engine and write their statuses
    // while this pass still confirms its change and writes its own status, and delay
    // the moment it reports Ready.
    object.applied(ctx, &gathered, &executed);
    written?;
    if let Some((_, error)) = executed.failure {
        return Err(error.into());
    }
    Ok(Requeue::requeue(
        object.requeue_after(ctx, &verdict, &gathered),
    ))
}

/// The Coordinator resource does not exist. Applying waits for it (not a failure: its
/// creation requeues the object). Deleting cannot wait: typically the namespace is being
/// deleted and the Coordinator went first, so waiting would keep the finalizer forever;
/// assume its objects are out of our hands, say so, and let the resource go.
async fn coordinator_missing<K: EngineResource>(
    view: &View<K>,
    ctx: &Context,
    api: &Api<K>,
    deleting: bool,
) -> Result<Requeue, Error> {
    let object = &view.known;
    let namespace = object.namespace().unwrap_or_default();
    let coordinator_name = &object.coordinator_ref().name;
    if !deleting {
        let error = Error::Coordinator {
            namespace,
            name: coordinator_name.clone(),
            message: "not found".to_string(),
        };
        let _ = view.fail(api, ctx, error).await;
        return Ok(Requeue::requeue(next_resync(
            &**object,
            ctx.settings.resync_interval,
        )));
    }
    let (database, name) = object.engine_object();
    ctx.publish(
        &EventSpec::warning(
            "CoordinatorGone",
            "ReleaseFinalizer",
            format!(
                "Coordinator {namespace}/{coordinator_name} no longer exists; the finalizer \
                 is released without touching the engine ({} {name} in database {database} \
                 is left as it is)",
                K::ENGINE_OBJECT
            ),
        ),
        &object.object_ref(&()),
    )
    .await;
    released(&**object, ctx);
    Ok(Requeue::await_change())
}

/// The end of a clean-up pass: the finalizer goes when the planner released the
/// resource; otherwise the status says what holds it.
async fn cleaned_up<K: EngineResource>(
    view: &View<K>,
    ctx: &Context,
    api: &Api<K>,
    gathered: &K::Gathered,
    verdict: Verdict,
    executed: Executed,
) -> Result<Requeue, Error> {
    if let Some((_, error)) = executed.failure {
        return view.fail(api, ctx, error.into()).await;
    }
    let object = &view.known;
    match verdict {
        Verdict::Released => {
            released(&**object, ctx);
            Ok(Requeue::await_change())
        }
        Verdict::NotReady { reason, message } => {
            let blocked = Verdict::NotReady {
                reason,
                message: message.clone(),
            };
            let status = object.status(gathered, &blocked, &executed, ctx.now());
            view.write(api, ctx, status).await?;
            Err(Error::Blocked {
                reason: reason.as_str(),
                message,
            })
        }
        Verdict::Ready => Err(Error::Blocked {
            reason: "Deleting",
            message: "the planner did not release the resource".to_string(),
        }),
    }
}

/// Bookkeeping when the finalizer goes: forget backoff and remembered status, and wake
/// the resources that lost a conflict to this one.
fn released<K: EngineResource>(object: &K, ctx: &Context) {
    K::backoff(ctx).reset(&ObjectRef::from_obj(object));
    if let Some(uid) = object.uid() {
        K::remembered(ctx).forget(&uid);
    }
    object.wake_claimants(ctx);
}

/// What an [`execute`] run did.
#[derive(Debug, Default)]
pub struct Executed {
    /// Actions applied, in order, with their results.
    pub applied: Vec<(Action, Applied)>,
    /// The action that failed and why; later actions were not attempted.
    pub failure: Option<(Action, ClientError)>,
}

/// Applies `actions` in order, stopping at the first failure, and publishes an Event for
/// every engine mutation and for the failure. Each acknowledgement is a step of the pass
/// (`<RPC> acknowledged`). `recorded`: what the resource's status held
/// (owned collection ID, bound alias target), to tell drift correction from ordinary
/// changes. `paused`: apply nothing (the planner already plans nothing for a paused
/// resource; this is the guarantee).
pub async fn execute(
    ctx: &Context,
    clock: PassClock,
    engine: &mut Engine,
    regarding: &ObjectReference,
    actions: Vec<Action>,
    recorded: Option<&str>,
    paused: bool,
) -> Executed {
    let mut executed = Executed::default();
    let object = regarding.name.as_deref().unwrap_or_default();
    if paused {
        if !actions.is_empty() {
            tracing::warn!(
                object,
                planned = actions.len(),
                "paused: not applying planned engine changes"
            );
        }
        return executed;
    }
    for action in actions {
        tracing::debug!(object, call = action.rpc_name(), "engine call sent");
        match engine.apply(&action).await {
            Ok(applied) => {
                clock.step(ctx, &format!("{} acknowledged", action.rpc_name()));
                let event = mutation_event(&action, recorded, &applied);
                tracing::info!(object, reason = %event.reason, "{}", event.note);
                ctx.metrics.mutation(&event_label(&event, &action));
                ctx.recorder.publish(&event, regarding).await;
                executed.applied.push((action, applied));
            }
            Err(error) => {
                tracing::warn!(object, %error, "engine call failed");
                let event = failure_event(action.rpc_name(), &error);
                ctx.recorder.publish(&event, regarding).await;
                executed.failure = Some((action, error));
                break;
            }
        }
    }
    executed
}

/// When a pass of which controller started (its queue wait just ended), to time its steps.
#[derive(Debug, Clone, Copy)]
pub struct PassClock {
    controller: &'static str,
    started: Instant,
}

impl PassClock {
    fn start(controller: &'static str) -> Self {
        Self {
            controller,
            started: Instant::now(),
        }
    }

    /// A step of the pass, with the time since it started: observed in
    /// `collection_operator_pass_step_seconds{controller,step}` (so a deployment can tell
    /// which part of a pass its time goes to) and logged at debug level (with
    /// `RUST_LOG=collection_operator::operator=debug` the path of a change reads from the
    /// watch event through the queue to each engine call and the status write). `what` is
    /// the metric's label: one of a small fixed set, never an object's name.
    fn step(&self, ctx: &Context, what: &str) {
        let since_start = self.started.elapsed();
        ctx.metrics.pass_step(self.controller, what, since_start);
        tracing::debug!(
            controller = self.controller,
            since_start_us = since_start.as_micros() as u64,
            "{what}"
        );
    }
}

/// The metrics label of a mutation: drift corrections apart, else the action's name.
fn event_label(event: &EventSpec, action: &Action) -> String {
    if event.reason == "DriftCorrected" {
        "DriftCorrected".to_string()
    } else {
        action.rpc_name().to_string()
    }
}
