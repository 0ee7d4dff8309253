//! load -> mount -> change -> commit -> save (every format) -> load into an empty store: same
//! image ID, same tree. Real clients read what layerfs writes: skopeo (inspect, copy) and
//! umoci (unpack, compared with the layerfs mount). Export and commit-while-mounted too.
mod container_common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use container_common::*;

const BASE: &[&str] = &[
    "etc/passwd=root:x:0:0",
    "etc/hosts=127.0.0.1 localhost",
    "bin/sh=#!fake shell",
    "var/lib/db/a=1",
    "var/lib/db/b=2",
    "srv/keep/x=x",
    "lnk->etc/passwd",
];
const TOP: &[&str] = &["etc/motd=hello", "-var/lib/db/b"];

fn inspect_id(env: &Env, image: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", image])).unwrap();
    v[0]["Id"].as_str().unwrap().to_string()
}

/// Changes covering every packer rule: content, deletes (file, dir), opaque dir, new tree with
/// a long name, hard links, symlink, fifo, xattrs, modes.
fn make_changes(m: &Path) {
    std::fs::write(m.join("etc/passwd"), "root:x:0:0\nuser:x:1000:1000\n").unwrap();
    std::fs::remove_file(m.join("etc/hosts")).unwrap();
    std::fs::remove_dir_all(m.join("var/lib/db")).unwrap();
    std::fs::remove_dir_all(m.join("srv/keep")).unwrap();
    std::fs::create_dir(m.join("srv/keep")).unwrap();
    std::fs::write(m.join("srv/keep/fresh"), "fresh").unwrap();
    let long = format!("opt/{}/{}", "d".repeat(90), "f".repeat(120));
    std::fs::create_dir_all(m.join(&long).parent().unwrap()).unwrap();
    std::fs::write(m.join(&long), "long name").unwrap();
    std::fs::write(m.join("opt/a"), "linked").unwrap();
    std::fs::hard_link(m.join("opt/a"), m.join("opt/b")).unwrap();
    std::os::unix::fs::symlink("../etc/motd", m.join("opt/motd")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        m.join("opt/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::lsetxattr(
        m.join("opt/a"),
        "user.note",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    // A binary value (newline and NUL bytes), as security.capability values can be.
    std::fs::write(m.join("opt/bin-xattr"), "x").unwrap();
    rustix::fs::lsetxattr(
        m.join("opt/bin-xattr"),
        "user.bin",
        b"a\nb\0c",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::write(m.join("bin/tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(m.join("bin/tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
}

/// A container of app:1 (BASE + TOP), mounted at `mnt`, with `make_changes` applied.
fn changed_container(env: &Env) -> (String, MountGuard) {
    load_image(env, "app:1", &[BASE, TOP]);
    let (cid, g) = env.mount("app:1", "mnt", &[]);
    make_changes(&g.path);
    (cid, g)
}

#[test]
fn commit_save_load_round_trip_and_real_clients() {
    if cannot_mount() {
        return;
    }
    let env = Env::new();
    let (cid, g) = changed_container(&env);
    let merged = tree(&g.path);
    assert!(merged.contains_key("opt/b") && merged["opt/a"].contains("user.note"));
    assert!(merged["opt/bin-xattr"].contains("user.bin"));
    let id = env.ok(&["commit", "-q", &cid, "app:2"]).trim().to_string();
    drop(g);
    let skopeo = has_tool("skopeo");
    if !skopeo {
        eprintln!("skopeo not installed: skipping its checks (scripts/install-deps installs it)");
    }
    for (format, file, skopeo_ref) in [
        ("docker-archive", "img.tar", "docker-archive:{}"),
        ("oci-archive", "img-oci.tar", "oci-archive:{}:2"),
        ("oci-dir", "img-oci", "oci:{}:2"),
    ] {
        let out = env.path(file);
        env.ok(&[
            "save",
            "app:2",
            "-o",
            out.to_str().unwrap(),
            "--format",
            format,
        ]);
        // Into an empty store: same image ID, same tree.
        let fresh = Env::new();
        fresh.ok(&["load", "-q", "-i", out.to_str().unwrap()]);
        assert_eq!(inspect_id(&fresh, "app:2"), id, "{format}");
        let (_, ro) = fresh.mount("app:2", "ro", &["--read-only"]);
        assert_eq!(tree(&ro.path), merged, "{format}: tree after save+load");
        drop(ro);
        if !skopeo {
            continue;
        }
        let r = skopeo_ref.replace("{}", out.to_str().unwrap());
        let insp = Command::new("skopeo")
            .args(["inspect", &r])
            .output()
            .unwrap();
        assert!(
            insp.status.success(),
            "skopeo inspect {r}: {}",
            String::from_utf8_lossy(&insp.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&insp.stdout).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 3, "{format}");
        assert_eq!(v["Env"][0], "PATH=/bin");
        // skopeo copies it to a new OCI layout; that loads to the same image.
        let copied = env.path(&format!("copy-{format}"));
        let dest = format!("oci:{}:2", copied.display());
        let st = Command::new("skopeo")
            .args(["copy", "-q", &r, &dest])
            .status()
            .unwrap();
        assert!(st.success(), "skopeo copy {r} {dest}");
        let again = Env::new();
        again.ok(&[
            "load",
            "-q",
            "-i",
            copied.to_str().unwrap(),
            "--name",
            "app",
        ]);
        if format == "docker-archive" {
            // skopeo converts a docker-archive's Docker manifest to OCI and re-encodes the
            // config on the way (so the ID changes); the tree must not.
            let (_, ro) = again.mount("app:2", "ro", &["--read-only"]);
            assert_eq!(tree(&ro.path), merged, "{format} via skopeo copy");
        } else {
            assert_eq!(inspect_id(&again, "app:2"), id, "{format} via skopeo copy");
        }
    }
}

#[test]
fn umoci_unpacks_the_same_tree() {
    if cannot_mount() {
        return;
    }
    if !has_tool("umoci") {
        eprintln!("umoci not installed: skipping (scripts/install-deps installs it)");
        return;
    }
    let env = Env::new();
    let (cid, g) = changed_container(&env);
    drop(g);
    // Debian's umoci 0.4.7 reads gzip layers, not zstd.
    env.ok(&["commit", "-q", "--compression", "gzip", &cid, "app:3"]);
    let layout = env.path("layout");
    env.ok(&[
        "save",
        "app:3",
        "-o",
        layout.to_str().unwrap(),
        "--format",
        "oci-dir",
    ]);
    let bundle = env.path("bundle");
    let o = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:3", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (_, ro) = env.mount("app:3", "ro", &["--read-only"]);
    let ours = tree(&ro.path);
    let theirs = tree(&bundle.join("rootfs"));
    assert_eq!(theirs, ours);
}

#[test]
fn export_is_the_merged_tree() {
    if cannot_mount() {
        return;
    }
    let env = Env::new();
    let (cid, g) = changed_container(&env);
    let merged = tree(&g.path);
    // Export works mounted or not, from the layers.
    let tar = env.path("rootfs.tar");
    env.ok(&["export", &cid, "-o", tar.to_str().unwrap()]);
    drop(g);
    let out = env.path("rootfs");
    untar(&tar, &out);
    assert_eq!(tree(&out), merged);
    let listing = Command::new("tar").arg("-tvf").arg(&tar).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        !listing.contains(".wh."),
        "no whiteouts in an export:\n{listing}"
    );
    assert!(listing.contains("opt/b link to opt/a"), "{listing}");
}

/// `version` repeated to a fixed size: a torn read shows two versions in one file.
fn version_bytes(v: u32) -> Vec<u8> {
    format!("{v:08}").repeat(4096).into_bytes()
}

fn is_whole_version(b: &[u8]) -> bool {
    b.len() == 8 * 4096 && b.chunks(8).all(|c| c == &b[..8])
}

#[test]
fn commit_while_mounted_is_a_snapshot() {
    if cannot_mount() {
        return;
    }
    let env = Env::new();
    load_image(&env, "app:1", &[BASE]);
    let cid = env
        .ok(&["create", "app:1", "--name", "busy"])
        .trim()
        .to_string();
    let (_, g) = env.mount("busy", "mnt", &[]);
    let m = g.path.clone();
    // Writes acknowledged before the commit starts are in it (no fsync needed: the mount has
    // no write-back cache, a returned write(2) is in the writable layer).
    let mut acked = BTreeMap::new();
    for i in 0..50 {
        let p = format!("etc/acked-{i}");
        std::fs::write(m.join(&p), format!("value {i}")).unwrap();
        acked.insert(p, format!("value {i}"));
    }
    std::fs::write(m.join("hot"), version_bytes(0)).unwrap();
    // A writer replacing `hot` atomically (write a temp file, rename over) during commits.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut v = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && v < 5000 {
                std::fs::write(m.join("hot.tmp"), version_bytes(v)).unwrap();
                std::fs::rename(m.join("hot.tmp"), m.join("hot")).unwrap();
                v += 1;
            }
        })
    };
    let mut committed = Vec::new();
    for n in 0..3 {
        let o = env.cmd(&["commit", "-q", &cid, &format!("snap:{n}")]);
        if o.status.success() {
            committed.push(format!("snap:{n}"));
        } else {
            // Allowed only as the explicit "kept changing" refusal.
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.contains("kept changing"), "{e}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    eprintln!("commits that succeeded while the writer ran: {committed:?}");
    // Quiet now: a commit must succeed.
    env.ok(&["commit", "-q", &cid, "snap:final"]);
    committed.push("snap:final".into());
    for (i, img) in committed.iter().enumerate() {
        let (_, ro) = env.mount(img, &format!("ro{i}"), &["--read-only"]);
        for (p, want) in &acked {
            assert_eq!(
                &std::fs::read_to_string(ro.path.join(p)).unwrap(),
                want,
                "{img}"
            );
        }
        let hot = std::fs::read(ro.path.join("hot")).unwrap();
        assert!(
            is_whole_version(&hot),
            "{img}: torn /hot ({} bytes)",
            hot.len()
        );
        if let Ok(tmp) = std::fs::read(ro.path.join("hot.tmp")) {
            // A temp file caught mid-write is allowed only whole or as its state at one instant
            // (never longer than a version).
            assert!(tmp.len() <= 8 * 4096, "{img}: hot.tmp too long");
        }
    }
}
