//! Copy-up: bring a lower entry into the upper layer before it is modified.
//!
//! Parents first (each directory copied up once, under its own lock), then the entry itself:
//! it is built under a fresh name in `workdir/work` — data (clone, else copy_file_range over
//! data segments, else read/write; holes kept), then owner, then mode (chown clears
//! setuid/setgid), then xattrs (after data and owner, which would clear security.capability),
//! then times — its data synced (fdatasync, as overlayfs does unless `volatile`), and published in the upper layer by one rename. A crash leaves the
//! lower entry visible or the complete copy, never a half file.
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Stat, Timestamps};
use rustix::io::Errno;

use super::node::{Node, NodeId};
use super::{Overlay, Which, whiteout};
use crate::sys::copy::copy_data;
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
        let src_layer = Self::top_of(&st)?;
        let src_fd = self.layer_fd(src_layer)?;
        let path = node.path()?;
        let link = st.links.first().cloned().ok_or(Error::Sys(Errno::STALE))?;
        let parent_path = link.parent.path()?;
        let src = sys::lstat_at(src_fd, &path)?;
        let work = self.writable()?.work.fd();
        let tmp = self.tmp_name();
        if let Err(e) = self.build_copy(src_fd, &path, &src, work, &tmp, data) {
            remove_any(work, &tmp);
            return Err(e);
        }
        let tmp_ino = sys::lstat_at(work, &tmp)?.st_ino;
        let dest = sys::join(&parent_path, &link.name);
        let upper = self.layer_fd(Which::Upper)?;
        // A copy-up is no change to the parent as the user sees it: keep its times (overlayfs
        // does the same), although the rename into it updates them.
        let _dir = link.parent.dir_lock.lock();
        let parent_before = sys::lstat_at(upper, &parent_path)?;
        if let Err(e) = sys::rename(work, &tmp, upper, &dest, RenameFlags::NOREPLACE) {
            remove_any(work, &tmp);
            return Err(e.into());
        }
        set_times(upper, &parent_path, &parent_before)?;
        node.update(|s| s.upper = true);
        self.nodes.set_upper_alias(node, tmp_ino);
        if node.is_per_name() {
            let dev = self.writable()?.upper.dev;
            node.set_ino(self.node_id_for(dev, tmp_ino).0);
        }
        Ok(())
    }

    fn build_copy(
        &self,
        src_fd: BorrowedFd<'_>,
        path: &CStr,
        src: &Stat,
        work: BorrowedFd<'_>,
        tmp: &CStr,
        data: Data,
    ) -> Result<()> {
        let kind = sys::file_type(src);
        match kind {
            FileType::Directory => rustix::fs::mkdirat(work, tmp, Mode::from_raw_mode(0o700))?,
            FileType::RegularFile => {
                let out = sys::open_at(
                    work,
                    tmp,
                    OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY,
                    0o600,
                )?;
                if data == Data::Full {
                    let input = sys::open_at(src_fd, path, OFlags::RDONLY, 0)?;
                    copy_data(input.as_fd(), out.as_fd(), src.st_size as u64)?;
                }
                if self.fsync {
                    rustix::fs::fdatasync(out.as_fd())?;
                }
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src_fd, path, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), work, tmp)?;
            }
            other => {
                rustix::fs::mknodat(work, tmp, other, Mode::from_raw_mode(0o600), src.st_rdev)?
            }
        }
        copy_metadata(src_fd, path, src, work, tmp)
    }
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

/// Owner, then mode, then xattrs (minus overlay-private ones), then times.
pub(super) fn copy_metadata(
    src_fd: BorrowedFd<'_>,
    path: &CStr,
    src: &Stat,
    dst_fd: BorrowedFd<'_>,
    dst: &CStr,
) -> Result<()> {
    let kind = sys::file_type(src);
    rustix::fs::chownat(
        dst_fd,
        dst,
        Some(rustix::fs::Uid::from_raw(src.st_uid)),
        Some(rustix::fs::Gid::from_raw(src.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if kind != FileType::Symlink {
        rustix::fs::chmodat(
            dst_fd,
            dst,
            Mode::from_raw_mode(src.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    copy_xattrs(src_fd, path, dst_fd, dst)?;
    set_times(dst_fd, dst, src)
}

/// Sets the atime and mtime of `rel` beneath `dir` to those of `from`.
fn set_times(dir: BorrowedFd<'_>, rel: &CStr, from: &Stat) -> Result<()> {
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: from.st_atime,
            tv_nsec: from.st_atime_nsec as _,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: from.st_mtime,
            tv_nsec: from.st_mtime_nsec as _,
        },
    };
    rustix::fs::utimensat(dir, rel, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

pub(super) fn copy_xattrs(
    src_fd: BorrowedFd<'_>,
    path: &CStr,
    dst_fd: BorrowedFd<'_>,
    dst: &CStr,
) -> Result<()> {
    let names = sys::llistxattr(src_fd, path)?;
    // security.capability last: it must land after everything that could clear it.
    let (caps, rest): (Vec<CString>, Vec<CString>) = names
        .into_iter()
        .filter(|n| !whiteout::is_private_xattr(n.to_bytes()))
        .partition(|n| n.to_bytes() == b"security.capability");
    for name in rest.iter().chain(caps.iter()) {
        let Some(value) = sys::lgetxattr(src_fd, path, name)? else {
            continue;
        };
        match sys::lsetxattr(dst_fd, dst, name, &value, 0) {
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
