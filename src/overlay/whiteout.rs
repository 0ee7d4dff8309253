//! The on-disk markers of kernel overlayfs, read and written, as named constants.
//!
//! Written by layerfs (exactly what the kernel writes, nothing else):
//! - whiteout: a character device 0/0 with the deleted name;
//! - opaque directory: xattr `trusted.overlay.opaque` = "y" (`user.overlay.opaque` with
//!   `userxattr`), set only where a directory replaces a deleted lower one.
//!
//! Also read, in any layer (other tools write these):
//! - `.wh.NAME` files (OCI/AUFS whiteouts; containers-storage writes them under a mount program)
//!   and `.wh..wh..opq` (opaque marker file);
//! - `user.overlay.opaque` = "y".
//!
//! Names beginning with `.wh.` are never shown and cannot be created.
use std::ffi::{CStr, OsStr};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::io::Errno;

use crate::sys;

pub const TRUSTED_OPAQUE: &CStr = c"trusted.overlay.opaque";
pub const USER_OPAQUE: &CStr = c"user.overlay.opaque";
pub const WH_PREFIX: &[u8] = b".wh.";
pub const WH_OPAQUE_NAME: &CStr = c".wh..wh..opq";
/// Overlay-private xattr namespaces: never copied up, never shown through the mount, except
/// for the escaped names below.
pub const PRIVATE_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];
/// Escaped names (Linux 6.7+): `trusted.overlay.X` set through a mount is stored as
/// `trusted.overlay.overlay.X`, shown as `trusted.overlay.X`, and copied up like user data.
pub const ESCAPED_XATTR_PREFIXES: [&[u8]; 2] =
    [b"trusted.overlay.overlay.", b"user.overlay.overlay."];
const ESCAPE: &[u8] = b"overlay.";

pub fn is_wh_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

pub fn is_private_xattr(name: &[u8]) -> bool {
    PRIVATE_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
        && !ESCAPED_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The namespace of a mount's own markers: `trusted.overlay.`, or `user.overlay.` with
/// `userxattr`. Names in it are escaped between what the user sees and what a layer stores.
#[derive(Debug, Clone, Copy)]
pub struct OwnXattrs {
    pub prefix: &'static [u8],
}

impl OwnXattrs {
    /// The name stored in a layer for `name` as a user spells it.
    pub fn to_stored(&self, name: &[u8]) -> Vec<u8> {
        match name.strip_prefix(self.prefix) {
            Some(rest) => [self.prefix, ESCAPE, rest].concat(),
            None => name.to_vec(),
        }
    }

    /// The name a user sees for a stored name; `None` for overlay-private ones.
    pub fn to_shown(&self, stored: &[u8]) -> Option<Vec<u8>> {
        if is_private_xattr(stored) {
            return None;
        }
        match stored
            .strip_prefix(self.prefix)
            .and_then(|r| r.strip_prefix(ESCAPE))
        {
            Some(rest) => Some([self.prefix, rest].concat()),
            None => Some(stored.to_vec()),
        }
    }
}

/// `.wh.NAME` for `NAME`.
pub fn wh_name(name: &OsStr) -> std::ffi::OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    std::ffi::OsString::from_vec(v)
}

use std::os::unix::ffi::OsStringExt;

/// Is the directory behind `fd` opaque by any of the markers above? (The overlay's form: no
/// path is walked.)
pub fn fd_is_opaque(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    for name in [TRUSTED_OPAQUE, USER_OPAQUE] {
        match sys::nofollow::get_xattr(sys::nofollow::Target::Fd(fd), name) {
            Ok(Some(v)) if v.as_slice() == b"y" => return Ok(true),
            Ok(_) | Err(Errno::NOTSUP | Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    match sys::lstat_at(fd, WH_OPAQUE_NAME) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_escaping_round_trips_and_hides_markers() {
        let own = OwnXattrs {
            prefix: b"trusted.overlay.",
        };
        let cases: &[(&[u8], &[u8])] = &[
            (b"trusted.overlay.opaque", b"trusted.overlay.overlay.opaque"),
            (b"trusted.overlay.foo", b"trusted.overlay.overlay.foo"),
            (b"user.foo", b"user.foo"),
            (b"security.capability", b"security.capability"),
        ];
        for (shown, stored) in cases {
            assert_eq!(own.to_stored(shown), stored.to_vec());
            assert_eq!(own.to_shown(stored), Some(shown.to_vec()));
        }
        assert_eq!(own.to_shown(b"trusted.overlay.opaque"), None);
        assert_eq!(own.to_shown(b"trusted.overlay.origin"), None);
        assert_eq!(own.to_shown(b"user.overlay.opaque"), None);
        assert!(is_private_xattr(b"trusted.overlay.redirect"));
        assert!(!is_private_xattr(b"trusted.overlay.overlay.x"));
    }
}
