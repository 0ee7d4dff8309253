//! Two loads at once sharing layers; a load killed with SIGKILL leaves nothing behind.
mod store_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use store_common::*;

fn big_layer(files: usize, each: usize) -> Vec<u8> {
    let mut l = Layer::new();
    let data = vec![0x5au8; each];
    for i in 0..files {
        l.file(&format!("big/f{i}"), &data, 0o644);
    }
    l.bytes()
}

fn load_cmd(root: &Path, src: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_layerfs"));
    c.args(["load", "-i", src.to_str().unwrap()])
        .env("LAYERFS_ROOT", root);
    c
}

fn entries(p: &Path) -> usize {
    std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
}

#[test]
fn concurrent_loads_sharing_layers_both_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let base = big_layer(40, 1 << 20);
    let mut dirs = Vec::new();
    for name in ["one", "two"] {
        let top = Layer::new().file(name, name.as_bytes(), 0o644).bytes();
        let img = TestImage::new(vec![(zstd(&base), base.clone()), (gzip(&top), top)]);
        let dir = tmp.path().join(name);
        let ann = serde_json::json!({"io.containerd.image.name": format!("c/{name}:latest")});
        write_dir(&dir, &oci_files(&[(&img, ann)]));
        dirs.push(dir);
    }
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            load_cmd(&root, d)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(entries(&root.join("layers")), 3, "shared base stored once");
    // Two image records, refs.json and refs.lock.
    assert_eq!(entries(&root.join("images")), 4);
    let out = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .args(["images", "-q"])
        .env("LAYERFS_ROOT", &root)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert_eq!(entries(&root.join("tmp")), 0);
}

#[test]
fn killed_load_leaves_nothing_and_is_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let base = big_layer(100, 4 << 20);
    let img = TestImage::new(vec![(zstd(&base), base)]);
    let dir = tmp.path().join("img");
    write_dir(
        &dir,
        &oci_files(&[(&img, serde_json::json!({"io.containerd.image.name": "k:1"}))]),
    );
    // The kill must land while the layer is being extracted. On a busy machine this test's
    // poll may not get the CPU inside that window and the load finishes first: then the run
    // tells nothing, and is tried again on a fresh store (a few times at most).
    let root = (0..5)
        .find_map(|attempt| {
            kill_while_extracting(&tmp.path().join(format!("root{attempt}")), &dir, &img)
        })
        .expect("in 5 attempts, every load finished before it could be killed");
    assert!(
        entries(&root.join("tmp")) > 0,
        "staging left by the killed load"
    );
    assert_eq!(
        entries(&root.join("layers")),
        0,
        "no partial layer published"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .args(["images", "-q"])
        .env("LAYERFS_ROOT", &root)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(
        entries(&root.join("tmp")),
        0,
        "next command swept the staging area"
    );
}

/// Starts a load into `root` and SIGKILLs it once it is extracting into staging; `None` when
/// the load finished first.
fn kill_while_extracting(root: &Path, dir: &Path, img: &TestImage) -> Option<PathBuf> {
    // The chain ID before the load starts: hashing 400 MiB here takes about as long as the
    // whole load (computed after the spawn, the first poll often came after the load ended).
    let chain = img_chain(img);
    let mut child = load_cmd(root, dir).stdout(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    let staged = |root: &Path| {
        std::fs::read_dir(root.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_dir(e.path().join(&chain[7..]).join("diff/big"))
                    .is_ok_and(|mut r| r.next().is_some())
            })
    };
    while !staged(root) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "load never started extracting"
        );
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "load failed: {st}");
            eprintln!("load finished ({st}) before it could be killed; trying again");
            return None;
        }
        std::thread::yield_now();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    Some(root.to_path_buf())
}

fn img_chain(img: &TestImage) -> String {
    sha256(&img.layers[0].1)
}
