//! Merged directory listings: each layer read apart (I/O), then merged by a pure function.
//!
//! Merge rules, layers top first: a name shows from the highest layer holding it; a whiteout
//! (char 0/0, or a `.wh.NAME` entry) hides NAME in the layers below; `.wh.` names and
//! `.wh..wh..opq` are never shown; each name appears once. The order is stable: each layer's
//! own order, upper first.
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, OFlags};

use std::sync::Arc;

use super::node::{LowerNames, MAX_CACHED_NAMES, Node};
use super::{Overlay, Which, whiteout};
use crate::{Result, sys};

/// One entry of a layer's own listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: OsString,
    pub kind: FileType,
    /// Already mapped to the mount's inode numbering.
    pub ino: u64,
    pub whiteout: bool,
}

/// One entry of the merged listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: OsString,
    pub kind: FileType,
    pub ino: u64,
    /// How many lower layers (from the top) are known not to hold the name: a lookup of it
    /// may start below them. 0 for names shown from the upper layer.
    pub lower_skip: usize,
}

/// Merges per-layer listings (top first). Pure.
pub fn merge(layers: &[Vec<RawEntry>]) -> Vec<DirEntry> {
    let mut out: Vec<DirEntry> = Vec::new();
    // name -> Some(index in out) when shown, None when hidden by a whiteout.
    let mut seen: HashMap<OsString, Option<usize>> = HashMap::new();
    for (depth, layer) in layers.iter().enumerate() {
        let mut hides: Vec<OsString> = Vec::new();
        for e in layer {
            let b = e.name.as_bytes();
            if b == b"." || b == b".." {
                continue;
            }
            if b.starts_with(whiteout::WH_PREFIX) {
                let target = &b[whiteout::WH_PREFIX.len()..];
                if !target.starts_with(whiteout::WH_PREFIX) && !target.is_empty() {
                    hides.push(OsStr::from_bytes(target).to_owned());
                }
                continue;
            }
            match seen.get(&e.name) {
                None if e.whiteout => {
                    seen.insert(e.name.clone(), None);
                }
                None => {
                    seen.insert(e.name.clone(), Some(out.len()));
                    out.push(DirEntry {
                        name: e.name.clone(),
                        kind: e.kind,
                        ino: e.ino,
                        lower_skip: depth.saturating_sub(1),
                    });
                }
                // A copied-up entry reports its origin's inode number, like `stat` does.
                Some(Some(i)) if depth == 1 && !e.whiteout && out[*i].kind == e.kind => {
                    out[*i].ino = e.ino;
                }
                Some(_) => {}
            }
        }
        // `.wh.` markers hide only what lies below their own layer.
        for h in hides {
            seen.entry(h).or_insert(None);
        }
    }
    out
}

/// The lookup view of one lower layer's listing (`None` when too large to keep).
pub(super) fn lower_names(raw: &[RawEntry]) -> Option<LowerNames> {
    if raw.len() > MAX_CACHED_NAMES {
        return None;
    }
    let mut l = LowerNames::default();
    for e in raw {
        let b = e.name.as_bytes();
        if let Some(target) = b.strip_prefix(whiteout::WH_PREFIX) {
            if !target.starts_with(whiteout::WH_PREFIX) && !target.is_empty() {
                l.whiteouts.insert(OsStr::from_bytes(target).to_owned());
            }
        } else if e.whiteout {
            l.whiteouts.insert(e.name.clone());
        } else {
            l.names.insert(e.name.clone());
        }
    }
    Some(l)
}

impl Overlay {
    /// The merged listing of directory `node`, without "." and "..". The node keeps the lower
    /// layers' names for later lookups.
    pub fn list_dir(&self, node: &Arc<Node>) -> Result<Vec<DirEntry>> {
        let st = node.state();
        let mut fds = Vec::new();
        if st.upper {
            fds.push((Which::Upper, self.dir_fd(node, Which::Upper)?));
        }
        for &li in &st.lowers {
            fds.push((Which::Lower(li), self.dir_fd(node, Which::Lower(li))?));
        }
        let mut layers = Vec::new();
        for (w, fd) in &fds {
            let raw = self.read_layer_dir(*w, fd.as_fd())?;
            if let Which::Lower(li) = *w
                && node.cached_lower_names(li).is_none()
            {
                node.store_lower_names(li, lower_names(&raw).map(Arc::new));
            }
            layers.push(raw);
        }
        Ok(merge_layers(st.upper, layers))
    }

    /// The merged listing of a resolved directory that may not be a node (its fds, upper first).
    pub(super) fn list_fds(&self, fds: &[(Which, Arc<OwnedFd>)]) -> Result<Vec<DirEntry>> {
        let mut layers = Vec::new();
        for (w, fd) in fds {
            layers.push(self.read_layer_dir(*w, fd.as_fd())?);
        }
        let upper = fds.first().is_some_and(|(w, _)| *w == Which::Upper);
        Ok(merge_layers(upper, layers))
    }

    /// The entries of directory `dir` (a directory fd of layer `w`), read through a fresh fd
    /// of its own (a shared fd's offset can't be shared).
    pub(super) fn read_layer_dir(&self, w: Which, dir: BorrowedFd<'_>) -> Result<Vec<RawEntry>> {
        let dev = self.layer(w)?.dev;
        let fd = sys::open_at(dir, c".", OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        let mut out = Vec::new();
        for e in rustix::fs::Dir::read_from(fd.as_fd())? {
            let e = e?;
            let name = e.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let mut kind = e.file_type();
            let mut whiteout = false;
            if kind == FileType::CharacterDevice || kind == FileType::Unknown {
                let st = sys::lstat_at(fd.as_fd(), name)?;
                kind = sys::file_type(&st);
                whiteout = sys::is_whiteout(&st);
            }
            out.push(RawEntry {
                name: OsStr::from_bytes(name.to_bytes()).to_owned(),
                kind,
                ino: self.node_id_for(dev, e.ino()).0,
                whiteout,
            });
        }
        Ok(out)
    }
}

/// `merge` of per-layer listings, the first one the upper's when `upper`.
fn merge_layers(upper: bool, mut layers: Vec<Vec<RawEntry>>) -> Vec<DirEntry> {
    // The origin rule in `merge` assumes layer 1 is the first lower under an upper.
    if !upper {
        layers.insert(0, Vec::new());
    }
    merge(&layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, kind: FileType, ino: u64) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind,
            ino,
            whiteout: false,
        }
    }
    fn wh(name: &str) -> RawEntry {
        RawEntry {
            name: name.into(),
            kind: FileType::CharacterDevice,
            ino: 99,
            whiteout: true,
        }
    }
    fn names(v: &[DirEntry]) -> Vec<&str> {
        v.iter().map(|d| d.name.to_str().unwrap()).collect()
    }
    const F: FileType = FileType::RegularFile;
    const D: FileType = FileType::Directory;

    #[test]
    fn merge_rules() {
        // (layers top first, expected names)
        let cases: Vec<(Vec<Vec<RawEntry>>, Vec<&str>)> = vec![
            (vec![vec![e("a", F, 1)], vec![e("b", F, 2)]], vec!["a", "b"]),
            // upper shadows lower: once
            (vec![vec![e("a", F, 1)], vec![e("a", F, 2)]], vec!["a"]),
            // char 0/0 whiteout hides below, and is itself hidden
            (
                vec![vec![wh("a")], vec![e("a", F, 2), e("b", F, 3)]],
                vec!["b"],
            ),
            // .wh.NAME hides NAME below, not in its own layer's listing order
            (
                vec![vec![], vec![e(".wh.a", F, 5)], vec![e("a", F, 2)]],
                vec![],
            ),
            (vec![vec![e("a", F, 1)], vec![e(".wh.a", F, 5)]], vec!["a"]),
            // opaque marker and .wh. names never shown
            (vec![vec![e(".wh..wh..opq", F, 1), e("x", D, 2)]], vec!["x"]),
            // a whiteout in a middle layer hides only below
            (
                vec![vec![e("a", F, 1)], vec![wh("a")], vec![e("a", F, 3)]],
                vec!["a"],
            ),
            (vec![vec![], vec![wh("a")], vec![e("a", F, 3)]], vec![]),
            // dot entries from layers are dropped
            (
                vec![vec![e(".", D, 1), e("..", D, 1), e("z", F, 4)]],
                vec!["z"],
            ),
        ];
        for (i, (layers, want)) in cases.iter().enumerate() {
            assert_eq!(names(&merge(layers)), *want, "case {i}");
        }
    }

    #[test]
    fn copied_up_entries_report_the_origin_inode() {
        let m = merge(&[vec![e("a", F, 10), e("n", F, 11)], vec![e("a", F, 20)]]);
        assert_eq!(m[0].ino, 20);
        assert_eq!(m[1].ino, 11);
        let m = merge(&[vec![e("a", D, 10)], vec![e("a", F, 20)]]);
        assert_eq!(m[0].ino, 10, "different type: no origin");
    }
}
