//! A real client: Debian's podman with `overlay.mount_program` set to the binary under test,
//! in a private store (`--root`, `--runroot`, `--tmpdir` in a temp dir). An image archive is
//! built offline (umoci + skopeo), loaded, a container created and mounted, files written and
//! deleted, `podman diff` must list exactly those changes, the image mounted read-only, and
//! everything unmounted and removed again. No container runtime is started.
//!
//! containers-storage runs the mount program as `PROG -o OPTS MERGED` with its cwd in the
//! store's overlay dir and stderr on a pipe it reads to the end; OPTS is
//! `lowerdir=A:B,upperdir=U,workdir=W,` (podman 4.3 leaves a trailing comma) for a container
//! and `lowerdir=DIFF:A:B` for a read-only image mount. It unmounts with `fusermount3 -u`.
//! Under `LAYERFS_DIFF_SELF=1` podman uses kernel overlayfs (no mount program).
mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::diff::test_tmp;
use common::mount::{Impl, abort_mounts_under, daemon_pids, force_unmount};
use common::tree::{View, private_markers, snapshot};

/// Each external command gets at most this long (a mount program that keeps podman's stderr
/// pipe open would make podman wait forever).
const CMD_TIMEOUT: &str = "120";

fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{shown}: cannot run: {e} (is it installed? see scripts/install-deps)")
    });
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn timed(prog: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", CMD_TIMEOUT, prog]);
    c
}

/// Builds a two-layer image as a docker-archive with umoci and skopeo, offline.
/// Layer 1: etc/hello, data/{keep,del}, old/{a,b}. Layer 2: deletes data/del, adds
/// data/second, replaces old/ by a directory holding only c.
fn build_archive(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let tag = format!("{}:t", layout.display());
    run(timed("umoci").args(["init", "--layout"]).arg(&layout));
    run(timed("umoci").args(["new", "--image", &tag]));
    let b1 = dir.join("b1");
    run(timed("umoci").args(["unpack", "--image", &tag]).arg(&b1));
    let rootfs = b1.join("rootfs");
    for (p, data) in [
        ("etc/hello", "hello\n"),
        ("data/keep", "keep\n"),
        ("data/del", "del\n"),
        ("old/a", "a\n"),
        ("old/b", "b\n"),
    ] {
        let p = rootfs.join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write");
    }
    run(timed("umoci").args(["repack", "--image", &tag]).arg(&b1));
    let b2 = dir.join("b2");
    run(timed("umoci").args(["unpack", "--image", &tag]).arg(&b2));
    let rootfs = b2.join("rootfs");
    std::fs::remove_file(rootfs.join("data/del")).expect("rm");
    std::fs::write(rootfs.join("data/second"), "second\n").expect("write");
    std::fs::remove_dir_all(rootfs.join("old")).expect("rm old");
    std::fs::create_dir(rootfs.join("old")).expect("mkdir old");
    std::fs::write(rootfs.join("old/c"), "c\n").expect("write");
    run(timed("umoci").args(["repack", "--image", &tag]).arg(&b2));
    run(timed("umoci").args(["config", "--image", &tag, "--config.cmd", "/bin/true"]));
    let archive = dir.join("image.tar");
    let dest = format!("docker-archive:{}:localhost/lfstest:1", archive.display());
    run(timed("skopeo").args(["copy", &format!("oci:{tag}"), &dest]));
    archive
}

/// podman with a private store; removes its containers, images and mounts on drop.
struct Podman {
    dir: PathBuf,
    mount_program: Option<PathBuf>,
}

impl Podman {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = timed("podman");
        c.env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args([
                "--storage-driver",
                "overlay",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
            ]);
        if let Some(p) = &self.mount_program {
            c.arg("--storage-opt")
                .arg(format!("overlay.mount_program={}", p.display()));
        }
        c.args(args);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        run(&mut self.cmd(args))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for args in [
            &["umount", "--all", "--force"][..],
            &["image", "umount", "--all", "--force"][..],
            &["rm", "--all", "--force"][..],
            &["rmi", "--all", "--force"][..],
        ] {
            let _ = self.cmd(args).output();
        }
        // Whatever is still mounted under the store (a failed test) goes too.
        abort_mounts_under(&self.dir);
    }
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = dir.to_string_lossy().into_owned();
    info.lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&want)))
        .map(String::from)
        .collect()
}

fn fstype_of(mnt: &Path) -> String {
    common::mount::mount_entry(mnt).unwrap_or_else(|| panic!("{} is not mounted", mnt.display()))
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// What the image shows: layer 2 over layer 1.
fn check_image_view(m: &Path) {
    assert_eq!(
        std::fs::read_to_string(m.join("etc/hello")).expect("hello"),
        "hello\n"
    );
    assert_eq!(
        names(&m.join("data")),
        set(&["keep", "second"]),
        "data/ (del whited out)"
    );
    assert_eq!(
        names(&m.join("old")),
        set(&["c"]),
        "old/ replaced by layer 2"
    );
}

#[test]
fn podman_with_mount_program() {
    common::require_root();
    let imp = Impl::under_test();
    let tmp = tempfile::Builder::new()
        .prefix("podman")
        .tempdir_in(test_tmp())
        .expect("tempdir");
    let archive = build_archive(tmp.path());
    let dir = tmp.path().join("store");
    for d in ["root", "run", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    // Only what podman insists on; the mount program comes with --storage-opt, as a user
    // would give it.
    let conf = format!(
        "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
        dir.join("root").display(),
        dir.join("run").display()
    );
    std::fs::write(dir.join("storage.conf"), conf).expect("storage.conf");
    std::fs::write(dir.join("containers.conf"), "").expect("containers.conf");
    let mount_program = match imp {
        Impl::Kernel => None,
        Impl::Layerfs => Some(PathBuf::from(env!("CARGO_BIN_EXE_layerfs"))),
        Impl::FuseOverlayfs => Some(PathBuf::from("/usr/bin/fuse-overlayfs")),
    };
    let pm = Podman {
        dir: dir.clone(),
        mount_program,
    };
    let loaded = pm.run(&["load", "-i", archive.to_str().expect("utf-8")]);
    assert!(
        loaded.contains("localhost/lfstest:1"),
        "podman load: {loaded}"
    );
    pm.run(&[
        "create",
        "--network",
        "none",
        "--name",
        "c1",
        "localhost/lfstest:1",
    ]);

    // Mount the container and change it.
    let m = PathBuf::from(pm.run(&["mount", "c1"]));
    let fstype = fstype_of(&m);
    match imp {
        Impl::Kernel => assert_eq!(fstype, "overlay"),
        _ => assert!(
            fstype.starts_with("fuse"),
            "{} mounted as {fstype}",
            m.display()
        ),
    }
    if imp != Impl::Kernel {
        assert_eq!(
            daemon_pids(&m).len(),
            1,
            "one daemon serves {}",
            m.display()
        );
    }
    check_image_view(&m);
    std::fs::write(m.join("etc/new"), "new\n").expect("write etc/new");
    std::fs::remove_file(m.join("data/keep")).expect("rm data/keep");
    std::fs::remove_file(m.join("etc/hello")).expect("rm etc/hello");
    std::fs::create_dir(m.join("newdir")).expect("mkdir newdir");
    std::fs::write(m.join("newdir/f"), "f\n").expect("write newdir/f");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("data/second"))
        .expect("open data/second");
    std::io::Write::write_all(&mut f, b"more\n").expect("append");
    drop(f);
    std::fs::remove_dir_all(m.join("old")).expect("rm -r old");

    let diff: BTreeSet<String> = pm.run(&["diff", "c1"]).lines().map(String::from).collect();
    let want = set(&[
        "C /etc",
        "A /etc/new",
        "D /etc/hello",
        "C /data",
        "D /data/keep",
        "C /data/second",
        "A /newdir",
        "A /newdir/f",
        "D /old",
    ]);
    assert_eq!(diff, want, "podman diff c1");

    // The container's upper dir is in the kernel's format.
    let upper = PathBuf::from(pm.run(&[
        "inspect",
        "--format",
        "{{.GraphDriver.Data.UpperDir}}",
        "c1",
    ]));
    for gone in ["data/keep", "etc/hello", "old"] {
        let md = std::fs::symlink_metadata(upper.join(gone)).expect("whiteout in upper");
        assert!(
            md.file_type().is_char_device() && md.rdev() == 0,
            "{gone} in the upper is not a 0/0 whiteout"
        );
    }
    if imp != Impl::Kernel {
        // (The kernel keeps its own origin/impure xattrs there.)
        let markers = private_markers(&snapshot(&upper, View::RawUpper));
        assert!(markers.is_empty(), "upper dir: {markers:?}");
    }

    pm.run(&["umount", "c1"]);
    assert!(
        common::mount::mount_entry(&m).is_none(),
        "{} still mounted",
        m.display()
    );
    assert!(
        daemon_pids(&m).is_empty(),
        "daemon of {} still running",
        m.display()
    );

    // Mounted again, the changes are there.
    let m2 = PathBuf::from(pm.run(&["mount", "c1"]));
    assert_eq!(
        std::fs::read_to_string(m2.join("data/second")).expect("read"),
        "second\nmore\n"
    );
    assert_eq!(names(&m2.join("data")), set(&["second"]));
    assert!(!m2.join("old").exists());
    pm.run(&["umount", "c1"]);

    // The image, read-only.
    let im = PathBuf::from(pm.run(&["image", "mount", "localhost/lfstest:1"]));
    check_image_view(&im);
    let err = std::fs::write(im.join("data/x"), "x").expect_err("image mount must be read-only");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "write to image mount: {err}"
    );
    pm.run(&["image", "umount", "localhost/lfstest:1"]);
    assert!(
        common::mount::mount_entry(&im).is_none(),
        "image still mounted"
    );

    pm.run(&["rm", "c1"]);
    pm.run(&["rmi", "localhost/lfstest:1"]);
    let left = mounts_under(&dir);
    for l in &left {
        if let Some(p) = l.split(' ').nth(4) {
            let _ = force_unmount(Path::new(p));
        }
    }
    assert!(left.is_empty(), "mounts left behind by podman: {left:#?}");
    let images = pm.run(&["images", "-q"]);
    assert!(images.is_empty(), "images left: {images}");
}
