//! Installing layerfs like a system tool: man pages rendered by `man -l`, completions loaded by
//! bash, zsh and fish, `findmnt` showing FSTYPE `fuse.layerfs`, and the Debian package from `scripts/deb`
//! installed into the real system with dpkg, then `mount -t fuse.layerfs` through the
//! installed binary, then removed. Needs root (mounts, dpkg).
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_layerfs");

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// The FSTYPE /proc/self/mountinfo gives `mnt`, if mounted.
fn fstype(mnt: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-")?;
        (Path::new(f[4]) == mnt).then(|| f[sep + 1].to_owned())
    })
}

fn wait_unmounted(mnt: &Path) {
    // poll(2) on mountinfo: no sleeping.
    layerfs::mountinfo::wait_for(mnt, false, Duration::from_secs(20)).unwrap();
}

/// Unmounts on drop (a failing assertion must not leave a mount behind).
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        if fstype(&self.0).is_some() {
            let _ = Command::new(EXE).arg("umount").arg(&self.0).status();
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A lower, upper and work dir with one lower file.
fn layers(dir: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let [l, u, w, m] = ["lower", "upper", "work", "mnt"].map(|n| dir.join(n));
    for d in [&l, &u, &w, &m] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(l.join("hello"), "from the lower layer\n").unwrap();
    (l, u, w, m)
}

#[test]
fn man_pages_render_with_man_and_document_mount_options() {
    let dir = tempfile::tempdir().unwrap();
    let listed = stdout(Command::new(EXE).args(["generate", "man"]).arg(dir.path()));
    let pages: Vec<&str> = listed.lines().collect();
    assert!(pages.len() >= 20, "{pages:?}");
    for page in &pages {
        let out = run(Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(page)
            .env("MANWIDTH", "100")
            .env("MAN_DISABLE_SECCOMP", "1"));
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}:\n{text}"
        );
        assert!(!err.contains("warning"), "{page}: {err}");
    }
    let mount = stdout(
        Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(dir.path().join("layerfs-mount.1"))
            .env("MANWIDTH", "200"),
    );
    for want in [
        "MOUNT OPTIONS",
        "lowerdir=DIR[:DIR...]",
        "upperdir=DIR",
        "passthrough=on|off",
        "timeout=SECONDS",
        "fuse.layerfs",
    ] {
        assert!(mount.contains(want), "{want} missing:\n{mount}");
    }
    let top = stdout(
        Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(dir.path().join("layerfs.1"))
            .env("MANWIDTH", "200"),
    );
    for sub in ["mount", "load", "save", "bench", "pull", "layerfs-mount(1)"] {
        assert!(top.contains(sub), "{sub} missing:\n{top}");
    }
    assert!(!top.contains("generate"), "hidden subcommand shown:\n{top}");
}

#[test]
fn completions_load_in_bash_and_name_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let bash = dir.path().join("layerfs.bash");
    let script = run(Command::new(EXE).args(["generate", "completions", "bash"])).stdout;
    std::fs::write(&bash, script).unwrap();
    let shown = stdout(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source {}; complete -p layerfs", bash.display())),
    );
    assert!(shown.trim_end().ends_with(" layerfs"), "{shown}");
    // The function bash calls proposes subcommands for `layerfs lo<TAB>`.
    let words = stdout(Command::new("bash").arg("-c").arg(format!(
        "source {}; COMP_WORDS=(layerfs lo); COMP_CWORD=1; COMP_LINE='layerfs lo'; \
         COMP_POINT=10; $(complete -p layerfs | sed 's/.*-F \\([^ ]*\\).*/\\1/') layerfs lo layerfs; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    )));
    let mut words: Vec<&str> = words.lines().collect();
    words.sort_unstable();
    assert_eq!(words, ["load", "login", "logout"]);
    // zsh: compinit finds the function in fpath and binds it to layerfs.
    let zdir = dir.path().join("zsh");
    std::fs::create_dir(&zdir).unwrap();
    let zsh = run(Command::new(EXE).args(["generate", "completions", "zsh"])).stdout;
    assert!(zsh.starts_with(b"#compdef layerfs"));
    std::fs::write(zdir.join("_layerfs"), zsh).unwrap();
    run(Command::new("zsh").arg("-n").arg(zdir.join("_layerfs")));
    let bound = stdout(Command::new("zsh").arg("-fc").arg(format!(
        "fpath=({0} $fpath); autoload -Uz compinit; compinit -u -d {0}/.zcompdump; \
         print -r -- ${{_comps[layerfs]}}",
        zdir.display()
    )));
    assert_eq!(bound.trim(), "_layerfs");
    // fish: the completions fish itself computes for `layerfs lo`.
    let fish = dir.path().join("layerfs.fish");
    let script = run(Command::new(EXE).args(["generate", "completions", "fish"])).stdout;
    std::fs::write(&fish, script).unwrap();
    let offered = stdout(Command::new("fish").arg("-c").arg(format!(
        "source {}; complete -C 'layerfs lo'",
        fish.display()
    )));
    let mut words: Vec<&str> = offered
        .lines()
        .map(|l| l.split('\t').next().unwrap_or(l))
        .collect();
    words.sort_unstable();
    assert_eq!(words, ["load", "login", "logout"], "{offered}");
    let bad = Command::new(EXE)
        .args(["generate", "completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn findmnt_shows_fuse_layerfs() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (l, u, w, m) = layers(dir.path());
    run(Command::new(EXE)
        .arg("mount")
        .arg("-o")
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            l.display(),
            u.display(),
            w.display()
        ))
        .arg(&m));
    let _g = Unmount(m.clone());
    assert_eq!(fstype(&m).as_deref(), Some("fuse.layerfs"));
    let shown = stdout(Command::new("findmnt").args(["-n", "-o", "FSTYPE"]).arg(&m));
    assert_eq!(shown.trim(), "fuse.layerfs");
    run(Command::new(EXE).arg("umount").arg(&m));
    assert_eq!(fstype(&m), None);
}

/// Removes the package on drop, so a failure leaves the system as it was.
struct Package;
impl Drop for Package {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-r", "layerfs"]).output();
    }
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "layerfs"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
}

#[test]
fn debian_package_installs_man_completions_and_mount_helper() {
    if !root() {
        return;
    }
    assert!(
        !installed() && !Path::new("/usr/bin/layerfs").exists(),
        "a layerfs package or /usr/bin/layerfs is already installed: `dpkg -r layerfs` first \
         (this test installs and removes its own)"
    );
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The binary cargo already built, no compression: the package builds in seconds.
    let deb = stdout(
        Command::new(repo.join("scripts/deb"))
            .args(["--binary", EXE, "--out"])
            .arg(dir.path())
            .env("DEB_COMPRESSION", "none"),
    );
    let deb = PathBuf::from(deb.lines().last().unwrap());
    let info = stdout(Command::new("dpkg-deb").arg("-f").arg(&deb));
    assert!(info.contains("Package: layerfs"), "{info}");
    assert!(info.contains("fuse3"), "{info}");

    let _pkg = Package;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(installed());
    let v = stdout(Command::new("/usr/bin/layerfs").arg("--version"));
    assert!(v.starts_with("layerfs "), "{v}");

    let page = stdout(
        Command::new("man")
            .args(["-P", "cat", "-l", "/usr/share/man/man1/layerfs-mount.1.gz"])
            .env("MANWIDTH", "200"),
    );
    assert!(
        page.contains("MOUNT OPTIONS") && page.contains("lowerdir="),
        "{page}"
    );
    let by_name = stdout(Command::new("man").args(["-P", "cat", "layerfs"]));
    assert!(by_name.contains("layerfs-mount(1)"), "{by_name}");
    let comp = stdout(
        Command::new("bash")
            .arg("-c")
            .arg("source /usr/share/bash-completion/completions/layerfs; complete -p layerfs"),
    );
    assert!(comp.trim_end().ends_with(" layerfs"), "{comp}");
    for f in [
        "/usr/share/zsh/vendor-completions/_layerfs",
        "/usr/share/fish/vendor_completions.d/layerfs.fish",
    ] {
        assert!(Path::new(f).is_file(), "{f}");
    }

    // mount(8) -> mount.fuse3 -> `layerfs` found on PATH: the installed binary.
    let (l, u, w, m) = layers(dir.path());
    run(Command::new("mount")
        .args(["-t", "fuse.layerfs", "layerfs"])
        .arg(&m)
        .arg("-o")
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            l.display(),
            u.display(),
            w.display()
        ))
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"));
    let guard = Unmount(m.clone());
    assert_eq!(fstype(&m).as_deref(), Some("fuse.layerfs"));
    assert_eq!(
        std::fs::read_to_string(m.join("hello")).unwrap(),
        "from the lower layer\n"
    );
    std::fs::write(m.join("new"), "written through the mount\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(u.join("new")).unwrap(),
        "written through the mount\n"
    );
    let daemon = daemon_exe(&m);
    assert_eq!(daemon.as_deref(), Some(Path::new("/usr/bin/layerfs")));
    run(Command::new("umount").arg(&m));
    wait_unmounted(&m);
    drop(guard);

    run(Command::new("dpkg").args(["-r", "layerfs"]));
    assert!(!installed());
    assert!(!Path::new("/usr/bin/layerfs").exists());
    assert!(!Path::new("/usr/share/man/man1/layerfs.1.gz").exists());
}

/// The executable of the process serving the FUSE mount at `mnt` (its /dev/fuse holder whose
/// command line names `mnt`).
fn daemon_exe(mnt: &Path) -> Option<PathBuf> {
    let want = mnt.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let holds_mnt = cmdline.split(|&b| b == 0).any(|a| a == want);
        let exe = std::fs::read_link(e.path().join("exe")).ok();
        if holds_mnt && exe.as_deref() == Some(Path::new("/usr/bin/layerfs")) {
            return exe;
        }
    }
    None
}
