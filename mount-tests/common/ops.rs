//! Filesystem operations as data, and their outcomes as comparable strings.
//!
//! An outcome is `ok: VALUE` or `err: ERRNO`, where VALUE holds only what two correct
//! implementations agree on (never inode numbers or current times).
use std::collections::HashMap;
use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{
    Access, AtFlags, CWD, FallocateFlags, FileType, Mode, OFlags, RenameFlags, SeekFrom, Timespec,
    Timestamps, XattrFlags,
};
use rustix::io::Errno;

use super::mount::Mount;
use super::tree::{View, file_type_name, mtime_class, summarize};

/// Bytes to write, shown short in reports.
#[derive(Clone, PartialEq, Eq)]
pub struct Data(pub Vec<u8>);

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&summarize(&self.0))
    }
}

impl From<&str> for Data {
    fn from(s: &str) -> Data {
        Data(s.as_bytes().to_vec())
    }
}

impl From<Vec<u8>> for Data {
    fn from(v: Vec<u8>) -> Data {
        Data(v)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fifo,
    Sock,
    Chr,
    Blk,
    Reg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    Data,
    Hole,
}

/// One operation; paths are relative to the mount point ("" is the root).
#[derive(Clone, Debug)]
pub enum Op {
    Stat(String),
    Lstat(String),
    Read(String),
    ReadAt(String, u64, usize),
    /// open(O_WRONLY|O_CREAT|O_TRUNC, 0644) + write
    Write(String, Data),
    /// open(O_WRONLY|O_APPEND) + write
    Append(String, Data),
    /// open(O_WRONLY) + pwrite
    Pwrite(String, u64, Data),
    /// truncate(2) by path
    Truncate(String, u64),
    /// open with raw flags and mode, then close
    Open(String, i32, u32),
    Unlink(String),
    Rmdir(String),
    Mkdir(String, u32),
    Mknod(String, Kind, u32, u32, u32),
    /// Symlink(target, path)
    Symlink(String, String),
    /// Link(existing, new)
    Link(String, String),
    Readlink(String),
    /// renameat2 with raw RENAME_* flags
    Rename(String, String, u32),
    Chmod(String, u32),
    Chown(String, u32, u32),
    Lchown(String, u32, u32),
    /// utimensat(atime, mtime) in seconds, following symlinks
    Utimes(String, i64, i64),
    /// lsetxattr with raw XATTR_* flags
    SetXattr(String, String, Data, u32),
    GetXattr(String, String),
    ListXattr(String),
    RemoveXattr(String, String),
    /// Names and d_types, sorted; flags duplicates and an order that changes between passes.
    Readdir(String),
    /// Seeks to every entry's d_off and checks the listing continues with the next entry.
    ReaddirSeek(String),
    /// Names whose readdir d_ino differs from their lstat st_ino.
    ReaddirIno(String),
    Statfs(String),
    /// fsync + fdatasync on a fd opened read-only (false) or write-only (true)
    Fsync(String, bool),
    FsyncDir(String),
    /// fallocate(raw FALLOC_FL_* mode, offset, len) on an O_WRONLY fd
    Fallocate(String, u32, u64, u64),
    Seek(String, Whence, u64),
    /// copy_file_range(src, dst (created 0644), off_in, off_out, len)
    CopyRange(String, String, u64, u64, u64),
    /// access(2) with raw R_OK/W_OK/X_OK bits (0 = F_OK)
    Access(String, u32),
    FdOpen(u8, String, i32, u32),
    FdWrite(u8, Data),
    FdRead(u8, usize),
    FdPread(u8, u64, usize),
    FdStat(u8),
    FdClose(u8),
    FdTruncate(u8, u64),
    FdChmod(u8, u32),
    FdFsync(u8),
    /// Unmount and mount the same dirs again (open fds are closed first).
    Remount,
    /// Remembers lstat's st_ino of a path in a slot.
    InoSave(String, u8),
    /// Whether lstat's st_ino of a path equals the one in the slot.
    InoSame(String, u8),
    /// Runs the operation with fsuid/fsgid set (file capabilities dropped by the kernel).
    As(u32, u32, Box<Op>),
}

/// The mount an operation sequence runs on, with its open fds and remembered inode numbers.
pub struct Ctx {
    pub mount: Mount,
    fds: HashMap<u8, OwnedFd>,
    inos: HashMap<u8, u64>,
}

pub fn errno_name(e: Errno) -> String {
    errno_raw_name(e.raw_os_error())
}

pub fn errno_raw_name(n: i32) -> String {
    let name = match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETXTBSY => "ETXTBSY",
        libc::ESTALE => "ESTALE",
        _ => return format!("errno {n}"),
    };
    name.into()
}

fn io_err(e: std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_raw_name(n),
        None => format!("io: {e}"),
    }
}

type R = Result<String, String>;

fn ok() -> R {
    Ok(String::new())
}

/// The comparable part of a stat result; `hole` says whether a regular file has a hole
/// (SEEK_HOLE before its end), see `tree::has_hole`.
pub fn fmt_md(md: &std::fs::Metadata, hole: Option<bool>) -> String {
    let ft = md.file_type();
    let mut s = format!(
        "{} {:04o} {}:{}",
        file_type_name(ft, md.rdev(), View::Merged),
        md.mode() & 0o7777,
        md.uid(),
        md.gid()
    );
    if !ft.is_dir() {
        s += &format!(" size={} nlink={}", md.size(), md.nlink());
    }
    if ft.is_char_device() || ft.is_block_device() {
        s += &format!(
            " rdev={}:{}",
            rustix::fs::major(md.rdev()),
            rustix::fs::minor(md.rdev())
        );
    }
    if !ft.is_symlink() {
        s += &format!(" mtime={}", mtime_class(md.mtime()));
    }
    if let (true, Some(h)) = (ft.is_file() && md.size() > 0, hole) {
        s += &format!(" sparse={h}");
    }
    s
}

fn open(path: &Path, flags: i32, mode: u32) -> Result<OwnedFd, String> {
    rustix::fs::openat(
        CWD,
        path,
        OFlags::from_bits_retain(flags as u32) | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(errno_name)
}

fn write_all(fd: impl AsFd, data: &[u8]) -> R {
    let mut done = 0;
    while done < data.len() {
        match rustix::io::write(&fd, &data[done..]) {
            Ok(0) => return Err("short write".into()),
            Ok(n) => done += n,
            Err(e) => return Err(errno_name(e)),
        }
    }
    Ok(done.to_string())
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn ts(secs: i64) -> Timespec {
    Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    }
}

impl Ctx {
    pub fn new(mount: Mount) -> Ctx {
        Ctx {
            mount,
            fds: HashMap::new(),
            inos: HashMap::new(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mount.path().to_path_buf()
        } else {
            self.mount.path().join(rel)
        }
    }

    fn fd(&self, slot: u8) -> Result<&OwnedFd, String> {
        self.fds
            .get(&slot)
            .ok_or_else(|| format!("no fd in slot {slot}"))
    }

    /// Closes every fd the sequence left open (before an unmount).
    pub fn close_all(&mut self) {
        self.fds.clear();
    }

    pub fn into_mount(mut self) -> Mount {
        self.close_all();
        self.mount
    }

    /// Runs one operation and renders its outcome.
    pub fn apply(&mut self, op: &Op) -> String {
        match self.run(op) {
            Ok(v) if v.is_empty() => "ok".into(),
            Ok(v) => format!("ok: {v}"),
            Err(e) => format!("err: {e}"),
        }
    }

    fn run(&mut self, op: &Op) -> R {
        match op {
            Op::Stat(p) => std::fs::metadata(self.p(p))
                .map(|m| fmt_md(&m, super::tree::has_hole_at(&self.p(p), &m)))
                .map_err(io_err),
            Op::Lstat(p) => std::fs::symlink_metadata(self.p(p))
                .map(|m| fmt_md(&m, super::tree::has_hole_at(&self.p(p), &m)))
                .map_err(io_err),
            Op::Read(p) => std::fs::read(self.p(p))
                .map(|d| summarize(&d))
                .map_err(io_err),
            Op::ReadAt(p, off, len) => {
                let fd = open(&self.p(p), libc::O_RDONLY, 0)?;
                let mut buf = vec![0u8; *len];
                let n = rustix::io::pread(&fd, &mut buf, *off).map_err(errno_name)?;
                Ok(summarize(&buf[..n]))
            }
            Op::Write(p, d) => {
                let fd = open(
                    &self.p(p),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                    0o644,
                )?;
                write_all(fd, &d.0)
            }
            Op::Append(p, d) => {
                write_all(open(&self.p(p), libc::O_WRONLY | libc::O_APPEND, 0)?, &d.0)
            }
            Op::Pwrite(p, off, d) => {
                let fd = open(&self.p(p), libc::O_WRONLY, 0)?;
                let n = rustix::io::pwrite(&fd, &d.0, *off).map_err(errno_name)?;
                Ok(n.to_string())
            }
            Op::Truncate(p, len) => {
                // SAFETY: a valid NUL-terminated path; truncate(2) does not keep the pointer.
                let r = unsafe { libc::truncate(cstr(&self.p(p)).as_ptr(), *len as libc::off_t) };
                if r == 0 {
                    ok()
                } else {
                    Err(io_err(std::io::Error::last_os_error()))
                }
            }
            Op::Open(p, flags, mode) => open(&self.p(p), *flags, *mode).map(|_| String::new()),
            Op::Unlink(p) => rustix::fs::unlink(self.p(p))
                .map(|_| String::new())
                .map_err(errno_name),
            Op::Rmdir(p) => rustix::fs::rmdir(self.p(p))
                .map(|_| String::new())
                .map_err(errno_name),
            Op::Mkdir(p, mode) => rustix::fs::mkdir(self.p(p), Mode::from_raw_mode(*mode))
                .map(|_| String::new())
                .map_err(errno_name),
            Op::Mknod(p, kind, mode, ma, mi) => {
                let ft = match kind {
                    Kind::Fifo => FileType::Fifo,
                    Kind::Sock => FileType::Socket,
                    Kind::Chr => FileType::CharacterDevice,
                    Kind::Blk => FileType::BlockDevice,
                    Kind::Reg => FileType::RegularFile,
                };
                let dev = rustix::fs::makedev(*ma, *mi);
                rustix::fs::mknodat(CWD, self.p(p), ft, Mode::from_raw_mode(*mode), dev)
                    .map(|_| String::new())
                    .map_err(errno_name)
            }
            Op::Symlink(target, p) => rustix::fs::symlink(target.as_str(), self.p(p))
                .map(|_| String::new())
                .map_err(errno_name),
            Op::Link(a, b) => rustix::fs::link(self.p(a), self.p(b))
                .map(|_| String::new())
                .map_err(errno_name),
            Op::Readlink(p) => std::fs::read_link(self.p(p))
                .map(|t| t.display().to_string())
                .map_err(io_err),
            Op::Rename(a, b, flags) => rustix::fs::renameat_with(
                CWD,
                self.p(a),
                CWD,
                self.p(b),
                RenameFlags::from_bits_retain(*flags),
            )
            .map(|_| String::new())
            .map_err(errno_name),
            Op::Chmod(p, mode) => rustix::fs::chmod(self.p(p), Mode::from_raw_mode(*mode))
                .map(|_| String::new())
                .map_err(errno_name),
            Op::Chown(p, u, g) => std::os::unix::fs::chown(self.p(p), Some(*u), Some(*g))
                .map(|_| String::new())
                .map_err(io_err),
            Op::Lchown(p, u, g) => std::os::unix::fs::lchown(self.p(p), Some(*u), Some(*g))
                .map(|_| String::new())
                .map_err(io_err),
            Op::Utimes(p, a, m) => {
                let t = Timestamps {
                    last_access: ts(*a),
                    last_modification: ts(*m),
                };
                rustix::fs::utimensat(CWD, self.p(p), &t, AtFlags::empty())
                    .map(|_| String::new())
                    .map_err(errno_name)
            }
            Op::SetXattr(p, name, v, flags) => rustix::fs::lsetxattr(
                self.p(p),
                name.as_str(),
                &v.0,
                XattrFlags::from_bits_retain(*flags),
            )
            .map(|_| String::new())
            .map_err(errno_name),
            Op::GetXattr(p, name) => {
                let mut buf = vec![0u8; 65536];
                rustix::fs::lgetxattr(self.p(p), name.as_str(), &mut buf)
                    .map(|n| summarize(&buf[..n]))
                    .map_err(errno_name)
            }
            Op::ListXattr(p) => super::tree::list_xattrs(&self.p(p))
                .map(|v| v.join(" "))
                .map_err(|e| e.trim_start_matches("listxattr: ").to_string()),
            Op::RemoveXattr(p, name) => rustix::fs::lremovexattr(self.p(p), name.as_str())
                .map(|_| String::new())
                .map_err(errno_name),
            Op::Readdir(p) => readdir_outcome(&self.p(p)),
            Op::ReaddirSeek(p) => readdir_seek(&self.p(p)),
            Op::ReaddirIno(p) => readdir_ino(&self.p(p)),
            Op::Statfs(p) => {
                let s = rustix::fs::statfs(self.p(p)).map_err(errno_name)?;
                if s.f_bsize > 0 && s.f_blocks > 0 && s.f_namelen > 0 {
                    Ok("sane".into())
                } else {
                    Ok(format!(
                        "bsize={} blocks={} namelen={}",
                        s.f_bsize, s.f_blocks, s.f_namelen
                    ))
                }
            }
            Op::Fsync(p, write) => {
                let flags = if *write {
                    libc::O_WRONLY
                } else {
                    libc::O_RDONLY
                };
                let fd = open(&self.p(p), flags, 0)?;
                rustix::fs::fsync(&fd).map_err(errno_name)?;
                rustix::fs::fdatasync(&fd).map_err(errno_name)?;
                ok()
            }
            Op::FsyncDir(p) => {
                let fd = open(&self.p(p), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                rustix::fs::fsync(&fd).map_err(errno_name)?;
                ok()
            }
            Op::Fallocate(p, mode, off, len) => {
                let fd = open(&self.p(p), libc::O_WRONLY, 0)?;
                rustix::fs::fallocate(&fd, FallocateFlags::from_bits_retain(*mode), *off, *len)
                    .map_err(errno_name)?;
                let hole = super::tree::has_hole(&fd);
                let md = std::fs::File::from(fd).metadata().map_err(io_err)?;
                Ok(fmt_md(&md, Some(hole)))
            }
            Op::Seek(p, whence, off) => {
                let fd = open(&self.p(p), libc::O_RDONLY, 0)?;
                let pos = match whence {
                    Whence::Data => SeekFrom::Data(*off),
                    Whence::Hole => SeekFrom::Hole(*off),
                };
                rustix::fs::seek(&fd, pos)
                    .map(|o| o.to_string())
                    .map_err(errno_name)
            }
            Op::CopyRange(src, dst, off_in, off_out, len) => {
                let i = open(&self.p(src), libc::O_RDONLY, 0)?;
                let o = open(&self.p(dst), libc::O_WRONLY | libc::O_CREAT, 0o644)?;
                let (mut oi, mut oo, mut left, mut total) = (*off_in, *off_out, *len, 0u64);
                while left > 0 {
                    let n = rustix::fs::copy_file_range(
                        &i,
                        Some(&mut oi),
                        &o,
                        Some(&mut oo),
                        left as usize,
                    )
                    .map_err(errno_name)?;
                    if n == 0 {
                        break;
                    }
                    left -= n as u64;
                    total += n as u64;
                }
                Ok(total.to_string())
            }
            Op::Access(p, mode) => rustix::fs::accessat(
                CWD,
                self.p(p),
                Access::from_bits_retain(*mode),
                AtFlags::empty(),
            )
            .map(|_| String::new())
            .map_err(errno_name),
            Op::FdOpen(slot, p, flags, mode) => {
                let fd = open(&self.p(p), *flags, *mode)?;
                self.fds.insert(*slot, fd);
                ok()
            }
            Op::FdWrite(slot, d) => write_all(self.fd(*slot)?, &d.0),
            Op::FdRead(slot, len) => {
                let mut buf = vec![0u8; *len];
                let n = rustix::io::read(self.fd(*slot)?, &mut buf).map_err(errno_name)?;
                Ok(summarize(&buf[..n]))
            }
            Op::FdPread(slot, off, len) => {
                let mut buf = vec![0u8; *len];
                let n = rustix::io::pread(self.fd(*slot)?, &mut buf, *off).map_err(errno_name)?;
                Ok(summarize(&buf[..n]))
            }
            Op::FdStat(slot) => {
                let fd = self.fd(*slot)?.try_clone().map_err(io_err)?;
                let hole = super::tree::has_hole(&fd);
                let md = std::fs::File::from(fd).metadata().map_err(io_err)?;
                Ok(fmt_md(&md, Some(hole)))
            }
            Op::FdClose(slot) => self
                .fds
                .remove(slot)
                .map(|_| String::new())
                .ok_or("no fd".into()),
            Op::FdTruncate(slot, len) => rustix::fs::ftruncate(self.fd(*slot)?, *len)
                .map(|_| String::new())
                .map_err(errno_name),
            Op::FdChmod(slot, mode) => {
                rustix::fs::fchmod(self.fd(*slot)?, Mode::from_raw_mode(*mode))
                    .map(|_| String::new())
                    .map_err(errno_name)
            }
            Op::FdFsync(slot) => rustix::fs::fsync(self.fd(*slot)?)
                .map(|_| String::new())
                .map_err(errno_name),
            Op::Remount => {
                self.close_all();
                self.mount.remount().map(|_| String::new()).map_err(|e| {
                    eprintln!("remount: {e}");
                    "remount failed".to_string()
                })
            }
            Op::InoSave(p, slot) => {
                let md = std::fs::symlink_metadata(self.p(p)).map_err(io_err)?;
                self.inos.insert(*slot, md.ino());
                ok()
            }
            Op::InoSame(p, slot) => {
                let md = std::fs::symlink_metadata(self.p(p)).map_err(io_err)?;
                match self.inos.get(slot) {
                    Some(i) if *i == md.ino() => Ok("same".into()),
                    Some(_) => Ok("different".into()),
                    None => Err(format!("no inode in slot {slot}")),
                }
            }
            Op::As(uid, gid, inner) => {
                let (uid, gid) = (*uid, *gid);
                std::thread::scope(|s| {
                    s.spawn(move || {
                        set_fs_ids(uid, gid);
                        self.run(inner)
                    })
                    .join()
                    .unwrap_or_else(|_| Err("panic in As".into()))
                })
            }
        }
    }
}

/// Sets this thread's fsuid/fsgid. glibc's setfsuid/setfsgid are per-thread syscalls; the
/// kernel drops the file capabilities when fsuid leaves 0.
fn set_fs_ids(uid: u32, gid: u32) {
    // SAFETY: plain syscalls on the calling thread's credentials; no memory is involved.
    unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
    }
}

struct DirEnt {
    name: String,
    kind: &'static str,
    ino: u64,
    off: i64,
}

fn list_dir(path: &Path) -> Result<Vec<DirEnt>, String> {
    let fd = open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut dir = rustix::fs::Dir::new(fd).map_err(errno_name)?;
    let mut out = Vec::new();
    while let Some(e) = dir.read() {
        let e = e.map_err(errno_name)?;
        out.push(DirEnt {
            name: e.file_name().to_string_lossy().into_owned(),
            kind: dtype_name(e.file_type()),
            ino: e.ino(),
            off: e.offset(),
        });
    }
    Ok(out)
}

fn dtype_name(ft: FileType) -> &'static str {
    match ft {
        FileType::Directory => "d",
        FileType::RegularFile => "f",
        FileType::Symlink => "l",
        FileType::Fifo => "p",
        FileType::Socket => "s",
        FileType::CharacterDevice => "c",
        FileType::BlockDevice => "b",
        FileType::Unknown => "?",
    }
}

fn readdir_outcome(path: &Path) -> R {
    let first = list_dir(path)?;
    let second = list_dir(path)?;
    let order = |v: &[DirEnt]| v.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    let mut names: Vec<String> = first
        .iter()
        .map(|e| format!("{}:{}", e.name, e.kind))
        .collect();
    names.sort();
    let mut s = names.join(" ");
    let mut dedup = names.clone();
    dedup.dedup();
    if dedup.len() != names.len() {
        s += " DUPLICATES";
    }
    if order(&first) != order(&second) {
        s += " UNSTABLE-ORDER";
    }
    Ok(s)
}

fn readdir_seek(path: &Path) -> R {
    let all = list_dir(path)?;
    for k in 1..all.len() {
        let fd = open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let mut dir = rustix::fs::Dir::new(fd).map_err(errno_name)?;
        dir.seek(all[k - 1].off).map_err(errno_name)?;
        let next = match dir.read() {
            Some(Ok(e)) => e.file_name().to_string_lossy().into_owned(),
            Some(Err(e)) => return Ok(format!("after seek to entry {k}: {}", errno_name(e))),
            None => "<end>".into(),
        };
        if next != all[k].name {
            return Ok(format!("seek to d_off of entry {}: got {next}", k - 1));
        }
    }
    Ok(format!("{} entries resumable", all.len()))
}

fn readdir_ino(path: &Path) -> R {
    let mut bad = Vec::new();
    for e in list_dir(path)? {
        if e.name == ".." {
            continue;
        }
        let md = std::fs::symlink_metadata(path.join(&e.name)).map_err(io_err)?;
        if md.ino() != e.ino {
            bad.push(e.name);
        }
    }
    bad.sort();
    Ok(if bad.is_empty() {
        "d_ino == st_ino".into()
    } else {
        format!("d_ino != st_ino for {}", bad.join(" "))
    })
}

// Short constructors: scenarios read as one line each.
pub fn stat(p: &str) -> Op {
    Op::Stat(p.into())
}
pub fn lstat(p: &str) -> Op {
    Op::Lstat(p.into())
}
pub fn read(p: &str) -> Op {
    Op::Read(p.into())
}
pub fn write(p: &str, d: &str) -> Op {
    Op::Write(p.into(), d.into())
}
pub fn append(p: &str, d: &str) -> Op {
    Op::Append(p.into(), d.into())
}
pub fn pwrite(p: &str, off: u64, d: &str) -> Op {
    Op::Pwrite(p.into(), off, d.into())
}
pub fn truncate(p: &str, len: u64) -> Op {
    Op::Truncate(p.into(), len)
}
pub fn open_flags(p: &str, flags: i32, mode: u32) -> Op {
    Op::Open(p.into(), flags, mode)
}
pub fn unlink(p: &str) -> Op {
    Op::Unlink(p.into())
}
pub fn rmdir(p: &str) -> Op {
    Op::Rmdir(p.into())
}
pub fn mkdir(p: &str, mode: u32) -> Op {
    Op::Mkdir(p.into(), mode)
}
pub fn mknod(p: &str, kind: Kind, mode: u32, ma: u32, mi: u32) -> Op {
    Op::Mknod(p.into(), kind, mode, ma, mi)
}
pub fn symlink(target: &str, p: &str) -> Op {
    Op::Symlink(target.into(), p.into())
}
pub fn link(a: &str, b: &str) -> Op {
    Op::Link(a.into(), b.into())
}
pub fn readlink(p: &str) -> Op {
    Op::Readlink(p.into())
}
pub fn rename(a: &str, b: &str) -> Op {
    Op::Rename(a.into(), b.into(), 0)
}
pub fn rename_noreplace(a: &str, b: &str) -> Op {
    Op::Rename(a.into(), b.into(), libc::RENAME_NOREPLACE)
}
pub fn rename_exchange(a: &str, b: &str) -> Op {
    Op::Rename(a.into(), b.into(), libc::RENAME_EXCHANGE)
}
pub fn chmod(p: &str, mode: u32) -> Op {
    Op::Chmod(p.into(), mode)
}
pub fn chown(p: &str, u: u32, g: u32) -> Op {
    Op::Chown(p.into(), u, g)
}
pub fn lchown(p: &str, u: u32, g: u32) -> Op {
    Op::Lchown(p.into(), u, g)
}
pub fn utimes(p: &str, a: i64, m: i64) -> Op {
    Op::Utimes(p.into(), a, m)
}
pub fn setx(p: &str, name: &str, v: &str) -> Op {
    Op::SetXattr(p.into(), name.into(), v.into(), 0)
}
pub fn setx_flags(p: &str, name: &str, v: &str, flags: u32) -> Op {
    Op::SetXattr(p.into(), name.into(), v.into(), flags)
}
pub fn getx(p: &str, name: &str) -> Op {
    Op::GetXattr(p.into(), name.into())
}
pub fn listx(p: &str) -> Op {
    Op::ListXattr(p.into())
}
pub fn rmx(p: &str, name: &str) -> Op {
    Op::RemoveXattr(p.into(), name.into())
}
pub fn readdir(p: &str) -> Op {
    Op::Readdir(p.into())
}
pub fn readdir_seek_op(p: &str) -> Op {
    Op::ReaddirSeek(p.into())
}
pub fn readdir_ino_op(p: &str) -> Op {
    Op::ReaddirIno(p.into())
}
pub fn seek_data(p: &str, off: u64) -> Op {
    Op::Seek(p.into(), Whence::Data, off)
}
pub fn seek_hole(p: &str, off: u64) -> Op {
    Op::Seek(p.into(), Whence::Hole, off)
}
pub fn access(p: &str, mode: u32) -> Op {
    Op::Access(p.into(), mode)
}
pub fn as_user(uid: u32, gid: u32, op: Op) -> Op {
    Op::As(uid, gid, Box::new(op))
}
pub fn ino_save(p: &str, slot: u8) -> Op {
    Op::InoSave(p.into(), slot)
}
pub fn ino_same(p: &str, slot: u8) -> Op {
    Op::InoSame(p.into(), slot)
}
pub fn fd_open(slot: u8, p: &str, flags: i32) -> Op {
    Op::FdOpen(slot, p.into(), flags, 0o644)
}
pub fn fd_write(slot: u8, d: &str) -> Op {
    Op::FdWrite(slot, d.into())
}
pub fn fd_pread(slot: u8, off: u64, len: usize) -> Op {
    Op::FdPread(slot, off, len)
}
