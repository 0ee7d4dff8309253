//! Reaching a node's copy in a layer: never by a path, never through a symlink.
//!
//! Anyone who can write a layer (a container's `upper/tmp` is 1777) can swap any entry for a
//! symlink at any moment, and the daemon runs as root. So no operation names a multi-component
//! path. Every directory node keeps, per layer it was reached in, a directory fd opened from
//! its parent's fd with `O_DIRECTORY | O_NOFOLLOW`, one name at a time, starting from the held
//! layer root; every operation then acts on (directory fd, one name) with the no-follow form of
//! its call (`sys::nofollow`), or on an fd of the entry opened `O_NOFOLLOW` whose type was
//! checked. A symlink, or an entry of another type, where the node says a file or directory
//! is, is a changed layer: ESTALE, and nothing is changed. Paths have no length limit either.
//!
//! ```text
//!   layer root fd ──openat(name, O_DIRECTORY|O_NOFOLLOW)──> dir fd (cached on the node)
//!        └── ... ──> parent dir fd ──op(parent fd, name, NOFOLLOW)──> the entry
//! ```
//!
//! Cost: a lookup of a directory opens its fd (kept for the node's lifetime, reused by every
//! operation below it), so most operations cost the one syscall they always did, on a
//! one-component name instead of a walk. At most half the fd limit is cached; past that, fds
//! are opened per operation. A lookup replaces a node's fds with what it found, a removal
//! through the mount drops them, `forget` closes them.
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;

use super::node::{LowerAt, Node, NodeId};
use super::{Overlay, Which};
use crate::sys::nofollow::{self, Target};
use crate::{Error, Result, sys};

/// A directory fd of one layer: the layer root, a node's cached fd, or one opened for this
/// operation only.
#[derive(Debug)]
pub enum DirFd<'a> {
    Layer(BorrowedFd<'a>),
    Shared(Arc<OwnedFd>),
    Owned(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            DirFd::Layer(fd) => *fd,
            DirFd::Shared(fd) => fd.as_fd(),
            DirFd::Owned(fd) => fd.as_fd(),
        }
    }
}

/// Where a node is in one layer: a directory fd and one name in it. For a directory node the
/// directory's own fd and "."; for the root, the layer root and ".".
#[derive(Debug)]
pub struct Place<'a> {
    pub dir: DirFd<'a>,
    pub name: CString,
}

impl Place<'_> {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
    pub fn lstat(&self) -> Result<Stat, Errno> {
        sys::lstat_at(self.fd(), &self.name)
    }
}

/// An fd of a node's entry whose type was checked against the node: a directory's fd, or an
/// `O_PATH | O_NOFOLLOW` (or, for truncation, writable) fd of anything else.
#[derive(Debug)]
pub struct Checked<'a> {
    pub place: Place<'a>,
    fd: Option<OwnedFd>,
    pub stat: Stat,
}

impl Checked<'_> {
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.fd {
            Some(fd) => fd.as_fd(),
            None => self.place.fd(),
        }
    }

    /// Where xattr calls act: the fd, or (for a symlink, whose fd they would follow) its name.
    pub fn xattr_target(&self) -> Target<'_> {
        if sys::file_type(&self.stat) == FileType::Symlink {
            Target::At(self.place.fd(), &self.place.name)
        } else {
            Target::Fd(self.fd())
        }
    }
}

/// ENOTDIR or ELOOP from a no-follow open of what a node says is a directory: a symlink or a
/// file was put there behind the mount's back.
fn changed(e: Errno) -> Error {
    match e {
        Errno::NOTDIR | Errno::LOOP => Error::Sys(Errno::STALE),
        e => Error::Sys(e),
    }
}

impl Overlay {
    /// The directory fd of directory node `node` in layer `w`: cached, else opened name by
    /// name from the nearest ancestor with a cached fd (or the layer root), caching each.
    pub fn dir_fd(&self, node: &Arc<Node>, w: Which) -> Result<DirFd<'_>> {
        if node.id == NodeId::ROOT {
            return Ok(DirFd::Layer(self.layer_fd(w)?));
        }
        if let Some(fd) = node.dir_fd(w) {
            return Ok(DirFd::Shared(fd));
        }
        // The nodes without an fd, nearest first, and the fd found above them.
        let mut chain: Vec<(Arc<Node>, CString)> = Vec::new();
        let mut cur = node.clone();
        let mut fd = loop {
            if cur.id == NodeId::ROOT {
                break DirFd::Layer(self.layer_fd(w)?);
            }
            if let Some(fd) = cur.dir_fd(w) {
                break DirFd::Shared(fd);
            }
            // A redirect may have put this directory's copy in a lower layer elsewhere.
            let at = match w {
                Which::Lower(li) => cur
                    .state()
                    .lower_at
                    .iter()
                    .find(|(l, _)| *l == li)
                    .map(|(_, a)| a.clone()),
                Which::Upper => None,
            };
            if let (Which::Lower(li), Some(LowerAt::Path(p))) = (w, &at) {
                let opened = self.walk_lower(li, p)?.ok_or(Error::Sys(Errno::STALE))?;
                break DirFd::Shared(cur.keep_dir_fd(w, Arc::new(opened)));
            }
            let link = cur
                .state()
                .links
                .first()
                .cloned()
                .ok_or(Error::Sys(Errno::STALE))?;
            let name = match at {
                Some(LowerAt::Name(n)) => n,
                _ => link.name,
            };
            chain.push((cur, sys::cstr(&name)?));
            cur = link.parent;
        };
        for (n, name) in chain.iter().rev() {
            let opened = nofollow::open_dir(fd.as_fd(), name).map_err(changed)?;
            if w == Which::Upper
                && let Some(ino) = n.state().upper_ino
                && rustix::fs::fstat(&opened)?.st_ino != ino
            {
                // Another directory was put in its place outside the mount.
                return Err(Error::Sys(Errno::STALE));
            }
            fd = DirFd::Shared(n.keep_dir_fd(w, Arc::new(opened)));
        }
        Ok(fd)
    }

    /// Where `node` is in layer `w` (see `Place`).
    pub fn place(&self, node: &Arc<Node>, w: Which) -> Result<Place<'_>> {
        if node.is_dir() {
            return Ok(Place {
                dir: self.dir_fd(node, w)?,
                name: c".".to_owned(),
            });
        }
        let link = node
            .state()
            .links
            .first()
            .cloned()
            .ok_or(Error::Sys(Errno::STALE))?;
        Ok(Place {
            dir: self.dir_fd(&link.parent, w)?,
            name: CString::new(link.name.as_bytes()).map_err(|_| Error::Sys(Errno::INVAL))?,
        })
    }

    /// The directory fd of `parent` in layer `w` and `name` as a C string.
    pub fn child_place(
        &self,
        parent: &Arc<Node>,
        w: Which,
        name: &std::ffi::OsStr,
    ) -> Result<Place<'_>> {
        Ok(Place {
            dir: self.dir_fd(parent, w)?,
            name: sys::cstr(name)?,
        })
    }

    /// Stat of `node` in layer `w`, checked against the node's type.
    pub fn stat_in(&self, node: &Arc<Node>, w: Which) -> Result<Stat> {
        let p = self.place(node, w)?;
        let st = if node.is_dir() {
            rustix::fs::fstat(p.fd())?
        } else {
            p.lstat()?
        };
        if sys::file_type(&st) != node.kind {
            return Err(Error::Sys(Errno::STALE));
        }
        Ok(st)
    }

    /// An fd of `node`'s entry in layer `w`, its type checked (see `Checked`); `write` opens a
    /// regular file for writing (for truncation) instead of `O_PATH`.
    pub fn checked(&self, node: &Arc<Node>, w: Which, write: bool) -> Result<Checked<'_>> {
        let place = self.place(node, w)?;
        if node.is_dir() {
            let stat = rustix::fs::fstat(place.fd())?;
            return Ok(Checked {
                place,
                fd: None,
                stat,
            });
        }
        let (fd, stat) = if write && node.kind == FileType::RegularFile {
            nofollow::open_regular(place.fd(), &place.name, rustix::fs::OFlags::WRONLY, 0)?
        } else {
            let fd = nofollow::open_path(place.fd(), &place.name)?;
            let st = rustix::fs::fstat(&fd)?;
            (fd, st)
        };
        if sys::file_type(&stat) != node.kind {
            return Err(Error::Sys(Errno::STALE));
        }
        Ok(Checked {
            place,
            fd: Some(fd),
            stat,
        })
    }
}
