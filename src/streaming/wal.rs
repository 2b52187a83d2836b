//! The write-ahead log of one pchannel: a chain of segments, each record checksummed and
//! stamped with the term of the holder that wrote it.
//!
//! **Segments.** A holder at term `T` writes only to segments `(T, 0)`, `(T, 1)`, … (rolled
//! at a size limit), never to a segment of another term. Its first record is a *term-start*
//! record naming where the log ended when it opened (`prev_end`: segment and length). So a
//! channel moved to another node (on a shared directory) continues the same log, and the
//! log's content is defined by the chain of term-start records: a reader walks segments in
//! `(term, part)` order and, at each term start, cuts the chain back to that `prev_end`.
//! Whatever an old holder appends after the new term opened lies past the cut and is never
//! read: no record of an old term can appear after a newer term's start record.
//!
//! **Fencing.** Opening term `T` first makes a durable fence mark for `T` in the storage,
//! then reads where the log ends. A writer acknowledges a batch only after it is synced
//! **and** no fence above its term exists. So an acknowledged record was synced before the
//! newer term's fence, hence before the newer holder measured the log: it lies inside the
//! cut. A batch refused as fenced may still be inside the cut (a producer that retries it
//! elsewhere can see it twice: the one documented source of duplicates).
//!
//! **Records.** `length u32 | crc32 u32 | term i64 | kind u8 | payload`, little endian; the
//! length and CRC cover `term | kind | payload`; the payload is an encoded
//! `milvus.proto.messages.Message`. Reading stops at the first short or corrupt record, so a
//! torn tail (a crash mid-write, never acknowledged) is cut on open. A damaged record that
//! valid records follow is no torn tail: the open fails ([`WalError::Corrupt`]) rather than
//! cut acknowledged messages.
//!
//! **Group commit.** One writer thread per open WAL takes every append waiting in its queue,
//! writes them with one `write` and one `fdatasync`, then answers them all.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot, watch};

use super::{PROP_TERM, PROP_TIME_TICK, PROP_TYPE, TYPE_TERM_START};
use crate::proto::common::{ImmutableMessage, MessageId, WalName};
use crate::proto::messages::Message;

/// Bytes before a record's body: length and CRC.
const HEADER: usize = 8;
/// Bytes of a body before its payload: term and kind.
const BODY_PREFIX: usize = 9;
/// Larger lengths are corruption, not records.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;
/// Most appends one group commit takes.
const MAX_BATCH: usize = 4096;
/// Bytes a reader fetches per read call.
const READ_CHUNK: u64 = 1 << 20;
/// Property of a term-start record: `term/part/length` of the log end it continues from.
const PROP_PREV_END: &str = "prev_end";

/// Record kinds.
const KIND_TERM_START: u8 = 1;
const KIND_MESSAGE: u8 = 2;

/// A failed WAL operation.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// The storage failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// A newer term owns the channel (or the holder let go): nothing more is written.
    #[error("pchannel {pchannel} at term {term} is fenced: {reason}")]
    Fenced {
        /// The channel.
        pchannel: String,
        /// The term of this holder.
        term: i64,
        /// Why.
        reason: String,
    },
    /// A segment of this term (or a newer one) already exists: this term was opened before.
    #[error("pchannel {pchannel}: term {term} was already opened (found segment of term {found})")]
    TermTaken {
        /// The channel.
        pchannel: String,
        /// The term asked for.
        term: i64,
        /// The term of the segment found.
        found: i64,
    },
    /// A message ID that is not ours.
    #[error("malformed message id {0:?}")]
    BadPosition(String),
    /// A message ID that is not in this log.
    #[error("message id {0} is not in the log")]
    NoSuchPosition(Position),
    /// The channel name cannot be a directory name.
    #[error("invalid pchannel name {0:?}")]
    BadChannel(String),
    /// A segment is damaged where valid records follow: cutting it there would lose
    /// acknowledged messages, so the channel is not opened.
    #[error(
        "pchannel {pchannel}: segment {segment:?} is damaged at byte offset {offset}, and \
         valid records follow from byte offset {next}: restore the WAL directory from a \
         backup (or move the segment away to give up what follows the damage)"
    )]
    Corrupt {
        /// The channel.
        pchannel: String,
        /// The damaged segment.
        segment: SegmentKey,
        /// Where the first bad record starts.
        offset: u64,
        /// Where the next valid record starts.
        next: u64,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> WalError {
    move |source| WalError::Io {
        context: context.into(),
        source,
    }
}

/// One segment: the term that wrote it and its sequence number within that term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentKey {
    /// The holder's term.
    pub term: i64,
    /// 0 for the segment opened with the term, then one more per roll.
    pub part: u32,
}

/// Where a record starts; the text of our `MessageID` (`term/part/offset`), ordered as the
/// log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Term of the segment.
    pub term: i64,
    /// Segment number within the term.
    pub part: u32,
    /// Byte offset in the segment.
    pub offset: u64,
}

impl Position {
    fn new(key: SegmentKey, offset: u64) -> Self {
        Self {
            term: key.term,
            part: key.part,
            offset,
        }
    }

    /// The segment it lies in.
    pub fn segment(&self) -> SegmentKey {
        SegmentKey {
            term: self.term,
            part: self.part,
        }
    }

    /// The wire form.
    pub fn to_message_id(&self) -> MessageId {
        MessageId {
            id: self.to_string(),
            wal_name: WalName::Unknown as i32,
        }
    }

    /// Parses the wire form.
    pub fn parse(text: &str) -> Result<Self, WalError> {
        let bad = || WalError::BadPosition(text.to_string());
        let mut parts = text.split('/');
        let (Some(term), Some(part), Some(offset), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(Self {
            term: term.parse().map_err(|_| bad())?,
            part: part.parse().map_err(|_| bad())?,
            offset: offset.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.term, self.part, self.offset)
    }
}

/// A segment and how much of it belongs to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The segment.
    pub key: SegmentKey,
    /// Bytes of it that are part of the log.
    pub len: u64,
}

/// Random-access reads of a segment.
pub trait SegmentRead: Send + Sync {
    /// Reads at `offset`; fewer bytes (0 at the end) when the segment is shorter.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Current length.
    fn size(&self) -> io::Result<u64>;
}

/// Appends to a segment this holder created.
pub trait SegmentWrite: Send {
    /// Writes `bytes` at the end of what this writer wrote.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes everything appended durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// Where segments and fence marks live. The local-directory implementation works on a
/// shared (ReadWriteMany) directory too, which is what lets a channel move between nodes
/// and continue one log; an object store would implement the same calls.
pub trait WalStorage: Send + Sync + 'static {
    /// Every segment of `pchannel`, in `(term, part)` order.
    fn segments(&self, pchannel: &str) -> Result<Vec<SegmentKey>, WalError>;
    /// Opens a segment for reading.
    fn open_read(&self, pchannel: &str, key: SegmentKey) -> Result<Arc<dyn SegmentRead>, WalError>;
    /// Creates a new segment; fails if it exists.
    fn create(&self, pchannel: &str, key: SegmentKey) -> Result<Box<dyn SegmentWrite>, WalError>;
    /// Cuts a segment to `len` bytes (a torn tail), durably.
    fn truncate(&self, pchannel: &str, key: SegmentKey, len: u64) -> Result<(), WalError>;
    /// Durably records that `term` has started on `pchannel`.
    fn fence(&self, pchannel: &str, term: i64) -> Result<(), WalError>;
    /// The highest term fenced on `pchannel`.
    fn highest_fence(&self, pchannel: &str) -> Result<Option<i64>, WalError>;
}

/// [`WalStorage`] on a directory: `<root>/<pchannel>/seg-<term>-<part>.log` and
/// `<root>/<pchannel>/fence-<term>`.
pub struct LocalDirStorage {
    root: PathBuf,
}

impl LocalDirStorage {
    /// Uses (and creates) `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, WalError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(io_error(format!(
            "creating WAL directory {}",
            root.display()
        )))?;
        Ok(Self { root })
    }

    fn channel_dir(&self, pchannel: &str) -> Result<PathBuf, WalError> {
        if pchannel.is_empty() || pchannel.starts_with('.') || pchannel.contains(['/', '\\', '\0'])
        {
            return Err(WalError::BadChannel(pchannel.to_string()));
        }
        Ok(self.root.join(pchannel))
    }

    fn segment_path(&self, pchannel: &str, key: SegmentKey) -> Result<PathBuf, WalError> {
        Ok(self
            .channel_dir(pchannel)?
            .join(format!("seg-{:020}-{:06}.log", key.term, key.part)))
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(format!("syncing directory {}", dir.display())))
}

fn parse_segment_name(name: &str) -> Option<SegmentKey> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    let (term, part) = rest.split_once('-')?;
    Some(SegmentKey {
        term: term.parse().ok()?,
        part: part.parse().ok()?,
    })
}

struct LocalSegmentRead(File);

impl SegmentRead for LocalSegmentRead {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

struct LocalSegmentWrite {
    file: File,
    at: u64,
}

impl SegmentWrite for LocalSegmentWrite {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.at)?;
        self.at += bytes.len() as u64;
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl WalStorage for LocalDirStorage {
    fn segments(&self, pchannel: &str) -> Result<Vec<SegmentKey>, WalError> {
        let dir = self.channel_dir(pchannel)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(io_error(format!("listing {}", dir.display()))(error)),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(format!("listing {}", dir.display())))?;
            if let Some(key) = entry.file_name().to_str().and_then(parse_segment_name) {
                keys.push(key);
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn open_read(&self, pchannel: &str, key: SegmentKey) -> Result<Arc<dyn SegmentRead>, WalError> {
        let path = self.segment_path(pchannel, key)?;
        let file = File::open(&path).map_err(io_error(format!("opening {}", path.display())))?;
        Ok(Arc::new(LocalSegmentRead(file)))
    }

    fn create(&self, pchannel: &str, key: SegmentKey) -> Result<Box<dyn SegmentWrite>, WalError> {
        let dir = self.channel_dir(pchannel)?;
        std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        let path = self.segment_path(pchannel, key)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error(format!("creating {}", path.display())))?;
        sync_dir(&dir)?;
        Ok(Box::new(LocalSegmentWrite { file, at: 0 }))
    }

    fn truncate(&self, pchannel: &str, key: SegmentKey, len: u64) -> Result<(), WalError> {
        let path = self.segment_path(pchannel, key)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        file.set_len(len)
            .and_then(|()| file.sync_all())
            .map_err(io_error(format!("truncating {}", path.display())))
    }

    fn fence(&self, pchannel: &str, term: i64) -> Result<(), WalError> {
        let dir = self.channel_dir(pchannel)?;
        std::fs::create_dir_all(&dir).map_err(io_error(format!("creating {}", dir.display())))?;
        let path = dir.join(format!("fence-{term:020}"));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(format!("creating {}", path.display())))?;
        sync_dir(&dir)
    }

    fn highest_fence(&self, pchannel: &str) -> Result<Option<i64>, WalError> {
        let dir = self.channel_dir(pchannel)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(format!("listing {}", dir.display()))(error)),
        };
        let mut highest = None;
        for entry in entries {
            let entry = entry.map_err(io_error(format!("listing {}", dir.display())))?;
            let term = entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix("fence-"))
                .and_then(|term| term.parse::<i64>().ok());
            highest = highest.max(term);
        }
        Ok(highest)
    }
}

// ---- record codec ----

fn encode_record(term: i64, kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let body_len = BODY_PREFIX + payload.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&term.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + HEADER..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record read back from a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    /// Where it starts.
    pub position: Position,
    /// Term of the holder that wrote it.
    pub term: i64,
    /// Whether it is the term-start record of its term.
    pub is_term_start: bool,
    /// The message (term-start records carry only properties).
    pub message: Message,
    /// Bytes it takes in the segment.
    pub size: u64,
}

impl LogRecord {
    /// The wire form, with the term (`_wt`) taken from the record header.
    pub fn to_immutable(&self) -> ImmutableMessage {
        let mut properties = self.message.properties.clone();
        properties.insert(PROP_TERM.into(), self.term.to_string());
        ImmutableMessage {
            id: Some(self.position.to_message_id()),
            payload: self.message.payload.clone(),
            properties,
        }
    }

    fn prev_end(&self) -> Result<Option<Span>, WalError> {
        match self.message.properties.get(PROP_PREV_END) {
            None => Ok(None),
            Some(text) => {
                let end = Position::parse(text)?;
                Ok(Some(Span {
                    key: end.segment(),
                    len: end.offset,
                }))
            }
        }
    }
}

/// Reads records of one segment sequentially, up to a limit, buffering large reads. Never
/// buffers past the limit, so bytes a writer is still writing are never cached.
struct RecordCursor {
    file: Arc<dyn SegmentRead>,
    key: SegmentKey,
    offset: u64,
    limit: u64,
    buf: Vec<u8>,
    buf_at: u64,
}

impl RecordCursor {
    fn new(file: Arc<dyn SegmentRead>, key: SegmentKey, offset: u64, limit: u64) -> Self {
        Self {
            file,
            key,
            offset,
            limit,
            buf: Vec::new(),
            buf_at: offset,
        }
    }

    /// Makes `buf` cover `[offset, offset + n)`; false when the limit or the file ends first.
    fn ensure(&mut self, n: u64) -> io::Result<bool> {
        let want = self.offset + n;
        if want > self.limit {
            return Ok(false);
        }
        if want <= self.buf_at + self.buf.len() as u64 && self.offset >= self.buf_at {
            return Ok(true);
        }
        if self.offset >= self.buf_at && self.offset <= self.buf_at + self.buf.len() as u64 {
            self.buf.drain(..(self.offset - self.buf_at) as usize);
        } else {
            self.buf.clear();
        }
        self.buf_at = self.offset;
        let target = self.limit.min(self.offset + n.max(READ_CHUNK));
        let mut have = self.buf_at + self.buf.len() as u64;
        while have < target {
            let start = self.buf.len();
            self.buf.resize(start + (target - have) as usize, 0);
            let read = self.file.read_at(&mut self.buf[start..], have)?;
            self.buf.truncate(start + read);
            if read == 0 {
                break;
            }
            have += read as u64;
        }
        Ok(have >= want)
    }

    /// The next valid record, or `None` at the limit, the end, or the first bad record.
    fn next(&mut self) -> Result<Option<LogRecord>, WalError> {
        let key = self.key;
        let context = move || format!("reading segment {key:?}");
        if !self.ensure(HEADER as u64).map_err(io_error(context()))? {
            return Ok(None);
        }
        let at = (self.offset - self.buf_at) as usize;
        let word = |i: usize| {
            u32::from_le_bytes([
                self.buf[i],
                self.buf[i + 1],
                self.buf[i + 2],
                self.buf[i + 3],
            ])
        };
        let body_len = word(at) as usize;
        let crc = word(at + 4);
        if !(BODY_PREFIX..=MAX_RECORD_BYTES).contains(&body_len) {
            return Ok(None);
        }
        let size = (HEADER + body_len) as u64;
        if !self.ensure(size).map_err(io_error(context()))? {
            return Ok(None);
        }
        let at = (self.offset - self.buf_at) as usize;
        let body = &self.buf[at + HEADER..at + HEADER + body_len];
        if crc32fast::hash(body) != crc {
            return Ok(None);
        }
        let mut term_bytes = [0u8; 8];
        term_bytes.copy_from_slice(&body[..8]);
        let term = i64::from_le_bytes(term_bytes);
        let kind = body[8];
        let Ok(message) = Message::decode(&body[BODY_PREFIX..]) else {
            return Ok(None);
        };
        if kind != KIND_TERM_START && kind != KIND_MESSAGE {
            return Ok(None);
        }
        let record = LogRecord {
            position: Position::new(self.key, self.offset),
            term,
            is_term_start: kind == KIND_TERM_START,
            message,
            size,
        };
        self.offset += size;
        Ok(Some(record))
    }
}

/// Rebuilds the log's chain of spans from the segments (see the module docs).
fn recover_chain(
    storage: &dyn WalStorage,
    pchannel: &str,
    keys: &[SegmentKey],
) -> Result<Vec<Span>, WalError> {
    let mut chain: Vec<Span> = Vec::new();
    let mut abandoned_term = None;
    for &key in keys {
        if abandoned_term == Some(key.term) {
            continue;
        }
        let file = storage.open_read(pchannel, key)?;
        let len = file
            .size()
            .map_err(io_error(format!("measuring segment {key:?} of {pchannel}")))?;
        let mut cursor = RecordCursor::new(file, key, 0, len);
        let mut valid = 0;
        let mut first = true;
        while let Some(record) = cursor.next()? {
            if first && key.part == 0 {
                if !record.is_term_start || record.term != key.term {
                    break;
                }
                let prev = record.prev_end()?;
                match prev {
                    None => chain.clear(),
                    Some(prev) => {
                        chain.retain(|span| span.key <= prev.key);
                        if let Some(last) = chain.last_mut()
                            && last.key == prev.key
                        {
                            last.len = last.len.min(prev.len);
                        }
                    }
                }
            }
            first = false;
            valid = record.position.offset + record.size;
        }
        if valid < len
            && let Some(next) = valid_record_after(cursor.file.as_ref(), valid, len)
                .map_err(io_error(format!("reading segment {key:?} of {pchannel}")))?
        {
            return Err(WalError::Corrupt {
                pchannel: pchannel.to_string(),
                segment: key,
                offset: valid,
                next,
            });
        }
        if key.part == 0 && valid == 0 {
            // The opener of this term died before its term start was durable: the term
            // never held the channel.
            abandoned_term = Some(key.term);
            continue;
        }
        chain.push(Span { key, len: valid });
    }
    Ok(chain)
}

/// The first offset after `from` (up to `len`) where an intact record starts, if any: a
/// torn tail has none (it is the last write, cut short), damage in the middle does.
fn valid_record_after(file: &dyn SegmentRead, from: u64, len: u64) -> io::Result<Option<u64>> {
    let mut rest = vec![0u8; (len - from) as usize];
    let mut filled = 0;
    while filled < rest.len() {
        let read = file.read_at(&mut rest[filled..], from + filled as u64)?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    rest.truncate(filled);
    Ok((1..rest.len())
        .find(|&at| is_intact_record(&rest[at..]))
        .map(|at| from + at as u64))
}

/// Whether `bytes` start with a whole record whose CRC, kind and message check out.
fn is_intact_record(bytes: &[u8]) -> bool {
    let Some((header, rest)) = bytes.split_first_chunk::<HEADER>() else {
        return false;
    };
    let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(BODY_PREFIX..=MAX_RECORD_BYTES).contains(&body_len) || rest.len() < body_len {
        return false;
    }
    let body = &rest[..body_len];
    crc32fast::hash(body) == crc
        && matches!(body[8], KIND_TERM_START | KIND_MESSAGE)
        && Message::decode(&body[BODY_PREFIX..]).is_ok()
}

// ---- the open WAL ----

/// Tuning of a WAL.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// A segment rolls over once it holds this many bytes.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What an acknowledged append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Where the record is.
    pub position: Position,
    /// Its time tick (microseconds since the epoch, strictly increasing within a term).
    pub time_tick: u64,
}

/// The part of the log this holder wrote, as far as it is acknowledged.
#[derive(Debug, Clone, Default)]
struct Tail {
    spans: Vec<Span>,
    closed: bool,
}

struct AppendJob {
    message: Message,
    reply: oneshot::Sender<Result<Appended, WalError>>,
}

struct Shared {
    pchannel: String,
    term: i64,
    storage: Arc<dyn WalStorage>,
    fenced: AtomicBool,
    fence_reason: Mutex<String>,
    history: Arc<Vec<Span>>,
    tail: watch::Sender<Tail>,
}

impl Shared {
    fn fenced_error(&self) -> WalError {
        WalError::Fenced {
            pchannel: self.pchannel.clone(),
            term: self.term,
            reason: self.fence_reason.lock().clone(),
        }
    }

    fn fence(&self, reason: &str) {
        let mut current = self.fence_reason.lock();
        if !self.fenced.swap(true, Ordering::AcqRel) {
            *current = reason.to_string();
        }
    }
}

/// One pchannel held at one term: appends (group-committed) and readers.
pub struct Wal {
    shared: Arc<Shared>,
    appends: Mutex<Option<mpsc::Sender<AppendJob>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Wal {
    /// Opens `pchannel` at `term` (blocking I/O: call from a blocking context): fences
    /// older terms, recovers the chain, cuts a torn tail, writes the term-start record.
    pub fn open(
        storage: Arc<dyn WalStorage>,
        pchannel: &str,
        term: i64,
        config: WalConfig,
    ) -> Result<Self, WalError> {
        let fenced = |reason: String| WalError::Fenced {
            pchannel: pchannel.to_string(),
            term,
            reason,
        };
        storage.fence(pchannel, term)?;
        if let Some(highest) = storage.highest_fence(pchannel)?
            && highest > term
        {
            return Err(fenced(format!("term {highest} already started")));
        }
        let keys = storage.segments(pchannel)?;
        if let Some(newer) = keys.iter().find(|key| key.term >= term) {
            return Err(WalError::TermTaken {
                pchannel: pchannel.to_string(),
                term,
                found: newer.term,
            });
        }
        let history = recover_chain(storage.as_ref(), pchannel, &keys)?;
        if let Some(last) = history.last() {
            let file = storage.open_read(pchannel, last.key)?;
            let len = file
                .size()
                .map_err(io_error(format!("measuring {pchannel}")))?;
            if len > last.len {
                tracing::info!(pchannel, segment = ?last.key, from = len, to = last.len, "cutting the torn tail of the log");
                storage.truncate(pchannel, last.key, last.len)?;
            }
        }
        let key = SegmentKey { term, part: 0 };
        let mut file = storage.create(pchannel, key)?;
        let mut start = Message::default();
        start
            .properties
            .insert(PROP_TYPE.into(), TYPE_TERM_START.into());
        start.properties.insert(PROP_TERM.into(), term.to_string());
        if let Some(last) = history.last() {
            start.properties.insert(
                PROP_PREV_END.into(),
                Position::new(last.key, last.len).to_string(),
            );
        }
        let mut bytes = Vec::new();
        encode_record(term, KIND_TERM_START, &start.encode_to_vec(), &mut bytes);
        file.append(&bytes)
            .and_then(|()| file.sync())
            .map_err(io_error(format!("writing the term start of {pchannel}")))?;
        if let Some(highest) = storage.highest_fence(pchannel)?
            && highest > term
        {
            return Err(fenced(format!("term {highest} started while opening")));
        }
        let (tail, _) = watch::channel(Tail {
            spans: vec![Span {
                key,
                len: bytes.len() as u64,
            }],
            closed: false,
        });
        let shared = Arc::new(Shared {
            pchannel: pchannel.to_string(),
            term,
            storage,
            fenced: AtomicBool::new(false),
            fence_reason: Mutex::new(String::new()),
            history: Arc::new(history),
            tail,
        });
        let (appends, queue) = mpsc::channel(MAX_BATCH);
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name(format!("wal-{pchannel}"))
            .spawn(move || run_writer(writer_shared, queue, file, key, bytes.len() as u64, config))
            .map_err(io_error("starting the WAL writer thread"))?;
        Ok(Self {
            shared,
            appends: Mutex::new(Some(appends)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The channel.
    pub fn pchannel(&self) -> &str {
        &self.shared.pchannel
    }

    /// The term this holder writes under.
    pub fn term(&self) -> i64 {
        self.shared.term
    }

    /// Whether appends are refused.
    pub fn is_fenced(&self) -> bool {
        self.shared.fenced.load(Ordering::Acquire)
    }

    /// Refuses every later append (lease lost, Remove); readers keep reading what is there.
    pub fn fence(&self, reason: &str) {
        self.shared.fence(reason);
    }

    /// Appends a message; returns once it is synced and known not to be fenced.
    pub async fn append(&self, message: Message) -> Result<Appended, WalError> {
        let answer = self.enqueue(message).await?;
        answer
            .await
            .unwrap_or_else(|_| Err(self.shared.fenced_error()))
    }

    /// Queues a message and returns the receiver of its outcome, so a caller can keep
    /// queueing (pipelining, sharing syncs) while records keep the order they were queued in.
    pub async fn enqueue(
        &self,
        message: Message,
    ) -> Result<oneshot::Receiver<Result<Appended, WalError>>, WalError> {
        if self.is_fenced() {
            return Err(self.shared.fenced_error());
        }
        let sender = self.appends.lock().clone();
        let Some(sender) = sender else {
            return Err(self.shared.fenced_error());
        };
        let (reply, answer) = oneshot::channel();
        if sender.send(AppendJob { message, reply }).await.is_err() {
            return Err(self.shared.fenced_error());
        }
        Ok(answer)
    }

    /// The error appends get once fenced.
    pub fn fenced_error(&self) -> WalError {
        self.shared.fenced_error()
    }

    /// The end of the acknowledged log (where the next record will go).
    pub fn end(&self) -> Position {
        let tail = self.shared.tail.borrow();
        tail.spans
            .last()
            .map(|span| Position::new(span.key, span.len))
            .unwrap_or(Position::new(
                SegmentKey {
                    term: self.shared.term,
                    part: 0,
                },
                0,
            ))
    }

    /// A reader from `start` (`None`: the first record of the log).
    pub fn reader(&self, start: ReadFrom) -> Result<WalReader, WalError> {
        WalReader::new(self.shared.clone(), start)
    }

    /// Fences and stops the writer (waits for in-flight appends to be answered); readers end
    /// after the last acknowledged record.
    pub fn close(&self, reason: &str) {
        self.shared.fence(reason);
        self.appends.lock().take();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
        self.shared.tail.send_modify(|tail| tail.closed = true);
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close("closed");
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn run_writer(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<AppendJob>,
    mut file: Box<dyn SegmentWrite>,
    mut key: SegmentKey,
    mut len: u64,
    config: WalConfig,
) {
    let mut last_tick = 0u64;
    let mut bytes = Vec::new();
    let mut jobs = Vec::new();
    let term_text = shared.term.to_string();
    while let Some(first) = queue.blocking_recv() {
        jobs.clear();
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if shared.fenced.load(Ordering::Acquire) {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(shared.fenced_error()));
            }
            continue;
        }
        if len >= config.segment_bytes {
            let next = SegmentKey {
                term: key.term,
                part: key.part + 1,
            };
            match shared.storage.create(&shared.pchannel, next) {
                Ok(new_file) => {
                    file = new_file;
                    key = next;
                    len = 0;
                    shared
                        .tail
                        .send_modify(|tail| tail.spans.push(Span { key, len: 0 }));
                }
                Err(error) => {
                    tracing::error!(pchannel = shared.pchannel, %error, "cannot roll the WAL segment; fencing");
                    shared.fence(&format!("segment roll failed: {error}"));
                    for job in jobs.drain(..) {
                        let _ = job.reply.send(Err(shared.fenced_error()));
                    }
                    continue;
                }
            }
        }
        bytes.clear();
        let mut results = Vec::with_capacity(jobs.len());
        for job in &mut jobs {
            let tick = now_micros().max(last_tick + 1);
            last_tick = tick;
            let message = &mut job.message;
            message
                .properties
                .insert(PROP_TERM.into(), term_text.clone());
            message
                .properties
                .insert(PROP_TIME_TICK.into(), tick.to_string());
            let position = Position::new(key, len + bytes.len() as u64);
            encode_record(
                shared.term,
                KIND_MESSAGE,
                &message.encode_to_vec(),
                &mut bytes,
            );
            results.push(Appended {
                position,
                time_tick: tick,
            });
        }
        let written = file.append(&bytes).and_then(|()| file.sync());
        let outcome = match written {
            Err(error) => {
                tracing::error!(pchannel = shared.pchannel, %error, "WAL write failed; fencing");
                shared.fence(&format!("write failed: {error}"));
                Err(())
            }
            Ok(()) => match shared.storage.highest_fence(&shared.pchannel) {
                Ok(Some(highest)) if highest > shared.term => {
                    shared.fence(&format!("term {highest} started"));
                    Err(())
                }
                Ok(_) => Ok(()),
                Err(error) => {
                    shared.fence(&format!("cannot read the fence marks: {error}"));
                    Err(())
                }
            },
        };
        if outcome.is_ok() {
            len += bytes.len() as u64;
            shared.tail.send_modify(|tail| {
                if let Some(last) = tail.spans.last_mut() {
                    last.len = len;
                }
            });
            for (job, result) in jobs.drain(..).zip(results) {
                let _ = job.reply.send(Ok(result));
            }
        } else {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(shared.fenced_error()));
            }
        }
    }
}

// ---- readers ----

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// The first record of the log.
    Beginning,
    /// Only records appended from now on.
    End,
    /// The record at this position (inclusive).
    At(Position),
    /// The record after this position.
    After(Position),
}

/// Reads the log in order, across every term's segments, waiting at the end for more.
pub struct WalReader {
    shared: Arc<Shared>,
    tail: watch::Receiver<Tail>,
    /// Index into history ++ own spans.
    span: usize,
    cursor: Option<RecordCursor>,
    skip_first: bool,
    files: HashMap<SegmentKey, Arc<dyn SegmentRead>>,
}

impl WalReader {
    fn new(shared: Arc<Shared>, start: ReadFrom) -> Result<Self, WalError> {
        let tail = shared.tail.subscribe();
        let mut reader = Self {
            shared,
            tail,
            span: 0,
            cursor: None,
            skip_first: false,
            files: HashMap::new(),
        };
        let spans = reader.spans();
        let (position, skip) = match start {
            ReadFrom::Beginning => (None, false),
            ReadFrom::End => {
                let last = spans.len().saturating_sub(1);
                (spans.get(last).map(|s| Position::new(s.key, s.len)), false)
            }
            ReadFrom::At(position) => (Some(position), false),
            ReadFrom::After(position) => (Some(position), true),
        };
        if let Some(position) = position {
            let index = spans
                .iter()
                .position(|span| span.key == position.segment() && position.offset <= span.len)
                .ok_or(WalError::NoSuchPosition(position))?;
            reader.span = index;
            reader.open_cursor(&spans, position.offset)?;
            reader.skip_first = skip;
        }
        Ok(reader)
    }

    fn spans(&self) -> Vec<Span> {
        let mut spans: Vec<Span> = self.shared.history.as_ref().clone();
        spans.extend(self.tail.borrow().spans.iter().copied());
        spans
    }

    fn open_cursor(&mut self, spans: &[Span], offset: u64) -> Result<(), WalError> {
        let span = spans[self.span];
        let file = match self.files.get(&span.key) {
            Some(file) => file.clone(),
            None => {
                let file = self
                    .shared
                    .storage
                    .open_read(&self.shared.pchannel, span.key)?;
                self.files.insert(span.key, file.clone());
                file
            }
        };
        self.cursor = Some(RecordCursor::new(file, span.key, offset, span.len));
        Ok(())
    }

    /// The next record; waits for one at the end of the log. `None`: the WAL was closed and
    /// everything acknowledged has been read.
    pub async fn next(&mut self) -> Result<Option<LogRecord>, WalError> {
        loop {
            let spans = self.spans();
            if self.span >= spans.len() {
                return Ok(None);
            }
            if self.cursor.is_none() {
                self.open_cursor(&spans, 0)?;
            }
            let Some(cursor) = self.cursor.as_mut() else {
                continue;
            };
            cursor.limit = spans[self.span].len;
            if let Some(record) = cursor.next()? {
                if std::mem::take(&mut self.skip_first) {
                    continue;
                }
                return Ok(Some(record));
            }
            if self.span + 1 < spans.len() {
                self.span += 1;
                self.cursor = None;
                self.skip_first = false;
                continue;
            }
            if self.tail.borrow().closed {
                return Ok(None);
            }
            // At the acknowledged end: wait for the writer to publish more.
            if self.tail.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests;
