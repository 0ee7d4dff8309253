//! Name resolution down a stack of overlay-format layers, without a mount: what `diff` compares
//! the writable layer with, and what `export` flattens.
//!
//! The rules are overlayfs's: the topmost layer holding a name decides; a whiteout (char 0/0)
//! hides the name below; a directory merges with directories of the same name below it until
//! one of them is opaque or a layer holds a non-directory there. Every path is looked up one
//! component at a time from directories already known to be real directories in their layer,
//! so no symlink inside a layer is ever followed.
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::{FileType, OFlags, Stat};
use rustix::io::Errno;

use crate::image::pack::sorted_names;
use crate::overlay::whiteout::{fd_is_opaque, is_wh_name};
use crate::{Error, Result, sys};

/// Layers, top first, each reached through a held directory fd.
pub struct LayerStack {
    layers: Vec<(OwnedFd, PathBuf)>,
}

/// Where a directory is visible: the layers (indexes, top first) that hold it as a directory
/// and take part in the merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirLayers(Vec<usize>);

impl DirLayers {
    /// The layer whose copy of the directory is shown (its attributes, xattrs).
    pub fn top(&self) -> usize {
        self.0.first().copied().unwrap_or(0)
    }

    /// The layer indexes, top first.
    pub fn layers(&self) -> &[usize] {
        &self.0
    }
}

/// What a path resolves to.
#[derive(Clone, Debug)]
pub enum Found {
    Absent,
    NonDir { layer: usize, st: Stat },
    Dir { st: Stat, layers: DirLayers },
}

impl LayerStack {
    /// Opens `paths` (top first).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let layers = paths
            .iter()
            .map(|p| {
                sys::open_dir_path(p)
                    .map(|fd| (fd, p.clone()))
                    .map_err(|e| Error::io("open layer", p, e.into()))
            })
            .collect::<Result<_>>()?;
        Ok(LayerStack { layers })
    }

    pub fn fd(&self, layer: usize) -> BorrowedFd<'_> {
        self.layers[layer].0.as_fd()
    }

    pub fn path(&self, layer: usize) -> &std::path::Path {
        &self.layers[layer].1
    }

    /// The root: every layer down to the first whose root is opaque.
    pub fn root(&self) -> Result<DirLayers> {
        let all: Vec<usize> = (0..self.layers.len()).collect();
        self.root_of(&all)
    }

    /// The root of the stack made of the layers `order` (indexes, top first): several stacks
    /// sharing layers can be resolved through one `LayerStack` (what `layerfs diff A B` does),
    /// and a layer found in both is the same index.
    pub fn root_of(&self, order: &[usize]) -> Result<DirLayers> {
        let mut v = Vec::new();
        for &i in order {
            v.push(i);
            if self.opaque(i, c".")? {
                break;
            }
        }
        Ok(DirLayers(v))
    }

    /// Opens `rel` beneath layer `layer` with no symlink in any component: a layer (a
    /// container's upper above all) may change while it is read, and nothing may lead out of it.
    fn beneath(
        &self,
        layer: usize,
        rel: &CStr,
        flags: OFlags,
    ) -> std::result::Result<OwnedFd, Errno> {
        rustix::fs::openat2(
            self.fd(layer),
            rel,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::BENEATH
                | rustix::fs::ResolveFlags::NO_SYMLINKS
                | rustix::fs::ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Stat of `rel` in layer `layer`, its parent reached without following symlinks.
    fn lstat_beneath(&self, layer: usize, rel: &CStr) -> std::result::Result<Stat, Errno> {
        let b = rel.to_bytes();
        match b.iter().rposition(|&c| c == b'/') {
            None => sys::lstat_at(self.fd(layer), rel),
            Some(i) => {
                let parent = CString::new(&b[..i]).map_err(|_| Errno::INVAL)?;
                let name = CString::new(&b[i + 1..]).map_err(|_| Errno::INVAL)?;
                let pfd = self.beneath(layer, &parent, OFlags::PATH | OFlags::DIRECTORY)?;
                sys::lstat_at(pfd.as_fd(), &name)
            }
        }
    }

    fn opaque(&self, layer: usize, rel: &CStr) -> Result<bool> {
        self.beneath(layer, rel, OFlags::RDONLY | OFlags::DIRECTORY)
            .and_then(|fd| fd_is_opaque(fd.as_fd()))
            .map_err(|e| Error::io("read xattrs", self.path(layer).join(os(rel)), e.into()))
    }

    /// Resolves `rel` (the full layer-relative path of a child of the directory `parent`).
    pub fn lookup(&self, parent: &DirLayers, rel: &CStr) -> Result<Found> {
        let mut found: Option<(Stat, Vec<usize>)> = None;
        for &i in &parent.0 {
            let st = match self.lstat_beneath(i, rel) {
                Ok(st) => st,
                // ELOOP: a component is a symlink in this layer, so the name isn't there.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => {
                    return Err(Error::io("stat", self.path(i).join(os(rel)), e.into()));
                }
            };
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            match &mut found {
                None if sys::is_whiteout(&st) => return Ok(Found::Absent),
                None if !is_dir => return Ok(Found::NonDir { layer: i, st }),
                None => found = Some((st, vec![i])),
                // A whiteout or non-directory below a directory ends the merge.
                Some(_) if !is_dir => break,
                Some((_, v)) => v.push(i),
            }
            if self.opaque(i, rel)? {
                break;
            }
        }
        Ok(match found {
            None => Found::Absent,
            Some((st, v)) => Found::Dir {
                st,
                layers: DirLayers(v),
            },
        })
    }

    /// Resolves a layer-relative path from the root (`""` is the root).
    pub fn lookup_path(&self, rel: &[u8]) -> Result<Found> {
        let root = self.root()?;
        let top = root.0.first().copied().unwrap_or(0);
        let mut cur = Found::Dir {
            st: sys::lstat_at(self.fd(top), c".")?,
            layers: root,
        };
        let mut sofar: Vec<u8> = Vec::new();
        for comp in rel.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
            let Found::Dir { layers, .. } = &cur else {
                return Ok(Found::Absent);
            };
            if !sofar.is_empty() {
                sofar.push(b'/');
            }
            sofar.extend_from_slice(comp);
            let c = CString::new(sofar.clone()).map_err(|_| Error::Sys(Errno::INVAL))?;
            cur = self.lookup(layers, &c)?;
        }
        Ok(cur)
    }

    /// The names visible in a merged directory (whiteouts and what they hide left out),
    /// sorted bytewise.
    pub fn list(&self, dir: &DirLayers, rel: &CStr) -> Result<Vec<CString>> {
        // name -> visible (false: hidden by a whiteout above)
        let mut seen: BTreeMap<CString, bool> = BTreeMap::new();
        for &i in &dir.0 {
            let fd = self
                .beneath(i, rel, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| Error::io("open", self.path(i).join(os(rel)), e.into()))?;
            let names = sorted_names(fd.as_fd())
                .map_err(|e| Error::io("read directory", self.path(i).join(os(rel)), e.into()))?;
            for n in names {
                if seen.contains_key(&n) || is_wh_name(os(&n)) {
                    continue;
                }
                let visible = match sys::lstat_at(fd.as_fd(), &n) {
                    Ok(st) => !sys::is_whiteout(&st),
                    Err(Errno::NOENT) => continue,
                    Err(e) => {
                        return Err(Error::io("stat", self.path(i).join(os(rel)), e.into()));
                    }
                };
                seen.insert(n, visible);
            }
        }
        Ok(seen
            .into_iter()
            .filter(|(_, v)| *v)
            .map(|(n, _)| n)
            .collect())
    }
}

/// Joins a layer-relative directory path and a name (`"."` is the root).
pub fn child_path(dir: &CStr, name: &CStr) -> CString {
    sys::join(dir, os(name))
}

fn os(c: &CStr) -> &std::ffi::OsStr {
    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(c.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(root: &std::path::Path, files: &[&str]) {
        for f in files {
            let p = root.join(f.trim_end_matches('/'));
            if f.ends_with('/') {
                std::fs::create_dir_all(&p).unwrap();
            } else {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, f).unwrap();
            }
        }
    }

    #[test]
    fn overlay_rules() {
        let t = tempfile::tempdir().unwrap();
        let (top, bottom) = (t.path().join("top"), t.path().join("bottom"));
        mk(&bottom, &["a/x", "a/y", "b/z", "f", "d/q", "o/old"]);
        mk(&top, &["a/w", "d", "o/new"]);
        // "b" deleted in top, "o" replaced by an opaque dir, "d" (a dir below) now a file.
        let tfd = sys::open_dir_path(&top).unwrap();
        if sys::mknod_whiteout(tfd.as_fd(), c"b").is_err() {
            return; // not root: no device nodes
        }
        let o = sys::open_at(tfd.as_fd(), c"o", OFlags::RDONLY, 0).unwrap();
        rustix::fs::fsetxattr(
            &o,
            c"trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let s = LayerStack::open(&[top, bottom]).unwrap();
        let root = s.root().unwrap();
        let names: Vec<String> = s
            .list(&root, c".")
            .unwrap()
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a", "d", "f", "o"]);
        assert!(matches!(s.lookup(&root, c"b").unwrap(), Found::Absent));
        assert!(matches!(
            s.lookup(&root, c"d").unwrap(),
            Found::NonDir { layer: 0, .. }
        ));
        let Found::Dir { layers, .. } = s.lookup(&root, c"a").unwrap() else {
            panic!()
        };
        assert_eq!(layers, DirLayers(vec![0, 1]));
        let a: Vec<String> = s
            .list(&layers, c"a")
            .unwrap()
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(a, ["w", "x", "y"]);
        let Found::Dir { layers, .. } = s.lookup(&root, c"o").unwrap() else {
            panic!()
        };
        assert_eq!(layers, DirLayers(vec![0]));
        assert!(matches!(s.lookup_path(b"o/old").unwrap(), Found::Absent));
        assert!(matches!(
            s.lookup_path(b"a/x").unwrap(),
            Found::NonDir { layer: 1, .. }
        ));
        assert!(matches!(s.lookup_path(b"d/q").unwrap(), Found::Absent));
    }
}
