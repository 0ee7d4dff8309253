//! rename(2) through the union, with RENAME_NOREPLACE and RENAME_EXCHANGE.
//!
//! Like overlayfs with redirect_dir=off: a directory that exists in a lower layer can't be
//! renamed (EXDEV, so `mv` falls back to copying); files are copied up and renamed in upper.
//! The old name gets a whiteout when a lower layer still shows it (RENAME_WHITEOUT, atomic);
//! an upper-only directory moved over a name a lower layer shows becomes opaque.
use std::ffi::OsStr;
use std::sync::Arc;

use rustix::fs::{FileType, RenameFlags};
use rustix::io::Errno;

use super::copyup::{Data, remove_any};
use super::dirops::resolved_state;
use super::node::Node;
use super::{Overlay, Which, name_ok};
use crate::{Error, Result, sys};

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
        name_ok(newname)?;
        if super::whiteout::is_wh_name(name) {
            return Err(Error::Sys(Errno::NOENT));
        }
        let exchange = flags.contains(RenameFlags::EXCHANGE);
        if flags.contains(RenameFlags::WHITEOUT)
            || (exchange && flags.contains(RenameFlags::NOREPLACE))
        {
            return Err(Error::Sys(Errno::INVAL));
        }
        let (pst, ppath) = (parent.state(), parent.path()?);
        let (npst, nppath) = (newparent.state(), newparent.path()?);
        let src = self
            .resolve(parent, &pst, &ppath, name)?
            .ok_or(Error::Sys(Errno::NOENT))?;
        let dst = self.resolve(newparent, &npst, &nppath, newname)?;
        let src_node = self.nodes.get(self.id_of(parent.id, name, &src).0);
        let dst_node = dst
            .as_ref()
            .and_then(|d| self.nodes.get(self.id_of(newparent.id, newname, d).0));
        let src_dir = src.kind == FileType::Directory;
        if src_dir && (!src.upper || !src.lowers.is_empty()) {
            return Err(Error::Sys(Errno::XDEV));
        }
        match &dst {
            None if exchange => return Err(Error::Sys(Errno::NOENT)),
            Some(_) if flags.contains(RenameFlags::NOREPLACE) => {
                return Err(Error::Sys(Errno::EXIST));
            }
            Some(d)
                if exchange
                    && d.kind == FileType::Directory
                    && (!d.upper || !d.lowers.is_empty()) =>
            {
                return Err(Error::Sys(Errno::XDEV));
            }
            Some(_) if exchange => {}
            Some(d) => {
                let dst_dir = d.kind == FileType::Directory;
                if src_dir && !dst_dir {
                    return Err(Error::Sys(Errno::NOTDIR));
                }
                if !src_dir && dst_dir {
                    return Err(Error::Sys(Errno::ISDIR));
                }
                if dst_dir {
                    let rel = sys::join(&nppath, newname);
                    if !self.list_dir_at(None, &resolved_state(d), &rel)?.is_empty() {
                        return Err(Error::Sys(Errno::NOTEMPTY));
                    }
                }
                // Two names of one file: rename does nothing.
                if src_node.is_some()
                    && src_node.as_ref().map(|n| n.id) == dst_node.as_ref().map(|n| n.id)
                {
                    return Ok(());
                }
            }
            None => {}
        }
        if parent.id == newparent.id && name == newname {
            return Ok(());
        }
        // Copy up what moves, and both parents.
        if let Some(n) = &src_node {
            self.copy_up(n, Data::Full)?;
        } else if !src.upper {
            return Err(Error::Sys(Errno::STALE));
        }
        self.copy_up(parent, Data::Full)?;
        self.copy_up(newparent, Data::Full)?;
        if exchange && let Some(n) = &dst_node {
            self.copy_up(n, Data::Full)?;
        }
        // Both directories' locks, in id order (copy-ups, which take them too, are done).
        let (first, second) = if parent.id <= newparent.id {
            (parent, newparent)
        } else {
            (newparent, parent)
        };
        let _dir1 = first.dir_lock.lock();
        let _dir2 = (first.id != second.id).then(|| second.dir_lock.lock());
        let (pst, ppath) = (parent.state(), parent.path()?);
        let (npst, nppath) = (newparent.state(), newparent.path()?);
        let old_rel = sys::join(&ppath, name);
        let new_rel = sys::join(&nppath, newname);
        let upper = self.layer_fd(Which::Upper)?;
        let work = self.writable()?.work.fd();
        let opaque = self.opaque_xattr();
        let old_lower = self.lower_positive(parent, &ppath, name)?;
        // Like overlayfs: a directory moved into a merged directory becomes opaque, so that
        // nothing a lower layer has (or later shows) under its new name merges into it.
        let into_merged = !npst.lowers.is_empty();
        let back_into_merged = !pst.lowers.is_empty();

        if exchange {
            let dst_dir = dst.as_ref().is_some_and(|d| d.kind == FileType::Directory);
            if src_dir && into_merged {
                sys::lsetxattr(upper, &old_rel, opaque, b"y", 0)?;
            }
            if dst_dir && back_into_merged {
                sys::lsetxattr(upper, &new_rel, opaque, b"y", 0)?;
            }
            sys::rename(upper, &old_rel, upper, &new_rel, RenameFlags::EXCHANGE)?;
        } else {
            // Clear what the upper layer holds at the new name where rename(2) can't replace
            // it: an upper directory holding whiteouts, or a whiteout where a directory goes.
            let mut aside = None;
            let aside_needed = match sys::lstat_at(upper, &new_rel) {
                Ok(st) => {
                    sys::file_type(&st) == FileType::Directory || (src_dir && sys::is_whiteout(&st))
                }
                Err(_) => false,
            };
            if aside_needed {
                let tmp = self.tmp_name();
                sys::rename(upper, &new_rel, work, &tmp, RenameFlags::empty())?;
                aside = Some(tmp);
            }
            if src_dir && into_merged {
                sys::lsetxattr(upper, &old_rel, opaque, b"y", 0)?;
            }
            let rflags = if old_lower {
                RenameFlags::WHITEOUT
            } else {
                RenameFlags::empty()
            };
            let moved = match sys::rename(upper, &old_rel, upper, &new_rel, rflags) {
                Err(Errno::INVAL) if old_lower => {
                    sys::rename(upper, &old_rel, upper, &new_rel, RenameFlags::empty())
                        .map_err(Error::from)
                        .and_then(|()| self.place_whiteout(&old_rel))
                }
                r => r.map_err(Error::from),
            };
            if let Some(tmp) = aside {
                if moved.is_err() {
                    // Put the old target back.
                    let _ = sys::rename(work, &tmp, upper, &new_rel, RenameFlags::NOREPLACE);
                }
                remove_any(work, &tmp);
            }
            moved?;
            // A `.wh.NAME` marker from another tool under the new name would hide it.
            let wh = sys::join(&nppath, &super::whiteout::wh_name(newname));
            let _ = rustix::fs::unlinkat(upper, &wh, rustix::fs::AtFlags::empty());
        }
        if let Some(n) = &src_node {
            n.remove_link(parent.id, name);
            n.add_link(newparent, newname);
        }
        if let Some(n) = &dst_node {
            n.remove_link(newparent.id, newname);
            if exchange {
                n.add_link(parent, name);
            }
        }
        Ok(())
    }
}
