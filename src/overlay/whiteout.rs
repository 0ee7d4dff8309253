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
/// Overlay-private xattr namespaces: never copied up, never shown through the mount.
pub const PRIVATE_XATTR_PREFIXES: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

pub fn is_wh_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(WH_PREFIX)
}

pub fn is_private_xattr(name: &[u8]) -> bool {
    PRIVATE_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `.wh.NAME` for `NAME`.
pub fn wh_name(name: &OsStr) -> std::ffi::OsString {
    let mut v = WH_PREFIX.to_vec();
    v.extend_from_slice(name.as_bytes());
    std::ffi::OsString::from_vec(v)
}

use std::os::unix::ffi::OsStringExt;

/// Is the directory `rel` (beneath `dir`) opaque by any of the markers above?
pub fn dir_is_opaque(dir: BorrowedFd<'_>, rel: &CStr) -> Result<bool, Errno> {
    for name in [TRUSTED_OPAQUE, USER_OPAQUE] {
        match sys::lgetxattr(dir, rel, name) {
            Ok(Some(v)) if v.as_slice() == b"y" => return Ok(true),
            Ok(_) | Err(Errno::NOTSUP | Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    let marker = sys::join(rel, OsStr::from_bytes(WH_OPAQUE_NAME.to_bytes()));
    match sys::lstat_at(dir, &marker) {
        Ok(_) => Ok(true),
        Err(Errno::NOENT | Errno::NOTDIR) => Ok(false),
        Err(e) => Err(e),
    }
}
