//! The `fuser::Filesystem` adapter: each method converts its arguments, calls the overlay, and
//! replies once. No union logic here.
//!
//! Reads and writes of open files go to the kernel through FUSE passthrough when the kernel
//! grants it (one backing file per inode, shared by its open handles); otherwise they are
//! served from the handle's fd with pread/pwrite.
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use fuser::{
    AccessFlags, BackingId, Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

mod attr;
mod dir;
pub mod handles;
mod io;

use crate::overlay::dirops::NewKind;
use crate::overlay::fileops::SetAttr;
use crate::overlay::node::{Node, NodeId};
use crate::overlay::{Caller, Entry, Overlay};
use handles::{DirH, Fh, FileH, Handle, Handles};

#[derive(Debug)]
enum IoMode {
    /// This many handles are open in cached mode.
    Cached(usize),
    /// Handles pass through to this backing file while any holds it.
    Passthrough(Weak<BackingId>),
}

/// The filesystem handed to fuser; its state is shared with the workers that finish slow
/// requests (see `offload`).
pub struct LayerFs(Arc<Inner>);

impl std::ops::Deref for LayerFs {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct Inner {
    ov: Arc<Overlay>,
    handles: Handles,
    ttl: Duration,
    want_passthrough: bool,
    passthrough: AtomicBool,
    /// The I/O mode of every inode with open files (see `io_mode`).
    iomodes: Mutex<HashMap<NodeId, IoMode>>,
    /// Nodes known to have no `security.capability` (see `getxattr`).
    nocaps: Mutex<HashMap<NodeId, Weak<Node>>>,
}

/// The xattr the kernel asks for before every write to a file, to clear it if present.
const CAPS: &[u8] = b"security.capability";

/// Answers an empty reply with the outcome.
fn done(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn errno(e: crate::Error) -> Errno {
    Errno::from_i32(e.errno())
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

impl LayerFs {
    pub fn new(ov: Arc<Overlay>, ttl: Duration, passthrough: bool) -> LayerFs {
        LayerFs(Arc::new(Inner {
            ov,
            handles: Handles::default(),
            ttl,
            want_passthrough: passthrough,
            passthrough: AtomicBool::new(false),
            iomodes: Mutex::new(HashMap::new()),
            nocaps: Mutex::new(HashMap::new()),
        }))
    }

    /// Runs `job` on a thread of its own when `slow` (a copy-up of file data), so that request
    /// threads never wait on bulk I/O; the job answers the request itself. Inline otherwise,
    /// or when no thread can be started.
    fn offload(&self, slow: bool, job: impl FnOnce(&Inner) + Send + 'static) {
        if slow {
            let inner = self.0.clone();
            let slot = Arc::new(Mutex::new(Some(job)));
            let theirs = slot.clone();
            let spawned = std::thread::Builder::new()
                .name("copy-up".into())
                .spawn(move || {
                    if let Some(job) = theirs.lock().take() {
                        job(&inner);
                    }
                });
            if spawned.is_ok() {
                return;
            }
            if let Some(job) = slot.lock().take() {
                job(&self.0);
            }
            return;
        }
        job(&self.0)
    }
}

impl Inner {
    fn node(&self, ino: INodeNo) -> Result<Arc<Node>, Errno> {
        self.ov.node(NodeId(ino.0)).map_err(errno)
    }

    fn reply_entry(&self, reply: ReplyEntry, e: &Entry) {
        let mut a = attr::to_fuse(&e.attr);
        if a.ino.0 == e.node.id.0 {
            reply.entry(&self.ttl, &a, Generation(0));
        } else {
            // fuser sends attr.ino as the node id too. A node showing another inode number
            // (a name of a lower hard link) gets no attribute cache, so that `stat` asks us
            // and sees the number from getattr.
            a.ino = INodeNo(e.node.id.0);
            reply.entry_with_ttls(&Duration::ZERO, &self.ttl, &a, Generation(0));
        }
    }

    /// How long the kernel may keep a node's attributes. A name of a lower hard link gets no
    /// cache: its copy-up changes what it shows (link count, inode number) without any request
    /// the kernel would see as a change to it.
    fn attr_ttl(&self, node: &Node) -> Duration {
        if node.is_per_name() {
            Duration::ZERO
        } else {
            self.ttl
        }
    }

    /// Whether `n` (this very node, not an earlier one under its id) has no capability xattr.
    fn known_nocaps(&self, n: &Arc<Node>) -> bool {
        self.nocaps
            .lock()
            .get(&n.id)
            .and_then(Weak::upgrade)
            .is_some_and(|m| Arc::ptr_eq(&m, n))
    }

    /// Before a set or removal of `name`: capabilities may appear or vanish anywhere (hard
    /// links share them), so every remembered "none" is dropped.
    fn caps_changed(&self, name: &OsStr) {
        if name.as_encoded_bytes() == CAPS {
            self.nocaps.lock().clear();
        }
    }

    pub(super) fn file(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        self.handles.get(Fh(fh.0)).ok_or(Errno::EBADF)
    }

    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        what: NewKind<'_>,
        mode: u32,
    ) -> Result<(Entry, Option<OwnedFd>), Errno> {
        let p = self.node(parent)?;
        self.ov
            .create(&p, name, what, mode, caller(req))
            .map_err(errno)
    }
}

impl fuser::Filesystem for LayerFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.add_capabilities(
            InitFlags::FUSE_PARALLEL_DIROPS
                | InitFlags::FUSE_CACHE_SYMLINKS
                | InitFlags::FUSE_POSIX_ACL
                | InitFlags::FUSE_DO_READDIRPLUS
                | InitFlags::FUSE_READDIRPLUS_AUTO,
        );
        if self.want_passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        log::info!(
            "init: passthrough {}",
            self.passthrough.load(Ordering::Relaxed)
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self
            .node(parent)
            .and_then(|p| self.ov.lookup(&p, name).map_err(errno));
        match r {
            Ok(e) => self.reply_entry(reply, &e),
            // A negative entry the kernel may cache, like overlayfs's negative dentries: a
            // name only appears through this mount, which replaces the entry when it does.
            Err(e) if e == Errno::ENOENT => {
                let mut a = attr::to_fuse(&crate::sys::zeroed_stat());
                a.ino = INodeNo(0);
                reply.entry(&self.ttl, &a, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ov.forget(NodeId(ino.0), nlookup);
        let mut nc = self.nocaps.lock();
        if nc
            .get(&NodeId(ino.0))
            .is_some_and(|w| w.strong_count() == 0)
        {
            nc.remove(&NodeId(ino.0));
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.node(ino).and_then(|n| {
            // An open file that lost its last name is still stat-able through its fd.
            if n.state().links.is_empty() && !n.is_dir() {
                let h = fh
                    .and_then(|f| self.handles.get(Fh(f.0)))
                    .or_else(|| self.handles.find_file_of(n.id));
                if let Some(h) = h
                    && let Handle::File(f) = &*h
                {
                    let mut a = rustix::fs::fstat(f.fd.as_fd())
                        .map_err(|e| Errno::from_i32(e.raw_os_error()))?;
                    a.st_ino = n.ino();
                    return Ok((a, self.attr_ttl(&n)));
                }
            }
            Ok((self.ov.getattr(&n).map_err(errno)?, self.attr_ttl(&n)))
        });
        match r {
            Ok((a, ttl)) => reply.attr(&ttl, &attr::to_fuse(&a)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let sa = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: attr::set_time(atime),
            mtime: attr::set_time(mtime),
        };
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let slow = self.ov.setattr_copies_data(&node, &sa);
        self.offload(slow, move |inner| {
            let h = fh.and_then(|f| inner.handles.get(Fh(f.0)));
            // Only a handle on the upper copy: one opened on the lower copy before a copy-up
            // must never change the lower layer.
            let fd = match h.as_deref() {
                Some(Handle::File(f)) if f.upper => Some(&f.fd),
                _ => None,
            };
            match inner.ov.setattr(&node, &sa, fd) {
                Ok(a) => reply.attr(&inner.attr_ttl(&node), &attr::to_fuse(&a)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self
            .node(ino)
            .and_then(|n| self.ov.readlink(&n).map_err(errno))
        {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = attr::fuse_kind_to_rustix(mode);
        let what = NewKind::Node {
            kind,
            rdev: attr::decode_dev(rdev),
        };
        let r = if kind == rustix::fs::FileType::RegularFile {
            self.make(
                req,
                parent,
                name,
                NewKind::File {
                    flags: rustix::fs::OFlags::WRONLY,
                },
                mode,
            )
        } else {
            self.make(req, parent, name, what, mode)
        };
        match r {
            Ok((e, _)) => self.reply_entry(reply, &e),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.make(req, parent, name, NewKind::Dir, mode) {
            Ok((e, _)) => self.reply_entry(reply, &e),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(
            reply,
            self.node(parent)
                .and_then(|p| self.ov.unlink(&p, name).map_err(errno)),
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        done(
            reply,
            self.node(parent)
                .and_then(|p| self.ov.rmdir(&p, name).map_err(errno)),
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let Ok(t) = crate::sys::cstr(target.as_os_str()) else {
            return reply.error(Errno::EINVAL);
        };
        match self.make(
            req,
            parent,
            link_name,
            NewKind::Symlink { target: &t },
            0o777,
        ) {
            Ok((e, _)) => self.reply_entry(reply, &e),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let flags = rustix::fs::RenameFlags::from_bits_retain(flags.bits());
        let r = self.node(parent).and_then(|p| {
            let np = self.node(newparent)?;
            self.ov.rename(&p, name, &np, newname, flags).map_err(errno)
        });
        done(reply, r)
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.node(ino).and_then(|n| {
            let np = self.node(newparent)?;
            self.ov.link(&n, &np, newname).map_err(errno)
        });
        match r {
            Ok(e) => self.reply_entry(reply, &e),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let slow = self.ov.open_copies_data(&node, flags.0);
        self.offload(slow, move |inner| inner.finish_open(node, flags, reply));
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_at(fh, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_at(fh, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do on close (writes are not buffered here, and POSIX locks are the
        // kernel's): ENOSYS tells the kernel so, and it sends no FLUSH on any later close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if let Some(h) = self.handles.remove(Fh(fh.0))
            && let Handle::File(f) = &*h
        {
            let id = f.node.id;
            let passthrough = f.backing.is_some();
            drop(h);
            let mut map = self.iomodes.lock();
            let done = match map.get_mut(&id) {
                Some(IoMode::Cached(n)) if !passthrough => {
                    *n = n.saturating_sub(1);
                    *n == 0
                }
                Some(IoMode::Passthrough(w)) => w.strong_count() == 0,
                _ => false,
            };
            if done {
                map.remove(&id);
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(reply, self.sync_file(fh, datasync))
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self.node(ino).and_then(|n| {
            if !n.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            Ok(self.handles.insert(Handle::Dir(DirH {
                node: n,
                entries: Mutex::new(None),
            })))
        });
        match r {
            // The kernel may keep the listing (see dir.rs): it drops it itself when the
            // directory changes through the mount, the only way it changes.
            Ok(fh) => reply.opened(
                FileHandle(fh.0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.list(fh, offset, reply);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.list_plus(fh, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.remove(Fh(fh.0));
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        done(
            reply,
            self.node(ino)
                .and_then(|n| self.ov.fsync_dir(&n).map_err(errno)),
        )
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.ov.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.caps_changed(name);
        let r = self.node(ino).and_then(|n| {
            let name = Overlay::xattr_name(name).map_err(errno)?;
            self.ov.setxattr(&n, &name, value, flags).map_err(errno)
        });
        done(reply, r)
    }

    /// The kernel asks for `security.capability` before every write (to clear it), so a
    /// file's "none" is remembered: it can only appear through setxattr on this mount (a
    /// copy-up copies the same value), which forgets every remembered answer.
    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let caps = name.as_encoded_bytes() == CAPS;
        let r = self.node(ino).and_then(|n| {
            if caps && self.known_nocaps(&n) {
                return Err(Errno::NO_XATTR);
            }
            let cname = Overlay::xattr_name(name).map_err(errno)?;
            let r = self.ov.getxattr(&n, &cname).map_err(errno);
            if caps && matches!(&r, Err(e) if *e == Errno::NO_XATTR) {
                self.nocaps.lock().insert(n.id, Arc::downgrade(&n));
            }
            r
        });
        reply_xattr(reply, r, size);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self
            .node(ino)
            .and_then(|n| self.ov.listxattr(&n).map_err(errno));
        reply_xattr(reply, r, size);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.caps_changed(name);
        let r = self.node(ino).and_then(|n| {
            let name = Overlay::xattr_name(name).map_err(errno)?;
            self.ov.removexattr(&n, &name).map_err(errno)
        });
        done(reply, r)
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Permission checks are the kernel's (default_permissions); this only checks existence.
        match self.node(ino) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let oflags = crate::overlay::dirops::open_flags(flags) - rustix::fs::OFlags::TRUNC;
        let (e, fd) = match self.make(req, parent, name, NewKind::File { flags: oflags }, mode) {
            Ok((e, Some(fd))) => (e, fd),
            Ok((_, None)) => return reply.error(Errno::EIO),
            Err(e) => return reply.error(e),
        };
        // A new file has no capabilities: the kernel's question before the first write is
        // answered without a syscall.
        self.nocaps
            .lock()
            .insert(e.node.id, Arc::downgrade(&e.node));
        let (backing, fflags) = self.io_mode(e.node.id, true, || reply.open_backing(fd.as_fd()));
        let fh = self.handles.insert(Handle::File(FileH {
            node: e.node.clone(),
            fd,
            upper: true,
            reopened: Mutex::new(None),
            backing: backing.clone(),
        }));
        let a = attr::to_fuse(&e.attr);
        match backing {
            Some(b) => reply.created_passthrough(
                &self.ttl,
                &a,
                Generation(0),
                FileHandle(fh.0),
                fflags,
                &b,
            ),
            None => reply.created(&self.ttl, &a, Generation(0), FileHandle(fh.0), fflags),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        done(reply, self.allocate(fh, offset, length, mode))
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.seek(fh, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self.copy_range(fh_in, offset_in, fh_out, offset_out, len) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }
}

fn reply_xattr(reply: ReplyXattr, r: Result<Vec<u8>, Errno>, size: u32) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}
