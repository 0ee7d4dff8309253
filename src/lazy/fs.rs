//! One lazy layer as a read-only FUSE file system in the overlay on-disk format (whiteouts as
//! 0/0 character devices, `trusted.overlay.opaque=y` on opaque directories), mounted under the
//! store and stacked as a lower directory of the ordinary union.
//!
//! Why a mount per layer and not a layer kind inside the driver: the union (src/overlay,
//! src/fuse) works on held directory fds of lower layers with no-follow syscalls only, and is
//! being hardened separately; a lazy layer that *is* a directory tree needs no change there and
//! gets every union rule (whiteouts, opaque directories, copy-up if an upper layer is added)
//! for free. The cost is one more FUSE hop per first read of a file, which the kernel's page
//! cache (entries, attributes and data are immutable: long TTLs, KEEP_CACHE) hides afterwards.
//!
//! File data: the pieces a read covers are fetched on demand through [`LayerSource`]
//! (verified before anything is returned); once the background pull has extracted the layer
//! into the store, reads go to the extracted files instead (`local`).
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::chunks::LayerSource;
use super::priority::ReadLog;
use super::tree::{Node, NodeKind, Tree};
use crate::image::tarentry::Mtime;

/// Entries, attributes and data never change.
const TTL: Duration = Duration::from_secs(24 * 3600);

pub struct LazyFs {
    tree: Tree,
    source: Arc<LayerSource>,
    /// The extracted layer directory, once the background pull has stored it.
    pub local: Arc<OnceLock<OwnedFd>>,
    /// Pieces in first-read order (the next mount's prefetch list).
    pub log: Arc<parking_lot::Mutex<ReadLog>>,
    /// Open extracted files by node, once reads are local (bounded).
    open_local: parking_lot::Mutex<HashMap<usize, Arc<std::fs::File>>>,
}

/// Extracted files kept open at once.
const MAX_OPEN_LOCAL: usize = 512;

fn time(t: Mtime) -> SystemTime {
    let d = Duration::new(t.sec.unsigned_abs(), t.nsec.min(999_999_999));
    if t.sec >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec.into())
    }
}

/// The kernel's device number encoding in FUSE's 32 bits.
fn rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn errno_of(e: &crate::Error) -> Errno {
    log::warn!("lazy read: {e}");
    Errno::EIO
}

impl LazyFs {
    pub fn new(tree: Tree, source: Arc<LayerSource>) -> Self {
        LazyFs {
            tree,
            source,
            local: Arc::new(OnceLock::new()),
            log: Arc::default(),
            open_local: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn node(&self, ino: INodeNo) -> Result<(usize, &Node), Errno> {
        let idx = ino.0.checked_sub(1).ok_or(Errno::ENOENT)? as usize;
        self.tree
            .nodes
            .get(idx)
            .map(|n| (idx, n))
            .ok_or(Errno::ENOENT)
    }

    fn attr(&self, idx: usize, n: &Node) -> FileAttr {
        let (kind, size, dev) = match &n.kind {
            NodeKind::Dir(_) => (FileType::Directory, 4096, 0),
            NodeKind::File { size, .. } => (FileType::RegularFile, *size, 0),
            NodeKind::Symlink(t) => (FileType::Symlink, t.len() as u64, 0),
            NodeKind::Fifo => (FileType::NamedPipe, 0, 0),
            NodeKind::Char(a, b) => (FileType::CharDevice, 0, rdev(*a, *b)),
            NodeKind::Block(a, b) => (FileType::BlockDevice, 0, rdev(*a, *b)),
        };
        let t = time(n.meta.mtime);
        FileAttr {
            ino: INodeNo(idx as u64 + 1),
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: UNIX_EPOCH,
            kind,
            perm: (n.meta.mode & 0o7777) as u16,
            nlink: if n.is_dir() { 2 } else { n.nlink.max(1) },
            uid: n.meta.uid,
            gid: n.meta.gid,
            rdev: dev,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Bytes [off, off+len) of a regular file.
    fn read_file(&self, idx: usize, n: &Node, off: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let NodeKind::File {
            size,
            chunks,
            inline,
        } = &n.kind
        else {
            return Err(Errno::EISDIR);
        };
        let end = (off + u64::from(len)).min(*size);
        if off >= end {
            return Ok(Vec::new());
        }
        if let Some(body) = inline {
            return Ok(body[off as usize..end as usize].to_vec());
        }
        self.log.lock().record(idx, chunks);
        if let Some(dir) = self.local.get() {
            let f = self.local_file(dir, idx, n)?;
            return read_at(&f, off, end);
        }
        let mut out = Vec::with_capacity((end - off) as usize);
        for c in chunks {
            let (cs, ce) = (c.file_offset, c.file_offset + c.size);
            if ce <= off || cs >= end {
                continue;
            }
            let from = off.max(cs);
            let to = end.min(ce);
            // A piece evicted between fetch and read (cache over its limit) is fetched again.
            let mut part = None;
            for _ in 0..2 {
                self.source.ensure(c).map_err(|e| errno_of(&e))?;
                part = self
                    .source
                    .cache
                    .read(&c.digest, from - cs, (to - from) as usize)
                    .map_err(|e| errno_of(&crate::Error::io("read", "chunk cache", e)))?;
                if part.is_some() {
                    break;
                }
            }
            out.extend_from_slice(&part.ok_or(Errno::EIO)?);
        }
        Ok(out)
    }
}

impl LazyFs {
    /// The extracted file of node `idx`, opened beneath the layer without following symlinks.
    fn local_file(&self, dir: &OwnedFd, idx: usize, n: &Node) -> Result<Arc<std::fs::File>, Errno> {
        if let Some(f) = self.open_local.lock().get(&idx) {
            return Ok(Arc::clone(f));
        }
        let fd = rustix::fs::openat2(
            dir,
            n.path.as_path(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| Errno::from_i32(e.raw_os_error()))?;
        let f = Arc::new(std::fs::File::from(fd));
        let mut open = self.open_local.lock();
        if open.len() >= MAX_OPEN_LOCAL {
            open.clear();
        }
        open.insert(idx, Arc::clone(&f));
        Ok(f)
    }
}

fn read_at(f: &std::fs::File, off: u64, end: u64) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; (end - off) as usize];
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => return Err(Errno::from(e)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

fn reply_xattr(reply: ReplyXattr, v: Result<Vec<u8>, Errno>, size: u32) {
    match v {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

impl fuser::Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.node(parent).and_then(|(p, _)| {
            let c = self.tree.child(p, name).ok_or(Errno::ENOENT)?;
            Ok(self.attr(c, &self.tree.nodes[c]))
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Ok((i, n)) => reply.attr(&TTL, &self.attr(i, n)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Ok((
                _,
                Node {
                    kind: NodeKind::Symlink(t),
                    ..
                },
            )) => reply.data(t),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.node(ino) {
            Ok((_, n)) if n.is_dir() => reply.error(Errno::EISDIR),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self
            .node(ino)
            .and_then(|(i, n)| self.read_file(i, n, offset, size))
        {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let children = match self.node(ino) {
            Ok((
                _,
                Node {
                    kind: NodeKind::Dir(c),
                    ..
                },
            )) => c,
            Ok(_) => return reply.error(Errno::ENOTDIR),
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino, FileType::Directory, OsStr::new(".")),
            (ino, FileType::Directory, OsStr::new("..")),
        ];
        let rest = children.iter().map(|(name, &c)| {
            (
                INodeNo(c as u64 + 1),
                self.attr(c, &self.tree.nodes[c]).kind,
                name.as_os_str(),
            )
        });
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(rest)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(child, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self.node(ino).and_then(|(_, n)| {
            use std::os::unix::ffi::OsStrExt;
            n.meta
                .xattrs
                .iter()
                .find(|(k, _)| k.as_slice() == name.as_bytes())
                .map(|(_, v)| v.clone())
                .ok_or(Errno::ENODATA)
        });
        reply_xattr(reply, r, size);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self.node(ino).map(|(_, n)| {
            let mut out = Vec::new();
            for (k, _) in &n.meta.xattrs {
                out.extend_from_slice(k);
                out.push(0);
            }
            out
        });
        reply_xattr(reply, r, size);
    }
}
