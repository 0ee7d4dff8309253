//! Name resolution down the stack.
//!
//! For `parent/name`, the layers where `parent` is a directory are probed top first:
//! - a whiteout (char 0/0, or a `.wh.name` file beside it) hides the name in every layer below;
//! - a non-directory ends the search (it hides everything below);
//! - a directory merges with the directories of the same name below it, until an opaque one,
//!   a whiteout or a non-directory;
//! - an upper non-directory also notes the topmost lower file of the same type at that path
//!   (its copy-up origin), whose inode number keeps `st_ino` stable across copy-up and remount.
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;

use super::layer::LowerIdx;
use super::node::{LowerAt, Node, NodeId, NodeState};
use super::redirect::{self, Redirect, Value};
use super::{Entry, Overlay, Which, whiteout};
use crate::{Error, Result, sys};

/// What the upper layer decides about a name: hidden by a whiteout, absent, an entry that
/// ends the search (an opaque directory), or an entry lower layers may add to.
enum Upper {
    Hidden,
    Missing,
    Final(Resolved),
    /// With the redirect a directory carries, if any.
    Merge(Resolved, Option<Value>),
}

/// What one layer holds at a name.
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
    /// Directories: the directory's fd in every layer merged into it (upper first), opened
    /// no-follow while resolving; they become the node's cached fds.
    pub fds: Vec<(Which, Arc<OwnedFd>)>,
    /// An upper directory with a redirect: where its lower copies were looked for.
    pub redirect: Option<Arc<Redirect>>,
    /// Directories: the lower copies a redirect put elsewhere than at the name.
    pub lower_at: Vec<(LowerIdx, LowerAt)>,
}

/// Where the lower layers are probed for a name: at a name in the parent's lower
/// directories, or (an absolute redirect) at a path from each lower layer's root.
enum Loc {
    Here(CString, OsString),
    Abs(Vec<OsString>),
}

impl Loc {
    /// How a directory found here in layer `li` is reached, when not by its own `name` in
    /// its parent (see `LowerAt`).
    fn placed(&self, li: LowerIdx, name: &OsStr) -> Option<(LowerIdx, LowerAt)> {
        match self {
            Loc::Here(_, n) if n == name => None,
            Loc::Here(_, n) => Some((li, LowerAt::Name(n.clone()))),
            Loc::Abs(p) => Some((li, LowerAt::Path(p.clone()))),
        }
    }
}

/// What directory `dir` holds at `name`: an entry, a whiteout (char 0/0, or `.wh.name`), or
/// nothing.
pub(super) fn probe(dir: BorrowedFd<'_>, cname: &CStr, name: &OsStr) -> Result<Probe> {
    match sys::lstat_at(dir, cname) {
        Ok(st) if sys::is_whiteout(&st) => Ok(Probe::Whiteout),
        Ok(st) => Ok(Probe::Present(st)),
        Err(Errno::NOENT) => {
            let wh = sys::cstr(&whiteout::wh_name(name))?;
            match sys::lstat_at(dir, &wh) {
                Ok(_) => Ok(Probe::Whiteout),
                Err(Errno::NOENT | Errno::NAMETOOLONG) => Ok(Probe::Missing),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the directory `name` that `st` describes beneath `dir` (no-follow) and tells whether
/// it is opaque. ENOTDIR/ELOOP (something else was put there since the stat) is ESTALE.
fn open_merged_dir(dir: BorrowedFd<'_>, cname: &CStr) -> Result<(Arc<OwnedFd>, bool)> {
    let fd = sys::nofollow::open_dir(dir, cname).map_err(|e| match e {
        Errno::NOTDIR | Errno::LOOP => Error::Sys(Errno::STALE),
        e => Error::Sys(e),
    })?;
    let opaque = whiteout::fd_is_opaque(fd.as_fd())?;
    Ok((Arc::new(fd), opaque))
}

impl Overlay {
    /// Resolves `name` in directory `parent` (whose layers `pst` describes). `Ok(None)`: no
    /// such entry (absent or whited out).
    pub(super) fn resolve(
        &self,
        parent: &Arc<Node>,
        pst: &NodeState,
        name: &OsStr,
    ) -> Result<Option<Resolved>> {
        self.resolve_from(parent, pst, name, 0)
    }

    /// As `resolve`, not probing the top `lower_skip` lower layers (known not to hold `name`:
    /// lower layers never change, so a listing of them proves it).
    pub(super) fn resolve_from(
        &self,
        parent: &Arc<Node>,
        pst: &NodeState,
        name: &OsStr,
        lower_skip: usize,
    ) -> Result<Option<Resolved>> {
        let cname = sys::cstr(name)?;
        let mut found: Option<Resolved> = None;
        let mut redirect_to: Option<Value> = None;
        if pst.upper {
            match self.resolve_upper(parent, &cname, name)? {
                Upper::Hidden => return Ok(None),
                Upper::Missing => {}
                Upper::Final(r) => return Ok(Some(r)),
                Upper::Merge(r, v) => {
                    found = Some(r);
                    redirect_to = v;
                }
            }
        }
        let (layers, loc): (Vec<LowerIdx>, Loc) = match redirect_to {
            None => (
                pst.lowers.iter().skip(lower_skip).copied().collect(),
                Loc::Here(cname.clone(), name.to_owned()),
            ),
            Some(v) => {
                // A redirected upper directory: its lower copies are where the redirect says.
                let rd = Arc::new(redirect::resolve_value(v, || self.lower_path(parent))?);
                if let Some(f) = &mut found {
                    f.redirect = Some(rd.clone());
                }
                if rd.absolute {
                    (self.all_lowers(0), Loc::Abs(rd.path.clone()))
                } else {
                    let last = rd.path.last().cloned().unwrap_or_default();
                    (pst.lowers.clone(), Loc::Here(sys::cstr(&last)?, last))
                }
            }
        };
        self.resolve_lowers(parent, name, layers, loc, &mut found)?;
        Ok(found)
    }

    /// Every lower layer from `from` down.
    fn all_lowers(&self, from: usize) -> Vec<LowerIdx> {
        (from..self.lowers.len())
            .map(|i| LowerIdx(i as u16))
            .collect()
    }

    /// What lower layer `li` holds at `loc`, and (for `Loc::Abs`) the directory it is in.
    fn probe_loc(
        &self,
        parent: &Arc<Node>,
        li: LowerIdx,
        loc: &Loc,
    ) -> Result<(Probe, Option<OwnedFd>)> {
        match loc {
            Loc::Here(cname, name) => Ok((self.probe_lower(parent, li, cname, name)?, None)),
            Loc::Abs(path) => {
                let Some((last, dirs)) = path.split_last() else {
                    return Ok((Probe::Missing, None));
                };
                let Some(dir) = self.walk_lower(li, dirs)? else {
                    return Ok((Probe::Missing, None));
                };
                let p = probe(dir.as_fd(), &sys::cstr(last)?, last)?;
                Ok((p, Some(dir)))
            }
        }
    }

    /// Opens the lower directory found at `loc` in layer `li` (`dir`: where `probe_loc`
    /// found it); tells whether it is opaque and where the layers below continue (a redirect
    /// in a lower layer is followed as the kernel does).
    fn open_found(
        &self,
        parent: &Arc<Node>,
        li: LowerIdx,
        loc: &Loc,
        dir: &Option<OwnedFd>,
    ) -> Result<(Arc<OwnedFd>, bool, Option<Value>)> {
        let (fd, opaque) = match (loc, dir) {
            (Loc::Here(cname, _), _) => self.open_lower_child(parent, li, cname)?,
            (Loc::Abs(path), Some(d)) => {
                let last = path.last().ok_or(Error::Sys(Errno::STALE))?;
                open_merged_dir(d.as_fd(), &sys::cstr(last)?)?
            }
            (Loc::Abs(_), None) => return Err(Error::Sys(Errno::STALE)),
        };
        let next = if opaque {
            None
        } else {
            self.read_redirect(fd.as_fd())?
        };
        Ok((fd, opaque, next))
    }

    /// The lower half of a resolution of `name`: `layers` probed top first at `loc` (which a
    /// redirect in a lower directory moves for the layers below it), merged into `found`.
    fn resolve_lowers(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        mut layers: Vec<LowerIdx>,
        mut loc: Loc,
        found: &mut Option<Resolved>,
    ) -> Result<()> {
        let mut i = 0;
        while let Some(&li) = layers.get(i) {
            i += 1;
            let (st, dir) = match self.probe_loc(parent, li, &loc)? {
                (Probe::Whiteout, _) => break,
                (Probe::Missing, _) => continue,
                (Probe::Present(st), dir) => (st, dir),
            };
            let kind = sys::file_type(&st);
            let w = Which::Lower(li);
            let mut next = None;
            match found {
                None => {
                    let mut r = Resolved {
                        kind,
                        stat: st,
                        upper: false,
                        lowers: vec![li],
                        origin: None,
                        fds: Vec::new(),
                        redirect: None,
                        lower_at: Vec::new(),
                    };
                    let mut stop = kind != FileType::Directory;
                    if !stop {
                        let (fd, opaque, n) = self.open_found(parent, li, &loc, &dir)?;
                        r.fds.push((w, fd));
                        r.lower_at.extend(loc.placed(li, name));
                        stop = opaque;
                        next = n;
                    }
                    *found = Some(r);
                    if stop {
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
                    let (fd, opaque, n) = self.open_found(parent, li, &loc, &dir)?;
                    f.fds.push((w, fd));
                    f.lower_at.extend(loc.placed(li, name));
                    if opaque {
                        break;
                    }
                    next = n;
                }
                Some(f) => {
                    if kind == f.kind {
                        f.lowers = vec![li];
                        f.origin = Some((st.st_dev, st.st_ino, st.st_nlink));
                    }
                    break;
                }
            }
            match (next, &loc) {
                (None, _) => {}
                (Some(Value::Absolute(p)), _) => {
                    layers = self.all_lowers(usize::from(li.0) + 1);
                    i = 0;
                    loc = Loc::Abs(p);
                }
                (Some(Value::Relative(n)), Loc::Here(..)) => loc = Loc::Here(sys::cstr(&n)?, n),
                (Some(Value::Relative(n)), Loc::Abs(p)) => {
                    let mut p = p.clone();
                    p.pop();
                    p.push(n);
                    loc = Loc::Abs(p);
                }
            }
        }
        Ok(())
    }

    /// What the upper layer holds at `name` in `parent`.
    fn resolve_upper(&self, parent: &Arc<Node>, cname: &CStr, name: &OsStr) -> Result<Upper> {
        let ufd = self.dir_fd(parent, Which::Upper)?;
        let st = match probe(ufd.as_fd(), cname, name)? {
            Probe::Whiteout => return Ok(Upper::Hidden),
            Probe::Missing => return Ok(Upper::Missing),
            Probe::Present(st) => st,
        };
        let kind = sys::file_type(&st);
        let mut r = Resolved {
            kind,
            stat: st,
            upper: true,
            lowers: Vec::new(),
            origin: None,
            fds: Vec::new(),
            redirect: None,
            lower_at: Vec::new(),
        };
        if kind != FileType::Directory {
            return Ok(Upper::Merge(r, None));
        }
        // A directory the mount already knows: its fd (which pins that inode, so the number
        // can't have been reused) serves. Else open it, and take the fd's own stat: the inode
        // registered for the node is the one the fd holds.
        let known = self
            .nodes
            .upper_alias(st.st_ino)
            .and_then(|id| self.nodes.get(id))
            .filter(|n| n.is_dir() && n.state().upper_ino == Some(st.st_ino))
            .and_then(|n| n.dir_fd(Which::Upper));
        let (fd, opaque) = match known {
            Some(fd) => {
                let opaque = whiteout::fd_is_opaque(fd.as_fd())?;
                (fd, opaque)
            }
            None => {
                let (fd, opaque) = open_merged_dir(ufd.as_fd(), cname)?;
                r.stat = rustix::fs::fstat(&*fd)?;
                (fd, opaque)
            }
        };
        let rd = if opaque {
            None
        } else {
            self.read_redirect(fd.as_fd())?
        };
        r.fds.push((Which::Upper, fd));
        if opaque {
            return Ok(Upper::Final(r));
        }
        Ok(Upper::Merge(r, rd))
    }

    fn open_lower_child(
        &self,
        parent: &Arc<Node>,
        li: LowerIdx,
        cname: &CStr,
    ) -> Result<(Arc<OwnedFd>, bool)> {
        let pfd = self.dir_fd(parent, Which::Lower(li))?;
        open_merged_dir(pfd.as_fd(), cname)
    }

    /// `probe` in lower layer `li`, answered from the directory's cached names when it can be.
    fn probe_lower(
        &self,
        parent: &Arc<Node>,
        li: LowerIdx,
        cname: &CStr,
        name: &OsStr,
    ) -> Result<Probe> {
        let names = match parent.cached_lower_names(li) {
            Some(n) => n,
            None => {
                let pfd = self.dir_fd(parent, Which::Lower(li))?;
                let raw = self.read_layer_dir(Which::Lower(li), pfd.as_fd())?;
                let built = super::readdir::lower_names(&raw).map(Arc::new);
                parent.store_lower_names(li, built.clone());
                built
            }
        };
        let pfd = || self.dir_fd(parent, Which::Lower(li));
        let Some(names) = names else {
            return probe(pfd()?.as_fd(), cname, name);
        };
        if names.whiteouts.contains(name) {
            return Ok(Probe::Whiteout);
        }
        if !names.names.contains(name) {
            return Ok(Probe::Missing);
        }
        match sys::lstat_at(pfd()?.as_fd(), cname) {
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
        super::component(name)?;
        if whiteout::is_wh_name(name) {
            return Err(Error::Sys(Errno::NOENT));
        }
        if !parent.is_dir() {
            return Err(Error::Sys(Errno::NOTDIR));
        }
        let pst = parent.state();
        let r = self
            .resolve_from(parent, &pst, name, lower_skip)?
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
            redirect: r.redirect.clone(),
            lower_at: Arc::new(r.lower_at.clone()),
        };
        let node = self.nodes.lookup_or_insert(id, ino, r.kind, make);
        node.update(|s| {
            // A resolution that raced with this node's copy-up must not undo it.
            if r.upper || !s.upper {
                s.upper = r.upper;
                s.lowers = r.lowers.clone();
                s.redirect = r.redirect.clone();
                s.lower_at = Arc::new(r.lower_at.clone());
            }
        });
        node.add_link(parent, name);
        // The freshest view of the name: its directory fds replace older ones.
        for (w, fd) in r.fds {
            node.keep_dir_fd(w, fd);
        }
        if r.upper {
            self.nodes.set_upper_alias(&node, r.stat.st_ino);
        }
        let mut attr = r.stat;
        self.fix_attr(&node, &node.state(), &mut attr);
        self.show_owners(&node, &mut attr);
        Entry { node, attr }
    }

    /// Does any lower layer still show `name` under `parent` (so removing or renaming the name
    /// away must leave a whiteout)? Mirrors overlayfs's "lower positive" check.
    pub(super) fn lower_positive(&self, parent: &Arc<Node>, name: &OsStr) -> Result<bool> {
        let cname = sys::cstr(name)?;
        for &li in &parent.state().lowers {
            match self.probe_lower(parent, li, &cname, name)? {
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
