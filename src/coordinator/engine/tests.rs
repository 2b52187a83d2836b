//! DDL through a [`DdlLog`]: an in-memory log and a store whose next commit can be made
//! to fail stand in for the control channel and a failing disk.

use std::sync::atomic::AtomicBool;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message;

use super::*;
use crate::meta::change::{Change, DDL_LOG_PREFIX, DDL_WAL_APPLIED_KEY, ddl_log_key};
use crate::meta::names::DEFAULT_DATABASE;
use crate::meta::tso;
use crate::meta::{Ddl, MetaResult, Timestamp};
use crate::proto::records::{DdlRecord, DdlWalEntry, Mutation};
use crate::store::RedbStore;
use crate::store::{MetaStore, StoreError, WriteBatch};

/// An in-memory log: positions are indexes.
#[derive(Default)]
struct MemLog {
    entries: Mutex<Vec<Vec<u8>>>,
    /// Appends the next entry but reports a failure (an unknown outcome).
    lose_next_ack: AtomicBool,
    /// No holder: every call fails.
    unavailable: AtomicBool,
}

impl DdlLog for MemLog {
    fn append(&self, entry: Vec<u8>, _wait: Duration) -> Result<String, String> {
        if self.unavailable.load(Ordering::Acquire) {
            return Err("no holder".into());
        }
        let mut entries = self.entries.lock();
        entries.push(entry);
        if self.lose_next_ack.swap(false, Ordering::AcqRel) {
            return Err("acknowledgement lost".into());
        }
        Ok(format!("{:08}", entries.len() - 1))
    }

    fn read_after(
        &self,
        after: Option<&str>,
        _wait: Duration,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        if self.unavailable.load(Ordering::Acquire) {
            return Err("no holder".into());
        }
        let from = after.map_or(0, |p| p.parse::<usize>().expect("position") + 1);
        let entries = self.entries.lock();
        Ok(entries
            .iter()
            .enumerate()
            .skip(from)
            .map(|(i, e)| (format!("{i:08}"), e.clone()))
            .collect())
    }
}

/// A redb store whose next commit can be made to fail.
struct FlakyStore {
    inner: RedbStore,
    fail_next_commit: AtomicBool,
    /// Refuses the next commit as a fenced etcd transaction would.
    fence_next_commit: AtomicBool,
}

impl MetaStore for FlakyStore {
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_prefix(prefix)
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn commit(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        if self.fence_next_commit.swap(false, Ordering::AcqRel) {
            return Err(StoreError::Fenced(
                "nothing applied; the leader is 10.0.0.7:19530 (id b)".into(),
            ));
        }
        if self.fail_next_commit.swap(false, Ordering::AcqRel) {
            return Err(StoreError::Io {
                context: "test".into(),
                source: std::io::Error::other("injected"),
            });
        }
        self.inner.commit(batch)
    }
}

fn open(store: &Arc<FlakyStore>, log: &Arc<MemLog>) -> Engine {
    let config = EngineConfig {
        ddl_log: Some(DdlLogHandle(log.clone())),
        ddl_log_wait: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let (engine, _) = Engine::open(store.clone(), config).expect("open");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !engine.is_synced() || !has(&engine, DEFAULT_DATABASE) {
        assert!(Instant::now() < deadline, "the writer did not sync");
        std::thread::sleep(Duration::from_millis(5));
    }
    engine
}

fn has(engine: &Engine, database: &str) -> bool {
    engine.read(0, |table, at| table.database(database, at).is_some())
}

fn create(engine: &Engine, name: &str) -> MetaResult<Timestamp> {
    engine.execute_blocking(Ddl::CreateDatabase {
        name: name.into(),
        properties: Vec::new(),
    })
}

fn setup() -> (tempfile::TempDir, Arc<FlakyStore>, Arc<MemLog>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FlakyStore {
        inner: RedbStore::open(dir.path()).expect("redb"),
        fail_next_commit: AtomicBool::new(false),
        fence_next_commit: AtomicBool::new(false),
    });
    (dir, store, Arc::new(MemLog::default()))
}

fn applied(store: &FlakyStore) -> String {
    String::from_utf8(store.get(DDL_WAL_APPLIED_KEY).expect("get").expect("set")).expect("utf8")
}

#[test]
fn ddl_is_logged_before_the_store_and_the_position_is_committed_with_it() {
    let (_dir, store, log) = setup();
    let engine = open(&store, &log);
    create(&engine, "d1").expect("create");
    let entries = log.entries.lock().clone();
    assert_eq!(
        entries.len(),
        1,
        "d1 (default is created at start, as Milvus does)"
    );
    let entry = DdlWalEntry::decode(entries[0].as_slice()).expect("entry");
    assert_eq!(entry.records.len(), 1);
    assert_eq!(entry.records[0].db_name, "d1");
    assert_eq!(applied(&store), "00000000");
}

#[test]
fn an_append_with_an_unknown_outcome_is_completed_before_the_next_ddl() {
    let (_dir, store, log) = setup();
    let engine = open(&store, &log);
    log.lose_next_ack.store(true, Ordering::Release);
    let error = create(&engine, "maybe").expect_err("the ack was lost");
    assert_eq!(error.code, crate::meta::error::code::SERVICE_NOT_READY);
    assert!(!has(&engine, "maybe"), "undone until the sync");
    let next = create(&engine, "next").expect("next");
    assert!(has(&engine, "maybe"), "completed by the sync");
    let maybe_ts = engine.read(0, |t, at| t.database("maybe", at).map(|d| d.created_ts));
    assert!(maybe_ts.expect("maybe") < next, "in log order");
}

#[test]
fn a_failed_store_commit_after_the_append_is_completed_on_restart() {
    let (_dir, store, log) = setup();
    let engine = open(&store, &log);
    let before = create(&engine, "first").expect("first");
    store.fail_next_commit.store(true, Ordering::Release);
    create(&engine, "logged").expect_err("the commit failed");
    engine.shutdown();
    drop(engine);
    let engine = open(&store, &log);
    assert!(has(&engine, "logged"), "completed from the log on restart");
    let after = create(&engine, "after").expect("after");
    assert!(after > before);
    // A duplicate of an applied entry and a record planned against another state are
    // skipped; the log's end is applied.
    let copy = log.entries.lock()[1].clone();
    assert_eq!(
        DdlWalEntry::decode(copy.as_slice()).expect("entry").records[0].db_name,
        "logged"
    );
    let mut stale = DdlWalEntry::decode(copy.as_slice()).expect("entry");
    let stale_ts = tso::compose(tso::now_ms() + 60_000, 0);
    stale.records[0].ts = stale_ts;
    log.entries.lock().push(copy);
    log.entries.lock().push(stale.encode_to_vec());
    engine.shutdown();
    drop(engine);
    let engine = open(&store, &log);
    assert_eq!(engine.read(0, |t, at| t.counts(at)).0, 4);
    assert!(
        engine.committed_ts() < stale_ts,
        "the stale record was skipped"
    );
    assert_eq!(
        applied(&store),
        format!("{:08}", log.entries.lock().len() - 1)
    );
}

#[test]
fn a_late_duplicate_is_skipped_also_after_the_ddl_log_was_compacted() {
    let (_dir, store, log) = setup();
    let engine = open(&store, &log);
    create(&engine, "gone").expect("create");
    let created = log.entries.lock().last().cloned().expect("entry");
    engine
        .execute_blocking(Ddl::DropDatabase {
            name: "gone".into(),
        })
        .expect("drop");
    engine.shutdown();
    drop(engine);
    // A copy of the CreateDatabase lands after the drop (a retried append), and the
    // DDL log is compacted away, so the restart's committed timestamp is 0: the
    // persisted applied timestamp still tells the copy is old.
    log.entries.lock().push(created);
    let mut batch = WriteBatch::default();
    for (key, _) in store.scan_prefix(DDL_LOG_PREFIX).expect("scan") {
        batch.delete(key);
    }
    store.commit(&batch).expect("compact");
    let engine = open(&store, &log);
    assert!(!has(&engine, "gone"), "the dropped database came back");
}

#[test]
fn without_a_holder_ddl_is_refused_with_a_retriable_code_and_works_again_after() {
    let (_dir, store, log) = setup();
    let engine = open(&store, &log);
    log.unavailable.store(true, Ordering::Release);
    let error = create(&engine, "later").expect_err("no holder");
    assert_eq!(error.code, crate::meta::error::code::SERVICE_NOT_READY);
    log.unavailable.store(false, Ordering::Release);
    create(&engine, "later").expect("works again");
    assert!(has(&engine, "later"));
}

/// The DDL log records in the store newer than `after`, oldest first.
fn records_after(store: &FlakyStore, after: Timestamp) -> Vec<DdlRecord> {
    store
        .scan_prefix(DDL_LOG_PREFIX)
        .expect("scan")
        .into_iter()
        .map(|(_, value)| DdlRecord::decode(value.as_slice()).expect("record"))
        .filter(|record| record.ts > after)
        .collect()
}

#[test]
fn a_replica_takes_over_on_the_copy_it_followed_without_reloading() {
    let (_dir, store, _) = setup();
    let (leader, _) = Engine::open(store.clone(), EngineConfig::default()).expect("open");
    create(&leader, "d1").expect("d1");
    let (replica, _) =
        Engine::open_replica(store.clone(), EngineConfig::default()).expect("replica");
    assert_eq!(
        replica.replica_log.lock().records.len(),
        2,
        "default and d1 loaded"
    );
    create(&leader, "d2").expect("d2");
    let last = create(&leader, "d3").expect("d3");
    for record in records_after(&store, replica.committed_ts()) {
        replica.apply_replicated(&record).expect("apply");
    }
    assert_eq!(replica.committed_ts(), last);
    // The leader compacted the oldest record away.
    let oldest = replica
        .replica_log
        .lock()
        .records
        .front()
        .expect("logged")
        .0;
    replica.forget_replicated(oldest);
    leader.shutdown();
    drop(leader);

    // A marker in the store that a reload would bring back, and the copy does not
    // have: taking over must not read the table again.
    let mut batch = WriteBatch::default();
    batch.put(ddl_log_key(last + 1), b"not a record".to_vec());
    store.commit(&batch).expect("commit");
    let stats = replica.take_over().expect("take over");
    assert_eq!(stats.log_records, 3, "d1, d2, d3 remain to compact later");
    assert!(has(&replica, "d3"));
    let next = create(&replica, "d4").expect("the new leader writes");
    assert!(
        next > last,
        "timestamps go on increasing: {next} after {last}"
    );
    // A full reload would have failed on the marker.
    replica.shutdown();
    assert!(matches!(
        replica.start_writer(),
        Err(EngineError::Corrupt(_))
    ));
}

#[test]
fn a_fenced_commit_is_refused_as_retriable_naming_the_leader() {
    let (_dir, store, _) = setup();
    let (engine, _) = Engine::open(store.clone(), EngineConfig::default()).expect("open");
    store.fence_next_commit.store(true, Ordering::Release);
    let refused = create(&engine, "d1").expect_err("fenced");
    assert_eq!(refused.code, crate::meta::error::code::SERVICE_NOT_READY);
    assert_eq!(
        refused.message,
        "service not ready[this coordinator replica is not the leader: nothing applied; \
         the leader is 10.0.0.7:19530 (id b)]"
    );
    assert!(
        !has(&engine, "d1"),
        "nothing of the refused batch is served"
    );
    create(&engine, "d1").expect("the next commit goes through");
}

#[test]
fn history_is_bounded_by_count_on_the_writer_and_on_a_replica() {
    use crate::proto::records::DatabaseRecord;
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn MetaStore> = Arc::new(RedbStore::open(dir.path()).expect("redb"));
    let config = EngineConfig {
        history_max_entries: 10,
        ..EngineConfig::default()
    };
    let (writer, _) = Engine::open(store.clone(), config.clone()).expect("open");
    for _ in 0..50 {
        create(&writer, "w").expect("create");
        writer
            .execute_blocking(Ddl::DropDatabase { name: "w".into() })
            .expect("drop");
    }
    let logged = store.scan_prefix(DDL_LOG_PREFIX).expect("scan").len();
    assert!(
        (10..=11).contains(&logged),
        "{logged} DDL log records kept with a bound of 10"
    );
    writer.shutdown();
    drop(writer);

    let (replica, stats) = Engine::open_replica(store.clone(), config).expect("replica");
    assert_eq!(stats.log_records, logged);
    let base = replica.read(0, |t, at| t.counts(at)).0;
    let first_ts = replica.committed_ts() + 1;
    for i in 0..100u64 {
        let id = 10_000 + i as i64;
        let change = Change::Database {
            id,
            record: Some(Arc::new(DatabaseRecord {
                id,
                name: format!("r{i}"),
                created_ts: first_ts + i,
                properties: Vec::new(),
            })),
        };
        let record = DdlRecord {
            ts: first_ts + i,
            operation: "CreateDatabase".into(),
            db_name: format!("r{i}"),
            target: String::new(),
            mutations: vec![Mutation {
                key: change.key(),
                old_value: None,
                new_value: change.value(),
            }],
        };
        replica.apply_replicated(&record).expect("apply");
    }
    let count_at = |ts| replica.read(ts, |t, at| t.counts(at)).0;
    assert_eq!(
        count_at(first_ts + 95),
        base + 96,
        "inside the bound: exact"
    );
    let oldest = count_at(first_ts);
    assert!(
        oldest >= base + 100 - 12,
        "a read older than the kept history answers as of the oldest kept state: {oldest}"
    );
    assert_eq!(count_at(1), oldest);
}
