//! One process per data directory. redb refuses a second opener too, but only with
//! "Database already open"; this lock is taken first and names the process that holds the
//! directory, so a person starting a second `up` (or coordinator) on it knows what to stop.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a data directory; it holds the PID of the process that has it.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Why a data directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum DataDirLockError {
    /// Another live process holds the directory.
    #[error(
        "data directory {} is in use by another collection-operator process{}: stop it, or pass another --data-dir",
        dir.display(),
        pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Busy {
        /// The directory.
        dir: PathBuf,
        /// The holder's PID, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or written.
    #[error("locking data directory {}: {source}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// An exclusive hold on a data directory, released when dropped (or when the process
/// ends, however it ends: the operating system drops the file lock).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes `dir` (which must exist) for this process, or says who has it.
    pub fn acquire(dir: &Path) -> Result<Self, DataDirLockError> {
        let io = |source| DataDirLockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE_NAME))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(DataDirLockError::Busy {
                    dir: dir.to_path_buf(),
                    pid: holder.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(error)) => return Err(io(error)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_one_s_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = DataDirLock::acquire(dir.path()).expect("free directory");
        match DataDirLock::acquire(dir.path()) {
            Err(DataDirLockError::Busy { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()))
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once released");
    }
}
