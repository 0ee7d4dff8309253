//! Containers end to end through the binary: create, ps, names and prefixes, mount (real FUSE
//! mounts), diff, rm, pinning against rmi/prune, and state surviving a killed daemon.
mod container_common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use container_common::*;

const BASE: &[&str] = &[
    "etc/passwd=root:x:0:0",
    "etc/hosts=127.0.0.1 localhost",
    "etc/sub/a=1",
    "usr/bin/tool=#!/bin/sh",
    "var/old/x=1",
    "var/old/y=2",
    "d/keep=k",
    "lnk->etc/passwd",
];
const TOP: &[&str] = &["etc/extra=e", "-var/old/y"];

#[test]
fn create_ps_names_prefixes_rm_and_pinning() {
    let env = Env::new();
    let id = load_image(&env, "app:1", &[BASE]);
    let web = env
        .ok(&["create", "app:1", "--name", "web"])
        .trim()
        .to_string();
    assert_eq!(web.len(), 64);
    assert!(web.bytes().all(|b| b.is_ascii_hexdigit()));
    let err = env.fails(&["create", "app:1", "--name", "web"]);
    assert!(err.contains("already in use"), "{err}");
    env.fails(&["create", "app:1", "--name", "bad name"]);
    let other = env.ok(&["create", &id.hex()[..12]]).trim().to_string();
    let ps = env.ok(&["ps", "-a"]);
    assert!(ps.starts_with("CONTAINER ID   IMAGE"), "{ps}");
    assert!(ps.contains(&web[..12]) && ps.contains(&other[..12]), "{ps}");
    assert!(ps.contains("web") && ps.contains("app:1"), "{ps}");
    assert!(ps.contains("0B (virtual"), "{ps}");
    // Not mounted: plain `ps` lists nothing.
    assert_eq!(env.ok(&["ps", "-q"]), "");
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["ps", "-a", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    // A fresh container changed nothing.
    assert_eq!(env.ok(&["diff", "web"]), "");
    assert_eq!(env.ok(&["diff", &web[..8]]), "");
    env.fails(&["diff", "nosuch"]);
    // The image is pinned while containers use it.
    let err = env.fails(&["rmi", "app:1"]);
    assert!(err.contains("used by a container"), "{err}");
    env.ok(&["prune", "-a", "-f"]);
    assert!(env.ok(&["images", "-q"]).contains(&id.hex()[..12]));
    // rm by name and by prefix; everything the container wrote is gone.
    let dir = env.root.join("containers").join(&web);
    assert!(dir.join("upper").is_dir() && dir.join("meta.json").is_file());
    env.ok(&["rm", "web", &other[..10]]);
    assert!(!dir.exists());
    assert_eq!(
        std::fs::read_dir(env.root.join("containers"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(env.ok(&["ps", "-aq"]), "");
    env.ok(&["rmi", "app:1"]);
    assert_eq!(env.ok(&["images", "-q"]), "");
}

#[test]
fn mount_change_diff_commit() {
    if cannot_mount() {
        return;
    }
    let env = Env::new();
    load_image(&env, "app:1", &[BASE, TOP]);
    let (id, guard) = env.mount("app:1", "mnt", &[]);
    assert_eq!(
        id.len(),
        64,
        "mount of an image prints the new container's ID: {id}"
    );
    let m = guard.path.clone();
    let ps = env.ok(&["ps"]);
    assert!(
        ps.contains(&id[..12]) && ps.contains(m.to_str().unwrap()),
        "{ps}"
    );
    // A second writable mount of the same container is refused.
    let err = env.fails(&["mount", &id, env.dir("mnt2").to_str().unwrap()]);
    assert!(err.contains("already mounted"), "{err}");

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("etc/passwd"))
        .unwrap();
    f.write_all(b"\nuser:x:1000").unwrap();
    drop(f);
    std::fs::write(m.join("etc/new"), "n").unwrap();
    std::fs::remove_file(m.join("etc/hosts")).unwrap();
    std::fs::remove_file(m.join("etc/extra")).unwrap();
    std::fs::remove_dir_all(m.join("var/old")).unwrap();
    std::fs::create_dir_all(m.join("opt/x/y")).unwrap();
    std::fs::write(m.join("opt/x/y/f"), "f").unwrap();
    std::fs::remove_dir_all(m.join("d")).unwrap();
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::write(m.join("d/new"), "new").unwrap();
    std::fs::set_permissions(m.join("usr/bin"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // `d` was removed and made again (opaque): what it held is D.
    let want = "C /d\nD /d/keep\nA /d/new\nC /etc\nD /etc/extra\nD /etc/hosts\nA /etc/new\nC /etc/passwd\n\
                A /opt\nA /opt/x\nA /opt/x/y\nA /opt/x/y/f\nC /usr\nC /usr/bin\nC /var\nD /var/old\n";
    // While mounted...
    assert_eq!(env.ok(&["diff", &id[..12]]), want);
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["diff", &id, "--json"])).unwrap();
    assert_eq!(json[2], serde_json::json!({"Path": "/d/new", "Kind": 1}));
    assert_eq!(
        json[4],
        serde_json::json!({"Path": "/etc/extra", "Kind": 2})
    );
    let merged = tree(&m);
    // ...and after a clean unmount by container name, then remount: same state.
    env.ok(&["umount", &id[..12]]);
    assert!(!is_mounted(&m));
    assert_eq!(env.ok(&["diff", &id]), want);
    let (_, g2) = env.mount(&id, "mnt", &[]);
    assert_eq!(tree(&g2.path), merged);
    drop(g2);

    // Commit: the new image shows exactly the container's tree.
    let layers_before = std::fs::read_dir(env.root.join("layers")).unwrap().count();
    let new_id = env
        .ok(&[
            "commit",
            "-q",
            &id,
            "app:2",
            "-m",
            "edit",
            "--author",
            "T <t@x>",
            "-c",
            "ENV MODE=prod",
            "--change",
            "EXPOSE 8080",
            "-c",
            r#"CMD ["/bin/app", "-v"]"#,
        ])
        .trim()
        .to_string();
    // Committing the same state again stores no second copy of the layer.
    let again = env.ok(&["commit", "-q", &id, "app:2b"]).trim().to_string();
    assert_ne!(again, new_id, "a new config (history) but the same layer");
    assert_eq!(
        std::fs::read_dir(env.root.join("layers")).unwrap().count(),
        layers_before + 1
    );
    assert!(new_id.starts_with("sha256:"), "{new_id}");
    let (_, ro) = env.mount("app:2", "ro", &["--read-only"]);
    assert_eq!(tree(&ro.path), merged);
    assert!(
        std::fs::write(ro.path.join("x"), "x").is_err(),
        "read-only mount accepted a write"
    );
    drop(ro);
    let hist = env.ok(&["history", "app:2"]);
    let first = hist.lines().nth(1).unwrap();
    assert!(
        first.contains("layerfs commit") && first.contains("edit"),
        "{hist}"
    );
    let insp: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", "app:2"])).unwrap();
    assert_eq!(insp[0]["Author"], "T <t@x>");
    assert_eq!(
        insp[0]["Config"]["Env"],
        serde_json::json!(["PATH=/bin", "MODE=prod"])
    );
    assert_eq!(
        insp[0]["Config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    assert_eq!(
        insp[0]["Config"]["Cmd"],
        serde_json::json!(["/bin/app", "-v"])
    );
    assert_eq!(insp[0]["RootFS"]["Layers"].as_array().unwrap().len(), 3);

    // rm refuses a mounted container; rm -f unmounts it first.
    let (_, g3) = env.mount(&id, "mnt", &[]);
    let err = env.fails(&["rm", &id]);
    assert!(err.contains("is mounted"), "{err}");
    env.ok(&["rm", "-f", &id]);
    assert!(!is_mounted(&g3.path));
    assert!(!env.root.join("containers").join(&id).exists());
}

/// The daemon's pid: the process whose command line is the `layerfs mount` that made `mnt`.
fn daemon_pid(mnt: &std::path::Path) -> i32 {
    let want = mnt.to_str().unwrap();
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if pid != me && args.contains(&&b"mount"[..]) && args.contains(&want.as_bytes()) {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "daemons for {want}: {found:?}");
    found[0]
}

#[test]
fn state_survives_a_killed_daemon() {
    if cannot_mount() {
        return;
    }
    let env = Env::new();
    load_image(&env, "app:1", &[BASE]);
    let id = env
        .ok(&["create", "app:1", "--name", "c1"])
        .trim()
        .to_string();
    let (_, g) = env.mount("c1", "mnt", &["-o", "noatime"]);
    let m = g.path.clone();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(m.to_str().unwrap()))
        .unwrap();
    assert!(
        line.contains("noatime"),
        "extra -o options reach the mount: {line}"
    );
    assert!(line.contains(&format!("layerfs-{id}")), "{line}");
    let mut f = std::fs::File::create(m.join("etc/durable")).unwrap();
    f.write_all(b"fsynced data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::remove_file(m.join("etc/hosts")).unwrap();
    let before = tree(&m);

    let pid = daemon_pid(&m);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    // Wait for the kernel to reap it (a pidfd becomes readable at exit).
    let fd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::PidfdFlags::empty(),
    );
    if let Ok(fd) = fd {
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        rustix::event::poll(&mut fds, None).unwrap();
    }
    assert!(
        is_mounted(&m),
        "the dead daemon's mount stays until cleared"
    );
    assert!(
        std::fs::metadata(m.join("etc")).is_err(),
        "a dead mount must not answer"
    );
    let ps = env.ok(&["ps"]);
    assert!(ps.contains("(stale)"), "{ps}");
    env.ok(&["umount", m.to_str().unwrap()]);
    assert!(!is_mounted(&m));
    let (_, g2) = env.mount(&id, "mnt", &[]);
    assert_eq!(
        std::fs::read_to_string(g2.path.join("etc/durable")).unwrap(),
        "fsynced data"
    );
    assert!(!g2.path.join("etc/hosts").exists());
    assert_eq!(tree(&g2.path), before);
    assert_eq!(
        env.ok(&["diff", "c1"]),
        "C /etc\nA /etc/durable\nD /etc/hosts\n"
    );
}

#[test]
fn errors_name_the_problem() {
    let env = Env::new();
    load_image(&env, "app:1", &[BASE]);
    let mnt = env.dir("m");
    let err = env.fails(&["mount", "nosuch", mnt.to_str().unwrap()]);
    assert!(err.contains("no such image or container: nosuch"), "{err}");
    let err = env.fails(&["umount", "nosuch"]);
    assert!(
        err.contains("neither a mount point nor a container"),
        "{err}"
    );
    env.ok(&["create", "app:1", "--name", "c"]);
    let err = env.fails(&["umount", "c"]);
    assert!(err.contains("not mounted"), "{err}");
    let err = env.fails(&["commit", "c", "--compression", "lz4"]);
    assert!(err.contains("unknown compression"), "{err}");
    let err = env.fails(&["commit", "c", "-c", "RUN make"]);
    assert!(err.contains("unsupported instruction"), "{err}");
    let err = env.fails(&["save", "app:1", "-o", "/x", "--format", "zip"]);
    assert!(err.contains("unknown format"), "{err}");
    let err = env.fails(&["mount", "c", mnt.to_str().unwrap(), "-o", "upperdir=/tmp"]);
    assert!(
        err.contains("upperdir and workdir come from the container"),
        "{err}"
    );
}
