//! `-o` option parsing for `layerfs mount`, compatible with fuse-overlayfs and mount.fuse3.
//! Pure: no I/O here, so every rule is a table-test row.
use std::path::PathBuf;

use crate::{Error, Result};

/// What the user asked for, after parsing every `-o` argument.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// Lower layers, top first (as in `lowerdir=top:...:bottom`).
    pub lowerdirs: Vec<PathBuf>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    /// Kernel mount flags and FUSE options passed through to the mount.
    pub flags: Vec<KernelFlag>,
    pub allow_other: bool,
    pub default_permissions: bool,
    pub read_only: bool,
    pub fsname: Option<String>,
    /// SELinux contexts and other options handed to mount(2) verbatim (`context="a,b"`).
    pub passthrough_mount_opts: Vec<String>,
    /// fsync/fsyncdir reach the disk (off with `fsync=0` or `volatile`).
    pub fsync: bool,
    /// Read and write `user.overlay.*` markers instead of `trusted.overlay.*` (kernel `userxattr`).
    pub userxattr: bool,
    /// Rename merged and lower directories, recorded with `trusted.overlay.redirect`
    /// (`redirect_dir=on`, the default; `off`: EXDEV, as the kernel's default). `None`: not
    /// given (then on, except with `userxattr`, where the kernel turns it off).
    pub redirect_dir: Option<bool>,
    /// Request threads (`threads=N`); default: one per CPU, at least 2.
    pub threads: Option<usize>,
    /// Hand open files to the kernel (FUSE passthrough) where it is granted (`passthrough=off`).
    pub passthrough: bool,
    /// Attribute and entry cache timeout in seconds (`timeout=`). Every change goes through
    /// the mount, so the kernel's cache stays right; the default is a day.
    pub timeout_secs: f64,
    pub debug: bool,
    /// How owners and modes leave and enter the layers (fuse-overlayfs's options).
    pub ownership: Ownership,
    /// Directories report one link (`static_nlink`).
    pub static_nlink: bool,
    /// POSIX ACL xattrs are refused with EOPNOTSUPP (`noacl`).
    pub noacl: bool,
    /// Every xattr call fails with EOPNOTSUPP (`noxattrs=1`).
    pub noxattrs: bool,
    /// `st_ino` truncated to 32 bits (`ino32_t`).
    pub ino32: bool,
}

/// One range of `uidmapping=`/`gidmapping=`: ids `disk..disk+len` as stored in the layers are
/// shown as `shown..shown+len` through the mount (fuse-overlayfs's `HOST:MAPPED:LEN` order:
/// the first number is what the layers hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub disk: u32,
    pub shown: u32,
    pub len: u32,
}

/// Owner translation between the layers and the mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    /// `squash_to_root`: every owner shows as 0 (`squash_to_uid=`/`_gid=` take precedence).
    pub squash_to_root: bool,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    /// `xattr_permissions=1|2`: owner, mode and type kept in `security.containers.override_stat`
    /// (1) or `user.containers.override_stat` (2) instead of the inode's own; 0: off.
    pub xattr_permissions: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFlag {
    Suid,
    NoSuid,
    Dev,
    NoDev,
    Exec,
    NoExec,
    NoAtime,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            lowerdirs: Vec::new(),
            upperdir: None,
            workdir: None,
            flags: Vec::new(),
            allow_other: false,
            default_permissions: false,
            read_only: false,
            fsname: None,
            passthrough_mount_opts: Vec::new(),
            fsync: true,
            userxattr: false,
            redirect_dir: None,
            threads: None,
            passthrough: true,
            timeout_secs: 86400.0,
            debug: false,
            ownership: Ownership::default(),
            static_nlink: false,
            noacl: false,
            noxattrs: false,
            ino32: false,
        }
    }
}

/// Every option `layerfs mount -o` accepts, for the error message on an unknown one.
pub const SUPPORTED: &str = "lowerdir=DIR[:DIR...], upperdir=DIR, workdir=DIR, \
ro, rw, allow_other, allow_root, default_permissions, suid, nosuid, dev, nodev, exec, noexec, \
atime, noatime, relatime, strictatime, nodiratime, fsname=NAME, subtype=NAME, \
context=, fscontext=, defcontext=, rootcontext=, fsync=0|1, volatile, userxattr, \
xino=on|off|auto, redirect_dir=on|off|follow|nofollow, index=off, metacopy=off, noacl, threads=N, \
passthrough=on|off, timeout=SECONDS, debug, defaults, auto, noauto, nonempty, _netdev, x-*, \
uidmapping=D:S:N[:D:S:N...], gidmapping=D:S:N[:D:S:N...], squash_to_root, squash_to_uid=N, \
squash_to_gid=N, xattr_permissions=0|1|2, static_nlink, ino32_t, noxattrs=0|1, \
threaded=0|1, max_threads=N, max_idle_threads=N, fast_ino=0|1, writeback=0|1, plugins=, \
sync=0|1, sync, async, dirsync, clone_fd, auto_unmount, kernel_cache, auto_cache, \
private, rprivate, shared, rshared, slave, rslave, unbindable, runbindable";

/// Each accepted `-o` option with what it does, for `layerfs-mount(1)`. Every word of
/// [`SUPPORTED`] appears here (a unit test checks it).
pub const DOCUMENTED: &[(&str, &str)] = &[
    (
        "lowerdir=DIR[:DIR...]",
        "The read-only layers, top first. \\: is a literal colon, \\, a comma. Alone (no upperdir/workdir) the mount is read-only.",
    ),
    (
        "upperdir=DIR",
        "The writable layer: every change lands here, in kernel overlayfs format (whiteouts are 0/0 character devices, opaque directories carry trusted.overlay.opaque=y).",
    ),
    (
        "workdir=DIR",
        "An empty directory on the same file system as upperdir, where copy-ups are staged before one rename publishes them.",
    ),
    (
        "ro, rw",
        "Read-only (writes fail with EROFS) or read-write mount.",
    ),
    (
        "allow_other, allow_root",
        "Let other users use the mount (always on as root, like a kernel overlay mount; permissions still apply).",
    ),
    (
        "default_permissions",
        "Let the kernel check permissions from the file modes.",
    ),
    (
        "suid, nosuid, dev, nodev, exec, noexec",
        "The kernel mount flags; as root setuid programs and device nodes work unless nosuid/nodev.",
    ),
    (
        "atime, noatime, relatime, strictatime, nodiratime",
        "Access-time policy (noatime is passed to the kernel; the others are accepted).",
    ),
    (
        "fsname=NAME",
        "The source shown in /proc/mounts and findmnt.",
    ),
    (
        "subtype=NAME",
        "Accepted for mount.fuse3; the type is always fuse.layerfs.",
    ),
    (
        "context=, fscontext=, defcontext=, rootcontext=",
        "SELinux contexts, handed to mount(2) verbatim (values may be double-quoted and hold commas).",
    ),
    (
        "fsync=0|1, volatile",
        "fsync=0 or volatile makes fsync and fsyncdir no-ops (faster, unsafe on a crash).",
    ),
    (
        "userxattr",
        "Read and write user.overlay.* markers instead of trusted.overlay.* (kernel userxattr).",
    ),
    (
        "redirect_dir=on|off|follow|nofollow",
        "on (the default): renaming a directory that a lower layer holds works in O(1) and is recorded with trusted.overlay.redirect, as the kernel writes it. off, follow, nofollow: such a rename fails with EXDEV (tools then copy). Existing redirects are always followed. With userxattr the default is off, and redirect_dir=on is refused, as by the kernel.",
    ),
    (
        "xino=on|off|auto, index=off, metacopy=off, noacl",
        "Kernel overlayfs options accepted for compatibility; layerfs implements the kernel defaults. noacl: POSIX ACL xattrs fail with EOPNOTSUPP, as in fuse-overlayfs.",
    ),
    (
        "uidmapping=D:S:N[:D:S:N...], gidmapping=D:S:N[:D:S:N...]",
        "Owner translation as fuse-overlayfs does it: an id D+i stored in the layers shows as S+i through the mount (i < N), ids outside every range show as 65534; owners set through the mount are stored with the reverse mapping. Ranges are separated by ':' (or ','), as podman passes them.",
    ),
    (
        "squash_to_root, squash_to_uid=N, squash_to_gid=N",
        "Every file shows as owned by 0 (or by uid/gid N, which take precedence); what is stored does not change.",
    ),
    (
        "xattr_permissions=0|1|2",
        "Keep owner, mode and file type in the xattr security.containers.override_stat (1) or user.containers.override_stat (2), value UID:GID:0MODE[:TYPE], where the real owner can't be set (an unprivileged store); read and written, hidden from listxattr.",
    ),
    ("static_nlink", "Directories report one link."),
    (
        "ino32_t",
        "st_ino is truncated to 32 bits, for old 32-bit programs.",
    ),
    (
        "noxattrs=0|1",
        "noxattrs=1: every xattr call fails with EOPNOTSUPP.",
    ),
    (
        "threaded=0|1, max_threads=N, max_idle_threads=N",
        "fuse-overlayfs's threading words: threaded=0 serves with one thread, max_threads=N is threads=N; max_idle_threads is accepted.",
    ),
    (
        "fast_ino=0|1, writeback=0|1, plugins=, sync=0|1",
        "fuse-overlayfs options accepted for compatibility: inode numbers are always stable here, the write-back cache is never used, there are no plugins; sync=0 is fsync=0.",
    ),
    (
        "sync, async, dirsync, clone_fd, auto_unmount, kernel_cache, auto_cache",
        "libfuse and mount(8) words, accepted (the daemon always clones its /dev/fuse fd and unmounts on exit).",
    ),
    (
        "private, rprivate, shared, rshared, slave, rslave, unbindable, runbindable",
        "Mount propagation words (buildah adds private for :O volumes), accepted; FUSE mounts take the propagation of their parent mount.",
    ),
    (
        "threads=N",
        "Request threads, 1 to 64 (default one per CPU, at least 4).",
    ),
    (
        "passthrough=on|off",
        "Hand reads and writes of upper files to the kernel (FUSE passthrough, Linux 6.9 and later); on by default where granted.",
    ),
    (
        "timeout=SECONDS",
        "Attribute and entry cache timeout, 0 to 86400 (default a day: every change goes through the mount).",
    ),
    (
        "debug",
        "Log every request and stay in the foreground (same as -d).",
    ),
    (
        "defaults, auto, noauto, nonempty, _netdev, x-*",
        "fstab words, accepted and ignored.",
    ),
];

impl MountOptions {
    /// Parses the values of every `-o` given, in order (later options win).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountOptions> {
        let mut o = MountOptions::default();
        for arg in args {
            for item in split_options(arg.as_ref())? {
                o.apply(&item)?;
            }
        }
        if o.userxattr && o.redirect_dir == Some(true) {
            // The kernel's rule and words: userxattr mounts are for unprivileged users, who
            // must not be able to point a directory at another place in the lower layers.
            return Err(Error::Usage(
                "conflicting options: userxattr,redirect_dir=on (redirects are not written or \
                 followed with user.overlay.* markers; drop one of the two)"
                    .into(),
            ));
        }
        Ok(o)
    }

    /// Whether directory renames are recorded with redirects (see `redirect_dir`).
    pub fn redirect_dir_on(&self) -> bool {
        self.redirect_dir.unwrap_or(!self.userxattr)
    }

    fn apply(&mut self, item: &str) -> Result<()> {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        let need = |v: Option<&str>| {
            v.filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    Error::Usage(format!("mount option {key} needs a value ({key}=...)"))
                })
        };
        match key {
            "lowerdir" => {
                let v = need(value)?;
                self.lowerdirs = split_lowerdirs(&v)?;
            }
            "upperdir" => self.upperdir = Some(PathBuf::from(unescape(&need(value)?))),
            "workdir" => self.workdir = Some(PathBuf::from(unescape(&need(value)?))),
            "ro" => self.read_only = true,
            "rw" => self.read_only = false,
            "allow_other" | "allow_root" => self.allow_other = true,
            "default_permissions" => self.default_permissions = true,
            "suid" => self.flags.push(KernelFlag::Suid),
            "nosuid" => self.flags.push(KernelFlag::NoSuid),
            "dev" => self.flags.push(KernelFlag::Dev),
            "nodev" => self.flags.push(KernelFlag::NoDev),
            "exec" => self.flags.push(KernelFlag::Exec),
            "noexec" => self.flags.push(KernelFlag::NoExec),
            "noatime" => self.flags.push(KernelFlag::NoAtime),
            "atime" | "relatime" | "strictatime" | "nodiratime" | "diratime" | "lazytime" => {}
            "fsname" => self.fsname = Some(need(value)?),
            "subtype" => {
                need(value)?;
            }
            "context" | "fscontext" | "defcontext" | "rootcontext" => {
                self.passthrough_mount_opts
                    .push(format!("{key}={}", need(value)?));
            }
            "fsync" => self.fsync = parse_bool(key, value)?,
            "volatile" => self.fsync = false,
            "userxattr" => self.userxattr = true,
            "xino" => match value {
                Some("on" | "off" | "auto") => {}
                _ => return Err(bad_value(key, value, "on, off or auto")),
            },
            "redirect_dir" => match value {
                Some("on") => self.redirect_dir = Some(true),
                Some("off" | "follow" | "nofollow") => self.redirect_dir = Some(false),
                _ => return Err(bad_value(key, value, "on, off, follow or nofollow")),
            },
            "index" | "metacopy" | "nfs_export" => match value {
                Some("off") => {}
                _ => {
                    return Err(Error::Usage(format!(
                        "mount option {item}: layerfs implements the kernel default only ({key}=off)"
                    )));
                }
            },
            "noacl" => self.noacl = true,
            "defaults" | "auto" | "noauto" | "nonempty" | "_netdev" | "user" | "nouser" => {}
            "threads" => {
                let n: usize = need(value)?
                    .parse()
                    .map_err(|_| bad_value(key, value, "a number from 1 to 64"))?;
                if !(1..=64).contains(&n) {
                    return Err(bad_value(key, value, "a number from 1 to 64"));
                }
                self.threads = Some(n);
            }
            "passthrough" => self.passthrough = parse_bool(key, value)?,
            "timeout" => {
                let t: f64 = need(value)?
                    .parse()
                    .map_err(|_| bad_value(key, value, "seconds, e.g. 1 or 0.5"))?;
                if !(0.0..=86400.0).contains(&t) {
                    return Err(bad_value(key, value, "seconds from 0 to 86400"));
                }
                self.timeout_secs = t;
            }
            "debug" => self.debug = true,
            k if k.starts_with("x-") => {}
            _ if self.apply_compat(key, value)? => {}
            _ => {
                return Err(Error::Usage(format!(
                    "unknown mount option '{item}'. Supported options: {SUPPORTED}"
                )));
            }
        }
        Ok(())
    }
}

impl MountOptions {
    /// fuse-overlayfs's and libfuse's words; false when `key` is none of them.
    fn apply_compat(&mut self, key: &str, value: Option<&str>) -> Result<bool> {
        let num = |v: Option<&str>| -> Result<u32> {
            v.and_then(|s| s.parse().ok())
                .ok_or_else(|| bad_value(key, v, "a number"))
        };
        match key {
            "uidmapping" => self.ownership.uid_map = parse_idmap(key, value)?,
            "gidmapping" => self.ownership.gid_map = parse_idmap(key, value)?,
            "squash_to_root" => self.ownership.squash_to_root = true,
            "squash_to_uid" => self.ownership.squash_uid = Some(num(value)?),
            "squash_to_gid" => self.ownership.squash_gid = Some(num(value)?),
            "xattr_permissions" => {
                self.ownership.xattr_permissions = match value {
                    Some("0") => 0,
                    Some("1") => 1,
                    Some("2") => 2,
                    _ => return Err(bad_value(key, value, "0, 1 or 2")),
                }
            }
            "static_nlink" => self.static_nlink = true,
            "ino32_t" => self.ino32 = true,
            "noxattrs" => self.noxattrs = parse_bool(key, value)?,
            "threaded" => {
                if !parse_bool(key, value)? {
                    self.threads = Some(1);
                }
            }
            "max_threads" => {
                let n = num(value)? as usize;
                self.threads = Some(n.clamp(1, 64));
            }
            "sync" if value.is_some() => self.fsync = parse_bool(key, value)?,
            "fast_ino" | "writeback" => {
                parse_bool(key, value)?;
            }
            "max_idle_threads" => {
                value
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| bad_value(key, value, "a number"))?;
            }
            "plugins" | "sync" | "async" | "dirsync" | "clone_fd" | "auto_unmount"
            | "kernel_cache" | "auto_cache" | "private" | "rprivate" | "shared" | "rshared"
            | "slave" | "rslave" | "unbindable" | "runbindable" => {}
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `D:S:N[:D:S:N...]` (podman's form) or `D:S:N,D:S:N` (the `\,`-escaped form fuse-overlayfs's
/// man page shows) into ranges.
fn parse_idmap(key: &str, value: Option<&str>) -> Result<Vec<IdRange>> {
    let v = value.unwrap_or("");
    let nums: Option<Vec<u32>> = v
        .split([':', ','])
        .map(|n| n.trim().parse::<u32>().ok())
        .collect();
    let want = "DISK:SHOWN:LEN triples, e.g. 0:1000:1:1:100000:65536";
    let nums = match nums {
        Some(n) if !n.is_empty() && n.len() % 3 == 0 => n,
        _ => return Err(bad_value(key, value, want)),
    };
    let mut out = Vec::new();
    for t in nums.chunks(3) {
        let (disk, shown, len) = (t[0], t[1], t[2]);
        if len == 0 || disk.checked_add(len - 1).is_none() || shown.checked_add(len - 1).is_none() {
            return Err(bad_value(key, value, want));
        }
        out.push(IdRange { disk, shown, len });
    }
    Ok(out)
}

fn bad_value(key: &str, value: Option<&str>, want: &str) -> Error {
    Error::Usage(format!(
        "mount option {key}={}: expected {want}",
        value.unwrap_or("")
    ))
}

fn parse_bool(key: &str, value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("1" | "on" | "true" | "yes") => Ok(true),
        Some("0" | "off" | "false" | "no") => Ok(false),
        _ => Err(bad_value(key, value, "0/1 or on/off")),
    }
}

/// Splits `a,b="x,y",c` at commas outside double quotes. A backslash keeps the next character
/// (so `\,` is a literal comma); quotes are removed.
pub fn split_options(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                // Keep the escape for lowerdir's `\:`; `\,` is resolved here.
                match chars.next() {
                    Some(',') => cur.push(','),
                    Some(n) => {
                        cur.push('\\');
                        cur.push(n);
                    }
                    None => cur.push('\\'),
                }
            }
            '"' => quoted = !quoted,
            ',' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err(Error::Usage(format!(
            "mount options '{s}': unbalanced double quote"
        )));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// `a:b\:c:d` -> [a, "b:c", d]. Empty entries are an error, as in the kernel.
pub fn split_lowerdirs(s: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ':' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    if out.iter().any(String::is_empty) {
        return Err(Error::Usage(format!(
            "lowerdir={s}: empty layer path (separate layers with ':', write a literal colon as '\\:')"
        )));
    }
    Ok(out.into_iter().map(PathBuf::from).collect())
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn splits_options_and_lowerdirs() {
        let cases: &[(&str, &[&str])] = &[
            ("a,b", &["a", "b"]),
            ("context=\"x,y\",ro", &["context=x,y", "ro"]),
            ("lowerdir=a\\,b", &["lowerdir=a,b"]),
            ("lowerdir=a\\:b:c", &["lowerdir=a\\:b:c"]),
            (",,a,", &["a"]),
        ];
        for (input, want) in cases {
            assert_eq!(split_options(input).unwrap(), *want, "{input}");
        }
        assert_eq!(split_lowerdirs("a:b\\:c:d").unwrap(), p(&["a", "b:c", "d"]));
        assert!(split_lowerdirs("a::b").is_err());
        assert!(split_options("a=\"b").is_err());
    }

    #[test]
    fn parses_overlay_and_fuse_options() {
        let o = MountOptions::parse(&[
            "lowerdir=/l1:/l2,upperdir=/u,workdir=/w",
            "allow_other,nodev,noatime,fsname=x,context=\"system_u:object_r:a,b\",fsync=0",
        ])
        .unwrap();
        assert_eq!(o.lowerdirs, p(&["/l1", "/l2"]));
        assert_eq!(o.upperdir, Some(PathBuf::from("/u")));
        assert_eq!(o.workdir, Some(PathBuf::from("/w")));
        assert!(o.allow_other);
        assert_eq!(o.flags, vec![KernelFlag::NoDev, KernelFlag::NoAtime]);
        assert_eq!(o.fsname.as_deref(), Some("x"));
        assert_eq!(
            o.passthrough_mount_opts,
            vec!["context=system_u:object_r:a,b"]
        );
        assert!(!o.fsync);
    }

    #[test]
    fn every_supported_option_is_documented() {
        let documented: Vec<&str> = DOCUMENTED
            .iter()
            .flat_map(|(names, _)| names.split(", "))
            .map(|n| n.split('=').next().unwrap_or(n))
            .collect();
        for word in SUPPORTED.split(", ") {
            let key = word.split('=').next().unwrap_or(word);
            if matches!(key, "allow_root" | "diratime" | "lazytime" | "nfs_export") {
                continue;
            }
            assert!(documented.contains(&key), "{key} not in DOCUMENTED");
        }
    }

    #[test]
    fn accepts_every_fuse_overlayfs_word() {
        // What podman, buildah and fuse-overlayfs's man pages pass (C 1.x and the Rust 2.0).
        let o = MountOptions::parse(&[
            "lowerdir=/l/a\\:b:/l/c,upperdir=/u,workdir=/w,private,rshared,volatile,noacl",
            "uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1,squash_to_root",
            "squash_to_uid=7,squash_to_gid=8,xattr_permissions=2,static_nlink,fast_ino=1",
            "threaded=1,writeback=0,noxattrs=0,plugins=,ino32_t,fsync=1,sync=0,timeout=5",
            "context=\"system_u:object_r:container_file_t:s0:c1,c2\",max_idle_threads=-1",
            "slave,rslave,shared,rprivate,unbindable,runbindable,sync,async,dirsync,clone_fd",
        ])
        .unwrap();
        assert_eq!(o.lowerdirs, p(&["/l/a:b", "/l/c"]));
        assert_eq!(
            o.ownership.uid_map,
            vec![
                IdRange {
                    disk: 0,
                    shown: 1000,
                    len: 1
                },
                IdRange {
                    disk: 1,
                    shown: 100000,
                    len: 65536
                },
            ]
        );
        assert_eq!(
            o.ownership.gid_map,
            vec![IdRange {
                disk: 0,
                shown: 1000,
                len: 1
            }]
        );
        assert!(o.ownership.squash_to_root);
        assert_eq!(
            (o.ownership.squash_uid, o.ownership.squash_gid),
            (Some(7), Some(8))
        );
        assert_eq!(o.ownership.xattr_permissions, 2);
        assert!(o.static_nlink && o.noacl && o.ino32 && !o.noxattrs);
        assert!(!o.fsync, "sync=0 and volatile turn fsync off");
        assert_eq!(o.timeout_secs, 5.0);
        assert_eq!(
            MountOptions::parse(&["threaded=0"]).unwrap().threads,
            Some(1)
        );
        for bad in [
            "uidmapping=0:1000",
            "uidmapping=a:b:c",
            "uidmapping=0:0:0",
            "uidmapping=4294967295:0:2",
            "xattr_permissions=3",
            "squash_to_uid=x",
            "fast_ino=maybe",
        ] {
            assert!(MountOptions::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_options_are_errors_listing_the_supported_ones() {
        let e = MountOptions::parse(&["lowerdir=/a,bogus"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown mount option 'bogus'"), "{e}");
        assert!(e.contains("upperdir=DIR"), "{e}");
        for bad in [
            "threads=0",
            "threads=x",
            "redirect_dir=maybe",
            "userxattr,redirect_dir=on",
            "xino=maybe",
            "timeout=-1",
            "lowerdir=",
        ] {
            assert!(MountOptions::parse(&[bad]).is_err(), "{bad}");
        }
    }
}
