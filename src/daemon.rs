//! `layerfs mount` / `layerfs umount`: start the FUSE daemon and return once the mount is
//! live; stop it again.
//!
//! Start-up: options are parsed and every layer is opened in the calling process, so a bad
//! option or path fails before anything is mounted. Then the process forks; the child mounts,
//! answers the kernel's INIT (fuser does this inside `Session::new`), records its pid under the
//! run directory, writes "ok" into a pipe and serves. The parent exits 0 on "ok", or prints the
//! child's error and exits 1.
//!
//! Stop: `umount` unmounts (also a stale mount whose daemon died: "Transport endpoint is not
//! connected"), then waits for the recorded daemon to exit through a pidfd.
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::fuse::LayerFs;
use crate::mountopts::{self, KernelFlag, MountOptions};
use crate::overlay::{self, Overlay};
use crate::{Error, Result, mountinfo, sys};

/// Mounts a union described by `opts` at `mountpoint`; returns once it is live (or, in the
/// foreground, once it is unmounted).
pub fn mount_overlay(
    opts: &MountOptions,
    mountpoint: &Path,
    foreground: bool,
    debug: bool,
) -> Result<()> {
    let mnt = absolute(mountpoint)?;
    match std::fs::metadata(&mnt) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::Usage(format!(
                "mount point {} is not a directory",
                mnt.display()
            )));
        }
        Err(e) => {
            return Err(Error::Usage(format!(
                "mount point {}: {e} (create it with mkdir -p)",
                mnt.display()
            )));
        }
    }
    let cfg = overlay::Config {
        lowers: opts
            .lowerdirs
            .iter()
            .map(|p| absolute(p))
            .collect::<Result<_>>()?,
        upper: opts.upperdir.as_deref().map(absolute).transpose()?,
        work: opts.workdir.as_deref().map(absolute).transpose()?,
        userxattr: opts.userxattr,
        redirect_dir: opts.redirect_dir_on(),
        fsync: opts.fsync,
        ownership: ownership(&opts.ownership),
        quirks: overlay::Quirks {
            static_nlink: opts.static_nlink,
            ino32: opts.ino32,
            noacl: opts.noacl,
            noxattrs: opts.noxattrs,
        },
    };
    // The runtime dir first: a foreign or planted one is refused whatever else is wrong.
    let run = RunDir::open()?;
    check_fuse_access(opts)?;
    let ov = Arc::new(Overlay::new(&cfg)?);
    if debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    if foreground {
        return serve(ov, opts, &mnt, &run, None);
    }
    let (rd, wr) = rustix::pipe::pipe().map_err(|e| Error::io("pipe", "", e.into()))?;
    // The one unsafe call outside `sys`: fork is sound only while single-threaded, which holds
    // here (no thread has been started: the FUSE session's threads start in the child).
    #[allow(unsafe_code)]
    // SAFETY: the process is single-threaded at this point (see above).
    let forked = unsafe { sys::fork() };
    match forked.map_err(|e| Error::io("fork", "", e.into()))? {
        None => {
            drop(rd);
            let status = std::fs::File::from(wr);
            let _ = rustix::process::setsid();
            let code = match serve(ov, opts, &mnt, &run, Some(status)) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            };
            std::process::exit(code);
        }
        Some(child) => {
            drop(wr);
            let mut r = std::fs::File::from(rd);
            let mut msg = String::new();
            let _ = r.read_to_string(&mut msg);
            if msg == "ok" {
                return Ok(());
            }
            let _ = sys::wait_pid_exit(child, 1000);
            if msg.is_empty() {
                msg = "the daemon exited before the mount was live".into();
            }
            Err(Error::Usage(format!("mount {}: {msg}", mnt.display())))
        }
    }
}

/// What a normal user needs to mount, checked up front so that a failure names the file and
/// the fix instead of a bare "Permission denied".
fn check_fuse_access(opts: &MountOptions) -> Result<()> {
    if sys::is_host_root() {
        return Ok(());
    }
    let dev = Path::new("/dev/fuse");
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        return Err(Error::Usage(format!(
            "/dev/fuse is not accessible: {e} (it must exist and be read-write for you: as \
             root, `modprobe fuse` and `chmod 0666 /dev/fuse`; in a container, pass \
             --device /dev/fuse)"
        )));
    }
    if rustix::process::geteuid().is_root() {
        // Root of a user namespace: the mount is made with mount(2), no helper needed.
        return Ok(());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    if !std::env::split_paths(&path).any(|d| d.join("fusermount3").is_file()) {
        return Err(Error::Usage(
            "fusermount3 not found: a normal user mounts through it (apt-get install fuse3)".into(),
        ));
    }
    if opts.allow_other {
        let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
        if !conf.lines().any(|l| l.trim() == "user_allow_other") {
            return Err(Error::Usage(
                "user_allow_other is off in /etc/fuse.conf: a normal user's mount may use \
                 allow_other/allow_root only when that file holds the line user_allow_other \
                 (add it as root, or mount without allow_other)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// The overlay's view of the ownership options.
fn ownership(o: &mountopts::Ownership) -> overlay::owners::Ownership {
    use overlay::owners::{IdRange, SECURITY_OVERRIDE_XATTR, USER_OVERRIDE_XATTR};
    let ranges = |v: &[mountopts::IdRange]| {
        v.iter()
            .map(|r| IdRange {
                disk: r.disk,
                shown: r.shown,
                len: r.len,
            })
            .collect()
    };
    overlay::owners::Ownership {
        uid_map: ranges(&o.uid_map),
        gid_map: ranges(&o.gid_map),
        squash_to_root: o.squash_to_root,
        squash_uid: o.squash_uid,
        squash_gid: o.squash_gid,
        override_xattr: match o.xattr_permissions {
            1 => Some(SECURITY_OVERRIDE_XATTR),
            2 => Some(USER_OVERRIDE_XATTR),
            _ => None,
        },
    }
}

/// Mounts and serves until unmounted. `status` (background mode) receives "ok" or the error.
pub fn serve(
    ov: Arc<Overlay>,
    opts: &MountOptions,
    mnt: &Path,
    run: &RunDir,
    status: Option<std::fs::File>,
) -> Result<()> {
    let fs = LayerFs::new(
        ov,
        Duration::from_secs_f64(opts.timeout_secs),
        opts.passthrough,
    );
    let config = fuse_config(opts);
    let session = match fuser::Session::new(fs, mnt, &config) {
        Ok(s) => s,
        Err(e) => {
            let err = Error::io("mount", mnt, e);
            if let Some(mut s) = status {
                let _ = s.write_all(err.to_string().as_bytes());
            }
            return Err(err);
        }
    };
    raise_readahead(mnt);
    let key = mount_key(mnt);
    let pid_name = run.record_pid(&key, mnt);
    if let Some(mut s) = status {
        let _ = s.write_all(b"ok");
        drop(s);
        let log = run.open_log(&key);
        let _ = sys::detach_stdio(log);
    }
    // Every file the daemon itself makes exists by now. From here on it only creates what the
    // kernel asks for, whose modes arrive already masked by the caller's umask: ours must not
    // mask them again.
    sys::set_umask(0);
    let r = session.run();
    if let Some(p) = pid_name {
        run.remove(&p);
    }
    run.remove_if_empty(&format!("{key}.log"));
    r.map_err(|e| Error::io("serve", mnt, e))
}

/// The FUSE subtype: mounts show as `fuse.layerfs` (findmnt FSTYPE, /proc/mounts), the type
/// `mount -t fuse.layerfs` and fstab use.
pub const SUBTYPE: &str = "layerfs";

fn fuse_config(opts: &MountOptions) -> Config {
    let mut mo = vec![
        MountOption::FSName(opts.fsname.clone().unwrap_or_else(|| "layerfs".into())),
        MountOption::Subtype(SUBTYPE.into()),
        MountOption::DefaultPermissions,
    ];
    // fuser's own mount(2) (as root) passes the type "fuse" and keeps `Subtype` for fusermount3
    // only, so the mount would show as plain `fuse`. The kernel's FUSE takes `subtype=` as a
    // mount parameter too: given here, findmnt shows `fuse.layerfs`. Not for fusermount3 (not
    // root), which gets `Subtype` and must not see the option twice.
    if rustix::process::geteuid().is_root() {
        mo.push(MountOption::CUSTOM(format!("subtype={SUBTYPE}")));
    }
    let has = |f: KernelFlag| opts.flags.contains(&f);
    // Like kernel overlayfs, setuid programs and device nodes work unless turned off.
    mo.push(if has(KernelFlag::NoSuid) {
        MountOption::NoSuid
    } else {
        MountOption::Suid
    });
    mo.push(if has(KernelFlag::NoDev) {
        MountOption::NoDev
    } else {
        MountOption::Dev
    });
    if has(KernelFlag::NoExec) {
        mo.push(MountOption::NoExec);
    }
    if has(KernelFlag::NoAtime) {
        mo.push(MountOption::NoAtime);
    }
    if opts.read_only || opts.upperdir.is_none() {
        mo.push(MountOption::RO);
    }
    for o in &opts.passthrough_mount_opts {
        mo.push(MountOption::CUSTOM(o.clone()));
    }
    let mut c = Config::default();
    c.mount_options = mo;
    // As root, everyone may use the mount (permissions still apply), like kernel overlayfs.
    c.acl = if opts.allow_other || rustix::process::geteuid().is_root() {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    c.n_threads = Some(opts.threads.unwrap_or(cpus.clamp(4, 16)));
    c.clone_fd = true;
    c
}

/// Readahead of the FUSE mount's backing device, in KiB. The kernel starts FUSE mounts at
/// 128 KiB, which makes cold sequential reads of lower files several times slower than
/// overlayfs; 4 MiB brings them close (measured: 385 MB/s -> 2.0 GB/s).
const READAHEAD_KB: u32 = 4096;

/// Raises the readahead of the mount at `mnt` (best effort: needs root). The device number comes
/// from mountinfo, not from stat, which would be a request to this very daemon.
fn raise_readahead(mnt: &Path) {
    let Ok(table) = mountinfo::read_mountinfo() else {
        return;
    };
    let Some(dev) = mountinfo::mount_at(&table, mnt).map(|m| m.device.clone()) else {
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, READAHEAD_KB.to_string()) {
        log::debug!("{knob}: {e}");
    }
}

/// Where daemons record their pid and log, one pair of files per mount point: /run/layerfs for
/// root, else $XDG_RUNTIME_DIR/layerfs, else /tmp/layerfs-UID. The directory is the user's own
/// and mode 0700 (refused otherwise), and its files are made without following symlinks.
pub fn run_dir() -> PathBuf {
    if sys::is_host_root() {
        PathBuf::from("/run/layerfs")
    } else if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        PathBuf::from(d).join("layerfs")
    } else {
        std::env::temp_dir().join(format!("layerfs-{}", sys::outer_uid()))
    }
}

/// The checked runtime directory, held open.
pub struct RunDir {
    path: PathBuf,
    fd: std::os::fd::OwnedFd,
}

impl RunDir {
    pub fn open() -> Result<RunDir> {
        let path = run_dir();
        let (fd, how) = sys::private::ensure_private_dir(&path, sys::private::Last::NoFollow)
            .map_err(|e| Error::Usage(format!("runtime directory {}: {e}", path.display())))?;
        if let sys::private::Tightened::From(m) = how {
            log::warn!(
                "runtime directory {}: was mode {m:o}, made private (0700)",
                path.display()
            );
        }
        Ok(RunDir { path, fd })
    }

    fn record_pid(&self, key: &str, mnt: &Path) -> Option<String> {
        use std::os::fd::AsFd;
        let name = format!("{key}.pid");
        let c = std::ffi::CString::new(name.clone()).ok()?;
        let body = format!("{}\n{}\n", std::process::id(), mnt.display());
        match sys::private::write_private_file(self.fd.as_fd(), &c, body.as_bytes()) {
            Ok(()) => Some(name),
            Err(e) => {
                log::warn!(
                    "{}: {}",
                    self.path.join(&name).display(),
                    std::io::Error::from(e)
                );
                None
            }
        }
    }

    fn open_log(&self, key: &str) -> Option<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        let c = std::ffi::CString::new(format!("{key}.log")).ok()?;
        sys::private::open_private_append(self.fd.as_fd(), &c).ok()
    }

    fn remove(&self, name: &str) {
        use std::os::fd::AsFd;
        let _ = rustix::fs::unlinkat(self.fd.as_fd(), name, rustix::fs::AtFlags::empty());
    }

    fn remove_if_empty(&self, name: &str) {
        use std::os::fd::AsFd;
        let empty =
            rustix::fs::statat(self.fd.as_fd(), name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| st.st_size == 0);
        if empty {
            self.remove(name);
        }
    }
}

/// The name (without extension) of a mount point's files in the runtime directory.
fn mount_key(mnt: &Path) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(mnt.as_os_str().as_encoded_bytes());
    hex::encode(&h[..16])
}

fn pid_file(mnt: &Path) -> PathBuf {
    run_dir().join(format!("{}.pid", mount_key(mnt)))
}

/// Where a background daemon's warnings and errors go (`RUST_LOG` sets the level).
pub fn log_file(mnt: &Path) -> PathBuf {
    run_dir().join(format!("{}.log", mount_key(mnt)))
}

/// The absolute, lexically normalised spelling of `p` (no symlinks resolved, so a stale mount
/// point whose stat fails still has a name).
pub fn absolute(p: &Path) -> Result<PathBuf> {
    let base = if p.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().map_err(|e| Error::io("getcwd", ".", e))?
    };
    let mut out = PathBuf::from("/");
    for c in base.join(p).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Is `mnt` a mount point (per /proc/self/mountinfo), and of which filesystem type?
pub fn mount_type(mnt: &Path) -> Option<String> {
    let table = mountinfo::read_mountinfo().ok()?;
    mountinfo::mount_at(&table, mnt).map(|m| m.fstype.clone())
}

pub fn umount(mountpoint: &Path) -> Result<()> {
    let mnt = absolute(mountpoint)?;
    match mount_type(&mnt) {
        Some(t) if t.starts_with("fuse") => {}
        Some(t) => {
            return Err(Error::Usage(format!(
                "{} is a {t} mount, not a layerfs one: use umount(8)",
                mnt.display()
            )));
        }
        None => return Err(Error::Usage(format!("{} is not mounted", mnt.display()))),
    }
    let pid = std::fs::read_to_string(pid_file(&mnt))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.parse::<i32>().ok()));
    match rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::empty()) {
        Ok(()) => {}
        Err(rustix::io::Errno::BUSY) => {
            return Err(Error::Usage(format!(
                "{} is busy: close the files open in it and leave it (cd elsewhere), then retry",
                mnt.display()
            )));
        }
        Err(rustix::io::Errno::PERM) => {
            let st = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&mnt)
                .status()
                .map_err(|e| Error::io("run fusermount3 -u", &mnt, e))?;
            if !st.success() {
                return Err(Error::Usage(format!(
                    "fusermount3 -u {} failed",
                    mnt.display()
                )));
            }
        }
        Err(e) => return Err(Error::io("umount", &mnt, e.into())),
    }
    if let Some(pid) = pid {
        if !sys::wait_pid_exit(pid, 30_000).unwrap_or(true) {
            return Err(Error::Usage(format!(
                "unmounted {}, but its daemon (pid {pid}) did not exit within 30 s",
                mnt.display()
            )));
        }
        let _ = std::fs::remove_file(pid_file(&mnt));
    }
    Ok(())
}
