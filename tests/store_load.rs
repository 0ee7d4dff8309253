//! `layerfs load` of every format and compression, dedup, the image commands, verification
//! failures and a kernel-overlayfs view of a loaded image.
mod store_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use store_common::*;

struct Run {
    ok: bool,
    out: String,
    err: String,
}

fn layerfs(root: &Path, args: &[&str]) -> Run {
    layerfs_env(root, args, &[])
}

fn layerfs_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .args(args)
        .env("LAYERFS_ROOT", root)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        ok: o.status.success(),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(root: &Path, args: &[&str]) -> String {
    let r = layerfs(root, args);
    assert!(r.ok, "layerfs {args:?} failed: {}{}", r.out, r.err);
    r.out
}

/// Like `ok`, with the progress lines (stderr) after stdout.
fn ok_all(root: &Path, args: &[&str]) -> String {
    let r = layerfs(root, args);
    assert!(r.ok, "layerfs {args:?} failed: {}{}", r.out, r.err);
    r.out + &r.err
}

/// Base layer: /etc/hello, /etc/gone, /var/cache/{a,b}, /secret (dir 0700 with a file).
fn base_tar() -> Vec<u8> {
    Layer::new()
        .dir("etc", 0o755)
        .file("etc/hello", b"hello", 0o644)
        .file("etc/gone", b"bye", 0o644)
        .dir("var", 0o755)
        .dir("var/cache", 0o755)
        .file("var/cache/a", b"a", 0o644)
        .file("var/cache/b", b"b", 0o644)
        .dir("secret", 0o700)
        .file("secret/key", b"k", 0o600)
        .bytes()
}

/// Top layer: whiteout etc/gone, opaque var/cache with new c, a file in /secret without
/// listing /secret (implicit parent), a hard link, an xattr on a directory.
fn top_tar() -> Vec<u8> {
    Layer::new()
        .whiteout("etc", "gone")
        .dir("var/cache", 0o755)
        .opaque("var/cache")
        .file("var/cache/c", b"c", 0o644)
        .file("secret/new", b"n", 0o600)
        .file("bin/tool", b"tool", 0o4755)
        .hardlink("bin/tool2", "bin/tool")
        .xattrs(&[("user.note", b"dir")])
        .dir("data", 0o750)
        .bytes()
}

fn image_with(compress: fn(&[u8]) -> Vec<u8>) -> TestImage {
    let (b, t) = (base_tar(), top_tar());
    TestImage::new(vec![(compress(&b), b), (compress(&t), t)])
}

fn plain(b: &[u8]) -> Vec<u8> {
    b.to_vec()
}

type Files = Vec<(String, Vec<u8>)>;

fn count(s: &str, needle: &str) -> usize {
    s.matches(needle).count()
}

#[test]
fn every_format_and_compression_stores_layers_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let (gz, zs, pl) = (image_with(gzip), image_with(zstd), image_with(plain));
    assert_eq!(gz.id(), zs.id(), "same config, same image ID");

    let oci = tmp.path().join("oci");
    write_dir(
        &oci,
        &oci_files(&[(
            &gz,
            serde_json::json!({"org.opencontainers.image.ref.name": "v1"}),
        )]),
    );
    let out = ok_all(
        &root,
        &[
            "load",
            "-i",
            oci.to_str().unwrap(),
            "--name",
            "example.com/app",
        ],
    );
    assert_eq!(count(&out, "extracted"), 2, "{out}");
    assert!(out.contains("Loaded image: example.com/app:v1"), "{out}");

    let d25 = tmp.path().join("d25.tar");
    write_tar(&d25, &docker25_files(&zs, "docker.io/library/app:zstd"));
    let out = ok_all(&root, &["load", "-i", d25.to_str().unwrap()]);
    assert_eq!(count(&out, "already present"), 2, "{out}");
    assert!(out.contains("Loaded image: app:zstd"), "{out}");

    let legacy = tmp.path().join("legacy.tar");
    write_tar(&legacy, &legacy_files(&pl, &["user/app:plain"]));
    let out = ok_all(&root, &["load", "-i", legacy.to_str().unwrap()]);
    assert_eq!(count(&out, "already present"), 2, "{out}");

    // OCI archive, itself gzip-compressed, mixed layer compression.
    let (b, t) = (base_tar(), top_tar());
    let mixed = TestImage::new(vec![(zstd(&b), b), (gzip(&t), t)]);
    let arch = tmp.path().join("oci.tar");
    write_tar(
        &arch,
        &oci_files(&[(
            &mixed,
            serde_json::json!({"org.opencontainers.image.ref.name": "localhost:5000/x:y"}),
        )]),
    );
    let gz_arch = tmp.path().join("oci.tar.gz");
    std::fs::write(&gz_arch, gzip(&std::fs::read(&arch).unwrap())).unwrap();
    let out = ok_all(&root, &["load", "-i", gz_arch.to_str().unwrap()]);
    assert_eq!(count(&out, "already present"), 2, "{out}");
    assert!(out.contains("Loaded image: localhost:5000/x:y"), "{out}");

    assert_eq!(
        std::fs::read_dir(root.join("layers")).unwrap().count(),
        2,
        "layers stored once"
    );
    let images = ok(&root, &["images"]);
    let images = images
        .split('\n')
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    for want in [
        "example.com/app v1",
        "\napp zstd",
        "user/app plain",
        "localhost:5000/x y",
    ] {
        assert!(images.contains(want), "{want:?} missing in\n{images}");
    }
    assert!(
        images.starts_with("REPOSITORY TAG IMAGE ID CREATED SIZE"),
        "{images}"
    );
    assert_eq!(
        ok(&root, &["images", "-q"]).lines().count(),
        1,
        "one image ID"
    );
    let filtered = ok(&root, &["images", "--filter", "reference=*/app"]);
    assert_eq!(filtered.lines().count(), 3, "{filtered}");
    let filtered = ok(&root, &["images", "--filter", "reference=app:z*"]);
    assert_eq!(filtered.lines().count(), 2, "{filtered}");
    let digests = ok(&root, &["images", "--digests"]);
    assert!(digests.contains(&sha256(&gz.manifest())), "{digests}");

    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&root, &["inspect", "app:zstd"])).unwrap();
    let i = &inspect[0];
    assert_eq!(i["Id"], gz.id());
    assert_eq!(i["Config"]["Cmd"][0], "sh");
    assert_eq!(i["RootFS"]["Layers"][1], sha256(&top_tar()));
    assert_eq!(i["RepoTags"].as_array().unwrap().len(), 4);
    let short = &gz.id()["sha256:".len().."sha256:".len() + 12];
    let hist = ok(&root, &["history", short]);
    let rows: Vec<&str> = hist.lines().collect();
    assert_eq!(rows.len(), 4, "{hist}");
    assert!(
        rows[1].starts_with(short) && rows[1].contains("CMD [\"sh\"]") && rows[1].contains("0B"),
        "{hist}"
    );
    assert!(
        rows[2].starts_with("<missing>") && rows[2].contains("RUN step 1"),
        "{hist}"
    );
    assert!(ok(&root, &["df"]).contains("Layers"));
}

#[test]
fn verification_failures_commit_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = image_with(gzip);
    let bad_layer = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut img = image_with(gzip);
        f(&mut img.layers[1].0);
        img
    };
    // (name, layout files, error text, env)
    let mut cases: Vec<(&str, Files, &str)> = Vec::new();
    let mut tampered = oci_files(&[(&good, serde_json::json!({}))]);
    let victim = format!("blobs/sha256/{}", &sha256(&good.layers[1].0)[7..]);
    for (p, b) in tampered.iter_mut() {
        if *p == victim {
            let n = b.len();
            b[n / 2] ^= 0xff;
        }
    }
    cases.push(("corrupt blob (digest)", tampered, "digest mismatch"));
    let trunc = bad_layer(&|b| b.truncate(b.len() - 10));
    cases.push((
        "truncated gzip",
        oci_files(&[(&trunc, serde_json::json!({}))]),
        "layer 2",
    ));
    let garbage = bad_layer(&|b| b.extend_from_slice(b"GARBAGE!"));
    cases.push((
        "trailing garbage",
        oci_files(&[(&garbage, serde_json::json!({}))]),
        "layer 2",
    ));
    let xz = bad_layer(&|b| *b = vec![0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2]);
    cases.push((
        "unknown format",
        oci_files(&[(&xz, serde_json::json!({}))]),
        "xz-compressed",
    ));
    let mut wrong_diff = image_with(gzip);
    let other = Layer::new().file("x", b"y", 0o644).bytes();
    wrong_diff.layers[1].1 = other; // config now promises a different tar
    let wrong_diff = TestImage::new(wrong_diff.layers);
    cases.push((
        "diff_id mismatch",
        oci_files(&[(&wrong_diff, serde_json::json!({}))]),
        "diff_id",
    ));
    let bomb_tar = Layer::new()
        .file("zeros", &vec![0u8; 8 << 20], 0o644)
        .bytes();
    let bomb = TestImage::new(vec![(gzip(&bomb_tar), bomb_tar)]);
    cases.push((
        "gzip bomb",
        oci_files(&[(&bomb, serde_json::json!({}))]),
        "decompression bomb",
    ));

    for (name, files, want) in cases {
        let root = tmp.path().join(format!("root-{}", name.replace(' ', "_")));
        let dir = tmp.path().join(format!("img-{}", name.replace(' ', "_")));
        write_dir(&dir, &files);
        let r = layerfs_env(
            &root,
            &["load", "-i", dir.to_str().unwrap(), "--name", "t"],
            &[("LAYERFS_MAX_LAYER_BYTES", "1000000")],
        );
        assert!(!r.ok, "{name}: load succeeded");
        assert!(r.err.contains(want), "{name}: {}", r.err);
        assert!(
            r.err.contains("blob sha256:") || r.err.contains("image "),
            "{name}: error names no blob: {}",
            r.err
        );
        for sub in ["layers", "images", "tmp"] {
            // A store always has a refs.json (`{}` when it has no names).
            let left: Vec<PathBuf> = std::fs::read_dir(root.join(sub))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| !p.ends_with("images/refs.json"))
                .collect();
            assert!(left.is_empty(), "{name}: {sub}/ not empty: {left:?}");
        }
        assert_eq!(ok(&root, &["images", "-q"]), "", "{name}");
    }
}

#[test]
fn tag_rmi_prune_and_container_pins() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let a = image_with(gzip);
    let extra = Layer::new().file("only-b", b"b", 0o644).bytes();
    let b = TestImage::new(vec![(base_tar(), base_tar()), (extra.clone(), extra)]);
    let dir = tmp.path().join("two");
    write_dir(
        &dir,
        &oci_files(&[
            (
                &a,
                serde_json::json!({"org.opencontainers.image.ref.name": "a"}),
            ),
            (
                &b,
                serde_json::json!({"org.opencontainers.image.ref.name": "b"}),
            ),
        ]),
    );
    let out = ok_all(&root, &["load", "-i", dir.to_str().unwrap(), "--name", "r"]);
    assert_eq!(
        count(&out, "already present"),
        1,
        "shared base layer: {out}"
    );
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 3);

    ok(&root, &["tag", "r:a", "r:a2"]);
    let r = layerfs(&root, &["rmi", &a.id()]);
    assert!(
        !r.ok && r.err.contains("referenced by 2 names"),
        "{}",
        r.err
    );
    let out = ok(&root, &["rmi", "r:a2"]);
    assert!(
        out.contains("Untagged: r:a2") && !out.contains("Deleted"),
        "{out}"
    );

    // A container pins image a: rmi refuses, -f only untags.
    let c = root.join("containers/c1");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(
        c.join("meta.json"),
        serde_json::to_vec(&serde_json::json!({"image": a.id()})).unwrap(),
    )
    .unwrap();
    let r = layerfs(&root, &["rmi", "r:a"]);
    assert!(!r.ok && r.err.contains("used by a container"), "{}", r.err);
    ok(&root, &["rmi", "-f", "r:a"]);
    assert_eq!(
        ok(&root, &["images", "--filter", "dangling=true", "-q"]).trim(),
        &a.id()[7..19]
    );
    // Like docker, `prune -a` asks first: a script without -f (stdin at its end) removes
    // nothing; "n" neither; "y" goes ahead.
    let r = layerfs(&root, &["prune", "-a"]);
    assert!(r.ok && r.out.is_empty(), "{}{}", r.out, r.err);
    assert!(
        r.err.contains("[y/N]") && r.err.contains("Nothing removed"),
        "{}",
        r.err
    );
    let answer = |text: &str| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_layerfs"));
        c.args(["prune", "-a"])
            .env("LAYERFS_ROOT", &root)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    };
    assert_eq!(answer("n\n"), "");
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 3);
    let out = answer("y\n");
    assert!(out.contains(&b.id()) && !out.contains(&a.id()), "{out}");
    assert_eq!(
        std::fs::read_dir(root.join("layers")).unwrap().count(),
        2,
        "b's own layer removed, a's kept"
    );
    std::fs::remove_dir_all(&c).unwrap();
    let out = ok(&root, &["prune"]);
    assert!(
        out.contains("Deleted: ") && out.contains("Total reclaimed space"),
        "{out}"
    );
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Unmounts on drop, also when an assertion fails.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn kernel_overlay_and_layerfs_show_the_same_tree_of_a_loaded_image() {
    if !is_root() {
        eprintln!("skipped: needs root for mount -t overlay");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let img = image_with(zstd);
    let dir = tmp.path().join("oci");
    write_dir(
        &dir,
        &oci_files(&[(
            &img,
            serde_json::json!({"org.opencontainers.image.ref.name": "t"}),
        )]),
    );
    ok(
        &root,
        &["load", "-i", dir.to_str().unwrap(), "--name", "img"],
    );
    let lowers = layerfs::store::image_lowerdirs(&root, "img:t").unwrap();
    assert_eq!(lowers.len(), 2);
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let opts = format!(
        "lowerdir={}",
        lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    let _guard = Mounted(mnt.clone());
    let got: Vec<String> = tree(&mnt)
        .into_iter()
        .map(|(p, d)| format!("{p} {d}"))
        .collect();
    let want = [
        "bin d 755 0:0",
        "bin/tool f:tool 4755 0:0",
        "bin/tool2 f:tool 4755 0:0",
        "data d 750 0:0",
        "etc d 755 0:0",
        "etc/hello f:hello 644 0:0",
        "secret d 700 0:0",
        "secret/key f:k 600 0:0",
        "secret/new f:n 600 0:0",
        "var d 755 0:0",
        "var/cache d 755 0:0",
        "var/cache/c f:c 644 0:0",
    ];
    assert_eq!(got, want);
    assert_eq!(
        getxattr(&mnt.join("data"), "user.note").as_deref(),
        Some(&b"dir"[..])
    );
    // The implicit /secret of the top layer kept the lower layer's attributes and time.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(mnt.join("secret")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o700, 1_600_000_000));

    // The driver shows the same tree: `layerfs mount --read-only IMAGE`.
    let mnt2 = tmp.path().join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    ok(
        &root,
        &["mount", "--read-only", "img:t", mnt2.to_str().unwrap()],
    );
    let _guard2 = Mounted(mnt2.clone());
    let via_layerfs: Vec<String> = tree(&mnt2)
        .into_iter()
        .map(|(p, d)| format!("{p} {d}"))
        .collect();
    assert_eq!(via_layerfs, got, "layerfs and kernel overlayfs differ");
    assert_eq!(
        getxattr(&mnt2.join("data"), "user.note").as_deref(),
        Some(&b"dir"[..])
    );
    let m2 = std::fs::metadata(mnt2.join("secret")).unwrap();
    assert_eq!((m2.mode() & 0o7777, m2.mtime()), (0o700, 1_600_000_000));
    assert!(
        std::fs::write(mnt2.join("etc/new"), b"x").is_err(),
        "read-only mount"
    );
    ok(&root, &["umount", mnt2.to_str().unwrap()]);
}
