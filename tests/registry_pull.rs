//! `layerfs pull` against a real registry (Debian's docker-registry on 127.0.0.1) that skopeo
//! filled: every manifest kind and compression, platform selection, pulling by digest, the
//! driver mounting the result, shared-layer dedupe, a tampered blob, an interrupted pull.
mod registry_common;

use registry_common::proxy::{Proxy, ProxyOpts};
use registry_common::*;

/// Three layers (gzip, zstd, plain), the last deleting a file of the first.
fn three_layer_image(arch: &str) -> Image {
    Image::new(
        vec![
            layer(
                &[
                    Entry::Dir("etc"),
                    Entry::File("etc/hello", b"hello\n"),
                    Entry::File("etc/gone", b"to be deleted\n"),
                ],
                Comp::Gzip,
            ),
            layer(
                &[
                    Entry::Dir("app"),
                    Entry::File("app/data", &noise(200_000, 1)),
                ],
                Comp::Zstd,
            ),
            layer(
                &[
                    Entry::Whiteout("etc/gone"),
                    Entry::File("app/arch", arch.as_bytes()),
                ],
                Comp::Plain,
            ),
        ],
        arch,
        "sh",
    )
}

fn host_arch() -> String {
    layerfs::image::oci::Platform::host().architecture
}

#[test]
fn pull_oci_by_tag_and_digest_then_mount() {
    let reg = Registry::start();
    let img = three_layer_image(&host_arch());
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(&img, "v1")]);
    let r = format!("{}/test/app:v1", reg.addr());
    skopeo_copy(
        &format!("oci:{}:v1", layout.path().display()),
        &format!("docker://{r}"),
        &[],
    );

    let env = Env::new();
    let out = env.ok(&["pull", &r]);
    assert!(out.contains(&format!("Digest: {}", img.digest())), "{out}");
    assert!(
        out.ends_with(&format!("\n{r}\n")),
        "the reference comes last: {out}"
    );
    assert_eq!(image_ids(&env), [img.id()]);
    // `REF=$(layerfs pull -q ...)` gets the reference and nothing else.
    assert_eq!(env.ok(&["pull", "-q", &r]), format!("{r}\n"));
    let rec = env.store().resolve(&r).unwrap();
    assert_eq!(
        rec.manifest.as_ref().map(|d| d.to_string()),
        Some(img.digest())
    );
    assert!(
        rec.repo_digests
            .contains(&format!("{}/test/app@{}", reg.addr(), img.digest()))
    );
    // Every layer keeps its blob, byte for byte (push and save send them), stored once.
    for (l, chain) in img.layers.iter().zip(&rec.layers) {
        let kept = env.store().layer_blob(chain).unwrap().expect("kept blob");
        assert_eq!(kept.blob.digest.to_string(), sha256(&l.blob));
        assert_eq!(std::fs::read(&kept.path).unwrap(), l.blob);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&kept.path).unwrap().nlink(), 1);
    }
    assert_eq!(
        std::fs::read_dir(env.root().join("downloads"))
            .unwrap()
            .count(),
        0
    );

    let m = Mount::image(&env, &r);
    assert_eq!(
        std::fs::read(m.path().join("etc/hello")).unwrap(),
        b"hello\n"
    );
    assert!(!m.path().join("etc/gone").exists(), "whiteout not applied");
    assert_eq!(
        std::fs::read(m.path().join("app/data")).unwrap(),
        noise(200_000, 1)
    );
    assert_eq!(
        std::fs::read(m.path().join("app/arch")).unwrap(),
        host_arch().as_bytes()
    );
    drop(m);

    // By digest, into another store: same image, no name, the repo digest recorded.
    let env2 = Env::new();
    let by_digest = format!("{}/test/app@{}", reg.addr(), img.digest());
    env2.ok(&["pull", &by_digest]);
    assert_eq!(image_ids(&env2), [img.id()]);
    let rec = env2.store().resolve(&by_digest).unwrap();
    assert_eq!(rec.id.to_string(), img.id());
    // A digest that the registry does not have is an error naming it.
    let missing = format!("{}/test/app@{}", reg.addr(), sha256(b"nothing"));
    let err = env2.fails(&["pull", &missing]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn docker_schema2_and_multi_platform_index() {
    let reg = Registry::start();
    // Docker v2 schema 2 (skopeo converts; gzip only, as that format requires).
    let gz = Image::new(
        vec![layer(&[Entry::File("v2s2", b"docker")], Comp::Gzip)],
        &host_arch(),
        "docker",
    );
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(&gz, "d")]);
    let r = format!("{}/docker/img:d", reg.addr());
    skopeo_copy(
        &format!("oci:{}:d", layout.path().display()),
        &format!("docker://{r}"),
        &["--format", "v2s2"],
    );
    let raw = skopeo_inspect(&format!("docker://{r}"), true);
    assert_eq!(
        raw["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let env = Env::new();
    env.ok(&["pull", &r]);
    assert_eq!(image_ids(&env), [gz.id()]);
    let err = env.fails(&["pull", "--platform", "linux/s390x", &r]);
    assert!(
        err.contains("not for the requested platform linux/s390x"),
        "{err}"
    );

    // An index of two platforms: the host's by default, another with --platform.
    let amd = three_layer_image("amd64");
    let arm = three_layer_image("arm64");
    let layout = tempfile::tempdir().unwrap();
    let ix = write_multiarch_layout(layout.path(), "multi", &[(&amd, "amd64"), (&arm, "arm64")]);
    let r = format!("{}/multi/img:m", reg.addr());
    skopeo_copy(
        &format!("oci:{}:multi", layout.path().display()),
        &format!("docker://{r}"),
        &["--all"],
    );
    let env = Env::new();
    let out = env.ok(&["pull", "--platform", "linux/arm64", &r]);
    assert!(out.contains(&format!("Digest: {ix}")), "{out}");
    assert_eq!(image_ids(&env), [arm.id()]);
    let rec = env.store().resolve(&r).unwrap();
    assert!(
        rec.repo_digests
            .contains(&format!("{}/multi/img@{ix}", reg.addr())),
        "{:?}",
        rec.repo_digests
    );
    let out = env.ok_all(&["pull", "--platform", "linux/amd64", &r]);
    assert!(out.contains("Pulled"), "{out}");
    let mut ids = image_ids(&env);
    ids.sort();
    let mut want = vec![amd.id(), arm.id()];
    want.sort();
    assert_eq!(ids, want);
    let err = env.fails(&["pull", "--platform", "linux/s390x", &r]);
    assert!(
        err.contains("no image for platform linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
}

#[test]
fn shared_layers_are_downloaded_once() {
    let reg = Registry::start();
    let base = || {
        layer(
            &[
                Entry::Dir("base"),
                Entry::File("base/big", &noise(300_000, 7)),
            ],
            Comp::Gzip,
        )
    };
    let a = Image::new(
        vec![base(), layer(&[Entry::File("a", b"a")], Comp::Gzip)],
        &host_arch(),
        "a",
    );
    let b = Image::new(
        vec![base(), layer(&[Entry::File("b", b"b")], Comp::Zstd)],
        &host_arch(),
        "b",
    );
    // Same layers as `a`, another config: nothing but the config to fetch.
    let c = Image::new(
        vec![base(), layer(&[Entry::File("a", b"a")], Comp::Gzip)],
        &host_arch(),
        "c",
    );
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(&a, "a"), (&b, "b"), (&c, "c")]);
    for t in ["a", "b", "c"] {
        skopeo_copy(
            &format!("oci:{}:{t}", layout.path().display()),
            &format!("docker://{}/dedupe/img:{t}", reg.addr()),
            &[],
        );
    }
    let base_digest = sha256(&a.layers[0].blob);
    let blob_gets = |d: &str| reg.requests("GET", &format!("/blobs/{d}")).len();
    let before = reg.requests("GET", "/blobs/").len();

    let env = Env::new();
    env.ok(&["pull", &format!("{}/dedupe/img:a", reg.addr())]);
    assert_eq!(blob_gets(&base_digest), 1);
    let out = env.ok_all(&["pull", &format!("{}/dedupe/img:b", reg.addr())]);
    assert_eq!(
        blob_gets(&base_digest),
        1,
        "the shared base layer was downloaded again"
    );
    assert!(
        out.contains(&format!(
            "layer sha256:{} already present",
            &hex_of(&sha256(&a.layers[0].tar))[..12]
        )),
        "{out}"
    );
    assert!(
        out.contains("2 blob(s) downloaded") && out.contains("1 layer(s) already present"),
        "{out}"
    );
    // b: its own layer and config only.
    assert_eq!(reg.requests("GET", "/blobs/").len() - before, 3 + 2);

    let t = std::time::Instant::now();
    let out = env.ok_all(&["pull", &format!("{}/dedupe/img:c", reg.addr())]);
    eprintln!(
        "second pull of an image sharing every layer: {:?}",
        t.elapsed()
    );
    assert!(out.contains("2 layer(s) already present"), "{out}");
    assert_eq!(
        reg.requests("GET", "/blobs/").len() - before,
        3 + 2 + 1,
        "only c's config"
    );
    // Pulling a present image again fetches no blob at all.
    env.ok(&["pull", &format!("{}/dedupe/img:a", reg.addr())]);
    assert_eq!(reg.requests("GET", "/blobs/").len() - before, 6);
    let mut ids = image_ids(&env);
    ids.sort();
    let mut want = vec![a.id(), b.id(), c.id()];
    want.sort();
    assert_eq!(ids, want);
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_kept() {
    let reg = Registry::start();
    let img = three_layer_image(&host_arch());
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(&img, "v1")]);
    let r = format!("{}/bad/app:v1", reg.addr());
    skopeo_copy(
        &format!("oci:{}:v1", layout.path().display()),
        &format!("docker://{r}"),
        &[],
    );
    // Same length, one byte changed, in the middle of the gzip and of the zstd layer.
    let tampered: Vec<String> = img.layers[..2].iter().map(|l| sha256(&l.blob)).collect();
    for d in &tampered {
        let p = reg.blob_data(d);
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&p, &bytes).unwrap();
    }

    let env = Env::new();
    for _ in 0..2 {
        let err = env.fails(&["pull", &r]);
        assert!(tampered.iter().any(|d| err.contains(d.as_str())), "{err}");
        assert!(
            err.contains("digest mismatch") || err.contains("corrupt") || err.contains("checksum"),
            "{err}"
        );
        assert!(image_ids(&env).is_empty());
        let store = env.store();
        assert!(
            store.layer_ids().unwrap().is_empty(),
            "a layer was published"
        );
        assert!(store.resolve(&r).is_err());
        drop(store);
        for e in std::fs::read_dir(env.root().join("downloads")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                !tampered.iter().any(|d| name.contains(hex_of(d))),
                "a bad download was kept: {name}"
            );
        }
        assert_eq!(
            std::fs::read_dir(env.root().join("tmp")).unwrap().count(),
            0
        );
    }
}

#[test]
fn an_interrupted_pull_resumes() {
    let reg = Registry::start();
    let img = Image::new(
        vec![layer(
            &[Entry::File("big", &noise(1_500_000, 3))],
            Comp::Plain,
        )],
        &host_arch(),
        "big",
    );
    publish(&reg.addr(), &img, "big/app:v1");
    let proxy = Proxy::start(
        reg.port,
        ProxyOpts {
            truncate_first_blob: true,
            ..Default::default()
        },
    );
    let r = format!("{}/big/app:v1", proxy.addr());
    let env = Env::new();
    let err = env.fails(&["pull", &r]);
    assert!(
        err.contains("download interrupted") && err.contains("run the pull again"),
        "{err}"
    );
    assert!(image_ids(&env).is_empty());
    assert!(env.store().layer_ids().unwrap().is_empty());
    let d = sha256(&img.layers[0].blob);
    let partial = env
        .root()
        .join("downloads")
        .join(format!("{}.partial", hex_of(&d)));
    let kept = std::fs::metadata(&partial)
        .expect("partial download kept")
        .len();
    assert!(kept > 0 && kept < img.layers[0].blob.len() as u64, "{kept}");

    let out = env.ok_all(&["pull", &r]);
    assert!(
        out.contains(&format!("resumed an interrupted download at {kept} of")),
        "{out}"
    );
    let ranged: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.target.contains(&d) && s.method == "GET")
        .collect();
    assert_eq!(ranged.len(), 2);
    assert_eq!(
        ranged[1].header("range"),
        Some(format!("bytes={kept}-").as_str())
    );
    assert_eq!(reg.requests("GET", &d).last().map(|x| x.1), Some(206));
    assert_eq!(image_ids(&env), [img.id()]);
    assert!(!partial.exists());
    let m = Mount::image(&env, &r);
    assert_eq!(
        std::fs::read(m.path().join("big")).unwrap(),
        noise(1_500_000, 3)
    );
}

#[test]
fn a_layer_stored_from_another_blob_is_not_downloaded() {
    let reg = Registry::start();
    let files = [
        Entry::Dir("lib"),
        Entry::File("lib/shared.so", &noise(120_000, 9)),
    ];
    // The same layer content as gzip (image a, bottom) and as zstd (image b, above another base).
    let a = Image::new(vec![layer(&files, Comp::Gzip)], &host_arch(), "a");
    let b = Image::new(
        vec![
            layer(&[Entry::File("other", b"base")], Comp::Gzip),
            layer(&files, Comp::Zstd),
        ],
        &host_arch(),
        "b",
    );
    assert_eq!(sha256(&a.layers[0].tar), sha256(&b.layers[1].tar));
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(&a, "a"), (&b, "b")]);
    for t in ["a", "b"] {
        skopeo_copy(
            &format!("oci:{}:{t}", layout.path().display()),
            &format!("docker://{}/diffid/img:{t}", reg.addr()),
            &[],
        );
    }
    let env = Env::new();
    env.ok(&["pull", &format!("{}/diffid/img:a", reg.addr())]);
    let out = env.ok_all(&["pull", &format!("{}/diffid/img:b", reg.addr())]);
    let zstd_blob = sha256(&b.layers[1].blob);
    assert!(
        reg.requests("GET", &zstd_blob).is_empty(),
        "the zstd blob was downloaded"
    );
    assert!(
        out.contains(&format!(
            "the same layer (diff_id sha256:{})",
            &hex_of(&sha256(&b.layers[1].tar))[..12]
        )),
        "{out}"
    );
    let m = Mount::image(&env, &format!("{}/diffid/img:b", reg.addr()));
    assert_eq!(
        std::fs::read(m.path().join("lib/shared.so")).unwrap(),
        noise(120_000, 9)
    );
    drop(m);
    // b's stored manifest names the zstd blob the store does not keep: push writes a manifest
    // for the kept (gzip) blob; the image ID stays.
    let dest = format!("{}/diffid/copy:b", reg.addr());
    env.ok(&["push", &format!("{}/diffid/img:b", reg.addr()), &dest]);
    let raw = skopeo_inspect(&format!("docker://{dest}"), true);
    assert_eq!(raw["config"]["digest"], b.id());
    assert_eq!(raw["layers"][1]["digest"], sha256(&a.layers[0].blob));
    assert_eq!(
        raw["layers"][1]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
}

#[test]
fn a_manifest_served_as_another_type_is_refused() {
    let reg = Registry::start();
    let img = three_layer_image(&host_arch());
    publish(&reg.addr(), &img, "typed/app:v1");
    let proxy = Proxy::start(
        reg.port,
        ProxyOpts {
            manifest_type: Some("application/vnd.oci.image.index.v1+json".into()),
            ..Default::default()
        },
    );
    let env = Env::new();
    let err = env.fails(&["pull", &format!("{}/typed/app:v1", proxy.addr())]);
    assert!(
        err.contains("does not match the document") && err.contains("Content-Type"),
        "{err}"
    );
    assert!(image_ids(&env).is_empty());
    assert!(
        reg.requests("GET", "/blobs/").is_empty(),
        "blobs fetched for a refused manifest"
    );
}

#[test]
fn a_complete_partial_download_is_checked_without_a_request() {
    let reg = Registry::start();
    let img = Image::new(
        vec![layer(&[Entry::File("f", &noise(200_000, 4))], Comp::Gzip)],
        &host_arch(),
        "p",
    );
    let layout = tempfile::tempdir().unwrap();
    write_layout(layout.path(), &[(&img, "v1")]);
    let r = format!("{}/partial/app:v1", reg.addr());
    skopeo_copy(
        &format!("oci:{}:v1", layout.path().display()),
        &format!("docker://{r}"),
        &[],
    );
    let d = sha256(&img.layers[0].blob);
    let env = Env::new();
    let downloads = env.root().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let partial = downloads.join(format!("{}.partial", hex_of(&d)));
    // Full length, wrong bytes (a pull killed after its last write, on a bad stream).
    let mut bad = img.layers[0].blob.clone();
    let n = bad.len();
    bad[n - 20] ^= 1;
    std::fs::write(&partial, &bad).unwrap();
    let err = env.fails(&["pull", &r]);
    assert!(
        err.contains(&d)
            && (err.contains("mismatch") || err.contains("corrupt") || err.contains("checksum")),
        "{err}"
    );
    assert!(!partial.exists(), "a wrong partial download was kept");
    assert!(reg.requests("GET", &d).is_empty());
    // Full length, right bytes: used as is.
    std::fs::write(&partial, &img.layers[0].blob).unwrap();
    env.ok(&["pull", &r]);
    assert!(
        reg.requests("GET", &d).is_empty(),
        "the blob was downloaded again"
    );
    assert_eq!(image_ids(&env), [img.id()]);
    assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0);
}
