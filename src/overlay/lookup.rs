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
        parent: &Node,
        pst: &NodeState,
        ppath: &CStr,
        name: &OsStr,
    ) -> Result<Option<Resolved>> {
        self.resolve_from(parent, pst, ppath, name, 0)
    }

    /// As `resolve`, not probing the top `lower_skip` lower layers (known not to hold `name`:
    /// lower layers never change, so a listing of them proves it).
    pub(super) fn resolve_from(
        &self,
        parent: &Node,
        pst: &NodeState,
        ppath: &CStr,
        name: &OsStr,
        lower_skip: usize,
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
        for &li in pst.lowers.iter().skip(lower_skip) {
            let fd = self.layer_fd(Which::Lower(li))?;
            let st = match self.probe_lower(parent, li, ppath, &rel, name)? {
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

    /// `probe` in lower layer `li`, answered from the directory's cached names when it can be.
    fn probe_lower(
        &self,
        parent: &Node,
        li: LowerIdx,
        ppath: &CStr,
        rel: &CStr,
        name: &OsStr,
    ) -> Result<Probe> {
        let fd = self.layer_fd(Which::Lower(li))?;
        let names = match parent.cached_lower_names(li) {
            Some(n) => n,
            None => {
                let raw = self.read_layer_dir(Which::Lower(li), ppath)?;
                let built = super::readdir::lower_names(&raw).map(Arc::new);
                parent.store_lower_names(li, built.clone());
                built
            }
        };
        let Some(names) = names else {
            return probe(fd, ppath, rel, name);
        };
        if names.whiteouts.contains(name) {
            return Ok(Probe::Whiteout);
        }
        if !names.names.contains(name) {
            return Ok(Probe::Missing);
        }
        match sys::lstat_at(fd, rel) {
            Ok(st) if sys::is_whiteout(&st) => Ok(Probe::Whiteout),
            Ok(st) => Ok(Probe::Present(st)),
            Err(Errno::NOENT) => Ok(Probe::Missing),
            Err(e) => Err(e.into()),
        }
    }

    /// The node id and shown inode number of `parent/name` resolved as `r` (see node.rs for
    /// why they derive from inode numbers).
    pub(super) fn id_of(&self, parent: NodeId, name: &OsStr, r: &Resolved) -> (NodeId, u64) {
        if r.upper {
            if let Some(id) = self.nodes.upper_alias(r.stat.st_ino) {
                let ino = self.nodes.get(id).map_or(id.0, |n| n.ino());
                return (id, ino);
            }
            if let Some((dev, ino, nlink)) = r.origin {
                // A copied-up file keeps its lower inode number, unless hard links make that
                // number ambiguous (kernel overlayfs makes the same choice).
                if r.kind == FileType::Directory || (nlink == 1 && r.stat.st_nlink == 1) {
                    let id = self.node_id_for(dev, ino);
                    // The origin is found by path, so a copied-up file renamed away keeps it:
                    // then the file now at this path is another one and gets its own number.
                    let taken = self.nodes.get(id).is_some_and(|n| {
                        let st = n.state();
                        st.upper && st.upper_ino.is_some_and(|u| u != r.stat.st_ino)
                    });
                    if !taken {
                        return (id, id.0);
                    }
                }
            }
        }
        let id = self.node_id_for(r.stat.st_dev, r.stat.st_ino);
        if !r.upper && r.kind != FileType::Directory && r.stat.st_nlink > 1 {
            // Each name of a lower hard link is its own node: a write through one name copies
            // up that name only (overlayfs breaks lower hard links on copy-up), and FUSE's
            // open doesn't say which name was used. All of them show the lower inode number.
            return (per_name_id(parent, name, id), id.0);
        }
        (id, id.0)
    }

    /// Looks `name` up in `parent`, taking one lookup reference on the node returned.
    pub fn lookup(&self, parent: &Arc<Node>, name: &OsStr) -> Result<Entry> {
        self.lookup_hinted(parent, name, 0)
    }

    /// `lookup` of a name from a merged listing of `parent` (`DirEntry::lower_skip`).
    pub fn lookup_hinted(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        lower_skip: usize,
    ) -> Result<Entry> {
        if whiteout::is_wh_name(name) {
            return Err(Error::Sys(Errno::NOENT));
        }
        if !parent.is_dir() {
            return Err(Error::Sys(Errno::NOTDIR));
        }
        let pst = parent.state();
        let ppath = parent.path()?;
        let r = self
            .resolve_from(parent, &pst, &ppath, name, lower_skip)?
            .ok_or(Error::Sys(Errno::NOENT))?;
        Ok(self.entry_from(parent, name, r))
    }

    /// Turns a resolution into a node (new or shared) with one more lookup reference.
    pub(super) fn entry_from(&self, parent: &Arc<Node>, name: &OsStr, r: Resolved) -> Entry {
        let (id, ino) = self.id_of(parent.id, name, &r);
        let make = || NodeState {
            links: Vec::new(),
            upper: r.upper,
            lowers: r.lowers.clone(),
            upper_ino: None,
        };
        let node = self.nodes.lookup_or_insert(id, ino, r.kind, make);
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
    pub(super) fn lower_positive(&self, parent: &Node, ppath: &CStr, name: &OsStr) -> Result<bool> {
        let rel = sys::join(ppath, name);
        for &li in &parent.state().lowers {
            match self.probe_lower(parent, li, ppath, &rel, name)? {
                Probe::Whiteout => return Ok(false),
                Probe::Missing => continue,
                Probe::Present(_) => return Ok(true),
            }
        }
        Ok(false)
    }
}

/// A node id for one name of a lower hard link: tagged with the top bit, which inode numbers
/// of real filesystems don't use, and derived from the name so that it is stable.
fn per_name_id(parent: NodeId, name: &OsStr, id: NodeId) -> NodeId {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (parent.0, name, id.0).hash(&mut h);
    NodeId((1 << 63) | (h.finish() >> 1))
}
