//! Shared pieces of the lazy-image tests: an image fixture with every kind of entry the merged
//! tree must reproduce, loaded into a store, and a full description of a tree.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::registry_common::{Env, Image, Layer, noise, sha256, write_layout};
use crate::store_common::Layer as Tar;

/// Bytes of the multi-chunk file (chunks are 1 MiB).
pub const BIG: usize = 2 * 1024 * 1024 + 12345;

/// Two gzip layers: modes, owners, times (one with nanoseconds), xattrs on a file and a
/// directory, hard links, a symlink, a setuid file, a FIFO, a device, a multi-chunk file; the
/// top layer has a whiteout, an opaque directory and a PAX mtime with a fraction.
pub fn fixture_layers() -> Vec<Vec<u8>> {
    let mut l1 = Tar::new();
    l1.dir("etc", 0o755)
        .xattrs(&[("user.note", b"os release")])
        .file("etc/os-release", b"NAME=lazy\nID=lazy\n", 0o644)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .symlink("usr/bin/link", "tool")
        .file("usr/bin/su", b"setuid", 0o4755)
        .dir("usr/lib", 0o755)
        .file("usr/lib/big", &noise(BIG, 7), 0o644)
        .file("usr/lib/empty", b"", 0o600)
        .dir("home", 0o755)
        .raw(
            "home/u",
            tar::EntryType::Directory,
            0o700,
            (1000, 1000),
            None,
            b"",
        )
        .file_owned("home/u/secret", b"s3cret\n", 0o600, 1000, 1001)
        .fifo("home/u/fifo")
        .chardev("dev-null", 1, 3)
        .dir("opt", 0o755)
        .dir("opt/old", 0o755)
        .file("opt/old/a", b"old a\n", 0o644)
        .file("opt/gone", b"deleted above\n", 0o644);
    let mut l2 = Tar::new();
    l2.mtime = 1_700_000_000;
    l2.dir("etc", 0o755)
        .pax(&[("mtime", b"1700000000.25")])
        .file("etc/motd", b"hello from the top layer\n", 0o644)
        .dir("opt", 0o755)
        .whiteout("opt", "gone")
        .xattrs(&[("user.dir", b"opaque dir")])
        .dir("opt/old", 0o750)
        .opaque("opt/old")
        .file("opt/old/b", b"new b\n", 0o644)
        .dir("srv", 0o755)
        .file("srv/data", &noise(300_000, 9), 0o644);
    vec![l1.bytes(), l2.bytes()]
}

/// Loads the fixture (gzip layers) into `env`'s store as `app:1`.
pub fn load_fixture(env: &Env) {
    let layers = fixture_layers()
        .into_iter()
        .map(|tar| Layer {
            blob: crate::store_common::gzip(&tar),
            tar,
            media: "application/vnd.oci.image.layer.v1.tar+gzip",
        })
        .collect();
    let img = Image::new(layers, "amd64", "/bin/sh");
    let layout = env.dir.path().join("layout");
    write_layout(&layout, &[(&img, "1")]);
    env.ok(&[
        "load",
        "-q",
        "-i",
        layout.to_str().unwrap(),
        "--name",
        "app",
    ]);
}

/// Every entry below `root`: type, mode, owner, size, content digest or target, mtime (with
/// nanoseconds; directories too), non-overlay xattrs, link count and hard-link group.
pub fn full_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes, true);
    out
}

/// Like [`full_tree`] without times and hard-link groups (for other tools' extractions).
pub fn plain_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes, false);
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, String>,
    inodes: &mut BTreeMap<u64, String>,
    full: bool,
) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let kind = match md.mode() & libc::S_IFMT {
            libc::S_IFDIR => "dir".to_string(),
            libc::S_IFREG => format!("file {} {}", md.size(), sha256(&std::fs::read(&p).unwrap())),
            libc::S_IFLNK => format!("link {}", std::fs::read_link(&p).unwrap().display()),
            libc::S_IFCHR => format!("chr {}", md.rdev()),
            libc::S_IFBLK => format!("blk {}", md.rdev()),
            libc::S_IFIFO => "fifo".to_string(),
            _ => "other".to_string(),
        };
        let x = xattrs(&p);
        let mut line = format!(
            "{kind} {:o} {}:{} {x:?}",
            md.mode() & 0o7777,
            md.uid(),
            md.gid()
        );
        if full {
            if !md.is_symlink() {
                line += &format!(" mtime {}.{:09}", md.mtime(), md.mtime_nsec());
            }
            if !md.is_dir() {
                let first = inodes.entry(md.ino()).or_insert_with(|| rel.clone());
                line += &format!(" nlink {} group {first}", md.nlink());
            }
        }
        out.insert(rel, line);
        if md.is_dir() {
            walk(root, &p, out, inodes, full);
        }
    }
}

/// user.*, security.* and trusted.* xattrs except the overlay's own.
pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
            continue;
        }
        let mut v = vec![0u8; 4096];
        if let Ok(m) = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]) {
            out.push((name, v[..m].to_vec()));
        }
    }
    out.sort();
    out
}

/// A lazy mount (`layerfs mount --lazy`), unmounted on drop.
pub struct LazyMount {
    pub dir: tempfile::TempDir,
    root: std::path::PathBuf,
    pub stdout: String,
}

impl LazyMount {
    pub fn new(env: &Env, reference: &str, extra: &[&str]) -> LazyMount {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["mount", "--lazy"];
        args.extend_from_slice(extra);
        args.push(reference);
        args.push(dir.path().to_str().unwrap());
        let out = env.run(&args);
        let m = LazyMount {
            dir,
            root: env.root(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        };
        assert!(
            out.status.success(),
            "mount --lazy: {}{}",
            m.stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(m.path()),
            "mount --lazy returned but nothing is mounted"
        );
        m
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Pieces in the store's chunk cache.
    pub fn cached_chunks(&self) -> usize {
        std::fs::read_dir(self.root.join("chunks/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

pub fn is_mounted(p: &Path) -> bool {
    let want = p.to_str().unwrap().to_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_layerfs"))
            .arg("umount")
            .arg(self.dir.path())
            .status();
        if is_mounted(self.dir.path()) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
