//! Layer extraction into the overlay format, and the malicious-layer suite.
mod store_common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use layerfs::image::unpack::{Limits, Unpacked, open_layer_root, unpack_layer};
use store_common::{Layer, describe, getxattr, tree};

fn unpack(bytes: &[u8], dir: &Path, limits: Limits) -> layerfs::Result<Unpacked> {
    let fd = open_layer_root(dir).unwrap();
    unpack_layer(bytes, fd, &limits, "layer test")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn extracts_every_entry_kind_in_overlay_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    let long_dir = "d".repeat(120);
    let long_name = format!("{long_dir}/{}", "n".repeat(200));
    let mut l = Layer::new();
    l.dir("etc", 0o755)
        .file_owned("etc/shadow", b"secret", 0o640, 0, 42)
        .file("bin/su", b"su", 0o4755)
        .file("bin/sg", b"sg", 0o2755)
        .dir("tmp", 0o1777)
        .symlink("etc/abs", "/etc/shadow")
        .symlink("etc/up", "../../../outside")
        .hardlink("etc/shadow.link", "etc/shadow")
        .fifo("run/fifo")
        .xattrs(&[("user.file", b"fv"), ("trusted.t", b"tv")])
        .file("x/withattr", b"data", 0o600)
        .xattrs(&[("user.dir", b"dv"), ("trusted.overlay.redirect", b"/etc")])
        .dir("x", 0o750)
        .whiteout("etc", "gone")
        .opaque("var/cache")
        .file(&long_name, b"long", 0o644);
    if is_root() {
        l.chardev("dev/null", 1, 3);
    }
    let tar = l.bytes();
    let out = unpack(&tar, &dir, Limits::default()).unwrap();
    assert_eq!(out.tar_bytes, tar.len() as u64);

    let d = |p: &str| describe(&dir.join(p));
    assert_eq!(d("etc/shadow"), "f:secret 640 0:42");
    assert_eq!(d("bin/su"), "f:su 4755 0:0");
    assert_eq!(d("bin/sg"), "f:sg 2755 0:0");
    assert_eq!(d("tmp"), "d 1777 0:0");
    assert_eq!(d("etc/abs"), "l:/etc/shadow 777 0:0");
    assert_eq!(d("etc/up"), "l:../../../outside 777 0:0");
    assert_eq!(d("run/fifo"), "p 600 0:0");
    assert_eq!(d(&long_name), "f:long 644 0:0");
    let ino = |p: &str| std::fs::metadata(dir.join(p)).unwrap().ino();
    assert_eq!(ino("etc/shadow"), ino("etc/shadow.link"), "hard link");
    // Whiteout = char 0/0, opaque = trusted.overlay.opaque=y.
    assert_eq!(d("etc/gone"), "c:0 0 0:0");
    assert_eq!(
        getxattr(&dir.join("var/cache"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!dir.join("var/cache/.wh..wh..opq").exists());
    // xattrs on files and directories; overlay control xattrs from the tar are dropped.
    assert_eq!(
        getxattr(&dir.join("x/withattr"), "user.file").as_deref(),
        Some(&b"fv"[..])
    );
    assert_eq!(
        getxattr(&dir.join("x/withattr"), "trusted.t").as_deref(),
        Some(&b"tv"[..])
    );
    assert_eq!(
        getxattr(&dir.join("x"), "user.dir").as_deref(),
        Some(&b"dv"[..])
    );
    assert_eq!(getxattr(&dir.join("x"), "trusted.overlay.redirect"), None);
    assert_eq!(d("x"), "d 750 0:0");
    if is_root() {
        assert_eq!(
            d("dev/null"),
            format!("c:{} 666 0:0", rustix::fs::makedev(1, 3))
        );
    }
    // mtimes, directories included (set after their contents).
    for p in ["etc", "etc/shadow", "x", "tmp", "run/fifo", "x/withattr"] {
        assert_eq!(
            std::fs::symlink_metadata(dir.join(p)).unwrap().mtime(),
            1_600_000_000,
            "{p}"
        );
    }
    assert_eq!(
        std::fs::symlink_metadata(dir.join("etc/abs"))
            .unwrap()
            .mtime(),
        1_600_000_000
    );
    // Parents the layer did not list are reported, listed ones are not.
    let implicit: Vec<String> = out.implicit_dirs.iter().map(|p| p.to_string()).collect();
    for p in [
        "/",
        "/bin",
        "/run",
        "/var",
        "/var/cache",
        &format!("/{long_dir}"),
    ] {
        assert!(
            implicit.contains(&p.to_string()),
            "{p} not implicit: {implicit:?}"
        );
    }
    for p in ["/etc", "/x", "/tmp"] {
        assert!(!implicit.contains(&p.to_string()), "{p} implicit");
    }
}

#[test]
fn later_entries_win_and_whiteouts_only_hide_lower_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    let tar = Layer::new()
        .file("a", b"one", 0o644)
        .file("a", b"two", 0o600)
        .file("keep", b"k", 0o644)
        .whiteout("", "keep") // same layer: the file stays
        .whiteout("", "d") // then a directory over it: opaque
        .dir("d", 0o755)
        .file("d/f", b"f", 0o644)
        .dir("e", 0o755)
        .file("e/child", b"c", 0o644)
        .file("e", b"now a file", 0o644)
        .bytes();
    unpack(&tar, &dir, Limits::default()).unwrap();
    assert_eq!(describe(&dir.join("a")), "f:two 600 0:0");
    assert_eq!(describe(&dir.join("keep")), "f:k 644 0:0");
    assert_eq!(describe(&dir.join("d")), "d 755 0:0");
    assert_eq!(
        getxattr(&dir.join("d"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(describe(&dir.join("e")), "f:now a file 644 0:0");
}

#[test]
fn pax_long_names_and_times() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layer");
    let long = format!("{0}/{0}/{0}/file", "p".repeat(100));
    let tar = Layer::new()
        .pax(&[
            ("path", long.as_bytes()),
            ("mtime", b"1234567890.25"),
            ("uid", b"100000"),
        ])
        .file("short", b"x", 0o644)
        .bytes();
    unpack(&tar, &dir, Limits::default()).unwrap();
    let md = std::fs::symlink_metadata(dir.join(&long)).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1234567890, 250_000_000));
    if is_root() {
        assert_eq!(md.uid(), 100000);
    }
    assert!(!dir.join("short").exists());
}

/// Snapshot of everything in `base` except the layer dir: nothing may change there.
fn outside(base: &Path) -> Vec<(String, String)> {
    tree(base)
        .into_iter()
        .filter(|(p, _)| p != "layer" && !p.starts_with("layer/"))
        .collect()
}

#[test]
fn malicious_layers_are_refused_without_writing_outside() {
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    let mut push = |name, l: &mut Layer, want| cases.push((name, l.bytes(), want));
    push(
        "dotdot",
        Layer::new().file("../escape", b"x", 0o644),
        "leaves the layer root",
    );
    push(
        "dotdot deep",
        Layer::new().file("a/../../escape", b"x", 0o644),
        "leaves the layer root",
    );
    push(
        "symlink then write through it",
        Layer::new().symlink("a", "/tmp").file("a/f", b"x", 0o644),
        "symlink",
    );
    push(
        "relative symlink escape",
        Layer::new()
            .symlink("a", "../..")
            .file("a/escape", b"x", 0o644),
        "symlink",
    );
    push(
        "symlink dir then mkdir through it",
        Layer::new()
            .dir("d", 0o755)
            .symlink("d/s", "/")
            .dir("d/s/etc", 0o755),
        "symlink",
    );
    push(
        "hardlink to outside",
        Layer::new().hardlink("h", "../../../etc/passwd"),
        "leaves the layer root",
    );
    push(
        "hardlink to a path not in this layer",
        Layer::new().hardlink("h", "etc/passwd"),
        "not an earlier file",
    );
    push(
        "hardlink through a symlink",
        Layer::new().symlink("s", "/etc").hardlink("h", "s/passwd"),
        "not an earlier file",
    );
    push(
        "hardlink to a directory",
        Layer::new().dir("d", 0o755).hardlink("h", "d"),
        "not an earlier file",
    );
    push(
        "file replacing the root",
        Layer::new().file("./", b"x", 0o644),
        "layer root",
    );
    push(
        "symlink replacing the root",
        Layer::new().symlink("/", "/etc"),
        "layer root",
    );
    push(
        "opaque through a symlink",
        Layer::new().symlink("s", "/tmp").opaque("s"),
        "symlink",
    );
    push(
        "whiteout through a symlink",
        Layer::new().symlink("s", "/tmp").whiteout("s", "x"),
        "symlink",
    );
    for (name, tar, want) in cases {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("sentinel"), b"s").unwrap();
        let before = outside(tmp.path());
        let err = unpack(&tar, &tmp.path().join("layer"), Limits::default())
            .expect_err(name)
            .to_string();
        assert!(err.contains(want), "{name}: {err}");
        assert!(
            err.contains("layer test"),
            "{name}: error does not name the layer: {err}"
        );
        assert_eq!(
            outside(tmp.path()),
            before,
            "{name}: wrote outside the layer"
        );
    }
    assert!(!Path::new("/tmp/f").exists() || std::fs::read("/tmp/f").unwrap() != b"x");
}

#[test]
fn truncated_garbage_and_bombs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = Layer::new().file("a", &[7u8; 3000], 0o644).bytes();
    let run = |bytes: &[u8], limits: Limits| {
        let d = tempfile::tempdir_in(tmp.path()).unwrap();
        unpack(bytes, &d.path().join("layer"), limits)
            .unwrap_err()
            .to_string()
    };
    // Cut inside the data, at the end of the data, and just before the end-of-archive blocks.
    for cut in [100, 512 + 1000, 512 + 3072] {
        let e = run(&good[..cut], Limits::default());
        assert!(e.contains("layer test"), "{cut}: {e}");
        assert!(
            e.contains("truncated")
                || e.contains("bad tar")
                || e.contains("EOF")
                || e.contains("eof"),
            "{cut}: {e}"
        );
    }
    let mut garbage = good.clone();
    garbage.extend_from_slice(b"garbage");
    assert!(run(&garbage, Limits::default()).contains("trailing data"));
    // Trailing zero padding (record size) is fine.
    let mut padded = good.clone();
    padded.extend_from_slice(&[0u8; 8192]);
    let d = tempfile::tempdir_in(tmp.path()).unwrap();
    unpack(&padded, &d.path().join("layer"), Limits::default()).unwrap();

    let big = Layer::new()
        .file("zeros", &vec![0u8; 4 << 20], 0o644)
        .bytes();
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };
    assert!(run(&big, limits).contains("decompression bomb"));
    let mut many = Layer::new();
    for i in 0..50 {
        many.file(&format!("f{i}"), b"", 0o644);
    }
    let limits = Limits {
        max_bytes: 1 << 30,
        max_entries: 10,
    };
    assert!(run(&many.bytes(), limits).contains("more than 10 tar entries"));
    // A huge GNU long name is refused before it is buffered.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(64 << 20);
    h.set_cksum();
    let mut huge = h.as_bytes().to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 << 20));
    assert!(run(&huge, Limits::default()).contains("larger than"));
    assert!(run(b"", Limits::default()).contains("truncated"));
}
