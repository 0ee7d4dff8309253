//! rename(2) through the union, with RENAME_NOREPLACE and RENAME_EXCHANGE.
//!
//! Like overlayfs: with `redirect_dir` (the default) a directory that exists in a lower layer
//! is copied up alone (not its contents) and renamed in upper with a redirect to its lower
//! copies (`redirect.rs`); without it such a rename fails with EXDEV (so `mv` falls back to
//! copying). Files are copied up and renamed in upper.
//! The old name gets a whiteout when a lower layer still shows it (RENAME_WHITEOUT, atomic);
//! an upper-only directory moved over a name a lower layer shows becomes opaque.
//!
//! Three phases: `plan` (resolve both names, every errno check, nothing changed), `prepare`
//! (copy up what moves and both parents), then under both directories' locks `exchange` or
//! `replace` on the upper directories' fds, one name each.
use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use rustix::fs::{FileType, RenameFlags};
use rustix::io::Errno;

use super::copyup::{Data, remove_any};
use super::lookup::Resolved;
use super::node::Node;
use super::{Overlay, Which, existing_name, name_ok};
use crate::sys::nofollow::{self, Target};
use crate::{Error, Result, sys};

/// What a rename will do, once every check has passed.
struct Plan {
    src: Resolved,
    dst: Option<Resolved>,
    src_node: Option<Arc<Node>>,
    dst_node: Option<Arc<Node>>,
    exchange: bool,
}

/// One side of a rename: the parent, the name, and the parent's upper fd.
struct Side<'a> {
    parent: &'a Arc<Node>,
    name: &'a OsStr,
    cname: &'a CStr,
}

fn is_dir(r: &Resolved) -> bool {
    r.kind == FileType::Directory
}

/// A directory that exists in a lower layer: renaming it needs redirect_dir (EXDEV).
fn merged_dir(r: &Resolved) -> bool {
    is_dir(r) && (!r.upper || !r.lowers.is_empty())
}

impl Overlay {
    pub fn rename(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        newparent: &Arc<Node>,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<()> {
        self.writable()?;
        let cnew = name_ok(newname)?;
        let cname = existing_name(name)?;
        let exchange = flags.contains(RenameFlags::EXCHANGE);
        if flags.contains(RenameFlags::WHITEOUT)
            || (exchange && flags.contains(RenameFlags::NOREPLACE))
        {
            return Err(Error::Sys(Errno::INVAL));
        }
        let old = Side {
            parent,
            name,
            cname: &cname,
        };
        let new = Side {
            parent: newparent,
            name: newname,
            cname: &cnew,
        };
        let Some(plan) = self.plan(&old, &new, flags)? else {
            return Ok(());
        };
        self.prepare(&plan, &old, &new)?;
        let upper_old = self.dir_fd(parent, Which::Upper)?;
        let upper_new = self.dir_fd(newparent, Which::Upper)?;
        // Both directories' locks, in id order (copy-ups, which take them too, are done).
        let (first, second) = if parent.id <= newparent.id {
            (parent, newparent)
        } else {
            (newparent, parent)
        };
        let _dir1 = first.dir_lock.lock();
        let _dir2 = (first.id != second.id).then(|| second.dir_lock.lock());
        let fds = (upper_old.as_fd(), upper_new.as_fd());
        if plan.exchange {
            self.exchange(&plan, &old, &new, fds)?;
        } else {
            self.replace(&plan, &old, &new, fds)?;
        }
        if let Some(n) = &plan.src_node {
            n.remove_link(parent.id, name);
            n.add_link(newparent, newname);
        }
        if let Some(n) = &plan.dst_node {
            n.remove_link(newparent.id, newname);
            if plan.exchange {
                n.add_link(parent, name);
            } else {
                n.drop_dir_fds();
            }
        }
        Ok(())
    }

    /// Resolves both names and makes every check; `None` when the rename is a no-op.
    fn plan(&self, old: &Side<'_>, new: &Side<'_>, flags: RenameFlags) -> Result<Option<Plan>> {
        let exchange = flags.contains(RenameFlags::EXCHANGE);
        let src = self
            .resolve(old.parent, &old.parent.state(), old.name)?
            .ok_or(Error::Sys(Errno::NOENT))?;
        let dst = self.resolve(new.parent, &new.parent.state(), new.name)?;
        let src_node = self.nodes.get(self.id_of(old.parent.id, old.name, &src).0);
        let dst_node = dst
            .as_ref()
            .and_then(|d| self.nodes.get(self.id_of(new.parent.id, new.name, d).0));
        if merged_dir(&src) && !self.redirect_dir {
            return Err(Error::Sys(Errno::XDEV));
        }
        match &dst {
            None if exchange => return Err(Error::Sys(Errno::NOENT)),
            Some(_) if flags.contains(RenameFlags::NOREPLACE) => {
                return Err(Error::Sys(Errno::EXIST));
            }
            Some(d) if exchange && merged_dir(d) && !self.redirect_dir => {
                return Err(Error::Sys(Errno::XDEV));
            }
            Some(_) if exchange => {}
            Some(d) => {
                if is_dir(&src) && !is_dir(d) {
                    return Err(Error::Sys(Errno::NOTDIR));
                }
                if !is_dir(&src) && is_dir(d) {
                    return Err(Error::Sys(Errno::ISDIR));
                }
                if is_dir(d) && !self.list_fds(&d.fds)?.is_empty() {
                    return Err(Error::Sys(Errno::NOTEMPTY));
                }
                // Two names of one file: rename does nothing.
                if src_node.is_some()
                    && src_node.as_ref().map(|n| n.id) == dst_node.as_ref().map(|n| n.id)
                {
                    return Ok(None);
                }
            }
            None => {}
        }
        if old.parent.id == new.parent.id && old.name == new.name {
            return Ok(None);
        }
        Ok(Some(Plan {
            src,
            dst,
            src_node,
            dst_node,
            exchange,
        }))
    }

    /// Copies up what moves, and both parents.
    fn prepare(&self, plan: &Plan, old: &Side<'_>, new: &Side<'_>) -> Result<()> {
        if let Some(n) = &plan.src_node {
            self.copy_up(n, Data::Full)?;
        } else if !plan.src.upper {
            return Err(Error::Sys(Errno::STALE));
        }
        self.copy_up(old.parent, Data::Full)?;
        self.copy_up(new.parent, Data::Full)?;
        if plan.exchange
            && let Some(n) = &plan.dst_node
        {
            self.copy_up(n, Data::Full)?;
        }
        Ok(())
    }

    /// Marks the directory `name` beneath `dir` opaque (it moves into a merged directory:
    /// nothing a lower layer has under its new name may merge into it, as in overlayfs).
    fn set_opaque(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        nofollow::set_xattr(Target::At(dir, name), self.opaque_xattr(), b"y", 0)?;
        Ok(())
    }

    /// Before directory `r` moves into `to`: a merged or lower one gets a redirect to its
    /// lower copies; an upper-only one moving into a merged directory becomes opaque (nothing
    /// a lower layer has under its new name may merge into it). As the kernel's `ovl_rename`.
    fn mark_moved(
        &self,
        r: &Resolved,
        node: Option<&Arc<Node>>,
        to: &Arc<Node>,
        (dir, name): (BorrowedFd<'_>, &CStr),
        samedir: bool,
    ) -> Result<()> {
        if merged_dir(r) {
            let node = node.ok_or(Error::Sys(Errno::STALE))?;
            return self.set_redirect(node, dir, name, samedir);
        }
        if is_dir(r) && !to.state().lowers.is_empty() && !self.upper_opaque(dir, name)? {
            self.set_opaque(dir, name)?;
        }
        Ok(())
    }

    fn upper_opaque(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<bool> {
        let v = nofollow::get_xattr(Target::At(dir, name), self.opaque_xattr());
        Ok(matches!(v, Ok(Some(v)) if v == b"y"))
    }

    fn exchange(
        &self,
        plan: &Plan,
        old: &Side<'_>,
        new: &Side<'_>,
        (ufd_old, ufd_new): (BorrowedFd<'_>, BorrowedFd<'_>),
    ) -> Result<()> {
        let samedir = old.parent.id == new.parent.id;
        self.mark_moved(
            &plan.src,
            plan.src_node.as_ref(),
            new.parent,
            (ufd_old, old.cname),
            samedir,
        )?;
        if let Some(dst) = &plan.dst {
            self.mark_moved(
                dst,
                plan.dst_node.as_ref(),
                old.parent,
                (ufd_new, new.cname),
                samedir,
            )?;
        }
        sys::rename(
            ufd_old,
            old.cname,
            ufd_new,
            new.cname,
            RenameFlags::EXCHANGE,
        )?;
        Ok(())
    }

    fn replace(
        &self,
        plan: &Plan,
        old: &Side<'_>,
        new: &Side<'_>,
        (ufd_old, ufd_new): (BorrowedFd<'_>, BorrowedFd<'_>),
    ) -> Result<()> {
        let work = self.writable()?.work.fd();
        let src_dir = is_dir(&plan.src);
        let old_lower = self.lower_positive(old.parent, old.name)?;
        // Clear what the upper layer holds at the new name where rename(2) can't replace
        // it: an upper directory holding whiteouts, or a whiteout where a directory goes.
        let mut aside = None;
        let aside_needed = match sys::lstat_at(ufd_new, new.cname) {
            Ok(st) => {
                sys::file_type(&st) == FileType::Directory || (src_dir && sys::is_whiteout(&st))
            }
            Err(_) => false,
        };
        if aside_needed {
            let tmp = self.tmp_name();
            sys::rename(ufd_new, new.cname, work, &tmp, RenameFlags::empty())?;
            aside = Some(tmp);
        }
        let samedir = old.parent.id == new.parent.id;
        self.mark_moved(
            &plan.src,
            plan.src_node.as_ref(),
            new.parent,
            (ufd_old, old.cname),
            samedir,
        )?;
        let rflags = if old_lower {
            RenameFlags::WHITEOUT
        } else {
            RenameFlags::empty()
        };
        let moved = match sys::rename(ufd_old, old.cname, ufd_new, new.cname, rflags) {
            Err(Errno::INVAL) if old_lower => {
                sys::rename(ufd_old, old.cname, ufd_new, new.cname, RenameFlags::empty())
                    .map_err(Error::from)
                    .and_then(|()| self.place_whiteout(ufd_old, old.cname))
            }
            r => r.map_err(Error::from),
        };
        if let Some(tmp) = aside {
            if moved.is_err() {
                // Put the old target back.
                let _ = sys::rename(work, &tmp, ufd_new, new.cname, RenameFlags::NOREPLACE);
            }
            remove_any(work, &tmp);
        }
        moved?;
        // A `.wh.NAME` marker from another tool under the new name would hide it.
        if let Ok(wh) = sys::cstr(&super::whiteout::wh_name(new.name)) {
            let _ = rustix::fs::unlinkat(ufd_new, &wh, rustix::fs::AtFlags::empty());
        }
        Ok(())
    }
}
