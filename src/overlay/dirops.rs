//! Operations that change names: create, mkdir, mknod, symlink, link, unlink, rmdir, rename.
//!
//! New entries are created in the upper directory and then given the caller's ownership. Where
//! the upper layer holds a whiteout for the name, the entry is built in the workdir and swapped
//! in with one `RENAME_EXCHANGE` (a new directory there is marked opaque), so the deleted lower
//! entry never shows through. Removing a name that a lower layer still shows leaves a whiteout,
//! created atomically with `RENAME_WHITEOUT`.
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::copyup::{Data, remove_any};
use super::lookup::{Probe, probe};
use super::node::Node;
use super::{Caller, Entry, Overlay, Which, existing_name, name_ok};
use crate::sys::nofollow::{self, Target};
use crate::{Error, Result, sys};

/// What to create.
#[derive(Debug, Clone, Copy)]
pub enum NewKind<'a> {
    File { flags: OFlags },
    Dir,
    Node { kind: FileType, rdev: u64 },
    Symlink { target: &'a CStr },
}

/// Flags accepted when opening through the mount (the rest is the kernel's business).
pub fn open_flags(flags: i32) -> OFlags {
    let keep = OFlags::ACCMODE
        | OFlags::APPEND
        | OFlags::NONBLOCK
        | OFlags::DSYNC
        | OFlags::SYNC
        | OFlags::NOATIME
        | OFlags::TRUNC;
    OFlags::from_bits_retain(flags as u32) & keep
}

impl Overlay {
    /// Creates `name` in `parent`. For files, also returns the open fd.
    pub fn create(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        what: NewKind<'_>,
        mode: u32,
        caller: Caller,
    ) -> Result<(Entry, Option<OwnedFd>)> {
        let cname = name_ok(name)?;
        if let NewKind::Node {
            kind: FileType::CharacterDevice,
            rdev: 0,
        } = what
        {
            // That is a whiteout on disk: overlayfs refuses to create one as a file.
            return Err(Error::Sys(Errno::PERM));
        }
        self.copy_up(parent, Data::Full)?;
        let upper = self.dir_fd(parent, Which::Upper)?;
        let _dir = parent.dir_lock.lock();
        let pstat = rustix::fs::fstat(upper.as_fd())?;
        let caller = self.stored_caller(caller);
        let (uid, gid, mode) = new_owner(&pstat, caller, what, mode);
        // With an override xattr the entry belongs to the daemon on disk, with a mode it can
        // always use; the xattr holds what the caller asked for.
        let (disk_what, disk) = self.on_disk_owner(what, uid, gid, mode);
        let fd = match probe(upper.as_fd(), &cname, name)? {
            Probe::Present(_) => return Err(Error::Sys(Errno::EXIST)),
            Probe::Missing => {
                let fd = make(upper.as_fd(), &cname, disk_what, disk.2, disk.0, disk.1)?;
                self.write_new_override(upper.as_fd(), &cname, what, disk_what, (uid, gid, mode))?;
                if matches!(what, NewKind::Dir)
                    && self.redirect_dir
                    && !parent.state().lowers.is_empty()
                {
                    // As the kernel when offline changes to the layers are not allowed
                    // (redirect_dir=on): a new directory in a merged one is marked opaque
                    // (an optimisation there, allowed to fail).
                    let t = Target::At(upper.as_fd(), &cname);
                    if let Err(e) = nofollow::set_xattr(t, self.opaque_xattr(), b"y", 0) {
                        log::debug!("opaque on a new directory: {e}");
                    }
                }
                fd
            }
            Probe::Whiteout => {
                let work = self.writable()?.work.fd();
                let tmp = self.tmp_name();
                let built = make(work, &tmp, disk_what, disk.2, disk.0, disk.1).and_then(|fd| {
                    self.write_new_override(work, &tmp, what, disk_what, (uid, gid, mode))?;
                    if matches!(what, NewKind::Dir) {
                        let t = Target::At(work, &tmp);
                        nofollow::set_xattr(t, self.opaque_xattr(), b"y", 0)?;
                    }
                    self.swap_over_whiteout(&tmp, upper.as_fd(), &cname, name)?;
                    Ok(fd)
                });
                if built.is_err() {
                    remove_any(work, &tmp);
                }
                built?
            }
        };
        let entry = self.entry_after_change(parent, name)?;
        Ok((entry, fd))
    }

    /// Swaps the staged `work/tmp` with the whiteout at `name` in the upper directory `upper`
    /// and drops the whiteout. A `.wh.NAME` marker beside it (another tool's whiteout) is
    /// removed as well.
    fn swap_over_whiteout(
        &self,
        tmp: &CStr,
        upper: BorrowedFd<'_>,
        cname: &CStr,
        name: &OsStr,
    ) -> Result<()> {
        let work = self.writable()?.work.fd();
        match sys::lstat_at(upper, cname) {
            Ok(st) if sys::is_whiteout(&st) => {
                sys::rename(work, tmp, upper, cname, RenameFlags::EXCHANGE)?;
                remove_any(work, tmp);
            }
            _ => {
                let wh = sys::cstr(&super::whiteout::wh_name(name))?;
                sys::rename(work, tmp, upper, cname, RenameFlags::NOREPLACE)?;
                match rustix::fs::unlinkat(upper, &wh, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Re-resolves `name` after a change and returns it as an entry (one lookup reference).
    fn entry_after_change(&self, parent: &Arc<Node>, name: &OsStr) -> Result<Entry> {
        let r = self
            .resolve(parent, &parent.state(), name)?
            .ok_or(Error::Sys(Errno::NOENT))?;
        Ok(self.entry_from(parent, name, r))
    }

    /// Adds the name `newparent/newname` for `node` (copying it up first).
    pub fn link(&self, node: &Arc<Node>, newparent: &Arc<Node>, newname: &OsStr) -> Result<Entry> {
        if node.is_dir() {
            return Err(Error::Sys(Errno::PERM));
        }
        let cnew = name_ok(newname)?;
        self.copy_up(node, Data::Full)?;
        self.copy_up(newparent, Data::Full)?;
        let src = self.checked(node, Which::Upper, false)?;
        let upper = self.dir_fd(newparent, Which::Upper)?;
        let _dir = newparent.dir_lock.lock();
        let link_to = |dir: BorrowedFd<'_>, name: &CStr| {
            nofollow::link_fd(src.fd(), src.place.fd(), &src.place.name, dir, name)
        };
        match probe(upper.as_fd(), &cnew, newname)? {
            Probe::Present(_) => return Err(Error::Sys(Errno::EXIST)),
            Probe::Missing => link_to(upper.as_fd(), &cnew)?,
            Probe::Whiteout => {
                let work = self.writable()?.work.fd();
                let tmp = self.tmp_name();
                link_to(work, &tmp)?;
                if let Err(e) = self.swap_over_whiteout(&tmp, upper.as_fd(), &cnew, newname) {
                    remove_any(work, &tmp);
                    return Err(e);
                }
            }
        }
        self.entry_after_change(newparent, newname)
    }

    /// Removes a non-directory name.
    pub fn unlink(&self, parent: &Arc<Node>, name: &OsStr) -> Result<()> {
        self.remove(parent, name, false)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: &Arc<Node>, name: &OsStr) -> Result<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: &Arc<Node>, name: &OsStr, dir: bool) -> Result<()> {
        self.writable()?;
        let cname = existing_name(name)?;
        let r = self
            .resolve(parent, &parent.state(), name)?
            .ok_or(Error::Sys(Errno::NOENT))?;
        let is_dir = r.kind == FileType::Directory;
        if dir && !is_dir {
            return Err(Error::Sys(Errno::NOTDIR));
        }
        if !dir && is_dir {
            return Err(Error::Sys(Errno::ISDIR));
        }
        if dir && !self.list_fds(&r.fds)?.is_empty() {
            return Err(Error::Sys(Errno::NOTEMPTY));
        }
        self.copy_up(parent, Data::Full)?;
        let upper = self.dir_fd(parent, Which::Upper)?;
        let _dir = parent.dir_lock.lock();
        let needs_wh = self.lower_positive(parent, name)?;
        let (upper, work) = (upper.as_fd(), self.writable()?.work.fd());
        if r.upper {
            if !needs_wh {
                let flags = if dir {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                match rustix::fs::unlinkat(upper, &cname, flags) {
                    Ok(()) => {}
                    // An upper directory holding only whiteouts: move it aside, then clear it.
                    Err(Errno::NOTEMPTY | Errno::EXIST) if dir => {
                        let tmp = self.tmp_name();
                        sys::rename(upper, &cname, work, &tmp, RenameFlags::empty())?;
                        remove_any(work, &tmp);
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                let tmp = self.tmp_name();
                self.rename_leaving_whiteout(upper, &cname, work, &tmp)?;
                remove_any(work, &tmp);
            }
        } else if needs_wh {
            self.place_whiteout(upper, &cname)?;
        }
        if let Some(node) = self.nodes.get(self.id_of(parent.id, name, &r).0) {
            node.remove_link(parent.id, name);
            node.drop_dir_fds();
        }
        Ok(())
    }

    /// Moves `from` to `to`, leaving a whiteout at `from`, atomically when the filesystem
    /// supports RENAME_WHITEOUT.
    fn rename_leaving_whiteout(
        &self,
        from_dir: BorrowedFd<'_>,
        from: &CStr,
        to_dir: BorrowedFd<'_>,
        to: &CStr,
    ) -> Result<()> {
        match sys::rename(from_dir, from, to_dir, to, RenameFlags::WHITEOUT) {
            Ok(()) => Ok(()),
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                let work = self.writable()?.work.fd();
                let wh = self.tmp_name();
                sys::mknod_whiteout(work, &wh)?;
                sys::rename(work, &wh, from_dir, from, RenameFlags::EXCHANGE)?;
                sys::rename(work, &wh, to_dir, to, RenameFlags::NOREPLACE)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Puts a whiteout at `name` in the upper directory `upper`, where it has no entry.
    pub(super) fn place_whiteout(&self, upper: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        let work = self.writable()?.work.fd();
        let tmp = self.tmp_name();
        sys::mknod_whiteout(work, &tmp)?;
        if let Err(e) = sys::rename(work, &tmp, upper, name, RenameFlags::NOREPLACE) {
            remove_any(work, &tmp);
            return Err(e.into());
        }
        Ok(())
    }
}

/// Owner and mode of a new entry: the caller's uid; the parent's group and, for directories,
/// its setgid bit when the parent is setgid (BSD group semantics), else the caller's gid.
fn new_owner(
    parent: &rustix::fs::Stat,
    c: Caller,
    what: NewKind<'_>,
    mode: u32,
) -> (u32, u32, u32) {
    let setgid = parent.st_mode & 0o2000 != 0;
    let gid = if setgid { parent.st_gid } else { c.gid };
    let mut mode = mode & 0o7777;
    if setgid && matches!(what, NewKind::Dir) {
        mode |= 0o2000;
    }
    (c.uid, gid, mode)
}

/// Creates the entry `name` beneath `dir` owned by uid:gid with `mode`. Owner and mode are
/// set through an fd of what was created (opened no-follow, its type checked), so a swap of
/// the new entry for a symlink changes nothing outside the layer.
fn make(
    dir: BorrowedFd<'_>,
    name: &CStr,
    what: NewKind<'_>,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<Option<OwnedFd>> {
    let special = mode & 0o7000 != 0;
    let (fd, kind) = match what {
        NewKind::File { flags } => {
            // O_EXCL|O_NOFOLLOW: a new regular file or nothing.
            let fd = sys::open_at(dir, name, flags | OFlags::CREATE | OFlags::EXCL, mode)?;
            nofollow::chown_fd(fd.as_fd(), Some(uid), Some(gid))?;
            if special {
                rustix::fs::fchmod(fd.as_fd(), Mode::from_raw_mode(mode))?;
            }
            return Ok(Some(fd));
        }
        NewKind::Dir => {
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?;
            let fd = nofollow::open_dir(dir, name).map_err(|e| match e {
                Errno::NOTDIR | Errno::LOOP => Errno::STALE,
                e => e,
            })?;
            (fd, FileType::Directory)
        }
        NewKind::Node { kind, rdev } => {
            rustix::fs::mknodat(dir, name, kind, Mode::from_raw_mode(mode), rdev)?;
            (nofollow::open_path(dir, name)?, kind)
        }
        NewKind::Symlink { target } => {
            rustix::fs::symlinkat(target, dir, name)?;
            (nofollow::open_path(dir, name)?, FileType::Symlink)
        }
    };
    if sys::file_type(&rustix::fs::fstat(&fd)?) != kind {
        return Err(Error::Sys(Errno::STALE));
    }
    nofollow::chown_fd(fd.as_fd(), Some(uid), Some(gid))?;
    if special && kind != FileType::Symlink {
        nofollow::chmod_fd(fd.as_fd(), mode)?;
    }
    Ok(None)
}
