//! Redirected directories reached with no directory fd cached (the fd budget spent): every
//! lower copy must still be found where the redirects say, through `place.rs`'s walk from the
//! layer roots. Runs the overlay library on temp dirs (root: trusted.* xattrs).
use std::ffi::OsStr;
use std::path::Path;

use layerfs::overlay::node::{NodeId, set_fd_budget};
use layerfs::overlay::{Config, Overlay};
use rustix::fs::RenameFlags;

fn names(ov: &Overlay, dir: &std::sync::Arc<layerfs::overlay::node::Node>) -> Vec<String> {
    let mut v: Vec<String> = ov
        .list_dir(dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    v.sort();
    v
}

fn setx(p: &Path, name: &str, value: &str) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    rustix::fs::lsetxattr(
        c.as_c_str(),
        name,
        value.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
}

#[test]
fn redirects_are_followed_without_cached_fds() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root for trusted.* xattrs");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let b = t.path();
    for d in [
        "l0/r",
        "l1/orig/inner",
        "l1/deep/x",
        "l1/r",
        "upper",
        "work",
    ] {
        std::fs::create_dir_all(b.join(d)).unwrap();
    }
    std::fs::write(b.join("l0/r/top"), "t").unwrap();
    std::fs::write(b.join("l1/orig/low"), "l").unwrap();
    std::fs::write(b.join("l1/orig/inner/f"), "f").unwrap();
    std::fs::write(b.join("l1/r/hidden"), "h").unwrap();
    std::fs::write(b.join("l1/deep/x/y"), "y").unwrap();
    setx(&b.join("l0/r"), "trusted.overlay.redirect", "orig");
    let ov = Overlay::new(&Config {
        lowers: vec![b.join("l0"), b.join("l1")],
        upper: Some(b.join("upper")),
        work: Some(b.join("work")),
        userxattr: false,
        redirect_dir: true,
        fsync: false,
        ownership: Default::default(),
        quirks: Default::default(),
    })
    .unwrap();
    set_fd_budget(0);
    let root = ov.node(NodeId::ROOT).unwrap();
    let r = ov.lookup(&root, OsStr::new("r")).unwrap().node;
    assert_eq!(names(&ov, &r), ["inner", "low", "top"]);
    // Moved twice: within the root (relative redirect), then into another directory.
    ov.rename(
        &root,
        OsStr::new("r"),
        &root,
        OsStr::new("r2"),
        RenameFlags::empty(),
    )
    .unwrap();
    let deep = ov.lookup(&root, OsStr::new("deep")).unwrap().node;
    ov.rename(
        &root,
        OsStr::new("r2"),
        &deep,
        OsStr::new("r3"),
        RenameFlags::empty(),
    )
    .unwrap();
    assert_eq!(names(&ov, &r), ["inner", "low", "top"]);
    let inner = ov.lookup(&r, OsStr::new("inner")).unwrap().node;
    assert_eq!(names(&ov, &inner), ["f"]);
    // Where the kernel reads it: an absolute redirect to the lower path of `r`, which is
    // `/r` (the lower redirect to `orig` is the lower layer's own).
    let v = std::fs::read(b.join("upper/deep/r3")).ok();
    assert!(v.is_none(), "r3 is a directory");
    let x = xattr_of(&b.join("upper/deep/r3"), "trusted.overlay.redirect");
    assert_eq!(x.as_deref(), Some(&b"/r"[..]));
    assert!(!b.join("upper/r").exists() || is_whiteout(&b.join("upper/r")));
    // A fresh mount finds the same tree.
    drop(ov);
    let ov = Overlay::new(&Config {
        lowers: vec![b.join("l0"), b.join("l1")],
        upper: Some(b.join("upper")),
        work: Some(b.join("work")),
        userxattr: false,
        redirect_dir: true,
        fsync: false,
        ownership: Default::default(),
        quirks: Default::default(),
    })
    .unwrap();
    let root = ov.node(NodeId::ROOT).unwrap();
    let deep = ov.lookup(&root, OsStr::new("deep")).unwrap().node;
    let r3 = ov.lookup(&deep, OsStr::new("r3")).unwrap().node;
    assert_eq!(names(&ov, &r3), ["inner", "low", "top"]);
    // `orig` was never whited out in l0: still shown under its own name too.
    assert_eq!(names(&ov, &root), ["deep", "orig"]);
}

fn xattr_of(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(c.as_c_str(), name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn is_whiteout(p: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(p).unwrap();
    m.file_type().is_char_device() && m.rdev() == 0
}
