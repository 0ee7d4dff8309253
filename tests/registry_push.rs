//! `layerfs push` to a real registry, checked with skopeo: blobs and manifest as loaded, a
//! second push sends nothing, a push to another repository mounts instead of uploading, an
//! image without a manifest (legacy docker archive) gets one, and the pushed image pulls back.
mod registry_common;

use registry_common::*;

fn fixture() -> Image {
    Image::new(
        vec![
            layer(
                &[
                    Entry::Dir("usr"),
                    Entry::File("usr/tool", &noise(150_000, 11)),
                ],
                Comp::Gzip,
            ),
            layer(&[Entry::File("plain", b"uncompressed layer")], Comp::Plain),
            layer(&[Entry::File("z", &noise(50_000, 12))], Comp::Zstd),
        ],
        &layerfs::image::oci::Platform::host().architecture,
        "tool",
    )
}

/// Blob uploads (POST/PUT/PATCH on uploads) and manifest PUTs seen by the registry.
fn writes(reg: &Registry) -> usize {
    ["POST", "PUT", "PATCH"]
        .iter()
        .map(|m| reg.requests(m, "/blobs/uploads").len() + reg.requests(m, "/manifests/").len())
        .sum()
}

#[test]
fn push_then_push_again_then_mount_into_another_repo() {
    let reg = Registry::start();
    let img = fixture();
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(&img, "v1")]);
    let env = Env::new();
    env.ok(&[
        "load",
        "-i",
        layout.path().to_str().unwrap(),
        "--name",
        "local/tool",
    ]);

    let dest = format!("{}/team/tool:1.0", reg.addr());
    let out = env.ok(&["push", "local/tool:v1", &dest]);
    assert!(
        out.contains(&format!(
            "1.0: digest: {} size: {}",
            img.digest(),
            img.manifest.len()
        )),
        "{out}"
    );
    // skopeo sees exactly the loaded manifest and blobs.
    let raw = skopeo_inspect(&format!("docker://{dest}"), true);
    assert_eq!(
        serde_json::to_vec(&raw).unwrap(),
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&img.manifest).unwrap())
            .unwrap()
    );
    let info = skopeo_inspect(&format!("docker://{dest}"), false);
    assert_eq!(info["Digest"], img.digest());
    let copy = tempfile::tempdir().unwrap();
    skopeo_copy(
        &format!("docker://{dest}"),
        &format!("oci:{}:x", copy.path().display()),
        &[],
    );
    for l in &img.layers {
        let got = std::fs::read(
            copy.path()
                .join("blobs/sha256")
                .join(hex_of(&sha256(&l.blob))),
        )
        .unwrap();
        assert_eq!(got, l.blob);
    }
    // Three blob uploads, one config upload, one manifest.
    assert_eq!(reg.requests("PUT", "/blobs/uploads/").len(), 4);

    // Twice: nothing is sent.
    let before = writes(&reg);
    let out = env.ok(&["push", "local/tool:v1", &dest]);
    assert_eq!(
        writes(&reg),
        before,
        "the second push wrote to the registry:\n{out}"
    );
    assert_eq!(out.matches("already exists").count(), 4, "{out}");
    assert!(out.contains(&img.digest()), "{out}");

    // Another repository of the same registry: mounted, not uploaded.
    let other = format!("{}/other/tool:1.0", reg.addr());
    let puts = reg.requests("PUT", "/blobs/uploads/").len();
    let out = env.ok(&["push", "local/tool:v1", &other]);
    assert_eq!(out.matches("mounted from team/tool").count(), 4, "{out}");
    let mounts = reg.requests("POST", "/other/tool/blobs/uploads/?mount=");
    assert_eq!(mounts.len(), 4);
    assert!(mounts.iter().all(|(_, st)| *st == 201), "{mounts:?}");
    assert_eq!(
        reg.requests("PUT", "/blobs/uploads/").len(),
        puts,
        "a blob was uploaded"
    );
    assert_eq!(
        skopeo_inspect(&format!("docker://{other}"), false)["Digest"],
        img.digest()
    );

    // Pulled back into an empty store: the same image, and the plain and zstd layers survive.
    let env2 = Env::new();
    env2.ok(&["pull", &other]);
    assert_eq!(image_ids(&env2), [img.id()]);
    let m = Mount::image(&env2, &other);
    assert_eq!(
        std::fs::read(m.path().join("plain")).unwrap(),
        b"uncompressed layer"
    );
    assert_eq!(
        std::fs::read(m.path().join("z")).unwrap(),
        noise(50_000, 12)
    );
    assert_eq!(
        std::fs::read(m.path().join("usr/tool")).unwrap(),
        noise(150_000, 11)
    );
}

/// A legacy `docker save` archive: manifest.json, `<id>.json`, `<n>/layer.tar`.
fn legacy_archive(path: &std::path::Path, img: &Image, tag: &str) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    let cfg = format!("{}.json", hex_of(&img.id()));
    add(&cfg, &img.config);
    let mut layers = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        let p = format!("{i:064x}/layer.tar");
        add(&p, &l.tar);
        layers.push(p);
    }
    let mj = serde_json::json!([{"Config": cfg, "RepoTags": [tag], "Layers": layers}]);
    add("manifest.json", &serde_json::to_vec(&mj).unwrap());
    // gzip'd, as `docker save | gzip` writes it.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

#[test]
fn an_image_without_a_manifest_gets_an_oci_one() {
    let reg = Registry::start();
    let img = Image::new(
        vec![
            layer(&[Entry::File("a", b"first")], Comp::Plain),
            layer(&[Entry::File("b", &noise(10_000, 5))], Comp::Plain),
        ],
        &layerfs::image::oci::Platform::host().architecture,
        "legacy",
    );
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("legacy.tar.gz");
    legacy_archive(&archive, &img, "old/style:1");
    let env = Env::new();
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    let dest = format!("{}/legacy/img:1", reg.addr());
    let out = env.ok(&["push", "old/style:1", &dest]);
    let raw = skopeo_inspect(&format!("docker://{dest}"), true);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(raw["config"]["digest"], img.id());
    let layers: Vec<&str> = raw["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let want: Vec<String> = img.layers.iter().map(|l| sha256(&l.tar)).collect();
    assert_eq!(layers, want);
    let digest = skopeo_inspect(&format!("docker://{dest}"), false)["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(out.contains(&digest), "{out}");
    // The image now knows where it was pushed.
    let rec = env.store().resolve("old/style:1").unwrap();
    assert!(
        rec.repo_digests
            .contains(&format!("{}/legacy/img@{digest}", reg.addr())),
        "{:?}",
        rec.repo_digests
    );
    let env2 = Env::new();
    env2.ok(&["pull", &dest]);
    assert_eq!(image_ids(&env2), [img.id()]);
}

#[test]
fn push_needs_a_name_and_a_tag() {
    let env = Env::new();
    let img = fixture();
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(&img, "v1")]);
    env.ok(&[
        "load",
        "-i",
        layout.path().to_str().unwrap(),
        "--name",
        "local/tool",
    ]);
    let id = img.id();
    let err = env.fails(&["push", &hex_of(&id)[..12]]);
    assert!(err.contains("give a destination"), "{err}");
    let err = env.fails(&[
        "push",
        "local/tool:v1",
        &format!("127.0.0.1:1/x@{}", img.digest()),
    ]);
    assert!(err.contains("not a digest"), "{err}");
    let err = env.fails(&["push", "nope:latest"]);
    assert!(err.contains("no such image"), "{err}");
}
