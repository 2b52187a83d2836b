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
//! Not here yet (the rest of issue 6): leases, leader election, and guarding commits with
//! the expected revision. An ambiguous failure (a timeout after etcd received the
//! transaction) is reported as a failure although etcd may have applied it; the next start
//! reads what etcd holds.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};

use super::{MetaStore, StoreError, WriteBatch};

/// The default key prefix in etcd.
pub const DEFAULT_PREFIX: &str = "collection-operator/";
/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Store operations per batch that are not DDL changes: the TSO save point and the ID
/// allocator.
const FIXED_OPS_PER_BATCH: usize = 2;
/// Store operations per DDL: its one meta change and its DDL log record.
const OPS_PER_DDL: usize = 2;
/// Largest response the client decodes (a scan page of big collection records).
const MAX_DECODING_BYTES: usize = 64 * 1024 * 1024;

/// The most DDLs one engine batch may carry so that its commit fits in one etcd transaction
/// of at most `max_txn_ops` operations (63 for etcd's default of 128).
pub fn max_ddls_per_batch(max_txn_ops: usize) -> usize {
    (max_txn_ops.saturating_sub(FIXED_OPS_PER_BATCH) / OPS_PER_DDL).max(1)
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
    kv: KvClient,
    prefix: String,
    options: EtcdOptions,
    runtime: OwnedRuntime,
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
            kv,
            prefix: prefix.to_string(),
            options,
            runtime,
        })
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

impl MetaStore for EtcdStore {
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = self.full_key(prefix);
        let end = prefix_end(&start);
        let strip = self.prefix.len();
        let page_size = self.options.page_size;
        let mut kv = self.kv.clone();
        let context = format!("scanning {prefix:?}");
        self.run(&context.clone(), async move {
            let mut out = Vec::new();
            // etcd refuses an empty key; "\0" is the first key there is.
            let mut from = if start.is_empty() { vec![0] } else { start };
            let mut revision = 0i64;
            loop {
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(page_size as i64);
                if revision > 0 {
                    options = options.with_revision(revision);
                }
                let mut response = kv
                    .get(from.clone(), Some(options))
                    .await
                    .map_err(etcd_error(context.clone()))?;
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
                        store_error(context.clone(), format!("a key is not UTF-8: {e}"))
                    })?;
                    let key = key.get(strip..).unwrap_or_default().to_string();
                    out.push((key, value));
                }
                if !more {
                    break;
                }
            }
            Ok(out)
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
        if ops.len() > self.options.max_txn_ops {
            return Err(store_error(
                "committing a batch",
                format!(
                    "{} operations exceed the etcd transaction limit of {} (etcd \
                     --max-txn-ops); the batch is not split, so that it stays atomic",
                    ops.len(),
                    self.options.max_txn_ops
                ),
            ));
        }
        let count = ops.len();
        let mut kv = self.kv.clone();
        let context = format!("committing a batch of {count} operations");
        self.run(&context.clone(), async move {
            let response = kv
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(etcd_error(context.clone()))?;
            // No comparisons: the transaction always takes its success branch.
            if response.succeeded() {
                Ok(())
            } else {
                Err(store_error(context, "transaction was not applied"))
            }
        })
    }

    fn max_ops_per_commit(&self) -> Option<usize> {
        Some(self.options.max_txn_ops)
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
        assert_eq!(ddls, 63);
        assert!(ddls * OPS_PER_DDL + FIXED_OPS_PER_BATCH <= DEFAULT_MAX_TXN_OPS);
        assert_eq!(max_ddls_per_batch(1), 1);
    }
}
