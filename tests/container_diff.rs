//! `diff` rules on hand-made layers (overlay format, no mount): one case per rule, checked
//! against the exact `docker diff` lines.
mod container_common;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use container_common::{is_root, populate};
use layerfs::inspect::diff::{DiffOptions, LayerRef, diff};

fn whiteout(dir: &Path, rel: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &p,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
}

fn opaque(dir: &Path, rel: &str) {
    let fd = layerfs::image::pack::open_tree(&dir.join(rel)).unwrap();
    rustix::fs::fsetxattr(
        fd.as_fd(),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
}

/// Copies a directory's mode, owner and mtime (what copy-up does to parents).
fn copy_attrs(from: &Path, to: &Path) {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(from).unwrap();
    std::os::unix::fs::chown(to, Some(md.uid()), Some(md.gid())).unwrap();
    std::fs::set_permissions(to, md.permissions()).unwrap();
    let f = std::fs::File::open(to).unwrap();
    f.set_modified(md.modified().unwrap()).unwrap();
}

struct Case {
    _t: tempfile::TempDir,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
}

/// `lowers` bottom first; returns top-first lower paths for `diff`.
fn case(lowers: &[&[&str]]) -> Case {
    let t = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, spec) in lowers.iter().enumerate() {
        let d = t.path().join(format!("l{i}"));
        std::fs::create_dir_all(&d).unwrap();
        populate(&d, spec);
        paths.push(d);
    }
    paths.reverse();
    let upper = t.path().join("upper");
    std::fs::create_dir_all(&upper).unwrap();
    Case {
        _t: t,
        lowers: paths,
        upper,
    }
}

/// The container's diff: its image (the lowers) against the image plus its writable layer.
fn lines(c: &Case) -> String {
    let image: Vec<LayerRef> = c
        .lowers
        .iter()
        .rev()
        .map(|p| LayerRef {
            key: p.display().to_string(),
            path: p.clone(),
        })
        .collect();
    let mut container = image.clone();
    container.push(LayerRef {
        key: "upper".into(),
        path: c.upper.clone(),
    });
    diff(&image, &container, DiffOptions::default())
        .unwrap()
        .iter()
        .map(|c| format!("{c}\n"))
        .collect()
}

#[test]
fn rules() {
    if !is_root() {
        eprintln!("skipping: whiteouts and trusted xattrs need root");
        return;
    }
    // A whiteout of an image entry is one D; of a directory, its children are not listed.
    let c = case(&[&["a/f=1", "a/dir/x=1", "a/dir/y=2"]]);
    whiteout(&c.upper, "a/f");
    whiteout(&c.upper, "a/dir");
    copy_attrs(&c.lowers[0].join("a"), &c.upper.join("a"));
    assert_eq!(lines(&c), "C /a\nD /a/dir\nD /a/f\n");

    // A whiteout that hides nothing is no change.
    let c = case(&[&["a/f=1"]]);
    whiteout(&c.upper, "ghost");
    assert_eq!(lines(&c), "");

    // A copied-up parent with no change of its own and nothing changed inside is not listed;
    // a changed attribute is.
    let c = case(&[&["quiet/x=1", "loud/x=1"]]);
    std::fs::create_dir_all(c.upper.join("quiet")).unwrap();
    copy_attrs(&c.lowers[0].join("quiet"), &c.upper.join("quiet"));
    std::fs::create_dir_all(c.upper.join("loud")).unwrap();
    copy_attrs(&c.lowers[0].join("loud"), &c.upper.join("loud"));
    std::os::unix::fs::chown(c.upper.join("loud"), Some(1234), None).unwrap();
    assert_eq!(lines(&c), "C /loud\n");

    // Every parent of a change is C, however deep.
    let c = case(&[&["p/q/r/s=1"]]);
    for d in ["p", "p/q", "p/q/r"] {
        std::fs::create_dir_all(c.upper.join(d)).unwrap();
    }
    for d in ["p/q/r", "p/q", "p"] {
        copy_attrs(&c.lowers[0].join(d), &c.upper.join(d));
    }
    std::fs::write(c.upper.join("p/q/r/s"), "2").unwrap();
    assert_eq!(lines(&c), "C /p\nC /p/q\nC /p/q/r\nC /p/q/r/s\n");

    // Type changes: a file where the image has a directory is C; a directory where the image
    // has a file is C with its content A.
    let c = case(&[&["wasdir/x=1", "wasfile=1"]]);
    std::fs::write(c.upper.join("wasdir"), "now a file").unwrap();
    populate(&c.upper, &["wasfile/inner=1"]);
    assert_eq!(lines(&c), "C /wasdir\nC /wasfile\nA /wasfile/inner\n");

    // An opaque directory replacing an image directory: C; the names it hides are D, its other
    // content is compared with the image's like any other (was: all of it A, the hidden names
    // not reported).
    let c = case(&[&["o/old=1", "o/same=1"]]);
    populate(&c.upper, &["o/same=2", "o/new/deep=3"]);
    opaque(&c.upper, "o");
    assert_eq!(
        lines(&c),
        "C /o\nA /o/new\nA /o/new/deep\nD /o/old\nC /o/same\n"
    );

    // The image is the merged view of its layers: a name deleted by an upper image layer, or
    // hidden by an opaque directory in it, is new when the container creates it again.
    let c = case(&[&["gone=1", "od/hidden=1", "kept=1"], &["od/visible=1"]]);
    whiteout(&c.lowers[0], "gone");
    opaque(&c.lowers[0], "od");
    std::fs::write(c.upper.join("gone"), "back").unwrap();
    std::fs::write(c.upper.join("kept"), "changed").unwrap();
    populate(&c.upper, &["od/hidden=again", "od/visible=changed"]);
    copy_attrs(&c.lowers[0].join("od"), &c.upper.join("od"));
    assert_eq!(
        lines(&c),
        "A /gone\nC /kept\nC /od\nA /od/hidden\nC /od/visible\n"
    );

    // Sorted by path bytes, like docker ("/a-b" before "/a/x").
    let c = case(&[&["a/x=1"]]);
    populate(&c.upper, &["a-b=1", "a/y=1"]);
    copy_attrs(&c.lowers[0].join("a"), &c.upper.join("a"));
    assert_eq!(lines(&c), "C /a\nA /a-b\nA /a/y\n");
}
