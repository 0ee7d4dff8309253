//! Thin syscall helpers over rustix, shared by the overlay, the store and the daemon.
//! All `unsafe` in the crate lives under this module, each block with a `// SAFETY:` line.
//!
//! Paths handed to these functions are relative to a held directory fd (a layer root, the
//! workdir); xattr calls, which have no `*at` form, go through `/proc/self/fd/N/REL`.
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, SeekFrom, Stat};
use rustix::io::Errno;

pub mod copy;
pub mod nofollow;
pub mod private;

/// `fstatat(dir, rel, AT_SYMLINK_NOFOLLOW)`; `rel` may be "." for the dir itself.
pub fn lstat_at(dir: BorrowedFd<'_>, rel: &CStr) -> Result<Stat, Errno> {
    rustix::fs::statat(dir, rel, AtFlags::SYMLINK_NOFOLLOW)
}

/// True for the kernel overlayfs whiteout: a character device with device number 0/0.
pub fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Opens `rel` beneath `dir` without following a final symlink.
pub fn open_at(
    dir: BorrowedFd<'_>,
    rel: &CStr,
    flags: OFlags,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        rel,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(mode),
    )
}

/// An `O_PATH` directory fd, the handle every layer is reached through.
pub fn open_dir_path(path: &std::path::Path) -> Result<OwnedFd, Errno> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Creates the overlay whiteout (char 0/0) `rel` beneath `dir`.
pub fn mknod_whiteout(dir: BorrowedFd<'_>, rel: &CStr) -> Result<(), Errno> {
    rustix::fs::mknodat(dir, rel, FileType::CharacterDevice, Mode::empty(), 0)
}

pub fn rename(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
    flags: RenameFlags,
) -> Result<(), Errno> {
    rustix::fs::renameat_with(from_dir, from, to_dir, to, flags)
}

/// The `/proc/self/fd/N/REL` spelling of `rel` beneath `dir`, for calls with no `*at` form.
pub fn proc_path(dir: BorrowedFd<'_>, rel: &CStr) -> CString {
    // Always a component after the fd's magic link ("N/." for the directory itself): the
    // `l*` xattr calls would otherwise act on the link, which holds no xattrs.
    let mut v = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    v.extend_from_slice(rel.to_bytes());
    // A CStr holds no NUL, so neither does the joined path.
    CString::new(v).unwrap_or_default()
}

/// Reads xattr `name` of `rel` (not following a final symlink). `Ok(None)` when it is absent.
pub fn lgetxattr(dir: BorrowedFd<'_>, rel: &CStr, name: &CStr) -> Result<Option<Vec<u8>>, Errno> {
    let p = proc_path(dir, rel);
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(p.as_c_str(), name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA) => return Ok(None),
            Err(Errno::RANGE) => {
                let n = rustix::fs::lgetxattr(p.as_c_str(), name, &mut [0u8; 0][..])?;
                buf.resize(n.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Lists xattr names of `rel` (not following a final symlink).
pub fn llistxattr(dir: BorrowedFd<'_>, rel: &CStr) -> Result<Vec<CString>, Errno> {
    let p = proc_path(dir, rel);
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(p.as_c_str(), &mut buf[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) => {
                let n = rustix::fs::llistxattr(p.as_c_str(), &mut [0u8; 0][..])?;
                buf.resize(n.max(buf.len() * 2), 0);
            }
            Err(Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
    };
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| CString::new(s).ok())
        .collect())
}

pub fn lsetxattr(
    dir: BorrowedFd<'_>,
    rel: &CStr,
    name: &CStr,
    value: &[u8],
    flags: i32,
) -> Result<(), Errno> {
    let f = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
    rustix::fs::lsetxattr(proc_path(dir, rel).as_c_str(), name, value, f)
}

pub fn lremovexattr(dir: BorrowedFd<'_>, rel: &CStr, name: &CStr) -> Result<(), Errno> {
    rustix::fs::lremovexattr(proc_path(dir, rel).as_c_str(), name)
}

/// Joins a relative directory path and a name: ("." , "a") -> "a", ("x/y", "a") -> "x/y/a".
pub fn join(dir: &CStr, name: &OsStr) -> CString {
    let d = dir.to_bytes();
    let mut v = Vec::with_capacity(d.len() + 1 + name.len());
    if d != b"." {
        v.extend_from_slice(d);
        v.push(b'/');
    }
    v.extend_from_slice(name.as_bytes());
    CString::new(v).unwrap_or_default()
}

pub fn cstr(name: &OsStr) -> Result<CString, Errno> {
    CString::new(name.as_bytes()).map_err(|_| Errno::INVAL)
}

/// Where the next data starts at or after `off` (`SEEK_DATA`), `None` past the last data.
pub fn seek_data(fd: BorrowedFd<'_>, off: u64) -> Result<Option<u64>, Errno> {
    match rustix::fs::seek(fd, SeekFrom::Data(off)) {
        Ok(o) => Ok(Some(o)),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn seek_hole(fd: BorrowedFd<'_>, off: u64) -> Result<u64, Errno> {
    rustix::fs::seek(fd, SeekFrom::Hole(off))
}

/// Sets this process's file mode creation mask; the daemon runs with 0 so that the modes the
/// kernel sends (already masked by the caller's umask) land on disk unchanged.
pub fn set_umask(mask: u32) {
    rustix::process::umask(Mode::from_raw_mode(mask));
}

/// Forks. In the child returns `Ok(None)`, in the parent `Ok(Some(child_pid))`.
///
/// # Safety
/// Only while the process is single-threaded: a child forked from a threaded process inherits
/// locks other threads held (the allocator's among them) and may deadlock.
pub unsafe fn fork() -> Result<Option<i32>, Errno> {
    // SAFETY: the caller guarantees the process is single-threaded (this function's contract),
    // so the child inherits no locks held by other threads.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => Ok(None),
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Some(child.as_raw())),
        Err(e) => Err(Errno::from_raw_os_error(e as i32)),
    }
}

/// Waits until process `pid` (not necessarily our child) has exited, with a pidfd: no polling
/// loop, no sleep. Returns at once if it is already gone.
pub fn wait_pid_exit(pid: i32, timeout_ms: i32) -> Result<bool, Errno> {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return Ok(true);
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Ok(true),
        Err(e) => return Err(e),
    };
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec {
        tv_sec: i64::from(timeout_ms / 1000),
        tv_nsec: i64::from(timeout_ms % 1000) * 1_000_000,
    };
    let n = rustix::event::poll(&mut fds, Some(&ts))?;
    Ok(n > 0)
}

/// Points stdin and stdout at /dev/null and stderr at `log` (see `private::open_private_append`),
/// or at /dev/null too without one: a daemon's last step before serving, so that it holds no
/// pipe of the process that started it (podman reads the mount program's stderr to its end).
pub fn detach_stdio(log: Option<OwnedFd>) -> Result<(), Errno> {
    let null = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    let err = log.as_ref().unwrap_or(&null);
    for (from, target) in [(&null, 0), (&null, 1), (err, 2)] {
        // SAFETY: fds 0..2 are the standard streams of this process; dup2 over them replaces
        // them atomically and we never hold Rust objects that own those numbers.
        let rc = unsafe { libc::dup2(from.as_fd().as_raw_fd(), target) };
        if rc < 0 {
            return Err(Errno::from_raw_os_error(
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO),
            ));
        }
    }
    Ok(())
}

/// An all-zero `stat`, for replies that carry no attributes.
pub fn zeroed_stat() -> Stat {
    // SAFETY: `Stat` is a plain C struct of integers, for which all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}
