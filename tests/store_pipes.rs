//! `load` and `save` through pipes, as a shell user writes them: archives made by skopeo
//! (docker-archive, oci-archive) and a Docker 25+ archive, plain or compressed as a whole,
//! read from `cat |`, `-i /dev/stdin`, `-i <(gzip -c x.tar)` and a fifo; `save` to standard
//! output read by skopeo; truncated and corrupt streams and a full disk give clear errors.
mod store_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use store_common::{Layer, TestImage, docker25_files, oci_files, write_dir, write_tar};

const EXE: &str = env!("CARGO_BIN_EXE_layerfs");

/// Runs a bash script with `$LF` = the binary and `$1`... = `args`.
fn sh(script: &str, root: &Path, args: &[&Path]) -> Output {
    Command::new("bash")
        .args(["-o", "pipefail", "-c", script, "_"])
        .args(args)
        .env("LF", EXE)
        .env("LAYERFS_ROOT", root)
        .output()
        .unwrap()
}

fn ok(script: &str, root: &Path, args: &[&Path]) -> String {
    let o = sh(script, root, args);
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(script: &str, root: &Path, args: &[&Path]) -> String {
    let o = sh(script, root, args);
    assert!(!o.status.success(), "{script} succeeded");
    String::from_utf8(o.stderr).unwrap()
}

fn skopeo(args: &[&str], cwd: &Path) {
    let o = Command::new("skopeo")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("skopeo not runnable: run scripts/install-deps");
    assert!(
        o.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    id: String,
    /// (what, path) of each uncompressed archive.
    archives: Vec<(&'static str, PathBuf)>,
}

/// One two-layer image as an OCI layout made here, converted by skopeo to a (legacy)
/// docker-archive and an oci-archive, plus the Docker 25+ layout in a tar.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let l1 = Layer::new()
        .dir("etc", 0o755)
        .file("etc/hello", b"hello through a pipe\n", 0o644)
        .bytes();
    let l2 = Layer::new()
        .file("etc/second", &vec![7u8; 100_000], 0o600)
        .bytes();
    let img = TestImage::new(vec![(l1.clone(), l1), (l2.clone(), l2)]);
    let ann = serde_json::json!({"org.opencontainers.image.ref.name": "1"});
    write_dir(&dir.join("layout"), &oci_files(&[(&img, ann)]));
    skopeo(
        &[
            "copy",
            "oci:layout:1",
            "docker-archive:legacy.tar:pipes/img:1",
        ],
        &dir,
    );
    skopeo(&["copy", "oci:layout:1", "oci-archive:oci.tar:1"], &dir);
    write_tar(
        &dir.join("d25.tar"),
        &docker25_files(&img, "docker.io/pipes/img:1"),
    );
    let archives = vec![
        ("docker-archive (skopeo, legacy)", dir.join("legacy.tar")),
        ("oci-archive (skopeo)", dir.join("oci.tar")),
        ("docker-archive (Docker 25+)", dir.join("d25.tar")),
    ];
    Fixture {
        id: img.id(),
        _tmp: tmp,
        dir,
        archives,
    }
}

/// The full ID of the one image in the store at `root`.
fn only_image(root: &Path) -> String {
    let ids = ok("$LF images --json", root, &[]);
    let v: serde_json::Value = serde_json::from_str(&ids).unwrap();
    let rows = v.as_array().unwrap();
    let all: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["Id"].as_str().unwrap()).collect();
    assert_eq!(all.len(), 1, "{ids}");
    all.into_iter().next().unwrap().to_owned()
}

#[test]
fn every_format_and_compression_loads_from_a_pipe() {
    let f = fixture();
    // How the archive reaches `load`; $1 = the archive, compressed with $COMP (cat = none).
    let ways = [
        ("cat | load", "$COMP < \"$1\" | $LF load"),
        ("load -i -", "$COMP < \"$1\" | $LF load -i -"),
        (
            "load -i /dev/stdin",
            "$COMP < \"$1\" | $LF load -i /dev/stdin",
        ),
        ("load -i <(...)", "$LF load -i <($COMP < \"$1\")"),
        (
            "load -i FIFO",
            "d=$(mktemp -d); mkfifo \"$d/f\"; ($COMP < \"$1\" > \"$d/f\" &); \
             $LF load -i \"$d/f\"; r=$?; rm -r \"$d\"; exit $r",
        ),
    ];
    let comps = [("none", "cat"), ("gzip", "gzip -c"), ("zstd", "zstd -q -c")];
    let mut n = 0;
    for (what, archive) in &f.archives {
        for (cname, comp) in comps {
            for (way, script) in ways {
                let root = f.dir.join(format!("root{n}"));
                n += 1;
                let script = format!("COMP='{comp}'; {script}");
                let out = ok(&script, &root, &[archive]);
                assert!(
                    out.contains("Loaded image"),
                    "{what}, {cname}, {way}: {out}"
                );
                assert_eq!(only_image(&root), f.id, "{what}, {cname}, {way}");
                // The layers are there: the image mounts nothing here, but history lists both.
                let hist = ok(
                    "$LF history -q --no-trunc \"$1\"",
                    &root,
                    &[Path::new(&f.id)],
                );
                assert!(!hist.is_empty(), "{what}, {cname}, {way}");
            }
        }
    }
    // A regular file on standard input is read in place (no copy needed) and loads too.
    let root = f.dir.join("root-redirect");
    ok("$LF load < \"$1\"", &root, &[&f.archives[0].1]);
    assert_eq!(only_image(&root), f.id);
    // Nothing is left in the store's tmp/ after any of these loads.
    for i in 0..n {
        let tmp = f.dir.join(format!("root{i}/tmp"));
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().collect();
        assert!(left.is_empty(), "{}: {left:?}", tmp.display());
    }
}

#[test]
fn bad_streams_fail_clearly_and_publish_nothing() {
    let f = fixture();
    let archive = &f.archives[1].1;
    let size = std::fs::metadata(archive).unwrap().len();
    let root = f.dir.join("root");
    // Truncated in the middle of a blob.
    let e = fails(
        &format!("head -c {} \"$1\" | $LF load", size / 2),
        &root,
        &[archive],
    );
    assert!(e.contains("<stdin>") && e.contains("truncated"), "{e}");
    // A gzip stream cut short.
    let e = fails(
        "gzip -c < \"$1\" > \"$1.gz\"; head -c $(( $(stat -c %s \"$1.gz\") / 2 )) \"$1.gz\" | $LF load",
        &root,
        &[archive],
    );
    assert!(e.contains("<stdin>") && e.contains("gzip"), "{e}");
    // Not an archive at all.
    let e = fails("echo 'hello world' | $LF load", &root, &[]);
    assert!(
        e.contains("<stdin>") && e.contains("not a docker archive"),
        "{e}"
    );
    let e = fails("$LF load < /dev/null", &root, &[]);
    assert!(e.contains("<stdin>"), "{e}");
    let imgs = ok("$LF images -q", &root, &[]);
    assert_eq!(imgs, "", "a failed load published an image");
}

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);
impl Tmpfs {
    fn new(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(dir.to_path_buf())
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_while_spooling_says_so() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // 3 MB that gzip hardly shrinks: the spool does not fit in a 1 MiB store.
    let mut data = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while data.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let l = Layer::new().file("big", &data, 0o644).bytes();
    let img = TestImage::new(vec![(l.clone(), l)]);
    let archive = tmp.path().join("big.tar");
    write_tar(&archive, &docker25_files(&img, "big:1"));
    let root = tmp.path().join("root");
    let _fs = Tmpfs::new(&root, "1m");
    let e = fails("gzip -1 -c < \"$1\" | $LF load", &root, &[&archive]);
    assert!(e.contains("no space left"), "{e}");
    assert!(e.contains(&root.join("tmp").display().to_string()), "{e}");
    assert!(e.contains("-i FILE"), "{e}");
    let left: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "spool left behind: {left:?}");
}

#[test]
fn save_streams_to_stdout_for_skopeo_and_load() {
    let f = fixture();
    let root = f.dir.join("root");
    ok("$LF load -i \"$1\"", &root, &[&f.archives[2].1]);
    // Through a pipe into a file skopeo reads (Debian's skopeo 1.9 cannot read a
    // docker-archive from a pipe, not even one it wrote itself: it reopens the path).
    let v = ok(
        "$LF save pipes/img:1 | cat > \"$1\" && skopeo inspect docker-archive:\"$1\"",
        &root,
        &[&f.dir.join("piped.tar")],
    );
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{v}");
    let v = ok(
        "$LF save --format oci-archive pipes/img:1 > \"$1\" && skopeo inspect --config oci-archive:\"$1\"",
        &root,
        &[&f.dir.join("out-oci.tar")],
    );
    let cfg: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    // `-o -`, no `-o` and `-o FILE` write the same bytes.
    let a = f.dir.join("a.tar");
    let b = f.dir.join("b.tar");
    let c = f.dir.join("c.tar");
    ok(
        "$LF save pipes/img:1 -o - > \"$1\" && $LF save pipes/img:1 > \"$2\" && $LF save pipes/img:1 -o \"$3\"",
        &root,
        &[&a, &b, &c],
    );
    let bytes = std::fs::read(&a).unwrap();
    assert!(bytes.len() > 100_000);
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    assert_eq!(bytes, std::fs::read(&c).unwrap());
    assert!(!f.dir.join("-").exists(), "-o - wrote a file named -");
    // save | load into another store: same image.
    let other = f.dir.join("other");
    let other_s = other.display().to_string();
    ok(
        &format!("$LF save pipes/img:1 | $LF --root '{other_s}' load"),
        &root,
        &[],
    );
    assert_eq!(only_image(&other), f.id);
    // A terminal is refused, and nothing is written to it.
    let tty = sh("script -qec \"$LF save pipes/img:1\" /dev/null", &root, &[]);
    let said = String::from_utf8_lossy(&tty.stdout);
    assert!(!tty.status.success(), "{said}");
    assert!(
        said.contains("terminal") && said.contains("-o FILE"),
        "{said}"
    );
    assert!(said.len() < 400, "archive bytes reached the terminal");
    // A bad name fails before anything is written.
    let o = sh("$LF save no/such:image | wc -c", &root, &[]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
    // oci-dir needs a directory.
    let e = fails("$LF save --format oci-dir pipes/img:1 | cat", &root, &[]);
    assert!(e.contains("-o DIR"), "{e}");
}
