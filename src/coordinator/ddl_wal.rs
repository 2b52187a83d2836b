//! DDL through the WAL: the [`DdlLog`] the meta writer appends to when the coordinator runs
//! with `--ddl-wal` (and always in `up`). It is the **control channel**: the pchannel the
//! streaming coordinator names `cchannel` in its assignment (`by-dev-rootcoord-dml_0`), whose
//! vchannel is `<pchannel>_vcchan`. Each group-committed batch is one message with
//! `_t = ddl`, `_vc = <cchannel vchannel>` and a [`crate::proto::records::DdlWalEntry`]
//! payload; the node acknowledges it after fsync.
//!
//! * **Where.** The holder is read from this process's streaming coordinator (through the
//!   [`StreamingGate`], so an etcd replica finds it only while it leads). No holder yet, a
//!   holder that refuses (moved, fenced) or does not answer: retried until the wait runs
//!   out, then the writer refuses the DDL with a retriable error. A retry after an unknown
//!   outcome may append the entry twice; the replay skips the copy (its records are not
//!   newer than what is committed).
//! * **Reading to the end.** [`DdlLog::read_after`] appends a barrier message
//!   (`_t = ddl_barrier`) and reads from after the applied position until it reaches the
//!   barrier: everything appended before it, by any writer and under any term, is seen.
//!   A log that does not hold the applied position (a pod-local `emptyDir` WAL: the channel
//!   moved and its new holder started a new log) is read from its start instead; entries
//!   not yet applied on the old holder's disk are then lost, but none was acknowledged (a
//!   DDL is acknowledged only after its store commit).
//!
//! The calls block: the meta writer is a plain thread. The gRPC work runs on a small runtime
//! this log owns (as the etcd store does), so it may be called from any thread.

use std::time::{Duration, Instant};

use tokio_stream::StreamExt;

use crate::auth::Credential;
use crate::coordinator::engine::DdlLog;
use crate::proto::common::MessageId;
use crate::proto::streaming::{PChannelInfo, StreamingCode, deliver_policy};
use crate::streaming::client::{self, AssignmentView, Producer};
use crate::streaming::gate::StreamingGate;
use crate::streaming::wal::Position;
use crate::streaming::{PROP_TYPE, PROP_VCHANNEL, cchannel_name};

/// `_t` of a DDL entry on the control channel.
pub const TYPE_DDL: &str = "ddl";
/// `_t` of the barrier a sync appends to find the control channel's end.
pub const TYPE_DDL_BARRIER: &str = "ddl_barrier";

/// How often a missing holder is looked up again.
const POLL: Duration = Duration::from_millis(50);

/// The control channel as a [`DdlLog`].
pub struct ControlChannelLog {
    gate: StreamingGate,
    credential: Option<Credential>,
    runtime: Option<tokio::runtime::Runtime>,
    producer: std::sync::Arc<tokio::sync::Mutex<Option<Cached>>>,
}

/// An open producer and where it writes.
struct Cached {
    address: String,
    channel: PChannelInfo,
    producer: Producer,
}

/// Where the control channel is now, and the credential its holder wants.
#[derive(Clone)]
struct Holder {
    address: String,
    channel: PChannelInfo,
    credential: Option<Credential>,
}

impl ControlChannelLog {
    /// A log on the control channel of the streaming coordinator behind `gate`, presenting
    /// `credential` to the streaming node that holds it.
    pub fn new(gate: StreamingGate, credential: Option<Credential>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ddl-wal")
            .enable_all()
            .build()?;
        Ok(Self {
            gate,
            credential,
            runtime: Some(runtime),
            producer: Default::default(),
        })
    }

    fn holder(gate: &StreamingGate, credential: &Option<Credential>) -> Option<Holder> {
        let view = AssignmentView::from_full(gate.assignment()?.as_ref());
        let placement = view.channels.get(&view.cchannel)?;
        Some(Holder {
            address: placement.address.clone(),
            channel: placement.channel.clone(),
            credential: credential.clone(),
        })
    }

    /// Runs `work` on the log's runtime and waits for it.
    fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, String> {
        let runtime = self.runtime.as_ref().ok_or("the DDL log is closed")?;
        let handle = runtime.spawn(work);
        futures::executor::block_on(handle).map_err(|e| format!("DDL log task: {e}"))?
    }
}

impl Drop for ControlChannelLog {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Appends `message` through the cached producer (opened anew when the holder or its term
/// changed); on failure the producer is dropped so that the next try reconnects.
async fn produce_once(
    cache: &tokio::sync::Mutex<Option<Cached>>,
    holder: &Holder,
    message: crate::proto::messages::Message,
) -> Result<Position, String> {
    let mut cache = cache.lock().await;
    let reusable = cache
        .as_ref()
        .is_some_and(|c| c.address == holder.address && c.channel == holder.channel);
    if !reusable {
        *cache = None;
        let producer = Producer::open_as(
            &holder.address,
            holder.channel.clone(),
            holder.credential.as_ref(),
        )
        .await
        .map_err(|e| format!("opening a producer on {}: {e}", holder.address))?;
        *cache = Some(Cached {
            address: holder.address.clone(),
            channel: holder.channel.clone(),
            producer,
        });
    }
    let Some(cached) = cache.as_mut() else {
        return Err("no producer".into());
    };
    match cached.producer.produce(message).await {
        Ok(result) => {
            let id = result.id.map(|id| id.id).unwrap_or_default();
            Position::parse(&id).map_err(|e| format!("acknowledged position {id:?}: {e}"))
        }
        Err(error) => {
            *cache = None;
            Err(format!(
                "appending to {} on {}: {error}",
                holder.channel.name, holder.address
            ))
        }
    }
}

/// Appends `message` to the control channel, retrying until `deadline`.
async fn produce(
    gate: &StreamingGate,
    credential: &Option<Credential>,
    cache: &tokio::sync::Mutex<Option<Cached>>,
    message: crate::proto::messages::Message,
    deadline: tokio::time::Instant,
) -> Result<(Holder, Position), String> {
    let mut last = "no streaming node holds the control channel".to_string();
    loop {
        if let Some(holder) = ControlChannelLog::holder(gate, credential) {
            let message = with_vchannel(message.clone(), &holder.channel.name);
            match tokio::time::timeout_at(deadline, produce_once(cache, &holder, message)).await {
                Ok(Ok(position)) => return Ok((holder, position)),
                Ok(Err(error)) => last = error,
                Err(_) => {
                    *cache.lock().await = None;
                    last = format!("no acknowledgement from {} in time", holder.address);
                }
            }
        }
        if tokio::time::Instant::now() + POLL >= deadline {
            return Err(last);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn with_vchannel(
    mut message: crate::proto::messages::Message,
    pchannel: &str,
) -> crate::proto::messages::Message {
    message
        .properties
        .insert(PROP_VCHANNEL.into(), cchannel_name(pchannel));
    message
}

/// Reads `holder`'s log after `after` up to `barrier`, keeping the DDL entries.
async fn read_to(
    holder: &Holder,
    after: Option<String>,
    barrier: Position,
    wait: Duration,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let policy = match &after {
        Some(id) => deliver_policy::Policy::StartAfter(MessageId {
            id: id.clone(),
            ..Default::default()
        }),
        None => deliver_policy::Policy::All(()),
    };
    let credential = holder.credential.as_ref();
    let stream = match client::consume_as(&holder.address, holder.channel.clone(), policy, credential)
        .await
    {
        Err(error) if after.is_some() && error.code() == Some(StreamingCode::InvaildArgument) => {
            // The applied position is not in this log: a pod-local WAL (emptyDir) started
            // a new log on the node the channel moved to. Read all of it; what was applied
            // already is skipped by the replay's checks.
            tracing::warn!(
                applied = after.as_deref().unwrap_or_default(),
                %error,
                "the applied DDL position is not in the control channel's log; reading it from the start"
            );
            client::consume_as(
                &holder.address,
                holder.channel.clone(),
                deliver_policy::Policy::All(()),
                credential,
            )
            .await
        }
        other => other,
    }
    .map_err(|e| format!("reading the control channel on {}: {e}", holder.address))?;
    tokio::pin!(stream);
    let mut entries = Vec::new();
    loop {
        let message = match tokio::time::timeout(wait, stream.next()).await {
            Err(_) => return Err("reading the control channel: no progress in time".into()),
            Ok(None) => return Err("the control channel's reader ended early".into()),
            Ok(Some(Err(error))) => return Err(format!("reading the control channel: {error}")),
            Ok(Some(Ok(message))) => message,
        };
        let id = message.id.map(|id| id.id).unwrap_or_default();
        let position = Position::parse(&id).map_err(|e| format!("position {id:?}: {e}"))?;
        if position >= barrier {
            return Ok(entries);
        }
        if message.properties.get(PROP_TYPE).map(String::as_str) == Some(TYPE_DDL) {
            match check_entry(&message.payload, crate::meta::tso::now_ms()) {
                Ok(()) => entries.push((id, message.payload)),
                Err(problem) => tracing::error!(
                    position = id,
                    problem,
                    "refusing an implausible entry on the control channel (not written by a \
                     coordinator): it is skipped"
                ),
            }
        }
    }
}

/// How far ahead of this machine's clock a logged TSO bound or DDL timestamp may be: a
/// writer persists its bound a few seconds ahead, and replicas' clocks differ by less.
pub const MAX_CLOCK_AHEAD_MS: u64 = 3_600_000;
/// Largest ID allocator value an entry may carry (IDs count up by one from
/// [`crate::coordinator::engine::FIRST_ID`]; this leaves room to never wrap).
pub const MAX_NEXT_ID: i64 = 1 << 62;

/// Whether a control-channel entry is one a coordinator could have written at `now_ms`:
/// its TSO bound and timestamps not far in the future, its ID allocator in range. Recovery
/// raises the TSO and the ID allocator to what an entry says, so an entry beyond these
/// bounds (a forged `tso_bound_ms = 2^47` would wrap the timestamps; a huge ID, the IDs)
/// is refused instead of trusted.
pub fn check_entry(payload: &[u8], now_ms: u64) -> Result<(), String> {
    use prost::Message as _;
    let entry = crate::proto::records::DdlWalEntry::decode(payload)
        .map_err(|error| format!("undecodable entry: {error}"))?;
    let latest = now_ms.saturating_add(MAX_CLOCK_AHEAD_MS);
    if entry.tso_bound_ms > latest {
        return Err(format!(
            "TSO bound {} ms is more than {} ms ahead of the clock ({now_ms} ms)",
            entry.tso_bound_ms, MAX_CLOCK_AHEAD_MS
        ));
    }
    if !(0..=MAX_NEXT_ID).contains(&entry.next_id) {
        return Err(format!(
            "ID allocator {} outside 0..={MAX_NEXT_ID}",
            entry.next_id
        ));
    }
    for record in &entry.records {
        let physical = crate::meta::tso::physical_ms(record.ts);
        if physical > latest {
            return Err(format!(
                "DDL timestamp {} (physical {physical} ms) is more than {} ms ahead of the \
                 clock ({now_ms} ms)",
                record.ts, MAX_CLOCK_AHEAD_MS
            ));
        }
    }
    Ok(())
}

impl DdlLog for ControlChannelLog {
    fn append(&self, entry: Vec<u8>, wait: Duration) -> Result<String, String> {
        let gate = self.gate.clone();
        let credential = self.credential.clone();
        let cache = self.producer.clone();
        self.run(async move {
            let deadline = tokio::time::Instant::now() + wait;
            let message = client::message(entry, &[(PROP_TYPE, TYPE_DDL)]);
            let (_, position) = produce(&gate, &credential, &cache, message, deadline).await?;
            Ok(position.to_string())
        })
    }

    fn read_after(
        &self,
        after: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let gate = self.gate.clone();
        let credential = self.credential.clone();
        let cache = self.producer.clone();
        let after = after.map(str::to_string);
        self.run(async move {
            let started = Instant::now();
            let deadline = tokio::time::Instant::now() + wait;
            let barrier = client::message(Vec::new(), &[(PROP_TYPE, TYPE_DDL_BARRIER)]);
            let (holder, barrier) = produce(&gate, &credential, &cache, barrier, deadline).await?;
            let entries =
                read_to(&holder, after, barrier, wait.max(Duration::from_secs(1))).await?;
            tracing::debug!(
                entries = entries.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "read the control channel to its end"
            );
            Ok(entries)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::records::{DdlRecord, DdlWalEntry};
    use prost::Message as _;

    const NOW: u64 = 1_800_000_000_000;

    fn entry(tso_bound_ms: u64, next_id: i64, ts_ms: u64) -> Vec<u8> {
        DdlWalEntry {
            records: vec![DdlRecord {
                ts: crate::meta::tso::compose(ts_ms, 3),
                ..Default::default()
            }],
            next_id,
            tso_bound_ms,
        }
        .encode_to_vec()
    }

    #[test]
    fn entries_a_coordinator_writes_pass() {
        assert_eq!(check_entry(&entry(NOW + 3_000, 101, NOW), NOW), Ok(()));
        // A replica whose clock is a few minutes behind still accepts them.
        assert_eq!(
            check_entry(&entry(NOW + 3_000, 101, NOW), NOW - 300_000),
            Ok(())
        );
    }

    #[test]
    fn forged_bounds_are_refused_with_their_numbers() {
        let wrap = check_entry(&entry(1 << 47, 101, NOW), NOW).expect_err("TSO wrap");
        assert!(wrap.contains(&(1u64 << 47).to_string()), "{wrap}");
        let id = check_entry(&entry(NOW, i64::MAX, NOW), NOW).expect_err("ID wrap");
        assert!(id.contains(&i64::MAX.to_string()), "{id}");
        assert!(check_entry(&entry(NOW, -5, NOW), NOW).is_err());
        let future = check_entry(&entry(NOW, 101, NOW + 2 * MAX_CLOCK_AHEAD_MS), NOW)
            .expect_err("record from the future");
        assert!(future.contains("DDL timestamp"), "{future}");
        assert!(check_entry(b"\xff\xff\xff", NOW).is_err());
    }
}
