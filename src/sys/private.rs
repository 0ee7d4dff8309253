//! Private directories and files of one user: the runtime dir (pid and log files) and the store
//! root. A directory another user can write, or one owned by someone else, is a place where a
//! planted symlink or file would redirect what a root process writes: such directories are
//! refused, and files in them are created without following symlinks, mode 0600.
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// What `ensure_private_dir` did to an existing directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tightened {
    /// Created, or already private.
    No,
    /// It was ours but group/other had access: its mode was `from`, now 0700.
    From(u32),
}

/// Why a directory can't be used as a private directory.
#[derive(Debug)]
pub enum PrivateDirError {
    Sys(Errno),
    NotADirectory,
    OwnedBy(u32),
}

impl std::fmt::Display for PrivateDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrivateDirError::Sys(e) => write!(f, "{}", std::io::Error::from(*e)),
            PrivateDirError::NotADirectory => {
                write!(f, "it is not a directory (a symlink or a file is refused)")
            }
            PrivateDirError::OwnedBy(uid) => write!(
                f,
                "it belongs to uid {uid}, not to you (uid {}): another user could redirect \
                 what is written there; remove it or choose another directory",
                rustix::process::geteuid().as_raw()
            ),
        }
    }
}

impl From<Errno> for PrivateDirError {
    fn from(e: Errno) -> Self {
        PrivateDirError::Sys(e)
    }
}

/// How the last component of a private directory's path is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Last {
    /// Must be the directory itself (runtime dirs, which may sit in a shared /tmp).
    NoFollow,
    /// May be a symlink to it (a store root moved to another disk); the directory it reaches
    /// must still be ours.
    Follow,
}

/// Creates `path` (and missing parents, with the umask's modes) as a directory of mode 0700,
/// or checks an existing one: it must be a directory owned by the effective user. An existing
/// one with group or other bits is made 0700 and reported. Returns an `O_PATH` fd of the
/// directory for `write_private_file` and `open_private_append`.
pub fn ensure_private_dir(
    path: &Path,
    last: Last,
) -> Result<(OwnedFd, Tightened), PrivateDirError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    }
    match rustix::fs::mkdir(path, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let mut flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if last == Last::NoFollow {
        flags |= OFlags::NOFOLLOW;
    }
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR) | Err(Errno::LOOP) => return Err(PrivateDirError::NotADirectory),
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me {
        return Err(PrivateDirError::OwnedBy(st.st_uid));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 == 0 {
        return Ok((fd, Tightened::No));
    }
    // An O_PATH fd can't be fchmod'ed; its /proc magic link names exactly this inode.
    chmod_fd(fd.as_fd(), 0o700)?;
    Ok((fd, Tightened::From(mode)))
}

fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::chmod(p.as_str(), Mode::from_raw_mode(mode))
}

/// Replaces `name` in the directory `dir` with a new file of mode 0600 holding `bytes`: written
/// under a fresh name with `O_EXCL` (never through an existing file or symlink), then renamed.
pub fn write_private_file(dir: BorrowedFd<'_>, name: &CStr, bytes: &[u8]) -> Result<(), Errno> {
    let tmp = format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id());
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    let f = rustix::fs::openat(
        dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let mut off = 0;
    while off < bytes.len() {
        match rustix::io::write(&f, &bytes[off..]) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => off += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    drop(f);
    rustix::fs::renameat(dir, tmp.as_str(), dir, name)
}

/// Opens `name` in `dir` for appending, creating it with mode 0600. Whatever else stands at
/// that name (a symlink, a FIFO, a file of another owner) is never opened through: it is
/// removed and a new file made in its place.
pub fn open_private_append(dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, Errno> {
    match open_append_once(dir, name) {
        Err(Errno::LOOP) | Err(Errno::PERM) | Err(Errno::NXIO) => {
            match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
            open_append_once(dir, name)
        }
        r => r,
    }
}

fn open_append_once(dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, Errno> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::APPEND
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    let regular = rustix::fs::FileType::from_raw_mode(st.st_mode).is_file();
    if !regular || st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(Errno::PERM);
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn creates_tightens_and_refuses() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/run");
        let (_, how) = ensure_private_dir(&d, Last::NoFollow).unwrap();
        assert_eq!(how, Tightened::No);
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o700);

        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (_, how) = ensure_private_dir(&d, Last::NoFollow).unwrap();
        assert_eq!(how, Tightened::From(0o777));
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o700);

        let link = t.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(matches!(
            ensure_private_dir(&link, Last::NoFollow),
            Err(PrivateDirError::NotADirectory)
        ));
        // A store root may be a symlink to the real directory.
        assert!(ensure_private_dir(&link, Last::Follow).is_ok());
        let file = t.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            ensure_private_dir(&file, Last::Follow),
            Err(PrivateDirError::NotADirectory)
        ));
    }

    #[test]
    fn files_never_follow_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let (fd, _) = ensure_private_dir(&t.path().join("run"), Last::NoFollow).unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, t.path().join("run/x.pid")).unwrap();
        std::os::unix::fs::symlink(&victim, t.path().join("run/x.log")).unwrap();
        write_private_file(fd.as_fd(), c"x.pid", b"123\n").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let pid = t.path().join("run/x.pid");
        assert_eq!(std::fs::read(&pid).unwrap(), b"123\n");
        assert_eq!(std::fs::metadata(&pid).unwrap().mode() & 0o7777, 0o600);
        let log = open_private_append(fd.as_fd(), c"x.log").unwrap();
        rustix::io::write(&log, b"entry").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let log = t.path().join("run/x.log");
        assert!(std::fs::symlink_metadata(&log).unwrap().is_file());
        assert_eq!(std::fs::read(&log).unwrap(), b"entry");
    }
}
