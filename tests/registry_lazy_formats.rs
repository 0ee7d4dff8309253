//! Seekable layer formats written by layerfs (issue 16, step 1): `push --compression
//! zstd:chunked|estargz` to a real registry (Debian's docker-registry on 127.0.0.1), then
//! ordinary clients read what was pushed: skopeo copies it and umoci unpacks it, `layerfs pull`
//! pulls it, and every tree equals the original image's. `save --compression` writes the same
//! layers into an OCI layout.
mod lazy_common;
mod registry_common;
#[path = "store_common/mod.rs"]
mod store_common;

use std::path::Path;
use std::process::Command;

use lazy_common::*;
use registry_common::*;

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn umoci_tree(
    layout: &Path,
    tag: &str,
    bundle: &Path,
) -> std::collections::BTreeMap<String, String> {
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .expect("umoci");
    assert!(
        o.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    plain_tree(&bundle.join("rootfs"))
}

fn layer_annotations(manifest: &serde_json::Value) -> Vec<serde_json::Value> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["annotations"].clone())
        .collect()
}

#[test]
fn pushed_seekable_layers_read_the_same_everywhere() {
    if !is_root() {
        eprintln!("needs root (mounts, owners): skipping");
        return;
    }
    let reg = Registry::start();
    let env = Env::new();
    load_fixture(&env);
    let original = Mount::image(&env, "app:1");
    let want = full_tree(original.path());
    let want_plain = plain_tree(original.path());
    for (fmt, key, media) in [
        (
            "zstd:chunked",
            "io.github.containers.zstd-chunked.manifest-checksum",
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (
            "estargz",
            "containerd.io/snapshot/stargz/toc.digest",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
    ] {
        let tag = fmt.replace(':', "-");
        let dest = format!("{}/app:{tag}", reg.addr());
        let out = env.ok(&["push", "app:1", &dest, "--compression", fmt]);
        assert!(out.contains("digest: sha256:"), "{out}");
        let raw = skopeo_inspect(&format!("docker://{dest}"), true);
        for (l, a) in raw["layers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(layer_annotations(&raw))
        {
            assert_eq!(l["mediaType"], media, "{fmt}");
            assert!(
                a[key].as_str().unwrap().starts_with("sha256:"),
                "{fmt}: {a}"
            );
        }
        let config = skopeo_inspect(&format!("docker://{dest}"), false);
        if fmt == "zstd:chunked" {
            // The tar streams are unchanged: same diff_ids, same config, same image ID.
            let ins: serde_json::Value =
                serde_json::from_str(&env.ok(&["inspect", "app:1"])).unwrap();
            let id = if ins.is_array() {
                &ins[0]["Id"]
            } else {
                &ins["Id"]
            };
            assert_eq!(raw["config"]["digest"], *id);
        }
        assert_eq!(config["Layers"].as_array().unwrap().len(), 2);

        // A full pull by layerfs: the same tree (eStargz adds its TOC file at the root).
        let other = Env::new();
        other.ok(&["pull", &dest]);
        let pulled = Mount::image(&other, &dest);
        let mut got = full_tree(pulled.path());
        if fmt == "estargz" {
            let toc = got.remove("stargz.index.json").expect("eStargz TOC entry");
            assert!(toc.starts_with("file "), "{toc}");
        }
        assert_eq!(got, want, "{fmt}: layerfs pull");
        drop(pulled);

        // skopeo copies it to an OCI layout (gzip, which Debian's umoci reads) and umoci
        // unpacks it.
        let work = tempfile::tempdir().unwrap();
        let layout = work.path().join("layout");
        let o = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-compress-format",
                "gzip",
            ])
            .arg(format!("docker://{dest}"))
            .arg(format!("oci:{}:t", layout.display()))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut got = umoci_tree(&layout, "t", &work.path().join("bundle"));
        if fmt == "estargz" {
            assert!(
                got.remove("stargz.index.json").is_some(),
                "umoci shows the TOC file"
            );
        }
        assert_eq!(got, want_plain, "{fmt}: skopeo + umoci");

        // save --compression writes the same layer format into an OCI layout.
        let saved = work.path().join("saved");
        env.ok(&[
            "save",
            "app:1",
            "-o",
            saved.to_str().unwrap(),
            "--format",
            "oci-dir",
            "--compression",
            fmt,
        ]);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(saved.join("index.json")).unwrap()).unwrap();
        let md = index["manifests"][0]["digest"].as_str().unwrap();
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(saved.join("blobs/sha256").join(hex_of(md))).unwrap(),
        )
        .unwrap();
        for a in layer_annotations(&m) {
            assert!(
                a[key].as_str().unwrap().starts_with("sha256:"),
                "save {fmt}: {a}"
            );
        }
        let reload = Env::new();
        reload.ok(&["load", "-q", "-i", saved.to_str().unwrap()]);
        let ids = image_ids(&reload);
        assert_eq!(ids.len(), 1);
        let back = Mount::image(&reload, &ids[0]);
        let mut got = full_tree(back.path());
        got.remove("stargz.index.json");
        assert_eq!(got, want, "{fmt}: save + load");
    }
}

#[test]
fn docker_archive_refuses_a_seekable_compression() {
    let env = Env::new();
    load_fixture(&env);
    let err = env.fails(&[
        "save",
        "app:1",
        "-o",
        "/tmp/x.tar",
        "--compression",
        "estargz",
    ]);
    assert!(err.contains("oci-archive or oci-dir"), "{err}");
    let err = env.fails(&["push", "app:1", "127.0.0.1:1/x:1", "--compression", "zip"]);
    assert!(err.contains("zstd:chunked or estargz"), "{err}");
}
