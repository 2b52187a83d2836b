//! When to look at an object again.
//!
//! * Failures back off per object (exponential, capped), keyed by `ObjectRef` and reset on
//!   success. kube-runtime's `error_policy` is not told about successes and has no per-key
//!   state (kube-rs/kube#1916), so the state lives here, in the controller context.
//! * Successful passes requeue after the object's resync interval (default 60 s, the
//!   `collections.dev/resync-interval` annotation overrides it), jittered so that objects
//!   created together do not poll the engine in lockstep.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;
use rand::Rng;

use crate::crd::RESYNC_INTERVAL_ANNOTATION;

/// The shortest resync interval accepted from an annotation: faster polling would turn a
/// typo into a hot loop against the engine.
pub const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Shape of the exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for BackoffPolicy {
    /// 1 s doubling up to 5 minutes (controller-rs retries after a flat 5 minutes; the
    /// first retries here are fast because most engine failures are brief).
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl BackoffPolicy {
    /// The delay before retry number `attempt` (1-based): `initial · 2^(attempt-1)`, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << exponent).min(self.max)
    }
}

/// Per-object failure counters.
pub struct Backoff<K: Resource>
where
    K::DynamicType: Eq + Hash + Clone,
{
    policy: BackoffPolicy,
    attempts: Mutex<HashMap<ObjectRef<K>, u32>>,
}

impl<K: Resource> Backoff<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Empty counters.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more failure of `object` and returns how long to wait (jittered by up
    /// to ±10 % so that objects failing together do not retry together).
    pub fn next(&self, object: &ObjectRef<K>) -> Duration {
        let attempt = {
            let mut attempts = self.attempts.lock();
            let attempt = attempts.entry(object.clone()).or_insert(0);
            *attempt = attempt.saturating_add(1);
            *attempt
        };
        jitter(self.policy.delay(attempt), 0.1)
    }

    /// Forgets the failures of `object` (after a successful pass or its deletion).
    pub fn reset(&self, object: &ObjectRef<K>) {
        self.attempts.lock().remove(object);
    }

    /// Failures counted for `object` since its last success.
    pub fn attempts(&self, object: &ObjectRef<K>) -> u32 {
        self.attempts.lock().get(object).copied().unwrap_or(0)
    }

    /// The policy in use.
    pub fn policy(&self) -> BackoffPolicy {
        self.policy
    }
}

/// `base` scaled by a random factor in `[1 - spread, 1 + spread]`.
pub fn jitter(base: Duration, spread: f64) -> Duration {
    let spread = spread.clamp(0.0, 1.0);
    if spread == 0.0 || base.is_zero() {
        return base;
    }
    let factor = rand::rng().random_range((1.0 - spread)..=(1.0 + spread));
    base.mul_f64(factor)
}

/// Parses a duration such as `"30s"`, `"5m"`, `"1h"`, `"1m30s"` or `"500ms"` (Go's
/// `time.ParseDuration` units without the sub-millisecond ones, so values written for
/// Crossplane's `poll-interval` carry over).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{text:?}: a number needs a unit (ms, s, m, h)"))?;
        if digits == 0 {
            return Err(format!("{text:?}: expected a number"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m, h)")),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The resync interval of one object: its `collections.dev/resync-interval` annotation
/// if it parses (at least [`MIN_RESYNC_INTERVAL`]), else `default`. A bad value is logged
/// and ignored rather than failing the reconcile: drift correction must keep running.
pub fn resync_interval<K: Resource>(object: &K, default: Duration) -> Duration {
    let Some(value) = object
        .meta()
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(RESYNC_INTERVAL_ANNOTATION))
    else {
        return default;
    };
    match parse_duration(value) {
        Ok(interval) => interval.max(MIN_RESYNC_INTERVAL),
        Err(problem) => {
            tracing::warn!(
                name = object.meta().name.as_deref().unwrap_or_default(),
                annotation = RESYNC_INTERVAL_ANNOTATION,
                %problem,
                "ignoring an invalid resync interval"
            );
            default
        }
    }
}

/// The requeue delay after a successful pass: the resync interval, jittered by ±10 %.
pub fn next_resync<K: Resource>(object: &K, default: Duration) -> Duration {
    jitter(resync_interval(object, default), 0.1)
}

/// How long to wait after a failed pass of `object`, shared by the Collection and
/// CollectionAlias controllers: terminal errors (bad input, name clashes) wait for the
/// resync interval — an edit triggers a pass anyway — others back off exponentially per
/// object. Records the failure metric and logs the outcome.
pub fn after_error<K>(
    object: &K,
    error: &super::error::Error,
    backoff: &Backoff<K>,
    resync_default: Duration,
    metrics: &super::metrics::Metrics,
    controller: &'static str,
) -> Duration
where
    K: Resource<DynamicType = ()>,
{
    metrics.failed(controller, error.metric_label());
    let key = ObjectRef::from_obj(object);
    let delay = if error.is_terminal() {
        next_resync(object, resync_default)
    } else {
        backoff.next(&key)
    };
    match error {
        super::error::Error::Blocked { .. } => {
            tracing::info!(controller, object = %key, %error, retry_in = ?delay, "deletion waits")
        }
        _ => {
            tracing::warn!(controller, object = %key, %error, retry_in = ?delay, "reconcile failed")
        }
    }
    delay
}
