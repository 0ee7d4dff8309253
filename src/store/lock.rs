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
