//! Quirky layers that real tools write, loaded by layerfs and compared, through kernel
//! overlayfs over layerfs's extracted layers, with what podman (overlay driver, private store)
//! shows for the same image under `podman image mount`, or with a hand-written tree where
//! podman refuses the layer ("duplicates of file paths not supported") or differs from
//! containerd's and moby's appliers, which layerfs follows (the last entry for a name wins).
//!
//! Every case stacks one quirky layer over the same base layer.
mod common;
#[path = "../tests/store_common/mod.rs"]
mod store_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::diff::test_tmp;
use common::mount::{Dirs, Impl, Mount, abort_mounts_under};
use store_common::{Layer, TestImage, oci_files, tree, write_dir};

/// What a case is compared with.
enum Oracle {
    /// podman loads it too: the trees must be equal.
    Podman,
    /// The merged tree layerfs must show, as `path kind mode` changes to [`BASE`]: where
    /// podman refuses the layer (duplicate names) or differs from containerd and moby.
    Tree(&'static [&'static str]),
    /// layerfs refuses (the refusals that protect the host); its error must contain this.
    Refused(&'static str),
}

fn base() -> Vec<u8> {
    let mut l = Layer::new();
    l.dir("d", 0o755)
        .file("d/x", b"x", 0o644)
        .file("d/y", b"y", 0o644)
        .dir("a", 0o755)
        .file("a/x", b"ax", 0o644)
        .file("n", b"lower n", 0o644)
        .dir("e", 0o755)
        .file("e/k", b"k", 0o644);
    l.bytes()
}

/// The merged tree of the base layer alone, with `extra` lines added (sorted by the caller).
const BASE: &[&str] = &[
    "a d 755",
    "a/x f:ax 644",
    "d d 755",
    "d/x f:x 644",
    "d/y f:y 644",
    "e d 755",
    "e/k f:k 644",
    "n f:lower n 644",
];

fn cases() -> Vec<(&'static str, Vec<u8>, Oracle)> {
    let mut v = Vec::new();
    let mut add = |name, f: &dyn Fn(&mut Layer), o| {
        let mut l = Layer::new();
        f(&mut l);
        v.push((name, l.bytes(), o));
    };
    // umoci repack of a directory replaced by a file.
    add(
        "whiteout-under-file",
        &|l| {
            l.file("d", b"now a file", 0o644).whiteout("d", "x");
        },
        Oracle::Podman,
    );
    add(
        "opaque-under-file",
        &|l| {
            l.file("o", b"o file", 0o644).opaque("o");
        },
        Oracle::Podman,
    );
    add(
        "whiteout-under-whiteout",
        &|l| {
            l.whiteout("", "d").whiteout("d", "x");
        },
        Oracle::Podman,
    );
    add(
        "dir-then-child-whiteout",
        &|l| {
            l.dir("a", 0o755).whiteout("a", "x");
        },
        Oracle::Podman,
    );
    add(
        "dir-over-file",
        &|l| {
            l.file("a", b"file a", 0o644)
                .dir("a", 0o750)
                .file("a/y", b"ay", 0o644);
        },
        Oracle::Tree(&["a d 750", "-a/x", "a/y f:ay 644"]),
    );
    add(
        "file-over-dir",
        &|l| {
            l.dir("q", 0o755)
                .file("q/z", b"z", 0o644)
                .file("q", b"q file", 0o600);
        },
        Oracle::Tree(&["q f:q file 600"]),
    );
    add(
        "hardlink-to-replaced-name",
        &|l| {
            l.file("h1", b"one", 0o644)
                .hardlink("h2", "h1")
                .file("h1", b"two", 0o644)
                .hardlink("h3", "h1");
        },
        Oracle::Tree(&["h1 f:two 644", "h2 f:one 644", "h3 f:two 644"]),
    );
    add(
        "duplicates-last-wins",
        &|l| {
            l.file("dup", b"one", 0o644)
                .file("dup", b"two", 0o600)
                .dir("dd", 0o700)
                .dir("dd", 0o750)
                .symlink("sl", "one")
                .symlink("sl", "two");
        },
        Oracle::Tree(&["dd d 750", "dup f:two 600", "sl l:two 777"]),
    );
    // podman 4.3 makes `e` a plain directory here and still shows e/k; containerd and moby
    // remove e and make a fresh directory, which is what layerfs does (an opaque directory).
    add(
        "whiteout-then-dir",
        &|l| {
            l.whiteout("", "e")
                .dir("e", 0o755)
                .file("e/new", b"new", 0o644);
        },
        Oracle::Tree(&["e/new f:new 644", "-e/k"]),
    );
    add(
        "whiteout-then-child-file",
        &|l| {
            l.whiteout("", "d").file("d/new", b"new", 0o644);
        },
        Oracle::Tree(&["d/new f:new 644", "-d/x", "-d/y"]),
    );
    add(
        "whiteout-after-entry-of-same-layer",
        &|l| {
            l.file("n", b"upper n", 0o644).whiteout("", "n");
        },
        Oracle::Tree(&["n f:upper n 644"]),
    );
    add(
        "entry-under-file",
        &|l| {
            l.file("f", b"file", 0o644).file("f/child", b"c", 0o644);
        },
        Oracle::Refused("parent /f is not a directory"),
    );
    add(
        "whiteout-under-symlink",
        &|l| {
            l.symlink("s", "e").whiteout("s", "k");
        },
        Oracle::Refused("refusing to follow a symlink"),
    );
    add(
        "file-through-symlink",
        &|l| {
            l.symlink("s", "/etc").file("s/passwd", b"x", 0o644);
        },
        Oracle::Refused("refusing to follow a symlink"),
    );
    // podman clamps the path to the root; layerfs refuses the layer.
    add(
        "dotdot-escape",
        &|l| {
            l.file("../../x", b"x", 0o644);
        },
        Oracle::Refused("leaves the layer root"),
    );
    add(
        "hardlink-out-of-layer",
        &|l| {
            l.hardlink("h", "n");
        },
        Oracle::Refused("not an earlier file of this layer"),
    );
    v
}

/// The tree of `root` as `path kind mode` lines (owners are 0:0 in every case).
fn lines(root: &Path) -> Vec<String> {
    tree(root)
        .into_iter()
        .map(|(p, d)| {
            let d = d.strip_suffix(" 0:0").unwrap_or(&d).to_string();
            format!("{p} {d}")
        })
        .collect()
}

/// BASE with the case's lines applied: `path ...` replaces or adds `path` (a non-directory
/// drops what was below it), `-path` removes it and what was below it.
fn expected(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = BASE.iter().map(|s| s.to_string()).collect();
    for e in extra {
        let (path, keep) = match e.strip_prefix('-') {
            Some(p) => (p, false),
            None => (e.split(' ').next().unwrap_or(e), true),
        };
        // A removed entry or a non-directory takes what was below it along.
        let drop_children = !keep || e.split(' ').nth(1) != Some("d");
        v.retain(|l| {
            let p = l.split(' ').next().unwrap_or("");
            p != path && !(drop_children && p.starts_with(&format!("{path}/")))
        });
        if keep {
            v.push(e.to_string());
        }
    }
    v.sort();
    v
}

fn layerfs(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run layerfs")
}

/// Loads `layout` into a fresh store and returns the merged tree through kernel overlayfs.
fn layerfs_view(dir: &Path, layout: &Path, name: &str) -> Result<Vec<String>, String> {
    let root = dir.join("store");
    let o = layerfs(
        &root,
        &[
            "load",
            "-i",
            layout.to_str().expect("utf-8"),
            "--name",
            "quirk/x",
        ],
    );
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let store =
        layerfs::store::Store::open(&root, layerfs::store::LockMode::Shared).expect("open store");
    let img = store
        .resolve("quirk/x:1")
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let dirs = Dirs {
        lowers: store.lowerdirs(&img),
        upper: None,
        mode: common::mount::Mode::Legacy,
    };
    let m = Mount::new(Impl::Kernel, &dirs, &dir.join("mnt")).expect("kernel overlay mount");
    let t = lines(m.path());
    m.unmount().expect("unmount");
    Ok(t)
}

/// podman with a private store (overlay driver: each layer extracted into its own directory,
/// the image mounted with kernel overlayfs); cleans up on drop.
struct Podman(PathBuf);

impl Podman {
    fn new(dir: &Path) -> Podman {
        for d in ["root", "run", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).expect("mkdir");
        }
        let conf = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("root").display(),
            dir.join("run").display()
        );
        std::fs::write(dir.join("storage.conf"), conf).expect("storage.conf");
        std::fs::write(dir.join("containers.conf"), "").expect("containers.conf");
        Podman(dir.to_path_buf())
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("timeout")
            .args(["-k", "5", "120", "podman"])
            .env("CONTAINERS_STORAGE_CONF", self.0.join("storage.conf"))
            .env("CONTAINERS_CONF", self.0.join("containers.conf"))
            .arg("--root")
            .arg(self.0.join("root"))
            .arg("--runroot")
            .arg(self.0.join("run"))
            .arg("--tmpdir")
            .arg(self.0.join("tmp"))
            .args(["--storage-driver", "overlay", "--events-backend", "none"])
            .args(args)
            .output()
            .expect("run podman (see scripts/install-deps)")
    }

    /// The merged tree of the image in `layout`, or podman's error.
    fn view(&self, layout: &Path) -> Result<Vec<String>, String> {
        // An OCI archive: `podman pull oci:DIR` would name the image after the (mixed-case)
        // temp path.
        let archive = layout.with_extension("tar");
        let o = Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(layout)
            .arg(".")
            .output()
            .expect("tar");
        assert!(o.status.success(), "tar: {o:?}");
        let o = self.cmd(&["load", "-i", archive.to_str().expect("utf-8")]);
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        let o = self.cmd(&["images", "-q", "--no-trunc"]);
        let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            !id.is_empty() && !id.contains('\n'),
            "podman images: {id:?}"
        );
        let o = self.cmd(&["image", "mount", &id]);
        assert!(o.status.success(), "podman image mount: {o:?}");
        let mnt = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        let t = lines(&mnt);
        let _ = self.cmd(&["image", "unmount", &id]);
        let _ = self.cmd(&["rmi", "-f", &id]);
        Ok(t)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["image", "umount", "--all", "--force"]);
        let _ = self.cmd(&["rmi", "--all", "--force"]);
        abort_mounts_under(&self.0);
    }
}

fn layout_of(dir: &Path, layers: Vec<Vec<u8>>) -> PathBuf {
    let img = TestImage::new(layers.into_iter().map(|t| (t.clone(), t)).collect());
    let layout = dir.join("layout");
    let ann = serde_json::json!({"org.opencontainers.image.ref.name": "1"});
    write_dir(&layout, &oci_files(&[(&img, ann)]));
    layout
}

#[test]
fn quirky_layers_match_podman_or_the_expected_tree() {
    common::require_root();
    let tmp = tempfile::Builder::new()
        .prefix("quirks")
        .tempdir_in(test_tmp())
        .expect("tempdir");
    let pm = Podman::new(&tmp.path().join("podman"));
    let mut failures = Vec::new();
    for (name, layer, oracle) in cases() {
        let dir = tmp.path().join(name);
        let layout = layout_of(&dir, vec![base(), layer]);
        let ours = layerfs_view(&dir, &layout, name);
        let theirs = pm.view(&layout);
        match (&oracle, &ours, &theirs) {
            (Oracle::Podman, Ok(a), Ok(b)) if a == b => {}
            (Oracle::Tree(want), Ok(a), _) if *a == expected(want) => {}
            (Oracle::Refused(msg), Err(e), _) if e.contains(msg) => {}
            _ => failures.push(format!(
                "{name}:\n  layerfs: {ours:#?}\n  podman: {theirs:#?}\n  expected: {}",
                match oracle {
                    Oracle::Podman => "the same tree".to_string(),
                    Oracle::Tree(w) => format!("{:#?}", expected(w)),
                    Oracle::Refused(m) => format!("layerfs refusing with {m:?}"),
                }
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The reproduction from the issue: `umoci repack` after a directory was replaced by a file
/// writes the file and then a whiteout under it. layerfs, podman and umoci itself must agree.
#[test]
fn umoci_repack_of_dir_replaced_by_file() {
    common::require_root();
    let tmp = tempfile::Builder::new()
        .prefix("quirks-umoci")
        .tempdir_in(test_tmp())
        .expect("tempdir");
    let t = tmp.path();
    let umoci = |args: &[&str]| {
        let o = Command::new("umoci")
            .args(args)
            .current_dir(t)
            .output()
            .expect("umoci (scripts/install-deps)");
        assert!(o.status.success(), "umoci {args:?}: {o:?}");
    };
    umoci(&["init", "--layout", "oci"]);
    umoci(&["new", "--image", "oci:1"]);
    umoci(&["unpack", "--image", "oci:1", "b1"]);
    std::fs::create_dir_all(t.join("b1/rootfs/srv/data/dir-to-file")).expect("mkdir");
    std::fs::write(t.join("b1/rootfs/srv/data/dir-to-file/x.txt"), "x").expect("write");
    std::fs::write(t.join("b1/rootfs/srv/data/keep"), "keep").expect("write");
    umoci(&["repack", "--image", "oci:1", "b1"]);
    umoci(&["unpack", "--image", "oci:1", "b2"]);
    std::fs::remove_dir_all(t.join("b2/rootfs/srv/data/dir-to-file")).expect("rm");
    std::fs::write(t.join("b2/rootfs/srv/data/dir-to-file"), "file").expect("write");
    umoci(&["repack", "--image", "oci:1", "b2"]);
    umoci(&["unpack", "--image", "oci:1", "b3"]);
    let ours = layerfs_view(&t.join("lfs"), &t.join("oci"), "umoci").expect("layerfs load");
    let pm = Podman::new(&t.join("podman"));
    let theirs = pm.view(&t.join("oci")).expect("podman pull");
    // umoci's rootfs keeps the times and modes umoci gives; compare names and contents.
    let umoci_view = lines(&t.join("b3/rootfs"));
    let strip = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|l| l.rsplit_once(' ').map_or(l.as_str(), |x| x.0).to_string())
            .collect()
    };
    assert_eq!(ours, theirs, "layerfs vs podman");
    assert_eq!(strip(&ours), strip(&umoci_view), "layerfs vs umoci unpack");
    assert!(
        ours.contains(&"srv/data/dir-to-file f:file 644".to_string()),
        "{ours:#?}"
    );
}

/// The umoci quirk loads the same in every layer compression (plain, gzip, zstd).
#[test]
fn whiteout_under_file_in_every_compression() {
    common::require_root();
    let tmp = tempfile::Builder::new()
        .prefix("quirks-comp")
        .tempdir_in(test_tmp())
        .expect("tempdir");
    let mut quirk = Layer::new();
    quirk.file("d", b"now a file", 0o644).whiteout("d", "x");
    let quirk = quirk.bytes();
    let want = expected(&["d f:now a file 644"]);
    type Compress = fn(&[u8]) -> Vec<u8>;
    let pack: [(&str, Compress); 3] = [
        ("plain", |b| b.to_vec()),
        ("gzip", store_common::gzip),
        ("zstd", store_common::zstd),
    ];
    for (name, compress) in pack {
        let dir = tmp.path().join(name);
        let layers = [base(), quirk.clone()];
        let img = TestImage::new(layers.iter().map(|t| (compress(t), t.clone())).collect());
        let layout = dir.join("layout");
        let ann = serde_json::json!({"org.opencontainers.image.ref.name": "1"});
        write_dir(&layout, &oci_files(&[(&img, ann)]));
        let got = layerfs_view(&dir, &layout, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }
}
