//! Prometheus metrics of the controllers, served on `/metrics` in the OpenMetrics text
//! format: reconcile counts, failures by kind, durations, and engine RPC latency per
//! method (what an operator of this operator needs to tell "Kubernetes is slow" from
//! "the engine is slow").

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
    /// A registry with every metric, prefixed `collection_operator_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("collection_operator");
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
            registry,
            reconciles,
            failures,
            durations,
            rpc,
            actions,
            leader,
        }
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
