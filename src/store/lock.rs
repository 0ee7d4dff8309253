//! flock(2) on a lock file; released when the file closes (drop), also after a crash.
use std::fs::File;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Readers and loads: many at once.
    Shared,
    /// Garbage collection (rmi, prune): alone.
    Exclusive,
}

pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open lock", path, e))?;
        Ok(FileLock {
            file,
            path: path.to_owned(),
        })
    }

    /// Opens the lock file to take `mode`; a reader of a store it cannot write (read-only
    /// filesystem, another owner) opens it read-only, or goes without when it does not exist
    /// (nobody can change such a store through this path anyway).
    pub fn open_for(path: &Path, mode: LockMode) -> Result<Option<Self>> {
        match Self::open(path) {
            Ok(l) => Ok(Some(l)),
            Err(Error::Io { source, .. })
                if mode == LockMode::Shared && super::health::read_only_error(&source) =>
            {
                match File::open(path) {
                    Ok(file) => Ok(Some(FileLock {
                        file,
                        path: path.to_owned(),
                    })),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io("open lock", path, e)),
                }
            }
            Err(Error::Io { source, .. }) if super::health::read_only_error(&source) => {
                Err(Error::Usage(format!(
                    "{}: the store is read-only here ({source}); only listing commands work",
                    path.parent().unwrap_or(path).display()
                )))
            }
            Err(e) => Err(e),
        }
    }

    fn op(&self, op: FlockOperation) -> Result<()> {
        loop {
            match flock(&self.file, op) {
                Err(Errno::INTR) => continue,
                r => return r.map_err(|e| Error::io("lock", &self.path, e.into())),
            }
        }
    }

    pub fn shared(&self) -> Result<()> {
        self.op(FlockOperation::LockShared)
    }

    pub fn exclusive(&self) -> Result<()> {
        self.op(FlockOperation::LockExclusive)
    }

    /// True when the exclusive lock was taken without waiting.
    pub fn try_exclusive(&self) -> Result<bool> {
        match flock(&self.file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(true),
            Err(Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(Error::io("lock", &self.path, e.into())),
        }
    }
}
