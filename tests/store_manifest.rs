//! A manifest is checked against its blobs even when the store already has the layers: a
//! lying media type or digest is refused, each name keeps the manifest it was loaded with,
//! and a later load never changes what another tag saves (umoci still reads it).
mod registry_common;
mod store_common;

use std::path::Path;
use std::process::Command;

use store_common::{Layer, TestImage, gzip, oci_files, sha256, write_dir};

fn layerfs(root: &Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run layerfs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn image() -> TestImage {
    let mut l = Layer::new();
    l.dir("etc", 0o755).file("etc/hello", b"hello\n", 0o644);
    let tar = l.bytes();
    TestImage::new(vec![(gzip(&tar), tar)])
}

/// An OCI layout of `img` under ref name `tag`, its manifest passed through `edit`.
fn layout(dir: &Path, img: &TestImage, tag: &str, edit: impl Fn(&mut serde_json::Value)) {
    let mut files = oci_files(&[(
        img,
        serde_json::json!({"org.opencontainers.image.ref.name": tag}),
    )]);
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest()).unwrap();
    edit(&mut m);
    let bytes = serde_json::to_vec(&m).unwrap();
    let digest = sha256(&bytes);
    files.retain(|(p, _)| p != "index.json" && !p.ends_with(&sha256(&img.manifest())[7..]));
    files.push((format!("blobs/sha256/{}", &digest[7..]), bytes.clone()));
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    files.push(("index.json".into(), serde_json::to_vec(&index).unwrap()));
    write_dir(dir, &files);
}

fn saved_manifest(root: &Path, name: &str, out: &Path) -> serde_json::Value {
    let (ok, text) = layerfs(
        root,
        &[
            "save",
            name,
            "-o",
            out.to_str().unwrap(),
            "--format",
            "oci-dir",
        ],
    );
    assert!(ok, "save {name}: {text}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let d = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = std::fs::read(out.join("blobs/sha256").join(&d[7..])).unwrap();
    let mut m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    m["digest"] = serde_json::Value::String(d);
    m
}

fn zstd_lie(m: &mut serde_json::Value) {
    m["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into();
}

#[test]
fn lying_media_type_is_refused_when_the_layer_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let img = image();
    layout(&tmp.path().join("good"), &img, "1", |_| {});
    layout(&tmp.path().join("lie"), &img, "2", zstd_lie);
    let (ok, text) = layerfs(
        &root,
        &[
            "load",
            "-i",
            tmp.path().join("good").to_str().unwrap(),
            "--name",
            "t/a",
        ],
    );
    assert!(ok, "{text}");
    let (ok, text) = layerfs(
        &root,
        &[
            "load",
            "-i",
            tmp.path().join("lie").to_str().unwrap(),
            "--name",
            "t/a",
        ],
    );
    assert!(!ok, "the lying manifest was accepted: {text}");
    assert!(
        text.contains("media type") && text.contains("zstd") && text.contains("gzip"),
        "{text}"
    );
    let (_, images) = layerfs(&root, &["images"]);
    let tags: Vec<&str> = images
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(tags, ["1"], "{images}");
    // What `save` writes still says gzip, and umoci (which trusts media types) reads it.
    let out = tmp.path().join("saved");
    let m = saved_manifest(&root, "t/a:1", &out);
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let o = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:1", out.display()))
        .arg(tmp.path().join("bundle"))
        .output()
        .expect("umoci (scripts/install-deps)");
    assert!(
        o.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(tmp.path().join("bundle/rootfs/etc/hello")).unwrap(),
        b"hello\n"
    );
    // Into an empty store the same lie is refused too (the layer is extracted there).
    let (ok, text) = layerfs(
        &tmp.path().join("fresh"),
        &["load", "-i", tmp.path().join("lie").to_str().unwrap()],
    );
    assert!(!ok && text.contains("media type"), "{text}");
}

#[test]
fn lying_digest_for_a_stored_layer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let img = image();
    layout(&tmp.path().join("good"), &img, "1", |_| {});
    let (ok, text) = layerfs(
        &root,
        &[
            "load",
            "-i",
            tmp.path().join("good").to_str().unwrap(),
            "--name",
            "t/a",
        ],
    );
    assert!(ok, "{text}");
    // The manifest names another blob (present in the layout) for the stored layer.
    let mut other = Layer::new();
    other.file("other", b"other", 0o644);
    let other = gzip(&other.bytes());
    let od = sha256(&other);
    let dir = tmp.path().join("lie");
    layout(&dir, &img, "2", |m| {
        m["layers"][0]["digest"] = od.clone().into();
        m["layers"][0]["size"] = other.len().into();
    });
    std::fs::write(dir.join("blobs/sha256").join(&od[7..]), &other).unwrap();
    let (ok, text) = layerfs(
        &root,
        &["load", "-i", dir.to_str().unwrap(), "--name", "t/a"],
    );
    assert!(!ok, "accepted: {text}");
    assert!(text.contains("diff_id"), "{text}");
    // The same layer as plain tar (another blob, same diff_id) is a true manifest: accepted.
    let plain = TestImage::new(vec![(img.layers[0].1.clone(), img.layers[0].1.clone())]);
    assert_eq!(plain.id(), img.id());
    let dir = tmp.path().join("plain");
    layout(&dir, &plain, "3", |_| {});
    let (ok, text) = layerfs(
        &root,
        &["load", "-i", dir.to_str().unwrap(), "--name", "t/a"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("already present"), "{text}");
}

#[test]
fn each_tag_keeps_the_manifest_it_was_loaded_with() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let img = image();
    layout(&tmp.path().join("one"), &img, "1", |_| {});
    // The same image, the same blobs, a different (true) manifest.
    layout(&tmp.path().join("two"), &img, "2", |m| {
        m["annotations"] = serde_json::json!({"org.example.build": "two"});
    });
    for d in ["one", "two"] {
        let (ok, text) = layerfs(
            &root,
            &[
                "load",
                "-i",
                tmp.path().join(d).to_str().unwrap(),
                "--name",
                "t/a",
            ],
        );
        assert!(ok, "{text}");
    }
    let m1 = saved_manifest(&root, "t/a:1", &tmp.path().join("s1"));
    let m2 = saved_manifest(&root, "t/a:2", &tmp.path().join("s2"));
    assert_eq!(
        m1["digest"].as_str().unwrap(),
        sha256(&img.manifest()),
        "t/a:1 changed"
    );
    assert_eq!(m2["annotations"]["org.example.build"], "two", "{m2}");
    // push sends each name's manifest too.
    let reg = registry_common::Registry::start();
    for (tag, m) in [("1", &m1), ("2", &m2)] {
        let dest = format!("{}/keep/a:{tag}", reg.addr());
        let (ok, text) = layerfs(&root, &["push", &format!("t/a:{tag}"), &dest]);
        assert!(ok, "{text}");
        let want = m["digest"].as_str().unwrap();
        assert!(text.contains(want), "push t/a:{tag}: {text} (want {want})");
    }
    // rmi of one tag keeps the other's manifest.
    let (ok, text) = layerfs(&root, &["rmi", "t/a:2"]);
    assert!(ok, "{text}");
    let again = saved_manifest(&root, "t/a:1", &tmp.path().join("s3"));
    assert_eq!(again["digest"], m1["digest"]);
}
