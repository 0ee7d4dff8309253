//! Copy-up: bring a lower entry into the upper layer before it is modified.
//!
//! Parents first (each directory copied up once, under its own lock), then the entry itself:
//! it is built under a fresh name in `workdir/work` — data (clone, else copy_file_range over
//! data segments, else read/write; holes kept), then owner, then mode (chown clears
//! setuid/setgid), then xattrs (after data and owner, which would clear security.capability),
//! then times — its data synced (fdatasync, as overlayfs does unless `volatile`), and published
//! in the upper layer by one rename. A crash leaves the lower entry visible or the complete
//! copy, never a half file. The source is opened no-follow from its parent's fd and checked
//! against the node's type; the staged entry's metadata is set through its own fd.
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat, Timestamps};
use rustix::io::Errno;

use super::node::{Node, NodeId};
use super::place::Place;
use super::{Overlay, Which, whiteout};
use crate::sys::copy::copy_data;
use crate::sys::nofollow::{self, Target};
use crate::{Error, Result, sys};

/// What the copy of a regular file carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// The whole content.
    Full,
    /// None (an open with O_TRUNC, a truncate to 0): the size becomes 0.
    Empty,
}

impl Overlay {
    /// Makes `node` present in the upper layer, copying up it and its ancestors as needed.
    pub fn copy_up(&self, node: &Arc<Node>, data: Data) -> Result<()> {
        if node.is_upper() {
            return Ok(());
        }
        self.writable()?;
        // Ancestors not yet in upper, nearest first; copied up farthest first.
        let mut chain = Vec::new();
        let mut cur = parent_of(node)?;
        while !cur.is_upper() {
            let next = parent_of(&cur)?;
            chain.push(cur);
            cur = next;
        }
        for dir in chain.iter().rev() {
            self.copy_up_one(dir, Data::Full)?;
        }
        self.copy_up_one(node, data)
    }

    fn copy_up_one(&self, node: &Arc<Node>, data: Data) -> Result<()> {
        let _guard = node.copyup_lock.lock();
        let st = node.state();
        if st.upper {
            return Ok(());
        }
        let link = st.links.first().cloned().ok_or(Error::Sys(Errno::STALE))?;
        let src = self.place(node, Self::top_of(&st)?)?;
        let work = self.writable()?.work.fd();
        let tmp = self.tmp_name();
        let built = match self.build_copy(node, &src, work, &tmp, data) {
            Ok(b) => b,
            Err(e) => {
                remove_any(work, &tmp);
                return Err(e);
            }
        };
        let name = sys::cstr(&link.name)?;
        let upper = self.dir_fd(&link.parent, Which::Upper)?;
        // A copy-up is no change to the parent as the user sees it: keep its times (overlayfs
        // does the same), although the rename into it updates them.
        let _dir = link.parent.dir_lock.lock();
        let parent_before = rustix::fs::fstat(upper.as_fd())?;
        if let Err(e) = sys::rename(work, &tmp, upper.as_fd(), &name, RenameFlags::NOREPLACE) {
            remove_any(work, &tmp);
            // Something was put at the name behind the mount's back: a changed layer.
            return Err(Error::Sys(if e == Errno::EXIST { Errno::STALE } else { e }));
        }
        nofollow::utimens_fd(upper.as_fd(), &times_of(&parent_before))?;
        if let Some(fd) = built.dir {
            node.keep_dir_fd(Which::Upper, Arc::new(fd));
        }
        node.update(|s| s.upper = true);
        self.nodes.set_upper_alias(node, built.ino);
        if node.is_per_name() {
            let dev = self.writable()?.upper.dev;
            node.set_ino(self.node_id_for(dev, built.ino).0);
        }
        Ok(())
    }

    /// Builds the copy of `node` (found at `src` in its lower layer) as `work/tmp`. Every
    /// source is opened or read no-follow and checked against the node's type.
    fn build_copy(
        &self,
        node: &Node,
        src: &Place<'_>,
        work: BorrowedFd<'_>,
        tmp: &CStr,
        data: Data,
    ) -> Result<Built> {
        let stale = || Error::Sys(Errno::STALE);
        match node.kind {
            FileType::Directory => {
                let sst = rustix::fs::fstat(src.fd())?;
                rustix::fs::mkdirat(work, tmp, Mode::from_raw_mode(0o700))?;
                let out = nofollow::open_dir(work, tmp)?;
                copy_metadata(
                    Target::Fd(src.fd()),
                    &sst,
                    out.as_fd(),
                    Target::Fd(out.as_fd()),
                )?;
                let ino = rustix::fs::fstat(&out)?.st_ino;
                Ok(Built {
                    dir: Some(out),
                    ino,
                })
            }
            FileType::RegularFile => {
                let (input, sst) = nofollow::open_regular(src.fd(), &src.name, OFlags::RDONLY, 0)?;
                let out = sys::open_at(
                    work,
                    tmp,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY,
                    0o600,
                )?;
                if data == Data::Full {
                    copy_data(input.as_fd(), out.as_fd(), sst.st_size as u64)?;
                }
                if self.fsync {
                    rustix::fs::fdatasync(out.as_fd())?;
                }
                let (si, so) = (Target::Fd(input.as_fd()), Target::Fd(out.as_fd()));
                copy_metadata(si, &sst, out.as_fd(), so)?;
                let ino = rustix::fs::fstat(&out)?.st_ino;
                Ok(Built { dir: None, ino })
            }
            kind => {
                let sst = src.lstat()?;
                if sys::file_type(&sst) != kind {
                    return Err(stale());
                }
                if kind == FileType::Symlink {
                    let target = rustix::fs::readlinkat(src.fd(), &src.name, Vec::new())?;
                    rustix::fs::symlinkat(target.as_c_str(), work, tmp)?;
                } else {
                    rustix::fs::mknodat(work, tmp, kind, Mode::from_raw_mode(0o600), sst.st_rdev)?;
                }
                let out = nofollow::open_path(work, tmp)?;
                let ost = rustix::fs::fstat(&out)?;
                if sys::file_type(&ost) != kind {
                    return Err(stale());
                }
                // A symlink's xattrs by name (an fd's would follow it); a node's by its fd.
                let dst = if kind == FileType::Symlink {
                    Target::At(work, tmp)
                } else {
                    Target::Fd(out.as_fd())
                };
                copy_metadata(Target::At(src.fd(), &src.name), &sst, out.as_fd(), dst)?;
                Ok(Built {
                    dir: None,
                    ino: ost.st_ino,
                })
            }
        }
    }
}

/// A staged copy: its inode number, and for a directory its fd (the node's upper fd once
/// published).
struct Built {
    dir: Option<OwnedFd>,
    ino: u64,
}

fn parent_of(node: &Node) -> Result<Arc<Node>> {
    node.state()
        .links
        .first()
        .map(|l| l.parent.clone())
        .ok_or(Error::Sys(if node.id == NodeId::ROOT {
            Errno::INVAL
        } else {
            Errno::STALE
        }))
}

/// Owner, then mode, then xattrs (minus overlay-private ones), then times, onto the staged
/// entry behind `dst_fd` (xattrs through `dst`).
fn copy_metadata(
    src_x: Target<'_>,
    src: &Stat,
    dst_fd: BorrowedFd<'_>,
    dst: Target<'_>,
) -> Result<()> {
    nofollow::chown_fd(dst_fd, Some(src.st_uid), Some(src.st_gid))?;
    if sys::file_type(src) != FileType::Symlink {
        nofollow::chmod_fd(dst_fd, src.st_mode & 0o7777)?;
    }
    copy_xattrs(src_x, dst)?;
    nofollow::utimens_fd(dst_fd, &times_of(src))?;
    Ok(())
}

/// The atime and mtime of `from`, to set on another file.
fn times_of(from: &Stat) -> Timestamps {
    Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: from.st_atime,
            tv_nsec: from.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: from.st_mtime,
            tv_nsec: from.st_mtime_nsec as _,
        },
    }
}

fn copy_xattrs(src: Target<'_>, dst: Target<'_>) -> Result<()> {
    let names = nofollow::list_xattrs(src)?;
    // security.capability last: it must land after everything that could clear it.
    let (caps, rest): (Vec<CString>, Vec<CString>) = names
        .into_iter()
        .filter(|n| !whiteout::is_private_xattr(n.to_bytes()))
        .partition(|n| n.to_bytes() == b"security.capability");
    for name in rest.iter().chain(caps.iter()) {
        let Some(value) = nofollow::get_xattr(src, name)? else {
            continue;
        };
        match nofollow::set_xattr(dst, name, &value, 0) {
            Ok(()) => {}
            // The upper filesystem can't hold this namespace (e.g. user.* on a symlink).
            Err(Errno::PERM | Errno::NOTSUP) if name.to_bytes().starts_with(b"user.") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Removes `rel` beneath `dir` whatever it is (a directory with its contents).
pub(super) fn remove_any(dir: BorrowedFd<'_>, rel: &CStr) {
    match rustix::fs::unlinkat(dir, rel, AtFlags::empty()) {
        Err(Errno::ISDIR) | Err(Errno::PERM) => {
            let _ = purge_dir_contents(dir, rel);
            if let Err(e) = rustix::fs::unlinkat(dir, rel, AtFlags::REMOVEDIR) {
                log::warn!("could not remove staging entry {rel:?}: {e}");
            }
        }
        Err(Errno::NOENT) | Ok(()) => {}
        Err(e) => log::warn!("could not remove staging entry {rel:?}: {e}"),
    }
}

/// Deletes everything inside the directory `rel` beneath `dir`.
pub fn purge_dir_contents(dir: BorrowedFd<'_>, rel: &CStr) -> Result<(), Errno> {
    let fd = sys::open_at(dir, rel, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(fd.as_fd())? {
        let e = e?;
        let n = e.file_name();
        if n != c"." && n != c".." {
            names.push((n.to_owned(), e.file_type()));
        }
    }
    for (name, ty) in names {
        if ty == FileType::Directory {
            purge_dir_contents(fd.as_fd(), &name)?;
            rustix::fs::unlinkat(fd.as_fd(), &name, AtFlags::REMOVEDIR)?;
        } else {
            match rustix::fs::unlinkat(fd.as_fd(), &name, AtFlags::empty()) {
                Err(Errno::ISDIR) => {
                    purge_dir_contents(fd.as_fd(), &name)?;
                    rustix::fs::unlinkat(fd.as_fd(), &name, AtFlags::REMOVEDIR)?;
                }
                r => r?,
            }
        }
    }
    Ok(())
}
