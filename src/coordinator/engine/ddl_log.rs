//! **DDL through the WAL** (opt-in, `coordinator --ddl-wal`; always on in `up`): with a
//! [`DdlLog`] configured, the writer first appends the batch's DDL records as one
//! `DdlWalEntry` to the control channel and waits for its acknowledgement (fsync'd on the
//! streaming node), then commits the batch to the store together with the entry's position
//! (`DDL_WAL_APPLIED_KEY`), then answers. So a DDL acknowledged to a client is in the WAL
//! *and* in the store. One interrupted between append and commit (crash, failed commit, an
//! append whose outcome is unknown) is completed by the next **sync**, the re-send of the
//! classic RootCoord design: the writer reads the control channel after the applied
//! position up to its current end and applies each record that is newer than the committed
//! timestamp and the last applied one (`DDL_WAL_APPLIED_TS_KEY`) and whose mutations' old
//! values still match the table (so a duplicate, or a
//! record a deposed writer planned against another state, is skipped). The writer syncs
//! when it starts and after every failed append or commit, before it takes any other job;
//! while it cannot (no streaming node holds the control channel yet), jobs wait up to
//! `EngineConfig::ddl_log_wait` and are then refused with a retriable code 1.

use std::sync::Arc;
use std::time::Duration;

/// The log DDL goes through before the meta store when the WAL path is on: the control
/// channel (see the module docs and `crate::coordinator::ddl_wal`). Calls block; the meta
/// writer is a plain thread.
pub trait DdlLog: Send + Sync {
    /// Appends one entry and returns its position once it is durable. An error leaves the
    /// outcome unknown: the entry may still be in the log.
    fn append(&self, entry: Vec<u8>, wait: Duration) -> Result<String, String>;
    /// Every entry after position `after` (`None`: from the log's start) up to the log's
    /// end as of this call, oldest first, with its position.
    fn read_after(
        &self,
        after: Option<&str>,
        wait: Duration,
    ) -> Result<Vec<(String, Vec<u8>)>, String>;
}

/// A shared [`DdlLog`] inside `EngineConfig`.
#[derive(Clone)]
pub struct DdlLogHandle(pub Arc<dyn DdlLog>);

impl std::fmt::Debug for DdlLogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DdlLog")
    }
}

/// Process-wide test failpoint (environment variable): `ddl-after-append` aborts the process
/// right after a DDL batch was appended to the control channel and before it is committed
/// to the meta store, so that tests can show the next start completes it.
pub const FAILPOINT_ENV: &str = "COLLECTION_OPERATOR_FAILPOINT";
