//! Shared harness of the mount tests: fixtures built in code, mount guards, operations as
//! data, tree snapshots and the differential runner against kernel overlayfs.
#![allow(dead_code)]

pub mod diff;
pub mod fixture;
pub mod mount;
pub mod ops;
pub mod tree;

/// Mount tests need root (mount(2), /dev/fuse, trusted.* xattrs, mknod).
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "mount tests need root: run them as root (CI does)"
    );
}
