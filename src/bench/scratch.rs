//! Temporary directories that clean up after themselves, never through a live mount; the stop
//! flag (set by SIGINT/SIGTERM) and per-repetition deadlines; dropping the page cache.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::mountinfo as mounts;
use crate::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A directory removed (with everything in it) when dropped. Before removing, anything still
/// mounted beneath it is detached; if that fails the directory is left alone, because
/// `remove_dir_all` through a live union mount would delete lower-layer data.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `parent/prefix.PID.N` with a fresh N. `parent` is made absolute and canonical
    /// so that paths compare equal to the mount table's.
    pub fn create(parent: &Path, prefix: &str) -> Result<Self> {
        let parent = parent
            .canonicalize()
            .map_err(|e| Error::io("resolve scratch parent", parent, e))?;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{prefix}.{}.{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create directory", path, e)),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes it now, reporting errors (drop only logs them).
    pub fn remove(self) -> Result<()> {
        let r = safe_remove(&self.path);
        std::mem::forget(self);
        r
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = safe_remove(&self.path) {
            log::warn!("bench cleanup: {e}");
            eprintln!("layerfs bench: cleanup: {e}");
        }
    }
}

/// Detaches every mount beneath `path` (deepest first), then removes `path` recursively.
pub fn safe_remove(path: &Path) -> Result<()> {
    let left = mounts::mounts_under(&mounts::read_mountinfo()?, path);
    for m in &left {
        detach(m);
    }
    let still = mounts::mounts_under(&mounts::read_mountinfo()?, path);
    if let Some(m) = still.first() {
        return Err(Error::Usage(format!(
            "{} is still mounted; not removing {}: unmount it, then delete the directory",
            m.display(),
            path.display()
        )));
    }
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// Last-resort unmount: lazy detach (root), else `fusermount3 -uz` for a user's FUSE mount.
pub fn detach(mnt: &Path) {
    if nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH).is_ok() {
        return;
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(mnt)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Stop flag and time limit, checked between operations.
#[derive(Debug, Clone)]
pub struct Ctl {
    pub stop: Arc<AtomicBool>,
    pub deadline: Option<Instant>,
}

impl Ctl {
    pub fn new(stop: Arc<AtomicBool>) -> Self {
        Ctl {
            stop,
            deadline: None,
        }
    }

    pub fn with_limit(&self, limit: Duration) -> Self {
        Ctl {
            stop: self.stop.clone(),
            deadline: Some(Instant::now() + limit),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// `Err(EINTR)` once a stop was asked for; an error once the deadline passed.
    pub fn check(&self) -> Result<()> {
        if self.stopped() {
            return Err(interrupted());
        }
        if let Some(d) = self.deadline
            && Instant::now() > d
        {
            return Err(Error::Usage(
                "a repetition ran past its time limit (three times --budget, at least 60 s); \
                 raise --budget or select fewer workloads"
                    .into(),
            ));
        }
        Ok(())
    }
}

pub fn interrupted() -> Error {
    Error::Sys(rustix::io::Errno::INTR)
}

pub fn is_interrupted(e: &Error) -> bool {
    matches!(e, Error::Sys(rustix::io::Errno::INTR))
}

pub const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// Whether this process may drop the page cache (root and a writable knob).
pub fn can_drop_caches() -> bool {
    nix::unistd::geteuid().is_root()
        && std::fs::OpenOptions::new()
            .write(true)
            .open(DROP_CACHES)
            .is_ok()
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`.
pub fn drop_caches() -> Result<()> {
    nix::unistd::sync();
    std::fs::write(DROP_CACHES, b"3\n").map_err(|e| Error::io("write", DROP_CACHES, e))
}
