//! Lower layers built in code. A `Fixture` lists each layer's entries; `instantiate` writes them
//! into fresh directories, in the overlay on-disk format or in the formats other tools write
//! (`.wh.` files, `user.overlay.*` xattrs), and pins every timestamp to `FIXTURE_TIME` so that
//! "mtime preserved by copy-up" is comparable between two copies built at different moments.
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps, XattrFlags};

use super::mount::{Dirs, Mode as OvMode};

/// Every fixture entry gets this atime and mtime (1985-11-05): anything below 1e9 seconds in a
/// tree snapshot is a time the fixture set, anything above was set by an operation.
pub const FIXTURE_TIME: i64 = 500_000_000;

/// One entry of a layer. Paths are relative to the layer root; parents must come first.
#[derive(Clone, Debug)]
pub enum E {
    Dir(String, u32),
    File(String, Vec<u8>, u32),
    /// A sparse file: data extents (offset, length) of a pattern, then the total size.
    Sparse(String, Vec<(u64, u64)>, u64),
    Symlink(String, String),
    /// `Hardlink(new, existing)`.
    Hardlink(String, String),
    Fifo(String),
    Sock(String),
    Chr(String, u32, u32),
    Blk(String, u32, u32),
    /// Hides the name in the layers below, in the chosen `Style`.
    Whiteout(String),
    /// Marks an existing directory of this layer opaque, in the chosen `Style`.
    Opaque(String),
    Xattr(String, String, Vec<u8>),
    Owner(String, u32, u32),
    /// A raw name written as-is, whatever the style (for `.wh.` names a test needs literally).
    RawFile(String, Vec<u8>),
}

/// How whiteouts and opaque markers are written into lower layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Kernel overlayfs: char device 0/0, `trusted.overlay.opaque=y`.
    Overlay,
    /// OCI / containers-storage with a mount program: `.wh.NAME` files, `.wh..wh..opq`.
    Oci,
    /// Unprivileged overlay (`userxattr`): char device 0/0, `user.overlay.opaque=y`.
    UserXattr,
}

pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";
pub const WH_PREFIX: &str = ".wh.";
pub const WH_OPAQUE: &str = ".wh..wh..opq";

/// Lower layers (top first) and the initial content of the upper layer.
#[derive(Clone, Debug, Default)]
pub struct Fixture {
    pub lowers: Vec<Vec<E>>,
    pub upper: Vec<E>,
}

impl Fixture {
    /// Writes the layers under `base` (`l0` is the top lower) and returns the mount's dirs;
    /// without upper when `read_only`.
    pub fn instantiate(&self, base: &Path, style: Style, read_only: bool) -> Dirs {
        let mut lowers = Vec::new();
        for (i, layer) in self.lowers.iter().enumerate() {
            let dir = base.join(format!("l{i}"));
            build_layer(&dir, layer, style);
            lowers.push(dir);
        }
        let upper = if read_only {
            None
        } else {
            let (u, w) = (base.join("upper"), base.join("work"));
            build_layer(&u, &self.upper, Style::Overlay);
            mkdir(&w);
            Some((u, w))
        };
        Dirs {
            lowers,
            upper,
            mode: OvMode::Legacy,
        }
    }
}

fn mkdir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

/// A deterministic byte pattern: the same (len, seed) gives the same bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32 * 7) as u8)
        .collect()
}

/// Builds one layer directory from its entries.
pub fn build_layer(root: &Path, entries: &[E], style: Style) {
    mkdir(root);
    let mut modes: Vec<(PathBuf, u32)> = Vec::new();
    let mut owners: Vec<(PathBuf, u32, u32)> = Vec::new();
    let mut xattrs: Vec<(PathBuf, String, Vec<u8>)> = Vec::new();
    for e in entries {
        let p = |rel: &str| root.join(rel);
        match e {
            E::Dir(rel, mode) => {
                mkdir(&p(rel));
                modes.push((p(rel), *mode));
            }
            E::File(rel, data, mode) => {
                write_file(&p(rel), data);
                modes.push((p(rel), *mode));
            }
            E::RawFile(rel, data) => write_file(&p(rel), data),
            E::Sparse(rel, extents, size) => {
                let mut f = fs::File::create(p(rel)).expect("create sparse");
                for (i, (off, len)) in extents.iter().enumerate() {
                    f.seek(SeekFrom::Start(*off)).expect("seek");
                    f.write_all(&pattern(*len as usize, i as u8 + 1))
                        .expect("write");
                }
                f.set_len(*size).expect("set_len");
                modes.push((p(rel), 0o644));
            }
            E::Symlink(rel, target) => symlink(target, p(rel)).expect("symlink"),
            E::Hardlink(rel, existing) => fs::hard_link(p(existing), p(rel)).expect("link"),
            E::Fifo(rel) => mknod(&p(rel), FileType::Fifo, 0o644, 0, 0),
            E::Sock(rel) => mknod(&p(rel), FileType::Socket, 0o755, 0, 0),
            E::Chr(rel, ma, mi) => mknod(&p(rel), FileType::CharacterDevice, 0o644, *ma, *mi),
            E::Blk(rel, ma, mi) => mknod(&p(rel), FileType::BlockDevice, 0o644, *ma, *mi),
            E::Whiteout(rel) => match style {
                Style::Overlay | Style::UserXattr => {
                    mknod(&p(rel), FileType::CharacterDevice, 0o000, 0, 0)
                }
                Style::Oci => {
                    let path = p(rel);
                    let name = path.file_name().expect("name").to_string_lossy();
                    write_file(&path.with_file_name(format!("{WH_PREFIX}{name}")), b"");
                }
            },
            E::Opaque(rel) => match style {
                Style::Overlay => xattrs.push((p(rel), OPAQUE_XATTR.into(), b"y".to_vec())),
                Style::UserXattr => xattrs.push((p(rel), USER_OPAQUE_XATTR.into(), b"y".to_vec())),
                Style::Oci => write_file(&p(rel).join(WH_OPAQUE), b""),
            },
            E::Xattr(rel, name, value) => xattrs.push((p(rel), name.clone(), value.clone())),
            E::Owner(rel, uid, gid) => owners.push((p(rel), *uid, *gid)),
        }
    }
    // Owners before modes (chown clears setuid), xattrs last (chown/write clear capabilities).
    for (path, uid, gid) in owners {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
    }
    for (path, mode) in modes {
        rustix::fs::chmod(&path, Mode::from_raw_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    }
    for (path, name, value) in xattrs {
        rustix::fs::lsetxattr(&path, name.as_str(), &value, XattrFlags::empty())
            .unwrap_or_else(|e| panic!("setxattr {name} {}: {e}", path.display()));
    }
    pin_times(root);
}

fn write_file(path: &Path, data: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data).expect("write");
}

fn mknod(path: &Path, ft: FileType, mode: u32, major: u32, minor: u32) {
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(CWD, path, ft, Mode::from_raw_mode(mode), dev)
        .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
    rustix::fs::chmod(path, Mode::from_raw_mode(mode)).expect("chmod node");
}

/// Sets atime and mtime of every entry under `root` (root included) to `FIXTURE_TIME`.
pub fn pin_times(root: &Path) {
    let t = Timespec {
        tv_sec: FIXTURE_TIME,
        tv_nsec: 0,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).expect("lstat");
        if md.is_dir() {
            for e in fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
        }
        rustix::fs::utimensat(CWD, &p, &ts, AtFlags::SYMLINK_NOFOLLOW)
            .unwrap_or_else(|e| panic!("utimensat {}: {e}", p.display()));
    }
}

// Short constructors so fixtures and scenarios read as data.
pub fn dir(p: &str, mode: u32) -> E {
    E::Dir(p.into(), mode)
}
pub fn file(p: &str, data: &str) -> E {
    E::File(p.into(), data.as_bytes().to_vec(), 0o644)
}
pub fn file_mode(p: &str, data: &str, mode: u32) -> E {
    E::File(p.into(), data.as_bytes().to_vec(), mode)
}
pub fn file_bytes(p: &str, data: Vec<u8>) -> E {
    E::File(p.into(), data, 0o644)
}
pub fn slink(p: &str, target: &str) -> E {
    E::Symlink(p.into(), target.into())
}
pub fn hlink(p: &str, existing: &str) -> E {
    E::Hardlink(p.into(), existing.into())
}
pub fn wh(p: &str) -> E {
    E::Whiteout(p.into())
}
pub fn opaque(p: &str) -> E {
    E::Opaque(p.into())
}
pub fn xattr(p: &str, name: &str, value: &str) -> E {
    E::Xattr(p.into(), name.into(), value.as_bytes().to_vec())
}
pub fn owner(p: &str, uid: u32, gid: u32) -> E {
    E::Owner(p.into(), uid, gid)
}

/// The standard two-layer fixture most scenarios run on. Top lower (l0) first.
///
/// ```text
/// name          l0 (top)                      l1 (bottom)
/// d/            dir: top, shared, wh(gone)    dir: bottom, shared, gone
/// opq/          opaque dir: new               dir: old
/// f, b          f "hello\n"                   b "bottom\n", f2
/// tf / ft       tf dir (over file)            tf file / ft dir with x (under file ft)
/// gone_root     whiteout                      file
/// deep/a/b/c/   file (a: 0750 1000:1000)
/// ```
/// plus special files, links, xattrs, owners and modes in l0.
pub fn base() -> Fixture {
    let top = vec![
        dir("d", 0o755),
        file("d/top", "top\n"),
        file("d/shared", "from-top\n"),
        wh("d/gone"),
        dir("opq", 0o755),
        file("opq/new", "new\n"),
        opaque("opq"),
        file("f", "hello\n"),
        dir("tf", 0o755),
        file("tf/inner", "inner\n"),
        file("ft", "file-over-dir\n"),
        wh("gone_root"),
        dir("deep", 0o755),
        dir("deep/a", 0o750),
        dir("deep/a/b", 0o711),
        dir("deep/a/b/c", 0o700),
        file("deep/a/b/c/file", "deep\n"),
        owner("deep/a", 1000, 1000),
        owner("deep/a/b/c", 2000, 2001),
        file_mode("suid", "#!/bin/sh\n", 0o4755),
        file_mode("sgid", "#!/bin/sh\n", 0o2755),
        file_mode("usuid", "user-suid\n", 0o6777),
        owner("usuid", 1000, 1000),
        file_mode("ro", "read-only\n", 0o444),
        file_mode("secret", "secret\n", 0o600),
        file_mode("owned", "owned\n", 0o640),
        owner("owned", 1234, 5678),
        file("xa", "xattrs\n"),
        xattr("xa", "user.foo", "bar"),
        xattr("xa", "user.empty", ""),
        xattr("xa", "trusted.t", "1"),
        dir("xd", 0o755),
        xattr("xd", "user.dirattr", "v"),
        file("xd/in", "in\n"),
        slink("sym", "f"),
        slink("dangling", "nope"),
        slink("dsym", "d"),
        slink("abssym", "/nonexistent/abs"),
        file("hl1", "linked\n"),
        hlink("hl2", "hl1"),
        E::Fifo("fifo".into()),
        E::Sock("sock".into()),
        E::Chr("chr".into(), 1, 3),
        E::Blk("blk".into(), 7, 0),
        file("emptyfile", ""),
        dir("empty", 0o755),
        dir("mt", 0o755),
        dir("pub", 0o777),
        dir("sticky", 0o1777),
        file("sticky/rootfile", "root\n"),
        dir("sgiddir", 0o2775),
        owner("sgiddir", 0, 100),
        dir("userdir", 0o755),
        owner("userdir", 1000, 1000),
        file("userdir/own", "mine\n"),
        owner("userdir/own", 1000, 1000),
        // Data and holes in whole MiB: the kernel's copy-up skips holes only between its
        // 1 MiB chunks, so these holes survive a correct copy-up on both sides.
        E::Sparse(
            "sparse".into(),
            vec![(0, 1 << 20), (3 << 20, 1 << 20)],
            5 << 20,
        ),
        dir("dl", 0o755),
        file("dl/x", "x\n"),
    ];
    let bottom = vec![
        dir("d", 0o755),
        file("d/bottom", "bottom\n"),
        file("d/shared", "from-bottom\n"),
        file("d/gone", "gone\n"),
        dir("d/sub", 0o755),
        file("d/sub/s", "s\n"),
        dir("opq", 0o755),
        file("opq/old", "old\n"),
        file("b", "bottom\n"),
        file("f2", "f2\n"),
        file("tf", "file-under-dir\n"),
        dir("ft", 0o755),
        file("ft/x", "x\n"),
        file("gone_root", "gone\n"),
        dir("bd", 0o755),
        dir("bd/x", 0o755),
        file("bd/x/y", "y\n"),
        dir("mt", 0o700),
        file("mt/m", "m\n"),
    ];
    Fixture {
        lowers: vec![top, bottom],
        upper: vec![],
    }
}
