//! A mistreated store: one damaged record never stops the others, nothing is deleted because
//! a record could not be read, errors say what to do, and `layerfs fsck [--repair]` finds and
//! fixes each kind of damage (one test per kind).
mod store_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use store_common::{Layer, TestImage, gzip, oci_files, write_dir};

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Env {
    /// A store with t/a:1 (layers base, a) and t/b:1 (layers base, b).
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let env = Env { _tmp: tmp, root };
        let mut base = Layer::new();
        base.dir("etc", 0o755).file("etc/base", b"base\n", 0o644);
        let base = base.bytes();
        for (name, file) in [("a", "etc/a"), ("b", "etc/b")] {
            let mut l = Layer::new();
            l.file(file, name.as_bytes(), 0o644)
                .dir("data", 0o755)
                .file("data/x", b"xxxx", 0o600);
            let top = l.bytes();
            let img = TestImage::new(vec![(gzip(&base), base.clone()), (gzip(&top), top)]);
            let dir = env.root.parent().unwrap().join(format!("layout-{name}"));
            let ann = serde_json::json!({"org.opencontainers.image.ref.name": "1"});
            write_dir(&dir, &oci_files(&[(&img, ann)]));
            let repo = format!("t/{name}");
            env.ok(&["load", "-q", "-i", dir.to_str().unwrap(), "--name", &repo]);
        }
        env
    }

    fn run(&self, args: &[&str]) -> Out {
        let o = Command::new(env!("CARGO_BIN_EXE_layerfs"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .output()
            .unwrap();
        Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.ok, "layerfs {args:?}: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.ok, "layerfs {args:?} succeeded: {}", o.stdout);
        o.stderr
    }

    fn id(&self, name: &str) -> String {
        let o = self.ok(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        v["Id"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    }

    /// Chain IDs (hex) of an image, bottom first.
    fn layers(&self, name: &str) -> Vec<String> {
        let rec = self.root.join(format!("images/{}.json", self.id(name)));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(rec).unwrap()).unwrap();
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap()[7..].to_string())
            .collect()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p)
    }

    /// `images` rows as `repo:tag`.
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ok(&["images"])
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{}:{}", f[0], f[1])
            })
            .collect();
        v.sort();
        v
    }

    fn fsck_clean(&self) {
        let out = self.ok(&["fsck"]);
        assert!(out.contains("the store is clean"), "{out}");
    }

    /// `fsck` finds the damage, `fsck --repair` repairs it, and `fsck` is clean again.
    fn repair(&self, want: &str) -> String {
        let found = self.run(&["fsck"]);
        assert!(!found.ok, "fsck found nothing: {}", found.stdout);
        assert!(found.stdout.contains(want), "{}", found.stdout);
        assert!(found.stdout.contains("--repair would"), "{}", found.stdout);
        let fixed = self.ok(&["fsck", "--repair"]);
        assert!(fixed.contains("repaired:"), "{fixed}");
        self.fsck_clean();
        fixed
    }
}

#[test]
fn a_fresh_store_is_clean() {
    let env = Env::new();
    env.fsck_clean();
    assert_eq!(env.names(), ["t/a:1", "t/b:1"]);
}

#[test]
fn truncated_image_record() {
    let env = Env::new();
    let a = env.id("t/a:1");
    let rec = env.path(&format!("images/{a}.json"));
    let bytes = std::fs::read(&rec).unwrap();
    std::fs::write(&rec, &bytes[..bytes.len() / 2]).unwrap();
    // Listing shows the rest and names the damaged record.
    let o = env.run(&["images"]);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.contains("t/b") && !o.stdout.contains("t/a"),
        "{}",
        o.stdout
    );
    assert!(
        o.stderr.contains(&format!("{a}.json")) && o.stderr.contains("fsck"),
        "{}",
        o.stderr
    );
    // rmi of another image works and deletes no layer (a's are unknown while unreadable).
    let layers_before = std::fs::read_dir(env.path("layers")).unwrap().count();
    let out = env.ok(&["rmi", "t/b:1"]);
    assert!(
        out.contains("Untagged: t/b:1") && out.contains("kept"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(env.path("layers")).unwrap().count(),
        layers_before
    );
    // prune -a never deletes the image whose record it cannot read.
    env.ok(&["prune", "-a"]);
    assert!(rec.exists());
    let fixed = env.repair("unreadable");
    assert!(fixed.contains("rebuilt from its config blob"), "{fixed}");
    assert!(
        fixed.contains("no image uses"),
        "b's layer is an orphan now: {fixed}"
    );
    assert_eq!(env.names(), ["t/a:1"]);
    env.ok(&[
        "save",
        "t/a:1",
        "-o",
        env.path("../a.tar").to_str().unwrap(),
    ]);
}

#[test]
fn corrupt_refs_json() {
    let env = Env::new();
    std::fs::write(env.path("images/refs.json"), b"{\"docker.io/t/a:1\": ").unwrap();
    let e = env.fails(&["tag", "t/a:1", "t/a:2"]);
    assert!(
        e.contains("refs.json") && e.contains("fsck --repair"),
        "{e}"
    );
    let e = env.fails(&["prune"]);
    assert!(e.contains("refs.json"), "{e}");
    assert_eq!(
        env.names(),
        ["t/a:1", "t/b:1"],
        "names from the image records"
    );
    env.repair("refs.json");
    assert_eq!(env.names(), ["t/a:1", "t/b:1"]);
    env.ok(&["tag", "t/a:1", "t/a:2"]);
}

#[test]
fn deleted_refs_json_never_makes_images_dangling() {
    let env = Env::new();
    std::fs::remove_file(env.path("images/refs.json")).unwrap();
    let e = env.fails(&["prune"]);
    assert!(e.contains("missing") && e.contains("fsck --repair"), "{e}");
    let records = std::fs::read_dir(env.path("images"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            let n = n.to_string_lossy();
            n.ends_with(".json") && n.len() == 69
        })
        .count();
    assert_eq!(records, 2);
    assert_eq!(env.names(), ["t/a:1", "t/b:1"]);
    env.repair("missing");
    let out = env.ok(&["prune"]);
    assert!(!out.contains("Deleted"), "{out}");
    assert_eq!(env.names(), ["t/a:1", "t/b:1"]);
}

#[test]
fn deleted_layer_directory() {
    let env = Env::new();
    let top = env.layers("t/a:1")[1].clone();
    std::fs::remove_dir_all(env.path(&format!("layers/{top}/diff"))).unwrap();
    let mnt = env.path("../mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let e = env.fails(&["mount", "--read-only", "t/a:1", mnt.to_str().unwrap()]);
    assert!(
        e.contains("missing from the store") && e.contains(&top),
        "{e}"
    );
    let fixed = env.repair("cannot be read");
    assert!(fixed.contains("re-extracted"), "{fixed}");
    let f = env.path(&format!("layers/{top}/diff/data/x"));
    assert_eq!(std::fs::read(f).unwrap(), b"xxxx");
}

#[test]
fn damaged_layer_tree() {
    let env = Env::new();
    let top = env.layers("t/b:1")[1].clone();
    let f = env.path(&format!("layers/{top}/diff/data/x"));
    std::fs::remove_file(&f).unwrap();
    env.repair("entries");
    assert_eq!(std::fs::read(&f).unwrap(), b"xxxx");
    let md = std::fs::metadata(&f).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(md.mode() & 0o7777, 0o600);
}

#[test]
fn damaged_kept_blob_and_layer_without_blob() {
    let env = Env::new();
    let top = env.layers("t/a:1")[1].clone();
    let blob = env.path(&format!("layers/{top}/blob"));
    let mut b = std::fs::read(&blob).unwrap();
    b[20] ^= 0xff;
    std::fs::write(&blob, b).unwrap();
    env.repair("kept blob");
    assert!(!blob.exists());
    // The image still mounts; save says what to do; the layer, now without a blob, cannot be
    // re-extracted.
    let e = env.fails(&[
        "save",
        "t/a:1",
        "-o",
        env.path("../a.tar").to_str().unwrap(),
    ]);
    assert!(e.contains("load the image again"), "{e}");
    std::fs::remove_file(env.path(&format!("layers/{top}/diff/etc/a"))).unwrap();
    let o = env.run(&["fsck", "--repair"]);
    assert!(!o.ok && o.stdout.contains("needs you"), "{}", o.stdout);
}

#[test]
fn corrupt_and_stray_blobs_and_half_layers() {
    let env = Env::new();
    let a = env.id("t/a:1");
    // A manifest blob with other bytes, a layer directory without a record, a stray file.
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path(&format!("images/{a}.json"))).unwrap())
            .unwrap();
    let m = rec["manifest"].as_str().unwrap()[7..].to_string();
    std::fs::write(env.path(&format!("blobs/sha256/{m}")), b"{}").unwrap();
    std::fs::create_dir_all(env.path(&format!("layers/{}/diff", "e".repeat(64)))).unwrap();
    std::fs::write(env.path("layers/junk"), b"x").unwrap();
    let fixed = env.repair("hash to");
    assert!(
        fixed.contains("manifest blob") && fixed.contains("unreadable record"),
        "{fixed}"
    );
    assert!(!env.path("layers/junk").exists());
    assert_eq!(env.names(), ["t/a:1", "t/b:1"]);
    env.ok(&[
        "save",
        "t/a:1",
        "-o",
        env.path("../a.tar").to_str().unwrap(),
    ]);
}

#[test]
fn images_dir_replaced_by_a_file() {
    let env = Env::new();
    std::fs::rename(env.path("images"), env.path("../images.saved")).unwrap();
    std::fs::write(env.path("images"), b"oops").unwrap();
    let e = env.fails(&["images"]);
    assert!(
        e.contains("is not a directory") && e.contains("move that file away"),
        "{e}"
    );
    assert!(!e.contains("File exists"), "{e}");
}

/// A read-only bind mount of the store, unmounted on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn new(src: &Path, at: &Path) -> ReadOnly {
        std::fs::create_dir_all(at).unwrap();
        for args in [
            vec!["--bind", src.to_str().unwrap(), at.to_str().unwrap()],
            vec!["-o", "remount,bind,ro", at.to_str().unwrap()],
        ] {
            let o = Command::new("mount").args(&args).output().unwrap();
            assert!(o.status.success(), "mount {args:?}: {o:?}");
        }
        ReadOnly(at.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_store_can_be_listed() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("needs root for a read-only bind mount: skipped");
        return;
    }
    let env = Env::new();
    let ro = ReadOnly::new(&env.root, &env.path("../ro"));
    let o = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .arg("--root")
        .arg(&ro.0)
        .args(["images"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("t/a") && out.contains("t/b"), "{out}");
    let o = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .arg("--root")
        .arg(&ro.0)
        .args(["rmi", "t/a:1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("read-only"), "{err}");
}

#[test]
fn same_size_change_needs_deep() {
    let env = Env::new();
    env.ok(&["fsck", "--deep"]);
    let top = env.layers("t/a:1")[1].clone();
    let f = env.path(&format!("layers/{top}/diff/data/x"));
    // Same size and mtime: the summary check cannot see it.
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::fs::write(&f, b"yyyy").unwrap();
    let file = std::fs::File::options().write(true).open(&f).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    env.fsck_clean();
    let o = env.run(&["fsck", "--deep"]);
    assert!(
        !o.ok && o.stdout.contains("/data/x: contents differ"),
        "{}",
        o.stdout
    );
    let fixed = env.ok(&["fsck", "--deep", "--repair"]);
    assert!(fixed.contains("re-extracted"), "{fixed}");
    assert_eq!(std::fs::read(&f).unwrap(), b"xxxx");
    let o = env.ok(&["fsck", "--deep"]);
    assert!(o.contains("the store is clean"), "{o}");
    // A changed mode is found too.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = env.run(&["fsck", "--deep"]);
    assert!(!o.ok && o.stdout.contains("mode"), "{}", o.stdout);
}

#[test]
fn damaged_container_record() {
    let env = Env::new();
    let cid = env
        .ok(&["create", "t/a:1", "--name", "c1"])
        .trim()
        .to_string();
    env.fsck_clean();
    let meta = env.path(&format!("containers/{cid}/meta.json"));
    std::fs::write(&meta, b"{\"image\": ").unwrap();
    let dir = env.path(&format!("containers/{cid}"));
    let o = env.run(&["fsck"]);
    let shown = dir.display().to_string();
    assert!(
        !o.ok && o.stdout.contains("unreadable record") && o.stdout.contains(&shown),
        "{}",
        o.stdout
    );
    // Which image it pins is unknown: rmi deletes nothing and says what to do.
    let e = env.fails(&["rmi", "t/b:1"]);
    assert!(
        e.contains("corrupt container record") && e.contains(&shown),
        "{e}"
    );
    assert_eq!(env.names(), ["t/a:1", "t/b:1"]);
    // The remedy works.
    std::fs::remove_dir_all(&dir).unwrap();
    env.fsck_clean();
    env.ok(&["rmi", "t/b:1"]);
}
