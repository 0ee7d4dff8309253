//! The implementations compared, as mount-command templates, and the mount guard.
//!
//! Each union implementation is a command that mounts `lowerdir` (top first, `:`-separated),
//! `upperdir` and `workdir` at a mount point and returns; readiness is then confirmed from the
//! mount table. `raw` is no mount at all: the runner hands workloads a flattened copy.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::bench::scratch;
use crate::mountinfo as mounts;
use crate::{Error, Result};

/// How long a mount or unmount command may take before it is killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the mount table may lag behind a command that returned.
const TABLE_TIMEOUT: Duration = Duration::from_secs(10);

pub const BUILTIN: [&str; 4] = ["layerfs", "overlay", "fuse-overlayfs", "raw"];

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// This binary: `EXE mount -o ... MNT`, `EXE umount MNT`.
    Layerfs { exe: PathBuf },
    /// Kernel overlayfs: `mount -t overlay overlay -o ... MNT`, `umount MNT`.
    Overlay,
    /// `fuse-overlayfs -o ... MNT`, `fusermount3 -u MNT`.
    FuseOverlayfs,
    /// A flattened copy of the merged tree on the same file system.
    Raw,
    /// `--vs 'CMD'`: run by `sh -c` with {lowerdir} {upperdir} {workdir} {mnt} substituted.
    Custom { template: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Implementation {
    pub name: String,
    pub kind: Kind,
}

/// What one mount puts together. `lowers` is top first, as in `lowerdir=`.
pub struct Stack<'a> {
    pub lowers: &'a [PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
    pub mnt: &'a Path,
}

impl Implementation {
    pub fn builtin(name: &str, layerfs_exe: &Path) -> Option<Self> {
        let kind = match name {
            "layerfs" => Kind::Layerfs {
                exe: layerfs_exe.to_path_buf(),
            },
            "overlay" => Kind::Overlay,
            "fuse-overlayfs" => Kind::FuseOverlayfs,
            "raw" => Kind::Raw,
            _ => return None,
        };
        Some(Implementation {
            name: name.into(),
            kind,
        })
    }

    /// `--vs 'CMD'`: named after the command's first word.
    pub fn custom(template: &str, taken: &[String]) -> Result<Self> {
        let first = template.split_whitespace().next().ok_or_else(|| {
            Error::Usage("--vs needs a mount command, e.g. --vs 'mytool -o lowerdir={lowerdir},upperdir={upperdir},workdir={workdir} {mnt}'".into())
        })?;
        if !template.contains("{mnt}") {
            return Err(Error::Usage(format!(
                "--vs '{template}': the command must contain {{mnt}} (and usually {{lowerdir}}, {{upperdir}}, {{workdir}})"
            )));
        }
        let base = Path::new(first)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into());
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}#{n}");
            n += 1;
        }
        Ok(Implementation {
            name,
            kind: Kind::Custom {
                template: template.into(),
            },
        })
    }

    pub fn is_raw(&self) -> bool {
        self.kind == Kind::Raw
    }

    /// The mount command as a person would type it, placeholders kept.
    pub fn command_text(&self) -> String {
        let opts = "lowerdir={lowerdir},upperdir={upperdir},workdir={workdir}";
        match &self.kind {
            Kind::Layerfs { exe } => format!("{} mount -o {opts} {{mnt}}", exe.display()),
            Kind::Overlay => format!("mount -t overlay overlay -o {opts} {{mnt}}"),
            Kind::FuseOverlayfs => format!("fuse-overlayfs -o {opts} {{mnt}}"),
            Kind::Raw => "(flattened copy, no mount)".into(),
            Kind::Custom { template } => template.clone(),
        }
    }

    /// A reason this implementation cannot run here, found without mounting anything.
    pub fn unavailable(&self) -> Option<String> {
        let root = nix::unistd::geteuid().is_root();
        match &self.kind {
            Kind::Overlay if !root => Some("kernel overlayfs needs root here".into()),
            Kind::FuseOverlayfs if find_program("fuse-overlayfs").is_none() => Some(
                "fuse-overlayfs is not installed (Debian: apt-get install fuse-overlayfs)".into(),
            ),
            Kind::FuseOverlayfs | Kind::Layerfs { .. } if !Path::new("/dev/fuse").exists() => {
                Some("/dev/fuse is missing".into())
            }
            Kind::Layerfs { exe } if !exe.is_file() => {
                Some(format!("{} does not exist", exe.display()))
            }
            _ => None,
        }
    }

    /// First line of `--version`, for the report.
    pub fn version(&self) -> Option<String> {
        let (prog, arg): (PathBuf, &str) = match &self.kind {
            Kind::Layerfs { exe } => (exe.clone(), "--version"),
            Kind::FuseOverlayfs => (find_program("fuse-overlayfs")?, "--version"),
            Kind::Overlay => {
                return Some(format!(
                    "kernel {}",
                    nix::sys::utsname::uname().ok()?.release().to_string_lossy()
                ));
            }
            Kind::Raw | Kind::Custom { .. } => return None,
        };
        let out = Command::new(prog)
            .arg(arg)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let name = self.name.as_str();
        text.lines()
            .find(|l| l.starts_with(name) && l.contains("version"))
            .or_else(|| text.lines().find(|l| l.contains("version")))
            .map(|l| l.trim().to_string())
    }

    fn mount_argv(&self, s: &Stack) -> Result<Vec<String>> {
        let opts = options(s)?;
        let mnt = utf8(s.mnt)?;
        Ok(match &self.kind {
            Kind::Layerfs { exe } => vec![utf8(exe)?, "mount".into(), "-o".into(), opts, mnt],
            Kind::Overlay => ["mount", "-t", "overlay", "overlay", "-o", &opts, &mnt]
                .map(String::from)
                .to_vec(),
            Kind::FuseOverlayfs => ["fuse-overlayfs", "-o", &opts, &mnt]
                .map(String::from)
                .to_vec(),
            Kind::Custom { template } => {
                let lower: Vec<String> = s.lowers.iter().map(|p| utf8(p)).collect::<Result<_>>()?;
                let cmd = template
                    .replace("{lowerdir}", &shell_quote(&lower.join(":")))
                    .replace("{upperdir}", &shell_quote(&utf8(s.upper)?))
                    .replace("{workdir}", &shell_quote(&utf8(s.work)?))
                    .replace("{mnt}", &shell_quote(&mnt));
                vec!["sh".into(), "-c".into(), cmd]
            }
            Kind::Raw => return Err(Error::Usage("raw is not mounted".into())),
        })
    }

    fn umount_argv(&self, mnt: &Path) -> Result<Vec<String>> {
        let mnt = utf8(mnt)?;
        let root = nix::unistd::geteuid().is_root();
        Ok(match &self.kind {
            Kind::Layerfs { exe } => vec![utf8(exe)?, "umount".into(), mnt],
            Kind::FuseOverlayfs if find_program("fusermount3").is_some() => {
                vec!["fusermount3".into(), "-u".into(), mnt]
            }
            Kind::Custom { .. } if !root => vec!["fusermount3".into(), "-u".into(), mnt],
            _ => vec!["umount".into(), mnt],
        })
    }

    /// Mounts `stack` and waits until the mount table shows it. `log` receives the command's
    /// output (a file, not a pipe: a daemon that keeps the descriptor must not block us).
    pub fn mount(&self, stack: &Stack, log: &Path) -> Result<Mounted> {
        let argv = self.mount_argv(stack)?;
        // The guard exists before the command runs: whatever happens next, it unmounts.
        let mut guard = Mounted {
            mnt: stack.mnt.to_path_buf(),
            umount: self.umount_argv(stack.mnt)?,
            active: true,
        };
        if let Err(e) = run_command(&self.name, "mount", &argv, log) {
            // A command may fail after mounting: unmount only what is really there.
            guard.active = mounts::read_mountinfo()
                .map(|m| mounts::is_mounted(&m, stack.mnt))
                .unwrap_or(true);
            return Err(e);
        }
        // If the mount never shows up, the scratch directory's cleanup detaches a late one.
        mounts::wait_for(stack.mnt, true, TABLE_TIMEOUT).inspect_err(|_| guard.active = false)?;
        Ok(guard)
    }
}

/// A live mount; unmounted on drop (lazily detached if the unmount command fails).
#[derive(Debug)]
pub struct Mounted {
    mnt: PathBuf,
    umount: Vec<String>,
    active: bool,
}

impl Mounted {
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Unmounts and waits until the mount table no longer shows it.
    pub fn unmount(mut self) -> Result<()> {
        self.active = false;
        let log = self.mnt.with_extension("umount.log");
        let r = run_command("unmount", "umount", &self.umount, &log)
            .and_then(|()| mounts::wait_for(&self.mnt, false, TABLE_TIMEOUT));
        if r.is_err() {
            scratch::detach(&self.mnt);
        }
        r
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let log = self.mnt.with_extension("umount.log");
        let ok = run_command("unmount", "umount", &self.umount, &log)
            .and_then(|()| mounts::wait_for(&self.mnt, false, TABLE_TIMEOUT))
            .is_ok();
        if !ok {
            scratch::detach(&self.mnt);
        }
    }
}

fn options(s: &Stack) -> Result<String> {
    let mut parts = Vec::new();
    for p in s
        .lowers
        .iter()
        .map(|p| p.as_path())
        .chain([s.upper, s.work])
    {
        let t = utf8(p)?;
        if t.contains([',', ':', '=']) {
            return Err(Error::Usage(format!(
                "{t}: a layer path with ',', ':' or '=' cannot be passed in mount options; use another --dir or layer path"
            )));
        }
        parts.push(t);
    }
    let lower: Vec<String> = parts[..s.lowers.len()].to_vec();
    Ok(format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        parts[s.lowers.len()],
        parts[s.lowers.len() + 1]
    ))
}

fn utf8(p: &Path) -> Result<String> {
    p.to_str()
        .map(String::from)
        .ok_or_else(|| Error::Usage(format!("{}: the bench needs UTF-8 paths", p.display())))
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `argv` with output to `log`, killing it after `COMMAND_TIMEOUT`.
fn run_command(who: &str, what: &str, argv: &[String], log: &Path) -> Result<()> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| Error::Usage(format!("{who}: empty {what} command")))?;
    let out = File::create(log).map_err(|e| Error::io("create", log, e))?;
    let err = out.try_clone().map_err(|e| Error::io("dup", log, e))?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| Error::Usage(format!("{who}: cannot run {prog}: {e}")))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(s) => s.map_err(|e| Error::io("wait for", prog, e))?,
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(Error::Usage(format!(
                "{who}: `{}` did not return within {} s (a command that stays in the foreground cannot be benchmarked; make it daemonize)",
                argv.join(" "),
                COMMAND_TIMEOUT.as_secs()
            )));
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(4).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(Error::Usage(format!(
        "{who}: {what} failed ({status}): `{}`: {}",
        argv.join(" "),
        tail.join(" / ").trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_join_lowers_top_first_and_reject_separators() {
        let lowers = [PathBuf::from("/d/l1"), PathBuf::from("/d/l0")];
        let s = Stack {
            lowers: &lowers,
            upper: Path::new("/d/u"),
            work: Path::new("/d/w"),
            mnt: Path::new("/d/m"),
        };
        assert_eq!(
            options(&s).unwrap(),
            "lowerdir=/d/l1:/d/l0,upperdir=/d/u,workdir=/d/w"
        );
        let bad = [PathBuf::from("/d/a,b")];
        let s = Stack { lowers: &bad, ..s };
        assert!(matches!(options(&s), Err(Error::Usage(m)) if m.contains("/d/a,b")));
    }

    #[test]
    fn custom_templates_are_named_and_quoted() {
        let taken = vec!["mytool".to_string()];
        let i =
            Implementation::custom("/usr/bin/mytool -o lowerdir={lowerdir} {mnt}", &taken).unwrap();
        assert_eq!(i.name, "mytool#2");
        assert!(Implementation::custom("mytool -o x", &[]).is_err());
        assert!(Implementation::custom("  ", &[]).is_err());
        let lowers = [PathBuf::from("/d/it's")];
        let s = Stack {
            lowers: &lowers,
            upper: Path::new("/d/u"),
            work: Path::new("/d/w"),
            mnt: Path::new("/d/m"),
        };
        let argv = i.mount_argv(&s).unwrap();
        assert_eq!(argv[2], "/usr/bin/mytool -o lowerdir='/d/it'\\''s' '/d/m'");
    }
}
