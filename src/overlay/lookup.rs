//! Name resolution down the stack.
//!
//! For `parent/name`, the layers where `parent` is a directory are probed top first:
//! - a whiteout (char 0/0, or a `.wh.name` file beside it) hides the name in every layer below;
//! - a non-directory ends the search (it hides everything below);
//! - a directory merges with the directories of the same name below it, until an opaque one,
//!   a whiteout or a non-directory;
//! - an upper non-directory also notes the topmost lower file of the same type at that path
//!   (its copy-up origin), whose inode number keeps `st_ino` stable across copy-up and remount.
use std::ffi::{CStr, OsStr};
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;

use super::layer::LowerIdx;
use super::node::{Node, NodeId, NodeState};
use super::{Entry, Overlay, Which, whiteout};
use crate::{Error, Result, sys};

/// What one layer holds at a path.
pub(super) enum Probe {
    Missing,
    Whiteout,
    Present(Stat),
}

/// The outcome of resolving a name, before it becomes a node.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub kind: FileType,
    /// Stat of the visible (topmost) copy.
    pub stat: Stat,
    pub upper: bool,
    /// As `NodeState::lowers`.
    pub lowers: Vec<LowerIdx>,
    /// (dev, ino, nlink) of the lower file an upper non-directory shadows, if of the same type.
    pub origin: Option<(u64, u64, u64)>,
}

pub(super) fn probe(fd: BorrowedFd<'_>, parent: &CStr, rel: &CStr, name: &OsStr) -> Result<Probe> {
    match sys::lstat_at(fd, rel) {
        Ok(st) if sys::is_whiteout(&st) => Ok(Probe::Whiteout),
        Ok(st) => Ok(Probe::Present(st)),
        Err(Errno::NOENT | Errno::NOTDIR) => {
            let wh = sys::join(parent, &whiteout::wh_name(name));
            match sys::lstat_at(fd, &wh) {
                Ok(_) => Ok(Probe::Whiteout),
                Err(Errno::NOENT | Errno::NOTDIR | Errno::NAMETOOLONG) => Ok(Probe::Missing),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

impl Overlay {
    /// Resolves `name` in the directory described by `pst` at `ppath`. `Ok(None)`: no such
    /// entry (absent or whited out).
    pub(super) fn resolve(
        &self,
        pst: &NodeState,
        ppath: &CStr,
        name: &OsStr,
    ) -> Result<Option<Resolved>> {
        let rel = sys::join(ppath, name);
        let mut found: Option<Resolved> = None;
        if pst.upper {
            match probe(self.layer_fd(Which::Upper)?, ppath, &rel, name)? {
                Probe::Whiteout => return Ok(None),
                Probe::Missing => {}
                Probe::Present(st) => {
                    let kind = sys::file_type(&st);
                    let opaque = kind == FileType::Directory
                        && whiteout::dir_is_opaque(self.layer_fd(Which::Upper)?, &rel)?;
                    let r = Resolved {
                        kind,
                        stat: st,
                        upper: true,
                        lowers: Vec::new(),
                        origin: None,
                    };
                    if opaque {
                        return Ok(Some(r));
                    }
                    found = Some(r);
                }
            }
        }
        for &li in &pst.lowers {
            let fd = self.layer_fd(Which::Lower(li))?;
            let st = match probe(fd, ppath, &rel, name)? {
                Probe::Whiteout => break,
                Probe::Missing => continue,
                Probe::Present(st) => st,
            };
            let kind = sys::file_type(&st);
            match &mut found {
                None => {
                    found = Some(Resolved {
                        kind,
                        stat: st,
                        upper: false,
                        lowers: vec![li],
                        origin: None,
                    });
                    if kind != FileType::Directory || whiteout::dir_is_opaque(fd, &rel)? {
                        break;
                    }
                }
                Some(f) if f.kind == FileType::Directory => {
                    if kind != FileType::Directory {
                        break;
                    }
                    if f.lowers.is_empty() {
                        f.origin = Some((st.st_dev, st.st_ino, st.st_nlink));
                    }
                    f.lowers.push(li);
                    if whiteout::dir_is_opaque(fd, &rel)? {
                        break;
                    }
                }
                Some(f) => {
                    if kind == f.kind {
                        f.lowers = vec![li];
                        f.origin = Some((st.st_dev, st.st_ino, st.st_nlink));
                    }
                    break;
                }
            }
        }
        Ok(found)
    }

    /// The id a resolved entry gets (see node.rs for why it derives from inode numbers).
    pub(super) fn id_of(&self, r: &Resolved) -> NodeId {
        if r.upper {
            if let Some(id) = self.nodes.upper_alias(r.stat.st_ino) {
                return id;
            }
            if let Some((dev, ino, nlink)) = r.origin {
                // A copied-up file keeps its lower inode number, unless hard links make that
                // number ambiguous (kernel overlayfs makes the same choice).
                if r.kind == FileType::Directory || (nlink == 1 && r.stat.st_nlink == 1) {
                    return self.node_id_for(dev, ino);
                }
            }
        }
        let id = self.node_id_for(r.stat.st_dev, r.stat.st_ino);
        if r.kind != FileType::Directory && self.nodes.get(id).is_some_and(|n| n.is_upper()) {
            // A lower hard link whose sibling name was copied up: that copy is another file
            // now (copy-up breaks lower hard links, as in overlayfs), so this name gets its own id.
            return NodeId(id.0 ^ (1 << 63));
        }
        id
    }

    /// Looks `name` up in `parent`, taking one lookup reference on the node returned.
    pub fn lookup(&self, parent: &Arc<Node>, name: &OsStr) -> Result<Entry> {
        if whiteout::is_wh_name(name) {
            return Err(Error::Sys(Errno::NOENT));
        }
        if !parent.is_dir() {
            return Err(Error::Sys(Errno::NOTDIR));
        }
        let pst = parent.state();
        let ppath = parent.path()?;
        let r = self
            .resolve(&pst, &ppath, name)?
            .ok_or(Error::Sys(Errno::NOENT))?;
        Ok(self.entry_from(parent, name, r))
    }

    /// Turns a resolution into a node (new or shared) with one more lookup reference.
    pub(super) fn entry_from(&self, parent: &Arc<Node>, name: &OsStr, r: Resolved) -> Entry {
        let id = self.id_of(&r);
        let make = || NodeState {
            links: Vec::new(),
            upper: r.upper,
            lowers: r.lowers.clone(),
            upper_ino: None,
        };
        let node = self.nodes.lookup_or_insert(id, r.kind, make);
        node.update(|s| {
            // A resolution that raced with this node's copy-up must not undo it.
            if r.upper || !s.upper {
                s.upper = r.upper;
                s.lowers = r.lowers.clone();
            }
        });
        node.add_link(parent, name);
        if r.upper {
            self.nodes.set_upper_alias(&node, r.stat.st_ino);
        }
        let mut attr = r.stat;
        self.fix_attr(&node, &node.state(), &mut attr);
        Entry { node, attr }
    }

    /// Does any lower layer still show `name` under `parent` (so removing or renaming the name
    /// away must leave a whiteout)? Mirrors overlayfs's "lower positive" check.
    pub(super) fn lower_positive(
        &self,
        pst: &NodeState,
        ppath: &CStr,
        name: &OsStr,
    ) -> Result<bool> {
        let rel = sys::join(ppath, name);
        for &li in &pst.lowers {
            match probe(self.layer_fd(Which::Lower(li))?, ppath, &rel, name)? {
                Probe::Whiteout => return Ok(false),
                Probe::Missing => continue,
                Probe::Present(_) => return Ok(true),
            }
        }
        Ok(false)
    }
}
