//! The commit log in front of the redb file: what makes a commit durable with **one**
//! `fdatasync` of a pre-written file.
//!
//! A redb commit with `Durability::Immediate` costs several hundred microseconds here (it
//! writes copied B-tree pages and the header, and the file grows). So each store batch is
//! applied to redb with `Durability::None` (atomic, visible, not yet synced) after its
//! encoded form has been appended to this log and synced. A checkpoint — one durable redb
//! commit that also records the last sequence number it covers — makes the log redundant,
//! and the log starts again at offset 0. After a crash, redb is at its last checkpoint and
//! the records above its sequence number are replayed.
//!
//! Format: every record starts on a fresh 4 KiB block, so a torn write can only damage the
//! record being written (never acknowledged), not an earlier one:
//! `magic u32 | payload length u32 | sequence u64 | crc32 u32 (of length, sequence and
//! payload) | payload`, little endian, zero padded to the block, and written **twice**
//! (a copy follows the record, same write, same sync): a byte flipped in one copy loses
//! nothing. The log is the chain of records from offset 0 whose sequences follow each
//! other; stale records of an earlier cycle never follow, because their sequence numbers
//! are lower. Where the chain ends on a damaged record (both copies), the rest of the file
//! tells a torn tail (nothing newer follows: cut, with a warning) from corruption (a newer
//! record follows, or the chain starts above what the redb file covers: [`LogError::Corrupt`],
//! which the store refuses to start on unless asked to repair).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Records written twice, checksum over length, sequence and payload.
const MAGIC: u32 = 0xC0_11_EC_72;
/// Records of the earlier format: one copy, checksum over sequence and payload.
const LEGACY_MAGIC: u32 = 0xC0_11_EC_71;
const HEADER: usize = 4 + 4 + 8 + 4;
/// Records start on blocks of this size.
pub const BLOCK: u64 = 4096;

/// An append-only, pre-allocated log of sequenced records.
pub struct CommitLog {
    file: File,
    capacity: u64,
    write_at: u64,
}

/// A record read back on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its sequence number.
    pub sequence: u64,
    /// What was appended.
    pub payload: Vec<u8>,
}

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be read or written.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The log is damaged beyond a torn tail: acknowledged records would be lost.
    #[error("damaged at byte offset {offset}: {detail}")]
    Corrupt {
        /// Where the damage starts.
        offset: u64,
        /// What was found, and which records it costs.
        detail: String,
    },
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// No room before a checkpoint; nothing was written.
    #[error("commit log is full; a checkpoint is needed first")]
    Full,
    /// The write failed and nothing of the record remains.
    #[error("appending to the commit log: {0}")]
    Undone(io::Error),
    /// The write failed and what it may have written could not be cleared: a restart may
    /// replay the record.
    #[error(
        "appending to the commit log: {0}; clearing the partly written record failed too \
         ({1}), so a restart may still apply it"
    )]
    Unknown(io::Error, io::Error),
}

/// What [`CommitLog::open`] found besides the records.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogScan {
    /// Offsets of records read from their copy because the first copy was damaged.
    pub recovered_from_copy: Vec<u64>,
    /// Offset of a damaged last record that nothing follows (a write torn by a crash).
    pub torn_tail: Option<u64>,
    /// With `repair`: the records dropped after the damage (sequence, offset).
    pub dropped: Vec<(u64, u64)>,
}

fn crc(length: u32, sequence: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&length.to_le_bytes());
    hasher.update(&sequence.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn legacy_crc(sequence: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn padded(len: usize) -> u64 {
    (len as u64).div_ceil(BLOCK) * BLOCK
}

/// One intact copy of a record found at some offset.
struct Found {
    record: LogRecord,
    /// Bytes of one copy, padded.
    size: u64,
    /// Whether a second copy follows (current format).
    copied: bool,
}

impl CommitLog {
    /// Opens (or creates and pre-writes, so that later syncs touch no file metadata) a log
    /// of `capacity` bytes, and returns the records above sequence `covered` (what the
    /// redb file already holds), in order. Damage other than a torn tail is an error,
    /// unless `repair`: then the records after it are dropped (and reported).
    pub fn open(
        path: &Path,
        capacity: u64,
        covered: u64,
        repair: bool,
    ) -> Result<(Self, Vec<LogRecord>, LogScan), LogError> {
        let capacity = padded(capacity.max(BLOCK) as usize);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let length = file.metadata()?.len();
        if length < capacity {
            let zeros = vec![0u8; (1 << 20).min(capacity as usize)];
            let mut at = length - length % BLOCK;
            while at < capacity {
                let n = zeros.len().min((capacity - at) as usize);
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let capacity = capacity.max(file.metadata()?.len() - file.metadata()?.len() % BLOCK);
        let mut log = Self {
            file,
            capacity,
            write_at: 0,
        };
        let (records, scan) = log.read_all(covered, repair)?;
        Ok((log, records, scan))
    }

    /// The intact record whose copy starts at `at`, if any.
    fn read_at(&self, at: u64) -> io::Result<Option<Found>> {
        let mut header = [0u8; HEADER];
        if at + BLOCK > self.capacity {
            return Ok(None);
        }
        self.file.read_exact_at(&mut header, at)?;
        let word =
            |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or_default());
        let magic = word(0);
        let length = word(4);
        let sequence = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let checksum = word(16);
        let size = padded(HEADER + length as usize);
        let copies = match magic {
            MAGIC => 2,
            LEGACY_MAGIC => 1,
            _ => return Ok(None),
        };
        if at + size > self.capacity {
            return Ok(None);
        }
        let mut payload = vec![0u8; length as usize];
        self.file.read_exact_at(&mut payload, at + HEADER as u64)?;
        let intact = if copies == 2 {
            crc(length, sequence, &payload) == checksum
        } else {
            legacy_crc(sequence, &payload) == checksum
        };
        Ok(intact.then_some(Found {
            record: LogRecord { sequence, payload },
            size,
            copied: copies == 2,
        }))
    }

    /// The copy of a record whose first copy at `at` is damaged (or was never written: a
    /// torn write): a block after it holding an intact record of sequence `expected`
    /// exactly one copy's size away.
    fn copy_of_damaged(&self, at: u64, expected: u64) -> io::Result<Option<Found>> {
        let mut offset = at + BLOCK;
        while offset + BLOCK <= self.capacity {
            if let Some(found) = self.read_at(offset)?
                && found.copied
                && found.size == offset - at
                && found.record.sequence == expected
            {
                return Ok(Some(found));
            }
            offset += BLOCK;
        }
        Ok(None)
    }

    fn read_all(
        &mut self,
        covered: u64,
        repair: bool,
    ) -> Result<(Vec<LogRecord>, LogScan), LogError> {
        let mut records: Vec<LogRecord> = Vec::new();
        let mut scan = LogScan::default();
        let mut at = 0;
        while at + BLOCK <= self.capacity {
            let expected = records.last().map(|last| last.sequence + 1);
            let (found, copy_at) = match self.read_at(at)? {
                Some(found) => (found, None),
                // A damaged first record is the one after what redb covers.
                None => match self.copy_of_damaged(at, expected.unwrap_or(covered + 1))? {
                    Some(found) => {
                        let copy_at = at + found.size;
                        (found, Some(copy_at))
                    }
                    None => break,
                },
            };
            if expected.is_some_and(|sequence| found.record.sequence != sequence) {
                break;
            }
            if copy_at.is_some() {
                tracing::warn!(
                    offset = at,
                    sequence = found.record.sequence,
                    "commit log record damaged (torn write or corruption); its copy is intact and used"
                );
                scan.recovered_from_copy.push(at);
            }
            at += if found.copied {
                2 * found.size
            } else {
                found.size
            };
            records.push(found.record);
        }
        self.write_at = at;
        // Records of an earlier cycle (at or below what redb covers) are redundant.
        let live_from = records
            .iter()
            .position(|r| r.sequence > covered)
            .unwrap_or(records.len());
        if let Some(first) = records.get(live_from)
            && first.sequence != covered + 1
        {
            let detail = format!(
                "the log continues at sequence {} but the redb file covers only up to {covered}: \
                 the records in between are missing (the redb file is older than the log, or \
                 was replaced)",
                first.sequence
            );
            if !repair {
                return Err(LogError::Corrupt { offset: 0, detail });
            }
            tracing::warn!(%detail, "repair: dropping every commit log record");
            scan.dropped = records[live_from..]
                .iter()
                .map(|r| (r.sequence, 0))
                .collect();
            records.truncate(live_from);
            self.erase_from(0)?;
            return Ok((Vec::new(), scan));
        }
        let last = records.last().map_or(covered, |r| r.sequence.max(covered));
        // Where the chain ended: a torn tail, or damage that newer records follow.
        let mut later = Vec::new();
        let mut offset = at + BLOCK;
        while offset + BLOCK <= self.capacity {
            match self.read_at(offset)? {
                Some(found) if found.record.sequence > last => {
                    later.push((found.record.sequence, offset));
                    offset += found.size;
                }
                _ => offset += BLOCK,
            }
        }
        if !later.is_empty() {
            later.dedup_by_key(|(sequence, _)| *sequence);
            let detail = format!(
                "the record after sequence {last} is damaged, and {} newer record(s) follow \
                 (sequences {}..={})",
                later.len(),
                later[0].0,
                later[later.len() - 1].0
            );
            if !repair {
                return Err(LogError::Corrupt { offset: at, detail });
            }
            tracing::warn!(offset = at, %detail, "repair: dropping the records after the damage");
            scan.dropped = later;
            self.erase_from(at)?;
        } else if self.read_block_nonzero(at)? && self.read_at(at)?.is_none() {
            tracing::warn!(
                offset = at,
                "commit log ends with a damaged record and nothing newer follows: a write torn \
                 by a crash (never acknowledged), cut"
            );
            scan.torn_tail = Some(at);
        }
        let live = records.split_off(live_from);
        Ok((live, scan))
    }

    /// Whether the block at `at` holds anything but zeros (a record start, torn or stale).
    fn read_block_nonzero(&self, at: u64) -> io::Result<bool> {
        if at + BLOCK > self.capacity {
            return Ok(false);
        }
        let mut header = [0u8; HEADER];
        self.file.read_exact_at(&mut header, at)?;
        Ok(header.iter().any(|&b| b != 0))
    }

    /// Zeroes the log from `from` to its end and syncs (drops what a repair gave up).
    fn erase_from(&mut self, from: u64) -> io::Result<()> {
        self.clear(from, self.capacity)?;
        self.write_at = from;
        Ok(())
    }

    /// Whether a payload of `len` bytes still fits before a checkpoint is needed.
    pub fn fits(&self, len: usize) -> bool {
        self.write_at + 2 * padded(HEADER + len) <= self.capacity
    }

    /// Bytes written since the last reset.
    pub fn used(&self) -> u64 {
        self.write_at
    }

    /// Appends a record (both copies) and syncs it; when this returns `Ok` the record
    /// survives a crash. A failed append clears what it may have written, so that a
    /// restart does not replay a record its caller was told had failed.
    pub fn append(&mut self, sequence: u64, payload: &[u8]) -> Result<(), AppendError> {
        let size = padded(HEADER + payload.len());
        if self.write_at + 2 * size > self.capacity {
            return Err(AppendError::Full);
        }
        let length = payload.len() as u32;
        let mut block = Vec::with_capacity(2 * size as usize);
        block.extend_from_slice(&MAGIC.to_le_bytes());
        block.extend_from_slice(&length.to_le_bytes());
        block.extend_from_slice(&sequence.to_le_bytes());
        block.extend_from_slice(&crc(length, sequence, payload).to_le_bytes());
        block.extend_from_slice(payload);
        block.resize(size as usize, 0);
        block.extend_from_within(..size as usize);
        let written = self
            .file
            .write_all_at(&block, self.write_at)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            let at = self.write_at;
            return Err(match self.clear(at, at + 2 * size) {
                Ok(()) => AppendError::Undone(error),
                Err(clearing) => AppendError::Unknown(error, clearing),
            });
        }
        self.write_at += 2 * size;
        Ok(())
    }

    /// Takes back every record appended at or after offset `from` (an earlier
    /// [`Self::used`]): their blocks are zeroed and synced, and the next append goes there.
    pub fn retract(&mut self, from: u64) -> io::Result<()> {
        let end = self.write_at;
        self.clear(from, end)?;
        self.write_at = from;
        Ok(())
    }

    fn clear(&self, from: u64, to: u64) -> io::Result<()> {
        let zeros = vec![0u8; (1 << 20).min(to.saturating_sub(from) as usize)];
        let mut at = from;
        while at < to {
            let n = zeros.len().min((to - at) as usize);
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_data()
    }

    /// Starts over at offset 0 once a checkpoint made every record redundant. The first
    /// block is cleared, so a crash before the next append finds an empty log.
    pub fn reset(&mut self) -> io::Result<()> {
        if self.write_at == 0 {
            return Ok(());
        }
        self.file.write_all_at(&[0u8; HEADER], 0)?;
        self.file.sync_data()?;
        self.write_at = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path, covered: u64) -> (CommitLog, Vec<LogRecord>, LogScan) {
        CommitLog::open(path, 64 * 1024, covered, false).expect("open")
    }

    fn sequences(records: &[LogRecord]) -> Vec<u64> {
        records.iter().map(|r| r.sequence).collect()
    }

    fn flip(path: &Path, offset: u64) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open file");
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, offset).expect("read");
        file.write_all_at(&[byte[0] ^ 0x5a], offset).expect("flip");
    }

    /// Three one-block records (two blocks each with the copy) at offsets 0, 2, 4 blocks.
    fn three_records(path: &Path) {
        let (mut log, _, _) = open(path, 0);
        for sequence in 1..=3 {
            log.append(sequence, format!("record {sequence}").as_bytes())
                .expect("append");
        }
    }

    #[test]
    fn records_come_back_in_order_and_reset_forgets_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.log");
        {
            let (mut log, records, _) = open(&path, 6);
            assert!(records.is_empty());
            log.append(7, b"seven").expect("append");
            log.append(8, &vec![1u8; 5000])
                .expect("append spanning blocks");
        }
        let (mut log, records, _) = open(&path, 6);
        assert_eq!(sequences(&records), vec![7, 8]);
        assert_eq!(records[1].payload.len(), 5000);
        log.reset().expect("reset");
        log.append(9, b"nine").expect("append after reset");
        drop(log);
        // The stale record 8 behind record 9 does not follow it, so it is not read.
        let (_, records, scan) = open(&path, 8);
        assert_eq!(
            records,
            vec![LogRecord {
                sequence: 9,
                payload: b"nine".to_vec()
            }]
        );
        assert_eq!(scan, LogScan::default());
    }

    #[test]
    fn a_torn_last_record_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.log");
        three_records(&path);
        // Both copies of record 3 damaged, nothing newer after it: a torn write.
        flip(&path, 4 * BLOCK + HEADER as u64);
        flip(&path, 5 * BLOCK + HEADER as u64);
        let (log, records, scan) = open(&path, 0);
        assert_eq!(sequences(&records), vec![1, 2]);
        assert_eq!(scan.torn_tail, Some(4 * BLOCK));
        assert_eq!(log.used(), 4 * BLOCK, "the next append overwrites it");
    }

    #[test]
    fn one_damaged_copy_loses_nothing_at_start_middle_and_end() {
        for (record, in_copy) in [(0u64, false), (1, true), (2, false), (0, true)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("commit.log");
            three_records(&path);
            let block = 2 * record + u64::from(in_copy);
            flip(&path, block * BLOCK + 9);
            let (_, records, scan) = open(&path, 0);
            assert_eq!(sequences(&records), vec![1, 2, 3], "record {record}");
            assert_eq!(
                scan.recovered_from_copy,
                if in_copy {
                    vec![]
                } else {
                    vec![2 * record * BLOCK]
                }
            );
        }
    }

    #[test]
    fn damage_that_newer_records_follow_is_refused_or_repaired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.log");
        three_records(&path);
        flip(&path, 2 * BLOCK + HEADER as u64);
        flip(&path, 3 * BLOCK + HEADER as u64);
        match CommitLog::open(&path, 64 * 1024, 0, false) {
            Err(LogError::Corrupt { offset, detail }) => {
                assert_eq!(offset, 2 * BLOCK);
                assert!(detail.contains("sequences 3..=3"), "{detail}");
            }
            other => panic!("expected corruption, got {:?}", other.map(|r| r.1)),
        }
        let (_, records, scan) = CommitLog::open(&path, 64 * 1024, 0, true).expect("repair");
        assert_eq!(sequences(&records), vec![1]);
        assert_eq!(scan.dropped, vec![(3, 4 * BLOCK)]);
        let (_, records, _) = open(&path, 0);
        assert_eq!(sequences(&records), vec![1], "the repair is durable");
    }

    #[test]
    fn a_log_starting_above_what_redb_covers_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.log");
        three_records(&path);
        assert!(matches!(
            CommitLog::open(&path, 64 * 1024, 0, false),
            Ok((_, ref records, _)) if records.len() == 3
        ));
        // Records 1..=3 after a redb file that covers nothing, but that starts at 2:
        let dir2 = tempfile::tempdir().expect("tempdir");
        let path2 = dir2.path().join("commit.log");
        {
            let (mut log, _, _) = open(&path2, 0);
            log.append(5, b"five").expect("append");
        }
        assert!(matches!(
            CommitLog::open(&path2, 64 * 1024, 3, false),
            Err(LogError::Corrupt { offset: 0, .. })
        ));
    }

    #[test]
    fn a_failed_batch_is_retracted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.log");
        {
            let (mut log, _, _) = open(&path, 0);
            log.append(1, b"one").expect("append");
            let at = log.used();
            log.append(2, b"two").expect("append");
            log.retract(at).expect("retract");
            assert_eq!(log.used(), at);
        }
        let (_, records, scan) = open(&path, 0);
        assert_eq!(sequences(&records), vec![1]);
        assert_eq!(scan, LogScan::default());
    }

    #[test]
    fn full_log_refuses_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _, _) =
            CommitLog::open(&dir.path().join("commit.log"), 4 * BLOCK, 0, false).expect("open");
        log.append(1, b"a").expect("first");
        log.append(2, b"b").expect("second");
        assert!(!log.fits(1));
        assert!(matches!(log.append(3, b"c"), Err(AppendError::Full)));
    }
}
