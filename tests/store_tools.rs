//! Images produced by real tools (umoci builds an OCI layout, skopeo converts it to a docker
//! archive and an OCI archive) load, and their layers stack as expected.
mod store_common;

use std::path::Path;
use std::process::Command;

fn run(cmd: &str, args: &[&str], cwd: &Path) {
    let o = Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{cmd} not runnable ({e}): run scripts/install-deps (apt-get install skopeo umoci)"
            )
        });
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn layerfs(root: &Path, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .args(args)
        .env("LAYERFS_ROOT", root)
        .output()
        .unwrap();
    // stdout, then the progress lines (stderr).
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "layerfs {args:?}: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn umoci_and_skopeo_images_load() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    run("umoci", &["init", "--layout", "oci"], t);
    run("umoci", &["new", "--image", "oci:base"], t);
    // Layer 1: files; layer 2: deletes one (umoci writes a .wh. whiteout), adds a symlink.
    run("umoci", &["unpack", "--image", "oci:base", "b1"], t);
    std::fs::create_dir_all(t.join("b1/rootfs/etc")).unwrap();
    std::fs::write(t.join("b1/rootfs/etc/hello"), b"hello").unwrap();
    std::fs::write(t.join("b1/rootfs/etc/gone"), b"gone").unwrap();
    run("umoci", &["repack", "--image", "oci:base", "b1"], t);
    run("umoci", &["unpack", "--image", "oci:base", "b2"], t);
    std::fs::remove_file(t.join("b2/rootfs/etc/gone")).unwrap();
    std::os::unix::fs::symlink("/etc/hello", t.join("b2/rootfs/link")).unwrap();
    run("umoci", &["repack", "--image", "oci:base", "b2"], t);
    run(
        "skopeo",
        &["copy", "oci:oci:base", "docker-archive:d.tar:myrepo/base:1"],
        t,
    );
    run(
        "skopeo",
        &["copy", "oci:oci:base", "oci-archive:o.tar:base"],
        t,
    );

    let root = t.join("root");
    let out = layerfs(
        &root,
        &[
            "load",
            "-i",
            t.join("oci").to_str().unwrap(),
            "--name",
            "umoci/img",
        ],
    );
    assert!(out.contains("Loaded image: umoci/img:base"), "{out}");
    assert_eq!(out.matches("extracted").count(), 2, "{out}");
    let out = layerfs(&root, &["load", "-i", t.join("d.tar").to_str().unwrap()]);
    assert!(out.contains("Loaded image: myrepo/base:1"), "{out}");
    assert_eq!(out.matches("already present").count(), 2, "{out}");
    let out = layerfs(
        &root,
        &[
            "load",
            "-i",
            t.join("o.tar").to_str().unwrap(),
            "--name",
            "x",
        ],
    );
    assert_eq!(out.matches("already present").count(), 2, "{out}");

    let lowers = layerfs::store::image_lowerdirs(&root, "myrepo/base:1").unwrap();
    assert_eq!(lowers.len(), 2);
    let top = store_common::tree(&lowers[0]);
    let find = |p: &str| top.iter().find(|(q, _)| q == p).map(|(_, d)| d.clone());
    assert_eq!(
        find("etc/gone").as_deref(),
        Some("c:0 0 0:0"),
        "whiteout: {top:?}"
    );
    assert_eq!(
        find("link").as_deref(),
        Some("l:/etc/hello 777 0:0"),
        "{top:?}"
    );
    assert_eq!(
        std::fs::read(lowers[1].join("etc/hello")).unwrap(),
        b"hello"
    );
}
