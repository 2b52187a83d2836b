//! The etcd store (cargo feature `etcd`): the same keys as the redb store, each under a
//! prefix (default `collection-operator/`), values stored as they are.
//!
//! - [`MetaStore::commit`] is **one** etcd transaction holding every put and delete of the
//!   batch, so a batch is applied entirely or not at all, and is durable (raft-committed and
//!   fsynced by etcd) when it returns. Operations on the same key are collapsed first (the
//!   last one wins, as [`WriteBatch`] specifies; etcd refuses a transaction that names a key
//!   twice).
//! - etcd caps the operations of one transaction (`--max-txn-ops`, default **128**). A batch
//!   is never split, since that would break its atomicity: a batch with more operations than
//!   [`EtcdOptions::max_txn_ops`] fails with an error that says so. The engine writes two
//!   operations per DDL plus at most two (TSO save point, ID allocator) per batch, so the
//!   coordinator caps its batch at [`max_ddls_per_batch`] DDLs on etcd.
//! - [`MetaStore::scan_prefix`] reads in pages of [`EtcdOptions::page_size`] keys, all at the
//!   revision of the first page, so a large meta table loads as one consistent snapshot.
//! - [`MetaStore::checkpoint`] is a no-op: etcd makes every commit durable.
//!
//! The trait is synchronous and the engine calls it from plain threads (its writer thread,
//! and a blocking task at start-up). The store owns a small tokio runtime on which the etcd
//! client lives; each call is spawned there and waited for, so it works from any thread
//! (from an async task it would block that worker: call it from a blocking context).
//!
//! **Write fence.** With several coordinator replicas (see [`crate::coordinator::ha`]),
//! only the elected leader may write. Once [`EtcdStore::arm_fence`] is called, every commit
//! is a transaction that succeeds only if both
//! - the leader key still has the create revision of this leader's election (the key is
//!   bound to the leader's etcd lease, so it is gone the moment the lease ends: a paused or
//!   partitioned leader cannot write after another replica was elected), and
//! - the fence key ([`FENCE_KEY`]) still has the mod revision of this store's last commit
//!   (the *expected revision*: nobody else wrote since, and no earlier commit of ours went
//!   through unseen).
//!
//! Each guarded commit also rewrites the fence key, so it moves on with every batch. A
//! refused transaction writes nothing and is reported as [`StoreError::Fenced`], naming the
//! leader the key holds at that moment (read in the same transaction), so that the refusal
//! tells a client where to retry; the HA loop is woken through [`EtcdStore::fence_broken`] to find out whether it is still the
//! leader (then it reloads what etcd holds, which also settles an ambiguous earlier
//! commit — a timeout after etcd applied it) or must step down.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{MetaStore, Snapshot, StoreError, WriteBatch};

/// The default key prefix in etcd.
pub const DEFAULT_PREFIX: &str = "collection-operator/";
/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// The key (under the prefix) every guarded commit rewrites; its mod revision is the
/// expected revision of the next commit.
pub const FENCE_KEY: &str = "coordinator/fence";
/// The key (under the prefix) the elected leader holds, bound to its lease.
pub const LEADER_KEY: &str = "coordinator/leader";
/// Operations of a transaction the store adds itself: the fence key.
const STORE_OPS_PER_COMMIT: usize = 1;
/// Store operations per batch that are not DDL changes: the TSO save point and the ID
/// allocator.
const FIXED_OPS_PER_BATCH: usize = 2;
/// Store operations per DDL: its one meta change and its DDL log record.
const OPS_PER_DDL: usize = 2;
/// Largest response the client decodes (a scan page of big collection records).
const MAX_DECODING_BYTES: usize = 64 * 1024 * 1024;

/// The value of the leader key: who leads, and where clients reach it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaderRecord {
    /// The leader's member id.
    pub id: String,
    /// The leader's advertised gRPC address.
    pub address: String,
}

impl LeaderRecord {
    /// Decodes the leader key's value; `None` if it is not a leader record.
    pub fn decode(value: &[u8]) -> Option<Self> {
        serde_json::from_slice(value).ok()
    }

    /// How a refusal names the leader, or says that none is elected.
    pub fn describe(leader: Option<&Self>) -> String {
        match leader {
            Some(leader) => format!("the leader is {} (id {})", leader.address, leader.id),
            None => "no leader is elected yet".to_string(),
        }
    }
}

/// The most DDLs one engine batch may carry so that its commit, with the fence key, fits
/// in one etcd transaction of at most `max_txn_ops` operations (62 for etcd's default of
/// 128).
pub fn max_ddls_per_batch(max_txn_ops: usize) -> usize {
    (max_txn_ops.saturating_sub(STORE_OPS_PER_COMMIT + FIXED_OPS_PER_BATCH) / OPS_PER_DDL).max(1)
}

/// Connection and size settings of the etcd store.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// The server's `--max-txn-ops`; larger batches are refused before they are sent.
    pub max_txn_ops: usize,
    /// Keys per range request of a scan.
    pub page_size: usize,
    /// Deadline of each etcd request.
    pub request_timeout: Duration,
    /// Deadline of establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            page_size: 1000,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// An etcd-backed [`MetaStore`].
pub struct EtcdStore {
    client: Client,
    kv: KvClient,
    prefix: String,
    options: EtcdOptions,
    fence: Mutex<Option<WriteFence>>,
    fence_broken: Arc<Notify>,
    /// Held across a guarded transaction: two writers of this process (the meta writer and
    /// the streaming coordinator) must not race for the same expected revision, or the
    /// loser would look like a deposed leader.
    commit_order: Mutex<()>,
    runtime: OwnedRuntime,
}

/// What a guarded commit compares (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WriteFence {
    /// Create revision of the leader key this process holds.
    leader_revision: i64,
    /// Mod revision the fence key must still have.
    expected_revision: i64,
}

/// The store's runtime; shut down without waiting when dropped, so that the store (or a
/// failed connect) may be dropped anywhere, async contexts included.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

fn etcd_error(context: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> StoreError {
    let context = context.into();
    move |error| StoreError::Io {
        context: format!("etcd: {context}"),
        source: std::io::Error::other(error),
    }
}

fn store_error(context: impl Into<String>, message: impl Into<String>) -> StoreError {
    StoreError::Io {
        context: format!("etcd: {}", context.into()),
        source: std::io::Error::other(message.into()),
    }
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` of a
/// prefix); `\0` means "to the end of the key space".
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connects with default options.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        Self::connect_with(endpoints, prefix, EtcdOptions::default()).await
    }

    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`) and checks that etcd answers.
    /// Every key of the store is `prefix` + the meta key.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        options: EtcdOptions,
    ) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(store_error("connecting", "no endpoints given"));
        }
        if options.max_txn_ops == 0 || options.page_size == 0 {
            return Err(store_error(
                "connecting",
                "max_txn_ops and page_size must be positive",
            ));
        }
        let runtime = OwnedRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("etcd-store")
                .enable_all()
                .build()
                .map_err(|source| StoreError::Io {
                    context: "starting the etcd client runtime".into(),
                    source,
                })?,
        ));
        let described = endpoints.join(",");
        let connect_options = ConnectOptions::new()
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.connect_timeout);
        let endpoints = endpoints.to_vec();
        let Some(handle) = runtime.0.as_ref().map(|r| r.handle().clone()) else {
            return Err(store_error("connecting", "no runtime"));
        };
        let connected = handle.spawn(async move {
            let mut client = Client::connect(endpoints, Some(connect_options)).await?;
            // A cheap request, so that an unreachable etcd is reported now.
            client.status().await?;
            Ok::<_, etcd_client::Error>(client)
        });
        let client = match connected.await {
            Ok(result) => result.map_err(etcd_error(format!("connecting to {described}")))?,
            Err(join) => {
                return Err(store_error(
                    format!("connecting to {described}"),
                    join.to_string(),
                ));
            }
        };
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_DECODING_BYTES);
        Ok(Self {
            client,
            kv,
            prefix: prefix.to_string(),
            options,
            fence: Mutex::new(None),
            fence_broken: Arc::new(Notify::new()),
            commit_order: Mutex::new(()),
            runtime,
        })
    }

    /// The etcd client (cheap to clone), for leases, elections and watches. Its
    /// connections live on the store's runtime; it may be used from any runtime.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Guards every later commit with the leader key created at `leader_revision` and the
    /// fence key's current mod revision (read now). Called by a replica that has just won
    /// the election, before it loads the meta table.
    pub async fn arm_fence(&self, leader_revision: i64) -> Result<(), StoreError> {
        let mut kv = self.kv.clone();
        let key = self.full_key(FENCE_KEY);
        let expected_revision = kv
            .get(key, None)
            .await
            .map_err(etcd_error("reading the write fence"))?
            .kvs()
            .first()
            .map_or(0, |entry| entry.mod_revision());
        *self.fence.lock() = Some(WriteFence {
            leader_revision,
            expected_revision,
        });
        Ok(())
    }

    /// Stops guarding commits (the replica stepped down; it does not write any more).
    pub fn disarm_fence(&self) {
        self.fence.lock().take();
    }

    /// Notified whenever etcd refuses a guarded commit.
    pub fn fence_broken(&self) -> Arc<Notify> {
        self.fence_broken.clone()
    }

    /// The full etcd key of a store key.
    pub fn etcd_key(&self, key: &str) -> Vec<u8> {
        self.full_key(key)
    }

    /// The key prefix in etcd.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The settings the store was opened with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// Runs `work` on the store's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        context: &str,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let runtime = self
            .runtime
            .0
            .as_ref()
            .ok_or_else(|| store_error(context, "store is closed"))?;
        let handle = runtime.spawn(work);
        match futures::executor::block_on(handle) {
            Ok(result) => result,
            Err(join) => Err(store_error(context, join.to_string())),
        }
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }
}

/// One prefix scan, ready to run on the store's runtime.
struct PrefixScan {
    kv: KvClient,
    start: Vec<u8>,
    end: Vec<u8>,
    strip: usize,
    page_size: usize,
    context: String,
}

impl PrefixScan {
    /// Every key under the prefix as of `revision` (0: now), in pages, all at one
    /// revision; returns it.
    async fn read(mut self, revision: i64) -> Result<(Vec<(String, Vec<u8>)>, i64), StoreError> {
        let mut out = Vec::new();
        // etcd refuses an empty key; "\0" is the first key there is.
        let mut from = if self.start.is_empty() {
            vec![0]
        } else {
            self.start.clone()
        };
        let mut revision = revision;
        loop {
            let mut options = GetOptions::new()
                .with_range(self.end.clone())
                .with_limit(self.page_size as i64);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut response = self
                .kv
                .get(from.clone(), Some(options))
                .await
                .map_err(etcd_error(self.context.clone()))?;
            if revision == 0 {
                revision = response.header().map_or(0, |h| h.revision());
            }
            let more = response.more();
            let kvs = response.take_kvs();
            let Some(last) = kvs.last() else { break };
            from = last.key().to_vec();
            from.push(0);
            for entry in kvs {
                let (key, value) = entry.into_key_value();
                let key = String::from_utf8(key).map_err(|e| {
                    store_error(self.context.clone(), format!("a key is not UTF-8: {e}"))
                })?;
                let key = key.get(self.strip..).unwrap_or_default().to_string();
                out.push((key, value));
            }
            if !more {
                break;
            }
        }
        Ok((out, revision))
    }
}

impl EtcdStore {
    fn scanner(&self, prefix: &str) -> PrefixScan {
        let start = self.full_key(prefix);
        PrefixScan {
            kv: self.kv.clone(),
            end: prefix_end(&start),
            start,
            strip: self.prefix.len(),
            page_size: self.options.page_size,
            context: format!("scanning {prefix:?}"),
        }
    }
}

impl MetaStore for EtcdStore {
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let scan = self.scanner(prefix);
        self.run(
            &scan.context.clone(),
            async move { Ok(scan.read(0).await?.0) },
        )
    }

    fn snapshot(&self, prefixes: &[&str]) -> Result<Snapshot, StoreError> {
        let scans: Vec<PrefixScan> = prefixes.iter().map(|p| self.scanner(p)).collect();
        self.run("reading a snapshot", async move {
            let mut snapshot = Snapshot::default();
            for scan in scans {
                // The first scan fixes the revision; the others read as of it.
                let (entries, revision) = scan.read(snapshot.revision).await?;
                snapshot.revision = revision;
                snapshot.entries.push(entries);
            }
            Ok(snapshot)
        })
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let full = self.full_key(key);
        let mut kv = self.kv.clone();
        let context = format!("reading {key:?}");
        self.run(&context.clone(), async move {
            let mut response = kv.get(full, None).await.map_err(etcd_error(context))?;
            Ok(response
                .take_kvs()
                .into_iter()
                .next()
                .map(|entry| entry.into_key_value().1))
        })
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        // The last op on each key wins; keep them in the order of their last occurrence.
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(batch.ops.len());
        for (index, op) in batch.ops.iter().enumerate() {
            last.insert(op.key.as_str(), index);
        }
        let ops: Vec<TxnOp> = batch
            .ops
            .iter()
            .enumerate()
            .filter(|(index, op)| last.get(op.key.as_str()) == Some(index))
            .map(|(_, op)| match &op.value {
                Some(value) => TxnOp::put(self.full_key(&op.key), value.clone(), None),
                None => TxnOp::delete(self.full_key(&op.key), None),
            })
            .collect();
        if ops.is_empty() {
            return Ok(());
        }
        let limit = self
            .options
            .max_txn_ops
            .saturating_sub(STORE_OPS_PER_COMMIT);
        if ops.len() > limit {
            return Err(store_error(
                "committing a batch",
                format!(
                    "{} operations exceed the {limit} a transaction can carry (etcd \
                     --max-txn-ops {} minus the fence key); the batch is not split, so \
                     that it stays atomic",
                    ops.len(),
                    self.options.max_txn_ops
                ),
            ));
        }
        let count = ops.len();
        let mut kv = self.kv.clone();
        let context = format!("committing a batch of {count} operations");
        let _in_order = self.commit_order.lock();
        let fence = *self.fence.lock();
        let txn = match fence {
            None => Txn::new().and_then(ops),
            Some(fence) => {
                let mut ops = ops;
                ops.push(TxnOp::put(self.full_key(FENCE_KEY), Vec::new(), None));
                // The failure branch reads who leads now, for the refusal.
                Txn::new()
                    .when(vec![
                        Compare::create_revision(
                            self.full_key(LEADER_KEY),
                            CompareOp::Equal,
                            fence.leader_revision,
                        ),
                        Compare::mod_revision(
                            self.full_key(FENCE_KEY),
                            CompareOp::Equal,
                            fence.expected_revision,
                        ),
                    ])
                    .and_then(ops)
                    .or_else(vec![TxnOp::get(self.full_key(LEADER_KEY), None)])
            }
        };
        let response = self.run(&context.clone(), async move {
            kv.txn(txn).await.map_err(etcd_error(context))
        })?;
        if response.succeeded() {
            if let Some(fence) = fence {
                let revision = response.header().map_or(0, |h| h.revision());
                let mut current = self.fence.lock();
                // Unless the fence was disarmed or re-armed meanwhile.
                if *current == Some(fence) {
                    *current = Some(WriteFence {
                        expected_revision: revision,
                        ..fence
                    });
                }
            }
            return Ok(());
        }
        // Only a guarded transaction has a failure branch.
        self.fence_broken.notify_one();
        let leader = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .and_then(|kv| LeaderRecord::decode(kv.value())),
            _ => None,
        });
        Err(StoreError::Fenced(format!(
            "etcd refused the transaction and applied none of it (the leadership lease \
             ended, or another writer committed); {}",
            LeaderRecord::describe(leader.as_ref())
        )))
    }

    fn max_ops_per_commit(&self) -> Option<usize> {
        Some(
            self.options
                .max_txn_ops
                .saturating_sub(STORE_OPS_PER_COMMIT)
                .max(1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn batch_cap_fits_the_default_limit() {
        let ddls = max_ddls_per_batch(DEFAULT_MAX_TXN_OPS);
        assert_eq!(ddls, 62);
        assert!(
            ddls * OPS_PER_DDL + FIXED_OPS_PER_BATCH + STORE_OPS_PER_COMMIT <= DEFAULT_MAX_TXN_OPS
        );
        assert_eq!(max_ddls_per_batch(1), 1);
    }
}
