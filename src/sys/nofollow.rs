//! Calls that never follow a symlink, for layers an attacker may write at any moment.
//!
//! The overlay reaches every entry as (directory fd, one name) and acts either on that pair with
//! a call that does not follow a final symlink (`fstatat`/`fchownat`/`utimensat` with
//! `AT_SYMLINK_NOFOLLOW`, `fchmodat2`, `unlinkat`, `renameat2`, `linkat` without
//! `AT_SYMLINK_FOLLOW`, `O_NOFOLLOW` opens), or on an fd opened `O_NOFOLLOW` whose type was
//! checked with `fstat` (`AT_EMPTY_PATH` forms, `/proc/self/fd/N` for calls that have no fd form
//! on an `O_PATH` fd). Names handed in here are single components: the overlay never builds a
//! path, so no intermediate component can be swapped for a symlink and depth has no limit.
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Stat, Timestamps, Uid};
use rustix::io::Errno;

/// Opens the directory `name` beneath `dir` without following a symlink: readable when the
/// caller may read it (so xattrs and fsync work on the fd), else `O_PATH`. A symlink or a
/// non-directory there gives ENOTDIR.
pub fn open_dir(dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, Errno> {
    let base = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, base | OFlags::RDONLY, Mode::empty()) {
        Err(Errno::ACCESS) => rustix::fs::openat(dir, name, base | OFlags::PATH, Mode::empty()),
        r => r,
    }
}

/// An `O_PATH | O_NOFOLLOW` fd of `name` beneath `dir` (the entry itself, even a symlink).
pub fn open_path(dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the regular file `name` beneath `dir` with `flags`, never following a symlink and
/// never blocking on a FIFO planted in its place: anything but a regular file gives ESTALE
/// (and is closed again at once). `O_NONBLOCK` stays only when `flags` asks for it.
pub fn open_regular(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: OFlags,
    mode: u32,
) -> Result<(OwnedFd, Stat), Errno> {
    let all = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(dir, name, all, Mode::from_raw_mode(mode)).map_err(stale_loop)?;
    let st = rustix::fs::fstat(&fd)?;
    if super::file_type(&st) != rustix::fs::FileType::RegularFile {
        return Err(Errno::STALE);
    }
    if !flags.contains(OFlags::NONBLOCK) {
        // F_SETFL changes only the status flags (append, noatime, direct, nonblock): setting
        // the caller's own flags drops O_NONBLOCK and keeps the rest.
        rustix::fs::fcntl_setfl(&fd, flags)?;
    }
    Ok((fd, st))
}

/// ELOOP from an `O_NOFOLLOW` open means a symlink sits where a file was: a changed layer.
fn stale_loop(e: Errno) -> Errno {
    if e == Errno::LOOP { Errno::STALE } else { e }
}

/// `fchmodat2(dir, name, mode, AT_SYMLINK_NOFOLLOW)` (Linux 6.6+); on older kernels the same
/// through an `O_PATH | O_NOFOLLOW` fd. A symlink gives EOPNOTSUPP, as for fchmodat2.
pub fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<(), Errno> {
    match fchmodat2(dir, name, mode, libc::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::NOSYS) => {
            let fd = open_path(dir, name)?;
            let st = rustix::fs::fstat(&fd)?;
            if super::file_type(&st) == rustix::fs::FileType::Symlink {
                return Err(Errno::OPNOTSUPP);
            }
            chmod_fd(fd.as_fd(), mode)
        }
        r => r,
    }
}

/// chmod of the file behind `fd` (any fd, `O_PATH` too; never a symlink's fd).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
    match fchmodat2(fd, c"", mode, libc::AT_EMPTY_PATH) {
        Err(Errno::NOSYS | Errno::INVAL) => {
            // chmod(2) of the fd's magic link lands on the fd's own inode.
            rustix::fs::chmod(fd_path(fd).as_c_str(), Mode::from_raw_mode(mode))
        }
        r => r,
    }
}

fn fchmodat2(dir: BorrowedFd<'_>, name: &CStr, mode: u32, flags: i32) -> Result<(), Errno> {
    // SAFETY: fchmodat2 takes a dirfd, a NUL-terminated path that outlives the call, a mode
    // and flags; it writes no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode & 0o7777,
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ))
    }
}

/// chown of the file behind `fd` (any fd; a symlink's `O_PATH` fd changes the symlink).
pub fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
    rustix::fs::chownat(
        fd,
        c"",
        uid.map(Uid::from_raw),
        gid.map(Gid::from_raw),
        AtFlags::EMPTY_PATH,
    )
}

/// Sets the times of the file behind `fd` (any fd; a symlink's `O_PATH` fd: the symlink).
pub fn utimens_fd(fd: BorrowedFd<'_>, times: &Timestamps) -> Result<(), Errno> {
    rustix::fs::utimensat(fd, c"", times, AtFlags::EMPTY_PATH)
}

/// `/proc/self/fd/N`: following it reaches exactly the fd's inode.
pub fn fd_path(fd: BorrowedFd<'_>) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// Where an xattr call acts: an fd of a non-symlink (opened, or `O_PATH`), or one name beneath
/// a directory fd (not followed: for symlinks).
#[derive(Clone, Copy)]
pub enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}

/// Grows `buf` until `f` fits, the usual ERANGE dance of the xattr calls.
fn sized(mut f: impl FnMut(&mut [u8]) -> Result<usize, Errno>) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => {
                let n = f(&mut [0u8; 0][..])?;
                buf.resize(n.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads xattr `name`; `Ok(None)` when absent.
pub fn get_xattr(t: Target<'_>, name: &CStr) -> Result<Option<Vec<u8>>, Errno> {
    let r = match t {
        Target::Fd(fd) => sized(|b| rustix::fs::fgetxattr(fd, name, b)).or_else(|e| match e {
            // An O_PATH fd has no xattr calls of its own: through its magic link.
            Errno::BADF => sized(|b| rustix::fs::getxattr(fd_path(fd).as_c_str(), name, b)),
            e => Err(e),
        }),
        Target::At(dir, rel) => return super::lgetxattr(dir, rel, name),
    };
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Lists xattr names.
pub fn list_xattrs(t: Target<'_>) -> Result<Vec<CString>, Errno> {
    let raw = match t {
        Target::Fd(fd) => sized(|b| rustix::fs::flistxattr(fd, b)).or_else(|e| match e {
            Errno::BADF => sized(|b| rustix::fs::listxattr(fd_path(fd).as_c_str(), b)),
            e => Err(e),
        }),
        Target::At(dir, rel) => return super::llistxattr(dir, rel),
    };
    let raw = match raw {
        Ok(v) => v,
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| CString::new(s).ok())
        .collect())
}

pub fn set_xattr(t: Target<'_>, name: &CStr, value: &[u8], flags: i32) -> Result<(), Errno> {
    let f = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
    match t {
        Target::Fd(fd) => match rustix::fs::fsetxattr(fd, name, value, f) {
            Err(Errno::BADF) => rustix::fs::setxattr(fd_path(fd).as_c_str(), name, value, f),
            r => r,
        },
        Target::At(dir, rel) => super::lsetxattr(dir, rel, name, value, flags),
    }
}

pub fn remove_xattr(t: Target<'_>, name: &CStr) -> Result<(), Errno> {
    match t {
        Target::Fd(fd) => match rustix::fs::fremovexattr(fd, name) {
            Err(Errno::BADF) => rustix::fs::removexattr(fd_path(fd).as_c_str(), name),
            r => r,
        },
        Target::At(dir, rel) => super::lremovexattr(dir, rel, name),
    }
}

/// Hard-links the file behind `fd` (an `O_PATH` fd whose type was checked) as `name` beneath
/// `dir`. `AT_EMPTY_PATH` needs CAP_DAC_READ_SEARCH; without it, `from_dir`/`from_name` is
/// linked (linkat never follows a final symlink).
pub fn link_fd(
    fd: BorrowedFd<'_>,
    from_dir: BorrowedFd<'_>,
    from_name: &CStr,
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> Result<(), Errno> {
    match rustix::fs::linkat(fd, c"", dir, name, AtFlags::EMPTY_PATH) {
        Err(Errno::PERM | Errno::NOENT) => {
            rustix::fs::linkat(from_dir, from_name, dir, name, AtFlags::empty())
        }
        r => r,
    }
}

/// Raises this process's soft limit on open files to the hard limit; returns the new soft
/// limit. The overlay keeps a directory fd per directory it has looked up.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one `rlimit` from a struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return want.rlim_cur;
        }
    }
    lim.rlim_cur
}
