//! Operations on an existing node: open, setattr, readlink, xattrs.
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{FileType, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::copyup::Data;
use super::dirops::open_flags;
use super::node::Node;
use super::place::Place;
use super::{Attr, Overlay, Which, whiteout};
use crate::sys::nofollow::{self, Target};
use crate::{Error, Result, sys};

/// A time to set: a value, or the current time.
#[derive(Debug, Clone, Copy)]
pub enum SetTime {
    Now,
    At(i64, u32),
}

/// The changes of one setattr request; `None` leaves a field alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

/// An opened file: its fd, and whether it is the upper copy.
#[derive(Debug)]
pub struct Opened {
    pub fd: OwnedFd,
    pub upper: bool,
}

fn wants_write(flags: OFlags) -> bool {
    let acc = flags & OFlags::ACCMODE;
    acc == OFlags::WRONLY || acc == OFlags::RDWR || flags.contains(OFlags::TRUNC)
}

impl Overlay {
    /// Will `open` with these flags copy file data up (slow for a large file)?
    pub fn open_copies_data(&self, node: &Node, flags: i32) -> bool {
        let flags = open_flags(flags);
        wants_write(flags)
            && !flags.contains(OFlags::TRUNC)
            && !node.is_upper()
            && !self.is_read_only()
    }

    /// Opens a regular file; a write open copies it up first (without data under O_TRUNC).
    pub fn open(&self, node: &Arc<Node>, flags: i32) -> Result<Opened> {
        let flags = open_flags(flags);
        if wants_write(flags) {
            if self.is_read_only() {
                return Err(Error::Sys(Errno::ROFS));
            }
            let data = if flags.contains(OFlags::TRUNC) {
                Data::Empty
            } else {
                Data::Full
            };
            self.copy_up(node, data)?;
        }
        if node.kind != FileType::RegularFile {
            return Err(Error::Sys(Errno::STALE));
        }
        let w = Self::top_of(&node.state())?;
        let p = self.place(node, w)?;
        let (fd, _) = nofollow::open_regular(p.fd(), &p.name, flags, 0)?;
        Ok(Opened {
            fd,
            upper: w == Which::Upper,
        })
    }

    /// Will `setattr` copy file data up (slow for a large file)? On a lower regular file every
    /// change copies the data first, except a truncation to 0.
    pub fn setattr_copies_data(&self, node: &Node, a: &SetAttr) -> bool {
        !node.is_upper()
            && node.kind == FileType::RegularFile
            && a.size != Some(0)
            && !self.is_read_only()
    }

    /// Changes attributes (copying up first). With `fh`, an fd of the upper copy opened
    /// through the mount, the changes act on that fd; else on the upper entry reached
    /// no-follow and checked against the node's type.
    pub fn setattr(&self, node: &Arc<Node>, a: &SetAttr, fh: Option<&OwnedFd>) -> Result<Attr> {
        let data = if a.size == Some(0) {
            Data::Empty
        } else {
            Data::Full
        };
        if a.mode.is_some() && node.kind == FileType::Symlink {
            return Err(Error::Sys(Errno::OPNOTSUPP));
        }
        self.copy_up(node, data)?;
        let checked;
        let fd = match fh {
            Some(fd) => fd.as_fd(),
            None => {
                checked = self.checked(node, Which::Upper, a.size.is_some())?;
                checked.fd()
            }
        };
        let owner_change = a.uid.is_some() || a.gid.is_some() || a.mode.is_some();
        if !(owner_change && self.set_override(Target::Fd(fd), &rustix::fs::fstat(fd)?, a)?) {
            if a.uid.is_some() || a.gid.is_some() {
                let uid = a.uid.map(|u| self.owners.stored_uid(u));
                let gid = a.gid.map(|g| self.owners.stored_gid(g));
                nofollow::chown_fd(fd, uid, gid)?;
            }
            if let Some(mode) = a.mode {
                nofollow::chmod_fd(fd, mode & 0o7777)?;
            }
        }
        if let Some(size) = a.size {
            rustix::fs::ftruncate(fd, size)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let times = Timestamps {
                last_access: timespec(a.atime),
                last_modification: timespec(a.mtime),
            };
            nofollow::utimens_fd(fd, &times)?;
        }
        let mut attr = rustix::fs::fstat(fd)?;
        self.fix_attr(node, &node.state(), &mut attr);
        self.show_owners(node, &mut attr);
        Ok(attr)
    }

    pub fn readlink(&self, node: &Arc<Node>) -> Result<Vec<u8>> {
        let p = self.place(node, Self::top_of(&node.state())?)?;
        let target = rustix::fs::readlinkat(p.fd(), &p.name, Vec::new())?;
        Ok(target.into_bytes())
    }

    /// `name` as stored in the layers (see `whiteout::OwnXattrs`).
    fn stored_xattr(&self, name: &CStr) -> Result<CString> {
        CString::new(self.own_xattrs().to_stored(name.to_bytes()))
            .map_err(|_| Error::Sys(Errno::INVAL))
    }

    pub fn getxattr(&self, node: &Arc<Node>, name: &CStr) -> Result<Vec<u8>> {
        let stored = self.stored_xattr(name)?;
        self.xattr_allowed(name)?;
        if whiteout::is_private_xattr(stored.to_bytes())
            || self.is_override_xattr(stored.to_bytes())
        {
            return Err(Error::Sys(Errno::NODATA));
        }
        let p = self.read_place(node)?;
        nofollow::get_xattr(target(node, &p), &stored)?.ok_or(Error::Sys(Errno::NODATA))
    }

    /// `noxattrs=1` refuses every xattr, `noacl` the POSIX ACLs (as fuse-overlayfs does).
    fn xattr_allowed(&self, name: &CStr) -> Result<()> {
        let acl = name.to_bytes().starts_with(b"system.posix_acl_");
        if self.quirks.noxattrs || (acl && self.quirks.noacl) {
            return Err(Error::Sys(Errno::OPNOTSUPP));
        }
        Ok(())
    }

    /// Where `node`'s xattrs are read: its visible copy, checked to still be of the node's
    /// type (a symlink swapped in for a file is ESTALE, not the symlink's xattrs).
    fn read_place(&self, node: &Arc<Node>) -> Result<Place<'_>> {
        let p = self.place(node, Self::top_of(&node.state())?)?;
        if !node.is_dir() && sys::file_type(&p.lstat()?) != node.kind {
            return Err(Error::Sys(Errno::STALE));
        }
        Ok(p)
    }

    /// Xattr names, NUL-terminated and concatenated, overlay-private ones left out.
    pub fn listxattr(&self, node: &Arc<Node>) -> Result<Vec<u8>> {
        if self.quirks.noxattrs {
            return Err(Error::Sys(Errno::OPNOTSUPP));
        }
        let p = self.read_place(node)?;
        let names = nofollow::list_xattrs(target(node, &p))?;
        let own = self.own_xattrs();
        let mut out = Vec::new();
        let visible = names
            .iter()
            .filter(|n| !self.is_override_xattr(n.to_bytes()));
        for shown in visible.filter_map(|n| own.to_shown(n.to_bytes())) {
            out.extend_from_slice(&shown);
            out.push(0);
        }
        Ok(out)
    }

    pub fn setxattr(&self, node: &Arc<Node>, name: &CStr, value: &[u8], flags: i32) -> Result<()> {
        let stored = self.stored_xattr(name)?;
        self.xattr_allowed(name)?;
        if whiteout::is_private_xattr(stored.to_bytes())
            || self.is_override_xattr(stored.to_bytes())
        {
            return Err(Error::Sys(Errno::PERM));
        }
        self.writable()?;
        self.copy_up(node, Data::Full)?;
        let c = self.checked(node, Which::Upper, false)?;
        nofollow::set_xattr(c.xattr_target(), &stored, value, flags)?;
        Ok(())
    }

    pub fn removexattr(&self, node: &Arc<Node>, name: &CStr) -> Result<()> {
        let stored = self.stored_xattr(name)?;
        self.xattr_allowed(name)?;
        if whiteout::is_private_xattr(stored.to_bytes())
            || self.is_override_xattr(stored.to_bytes())
        {
            return Err(Error::Sys(Errno::NODATA));
        }
        self.writable()?;
        // Like overlayfs: no copy-up for removing what isn't there.
        if !node.is_upper() {
            self.getxattr(node, name)?;
        }
        self.copy_up(node, Data::Full)?;
        let c = self.checked(node, Which::Upper, false)?;
        nofollow::remove_xattr(c.xattr_target(), &stored)?;
        Ok(())
    }

    /// fsyncdir: flush the upper directory when there is one.
    pub fn fsync_dir(&self, node: &Arc<Node>) -> Result<()> {
        if !self.fsync || !node.is_upper() || !node.is_dir() {
            return Ok(());
        }
        let dir = self.dir_fd(node, Which::Upper)?;
        match rustix::fs::fsync(dir.as_fd()) {
            // An O_PATH fd (an unreadable directory) can't be synced: reopen it.
            Err(Errno::BADF) => {
                let fd = sys::open_at(dir.as_fd(), c".", OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
                rustix::fs::fsync(fd.as_fd())?;
            }
            r => r?,
        }
        Ok(())
    }

    pub fn xattr_name(name: &std::ffi::OsStr) -> Result<CString> {
        Ok(sys::cstr(name)?)
    }
}

/// The xattr target of `node` at `p`: a directory's own fd, else its name beneath its parent.
pub(super) fn target<'a>(node: &Node, p: &'a Place<'_>) -> Target<'a> {
    if node.is_dir() {
        Target::Fd(p.fd())
    } else {
        Target::At(p.fd(), &p.name)
    }
}

fn timespec(t: Option<SetTime>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(SetTime::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(SetTime::At(s, ns)) => Timespec {
            tv_sec: s,
            tv_nsec: ns as _,
        },
    }
}
