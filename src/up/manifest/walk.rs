//! Finding and reading manifest files: the folder walk (sorted, hidden names skipped,
//! symlink loops cut), the size limit, and refusing what is not a regular file.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Folders are searched at most this deep.
const MAX_DEPTH: usize = 32;

/// Default of the largest manifest file read (`--max-manifest-bytes`).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

static MAX_FILE_BYTES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_MAX_FILE_BYTES);

/// Sets the largest manifest file [`load`] reads (a bigger one is a problem, never read
/// to its end: `x.yaml -> /dev/zero` must not exhaust memory).
pub fn set_max_file_bytes(bytes: u64) {
    MAX_FILE_BYTES.store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
}

pub(super) fn max_file_bytes() -> u64 {
    MAX_FILE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reads `path` up to `limit` bytes. Opened without blocking (a FIFO that appeared after
/// the walk does not hang the pass) and refused unless it is a regular file, or named on
/// the command line as a pipe (`plan -f <(generate)`), which is then read to the limit.
pub(super) fn read_limited(path: &Path, limit: u64) -> Result<String, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let cannot = |error: std::io::Error| format!("{}: cannot read: {error}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let kind = file.metadata().map_err(cannot)?.file_type();
    if !kind.is_file() && !kind.is_fifo() {
        return Err(format!(
            "{}: not a regular file ({}): not read",
            path.display(),
            describe_type(&kind)
        ));
    }
    let mut bytes = Vec::new();
    let mut reader = std::io::Read::take(file, limit.saturating_add(1));
    loop {
        match reader.read_to_end(&mut bytes) {
            Ok(_) => break,
            // A pipe with no writer yet: wait for it (only named pipes get here).
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(error) => return Err(cannot(error)),
        }
    }
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{}: larger than {limit} bytes (--max-manifest-bytes): not read",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: cannot read: not UTF-8", path.display()))
}

fn describe_type(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

fn is_manifest_file(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

pub(super) fn collect(path: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<String>) {
    if path.as_os_str() == "-" {
        files.push(path.to_path_buf());
        return;
    }
    match std::fs::metadata(path) {
        Err(error) => problems.push(format!("{}: cannot read: {error}", path.display())),
        Ok(meta) if meta.is_dir() => walk(path, 0, &mut HashSet::new(), files, problems),
        // A file named explicitly is read whatever its extension.
        Ok(_) => files.push(path.to_path_buf()),
    }
}

/// Collects manifest files below `dir`, sorted by name so the order (and therefore
/// error lists and tie-breaks) is stable. Names starting with `.` are skipped: editor
/// swap files, and the `..data` links of a mounted ConfigMap, which would otherwise
/// make every manifest appear twice. A symlinked folder is followed once per real folder
/// (`seen` holds device and inode), so links to the folder itself cannot make the walk
/// explode; only regular files are taken, a FIFO or a device named `*.yaml` is a problem.
fn walk(
    dir: &Path,
    depth: usize,
    seen: &mut HashSet<(u64, u64)>,
    files: &mut Vec<PathBuf>,
    problems: &mut Vec<String>,
) {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(dir) {
        Ok(meta) if !seen.insert((meta.dev(), meta.ino())) => return,
        _ => {}
    }
    if depth > MAX_DEPTH {
        problems.push(format!(
            "{}: folders nested deeper than {MAX_DEPTH} levels (a symlink loop?)",
            dir.display()
        ));
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            problems.push(format!("{}: cannot list: {error}", dir.display()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.path())
        .collect();
    paths.sort();
    for path in paths {
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => walk(&path, depth + 1, seen, files, problems),
            Ok(meta) if meta.is_file() && is_manifest_file(&path) => files.push(path),
            Ok(meta) if is_manifest_file(&path) => problems.push(format!(
                "{}: not a regular file ({}): not read",
                path.display(),
                describe_type(&meta.file_type())
            )),
            Ok(_) => {}
            // A dangling symlink, or a file removed while listing: skip it, like kubectl.
            Err(_) => {}
        }
    }
}
