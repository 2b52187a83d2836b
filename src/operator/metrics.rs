//! Prometheus metrics of the controllers, served on `/metrics` in the OpenMetrics text
//! format: reconcile counts, failures by kind, durations, time spent queued, and engine
//! RPC latency per method (what an operator of this operator needs to tell "Kubernetes is
//! slow" from "the engine is slow").
//!
//! Beside our own `collection_operator_*` names, the families that operators built on
//! controller-runtime export, with its names, labels and buckets, so that existing
//! dashboards and alerts work unchanged: `controller_runtime_reconcile_total{controller,
//! result}`, `controller_runtime_reconcile_errors_total{controller}` and
//! `controller_runtime_reconcile_time_seconds{controller}` as defined in controller-runtime's
//! `pkg/internal/controller/metrics/metrics.go`; `workqueue_depth`, `workqueue_adds_total`
//! and `workqueue_queue_duration_seconds` (labels `name` and `controller`, both the
//! controller's name) as in its `pkg/metrics/workqueue.go`. kube-runtime keeps no work
//! queue one could read; [`super::queue`] tracks the same quantities around it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `collection`, `collectionalias` or `coordinator`.
    pub controller: String,
}

/// Labels of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The controller.
    pub controller: String,
    /// [`super::Error::metric_label`].
    pub error: String,
}

/// Labels of engine RPC metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// The RPC (`CreateCollection`, `AlterAlias`…; `Observe` for the describe calls of
    /// one observation, `Connect` for a new connection).
    pub method: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// Labels of the pass-step histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// The controller.
    pub controller: String,
    /// The step reached: `engine connection ready`, `engine observed`, `<RPC>
    /// acknowledged` (one per engine mutation, e.g. `AlterAlias acknowledged`), `engine
    /// work done`, `status written`.
    pub step: String,
}

/// Labels of `controller_runtime_reconcile_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// The controller.
    pub controller: String,
    /// `success`, `error`, `requeue` or `requeue_after` (controller-runtime's values).
    pub result: String,
}

/// Labels of the `workqueue_*` families: controller-runtime names each queue after its
/// controller and sets both labels to that name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue (the controller's name).
    pub name: String,
    /// The controller.
    pub controller: String,
}

impl QueueLabels {
    fn of(controller: &str) -> Self {
        Self {
            name: controller.to_string(),
            controller: controller.to_string(),
        }
    }
}

/// What a reconcile came to, as controller-runtime labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Done, nothing scheduled.
    Success,
    /// Failed (the error policy schedules the retry).
    Error,
    /// Asked to run again now.
    Requeue,
    /// Asked to run again after a delay (every resync-driven pass).
    RequeueAfter,
}

impl ReconcileResult {
    /// The `result` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Success => "success",
            ReconcileResult::Error => "error",
            ReconcileResult::Requeue => "requeue",
            ReconcileResult::RequeueAfter => "requeue_after",
        }
    }
}

/// Labels of the engine mutation counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action (`CreateCollection`, `AlterAlias`, `DriftCorrected`…).
    pub action: String,
}

/// All metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabels, Histogram>,
    rpc: Family<RpcLabels, Histogram>,
    actions: Family<ActionLabels, Counter>,
    leader: Gauge,
    queue_wait: Family<ControllerLabels, Histogram>,
    pass_steps: Family<StepLabels, Histogram>,
    runtime_reconciles: Family<ResultLabels, Counter>,
    runtime_errors: Family<ControllerLabels, Counter>,
    runtime_time: Family<ControllerLabels, Histogram>,
    queue_depth: Family<QueueLabels, Gauge>,
    queue_adds: Family<QueueLabels, Counter>,
    queue_duration: Family<QueueLabels, Histogram>,
}

/// controller-runtime's `ReconcileTime` buckets.
const RECONCILE_TIME_BUCKETS: [f64; 40] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0,
    25.0, 30.0, 40.0, 50.0, 60.0,
];

fn reconcile_time_histogram() -> Histogram {
    Histogram::new(RECONCILE_TIME_BUCKETS)
}

fn queue_duration_histogram() -> Histogram {
    // client-go's workqueue latency buckets: 10 ns … 1000 s, ×10.
    Histogram::new(exponential_buckets(10e-9, 10.0, 12))
}

fn queue_wait_histogram() -> Histogram {
    // 100 µs … ~3 s: a trigger normally starts its reconcile within a millisecond.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

fn pass_step_histogram() -> Histogram {
    // 100 µs … ~13 s: most steps of a pass come within a few milliseconds of its start,
    // and the ×2 buckets of the reconcile durations above 1 ms would lump them together.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

fn duration_histogram() -> Histogram {
    // 1 ms … ~32 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric: ours prefixed `collection_operator_`, beside
    /// controller-runtime's families under their own names.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let runtime_reconciles = Family::<ResultLabels, Counter>::default();
        let runtime_errors = Family::<ControllerLabels, Counter>::default();
        let runtime_time = Family::<ControllerLabels, Histogram>::new_with_constructor(
            reconcile_time_histogram as fn() -> Histogram,
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        let queue_adds = Family::<QueueLabels, Counter>::default();
        let queue_duration = Family::<QueueLabels, Histogram>::new_with_constructor(
            queue_duration_histogram as fn() -> Histogram,
        );
        root.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            runtime_reconciles.clone(),
        );
        root.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            runtime_errors.clone(),
        );
        root.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            runtime_time.clone(),
        );
        root.register(
            "workqueue_depth",
            "Current depth of workqueue",
            queue_depth.clone(),
        );
        root.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            queue_adds.clone(),
        );
        root.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            queue_duration.clone(),
        );
        let registry = root.sub_registry_with_prefix("collection_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let rpc = Family::<RpcLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let actions = Family::<ActionLabels, Counter>::default();
        let leader = Gauge::default();
        let queue_wait = Family::<ControllerLabels, Histogram>::new_with_constructor(
            queue_wait_histogram as fn() -> Histogram,
        );
        registry.register(
            "queue_wait_seconds",
            "Time from the trigger of a reconcile (watch event, mapped change, hint, due \
             requeue) to its start",
            queue_wait.clone(),
        );
        let pass_steps = Family::<StepLabels, Histogram>::new_with_constructor(
            pass_step_histogram as fn() -> Histogram,
        );
        registry.register(
            "pass_step_seconds",
            "Time from the start of a reconcile pass (the end of its queue wait) to each of \
             its steps",
            pass_steps.clone(),
        );
        registry.register("reconciles", "Reconcile passes started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile passes that failed, by error kind",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            durations.clone(),
        );
        registry.register(
            "engine_rpc_duration_seconds",
            "Latency of engine RPCs, by method and outcome",
            rpc.clone(),
        );
        registry.register(
            "engine_mutations",
            "Engine mutations applied, by action",
            actions.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (or leader election is off)",
            leader.clone(),
        );
        Self {
            registry: root,
            reconciles,
            failures,
            durations,
            rpc,
            actions,
            leader,
            queue_wait,
            pass_steps,
            runtime_reconciles,
            runtime_errors,
            runtime_time,
            queue_depth,
            queue_adds,
            queue_duration,
        }
    }

    /// A reconcile of `controller` was asked for (and was not already waiting).
    pub fn queue_added(&self, controller: &str) {
        let labels = QueueLabels::of(controller);
        self.queue_adds.get_or_create(&labels).inc();
        self.queue_depth.get_or_create(&labels).inc();
    }

    /// A reconcile of `controller` starts after waiting `waited` since it was asked for.
    pub fn queue_started(&self, controller: &str, waited: Duration) {
        let labels = QueueLabels::of(controller);
        self.queue_depth.get_or_create(&labels).dec();
        self.queue_duration
            .get_or_create(&labels)
            .observe(waited.as_secs_f64());
        self.queue_wait
            .get_or_create(&ControllerLabels {
                controller: controller.to_string(),
            })
            .observe(waited.as_secs_f64());
    }

    /// A requeue of `controller` came due and starts (counted by [`Self::queue_added`],
    /// leaves the depth at once).
    pub fn queue_requeue_started(&self, controller: &str) {
        self.queue_depth
            .get_or_create(&QueueLabels::of(controller))
            .dec();
    }

    /// A reconcile of `controller` ended with `result` after `elapsed`
    /// (controller-runtime's families).
    pub fn reconcile_finished(&self, controller: &str, result: ReconcileResult, elapsed: Duration) {
        let labels = ControllerLabels {
            controller: controller.to_string(),
        };
        self.runtime_reconciles
            .get_or_create(&ResultLabels {
                controller: controller.to_string(),
                result: result.as_str().to_string(),
            })
            .inc();
        if result == ReconcileResult::Error {
            self.runtime_errors.get_or_create(&labels).inc();
        }
        self.runtime_time
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a reconcile pass of `controller` that took `elapsed`.
    pub fn reconciled(&self, controller: &str, elapsed: Duration) {
        let labels = ControllerLabels {
            controller: controller.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A pass of `controller` reached `step` `since_start` after it started.
    pub fn pass_step(&self, controller: &str, step: &str, since_start: Duration) {
        self.pass_steps
            .get_or_create(&StepLabels {
                controller: controller.to_string(),
                step: step.to_string(),
            })
            .observe(since_start.as_secs_f64());
    }

    /// Counts a failed pass.
    pub fn failed(&self, controller: &str, error: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                controller: controller.to_string(),
                error: error.to_string(),
            })
            .inc();
    }

    /// Records one engine RPC.
    pub fn rpc(&self, method: &str, ok: bool, elapsed: Duration) {
        self.rpc
            .get_or_create(&RpcLabels {
                method: method.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one applied engine mutation.
    pub fn mutation(&self, action: &str) {
        self.actions
            .get_or_create(&ActionLabels {
                action: action.to_string(),
            })
            .inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
