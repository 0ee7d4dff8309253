//! Mounting for the tests: which implementation, the guard that unmounts on drop, and readiness
//! by poll(2) on `/proc/self/mountinfo`.
//!
//! `Impl::under_test()` picks the implementation compared with the kernel:
//! `LAYERFS_TEST_IMPL=layerfs` (default), `kernel` (the harness checked against itself; also
//! `LAYERFS_DIFF_SELF=1`) or `fuse-overlayfs` (to measure how sensitive the comparisons are).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::mount::{MountFlags, UnmountFlags};

/// How long a mount or an unmount may take to show in mountinfo before the test fails.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause before retrying an unmount that found the mount busy.
const BUSY_RETRY: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Kernel,
    Layerfs,
    FuseOverlayfs,
}

impl Impl {
    /// The implementation compared against the kernel, from the environment.
    pub fn under_test() -> Impl {
        if std::env::var("LAYERFS_DIFF_SELF").is_ok_and(|v| v == "1") {
            return Impl::Kernel;
        }
        match std::env::var("LAYERFS_TEST_IMPL").as_deref() {
            Ok("kernel") => Impl::Kernel,
            Ok("fuse-overlayfs") => Impl::FuseOverlayfs,
            Ok("layerfs") | Err(_) => Impl::Layerfs,
            Ok(other) => {
                panic!("LAYERFS_TEST_IMPL={other}: expected one of layerfs, kernel, fuse-overlayfs")
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Impl::Kernel => "kernel",
            Impl::Layerfs => "layerfs",
            Impl::FuseOverlayfs => "fuse-overlayfs",
        }
    }

    /// Whether this implementation hides and interprets `.wh.` names in lower layers.
    pub fn reads_oci_whiteouts(self) -> bool {
        !matches!(self, Impl::Kernel)
    }
}

/// The directories of one overlay: lowers top first, and upper + work unless read-only.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<(PathBuf, PathBuf)>,
    pub mode: Mode,
}

/// Which overlay options both sides run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The kernel's defaults (`redirect_dir=off,index=off,metacopy=off`); layerfs is told
    /// `redirect_dir=off`.
    Legacy,
    /// The kernel with what layerfs does by default (`redirect_dir=on`); layerfs with its
    /// defaults.
    Features,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Legacy => "legacy",
            Mode::Features => "features",
        }
    }
}

impl Dirs {
    fn options(&self, lowers: &[PathBuf]) -> String {
        let lower: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let mut o = format!("lowerdir={}", lower.join(":"));
        if let Some((upper, work)) = &self.upper {
            o += &format!(",upperdir={},workdir={}", upper.display(), work.display());
        }
        o
    }
}

/// A live mount. Unmounts on drop (also while a test panics); `unmount()` reports failures.
pub struct Mount {
    imp: Impl,
    mnt: PathBuf,
    dirs: Dirs,
    mounted: bool,
    /// The empty extra lower dir the kernel needs for a read-only mount of one layer.
    _extra_lower: Option<tempfile::TempDir>,
}

impl Mount {
    pub fn new(imp: Impl, dirs: &Dirs, mnt: &Path) -> Result<Mount, String> {
        std::fs::create_dir_all(mnt).map_err(|e| format!("mkdir {}: {e}", mnt.display()))?;
        let extra = do_mount(imp, dirs, mnt)?;
        Ok(Mount {
            imp,
            mnt: mnt.to_path_buf(),
            dirs: dirs.clone(),
            mounted: true,
            _extra_lower: extra,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mnt
    }

    pub fn imp(&self) -> Impl {
        self.imp
    }

    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// Unmounts and waits until mountinfo no longer lists the mount point. On failure the
    /// mount is detached all the same (nothing leaks) and the failure reported.
    pub fn unmount(mut self) -> Result<(), String> {
        self.mounted = false;
        unmount_impl(self.imp, &self.mnt).inspect_err(|_| {
            let _ = force_unmount(&self.mnt);
        })
    }

    /// Unmounts and mounts the same directories again (same implementation).
    pub fn remount(&mut self) -> Result<(), String> {
        self.mounted = false;
        unmount_impl(self.imp, &self.mnt).inspect_err(|_| {
            let _ = force_unmount(&self.mnt);
        })?;
        self._extra_lower = do_mount(self.imp, &self.dirs, &self.mnt)?;
        self.mounted = true;
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        if let Err(e) = unmount_impl(self.imp, &self.mnt) {
            eprintln!("unmount {} on drop: {e}", self.mnt.display());
            let _ = force_unmount(&self.mnt);
        }
    }
}

/// Mounts and waits for mountinfo; returns the extra lower dir the kernel may need.
fn do_mount(imp: Impl, dirs: &Dirs, mnt: &Path) -> Result<Option<tempfile::TempDir>, String> {
    if mount_entry(mnt).is_some() {
        return Err(format!("{} is already a mount point", mnt.display()));
    }
    let mut extra = None;
    match imp {
        Impl::Kernel => {
            let mut lowers = dirs.lowers.clone();
            if dirs.upper.is_none() && lowers.len() == 1 {
                let t = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
                lowers.push(t.path().to_path_buf());
                extra = Some(t);
            }
            // The defaults named explicitly so a kernel built with other defaults still
            // gives the semantics layerfs follows.
            let features = match dirs.mode {
                Mode::Legacy => "redirect_dir=off,index=off,metacopy=off,xino=off",
                Mode::Features => "redirect_dir=on,index=off,metacopy=off,xino=off",
            };
            let data = format!("{},{features}", dirs.options(&lowers));
            let data = std::ffi::CString::new(data).map_err(|e| e.to_string())?;
            rustix::mount::mount(
                "overlay",
                mnt,
                "overlay",
                MountFlags::empty(),
                Some(data.as_c_str()),
            )
            .map_err(|e| format!("mount -t overlay on {}: {e}", mnt.display()))?;
        }
        Impl::Layerfs => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_layerfs"));
            let mut o = dirs.options(&dirs.lowers);
            if dirs.mode == Mode::Legacy && dirs.upper.is_some() {
                o += ",redirect_dir=off";
            }
            cmd.args(["mount", "-o", &o]).arg(mnt);
            run_daemon_start(cmd, mnt, "layerfs mount")?;
            // The contract: `layerfs mount` returns only once the mount is live.
            if mount_entry(mnt).is_none() {
                let live_later = wait_for(mnt, true).is_ok();
                let _ = force_unmount(mnt);
                return Err(format!(
                    "layerfs mount returned before {} was in /proc/self/mountinfo \
                         (it appeared later: {live_later})",
                    mnt.display()
                ));
            }
        }
        Impl::FuseOverlayfs => {
            let mut cmd = Command::new("fuse-overlayfs");
            cmd.args(["-o", &dirs.options(&dirs.lowers)]).arg(mnt);
            run_daemon_start(cmd, mnt, "fuse-overlayfs")?;
        }
    }
    wait_for(mnt, true)?;
    Ok(extra)
}

/// Runs a command that mounts and leaves a daemon behind. Its stderr goes to a file beside the
/// mount point, never to a pipe: a daemon that keeps an inherited pipe open would make the
/// wait for the pipe's end last as long as the daemon.
fn run_daemon_start(mut cmd: Command, mnt: &Path, what: &str) -> Result<(), String> {
    let log = mnt.with_extension("stderr");
    let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .map_err(|e| format!("run {what}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let msg = std::fs::read_to_string(&log).unwrap_or_default();
    Err(format!("{what} {} failed ({status}): {msg}", mnt.display()))
}

fn unmount_impl(imp: Impl, mnt: &Path) -> Result<(), String> {
    match imp {
        Impl::Kernel | Impl::FuseOverlayfs => unmount_retrying(mnt)?,
        Impl::Layerfs => {
            // Retried while busy, like the kernel's unmount above: a process outside the test
            // may hold the mount for a moment.
            let deadline = Instant::now() + MOUNT_TIMEOUT;
            loop {
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_layerfs"));
                cmd.arg("umount").arg(mnt);
                match run_daemon_start(cmd, mnt, "layerfs umount") {
                    Ok(()) => break,
                    Err(e) if e.contains(" is busy") && Instant::now() < deadline => {
                        std::thread::sleep(BUSY_RETRY)
                    }
                    Err(e) => {
                        let _ = force_unmount(mnt);
                        return Err(e);
                    }
                }
            }
        }
    }
    wait_for(mnt, false)
}

/// umount(2), retried for a while on EBUSY: a process outside the test (a tree walker of
/// another job on the machine) may hold the mount for a moment.
fn unmount_retrying(mnt: &Path) -> Result<(), String> {
    let deadline = Instant::now() + MOUNT_TIMEOUT;
    loop {
        match rustix::mount::unmount(mnt, UnmountFlags::empty()) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::BUSY) if Instant::now() < deadline => {
                std::thread::sleep(BUSY_RETRY)
            }
            Err(e) => return Err(format!("umount {}: {e}", mnt.display())),
        }
    }
}

/// Last resort after a failed unmount, so a failing test leaves no mount behind.
pub fn force_unmount(mnt: &Path) -> Result<(), String> {
    rustix::mount::unmount(mnt, UnmountFlags::DETACH)
        .map_err(|e| format!("umount -l {}: {e}", mnt.display()))
}

/// Waits until `mnt` is (or is no longer) a mount point: poll(2) on mountinfo, which wakes on
/// every change of the mount table (layerfs's own `mountinfo` module, no sleeping).
pub fn wait_for(mnt: &Path, present: bool) -> Result<(), String> {
    layerfs::mountinfo::wait_for(mnt, present, MOUNT_TIMEOUT).map_err(|e| e.to_string())
}

/// The filesystem type of the topmost mount at exactly `mnt`, from /proc/self/mountinfo.
pub fn mount_entry(mnt: &Path) -> Option<String> {
    let table = layerfs::mountinfo::read_mountinfo().ok()?;
    layerfs::mountinfo::mount_at(&table, mnt).map(|m| m.fstype.clone())
}

/// The pids of processes whose command line mentions `mnt` (the FUSE daemon of a mount).
pub fn daemon_pids(mnt: &Path) -> Vec<u32> {
    let want = mnt.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmd.split(|b| *b == 0).any(|arg| arg == want) {
            pids.push(pid);
        }
    }
    pids
}

/// Unblocks a hung scenario: aborts the FUSE connection of every mount under `base`, kills
/// the daemons serving them (processes whose argv names the mount point, which the test
/// started) and detaches the mounts. Touches nothing outside `base`.
pub fn abort_mounts_under(base: &Path) {
    let Ok(table) = layerfs::mountinfo::read_mountinfo() else {
        return;
    };
    let want = base.to_string_lossy().into_owned();
    for m in table {
        let (dev, mp, fstype) = (m.device.as_str(), m.mount_point, m.fstype.as_str());
        if !mp.to_string_lossy().starts_with(&want) {
            continue;
        }
        if fstype.starts_with("fuse") {
            ensure_fusectl();
            if let Some(minor) = dev.strip_prefix("0:") {
                let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
            }
            for pid in daemon_pids(&mp) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        let _ = force_unmount(&mp);
    }
}

fn ensure_fusectl() {
    if std::fs::read_dir("/sys/fs/fuse/connections").is_ok_and(|mut d| d.next().is_some()) {
        return;
    }
    let _ = rustix::mount::mount(
        "fusectl",
        "/sys/fs/fuse/connections",
        "fusectl",
        MountFlags::empty(),
        None,
    );
}
