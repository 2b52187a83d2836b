use std::os::unix::fs::FileExt;

use super::*;

fn storage(dir: &Path) -> Arc<dyn WalStorage> {
    Arc::new(LocalDirStorage::open(dir).expect("storage"))
}

fn message(text: &str) -> Message {
    Message {
        payload: text.as_bytes().to_vec(),
        properties: Default::default(),
    }
}

/// Every record of the log as `(term, payload or "<start>")`, read by a holder at `term`.
async fn read_all(storage: Arc<dyn WalStorage>, term: i64) -> Vec<(i64, String)> {
    let wal = Wal::open(storage, "ch", term, WalConfig::default()).expect("open");
    let mut reader = wal.reader(ReadFrom::Beginning).expect("reader");
    let end = wal.end();
    let mut out = Vec::new();
    while let Some(record) = reader.next().await.expect("read") {
        let done = record.position.segment() == end.segment()
            && record.position.offset + record.size >= end.offset;
        out.push((
            record.term,
            if record.is_term_start {
                "<start>".to_string()
            } else {
                String::from_utf8_lossy(&record.message.payload).into_owned()
            },
        ));
        if done {
            break;
        }
    }
    out
}

fn start(term: i64) -> (i64, String) {
    (term, "<start>".to_string())
}

fn rec(term: i64, text: &str) -> (i64, String) {
    (term, text.to_string())
}

#[tokio::test]
async fn a_moved_channel_continues_one_log_with_a_term_start_per_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage(dir.path());
    let first = Wal::open(store.clone(), "ch", 2, WalConfig::default()).expect("open 2");
    let a = first.append(message("a")).await.expect("a");
    let b = first.append(message("b")).await.expect("b");
    assert!(a.position < b.position && a.time_tick < b.time_tick);
    first.close("moved");
    let second = Wal::open(store.clone(), "ch", 3, WalConfig::default()).expect("open 3");
    second.append(message("c")).await.expect("c");
    drop(second);
    assert_eq!(
        read_all(store, 4).await,
        vec![
            start(2),
            rec(2, "a"),
            rec(2, "b"),
            start(3),
            rec(3, "c"),
            start(4)
        ]
    );
}

#[tokio::test]
async fn reopening_an_old_or_the_same_term_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage(dir.path());
    drop(Wal::open(store.clone(), "ch", 5, WalConfig::default()).expect("open 5"));
    assert!(matches!(
        Wal::open(store.clone(), "ch", 5, WalConfig::default()),
        Err(WalError::TermTaken { .. })
    ));
    assert!(matches!(
        Wal::open(store, "ch", 4, WalConfig::default()),
        Err(WalError::Fenced { .. })
    ));
}

#[tokio::test]
async fn a_stale_holder_is_fenced_and_its_late_records_never_enter_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage(dir.path());
    let stale = Wal::open(store.clone(), "ch", 1, WalConfig::default()).expect("open 1");
    stale
        .append(message("acked"))
        .await
        .expect("acked before the move");
    // Another node opens term 2 on the shared directory while the old one still runs.
    let current = Wal::open(store.clone(), "ch", 2, WalConfig::default()).expect("open 2");
    let refused = stale.append(message("late")).await;
    assert!(
        matches!(refused, Err(WalError::Fenced { .. })),
        "{refused:?}"
    );
    assert!(stale.is_fenced());
    current.append(message("new")).await.expect("new");
    drop(current);
    drop(stale);
    // The late record was written and synced into the term-1 segment, past the cut.
    let segment = dir
        .path()
        .join("ch")
        .join(format!("seg-{:020}-{:06}.log", 1, 0));
    let bytes = std::fs::read(&segment).expect("segment");
    assert!(
        bytes.windows(4).any(|w| w == b"late"),
        "the refused record is physically there"
    );
    assert_eq!(
        read_all(store, 3).await,
        vec![start(1), rec(1, "acked"), start(2), rec(2, "new"), start(3)]
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage(dir.path());
    let wal = Wal::open(store.clone(), "ch", 1, WalConfig::default()).expect("open");
    wal.append(message("one")).await.expect("one");
    wal.append(message("two")).await.expect("two");
    let end = wal.end();
    drop(wal);
    // A crash mid-write: half a record after the last acknowledged one.
    let path = dir
        .path()
        .join("ch")
        .join(format!("seg-{:020}-{:06}.log", 1, 0));
    let mut torn = Vec::new();
    encode_record(
        1,
        KIND_MESSAGE,
        &message("three").encode_to_vec(),
        &mut torn,
    );
    let file = OpenOptions::new().write(true).open(&path).expect("file");
    file.write_all_at(&torn[..torn.len() / 2], end.offset)
        .expect("torn write");
    drop(file);
    assert_eq!(
        read_all(store, 2).await,
        vec![start(1), rec(1, "one"), rec(1, "two"), start(2)]
    );
    assert_eq!(
        std::fs::metadata(&path).expect("meta").len(),
        end.offset,
        "the torn bytes are gone from the file"
    );
}

#[tokio::test]
async fn a_crc_mismatch_that_valid_records_follow_refuses_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage(dir.path());
    let wal = Wal::open(store.clone(), "ch", 1, WalConfig::default()).expect("open");
    wal.append(message("one")).await.expect("one");
    let two = wal.append(message("two")).await.expect("two");
    wal.append(message("three")).await.expect("three");
    drop(wal);
    let path = dir
        .path()
        .join("ch")
        .join(format!("seg-{:020}-{:06}.log", 1, 0));
    let file = OpenOptions::new().write(true).open(&path).expect("file");
    // Flip the last payload byte of record "two" (bit rot): its CRC no longer matches.
    let mut record = Vec::new();
    let mut stamped = message("two");
    stamped.properties.insert(PROP_TERM.into(), "1".into());
    stamped
        .properties
        .insert(PROP_TIME_TICK.into(), two.time_tick.to_string());
    encode_record(1, KIND_MESSAGE, &stamped.encode_to_vec(), &mut record);
    file.write_all_at(&[0xFF], two.position.offset + record.len() as u64 - 1)
        .expect("corrupt");
    drop(file);
    match Wal::open(store.clone(), "ch", 2, WalConfig::default()) {
        Err(WalError::Corrupt {
            segment,
            offset,
            next,
            ..
        }) => {
            assert_eq!(segment, SegmentKey { term: 1, part: 0 });
            assert_eq!(offset, two.position.offset);
            assert_eq!(
                next,
                two.position.offset + record.len() as u64,
                "record three"
            );
        }
        Err(other) => panic!("expected corruption, got {other}"),
        Ok(_) => panic!("opened a damaged log, cutting the acknowledged record three"),
    }
    let len = std::fs::metadata(&path).expect("meta").len();
    assert!(
        len > two.position.offset + record.len() as u64,
        "nothing was cut"
    );
}

#[tokio::test]
async fn an_opener_that_died_before_its_term_start_leaves_no_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage(dir.path());
    let wal = Wal::open(store.clone(), "ch", 1, WalConfig::default()).expect("open");
    wal.append(message("one")).await.expect("one");
    drop(wal);
    // Term 2 created its segment and its fence, then died.
    store.fence("ch", 2).expect("fence");
    drop(
        store
            .create("ch", SegmentKey { term: 2, part: 0 })
            .expect("create"),
    );
    assert_eq!(
        read_all(store, 3).await,
        vec![start(1), rec(1, "one"), start(3)]
    );
}

#[tokio::test]
async fn segments_roll_and_readers_follow_them_and_wait_at_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = storage(dir.path());
    let config = WalConfig { segment_bytes: 200 };
    let wal = Arc::new(Wal::open(store.clone(), "ch", 1, config).expect("open"));
    let mut positions = Vec::new();
    for i in 0..20 {
        positions.push(
            wal.append(message(&format!("m{i:02}")))
                .await
                .expect("append")
                .position,
        );
    }
    assert!(
        positions.last().expect("some").part > 2,
        "rolled: {positions:?}"
    );
    let mut reader = wal.reader(ReadFrom::After(positions[9])).expect("reader");
    for (i, position) in positions.iter().enumerate().skip(10) {
        let record = reader.next().await.expect("read").expect("record");
        assert_eq!(record.message.payload, format!("m{i:02}").into_bytes());
        assert_eq!(record.position, *position);
    }
    // At the end the reader waits for the next acknowledged append.
    let waiting = tokio::spawn(async move { reader.next().await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    wal.append(message("late")).await.expect("append");
    let record = waiting.await.expect("join").expect("read").expect("record");
    assert_eq!(record.message.payload, b"late".to_vec());
    let from = wal.reader(ReadFrom::At(positions[3])).expect("reader at");
    let mut from = from;
    let record = from.next().await.expect("read").expect("record");
    assert_eq!(record.message.payload, b"m03".to_vec());
    drop(from);
    wal.close("done");
    assert_eq!(read_all(store, 2).await.len(), 1 + 21 + 1);
}

#[tokio::test]
async fn concurrent_appends_share_syncs_and_keep_their_order_per_producer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal =
        Arc::new(Wal::open(storage(dir.path()), "ch", 1, WalConfig::default()).expect("open"));
    let mut tasks = Vec::new();
    for producer in 0..8 {
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            for i in 0..50 {
                let at = wal
                    .append(message(&format!("{producer}-{i}")))
                    .await
                    .expect("append")
                    .position;
                assert!(last < Some(at));
                last = Some(at);
            }
        }));
    }
    for task in tasks {
        task.await.expect("producer");
    }
    let mut reader = wal.reader(ReadFrom::Beginning).expect("reader");
    wal.close("done");
    let mut count = 0;
    while let Some(record) = reader.next().await.expect("read") {
        count += usize::from(!record.is_term_start);
    }
    assert_eq!(count, 400);
}

#[test]
fn positions_round_trip_and_reject_garbage() {
    let position = Position {
        term: 7,
        part: 2,
        offset: 4096,
    };
    assert_eq!(
        Position::parse(&position.to_string()).expect("parse"),
        position
    );
    for bad in ["", "1/2", "1/2/3/4", "a/b/c"] {
        assert!(Position::parse(bad).is_err(), "{bad}");
    }
    assert!(
        LocalDirStorage::open(std::env::temp_dir())
            .expect("storage")
            .segments("../etc")
            .is_err()
    );
}
