//! What a controller's work queue would report, tracked around kube-runtime's scheduler
//! (which exposes none): when each object was asked to be reconciled, how long it waited
//! until its reconcile started, how long that took and how it ended. Feeds the
//! `workqueue_*` and `controller_runtime_*` families and our own queue-wait histogram
//! ([`super::metrics`]), and logs the path of a change at debug level: trigger received →
//! reconcile started (with its wait) → finished (with its duration and result); the pass
//! itself logs its steps in [`super::pass`].
//!
//! Semantics follow client-go's work queue: an object asked for while it already waits is
//! one item (the wait counts from the first ask); an object asked for while its reconcile
//! runs waits for that one to end (kube-runtime never runs two reconciles of one object
//! at once); a requeue (after a delay, or the error policy's retry) becomes an add when it
//! comes due. kube-runtime keeps the delay of a requeue private, so such a start is
//! counted as an add but not timed: its wait is the scheduler's, not a queue's.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action as Requeue;
use parking_lot::Mutex;

use super::metrics::{Metrics, ReconcileResult};

/// Waiting asks kept before old ones are looked at for forgetting.
const FORGET_ABOVE: usize = 4096;

/// An ask older than this is dropped once the map is large: no reconcile waits this long.
const FORGOTTEN_AFTER: Duration = Duration::from_secs(600);

/// The queue of one controller, keyed by the object reference's text.
pub struct WorkQueue {
    controller: &'static str,
    metrics: Arc<Metrics>,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// Asked for, not started yet: since when.
    waiting: HashMap<String, Instant>,
}

impl WorkQueue {
    /// An empty queue of `controller`.
    pub fn new(controller: &'static str, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            controller,
            metrics,
            state: Mutex::new(QueueState::default()),
        })
    }

    /// A reconcile of `object` was asked for by `cause` (a watch event, a mapped change of
    /// another object, a hint).
    pub fn add(&self, object: &impl Display, cause: &'static str) {
        let key = object.to_string();
        let added = {
            let mut state = self.state.lock();
            if state.waiting.len() >= FORGET_ABOVE {
                // An object deleted before its reconcile started never starts: forget
                // old asks so the map does not grow with the objects ever deleted.
                state
                    .waiting
                    .retain(|_, since| since.elapsed() < FORGOTTEN_AFTER);
            }
            match state.waiting.entry(key) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(Instant::now());
                    true
                }
            }
        };
        tracing::debug!(
            controller = self.controller,
            %object,
            cause,
            queued = added,
            "reconcile requested"
        );
        if added {
            self.metrics.queue_added(self.controller);
        }
    }

    /// The reconcile of `key` starts: how long it waited since it was asked for (`None`:
    /// a requeue came due).
    fn start(&self, key: &str) -> Option<Duration> {
        let since = self.state.lock().waiting.remove(key);
        match since {
            Some(since) => {
                let waited = since.elapsed();
                self.metrics.queue_started(self.controller, waited);
                Some(waited)
            }
            None => {
                self.metrics.queue_added(self.controller);
                self.metrics.queue_requeue_started(self.controller);
                None
            }
        }
    }

    /// Runs one reconcile of `object` through `reconcile`, timing its wait and its run.
    pub async fn run<E: Display>(
        self: Arc<Self>,
        object: String,
        reconcile: impl Future<Output = Result<Requeue, E>>,
    ) -> Result<Requeue, E> {
        let waited = self.start(&object);
        tracing::debug!(
            controller = self.controller,
            %object,
            queue_wait_us = waited.map(|w| w.as_micros() as u64),
            "reconcile started"
        );
        let started = Instant::now();
        let result = reconcile.await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Err(_) => ReconcileResult::Error,
            Ok(requeue) if *requeue == Requeue::await_change() => ReconcileResult::Success,
            Ok(requeue) if *requeue == Requeue::requeue(Duration::ZERO) => ReconcileResult::Requeue,
            Ok(_) => ReconcileResult::RequeueAfter,
        };
        self.metrics
            .reconcile_finished(self.controller, outcome, elapsed);
        match &result {
            Ok(_) => tracing::debug!(
                controller = self.controller,
                %object,
                elapsed_us = elapsed.as_micros() as u64,
                result = outcome.as_str(),
                "reconcile finished"
            ),
            Err(error) => tracing::debug!(
                controller = self.controller,
                %object,
                elapsed_us = elapsed.as_micros() as u64,
                %error,
                "reconcile failed"
            ),
        }
        result
    }
}
