//! The runtime and store directories are private (issue 9, items 3 and 4): a user who can
//! write /run/layerfs, a /tmp/layerfs-UID dir or the store can't make root's daemon write
//! through a planted symlink or reach a layer's setuid programs and device nodes.
mod container_common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use container_common::{Env, MountGuard, cannot_mount, is_mounted, is_root};

const NOBODY: &str = "65534";

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Runs `argv` as uid/gid 65534 with no supplementary groups.
fn as_nobody(argv: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .args(argv)
        .env_remove("XDG_RUNTIME_DIR");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The name layerfs gives a mount point's files in the runtime dir.
fn mount_key(mnt: &Path) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(mnt.as_os_str().as_encoded_bytes());
    hex::encode(&h[..16])
}

#[test]
fn store_root_is_private_and_fixed_on_open() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let env = Env::new();
    env.ok(&["images"]);
    assert_eq!(mode(&env.root), 0o700, "a new store must be 0700");

    // A store made by an older layerfs (0755) is tightened and the user told.
    std::fs::set_permissions(&env.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = env.cmd(&["images"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("was mode 755") && err.contains("private"),
        "stderr: {err}"
    );
    assert_eq!(mode(&env.root), 0o700);

    // Another user can no longer reach the layers by path. The temp dir's own mode must not
    // be what stops it.
    std::fs::set_permissions(env.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let layers = env.root.join("layers");
    let o = as_nobody(&["stat", layers.to_str().unwrap()], &[]);
    assert!(!o.status.success(), "uid 65534 could stat {layers:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A store root owned by someone else is refused with the reason, and nothing is created.
    let foreign = env.dir("foreign");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_layerfs"))
        .arg("--root")
        .arg(&foreign)
        .arg("images")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("belongs to uid 65534"), "stderr: {err}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 0);
}

#[test]
fn runtime_dir_is_private_and_files_never_follow_symlinks() {
    if cannot_mount() {
        return;
    }
    let env = Env::new();
    let lower = env.dir("lower");
    std::fs::write(lower.join("f"), b"lower").unwrap();
    let (upper, work) = (env.dir("upper"), env.dir("work"));
    let mnt = env.dir("mnt");

    // An older layerfs left /run/layerfs world-writable, and a user planted symlinks where
    // this mount point's pid and log files go.
    let run = Path::new("/run/layerfs");
    std::fs::create_dir_all(run).unwrap();
    std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let victim = env.path("root-only-file");
    std::fs::write(&victim, b"precious").unwrap();
    let key = mount_key(&mnt);
    let pid_file = run.join(format!("{key}.pid"));
    let log_file = run.join(format!("{key}.log"));
    for f in [&pid_file, &log_file] {
        let _ = std::fs::remove_file(f);
        std::os::unix::fs::symlink(&victim, f).unwrap();
    }

    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    env.ok(&["mount", "-o", &opts, mnt.to_str().unwrap()]);
    let guard = MountGuard::new(&env, &mnt);
    assert!(is_mounted(&mnt));

    assert_eq!(mode(run), 0o700, "the runtime dir must be made private");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let md = std::fs::symlink_metadata(&pid_file).unwrap();
    assert!(
        md.is_file(),
        "the pid file must replace the planted symlink"
    );
    assert_eq!(md.mode() & 0o7777, 0o600);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let md = std::fs::symlink_metadata(&log_file).unwrap();
    assert!(md.is_file() && md.mode() & 0o7777 == 0o600);

    drop(guard);
    assert!(!is_mounted(&mnt));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!pid_file.exists(), "the pid file is removed at unmount");
}

#[test]
fn unprivileged_runtime_dir_of_another_owner_is_refused() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let env = Env::new();
    for d in ["", "lower", "mnt"] {
        let p = env.dir(d);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // root (an attacker, from uid 65534's point of view) made the dir in the shared TMPDIR.
    let tmpdir = env.dir("shared-tmp");
    std::fs::set_permissions(&tmpdir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let planted = tmpdir.join(format!("layerfs-{NOBODY}"));
    std::fs::create_dir(&planted).unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o777)).unwrap();

    let lower = env.path("lower");
    let mnt = env.path("mnt");
    let opts = format!("lowerdir={}", lower.display());
    let o = as_nobody(
        &[
            env!("CARGO_BIN_EXE_layerfs"),
            "mount",
            "-o",
            &opts,
            mnt.to_str().unwrap(),
        ],
        &[("TMPDIR", tmpdir.to_str().unwrap())],
    );
    let _guard = MountGuard::new(&env, &mnt);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "mount succeeded: {err}");
    assert!(
        err.contains(planted.to_str().unwrap()) && err.contains("belongs to uid 0"),
        "stderr: {err}"
    );
    assert!(!is_mounted(&mnt));
    assert_eq!(std::fs::read_dir(&planted).unwrap().count(), 0);
}
