//! Reads, writes and other I/O on open files that the kernel sends to the daemon (files in
//! cached mode; passthrough files never reach here).
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use std::sync::atomic::Ordering;

use fuser::{BackingId, Errno, FileHandle, FopenFlags, OpenFlags, ReplyOpen};
use parking_lot::Mutex;

use super::handles::{FileH, Handle};
use super::{Inner, IoMode, errno};
use crate::overlay::node::{Node, NodeId};

pub(super) fn sys(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

impl Inner {
    /// How a new open of `node` does its I/O. The kernel gives an inode one I/O mode at a
    /// time: cached (reads and writes through this daemon and the page cache) or passthrough
    /// to one backing file. Lower copies are served cached (their data never changes, so the
    /// page cache is kept across opens); an upper copy passes through, unless handles opened
    /// before its copy-up still hold the inode in cached mode.
    pub(super) fn io_mode(
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

    pub(super) fn finish_open(&self, node: Arc<Node>, flags: OpenFlags, reply: ReplyOpen) {
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

    /// Runs `f` on the open file behind `fh`.
    pub(super) fn with_file<R>(
        &self,
        fh: FileHandle,
        f: impl FnOnce(&FileH) -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        match &*self.file(fh)? {
            Handle::File(file) => f(file),
            Handle::Dir(_) => Err(Errno::EISDIR),
        }
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

    pub(super) fn read_at(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        self.with_file(fh, |f| {
            let fresh = self.current_fd(f)?;
            let fd = fresh.as_deref().unwrap_or(&f.fd);
            let mut buf = vec![0u8; size as usize];
            let mut done = 0usize;
            while done < buf.len() {
                match rustix::io::pread(fd.as_fd(), &mut buf[done..], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(sys(e)),
                }
            }
            buf.truncate(done);
            Ok(buf)
        })
    }

    pub(super) fn write_at(&self, fh: FileHandle, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.with_file(fh, |f| {
            rustix::io::pwrite(f.fd.as_fd(), data, offset)
                .map(|n| n as u32)
                .map_err(sys)
        })
    }

    pub(super) fn sync_file(&self, fh: FileHandle, datasync: bool) -> Result<(), Errno> {
        if !self.ov.fsync_enabled() {
            return Ok(());
        }
        self.with_file(fh, |f| {
            if datasync {
                rustix::fs::fdatasync(f.fd.as_fd()).map_err(sys)
            } else {
                rustix::fs::fsync(f.fd.as_fd()).map_err(sys)
            }
        })
    }

    pub(super) fn allocate(
        &self,
        fh: FileHandle,
        offset: u64,
        len: u64,
        mode: i32,
    ) -> Result<(), Errno> {
        self.with_file(fh, |f| {
            let m = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
            rustix::fs::fallocate(f.fd.as_fd(), m, offset, len).map_err(sys)
        })
    }

    pub(super) fn seek(&self, fh: FileHandle, offset: i64, whence: i32) -> Result<i64, Errno> {
        self.with_file(fh, |f| {
            let fd = f.fd.as_fd();
            let off = offset.max(0) as u64;
            let r = match whence {
                libc::SEEK_DATA => rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(off)),
                libc::SEEK_HOLE => rustix::fs::seek(fd, rustix::fs::SeekFrom::Hole(off)),
                libc::SEEK_SET => Ok(off),
                libc::SEEK_END => rustix::fs::fstat(fd).and_then(|s| {
                    // Checked: a huge offset must be EINVAL, never a wrapped position.
                    s.st_size
                        .checked_add(offset)
                        .filter(|o| *o >= 0)
                        .map(|o| o as u64)
                        .ok_or(rustix::io::Errno::INVAL)
                }),
                _ => Err(rustix::io::Errno::INVAL),
            };
            r.map(|o| o as i64).map_err(sys)
        })
    }

    pub(super) fn copy_range(
        &self,
        fh_in: FileHandle,
        offset_in: u64,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
    ) -> Result<u32, Errno> {
        self.with_file(fh_in, |fi| {
            self.with_file(fh_out, |fo| {
                let (mut i, mut o) = (offset_in, offset_out);
                let len = usize::try_from(len).unwrap_or(usize::MAX).min(1 << 30);
                rustix::fs::copy_file_range(
                    fi.fd.as_fd(),
                    Some(&mut i),
                    fo.fd.as_fd(),
                    Some(&mut o),
                    len,
                )
                .map(|n| n as u32)
                .map_err(sys)
            })
        })
    }
}
