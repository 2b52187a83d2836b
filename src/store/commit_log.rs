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
//! `magic u32 | payload length u32 | sequence u64 | crc32 u32 (of sequence and payload) |
//! payload`, little endian, zero padded to the block. Reading stops at the first record
//! that is invalid or whose sequence does not follow the previous one; stale records of an
//! earlier cycle never follow, because their sequence numbers are lower.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: u32 = 0xC0_11_EC_71;
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

fn crc(sequence: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&sequence.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

fn padded(len: usize) -> u64 {
    (len as u64).div_ceil(BLOCK) * BLOCK
}

impl CommitLog {
    /// Opens (or creates and pre-writes, so that later syncs touch no file metadata) a log
    /// of `capacity` bytes, and returns the records it holds, in order.
    pub fn open(path: &Path, capacity: u64) -> io::Result<(Self, Vec<LogRecord>)> {
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
        let records = log.read_all()?;
        Ok((log, records))
    }

    fn read_all(&mut self) -> io::Result<Vec<LogRecord>> {
        let mut records: Vec<LogRecord> = Vec::new();
        let mut at = 0;
        let mut header = [0u8; HEADER];
        while at + BLOCK <= self.capacity {
            self.file.read_exact_at(&mut header, at)?;
            let magic = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
            let length = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default()) as usize;
            let sequence = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
            let checksum = u32::from_le_bytes(header[16..20].try_into().unwrap_or_default());
            let size = padded(HEADER + length);
            if magic != MAGIC || at + size > self.capacity {
                break;
            }
            if records
                .last()
                .is_some_and(|last| last.sequence + 1 != sequence)
            {
                break;
            }
            let mut payload = vec![0u8; length];
            self.file.read_exact_at(&mut payload, at + HEADER as u64)?;
            if crc(sequence, &payload) != checksum {
                break;
            }
            records.push(LogRecord { sequence, payload });
            at += size;
        }
        self.write_at = at;
        Ok(records)
    }

    /// Whether a payload of `len` bytes still fits before a checkpoint is needed.
    pub fn fits(&self, len: usize) -> bool {
        self.write_at + padded(HEADER + len) <= self.capacity
    }

    /// Bytes written since the last reset.
    pub fn used(&self) -> u64 {
        self.write_at
    }

    /// Appends a record and syncs it; when this returns `Ok` the record survives a crash.
    pub fn append(&mut self, sequence: u64, payload: &[u8]) -> io::Result<()> {
        let size = padded(HEADER + payload.len());
        if self.write_at + size > self.capacity {
            return Err(io::Error::other(
                "commit log is full; a checkpoint is needed first",
            ));
        }
        let mut block = Vec::with_capacity(size as usize);
        block.extend_from_slice(&MAGIC.to_le_bytes());
        block.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        block.extend_from_slice(&sequence.to_le_bytes());
        block.extend_from_slice(&crc(sequence, payload).to_le_bytes());
        block.extend_from_slice(payload);
        block.resize(size as usize, 0);
        self.file.write_all_at(&block, self.write_at)?;
        self.file.sync_data()?;
        self.write_at += size;
        Ok(())
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

    #[test]
    fn records_come_back_in_order_and_reset_forgets_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.log");
        {
            let (mut log, records) = CommitLog::open(&path, 64 * 1024).expect("open");
            assert!(records.is_empty());
            log.append(7, b"seven").expect("append");
            log.append(8, &vec![1u8; 5000])
                .expect("append spanning blocks");
        }
        let (mut log, records) = CommitLog::open(&path, 64 * 1024).expect("reopen");
        assert_eq!(
            records.iter().map(|r| r.sequence).collect::<Vec<_>>(),
            vec![7, 8]
        );
        assert_eq!(records[1].payload.len(), 5000);
        log.reset().expect("reset");
        log.append(9, b"nine").expect("append after reset");
        drop(log);
        // The stale record 8 behind record 9 does not follow it, so it is not read.
        let (_, records) = CommitLog::open(&path, 64 * 1024).expect("reopen");
        assert_eq!(
            records,
            vec![LogRecord {
                sequence: 9,
                payload: b"nine".to_vec()
            }]
        );
    }

    #[test]
    fn a_torn_record_ends_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commit.log");
        {
            let (mut log, _) = CommitLog::open(&path, 64 * 1024).expect("open");
            log.append(1, b"one").expect("append");
            log.append(2, b"two").expect("append");
        }
        // Damage the payload of record 2.
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open file");
        file.write_all_at(b"X", BLOCK + HEADER as u64)
            .expect("corrupt");
        let (log, records) = CommitLog::open(&path, 64 * 1024).expect("reopen");
        assert_eq!(records.len(), 1);
        assert_eq!(
            log.used(),
            BLOCK,
            "the next append overwrites the torn record"
        );
    }

    #[test]
    fn full_log_refuses_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) =
            CommitLog::open(&dir.path().join("commit.log"), 2 * BLOCK).expect("open");
        log.append(1, b"a").expect("first");
        log.append(2, b"b").expect("second");
        assert!(!log.fits(1));
        assert!(log.append(3, b"c").is_err());
    }
}
