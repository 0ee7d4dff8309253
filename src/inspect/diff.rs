//! What changed from one stack of overlay-format layers (A) to another (B), in `docker diff`'s
//! format: a container against its image, an image against another or against its parent, a
//! layer against the layers below it.
//!
//! Cost. The two stacks are resolved through one [`LayerStack`] holding each distinct layer
//! once; a layer both stacks hold (same chain ID, so the same layers below it too: shared
//! layers are always a common bottom part) can't make them differ, so only the names held by
//! the other layers are examined, each looked up once in A and once in B. Two images that
//! differ in their top layer cost a walk of that layer's entries, whatever the size of the
//! base; a container costs a walk of its writable layer (as `docker diff`).
//!
//! | A (old)                 | B (new)                          | reported                      |
//! |-------------------------|----------------------------------|-------------------------------|
//! | absent                  | present                          | `A`, and a directory's whole  |
//! |                         |                                  | subtree `A`                   |
//! | present                 | absent (whiteout, opaque parent) | `D` (a directory: one line)   |
//! | non-directory           | non-directory from another layer | `C` unless type, mode, owner, |
//! |                         |                                  | size, mtime, device number,   |
//! |                         |                                  | link target and bytes agree   |
//! | directory               | non-directory                    | `C`                           |
//! | non-directory           | directory                        | `C`, its content `A`          |
//! | directory               | directory                        | `C` when anything inside      |
//! |                         |                                  | changed, or its mode, owner   |
//! |                         |                                  | or mtime differ               |
//!
//! Times compare like docker's: a time with zero nanoseconds (Go's tar writers drop them)
//! matches any time within the same second. Where one side's directory is opaque (or merges a
//! different set of shared layers) its names are listed from both merged views, so a child the
//! opaque directory hid is `D` and one it re-created is compared like any other. (Until issue
//! 15, a container's opaque directory was `C` with all of its content `A` and the names it hid
//! were not reported; moby's overlay2 reports it `D` then its content `A`.)
use std::collections::{BTreeSet, HashMap};
use std::ffi::{CStr, CString};
use std::os::fd::AsFd;
use std::path::PathBuf;

use rustix::fs::{FileType, OFlags, Stat};
use rustix::io::Errno;
use serde::Serialize;

use super::fsread;
use super::fsread::is_wh_name;
use crate::container::lower::{DirLayers, Found, LayerStack, child_path};
use crate::image::pack::sorted_names;
use crate::{Error, Result, sys};

/// One layer of a stack: an overlay-format directory and what identifies it (a chain ID, or a
/// container's writable layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRef {
    pub key: String,
    pub path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ChangeKind {
    Modified,
    Added,
    Deleted,
}

impl ChangeKind {
    /// docker's letter.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Modified => 'C',
            ChangeKind::Added => 'A',
            ChangeKind::Deleted => 'D',
        }
    }
    /// docker's API number (`Kind` in `GET /containers/ID/changes`).
    pub fn api_kind(self) -> u8 {
        match self {
            ChangeKind::Modified => 0,
            ChangeKind::Added => 1,
            ChangeKind::Deleted => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Absolute path (`/etc/passwd`), as bytes.
    pub path: Vec<u8>,
    pub kind: ChangeKind,
    /// Bytes after the change (A, C) or before it (D; a directory: its whole subtree), when
    /// sizes were asked for. Regular files count their size, symlinks their target's length,
    /// directories and other types 0.
    pub size: Option<u64>,
    /// For C with sizes: the bytes before.
    pub size_before: Option<u64>,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.kind.letter(),
            String::from_utf8_lossy(&self.path)
        )
    }
}

#[derive(Serialize)]
struct ApiChange {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Kind")]
    kind: u8,
    #[serde(rename = "Size", skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(rename = "SizeBefore", skip_serializing_if = "Option::is_none")]
    size_before: Option<u64>,
}

/// docker's JSON (`[{"Path": "/x", "Kind": 1}]`; Kind 0 = C, 1 = A, 2 = D), plus `Size` (and
/// `SizeBefore` for C) when sizes were computed.
pub fn to_json(changes: &[Change]) -> String {
    let v: Vec<ApiChange> = changes
        .iter()
        .map(|c| ApiChange {
            path: String::from_utf8_lossy(&c.path).into_owned(),
            kind: c.kind.api_kind(),
            size: c.size,
            size_before: c.size_before,
        })
        .collect();
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

#[derive(Clone, Copy, Debug, Default)]
pub struct DiffOptions {
    /// Compute sizes (a deleted directory's size costs a walk of its subtree in A).
    pub sizes: bool,
}

/// The changes from stack `a` to stack `b` (each bottom layer first), sorted by path bytes.
pub fn diff(a: &[LayerRef], b: &[LayerRef], opts: DiffOptions) -> Result<Vec<Change>> {
    let mut pool: Vec<PathBuf> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut order = |side: &[LayerRef], pool: &mut Vec<PathBuf>| -> Vec<usize> {
        let mut v: Vec<usize> = side
            .iter()
            .map(|l| {
                *index.entry(l.key.clone()).or_insert_with(|| {
                    pool.push(l.path.clone());
                    pool.len() - 1
                })
            })
            .collect();
        v.reverse();
        v
    };
    let a_order = order(a, &mut pool);
    let b_order = order(b, &mut pool);
    let shared: Vec<bool> = (0..pool.len())
        .map(|i| a_order.contains(&i) && b_order.contains(&i))
        .collect();
    let stack = LayerStack::open(&pool)?;
    let (ra, rb) = (stack.root_of(&a_order)?, stack.root_of(&b_order)?);
    let mut w = Walk {
        stack: &stack,
        shared,
        opts,
        out: Vec::new(),
    };
    w.dir(c".", &ra, &rb)?;
    let mut out = w.out;
    out.sort_by(|x, y| x.path.cmp(&y.path));
    Ok(out)
}

struct Walk<'a> {
    stack: &'a LayerStack,
    shared: Vec<bool>,
    opts: DiffOptions,
    out: Vec<Change>,
}

/// Go's tar writers drop sub-second times, so (like docker) a time with zero nanoseconds
/// matches any time within the same second.
pub fn same_time(a: (i64, i64), b: (i64, i64)) -> bool {
    a == b || (a.0 == b.0 && (a.1 == 0 || b.1 == 0))
}

fn mtime(st: &Stat) -> (i64, i64) {
    (st.st_mtime, st.st_mtime_nsec as i64)
}

fn attrs_differ(a: &Stat, b: &Stat) -> bool {
    a.st_mode != b.st_mode
        || a.st_uid != b.st_uid
        || a.st_gid != b.st_gid
        || !same_time(mtime(a), mtime(b))
}

/// The size an entry counts for: a regular file's bytes, a symlink's target length, else 0.
pub fn entry_size(st: &Stat) -> u64 {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile | FileType::Symlink => st.st_size as u64,
        _ => 0,
    }
}

fn abs(rel: &CStr) -> Vec<u8> {
    let mut p = vec![b'/'];
    p.extend_from_slice(rel.to_bytes());
    p
}

impl Walk<'_> {
    fn err(&self, op: &'static str, layer: usize, rel: &CStr, e: Errno) -> Error {
        let p = self
            .stack
            .path(layer)
            .join(std::ffi::OsStr::new(&*rel.to_string_lossy()));
        Error::io(op, p, e.into())
    }

    fn push(&mut self, rel: &CStr, kind: ChangeKind, size: Option<u64>, before: Option<u64>) {
        self.out.push(Change {
            path: abs(rel),
            kind,
            size,
            size_before: before,
        });
    }

    /// The names to examine in a directory both stacks show: those held by the layers the
    /// stacks don't share (whiteouts included: they delete). When the two merges include
    /// different shared layers (an opaque directory cut one of them), both merged listings.
    fn candidates(&self, rel: &CStr, a: &DirLayers, b: &DirLayers) -> Result<BTreeSet<CString>> {
        let shared_part = |d: &DirLayers| -> Vec<usize> {
            d.layers()
                .iter()
                .copied()
                .filter(|&i| self.shared[i])
                .collect()
        };
        let mut names = BTreeSet::new();
        if shared_part(a) != shared_part(b) {
            names.extend(self.stack.list(a, rel)?);
            names.extend(self.stack.list(b, rel)?);
            return Ok(names);
        }
        let own: BTreeSet<usize> = a
            .layers()
            .iter()
            .chain(b.layers())
            .copied()
            .filter(|&i| !self.shared[i])
            .collect();
        for i in own {
            let fd =
                match sys::open_at(self.stack.fd(i), rel, OFlags::RDONLY | OFlags::DIRECTORY, 0) {
                    Ok(fd) => fd,
                    // A container's writable layer changed under us: nothing to report there.
                    Err(Errno::NOENT | Errno::NOTDIR) => continue,
                    Err(e) => return Err(self.err("open", i, rel, e)),
                };
            let listed =
                sorted_names(fd.as_fd()).map_err(|e| self.err("read directory", i, rel, e))?;
            names.extend(listed.into_iter().filter(|n| !is_wh_name(os(n))));
        }
        Ok(names)
    }

    /// Compares the directory `rel` shown by both stacks; true when anything inside changed.
    fn dir(&mut self, rel: &CStr, a: &DirLayers, b: &DirLayers) -> Result<bool> {
        let mut changed = false;
        for name in self.candidates(rel, a, b)? {
            let path = child_path(rel, &name);
            let fa = self.stack.lookup(a, &path)?;
            let fb = self.stack.lookup(b, &path)?;
            changed |= self.entry(&path, fa, fb)?;
        }
        Ok(changed)
    }

    /// Reports one path; true when anything was reported.
    fn entry(&mut self, path: &CStr, fa: Found, fb: Found) -> Result<bool> {
        let sizes = self.opts.sizes;
        match (fa, fb) {
            (Found::Absent, Found::Absent) => Ok(false),
            (Found::Absent, Found::NonDir { st, .. }) => {
                self.push(
                    path,
                    ChangeKind::Added,
                    sizes.then(|| entry_size(&st)),
                    None,
                );
                Ok(true)
            }
            (Found::Absent, Found::Dir { layers, .. }) => {
                self.push(path, ChangeKind::Added, sizes.then_some(0), None);
                self.added_subtree(path, &layers)?;
                Ok(true)
            }
            (Found::NonDir { st, .. }, Found::Absent) => {
                self.push(
                    path,
                    ChangeKind::Deleted,
                    sizes.then(|| entry_size(&st)),
                    None,
                );
                Ok(true)
            }
            (Found::Dir { layers, .. }, Found::Absent) => {
                let size = if sizes {
                    Some(subtree_size(self.stack, path, &layers)?)
                } else {
                    None
                };
                self.push(path, ChangeKind::Deleted, size, None);
                Ok(true)
            }
            (Found::NonDir { layer: la, st: sa }, Found::NonDir { layer: lb, st: sb }) => {
                if la == lb || self.same_file(path, la, &sa, lb, &sb)? {
                    return Ok(false);
                }
                let (s, before) = (entry_size(&sb), entry_size(&sa));
                self.push(
                    path,
                    ChangeKind::Modified,
                    sizes.then_some(s),
                    sizes.then_some(before),
                );
                Ok(true)
            }
            (Found::Dir { layers, .. }, Found::NonDir { st, .. }) => {
                let before = if sizes {
                    Some(subtree_size(self.stack, path, &layers)?)
                } else {
                    None
                };
                self.push(
                    path,
                    ChangeKind::Modified,
                    sizes.then(|| entry_size(&st)),
                    before,
                );
                Ok(true)
            }
            (Found::NonDir { st, .. }, Found::Dir { layers, .. }) => {
                let before = sizes.then(|| entry_size(&st));
                self.push(path, ChangeKind::Modified, sizes.then_some(0), before);
                self.added_subtree(path, &layers)?;
                Ok(true)
            }
            (Found::Dir { st: sa, layers: la }, Found::Dir { st: sb, layers: lb }) => {
                let inner = self.dir(path, &la, &lb)?;
                if !inner && (la.top() == lb.top() || !attrs_differ(&sa, &sb)) {
                    return Ok(false);
                }
                self.push(
                    path,
                    ChangeKind::Modified,
                    sizes.then_some(0),
                    sizes.then_some(0),
                );
                Ok(true)
            }
        }
    }

    /// Every entry below a directory only B shows, as `A`.
    fn added_subtree(&mut self, rel: &CStr, dir: &DirLayers) -> Result<()> {
        for name in self.stack.list(dir, rel)? {
            let path = child_path(rel, &name);
            match self.stack.lookup(dir, &path)? {
                Found::Absent => {}
                Found::NonDir { st, .. } => {
                    let s = self.opts.sizes.then(|| entry_size(&st));
                    self.push(&path, ChangeKind::Added, s, None);
                }
                Found::Dir { layers, .. } => {
                    self.push(&path, ChangeKind::Added, self.opts.sizes.then_some(0), None);
                    self.added_subtree(&path, &layers)?;
                }
            }
        }
        Ok(())
    }

    /// Whether two non-directories from different layers are the same file.
    fn same_file(&self, rel: &CStr, la: usize, a: &Stat, lb: usize, b: &Stat) -> Result<bool> {
        if a.st_mode != b.st_mode
            || a.st_uid != b.st_uid
            || a.st_gid != b.st_gid
            || a.st_size != b.st_size
            || a.st_rdev != b.st_rdev
            || !same_time(mtime(a), mtime(b))
        {
            return Ok(false);
        }
        let (fa, fb) = (self.stack.fd(la), self.stack.fd(lb));
        match FileType::from_raw_mode(a.st_mode) {
            FileType::Symlink => {
                let ta = fsread::readlink_beneath(fa, rel)
                    .map_err(|e| self.err("readlink", la, rel, e))?;
                let tb = fsread::readlink_beneath(fb, rel)
                    .map_err(|e| self.err("readlink", lb, rel, e))?;
                Ok(ta == tb)
            }
            FileType::RegularFile => fsread::same_contents(fa, rel, fb, rel)
                .map_err(|e| Error::io("read", self.stack.path(lb).join(os(rel)), e)),
            _ => Ok(true),
        }
    }
}

/// The bytes of everything below (and including) a merged directory.
pub fn subtree_size(stack: &LayerStack, rel: &CStr, dir: &DirLayers) -> Result<u64> {
    let mut total = 0;
    for name in stack.list(dir, rel)? {
        let path = child_path(rel, &name);
        total += match stack.lookup(dir, &path)? {
            Found::Absent => 0,
            Found::NonDir { st, .. } => entry_size(&st),
            Found::Dir { layers, .. } => subtree_size(stack, &path, &layers)?,
        };
    }
    Ok(total)
}

pub fn os(c: &CStr) -> &std::ffi::OsStr {
    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(c.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_compare_like_docker() {
        assert!(same_time((5, 7), (5, 7)));
        assert!(same_time((5, 0), (5, 7)));
        assert!(same_time((5, 7), (5, 0)));
        assert!(!same_time((5, 7), (5, 8)));
        assert!(!same_time((5, 0), (6, 0)));
    }

    #[test]
    fn changes_print_like_docker() {
        let c = Change {
            path: b"/etc/passwd".to_vec(),
            kind: ChangeKind::Modified,
            size: None,
            size_before: None,
        };
        assert_eq!(c.to_string(), "C /etc/passwd");
        assert_eq!(
            to_json(&[c]).split_whitespace().collect::<String>(),
            r#"[{"Path":"/etc/passwd","Kind":0}]"#
        );
    }
}
