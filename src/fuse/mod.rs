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
pub mod handles;

use crate::overlay::dirops::NewKind;
use crate::overlay::fileops::SetAttr;
use crate::overlay::node::{Node, NodeId};
use crate::overlay::readdir::DirEntry;
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

    /// How a new open of `node` does its I/O. The kernel gives an inode one I/O mode at a
    /// time: cached (reads and writes through this daemon and the page cache) or passthrough
    /// to one backing file. Lower copies are served cached (their data never changes, so the
    /// page cache is kept across opens); an upper copy passes through, unless handles opened
    /// before its copy-up still hold the inode in cached mode.
    fn io_mode(
        &self,
        node: NodeId,
        upper: bool,
        open: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> (Option<Arc<BackingId>>, FopenFlags) {
        let cached_flags = if upper {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        };
        if !self.passthrough.load(Ordering::Relaxed) {
            return (None, cached_flags);
        }
        let mut map = self.iomodes.lock();
        match map.get_mut(&node) {
            Some(IoMode::Cached(n)) if *n > 0 => {
                *n += 1;
                return (None, FopenFlags::empty());
            }
            Some(IoMode::Passthrough(w)) => {
                if let Some(b) = w.upgrade() {
                    return (Some(b), FopenFlags::empty());
                }
            }
            _ => {}
        }
        if upper {
            match open() {
                Ok(b) => {
                    let b = Arc::new(b);
                    map.insert(node, IoMode::Passthrough(Arc::downgrade(&b)));
                    return (Some(b), FopenFlags::empty());
                }
                Err(e) => log::debug!("passthrough refused for node {}: {e}", node.0),
            }
        }
        map.insert(node, IoMode::Cached(1));
        (None, cached_flags)
    }

    /// The fd a read-only handle on a lower file should read now: the upper copy once the
    /// file has been copied up (`None`: the handle's own fd).
    fn current_fd(&self, f: &FileH) -> Result<Option<Arc<OwnedFd>>, Errno> {
        if f.upper || !f.node.is_upper() {
            return Ok(None);
        }
        let mut slot = f.reopened.lock();
        if let Some(fd) = &*slot {
            return Ok(Some(fd.clone()));
        }
        let o = self.ov.open(&f.node, libc::O_RDONLY).map_err(errno)?;
        let fd = Arc::new(o.fd);
        *slot = Some(fd.clone());
        Ok(Some(fd))
    }

    fn finish_open(&self, node: Arc<Node>, flags: OpenFlags, reply: ReplyOpen) {
        let opened = match self.ov.open(&node, flags.0) {
            Ok(o) => o,
            Err(e) => return reply.error(errno(e)),
        };
        let (backing, flags) = self.io_mode(node.id, opened.upper, || {
            reply.open_backing(opened.fd.as_fd())
        });
        let fh = self.handles.insert(Handle::File(FileH {
            node,
            fd: opened.fd,
            upper: opened.upper,
            reopened: Mutex::new(None),
            backing: backing.clone(),
        }));
        match backing {
            Some(b) => reply.opened_passthrough(FileHandle(fh.0), flags, &b),
            None => reply.opened(FileHandle(fh.0), flags),
        }
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        self.handles.get(Fh(fh.0)).ok_or(Errno::EBADF)
    }

    fn list_with_dots(&self, node: &Arc<Node>) -> Result<Vec<DirEntry>, crate::Error> {
        let parent = node
            .state()
            .links
            .first()
            .map(|l| l.parent.ino())
            .unwrap_or(node.ino());
        let mut v = vec![
            DirEntry {
                name: ".".into(),
                kind: rustix::fs::FileType::Directory,
                ino: node.ino(),
                lower_skip: 0,
            },
            DirEntry {
                name: "..".into(),
                kind: rustix::fs::FileType::Directory,
                ino: parent,
                lower_skip: 0,
            },
        ];
        v.extend(self.ov.list_dir(node)?);
        Ok(v)
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
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ov.forget(NodeId(ino.0), nlookup);
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
                    return Ok(a);
                }
            }
            self.ov.getattr(&n).map_err(errno)
        });
        match r {
            Ok(a) => reply.attr(&self.ttl, &attr::to_fuse(&a)),
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
        // On a lower regular file every change copies the data up first.
        let slow =
            !node.is_upper() && node.kind == rustix::fs::FileType::RegularFile && size != Some(0);
        self.offload(slow, move |inner| {
            let h = fh.and_then(|f| inner.handles.get(Fh(f.0)));
            let fd = match h.as_deref() {
                Some(Handle::File(f)) if node.is_upper() => Some(&f.fd),
                _ => None,
            };
            match inner.ov.setattr(&node, &sa, fd) {
                Ok(a) => reply.attr(&inner.ttl, &attr::to_fuse(&a)),
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
        match self
            .node(parent)
            .and_then(|p| self.ov.unlink(&p, name).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .node(parent)
            .and_then(|p| self.ov.rmdir(&p, name).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        let h = match self.file(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EISDIR);
        };
        let fresh = match self.current_fd(f) {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        let fd = fresh.as_deref().unwrap_or(&f.fd);
        let mut buf = vec![0u8; size as usize];
        let mut done = 0usize;
        while done < buf.len() {
            match rustix::io::pread(fd.as_fd(), &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return reply.error(Errno::from_i32(e.raw_os_error())),
            }
        }
        reply.data(&buf[..done]);
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
        let h = match self.file(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EISDIR);
        };
        match rustix::io::pwrite(f.fd.as_fd(), data, offset) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
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
        reply.ok();
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
        if !self.ov.fsync_enabled() {
            return reply.ok();
        }
        let h = match self.file(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EISDIR);
        };
        let r = if datasync {
            rustix::fs::fdatasync(f.fd.as_fd())
        } else {
            rustix::fs::fsync(f.fd.as_fd())
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self.node(ino).and_then(|n| {
            if !n.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            let entries = self.list_with_dots(&n).map_err(errno)?;
            Ok(self.handles.insert(Handle::Dir(DirH {
                node: n,
                entries: Mutex::new(entries),
            })))
        });
        match r {
            Ok(fh) => reply.opened(FileHandle(fh.0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let h = match self.file(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::Dir(d) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut entries = d.entries.lock();
        if offset == 0 {
            match self.list_with_dots(&d.node) {
                Ok(v) => *entries = v,
                Err(e) => return reply.error(errno(e)),
            }
        }
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(e.ino), i as u64 + 1, attr::kind(e.kind), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let h = match self.file(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::Dir(d) = &*h else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut entries = d.entries.lock();
        if offset == 0 {
            match self.list_with_dots(&d.node) {
                Ok(v) => *entries = v,
                Err(e) => return reply.error(errno(e)),
            }
        }
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let off = i as u64 + 1;
            let full = if e.name == "." || e.name == ".." {
                // The kernel takes no entry for these; only the name and d_ino matter.
                let mut a = attr::to_fuse(&crate::sys::zeroed_stat());
                a.ino = INodeNo(e.ino);
                a.kind = attr::kind(e.kind);
                reply.add(a.ino, off, &e.name, &Duration::ZERO, &a, Generation(0))
            } else {
                match self.ov.lookup_hinted(&d.node, &e.name, e.lower_skip) {
                    Ok(ent) if ent.node.ino() != ent.node.id.0 => {
                        // fuser sends the node id as d_ino. For a name showing another inode
                        // number (a lower hard link), send that number with no caching and
                        // without our lookup reference: the kernel looks the name up again on
                        // first use and gets the real node, and forgets the placeholder (an id
                        // no node has).
                        self.ov.forget(ent.node.id, 1);
                        let a = attr::to_fuse(&ent.attr);
                        reply.add(a.ino, off, &e.name, &Duration::ZERO, &a, Generation(0))
                    }
                    Ok(ent) => {
                        let a = attr::to_fuse(&ent.attr);
                        let full = reply.add(a.ino, off, &e.name, &self.ttl, &a, Generation(0));
                        if full {
                            // Not sent: the kernel won't count this lookup.
                            self.ov.forget(ent.node.id, 1);
                        }
                        full
                    }
                    // Gone since the listing was taken: leave it out.
                    Err(_) => false,
                }
            };
            if full {
                break;
            }
        }
        reply.ok();
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
        match self
            .node(ino)
            .and_then(|n| self.ov.fsync_dir(&n).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        let r = self.node(ino).and_then(|n| {
            let name = Overlay::xattr_name(name).map_err(errno)?;
            self.ov.setxattr(&n, &name, value, flags).map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.node(ino).and_then(|n| {
            let name = Overlay::xattr_name(name).map_err(errno)?;
            self.ov.getxattr(&n, &name).map_err(errno)
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
        let r = self.node(ino).and_then(|n| {
            let name = Overlay::xattr_name(name).map_err(errno)?;
            self.ov.removexattr(&n, &name).map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
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
        let h = match self.file(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EISDIR);
        };
        let m = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
        match rustix::fs::fallocate(f.fd.as_fd(), m, offset, length) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
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
        let h = match self.file(fh) {
            Ok(h) => h,
            Err(e) => return reply.error(e),
        };
        let Handle::File(f) = &*h else {
            return reply.error(Errno::EISDIR);
        };
        let off = offset.max(0) as u64;
        let r = match whence {
            libc::SEEK_DATA => rustix::fs::seek(f.fd.as_fd(), rustix::fs::SeekFrom::Data(off)),
            libc::SEEK_HOLE => rustix::fs::seek(f.fd.as_fd(), rustix::fs::SeekFrom::Hole(off)),
            libc::SEEK_SET => Ok(off),
            libc::SEEK_END => rustix::fs::fstat(f.fd.as_fd()).map(|s| (s.st_size + offset) as u64),
            _ => Err(rustix::io::Errno::INVAL),
        };
        match r {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
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
        let (hi, ho) = match (self.file(fh_in), self.file(fh_out)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let (Handle::File(fi), Handle::File(fo)) = (&*hi, &*ho) else {
            return reply.error(Errno::EISDIR);
        };
        let (mut i, mut o) = (offset_in, offset_out);
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
        match rustix::fs::copy_file_range(
            fi.fd.as_fd(),
            Some(&mut i),
            fo.fd.as_fd(),
            Some(&mut o),
            len,
        ) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
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
