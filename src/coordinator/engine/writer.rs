//! The single writer: batches queued jobs, plans each against the newest state, commits
//! the batch in one store transaction (group commit), and only then raises the committed
//! timestamp and answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::oneshot;

use crate::meta::change::{
    DDL_WAL_APPLIED_KEY, DDL_WAL_APPLIED_TS_KEY, ID_ALLOCATOR_KEY, TSO_KEY, ddl_log_key,
};
use crate::meta::names::DEFAULT_DATABASE;
use crate::meta::tso::{self, Tso};
use crate::meta::{Ddl, MetaError, MetaResult, PlanContext, Timestamp};
use crate::proto::records::{DdlRecord, DdlWalEntry, Mutation};
use crate::store::{MetaStore, StoreError, WriteBatch};

use super::compaction::{RetainedLog, history_horizon};
use super::ddl_log::{DdlLog, FAILPOINT_ENV};
use super::recovery::RecoveryStats;
use super::{Engine, EngineConfig, EngineError, FIRST_ID, Job, Shared, decode_u64};

/// How often a writer that is not synced with the control channel tries again while idle.
const SYNC_RETRY: Duration = Duration::from_millis(500);

/// An idle writer that cannot sync says so this often.
const SYNC_WARN_AFTER: Duration = Duration::from_secs(10);

pub(super) struct Writer {
    pub(super) store: Arc<dyn MetaStore>,
    pub(super) shared: Arc<Shared>,
    pub(super) tso: Tso,
    pub(super) next_id: i64,
    /// The DDL log records in the store.
    pub(super) log: RetainedLog,
    pub(super) config: EngineConfig,
    pub(super) last_compaction: Instant,
    /// The control channel, when DDL goes through the WAL.
    pub(super) ddl_log: Option<Arc<dyn DdlLog>>,
    /// Whether every WAL entry is applied (always true without a log).
    pub(super) synced: bool,
    /// Since when failed syncs are counted, or when one was last logged.
    pub(super) sync_warned: Option<Instant>,
    /// The `ddl-after-append` failpoint.
    pub(super) abort_after_append: bool,
}

impl Engine {
    /// Makes this engine the writer: reloads the meta table from the store (a replica's
    /// copy may trail it), resumes the TSO above the persisted high-water mark and the ID
    /// allocator, starts the writer thread, and creates `default` on a new store. Does
    /// nothing but report when the writer already runs.
    pub fn start_writer(&self) -> Result<RecoveryStats, EngineError> {
        self.start(true)
    }

    pub(super) fn start(&self, reload: bool) -> Result<RecoveryStats, EngineError> {
        if self.is_writer() {
            return Ok(RecoveryStats {
                records: 0,
                log_records: 0,
                elapsed: Duration::ZERO,
                revision: 0,
            });
        }
        let bound = self
            .store
            .get(TSO_KEY)?
            .as_deref()
            .and_then(decode_u64)
            .unwrap_or(0);
        let next_id = self
            .store
            .get(ID_ALLOCATOR_KEY)?
            .as_deref()
            .and_then(decode_u64)
            .map_or(FIRST_ID, |id| id as i64);
        let (log, stats) = if reload {
            *self.replica_log.lock() = RetainedLog::default();
            self.load()?
        } else {
            let started = Instant::now();
            let log = std::mem::take(&mut *self.replica_log.lock());
            let stats = RecoveryStats {
                records: 0,
                log_records: log.records.len(),
                elapsed: started.elapsed(),
                revision: 0,
            };
            (log, stats)
        };
        let (sender, receiver) = mpsc::channel();
        let ddl_log = self.config.ddl_log.as_ref().map(|handle| handle.0.clone());
        let mut writer = Writer {
            store: self.store.clone(),
            shared: self.shared.clone(),
            tso: Tso::recover(bound),
            next_id,
            log,
            config: self.config.clone(),
            last_compaction: Instant::now(),
            synced: ddl_log.is_none(),
            ddl_log,
            sync_warned: None,
            abort_after_append: std::env::var(FAILPOINT_ENV).as_deref() == Ok("ddl-after-append"),
        };
        let missing_default = || {
            self.read(0, |table, at| {
                table.database(DEFAULT_DATABASE, at).is_none()
            })
        };
        if writer.ddl_log.is_some() && missing_default() {
            // A new store gets `default` straight away, as Milvus's RootCoord creates it
            // at init, so that clients can connect before a streaming node holds the
            // control channel. Every other DDL goes through the channel.
            let ddl_log = writer.ddl_log.take();
            let (reply, mut answer) = oneshot::channel();
            writer.process(vec![Job::Ddl {
                ddl: Box::new(Ddl::CreateDatabase {
                    name: DEFAULT_DATABASE.into(),
                    properties: Vec::new(),
                }),
                reply,
            }]);
            writer.ddl_log = ddl_log;
            if let Ok(Err(error)) = answer.try_recv() {
                return Err(EngineError::Bootstrap(error));
            }
        }
        let handle = std::thread::Builder::new()
            .name("meta-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|source| StoreError::Io {
                context: "starting the meta writer thread".into(),
                source,
            })?;
        *self.jobs.lock() = Some(sender);
        *self.writer.lock() = Some(handle);
        if missing_default() {
            self.execute_blocking(Ddl::CreateDatabase {
                name: DEFAULT_DATABASE.into(),
                properties: Vec::new(),
            })
            .map_err(EngineError::Bootstrap)?;
        }
        Ok(stats)
    }

    /// Stops writing: refuses new DDL with `refusal`, lets the writer finish what is
    /// queued (a fenced store refuses those commits) and waits for it. Reads go on.
    pub fn stop_writer(&self, refusal: &str) {
        *self.refusal.lock() = refusal.to_string();
        self.jobs.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
    }

    /// Whether the writer runs and, with DDL through the WAL, has synced with the control
    /// channel (completed every interrupted DDL): DDL is answered without waiting.
    pub fn is_synced(&self) -> bool {
        self.is_writer() && self.shared.synced.load(Ordering::Acquire)
    }

    /// Whether the writer thread runs.
    pub fn is_writer(&self) -> bool {
        self.jobs.lock().is_some()
    }
}

impl Writer {
    fn run(&mut self, receiver: mpsc::Receiver<Job>) {
        let synced = self.synced;
        self.set_synced(synced);
        loop {
            let idle_wait = if self.synced {
                self.config.compaction_interval
            } else {
                SYNC_RETRY
            };
            let first = match receiver.recv_timeout(idle_wait) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if !self.synced {
                // Waiting jobs may wait the whole bound; otherwise try briefly and again
                // soon (and notice a stop in time).
                let wait = if first.is_some() {
                    self.config.ddl_log_wait
                } else {
                    SYNC_RETRY
                };
                if let Err(error) = self.sync(wait) {
                    // A start or a failover takes a moment (a node's lease must lapse):
                    // say so when a DDL is refused, or every 10 s of waiting.
                    let since = *self.sync_warned.get_or_insert_with(Instant::now);
                    if first.is_some() || since.elapsed() >= SYNC_WARN_AFTER {
                        self.sync_warned = Some(Instant::now());
                        tracing::warn!(%error, "DDL cannot sync with the control channel yet; DDL waits");
                    } else {
                        tracing::debug!(%error, "DDL waits for the control channel");
                    }
                    if let Some(first) = first {
                        let refusal = MetaError::not_ready(&format!(
                            "DDL goes through the WAL and the control channel is not reachable: {error}"
                        ));
                        for job in self.batch(first, &receiver) {
                            let _ = match job {
                                Job::Ddl { reply, .. } | Job::Timestamp { reply } => {
                                    reply.send(Err(refusal.clone()))
                                }
                            };
                        }
                    }
                    continue;
                }
            }
            let Some(first) = first else {
                self.maybe_compact();
                continue;
            };
            let jobs = self.batch(first, &receiver);
            self.process(jobs);
            self.maybe_compact();
        }
        self.shared.synced.store(false, Ordering::Release);
        if let Err(error) = self.store.checkpoint() {
            tracing::warn!(%error, "final checkpoint failed; the next start replays the commit log");
        }
        tracing::debug!("meta writer stopped");
    }

    pub(super) fn set_synced(&mut self, synced: bool) {
        if synced {
            self.sync_warned = None;
        }
        self.synced = synced;
        self.shared.synced.store(synced, Ordering::Release);
    }

    /// `first` and what else is queued, up to a batch.
    fn batch(&self, first: Job, receiver: &mpsc::Receiver<Job>) -> Vec<Job> {
        let mut jobs = vec![first];
        while jobs.len() < self.config.max_batch {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        jobs
    }

    pub(super) fn process(&mut self, jobs: Vec<Job>) {
        let committed = self.shared.committed.load(Ordering::Acquire);
        let previous_bound = self.tso.persisted_bound_ms();
        let first_id = self.next_id;
        let allocation = self.tso.allocate(tso::now_ms(), jobs.len() as u32);
        let mut batch = WriteBatch::default();
        if let Some(bound) = allocation.persist_bound_ms {
            batch.put(TSO_KEY, bound.to_be_bytes().to_vec());
        }
        let mut touched = Vec::new();
        let mut logged = Vec::new();
        let mut records = Vec::new();
        let mut outcomes: Vec<(
            oneshot::Sender<MetaResult<Timestamp>>,
            MetaResult<Timestamp>,
        )> = Vec::with_capacity(jobs.len());
        {
            let mut table = self.shared.table.write();
            for (offset, job) in jobs.into_iter().enumerate() {
                let ts = allocation.first + offset as u64;
                match job {
                    Job::Timestamp { reply } => {
                        let lease_ended = self
                            .shared
                            .lease_deadline
                            .lock()
                            .is_some_and(|deadline| Instant::now() >= deadline);
                        let outcome = if lease_ended {
                            Err(MetaError::not_ready(
                                "the leadership lease could not be renewed in time",
                            ))
                        } else {
                            Ok(ts)
                        };
                        outcomes.push((reply, outcome));
                    }
                    Job::Ddl { ddl, reply } => {
                        let mut ctx = PlanContext {
                            ts,
                            next_id: &mut self.next_id,
                        };
                        let outcome = table.plan(&ddl, &mut ctx).map(|changes| {
                            if !changes.is_empty() {
                                let (db, target) = ddl.target();
                                let mut record = DdlRecord {
                                    ts,
                                    operation: ddl.operation().into(),
                                    db_name: db.into(),
                                    target: target.into(),
                                    mutations: Vec::with_capacity(changes.len()),
                                };
                                for change in &changes {
                                    let key = change.key();
                                    let new_value = change.value();
                                    let old_value = table.current_value(change);
                                    match &new_value {
                                        Some(value) => batch.put(key.clone(), value.clone()),
                                        None => batch.delete(key.clone()),
                                    }
                                    record.mutations.push(Mutation {
                                        key,
                                        old_value,
                                        new_value,
                                    });
                                    table.apply(change, ts, &mut touched);
                                }
                                let encoded = record.encode_to_vec();
                                logged.push((ts, encoded.len()));
                                batch.put(ddl_log_key(ts), encoded);
                                if self.ddl_log.is_some() {
                                    records.push(record);
                                }
                            }
                            ts
                        });
                        outcomes.push((reply, outcome));
                    }
                }
            }
        }
        if self.next_id != first_id {
            batch.put(
                ID_ALLOCATOR_KEY,
                (self.next_id as u64).to_be_bytes().to_vec(),
            );
        }
        if let Some(ddl_log) = self.ddl_log.clone()
            && !records.is_empty()
        {
            let entry = DdlWalEntry {
                records,
                next_id: self.next_id,
                tso_bound_ms: self.tso.persisted_bound_ms(),
            };
            match ddl_log.append(entry.encode_to_vec(), self.config.ddl_log_wait) {
                Ok(position) => {
                    if self.abort_after_append {
                        tracing::error!(position, "failpoint ddl-after-append: aborting");
                        std::process::abort();
                    }
                    batch.put(DDL_WAL_APPLIED_KEY, position.into_bytes());
                    batch.put(
                        DDL_WAL_APPLIED_TS_KEY,
                        allocation.last.to_be_bytes().to_vec(),
                    );
                }
                Err(error) => {
                    // The entry may be in the log all the same: sync before anything else.
                    tracing::warn!(%error, "appending DDL to the control channel failed; the batch is undone");
                    self.set_synced(false);
                    self.shared.table.write().rollback(&touched, committed);
                    self.tso.persist_failed(previous_bound);
                    self.next_id = first_id;
                    let failure = MetaError::not_ready(&format!(
                        "DDL could not be appended to the control channel (it may still \
                         take effect): {error}"
                    ));
                    for (reply, outcome) in outcomes {
                        let _ = reply.send(outcome.and(Err(failure.clone())));
                    }
                    return;
                }
            }
        }
        if !batch.is_empty()
            && let Err(error) = self.store.commit(&batch)
        {
            tracing::error!(%error, "meta store commit failed; the batch is undone");
            // Through the WAL the batch is logged already: the next sync completes it.
            let synced = self.ddl_log.is_none();
            self.set_synced(synced);
            self.shared.table.write().rollback(&touched, committed);
            self.tso.persist_failed(previous_bound);
            self.next_id = first_id;
            let failure = match &error {
                // Nothing was applied, and another replica leads: retriable, naming it.
                StoreError::Fenced(why) => MetaError::not_ready(&format!(
                    "this coordinator replica is not the leader: {why}"
                )),
                _ => MetaError::store_failure(&error),
            };
            for (reply, outcome) in outcomes {
                let _ = reply.send(outcome.and(Err(failure.clone())));
            }
            return;
        }
        for (ts, size) in logged {
            self.log.push(ts, size);
        }
        self.shared
            .committed
            .store(allocation.last, Ordering::Release);
        for (reply, outcome) in outcomes {
            let _ = reply.send(outcome);
        }
    }

    /// Compacts history every compaction interval, and as soon as the DDL log is over its
    /// count or byte bound (so that what a restart replays stays bounded however fast
    /// DDL arrives).
    pub(super) fn maybe_compact(&mut self) {
        if self.last_compaction.elapsed() < self.config.compaction_interval
            && !self.log.over(&self.config)
        {
            return;
        }
        self.last_compaction = Instant::now();
        let committed = self.shared.committed.load(Ordering::Acquire);
        let by_time = history_horizon(self.config.history_retention, committed);
        let horizon = self.log.horizon(by_time, &self.config);
        self.shared.table.write().compact(horizon);
        self.shared.horizon.fetch_max(horizon, Ordering::AcqRel);
        // Old history need not go atomically: delete it in commits the store accepts
        // (etcd caps the operations of one transaction), oldest first, forgetting each
        // record only once its deletion is durable.
        let chunk = self.store.max_ops_per_commit().unwrap_or(usize::MAX).max(1);
        let mut removed = 0;
        loop {
            let expired: Vec<Timestamp> = self
                .log
                .records
                .iter()
                .map(|(ts, _)| *ts)
                .take_while(|ts| *ts <= horizon)
                .take(chunk)
                .collect();
            if expired.is_empty() {
                break;
            }
            let mut batch = WriteBatch::default();
            for ts in &expired {
                batch.delete(ddl_log_key(*ts));
            }
            if let Err(error) = self.store.commit(&batch) {
                tracing::warn!(%error, "compacting the DDL log failed; will retry");
                break;
            }
            self.log.drop_oldest(expired.len());
            removed += expired.len();
        }
        if removed > 0 {
            tracing::debug!(removed, "compacted the DDL log");
            // A checkpoint now, not at the next write: the deleted history's space is free
            // (and a sparse file compacted) even when no DDL follows.
            if let Err(error) = self.store.checkpoint() {
                tracing::warn!(%error, "checkpoint after compacting the DDL log failed");
            }
        }
    }
}
