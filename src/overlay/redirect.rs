//! Directory redirects (kernel `redirect_dir=on`): a directory that a lower layer holds is
//! renamed in O(1) by renaming its upper copy and recording where its lower copies are.
//!
//! On disk, exactly the kernel's format: xattr `trusted.overlay.redirect` (`user.overlay.`
//! with `userxattr`, which the kernel never writes or follows: see `mountopts`) on the upper
//! directory, its value either
//! - relative: one name, the lower directories are at that name in the parent's lower
//!   directories (a rename within one directory), or
//! - absolute: `/a/b/c`, the lower directories are at that path from every lower layer's
//!   root (a rename into another directory).
//!
//! ```text
//!   upper/new/   trusted.overlay.redirect="/old/dir"   lowers at lower[i]/old/dir
//!   upper/old/   (whiteout "dir" where a lower layer still shows it)
//! ```
//!
//! A redirected directory merges only the lower directories its redirect names: whatever
//! the layers below hold at its new name is hidden by it (as in the kernel). Redirects are
//! always followed (the kernel's `redirect_dir=off` follows them too, with the usual
//! `CONFIG_OVERLAY_FS_REDIRECT_ALWAYS_FOLLOW=y`); `redirect_dir=off` only stops writing them.
//!
//! In memory, a redirected directory node keeps the absolute lower path (`Redirect::path`),
//! so `place.rs` reaches its lower copies from the layer roots, one no-follow name at a time.
use std::ffi::{CStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use rustix::io::Errno;

use super::layer::LowerIdx;
use super::node::{LowerAt, Node, NodeId};
use super::{Overlay, Which};
use crate::sys::nofollow::{self, Target};
use crate::{Error, Result, sys};

pub const TRUSTED_REDIRECT: &CStr = c"trusted.overlay.redirect";
pub const USER_REDIRECT: &CStr = c"user.overlay.redirect";

/// The kernel's limit on a redirect's length (`ovl_redirect_max`, PATH_MAX by default);
/// longer ones make the rename fail with EXDEV (user space then copies).
const REDIRECT_MAX: usize = 4095;

/// Where a redirected directory's lower copies are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The xattr on disk is absolute (`/a/b`), not one relative name.
    pub absolute: bool,
    /// The lower location, components from the layer root.
    pub path: Vec<OsString>,
}

/// What a redirect xattr value says, before it is made absolute: `Err` for a value the
/// kernel rejects as invalid (empty, a relative value with '/', empty or dot components).
pub enum Value {
    Relative(OsString),
    Absolute(Vec<OsString>),
}

pub fn parse(v: &[u8]) -> Result<Value> {
    let bad = || Error::Sys(Errno::IO);
    if v.is_empty() || v.contains(&0) {
        return Err(bad());
    }
    let ok = |c: &[u8]| !c.is_empty() && c != b"." && c != b"..";
    match v.strip_prefix(b"/") {
        None if !v.contains(&b'/') && ok(v) => Ok(Value::Relative(OsString::from_vec(v.to_vec()))),
        None => Err(bad()),
        Some(rest) => {
            let comps: Vec<&[u8]> = rest.split(|b| *b == b'/').collect();
            if comps.iter().any(|c| !ok(c)) {
                return Err(bad());
            }
            Ok(Value::Absolute(
                comps
                    .into_iter()
                    .map(|c| OsString::from_vec(c.to_vec()))
                    .collect(),
            ))
        }
    }
}

/// The xattr value for an absolute lower path.
pub fn absolute_value(path: &[OsString]) -> Vec<u8> {
    let mut v = Vec::new();
    for c in path {
        v.push(b'/');
        v.extend_from_slice(c.as_bytes());
    }
    v
}

impl Overlay {
    pub fn redirect_xattr(&self) -> &'static CStr {
        if self.opaque_xattr() == super::whiteout::USER_OPAQUE {
            USER_REDIRECT
        } else {
            TRUSTED_REDIRECT
        }
    }

    /// The redirect of the upper directory behind `fd`, if any. With `userxattr` none is
    /// read: the kernel neither writes nor follows redirects there.
    pub(super) fn read_redirect(&self, fd: BorrowedFd<'_>) -> Result<Option<Value>> {
        if self.opaque_xattr() == super::whiteout::USER_OPAQUE {
            return Ok(None);
        }
        match nofollow::get_xattr(Target::Fd(fd), self.redirect_xattr()) {
            Ok(Some(v)) => parse(&v).map(Some).inspect_err(|_| {
                log::warn!(
                    "invalid redirect {:?} on an upper directory: not followed",
                    String::from_utf8_lossy(&v)
                );
            }),
            Ok(None) | Err(Errno::NOTSUP | Errno::PERM) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where directory `node`'s lower copies are, from the layer roots: its redirect's path,
    /// else its parent's lower path and its name. The root: the empty path.
    pub(super) fn lower_path(&self, node: &Arc<Node>) -> Result<Vec<OsString>> {
        let mut names = Vec::new();
        let mut cur = node.clone();
        let mut base = Vec::new();
        while cur.id != NodeId::ROOT {
            let st = cur.state();
            if let Some(r) = &st.redirect {
                base = r.path.clone();
                break;
            }
            let link = st.links.first().cloned().ok_or(Error::Sys(Errno::STALE))?;
            names.push(link.name);
            cur = link.parent;
        }
        base.extend(names.into_iter().rev());
        Ok(base)
    }

    /// Opens the directory at `path` in lower layer `li`, from its root, one no-follow
    /// component at a time. `Ok(None)`: not a directory path in that layer.
    pub(super) fn walk_lower(&self, li: LowerIdx, path: &[OsString]) -> Result<Option<OwnedFd>> {
        let root = self.layer_fd(Which::Lower(li))?;
        let mut fd: Option<OwnedFd> = None;
        for c in path {
            let name = sys::cstr(c)?;
            let dir = fd.as_ref().map_or(root, |f| f.as_fd());
            match nofollow::open_dir(dir, &name) {
                Ok(f) => fd = Some(f),
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        match fd {
            Some(f) => Ok(Some(f)),
            None => Ok(Some(nofollow::open_dir(root, c".")?)),
        }
    }

    /// Before a rename moves directory `node` (merged or lower, copied up already) from
    /// `old_parent/old_name`: records where its lower copies are on its upper copy, as the
    /// kernel's `ovl_set_redirect` does. A relative redirect for a rename within one
    /// directory, an absolute one otherwise; a redirect already there that stays right is kept.
    pub(super) fn set_redirect(
        &self,
        node: &Arc<Node>,
        upper_dir: BorrowedFd<'_>,
        old_name: &CStr,
        samedir: bool,
    ) -> Result<()> {
        self.pin_lower_copies(node)?;
        let existing = node.state().redirect;
        if let Some(r) = &existing
            && (samedir || r.absolute)
        {
            return Ok(());
        }
        let path = self.lower_path(node)?;
        let value = if samedir {
            old_name.to_bytes().to_vec()
        } else {
            absolute_value(&path)
        };
        if value.len() > REDIRECT_MAX {
            return Err(Error::Sys(Errno::XDEV));
        }
        let set = nofollow::set_xattr(
            Target::At(upper_dir, old_name),
            self.redirect_xattr(),
            &value,
            0,
        );
        if let Err(e) = set {
            log::warn!("failed to set redirect ({e}): rename falls back to EXDEV");
            return Err(Error::Sys(Errno::XDEV));
        }
        node.update(|s| {
            s.redirect = Some(Arc::new(Redirect {
                absolute: !samedir,
                path,
            }))
        });
        Ok(())
    }
}

impl Overlay {
    /// Before `node` moves: records where each of its lower copies is from the layer root,
    /// where its name would no longer lead (`LowerAt`), so `place.rs` still finds them.
    fn pin_lower_copies(&self, node: &Arc<Node>) -> Result<()> {
        let st = node.state();
        let mut at = (*st.lower_at).clone();
        for &li in &st.lowers {
            if at.iter().any(|(l, _)| *l == li) {
                if let Some((_, LowerAt::Name(_))) = at.iter().find(|(l, _)| *l == li) {
                    let p = self.lower_path_in(node, li)?;
                    at.retain(|(l, _)| *l != li);
                    at.push((li, LowerAt::Path(p)));
                }
                continue;
            }
            at.push((li, LowerAt::Path(self.lower_path_in(node, li)?)));
        }
        node.update(|s| s.lower_at = Arc::new(at));
        Ok(())
    }

    /// The path of `node`'s copy in lower layer `li`, from the layer root.
    fn lower_path_in(&self, node: &Arc<Node>, li: LowerIdx) -> Result<Vec<OsString>> {
        let mut names = Vec::new();
        let mut cur = node.clone();
        let mut base = Vec::new();
        while cur.id != NodeId::ROOT {
            let st = cur.state();
            match st.lower_at.iter().find(|(l, _)| *l == li) {
                Some((_, LowerAt::Path(p))) => {
                    base = p.clone();
                    break;
                }
                Some((_, LowerAt::Name(n))) => names.push(n.clone()),
                None => {
                    let link = st.links.first().ok_or(Error::Sys(Errno::STALE))?;
                    names.push(link.name.clone());
                }
            }
            let link = st.links.first().cloned().ok_or(Error::Sys(Errno::STALE))?;
            cur = link.parent;
        }
        base.extend(names.into_iter().rev());
        Ok(base)
    }
}

/// The lower path of a redirect read at `name` in a directory whose lower path is `parent`.
pub fn resolve_value(v: Value, parent: impl FnOnce() -> Result<Vec<OsString>>) -> Result<Redirect> {
    Ok(match v {
        Value::Absolute(path) => Redirect {
            absolute: true,
            path,
        },
        Value::Relative(name) => {
            let mut path = parent()?;
            path.push(name);
            Redirect {
                absolute: false,
                path,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_like_the_kernel_checks_them() {
        assert!(matches!(parse(b"a"), Ok(Value::Relative(n)) if n == "a"));
        assert!(
            matches!(parse(b"/a/b"), Ok(Value::Absolute(p)) if p == vec![OsString::from("a"), OsString::from("b")])
        );
        for bad in [
            &b""[..],
            b"a/b",
            b"/a//b",
            b"/a/",
            b"..",
            b"/a/../b",
            b"/",
            b"a\0",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let p = vec![OsString::from("x"), OsString::from("y z")];
        assert_eq!(absolute_value(&p), b"/x/y z".to_vec());
    }
}
