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

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, RenameFlags, Uid};
use rustix::io::Errno;

use super::copyup::{Data, remove_any};
use super::lookup::{Probe, Resolved, probe};
use super::node::Node;
use super::{Caller, Entry, Overlay, Which, name_ok};
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
        name_ok(name)?;
        if let NewKind::Node {
            kind: FileType::CharacterDevice,
            rdev: 0,
        } = what
        {
            // That is a whiteout on disk: overlayfs refuses to create one as a file.
            return Err(Error::Sys(Errno::PERM));
        }
        self.copy_up(parent, Data::Full)?;
        let _dir = parent.dir_lock.lock();
        let ppath = parent.path()?;
        let rel = sys::join(&ppath, name);
        let upper = self.layer_fd(Which::Upper)?;
        let pstat = sys::lstat_at(upper, &ppath)?;
        let (uid, gid, mode) = new_owner(&pstat, caller, what, mode);
        let fd = match probe(upper, &ppath, &rel, name)? {
            Probe::Present(_) => return Err(Error::Sys(Errno::EXIST)),
            Probe::Missing => make(upper, &rel, what, mode, uid, gid)?,
            Probe::Whiteout => {
                let work = self.writable()?.work.fd();
                let tmp = self.tmp_name();
                let built = make(work, &tmp, what, mode, uid, gid).and_then(|fd| {
                    if matches!(what, NewKind::Dir) {
                        sys::lsetxattr(work, &tmp, self.opaque_xattr(), b"y", 0)?;
                    }
                    self.swap_over_whiteout(&tmp, &ppath, name)?;
                    Ok(fd)
                });
                if built.is_err() {
                    remove_any(work, &tmp);
                }
                built?
            }
        };
        let entry = self.entry_after_change(parent, &ppath, name)?;
        Ok((entry, fd))
    }

    /// Swaps the staged `work/tmp` with the whiteout at `ppath/name` in upper and drops the
    /// whiteout. A `.wh.NAME` marker beside it (another tool's whiteout) is removed as well.
    fn swap_over_whiteout(&self, tmp: &CStr, ppath: &CStr, name: &OsStr) -> Result<()> {
        let work = self.writable()?.work.fd();
        let upper = self.layer_fd(Which::Upper)?;
        let rel = sys::join(ppath, name);
        match sys::lstat_at(upper, &rel) {
            Ok(st) if sys::is_whiteout(&st) => {
                sys::rename(work, tmp, upper, &rel, RenameFlags::EXCHANGE)?;
                remove_any(work, tmp);
            }
            _ => {
                let wh = sys::join(ppath, &super::whiteout::wh_name(name));
                sys::rename(work, tmp, upper, &rel, RenameFlags::NOREPLACE)?;
                match rustix::fs::unlinkat(upper, &wh, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Re-resolves `name` after a change and returns it as an entry (one lookup reference).
    fn entry_after_change(&self, parent: &Arc<Node>, ppath: &CStr, name: &OsStr) -> Result<Entry> {
        let r = self
            .resolve(parent, &parent.state(), ppath, name)?
            .ok_or(Error::Sys(Errno::NOENT))?;
        Ok(self.entry_from(parent, name, r))
    }

    /// Adds the name `newparent/newname` for `node` (copying it up first).
    pub fn link(&self, node: &Arc<Node>, newparent: &Arc<Node>, newname: &OsStr) -> Result<Entry> {
        if node.is_dir() {
            return Err(Error::Sys(Errno::PERM));
        }
        name_ok(newname)?;
        self.copy_up(node, Data::Full)?;
        self.copy_up(newparent, Data::Full)?;
        let _dir = newparent.dir_lock.lock();
        let src = node.path()?;
        let ppath = newparent.path()?;
        let rel = sys::join(&ppath, newname);
        let upper = self.layer_fd(Which::Upper)?;
        match probe(upper, &ppath, &rel, newname)? {
            Probe::Present(_) => return Err(Error::Sys(Errno::EXIST)),
            Probe::Missing => rustix::fs::linkat(upper, &src, upper, &rel, AtFlags::empty())?,
            Probe::Whiteout => {
                let work = self.writable()?.work.fd();
                let tmp = self.tmp_name();
                rustix::fs::linkat(upper, &src, work, &tmp, AtFlags::empty())?;
                if let Err(e) = self.swap_over_whiteout(&tmp, &ppath, newname) {
                    remove_any(work, &tmp);
                    return Err(e);
                }
            }
        }
        self.entry_after_change(newparent, &ppath, newname)
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
        if super::whiteout::is_wh_name(name) {
            return Err(Error::Sys(Errno::NOENT));
        }
        let pst = parent.state();
        let ppath = parent.path()?;
        let r = self
            .resolve(parent, &pst, &ppath, name)?
            .ok_or(Error::Sys(Errno::NOENT))?;
        let is_dir = r.kind == FileType::Directory;
        if dir && !is_dir {
            return Err(Error::Sys(Errno::NOTDIR));
        }
        if !dir && is_dir {
            return Err(Error::Sys(Errno::ISDIR));
        }
        let rel = sys::join(&ppath, name);
        if dir
            && !self
                .list_dir_at(None, &resolved_state(&r), &rel)?
                .is_empty()
        {
            return Err(Error::Sys(Errno::NOTEMPTY));
        }
        self.copy_up(parent, Data::Full)?;
        let _dir = parent.dir_lock.lock();
        let ppath = parent.path()?;
        let rel = sys::join(&ppath, name);
        let needs_wh = self.lower_positive(parent, &ppath, name)?;
        let upper = self.layer_fd(Which::Upper)?;
        let work = self.writable()?.work.fd();
        if r.upper {
            if !needs_wh {
                let flags = if dir {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                match rustix::fs::unlinkat(upper, &rel, flags) {
                    Ok(()) => {}
                    // An upper directory holding only whiteouts: move it aside, then clear it.
                    Err(Errno::NOTEMPTY | Errno::EXIST) if dir => {
                        let tmp = self.tmp_name();
                        sys::rename(upper, &rel, work, &tmp, RenameFlags::empty())?;
                        remove_any(work, &tmp);
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                let tmp = self.tmp_name();
                self.rename_leaving_whiteout(upper, &rel, work, &tmp)?;
                remove_any(work, &tmp);
            }
        } else if needs_wh {
            self.place_whiteout(&rel)?;
        }
        if let Some(node) = self.nodes.get(self.id_of(parent.id, name, &r).0) {
            node.remove_link(parent.id, name);
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

    /// Puts a whiteout at `rel` in upper, where upper has no entry.
    pub(super) fn place_whiteout(&self, rel: &CStr) -> Result<()> {
        let work = self.writable()?.work.fd();
        let upper = self.layer_fd(Which::Upper)?;
        let tmp = self.tmp_name();
        sys::mknod_whiteout(work, &tmp)?;
        if let Err(e) = sys::rename(work, &tmp, upper, rel, RenameFlags::NOREPLACE) {
            remove_any(work, &tmp);
            return Err(e.into());
        }
        Ok(())
    }
}

/// The state a resolved directory would have as a node (for listing it before it is one).
pub(super) fn resolved_state(r: &Resolved) -> super::node::NodeState {
    super::node::NodeState {
        links: Vec::new(),
        upper: r.upper,
        lowers: r.lowers.clone(),
        upper_ino: None,
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

/// Creates the entry `rel` beneath `dir` owned by uid:gid with `mode`.
fn make(
    dir: BorrowedFd<'_>,
    rel: &CStr,
    what: NewKind<'_>,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<Option<OwnedFd>> {
    let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    let special = mode & 0o7000 != 0;
    match what {
        NewKind::File { flags } => {
            let fd = sys::open_at(dir, rel, flags | OFlags::CREATE | OFlags::EXCL, mode)?;
            rustix::fs::fchown(fd.as_fd(), owner.0, owner.1)?;
            if special {
                rustix::fs::fchmod(fd.as_fd(), Mode::from_raw_mode(mode))?;
            }
            return Ok(Some(fd));
        }
        NewKind::Dir => rustix::fs::mkdirat(dir, rel, Mode::from_raw_mode(mode))?,
        NewKind::Node { kind, rdev } => {
            rustix::fs::mknodat(dir, rel, kind, Mode::from_raw_mode(mode), rdev)?
        }
        NewKind::Symlink { target } => rustix::fs::symlinkat(target, dir, rel)?,
    }
    rustix::fs::chownat(dir, rel, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)?;
    if special && !matches!(what, NewKind::Symlink { .. }) {
        rustix::fs::chmodat(dir, rel, Mode::from_raw_mode(mode), AtFlags::empty())?;
    }
    Ok(None)
}
