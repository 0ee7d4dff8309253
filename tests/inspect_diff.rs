//! `layerfs diff A [B]` between images, layers and containers built in the test: layers that
//! add, modify, overwrite, delete, change type, change only metadata and make directories
//! opaque; the expected lines of each pair written by hand.
mod inspect_common;
mod store_common;

use inspect_common::{Env, V1_V2, base_layer, v2_layer};
use store_common::Layer;

fn v3_layer() -> Vec<u8> {
    let mut l = Layer::new();
    l.file("new3", b"three", 0o644);
    l.bytes()
}

/// v1 = base; v2 = base + v2_layer; v3 = v2 + v3_layer.
fn images(env: &Env) {
    env.load_image(&[base_layer()], "test/v1:latest", None);
    env.load_image(&[base_layer(), v2_layer()], "test/v2:latest", None);
    env.load_image(
        &[base_layer(), v2_layer(), v3_layer()],
        "test/v3:latest",
        None,
    );
}

const V2_V1: &str = "\
C /big
C /bin
C /bin/tool
C /data
A /data/old
A /data/old/a
A /data/old/b
C /etc
C /etc/conf
D /etc/new
C /link
C /mode
C /opq
D /opq/fresh
A /opq/hidden
C /owner
C /wasdir
A /wasdir/inner
C /wasfile
";

#[test]
fn image_pairs() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    images(&env);
    assert_eq!(env.ok(&["diff", "test/v1", "test/v2"]), V1_V2);
    assert_eq!(env.ok(&["diff", "test/v2", "test/v1"]), V2_V1);
    // Without B: the image's top layer; and the same through IMAGE@N and layer IDs.
    assert_eq!(env.ok(&["diff", "test/v2"]), V1_V2);
    assert_eq!(env.ok(&["diff", "test/v2@0", "test/v2@1"]), V1_V2);
    assert_eq!(env.ok(&["diff", "test/v3@1"]), V1_V2);
    assert_eq!(env.ok(&["diff", "test/v3"]), "A /new3\n");
    assert_eq!(env.ok(&["diff", "test/v2", "test/v3"]), "A /new3\n");
    let mut v1_v3 = V1_V2.to_string();
    v1_v3.push_str("A /new3\n");
    let mut lines: Vec<&str> = v1_v3.lines().collect();
    lines.sort_by_key(|l| &l[2..]);
    assert_eq!(
        env.ok(&["diff", "test/v1", "test/v3"]),
        lines.join("\n") + "\n"
    );
    // Identical stacks: nothing.
    assert_eq!(env.ok(&["diff", "test/v1", "test/v3@0"]), "");
    // A layer by chain ID prefix is that layer over the layers below it.
    let chain = env.layer_chain("test/v3", 1);
    assert_eq!(
        env.ok(&["diff", &format!("layer:{}", &chain[7..19])]),
        V1_V2
    );
    assert_eq!(env.ok(&["diff", &chain[7..19]]), V1_V2);
    // The first layer against nothing: everything added.
    let all = env.ok(&["diff", "test/v1@0"]);
    assert!(all.starts_with("A /big\nA /bin\nA /bin/tool\n"), "{all}");
    assert!(!all.contains("\nC ") && !all.contains("\nD "), "{all}");
    // Errors name what to do.
    let e = env.fails(&["diff", "test/v1@5"]);
    assert!(e.contains("has 1 layers, numbered 0 (bottom) to 0"), "{e}");
    let e = env.fails(&["diff", "nosuchthing"]);
    assert!(e.contains("no such container, image or layer"), "{e}");
}

#[test]
fn sizes_and_json() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    images(&env);
    let out = env.ok(&["diff", "-s", "test/v1", "test/v2"]);
    assert!(out.contains("D       3B /data/old\n"), "{out}");
    assert!(out.contains("C      1kB /big\n"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["diff", "--json", "-s", "test/v1", "test/v2"])).unwrap();
    let find = |p: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["Path"] == p)
            .unwrap()
            .clone()
    };
    assert_eq!(
        find("/etc/conf"),
        serde_json::json!({"Path": "/etc/conf", "Kind": 0, "Size": 4, "SizeBefore": 2})
    );
    assert_eq!(
        find("/data/old"),
        serde_json::json!({"Path": "/data/old", "Kind": 2, "Size": 3})
    );
    assert_eq!(
        find("/etc/new"),
        serde_json::json!({"Path": "/etc/new", "Kind": 1, "Size": 1})
    );
    let plain: serde_json::Value =
        serde_json::from_str(&env.ok(&["diff", "--json", "test/v2", "test/v3"])).unwrap();
    assert_eq!(plain, serde_json::json!([{"Path": "/new3", "Kind": 1}]));
}

#[test]
fn containers() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    images(&env);
    let id = env
        .ok(&["create", "test/v2", "--name", "c1"])
        .trim()
        .to_string();
    let upper = env.root.join("containers").join(&id).join("upper");
    std::fs::write(upper.join("extra"), "x").unwrap();
    assert_eq!(env.ok(&["diff", "c1"]), "A /extra\n");
    assert_eq!(env.ok(&["diff", "container:c1"]), "A /extra\n");
    assert_eq!(env.ok(&["diff", "test/v2", "c1"]), "A /extra\n");
    assert_eq!(env.ok(&["diff", "c1", "test/v2"]), "D /extra\n");
    let mut want: Vec<&str> = V1_V2.lines().collect();
    want.push("A /extra");
    want.sort_by_key(|l| &l[2..]);
    assert_eq!(env.ok(&["diff", "test/v1", "c1"]), want.join("\n") + "\n");
    // Two containers of the same image: only their writable layers are read.
    let id2 = env
        .ok(&["create", "test/v2", "--name", "c2"])
        .trim()
        .to_string();
    let upper2 = env.root.join("containers").join(&id2).join("upper");
    std::fs::write(upper2.join("other"), "y").unwrap();
    assert_eq!(env.ok(&["diff", "c1", "c2"]), "D /extra\nA /other\n");
}

const DEBIAN_A: &str = "Package: base-files
Status: install ok installed
Priority: required
Section: admin
Installed-Size: 341
Maintainer: Santiago Vila <sanvila@debian.org>
Architecture: amd64
Multi-Arch: foreign
Version: 12.4+deb12u5
Replaces: base, dpkg (<= 1.15.0), miscutils
Provides: base
Pre-Depends: awk
Breaks: debian-security-support (<< 2019.04.25), initscripts (<< 2.88dsf-13.3)
Conffiles:
 /etc/debian_version 7f8b2b2d11b0be0b4ab7ff0fc4b4d0b0
 /etc/issue 3bd3a5c8b1f5e3a3c4e2f1a9b8c7d6e5
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy of a Debian system, and
 several important miscellaneous files.

Package: libc6
Status: install ok installed
Priority: optional
Section: libs
Installed-Size: 12988
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: oldpkg
Status: install ok installed
Installed-Size: 10
Architecture: all
Version: 1.0-1
Description: goes away

Package: removed
Status: deinstall ok config-files
Architecture: all
Version: 0.1
Description: only its config files are left
";

const DEBIAN_B: &str = "Package: base-files
Status: install ok installed
Installed-Size: 341
Architecture: amd64
Version: 12.4+deb12u5
Description: Debian base system miscellaneous files

Package: libc6
Status: install ok installed
Installed-Size: 12990
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u7
Description: GNU C Library: Shared libraries

Package: curl
Status: install ok installed
Installed-Size: 500
Architecture: amd64
Version: 7.88.1-10+deb12u5
Description: command line tool for transferring data with URL syntax
";

const ALPINE_A: &str = "C:Q1Y5Q1aF6f0uYB2Ibz8yv2pZp8U7g=
P:musl
V:1.2.4-r2
A:x86_64
S:383304
I:622592
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1698246800
c:cb9c4ec2e2b9a2e1b3e0b6b1c3b0a5f1e0d9c8b7
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1Xz9...=

C:Q1abc=
P:busybox
V:1.36.1-r5
A:x86_64
I:924672
T:Size optimized toolbox of many common UNIX utilities

";

const ALPINE_B: &str = "C:Q1Y5Q1aF6f0uYB2Ibz8yv2pZp8U7g=
P:musl
V:1.2.4-r3
A:x86_64
I:622592
T:the musl c library (libc) implementation

C:Q1abc=
P:busybox
V:1.36.1-r5
A:x86_64
I:924672

C:Q1def=
P:ca-certificates
V:20240226-r0
A:x86_64
I:688128
";

#[test]
fn packages() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    let layer = |path: &str, text: &str| {
        let mut l = Layer::new();
        l.file(path, text.as_bytes(), 0o644);
        l.bytes()
    };
    let d0 = layer("var/lib/dpkg/status", DEBIAN_A);
    let d1 = layer("var/lib/dpkg/status", DEBIAN_B);
    env.load_image(std::slice::from_ref(&d0), "deb:a", None);
    env.load_image(&[d0, d1], "deb:b", None);
    assert_eq!(
        env.ok(&["diff", "--type", "packages", "deb:a", "deb:b"]),
        "A curl 7.88.1-10+deb12u5 [dpkg]\n\
         C libc6 2.36-9+deb12u4 -> 2.36-9+deb12u7 [dpkg]\n\
         D oldpkg 1.0-1 [dpkg]\n"
    );
    assert_eq!(
        env.ok(&["diff", "--type", "packages", "-s", "deb:b"]),
        "A curl 7.88.1-10+deb12u5 (512kB) [dpkg]\n\
         C libc6 2.36-9+deb12u4 -> 2.36-9+deb12u7 (13.3MB) [dpkg]\n\
         D oldpkg 1.0-1 (10.24kB) [dpkg]\n"
    );
    let a0 = layer("lib/apk/db/installed", ALPINE_A);
    let a1 = layer("lib/apk/db/installed", ALPINE_B);
    env.load_image(&[a0], "alp:a", None);
    env.load_image(&[a1], "alp:b", None);
    assert_eq!(
        env.ok(&["diff", "--type", "packages", "alp:a", "alp:b"]),
        "A ca-certificates 20240226-r0 [apk]\nC musl 1.2.4-r2 -> 1.2.4-r3 [apk]\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&env.ok(&["diff", "--type", "packages", "--json", "alp:b", "alp:a"]))
            .unwrap();
    assert_eq!(v[0]["Name"], "ca-certificates");
    assert_eq!(v[0]["Kind"], "Deleted");
    assert_eq!(v[1]["Before"], "1.2.4-r3");
}

#[test]
fn config_and_history() {
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    env.load_image(&[base_layer()], "cfg:a", None);
    let edit = |c: &mut serde_json::Value| {
        c["config"]["Env"] = serde_json::json!(["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]);
        c["config"]["User"] = serde_json::json!("app");
        c["config"]["Labels"] = serde_json::json!({});
    };
    env.load_image(&[base_layer(), v2_layer()], "cfg:b", Some(&edit));
    assert_eq!(
        env.ok(&["diff", "--type", "config", "cfg:a", "cfg:b"]),
        "A Env.LANG=C.UTF-8\nC Env.PATH: /bin -> /usr/bin:/bin\nD Labels.a=b\nA User=app\n"
    );
    assert_eq!(
        env.ok(&["diff", "--type", "history", "cfg:a", "cfg:b"]),
        "D #1 CMD [\"sh\"] (empty layer)\nA #1 RUN step 1\nA #2 CMD [\"sh\"] (empty layer)\n"
    );
    let e = env.fails(&["diff", "--type", "config", "cfg:b"]);
    assert!(e.contains("is a layer, which has no config"), "{e}");
}

#[test]
fn archives_without_loading() {
    use store_common::{TestImage, docker25_files, legacy_files, oci_files, write_dir, write_tar};
    let env = Env::new();
    if !env.root_ok() {
        return;
    }
    env.load_image(&[base_layer()], "test/v1:latest", None);
    let tars = [base_layer(), v2_layer()];
    let img = TestImage::new(
        tars.iter()
            .map(|t| (store_common::gzip(t), t.clone()))
            .collect(),
    );
    let layout = env.tmp.path().join("v2-layout");
    let ann = serde_json::json!({"io.containerd.image.name": "test/v2:latest"});
    write_dir(&layout, &oci_files(&[(&img, ann)]));
    let docker = env.tmp.path().join("v2-docker.tar");
    write_tar(&docker, &docker25_files(&img, "test/v2:latest"));
    let legacy = env.tmp.path().join("v2-legacy.tar");
    write_tar(&legacy, &legacy_files(&img, &["test/v2:latest"]));
    let images_before = env.ok(&["images", "-q", "-a"]);
    let lp = layout.to_str().unwrap();
    assert_eq!(env.ok(&["diff", "test/v1", lp]), V1_V2);
    assert_eq!(env.ok(&["diff", &format!("oci:{lp}")]), V1_V2);
    let dp = format!("docker-archive:{}", docker.display());
    assert_eq!(env.ok(&["diff", &dp, "test/v1"]), V2_V1);
    assert_eq!(
        env.ok(&["diff", legacy.to_str().unwrap(), "test/v1"]),
        V2_V1
    );
    let layers = env.ok(&["layers", "--summary", lp]);
    assert!(
        layers.contains(": 3 added, 12 modified, 2 removed;"),
        "{layers}"
    );
    // Nothing was loaded, and no extracted layer is left behind.
    assert_eq!(env.ok(&["images", "-q", "-a"]), images_before);
    let tmp: Vec<_> = std::fs::read_dir(env.root.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    // A layer whose content is not the diff_id its config promises is refused.
    let bad = TestImage::new(vec![
        (store_common::gzip(&tars[0]), tars[0].clone()),
        (store_common::gzip(&tars[1]), b"something else".to_vec()),
    ]);
    let bad_dir = env.tmp.path().join("bad-layout");
    write_dir(&bad_dir, &oci_files(&[(&bad, serde_json::json!({}))]));
    let e = env.fails(&["diff", "test/v1", bad_dir.to_str().unwrap()]);
    assert!(
        e.contains("bad-layout: layer 2") && e.contains("diff_id"),
        "{e}"
    );
}
