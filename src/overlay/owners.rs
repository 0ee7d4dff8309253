//! Owners and modes between the layers and the mount, as fuse-overlayfs translates them:
//!
//! ```text
//!   layers (disk ids, real or override xattr)  --shown()-->  the mount (what stat shows)
//!   the mount (caller's ids, chown)            --stored()--> layers
//! ```
//!
//! - `uidmapping=D:S:N`: disk id D+i shows as S+i; an id in no range shows as the overflow id
//!   65534. Ids entering the layers take the reverse way (S+i is stored as D+i).
//! - `squash_to_root` / `squash_to_uid=` / `squash_to_gid=`: every owner shows as 0 (or N);
//!   what is stored is untouched.
//! - `xattr_permissions=1|2`: the owner, mode and type a file should have are kept in the xattr
//!   `security.containers.override_stat` / `user.containers.override_stat`, value
//!   `UID:GID:0MODE[:TYPE]`, where the real ones can't be set (an unprivileged store: files of
//!   root and other users, setuid bits, device nodes stored as empty files). Read on every
//!   attribute that leaves the overlay, written on create, chown and chmod; never shown as
//!   an xattr.
//!
//! Pure (no I/O) apart from the two xattr helpers at the bottom.
use std::ffi::CStr;

use rustix::fs::{FileType, Stat};

use std::os::fd::BorrowedFd;

use super::dirops::NewKind;
use super::fileops::SetAttr;
use super::{Caller, Overlay};
use crate::sys::nofollow::{self, Target};

/// The id shown for a disk id that no range maps (the kernel's overflow id).
pub const OVERFLOW_ID: u32 = 65534;

pub const USER_OVERRIDE_XATTR: &CStr = c"user.containers.override_stat";
pub const SECURITY_OVERRIDE_XATTR: &CStr = c"security.containers.override_stat";
/// The name fuse-overlayfs before 1.11 wrote (same value format): read, never written.
const OLD_OVERRIDE_XATTR: &CStr = c"user.fuseoverlayfs.override_stat";

/// One mapping range: disk ids `disk..disk+len` show as `shown..shown+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub disk: u32,
    pub shown: u32,
    pub len: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Ownership {
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    pub squash_to_root: bool,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    /// The override xattr in use (`xattr_permissions=1|2`), if any.
    pub override_xattr: Option<&'static CStr>,
}

fn map(ranges: &[IdRange], id: u32, to_shown: bool) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    for r in ranges {
        let (from, to) = if to_shown {
            (r.disk, r.shown)
        } else {
            (r.shown, r.disk)
        };
        if id >= from && id - from < r.len {
            return to + (id - from);
        }
    }
    OVERFLOW_ID
}

impl Ownership {
    pub fn is_identity(&self) -> bool {
        self.uid_map.is_empty()
            && self.gid_map.is_empty()
            && !self.squash_to_root
            && self.squash_uid.is_none()
            && self.squash_gid.is_none()
            && self.override_xattr.is_none()
    }

    pub fn shown_uid(&self, disk: u32) -> u32 {
        match (self.squash_uid, self.squash_to_root) {
            (Some(u), _) => u,
            (None, true) => 0,
            (None, false) => map(&self.uid_map, disk, true),
        }
    }

    pub fn shown_gid(&self, disk: u32) -> u32 {
        match (self.squash_gid, self.squash_to_root) {
            (Some(g), _) => g,
            (None, true) => 0,
            (None, false) => map(&self.gid_map, disk, true),
        }
    }

    pub fn stored_uid(&self, shown: u32) -> u32 {
        map(&self.uid_map, shown, false)
    }

    pub fn stored_gid(&self, shown: u32) -> u32 {
        map(&self.gid_map, shown, false)
    }

    /// Applies the override (if `value` holds one) and then the mapping to `a`.
    pub fn show(&self, a: &mut Stat, value: Option<&[u8]>) {
        if let Some(o) = value.and_then(Override::parse) {
            o.apply(a);
        }
        a.st_uid = self.shown_uid(a.st_uid);
        a.st_gid = self.shown_gid(a.st_gid);
    }
}

/// A parsed `UID:GID:0MODE[:TYPE]` override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Override {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (07777).
    pub perm: u32,
    /// The type and device number when the value names one (mode's S_IFMT bits, or TYPE).
    pub kind: Option<(FileType, u64)>,
}

impl Override {
    pub fn parse(v: &[u8]) -> Option<Override> {
        let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
        let mut it = s.split(':');
        let uid = it.next()?.parse().ok()?;
        let gid = it.next()?.parse().ok()?;
        let mode = u32::from_str_radix(it.next()?, 8).ok()?;
        let mut kind = match mode & 0o170000 {
            0 => None,
            t => Some((FileType::from_raw_mode(t), 0)),
        };
        if let Some(t) = it.next() {
            kind = Some(parse_type(t)?);
        }
        Some(Override {
            uid,
            gid,
            perm: mode & 0o7777,
            kind,
        })
    }

    /// The value written: `UID:GID:0MODE`, with `:TYPE` when the type differs from the
    /// on-disk one (a device node stored as an empty file).
    pub fn format(&self, disk_type: FileType) -> String {
        let mut s = format!("{}:{}:0{:o}", self.uid, self.gid, self.perm);
        if let Some((t, rdev)) = self.kind.filter(|(t, _)| *t != disk_type) {
            s.push(':');
            s.push_str(&type_word(t, rdev));
        }
        s
    }

    fn apply(&self, a: &mut Stat) {
        a.st_uid = self.uid;
        a.st_gid = self.gid;
        let t = match self.kind {
            Some((t, rdev)) => {
                if matches!(t, FileType::CharacterDevice | FileType::BlockDevice) {
                    a.st_rdev = rdev;
                }
                t.as_raw_mode()
            }
            None => a.st_mode & 0o170000,
        };
        a.st_mode = t | self.perm;
    }
}

fn parse_type(t: &str) -> Option<(FileType, u64)> {
    let dev = |rest: &str| -> Option<u64> {
        let (ma, mi) = rest.split_once('-')?;
        Some(rustix::fs::makedev(ma.parse().ok()?, mi.parse().ok()?))
    };
    Some(match t {
        "file" => (FileType::RegularFile, 0),
        "dir" => (FileType::Directory, 0),
        "symlink" => (FileType::Symlink, 0),
        "pipe" => (FileType::Fifo, 0),
        "socket" => (FileType::Socket, 0),
        _ => {
            if let Some(rest) = t.strip_prefix("char-") {
                (FileType::CharacterDevice, dev(rest)?)
            } else if let Some(rest) = t.strip_prefix("block-") {
                (FileType::BlockDevice, dev(rest)?)
            } else {
                return None;
            }
        }
    })
}

fn type_word(t: FileType, rdev: u64) -> String {
    let (ma, mi) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    match t {
        FileType::Directory => "dir".into(),
        FileType::Symlink => "symlink".into(),
        FileType::Fifo => "pipe".into(),
        FileType::Socket => "socket".into(),
        FileType::CharacterDevice => format!("char-{ma}-{mi}"),
        FileType::BlockDevice => format!("block-{ma}-{mi}"),
        _ => "file".into(),
    }
}

/// The override value of `t`, if it has one (also under fuse-overlayfs's older name).
pub fn read_override(t: Target<'_>, name: &CStr) -> Option<Vec<u8>> {
    let get = |n: &CStr| nofollow::get_xattr(t, n).ok().flatten();
    get(name).or_else(|| {
        (name == USER_OVERRIDE_XATTR)
            .then(|| get(OLD_OVERRIDE_XATTR))
            .flatten()
    })
}

/// Writes `o` on `t` (whose on-disk type is `disk_type`).
pub fn write_override(
    t: Target<'_>,
    name: &CStr,
    o: &Override,
    disk_type: FileType,
) -> crate::Result<()> {
    nofollow::set_xattr(t, name, o.format(disk_type).as_bytes(), 0)?;
    Ok(())
}

fn kind_of(what: NewKind<'_>) -> (FileType, u64) {
    match what {
        NewKind::File { .. } => (FileType::RegularFile, 0),
        NewKind::Dir => (FileType::Directory, 0),
        NewKind::Node { kind, rdev } => (kind, rdev),
        NewKind::Symlink { .. } => (FileType::Symlink, 0),
    }
}

impl Overlay {
    /// The caller's ids as the layers store them (the reverse of `uidmapping=`).
    pub(super) fn stored_caller(&self, c: Caller) -> Caller {
        Caller {
            uid: self.owners.stored_uid(c.uid),
            gid: self.owners.stored_gid(c.gid),
        }
    }

    /// What is made on disk for a new entry owned by uid:gid with `mode`: the same, or with
    /// an override xattr, an entry of the daemon's own with a mode it can always use (a
    /// device node becomes an empty regular file; setuid bits live in the xattr only).
    pub(super) fn on_disk_owner<'a>(
        &self,
        what: NewKind<'a>,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> (NewKind<'a>, (u32, u32, u32)) {
        if self.owners.override_xattr.is_none() || matches!(what, NewKind::Symlink { .. }) {
            return (what, (uid, gid, mode));
        }
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        // user.* xattrs exist only on regular files and directories: other nodes are made
        // for real where that is allowed (root), else stored as empty regular files.
        let (disk_what, base) = match what {
            NewKind::Node { .. } if crate::sys::is_host_root() => {
                return (what, (uid, gid, mode));
            }
            NewKind::Node { .. } => (
                NewKind::Node {
                    kind: FileType::RegularFile,
                    rdev: 0,
                },
                0o600,
            ),
            NewKind::Dir => (what, 0o700),
            _ => (what, 0o600),
        };
        (disk_what, (me.0, me.1, (mode & 0o777) | base))
    }

    /// Records the owner and mode a new entry `dir/name` should have in its override xattr
    /// (nothing without `xattr_permissions`, or for a symlink, which can't hold user xattrs).
    pub(super) fn write_new_override(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        what: NewKind<'_>,
        disk_what: NewKind<'_>,
        (uid, gid, mode): (u32, u32, u32),
    ) -> crate::Result<()> {
        let Some(xname) = self.owners.override_xattr else {
            return Ok(());
        };
        if !matches!(disk_what, NewKind::File { .. } | NewKind::Dir)
            && !matches!(
                disk_what,
                NewKind::Node {
                    kind: FileType::RegularFile,
                    ..
                }
            )
        {
            return Ok(());
        }
        let o = Override {
            uid,
            gid,
            perm: mode & 0o7777,
            kind: Some(kind_of(what)),
        };
        write_override(Target::At(dir, name), xname, &o, kind_of(disk_what).0)
    }

    /// chown/chmod through the mount with an override xattr: the xattr changes, the inode's
    /// own owner and mode don't. Returns false when there is no override xattr to keep (the
    /// caller then changes the inode).
    pub(super) fn set_override(
        &self,
        t: Target<'_>,
        disk: &Stat,
        a: &SetAttr,
    ) -> crate::Result<bool> {
        let Some(xname) = self.owners.override_xattr else {
            return Ok(false);
        };
        let disk_type = FileType::from_raw_mode(disk.st_mode);
        if !matches!(disk_type, FileType::RegularFile | FileType::Directory) {
            return Ok(false);
        }
        let mut o = read_override(t, xname)
            .and_then(|v| Override::parse(&v))
            .unwrap_or(Override {
                uid: disk.st_uid,
                gid: disk.st_gid,
                perm: disk.st_mode & 0o7777,
                kind: None,
            });
        if let Some(u) = a.uid {
            o.uid = self.owners.stored_uid(u);
        }
        if let Some(g) = a.gid {
            o.gid = self.owners.stored_gid(g);
        }
        if let Some(m) = a.mode {
            o.perm = m & 0o7777;
        }
        if o.kind.is_none() {
            o.kind = Some((disk_type, disk.st_rdev));
        }
        write_override(t, xname, &o, disk_type)?;
        Ok(true)
    }

    /// Is `stored` an xattr the mount keeps to itself (the override xattr)?
    pub(super) fn is_override_xattr(&self, stored: &[u8]) -> bool {
        self.owners
            .override_xattr
            .is_some_and(|x| x.to_bytes() == stored || stored == OLD_OVERRIDE_XATTR.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_both_ways_like_fuse_overlayfs() {
        let o = Ownership {
            uid_map: vec![
                IdRange {
                    disk: 0,
                    shown: 1000,
                    len: 1,
                },
                IdRange {
                    disk: 1,
                    shown: 100000,
                    len: 65536,
                },
            ],
            ..Default::default()
        };
        let rows = [
            (0, 1000),
            (1, 100000),
            (65536, 165535),
            (65537, OVERFLOW_ID),
        ];
        for (disk, shown) in rows {
            assert_eq!(o.shown_uid(disk), shown, "disk {disk}");
        }
        assert_eq!(o.stored_uid(1000), 0);
        assert_eq!(o.stored_uid(100005), 6);
        assert_eq!(o.stored_uid(7), OVERFLOW_ID);
        assert_eq!(o.shown_gid(42), 42, "no gid map: identity");
        let sq = Ownership {
            squash_to_root: true,
            squash_gid: Some(9),
            ..o
        };
        assert_eq!((sq.shown_uid(5), sq.shown_gid(5)), (0, 9));
        assert_eq!(sq.stored_uid(1000), 0, "squashing leaves stored ids alone");
    }

    #[test]
    fn override_values_parse_and_format() {
        let o = Override::parse(b"0:0:04755").unwrap();
        assert_eq!((o.uid, o.gid, o.perm, o.kind), (0, 0, 0o4755, None));
        let d = Override::parse(b"1:2:020666").unwrap();
        assert_eq!(d.kind, Some((FileType::CharacterDevice, 0)));
        let d = Override::parse(b"0:0:0666:char-1-3").unwrap();
        assert_eq!(
            d.kind,
            Some((FileType::CharacterDevice, rustix::fs::makedev(1, 3)))
        );
        assert_eq!(d.format(FileType::RegularFile), "0:0:0666:char-1-3");
        assert_eq!(d.format(FileType::CharacterDevice), "0:0:0666");
        for bad in [&b"x:0:0644"[..], b"0:0", b"0:0:9", b"0:0:0644:char-1"] {
            assert_eq!(Override::parse(bad), None, "{bad:?}");
        }
        let mut st: Stat = unsafe_free_stat();
        st.st_mode = 0o100600;
        Ownership::default().show(&mut st, Some(b"0:0:0666:char-1-3"));
        assert_eq!(st.st_mode, 0o020666);
        assert_eq!(st.st_rdev, rustix::fs::makedev(1, 3));
    }

    fn unsafe_free_stat() -> Stat {
        rustix::fs::stat(".").unwrap()
    }
}
