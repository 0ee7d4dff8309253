//! `layerfs diff`: what a container changed, in `docker diff`'s format and meaning, computed
//! from the writable layer alone.
//!
//! Only the upper directory is walked; each entry found there is looked up once in the image's
//! layers ([`LayerStack`]), so the cost grows with the size of the change, not of the image.
//!
//! | in the upper dir                                  | reported                              |
//! |---------------------------------------------------|---------------------------------------|
//! | whiteout for a name the image has                 | `D /path` (a directory: one line)     |
//! | whiteout for a name the image does not have       | nothing (nothing was deleted)         |
//! | entry the image does not have                     | `A /path`, and its whole subtree `A`  |
//! | non-directory the image has (copied up, replaced) | `C /path`                             |
//! | opaque directory replacing the image's entry      | `C /path`, its content `A`            |
//! | directory replacing a non-directory               | `C /path`, its content `A`            |
//! | directory the image has, with changes inside      | `C /path` (every parent of a change)  |
//! | directory the image has, nothing inside changed   | `C /path` only if its mode, owner or  |
//! |                                                   | mtime differ (same rule as docker)    |
//!
//! One difference with moby's overlay2 driver, on purpose: moby reports an opaque directory
//! that replaced an image directory as `D` (and then its new content as `A`), although the
//! directory still exists; layerfs reports it as changed (`C`).
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, OFlags, Stat};
use rustix::io::Errno;
use serde::Serialize;

use super::lower::{DirLayers, Found, LayerStack, child_path};
use crate::image::pack::{is_opaque_dir, open_tree, sorted_names};
use crate::{Error, Result, sys};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Absolute path in the container (`/etc/passwd`), as bytes.
    pub path: Vec<u8>,
    pub kind: ChangeKind,
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
}

/// docker's JSON (`[{"Path": "/x", "Kind": 1}]`; Kind 0 = C, 1 = A, 2 = D).
pub fn to_json(changes: &[Change]) -> String {
    let v: Vec<ApiChange> = changes
        .iter()
        .map(|c| ApiChange {
            path: String::from_utf8_lossy(&c.path).into_owned(),
            kind: c.kind.api_kind(),
        })
        .collect();
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// The changes of the writable layer `upper` over `lowers` (top first), sorted by path.
pub fn diff(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let stack = LayerStack::open(lowers)?;
    let root = open_tree(upper)?;
    let mut w = Walk {
        stack: &stack,
        upper,
        out: Vec::new(),
    };
    let below = stack.root()?;
    w.dir(root.as_fd(), c".", Some(&below))?;
    let mut out = w.out;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

struct Walk<'a> {
    stack: &'a LayerStack,
    upper: &'a Path,
    out: Vec<Change>,
}

/// Go's tar writers drop sub-second times, so (like docker) a time with zero nanoseconds
/// matches any time within the same second.
fn same_time(a: (i64, i64), b: (i64, i64)) -> bool {
    a == b || (a.0 == b.0 && (a.1 == 0 || b.1 == 0))
}

fn dir_attrs_differ(a: &Stat, b: &Stat) -> bool {
    a.st_mode != b.st_mode
        || a.st_uid != b.st_uid
        || a.st_gid != b.st_gid
        || !same_time(
            (a.st_mtime, a.st_mtime_nsec as i64),
            (b.st_mtime, b.st_mtime_nsec as i64),
        )
}

fn abs(rel: &CStr) -> Vec<u8> {
    let mut p = vec![b'/'];
    p.extend_from_slice(rel.to_bytes());
    p
}

impl Walk<'_> {
    fn err(&self, op: &'static str, rel: &CStr, e: rustix::io::Errno) -> Error {
        let p = self
            .upper
            .join(std::ffi::OsStr::new(&*rel.to_string_lossy()));
        Error::io(op, p, e.into())
    }

    fn push(&mut self, rel: &CStr, kind: ChangeKind) {
        self.out.push(Change {
            path: abs(rel),
            kind,
        });
    }

    /// Walks the upper directory `dir` (at `rel`); `below` is where it is visible in the image
    /// (`None`: the image shows nothing here, so everything inside is new). Returns whether
    /// anything inside changed.
    fn dir(&mut self, dir: BorrowedFd<'_>, rel: &CStr, below: Option<&DirLayers>) -> Result<bool> {
        let names = sorted_names(dir).map_err(|e| self.err("read directory", rel, e))?;
        let mut changed = false;
        for name in names {
            let path = child_path(rel, &name);
            let st = match sys::lstat_at(dir, &name) {
                Ok(st) => st,
                // Removed by a concurrent writer since the listing: not part of this diff.
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(self.err("stat", &path, e)),
            };
            let lower = match below {
                Some(b) => self.stack.lookup(b, &path)?,
                None => Found::Absent,
            };
            changed |= self.entry(dir, &name, &path, &st, lower)?;
        }
        Ok(changed)
    }

    /// Reports one upper entry (and its subtree); true when anything was reported.
    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &CStr,
        st: &Stat,
        lower: Found,
    ) -> Result<bool> {
        if sys::is_whiteout(st) {
            if matches!(lower, Found::Absent) {
                return Ok(false);
            }
            self.push(path, ChangeKind::Deleted);
            return Ok(true);
        }
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            let kind = match lower {
                Found::Absent => ChangeKind::Added,
                _ => ChangeKind::Modified,
            };
            self.push(path, kind);
            return Ok(true);
        }
        let sub = match sys::open_at(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, 0) {
            Ok(fd) => fd,
            // Removed or replaced by a concurrent writer since the listing.
            Err(Errno::NOENT | Errno::NOTDIR) => return Ok(false),
            Err(e) => return Err(self.err("open", path, e)),
        };
        let opaque = is_opaque_dir(dir, name).map_err(|e| self.err("read xattrs", path, e))?;
        let replaced = match lower {
            Found::Absent => Some(ChangeKind::Added),
            Found::NonDir { .. } => Some(ChangeKind::Modified),
            Found::Dir { .. } if opaque => Some(ChangeKind::Modified),
            Found::Dir { st: lst, layers } => {
                let inner = self.dir(sub.as_fd(), path, Some(&layers))?;
                if !inner && !dir_attrs_differ(st, &lst) {
                    return Ok(false);
                }
                self.push(path, ChangeKind::Modified);
                return Ok(true);
            }
        };
        if let Some(kind) = replaced {
            self.push(path, kind);
        }
        self.dir(sub.as_fd(), path, None)?;
        Ok(true)
    }
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
        };
        assert_eq!(c.to_string(), "C /etc/passwd");
        assert_eq!(
            to_json(&[c]).split_whitespace().collect::<String>(),
            r#"[{"Path":"/etc/passwd","Kind":0}]"#
        );
    }
}
