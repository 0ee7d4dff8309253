//! Overlapping and shared directories are refused before anything is touched (issue 9 item 5).
//!
//! Each configuration is tried with kernel overlayfs (the reference: it must refuse too, or
//! accept where the kernel accepts) and with `layerfs mount`, whose exact refusal is checked;
//! the whole tree of every directory involved must be unchanged afterwards (the old daemon
//! emptied `workdir/work` first, which wiped an upper inside it). A second live mount of an
//! upper/work pair in use is refused, and the first mount keeps working.
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{Dirs, Impl, Mount, mount_entry};

/// Every entry under `root`: type, mode and content.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let content = if md.is_file() {
            String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned()
        } else {
            String::new()
        };
        out.insert(p.clone(), format!("{:o} {content}", md.mode()));
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// A base dir with a lower, an upper and a workdir holding data, and nested dirs to point at.
fn base() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("overlap")
        .tempdir_in(common::diff::test_tmp())
        .unwrap();
    for d in ["l/sub", "u/sub", "u/work", "w/work/up", "w/l2", "m", "m2"] {
        std::fs::create_dir_all(t.path().join(d)).unwrap();
    }
    for (f, data) in [
        ("l/lf", "lower data\n"),
        ("u/uf", "upper data\n"),
        ("u/work/keep", "upper file in a dir named work\n"),
        ("w/work/keep", "what an upper inside the workdir holds\n"),
        ("w/work/up/f", "deeper\n"),
    ] {
        std::fs::write(t.path().join(f), data).unwrap();
    }
    t
}

fn layerfs_mount(opts: &str, mnt: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .args(["mount", "-o", opts])
        .arg(mnt)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kernel_mount(opts: &str, mnt: &Path) -> bool {
    let data =
        std::ffi::CString::new(format!("{opts},index=off,redirect_dir=off,metacopy=off")).unwrap();
    let r = rustix::mount::mount(
        "overlay",
        mnt,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    );
    if r.is_ok() {
        rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::DETACH).unwrap();
    }
    r.is_ok()
}

#[test]
fn overlapping_directories_are_refused_before_anything_is_touched() {
    common::require_root();
    // (lowerdir, upperdir, workdir relative to the base; the refusal, "" = accepted)
    let sep = "workdir and upperdir must be separate subtrees";
    let cases: &[(&str, &str, &str, &str)] = &[
        ("l", "w/work", "w", sep),
        ("l", "u", "u", sep),
        ("l", "w/work/up", "w", sep),
        ("l", "u", "u/work", sep),
        ("l", "l", "w", "conflicting lowerdir path"),
        ("u/sub", "u", "w", "overlapping lowerdir path"),
        ("w/l2", "u", "w", "overlapping lowerdir path"),
        ("l:l", "u", "w", "conflicting lowerdir path"),
        ("l:l/sub", "u", "w", "overlapping lowerdir path"),
        // Accepted by the kernel: an upper or a workdir inside a lower layer.
        ("l", "l/sub", "w", ""),
        ("l", "u", "l/sub", ""),
    ];
    for (lower, upper, work) in cases.iter().map(|c| (c.0, c.1, c.2)) {
        let t = base();
        let b = t.path();
        let abs = |p: &str| {
            p.split(':')
                .map(|x| b.join(x).display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        };
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            abs(lower),
            abs(upper),
            abs(work)
        );
        let want = cases
            .iter()
            .find(|c| (c.0, c.1, c.2) == (lower, upper, work))
            .map(|c| c.3)
            .unwrap_or_default();
        let before = tree(b);
        let (ok, err) = layerfs_mount(&opts, &b.join("m"));
        if ok {
            Command::new(env!("CARGO_BIN_EXE_layerfs"))
                .arg("umount")
                .arg(b.join("m"))
                .status()
                .unwrap();
        }
        assert_eq!(ok, want.is_empty(), "{opts}: {err}");
        assert!(err.contains(want), "{opts}: expected '{want}', got: {err}");
        if !want.is_empty() {
            assert!(
                mount_entry(&b.join("m")).is_none(),
                "{opts}: mounted anyway"
            );
            assert_eq!(tree(b), before, "{opts}: the directories changed");
        }
        // The kernel draws the same line.
        let t2 = base();
        let opts2 = opts.replace(&b.display().to_string(), &t2.path().display().to_string());
        assert_eq!(
            kernel_mount(&opts2, &t2.path().join("m")),
            want.is_empty(),
            "kernel on {opts2}"
        );
    }
}

#[test]
fn an_upper_and_workdir_in_use_are_refused_to_a_second_mount() {
    common::require_root();
    let t = base();
    let b = t.path();
    std::fs::create_dir_all(b.join("u2")).unwrap();
    std::fs::create_dir_all(b.join("w2")).unwrap();
    let dirs = Dirs {
        lowers: vec![b.join("l")],
        upper: Some((b.join("u"), b.join("w"))),
        mode: common::mount::Mode::Legacy,
    };
    let first = Mount::new(Impl::Layerfs, &dirs, &b.join("m")).unwrap();
    std::fs::write(b.join("m/new"), "written through the first mount\n").unwrap();
    let before = tree(b);
    let l = b.join("l").display().to_string();
    let pairs = [
        ("u", "w", "upperdir"),
        ("u", "w2", "upperdir"),
        ("u2", "w", "workdir"),
    ];
    for (u, w, busy) in pairs {
        let opts = format!(
            "lowerdir={l},upperdir={},workdir={}",
            b.join(u).display(),
            b.join(w).display()
        );
        let (ok, err) = layerfs_mount(&opts, &b.join("m2"));
        assert!(!ok, "{opts}: a second mount was allowed");
        let want = format!(
            "{busy} {} is in use by another live layerfs mount",
            b.join(if busy == "upperdir" { u } else { w }).display()
        );
        assert!(err.contains(&want), "{opts}: expected '{want}', got: {err}");
        assert!(mount_entry(&b.join("m2")).is_none());
    }
    assert_eq!(tree(b), before, "a refused mount changed something");
    assert_eq!(
        std::fs::read_to_string(b.join("m/new")).unwrap(),
        "written through the first mount\n"
    );
    first.unmount().unwrap();
    // Once the first daemon is gone, the pair is free again.
    let again = Mount::new(Impl::Layerfs, &dirs, &b.join("m2")).unwrap();
    assert!(b.join("m2/new").exists());
    again.unmount().unwrap();
}
