//! layerfs as a normal user (issue 11), run from root as CI does: each test creates an
//! unprivileged user (`useradd -m`), makes /dev/fuse usable by it when the machine has it 0600,
//! and undoes both on drop (also on failure).
//!
//! - `userns_differential_against_kernel`: the same operations, as that user inside
//!   `unshare -rm` (how rootless podman runs its mount program), on kernel overlayfs mounted
//!   there with `userxattr` and on layerfs; every outcome, the merged tree and the upper layer
//!   (whiteouts, `user.overlay.opaque`) must be identical.
//! - `fusermount_mount_as_normal_user`: no namespace, through fusermount3: the mount works,
//!   `rm -r d; mkdir d` gives an opaque directory, and the errors name the file and the fix.
//! - `uidmapping_like_fuse_overlayfs` / `override_stat_round_trip` (as root): the owners shown and
//!   stored with `uidmapping=`/`gidmapping=` equal fuse-overlayfs's; `xattr_permissions=2` keeps
//!   owner, mode and device type in `user.containers.override_stat`.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::mount::{force_unmount, mount_entry};

/// An unprivileged user for one test, and /dev/fuse opened up for it; both undone on drop.
struct Unpriv {
    name: String,
    fuse_mode: Option<u32>,
}

impl Unpriv {
    fn new(tag: &str) -> Unpriv {
        common::require_root();
        let name = format!("lfs{tag}{}", std::process::id() % 100000);
        let _ = Command::new("userdel").args(["-r", &name]).output();
        let st = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .status()
            .expect("useradd");
        assert!(st.success(), "useradd {name}");
        let mut u = Unpriv {
            name,
            fuse_mode: None,
        };
        let mode = std::fs::metadata("/dev/fuse")
            .expect("/dev/fuse")
            .permissions()
            .mode();
        if mode & 0o006 != 0o006 {
            u.fuse_mode = Some(mode & 0o7777);
            std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666))
                .expect("chmod /dev/fuse");
        }
        u
    }

    /// Runs `script` with sh as the user (arguments $1...), returns (status ok, stdout, stderr).
    fn sh(&self, script: &str, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new("su");
        cmd.args([&self.name, "-s", "/bin/sh", "-c", script, "sh"])
            .args(args);
        let out = cmd.output().expect("su");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A scratch directory the user owns, with a copy of the binary it can run.
    fn scratch(&self) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::Builder::new()
            .prefix("lfs-rootless")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let bin = t.path().join("layerfs-bin");
        std::fs::copy(env!("CARGO_BIN_EXE_layerfs"), &bin).expect("copy binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let st = Command::new("chown")
            .args(["-R", &self.name])
            .arg(t.path())
            .status()
            .expect("chown");
        assert!(st.success());
        (t, bin)
    }
}

impl Drop for Unpriv {
    fn drop(&mut self) {
        if let Some(m) = self.fuse_mode {
            let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(m));
        }
        // -f: also while a daemon of a failed run still lives (its mount is detached by the
        // test's other guard, so it exits).
        let _ = Command::new("userdel")
            .args(["-f", "-r", &self.name])
            .output();
    }
}

/// Detaches whatever is still mounted under `base` (a failed run inside the namespace leaves
/// nothing outside it, but a fusermount3 mount would stay).
struct UnmountUnder(PathBuf);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        for m in ["m", "mk", "ml"] {
            let p = self.0.join(m);
            if mount_entry(&p).is_some() {
                let _ = force_unmount(&p);
            }
        }
    }
}

/// Builds the lower layers and the mount, runs the operations, prints outcomes, the merged
/// tree and (after unmounting) the upper layer. $1 = base dir, $2 = kernel|layerfs, $3 = binary.
const SCRIPT: &str = r#"
set -u
B=$1; IMPL=$2; BIN=$3
cd "$B" || exit 90
rm -rf l1 l2 u w m; mkdir -p l1/d/sub l1/dd l1/empty l2 u w m
echo a > l1/a; echo b > l1/b; echo c > l2/c; echo e12345 > l1/e; echo f > l1/d/f
echo g > l1/d/sub/g; echo h > l1/dd/h; echo top > l2/a; chmod 4755 l2/c
if [ "$IMPL" = kernel ]; then
  mount -t overlay overlay -o "lowerdir=l2:l1,upperdir=u,workdir=w,userxattr" m || exit 91
else
  "$BIN" mount -o "lowerdir=$B/l2:$B/l1,upperdir=$B/u,workdir=$B/w" m 2>"$B/err" || {
    cat "$B/err" >&2; exit 92; }
fi
cd m
r() { "$@" >/dev/null 2>&1; echo "$* -> $?"; }
r sh -c 'echo new > newfile'
r sh -c 'echo more >> a'
r rm b
r rm -r d
r mkdir d
r sh -c 'echo inside > d/n'
r mv c c2
r mv dd dd2
r chmod 600 a
r ln a a.link
r ln -s a sym
r mkfifo fifo
r setfattr -n user.k -v v a
r getfattr -n user.k a
r truncate -s 3 e
r rmdir empty
r mkdir -p x/y/z
r rm -r x/y
r sh -c 'echo again > b'
r rm nosuch
r mkdir a
r rmdir d
cd ..
echo '## merged'
find m -printf '%p %y %m %U:%G %l\n' | sort
find m -type f -exec md5sum {} + | sort
getfattr -d -m '^user\.k' m/a 2>/dev/null
if [ "$IMPL" = kernel ]; then umount m; else "$BIN" umount m; fi
echo '## upper'
find u -printf '%p %y %m %U:%G %l\n' | sort
find u -type c -exec stat -c '%n %t:%T' {} + | sort
getfattr -R -d -m '^user\.overlay\.opaque' u 2>/dev/null | grep -v '^$'
"#;

#[test]
fn userns_differential_against_kernel() {
    let user = Unpriv::new("ns");
    let (t, bin) = user.scratch();
    let _g = UnmountUnder(t.path().to_path_buf());
    let run = |imp: &str| {
        let base = t.path().join(imp);
        std::fs::create_dir(&base).expect("mkdir");
        Command::new("chown")
            .arg(&user.name)
            .arg(&base)
            .status()
            .expect("chown");
        let (ok, out, err) = user.sh(
            &format!(
                "unshare -rm sh -c '{}' sh \"$@\"",
                SCRIPT.replace('\'', "'\\''")
            ),
            &[
                base.to_str().expect("utf-8"),
                imp,
                bin.to_str().expect("utf-8"),
            ],
        );
        assert!(ok, "{imp} run failed: {out}\n{err}");
        out
    };
    let kernel = run("kernel");
    let layerfs = run("layerfs");
    assert!(kernel.contains("## upper"), "{kernel}");
    // The scenario really exercised the rootless markers: a whiteout and an opaque directory.
    assert!(
        kernel.contains("u/c c 0 0:0") && kernel.contains("user.overlay.opaque=\"y\""),
        "{kernel}"
    );
    if kernel != layerfs {
        let diff: Vec<String> = kernel
            .lines()
            .zip(layerfs.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("kernel:  {a}\nlayerfs: {b}"))
            .collect();
        panic!(
            "layerfs differs from kernel overlayfs in a user namespace:\n{}\n--- kernel\n{kernel}\n--- layerfs\n{layerfs}",
            diff.join("\n")
        );
    }
}

#[test]
fn fusermount_mount_as_normal_user() {
    let user = Unpriv::new("fm");
    let (t, bin) = user.scratch();
    let _g = UnmountUnder(t.path().to_path_buf());
    let b = t.path().to_str().expect("utf-8").to_owned();
    let bin = bin.to_str().expect("utf-8");
    let script = r#"
        cd "$1" && mkdir -p l/d u w m m2 && echo f > l/d/f || exit 90
        "$2" mount -o lowerdir=l,upperdir=u,workdir=w m || exit 91
        rm -r m/d && mkdir m/d && echo recreated
        getfattr -n user.overlay.opaque --only-values u/d; echo
        stat -c '%a' w/work
        "$2" mount -o lowerdir=l,upperdir=u,workdir=w,allow_other m2 2>&1
        "$2" umount m || exit 93
        PATH=/nonexistent "$2" mount -o lowerdir=l m 2>&1
        exit 0
    "#;
    let (ok, out, err) = user.sh(script, &[&b, bin]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("recreated\ny\n700\n"), "{out}\n{err}");
    assert!(
        out.contains("user_allow_other is off in /etc/fuse.conf"),
        "{out}"
    );
    assert!(
        out.contains(
            "fusermount3 not found: a normal user mounts through it (apt-get install fuse3)"
        ),
        "{out}"
    );
    // The marker choice is said where the user sees it.
    assert!(err.contains("using user.overlay.* markers"), "{err}");
    assert!(mount_entry(&t.path().join("m")).is_none());
}

/// Unmounts a FUSE mount on drop.
struct Umount(PathBuf);

impl Drop for Umount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg(&self.0).status();
        if mount_entry(&self.0).is_some() {
            let _ = force_unmount(&self.0);
        }
    }
}

/// layerfs on `t/ml` (upper `t/ul`) and fuse-overlayfs on `t/mf` over `t/lower`.
fn mount_both(t: &Path, opts: &str) -> Vec<Umount> {
    let mut guards = Vec::new();
    for (imp, cmd) in [
        ("l", vec![env!("CARGO_BIN_EXE_layerfs"), "mount"]),
        ("f", vec!["fuse-overlayfs"]),
    ] {
        for d in ["u", "w", "m"] {
            std::fs::create_dir_all(t.join(format!("{d}{imp}"))).expect("mkdir");
        }
        let o = format!(
            "lowerdir={0}/lower,upperdir={0}/u{imp},workdir={0}/w{imp},{opts}",
            t.display()
        );
        let st = Command::new(cmd[0])
            .args(&cmd[1..])
            .args(["-o", &o])
            .arg(t.join(format!("m{imp}")))
            .status()
            .expect("mount");
        assert!(st.success(), "{cmd:?} -o {o}");
        guards.push(Umount(t.join(format!("m{imp}"))));
    }
    guards
}

fn owner(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).expect("stat");
    format!("{}:{}", m.uid(), m.gid())
}

#[test]
fn uidmapping_like_fuse_overlayfs() {
    common::require_root();
    let t = tempfile::tempdir().expect("tempdir");
    let lower = t.path().join("lower");
    std::fs::create_dir(&lower).expect("mkdir");
    for (n, id) in [("a", 0), ("b", 1), ("c", 70000)] {
        std::fs::write(lower.join(n), n).expect("write");
        std::os::unix::fs::chown(lower.join(n), Some(id), Some(id)).expect("chown");
    }
    let _g = mount_both(
        t.path(),
        "uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1:1:100000:65536",
    );
    let mut seen = Vec::new();
    for imp in ["l", "f"] {
        let m = t.path().join(format!("m{imp}"));
        std::fs::write(m.join("new"), "n").expect("create");
        std::os::unix::fs::chown(m.join("new"), Some(100005), Some(1000)).expect("chown");
        std::fs::create_dir(m.join("nd")).expect("mkdir");
        let u = t.path().join(format!("u{imp}"));
        seen.push(
            ["a", "b", "c", "new"]
                .iter()
                .map(|n| owner(&m.join(n)))
                .chain([owner(&u.join("new")), owner(&u.join("nd"))])
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        seen[0],
        [
            "1000:1000",
            "100000:100000",
            "65534:65534",
            "100005:1000",
            "6:0",
            "65534:65534"
        ]
    );
    assert_eq!(seen[0], seen[1], "layerfs vs fuse-overlayfs");
}

#[test]
fn override_stat_round_trip() {
    common::require_root();
    let t = tempfile::tempdir().expect("tempdir");
    let lower = t.path().join("lower");
    std::fs::create_dir(&lower).expect("mkdir");
    std::fs::write(lower.join("su"), "x").expect("write");
    let set = Command::new("setfattr")
        .args(["-n", "user.containers.override_stat", "-v", "0:0:04755"])
        .arg(lower.join("su"))
        .status()
        .expect("setfattr");
    assert!(set.success());
    let _g = mount_both(t.path(), "xattr_permissions=2");
    let m = t.path().join("ml");
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(m.join("su")).expect("stat");
    assert_eq!((md.uid(), md.mode()), (0, 0o104755));
    std::fs::write(m.join("f"), "f").expect("create");
    std::os::unix::fs::chown(m.join("f"), Some(5), Some(6)).expect("chown");
    std::fs::set_permissions(m.join("f"), std::fs::Permissions::from_mode(0o2711)).expect("chmod");
    let st = Command::new("mknod")
        .arg(m.join("null"))
        .args(["c", "1", "3"])
        .status()
        .expect("mknod");
    assert!(st.success());
    let md = std::fs::metadata(m.join("f")).expect("stat");
    assert_eq!((md.uid(), md.gid(), md.mode()), (5, 6, 0o102711));
    let x = |p: &Path| {
        let o = Command::new("getfattr")
            .args(["--only-values", "-n", "user.containers.override_stat"])
            .arg(p)
            .output()
            .expect("getfattr");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let u = t.path().join("ul");
    assert_eq!(x(&u.join("f")), "5:6:02711");
    // Root makes the device node itself (user.* xattrs can't be set on one).
    assert_eq!(x(&u.join("null")), "");
    let md = std::fs::symlink_metadata(m.join("null")).expect("stat");
    assert_eq!(
        (md.mode() & 0o170000, md.rdev()),
        (0o020000, rustix::fs::makedev(1, 3))
    );
    // Never listed through the mount.
    let l = Command::new("getfattr")
        .args(["-d", "-m", "-"])
        .arg(m.join("f"))
        .output()
        .expect("getfattr");
    assert!(!String::from_utf8_lossy(&l.stdout).contains("override_stat"));
}

/// Loads the image, mounts a container, changes it, commits and saves (oci-dir), printing what
/// the mount shows and the diff. $1 layout, $2 binary, $3 work dir; the store comes from the
/// environment (LAYERFS_ROOT for root, XDG_DATA_HOME for the user).
const FLOW: &str = r#"
set -eu
L=$1 BIN=$2 W=$3 M=$3/m
mkdir -p "$M"
"$BIN" load -i "$L" >/dev/null
C=$("$BIN" mount demo:1 "$M" 2>/dev/null)
echo changed > $M/etc/motd
rm $M/bin/tool
rm -r $M/etc && mkdir $M/etc && echo new > $M/etc/hosts
chmod 4711 $M/usr/sbin/su2
stat -c '%u:%g %a %F %t:%T' $M/dev/null $M/dev/fifo $M/usr/sbin/su2
touch -h -d @1000000000 $M/etc/hosts $M/etc $M/bin $M/usr/sbin/su2 $M/dev $M/usr/sbin $M/usr $M
"$BIN" diff "$C"
"$BIN" umount "$M"
"$BIN" commit "$C" demo:2 >/dev/null
"$BIN" save demo:2 -o "$W/out" --format oci-dir
"#;

/// Every entry of every layer of the image saved in the oci-dir `out`: path, type, mode,
/// owner, device numbers and size (mtimes left out: a whiteout carries the time of the rm).
fn layer_entries(out: &Path) -> Vec<String> {
    use std::io::Read;
    let json = |p: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json")
    };
    let blob = |d: &serde_json::Value| {
        let d = d.as_str().expect("digest");
        out.join("blobs/sha256").join(&d["sha256:".len()..])
    };
    let index = json(out.join("index.json"));
    let manifest = json(blob(&index["manifests"][0]["digest"]));
    let mut lines = Vec::new();
    for (i, l) in manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .enumerate()
    {
        let raw = std::fs::read(blob(&l["digest"])).expect("layer");
        let mut data = Vec::new();
        if raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::read::Decoder::new(&raw[..])
                .expect("zstd")
                .read_to_end(&mut data)
                .expect("unzstd");
        } else if raw.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut data)
                .expect("gunzip");
        } else {
            data = raw;
        }
        let mut a = tar::Archive::new(&data[..]);
        for e in a.entries().expect("entries") {
            let e = e.expect("entry");
            let h = e.header();
            lines.push(format!(
                "layer{i} {} {:?} {:o} {}:{} {:?}:{:?} {}",
                String::from_utf8_lossy(&e.path_bytes()),
                h.entry_type(),
                h.mode().expect("mode"),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
                h.device_major().ok().flatten(),
                h.device_minor().ok().flatten(),
                h.size().expect("size"),
            ));
        }
    }
    lines
}

#[test]
fn image_round_trip_rootless_matches_root() {
    let user = Unpriv::new("img");
    let (t, bin) = user.scratch();
    let _g = UnmountUnder(t.path().join("user"));
    let _g2 = UnmountUnder(t.path().join("root"));
    // An image with files of root and of another user, a setuid program, a device node, a FIFO.
    let rootfs = t.path().join("rootfs");
    for d in ["etc", "bin", "usr/sbin", "home/al", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("mkdir");
    }
    std::fs::write(rootfs.join("etc/motd"), "hi\n").expect("write");
    std::fs::write(rootfs.join("bin/tool"), "t\n").expect("write");
    std::fs::write(rootfs.join("usr/sbin/su2"), "s\n").expect("write");
    std::fs::set_permissions(
        rootfs.join("usr/sbin/su2"),
        PermissionsExt::from_mode(0o4755),
    )
    .expect("chmod");
    std::fs::write(rootfs.join("home/al/f"), "x\n").expect("write");
    std::os::unix::fs::chown(rootfs.join("home/al/f"), Some(1000), Some(100)).expect("chown");
    std::os::unix::fs::chown(rootfs.join("home/al"), Some(1000), Some(1000)).expect("chown");
    let sh = |c: &str| {
        let st = Command::new("sh").args(["-c", c]).status().expect("sh");
        assert!(st.success(), "{c}");
    };
    let r = rootfs.display();
    sh(&format!(
        "mknod {r}/dev/null c 1 3 && mkfifo {r}/dev/fifo && chmod 700 {r}/home/al"
    ));
    let mkimage = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mkimage");
    let layout = t.path().join("layout");
    let st = Command::new(&mkimage)
        .env("MKIMAGE_KEEP_OWNERS", "1")
        .arg(&rootfs)
        .arg(&layout)
        .arg("demo:1")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("mkimage");
    assert!(st.success());
    sh(&format!("chmod -R a+rX {}", layout.display()));
    let flow = t.path().join("flow.sh");
    std::fs::write(&flow, FLOW).expect("write flow");
    let (b, l, f) = (
        bin.to_str().expect("utf-8"),
        layout.to_str().expect("utf-8"),
        flow.to_str().expect("utf-8"),
    );

    let root_dir = t.path().join("root");
    std::fs::create_dir(&root_dir).expect("mkdir");
    let out = Command::new("sh")
        .args([f, l, b, root_dir.to_str().expect("utf-8")])
        .env("LAYERFS_ROOT", root_dir.join("store"))
        .output()
        .expect("flow as root");
    let as_root = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "root: {as_root}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let user_dir = t.path().join("user");
    std::fs::create_dir(&user_dir).expect("mkdir");
    sh(&format!("chown {} {}", user.name, user_dir.display()));
    let u = user_dir.to_str().expect("utf-8");
    let (ok, as_user, err) = user.sh(
        "XDG_DATA_HOME=\"$3/data\" unshare -rm sh \"$4\" \"$1\" \"$2\" \"$3\"",
        &[l, b, u, f],
    );
    assert!(ok, "user: {as_user}{err}");
    // The mount shows the same owners, modes and types (the device node and FIFO are empty
    // files with an override xattr in the user's store).
    assert_eq!(as_root, as_user);
    assert!(as_user.contains("0:0 4711 regular file"), "{as_user}");
    assert!(
        as_user.contains("0:0 644 character special file 1:3"),
        "{as_user}"
    );
    let (root_entries, user_entries) = (
        layer_entries(&root_dir.join("out")),
        layer_entries(&user_dir.join("out")),
    );
    assert!(
        root_entries
            .iter()
            .any(|e| e.contains("home/al/f") && e.contains(" 1000:100 ")),
        "{root_entries:#?}"
    );
    assert_eq!(root_entries, user_entries);
    // Nothing of the override xattrs leaks into the image.
    assert!(!user_entries.iter().any(|e| e.contains("override")));
}
