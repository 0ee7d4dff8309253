//! Packs a directory in overlay format (a container's writable layer) as an OCI layer tar.
//!
//! | on disk (upper dir)                       | in the layer tar                          |
//! |-------------------------------------------|-------------------------------------------|
//! | char device 0/0 `dir/NAME` (whiteout)     | empty file `dir/.wh.NAME`                 |
//! | directory with `*.overlay.opaque=y`       | `dir/` then empty file `dir/.wh..wh..opq` |
//! | xattrs `trusted.overlay.*`, `user.overlay.*` | dropped (overlay-private)              |
//! | other xattrs                              | PAX `SCHILY.xattr.NAME` records           |
//! | second name of an inode (nlink > 1)       | hard link entry to the first name         |
//! | socket                                    | skipped (tar has no socket type)          |
//! | the root directory                        | not written (it inherits from below)      |
//!
//! Order is deterministic: names sorted bytewise within a directory, each directory followed
//! by its subtree; headers come from [`super::tarwrite`], so the same tree gives the same bytes
//! and the same diff_id.
//!
//! Concurrent writers: every entry's stat (inode, ctime, mtime, size, mode, links) is recorded
//! in a [`Snapshot`] as it is read. [`Snapshot::unchanged`] stats them all again afterwards: a
//! directory's ctime changes with every create, unlink or rename in it and a file's with every
//! write, chmod, chown or xattr change, so an unchanged snapshot means the tar is the state of
//! the tree at one instant (the moment the check started). Callers retry otherwise.
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::tarentry::{OPAQUE_MARKER, WHITEOUT_PREFIX};
use super::tarwrite::{EntryKind, TarEntry, TarWriter, Xattrs};
use crate::overlay::owners::{Override, USER_OVERRIDE_XATTR};
use crate::overlay::whiteout::{TRUSTED_OPAQUE, USER_OPAQUE, is_private_xattr};
use crate::{Error, sys};

/// Why a pack did not produce a layer.
#[derive(Debug)]
pub enum PackError {
    /// The tree changed while it was read (a file vanished or shrank): try again.
    Changed(String),
    Failed(Error),
}

impl From<Error> for PackError {
    fn from(e: Error) -> Self {
        PackError::Failed(e)
    }
}

/// What identifies the state of one entry; any change to it changes one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    ino: u64,
    mode: u32,
    nlink: u64,
    size: i64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Key {
    fn of(st: &Stat) -> Self {
        Key {
            ino: st.st_ino,
            mode: st.st_mode,
            nlink: st.st_nlink,
            size: st.st_size,
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        }
    }
}

/// Every entry read, with its state at the time (see the module header).
#[derive(Debug, Default)]
pub struct Snapshot {
    entries: Vec<(CString, Key)>,
}

impl Snapshot {
    /// True when every entry still has the state it had when it was packed.
    pub fn unchanged(&self, root: BorrowedFd<'_>) -> Result<bool, Errno> {
        for (path, key) in &self.entries {
            match sys::lstat_at(root, path) {
                Ok(st) if Key::of(&st) == *key => {}
                Ok(_) | Err(Errno::NOENT | Errno::NOTDIR) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The result of a pack.
#[derive(Debug)]
pub struct Packed {
    /// Tar entries written (markers included).
    pub entries: u64,
    /// Uncompressed tar bytes.
    pub bytes: u64,
    pub snapshot: Snapshot,
}

/// Packs the tree below `root` (an open directory) into `out` as a layer tar.
pub fn pack_dir<W: Write>(root: BorrowedFd<'_>, out: W) -> Result<(W, Packed), PackError> {
    let mut p = Packer {
        tw: TarWriter::new(out),
        links: HashMap::new(),
        snapshot: Snapshot::default(),
        entries: 0,
    };
    let st = sys::lstat_at(root, c".").map_err(|e| fail("stat", b".", e))?;
    p.snapshot.entries.push((c".".to_owned(), Key::of(&st)));
    let dir = sys::open_at(root, c".", OFlags::RDONLY | OFlags::DIRECTORY, 0)
        .map_err(|e| fail("open", b".", e))?;
    p.walk(dir.as_fd(), b"")?;
    let bytes = p.tw.written() + 1024;
    let out = p.tw.finish().map_err(|e| io_fail("write layer", e))?;
    Ok((
        out,
        Packed {
            entries: p.entries,
            bytes,
            snapshot: p.snapshot,
        },
    ))
}

struct Packer<W: Write> {
    tw: TarWriter<W>,
    /// (dev, ino) of multiply-linked files already written -> their tar path.
    links: HashMap<(u64, u64), Vec<u8>>,
    snapshot: Snapshot,
    entries: u64,
}

fn fail(op: &'static str, path: &[u8], e: Errno) -> PackError {
    let shown = String::from_utf8_lossy(path).into_owned();
    match e {
        Errno::NOENT | Errno::NOTDIR | Errno::STALE => {
            PackError::Changed(format!("{shown} changed while it was read ({op}: {e})"))
        }
        _ => PackError::Failed(Error::io(op, shown, e.into())),
    }
}

fn io_fail(op: &'static str, e: std::io::Error) -> PackError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        PackError::Changed(e.to_string())
    } else {
        PackError::Failed(Error::io(op, "", e))
    }
}

/// The tar entry for `name` in `dir` (at `path` in the archive) as `st` describes it: kind,
/// permission bits, numeric owner, whole-second mtime, xattrs as a layer keeps them, the target
/// of a symlink. `None` for sockets, which have no tar form. Used by `pack` (a layer) and by
/// `export` (a merged tree); the error names the step that failed.
pub fn entry_from_stat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    path: &[u8],
    st: &Stat,
) -> Result<Option<TarEntry>, (&'static str, Errno)> {
    let dev = || (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => EntryKind::Dir,
        FileType::RegularFile => EntryKind::File {
            size: st.st_size as u64,
        },
        FileType::Symlink => EntryKind::Symlink {
            target: rustix::fs::readlinkat(dir, name, Vec::new())
                .map_err(|e| ("readlink", e))?
                .into_bytes(),
        },
        FileType::Fifo => EntryKind::Fifo,
        FileType::CharacterDevice => EntryKind::Char {
            major: dev().0,
            minor: dev().1,
        },
        FileType::BlockDevice => EntryKind::Block {
            major: dev().0,
            minor: dev().1,
        },
        FileType::Socket | FileType::Unknown => return Ok(None),
    };
    let mut e = TarEntry {
        path: path.to_vec(),
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: st.st_mtime,
        xattrs: layer_xattrs(dir, name).map_err(|e| ("read xattrs of", e))?,
    };
    apply_override(&mut e);
    Ok(Some(e))
}

/// An unprivileged store keeps the true owner, mode and type in the override xattr
/// (`overlay::owners`): the layer gets those, and not the xattr itself.
fn apply_override(e: &mut TarEntry) {
    let key = USER_OVERRIDE_XATTR.to_bytes();
    let Some(i) = e.xattrs.iter().position(|(k, _)| k.as_slice() == key) else {
        return;
    };
    let (_, v) = e.xattrs.remove(i);
    let Some(o) = Override::parse(&v) else {
        return;
    };
    e.uid = o.uid;
    e.gid = o.gid;
    e.mode = o.perm;
    let is_empty_file = matches!(e.kind, EntryKind::File { size: 0 });
    match o.kind {
        Some((FileType::CharacterDevice, rdev)) if is_empty_file => {
            e.kind = EntryKind::Char {
                major: rustix::fs::major(rdev),
                minor: rustix::fs::minor(rdev),
            }
        }
        Some((FileType::BlockDevice, rdev)) if is_empty_file => {
            e.kind = EntryKind::Block {
                major: rustix::fs::major(rdev),
                minor: rustix::fs::minor(rdev),
            }
        }
        Some((FileType::Fifo, _)) if is_empty_file => e.kind = EntryKind::Fifo,
        _ => {}
    }
}

/// Names in a directory, sorted bytewise, without `.` and `..`.
pub fn sorted_names(dir: BorrowedFd<'_>) -> Result<Vec<CString>, Errno> {
    let mut names = Vec::new();
    let mut d = rustix::fs::Dir::read_from(dir)?;
    while let Some(ent) = d.read() {
        let ent = ent?;
        let n = ent.file_name();
        if n != c"." && n != c".." {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The xattrs of `name` in `dir` that belong in a layer (overlay-private ones dropped), sorted.
pub fn layer_xattrs(dir: BorrowedFd<'_>, name: &CStr) -> Result<Xattrs, Errno> {
    let mut out = Vec::new();
    for x in sys::llistxattr(dir, name)? {
        if is_private_xattr(x.to_bytes()) {
            continue;
        }
        match sys::lgetxattr(dir, name, &x) {
            Ok(Some(v)) => out.push((x.to_bytes().to_vec(), v)),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a directory carries the overlay opaque marker (`trusted.` or `user.overlay.opaque`).
pub fn is_opaque_dir(dir: BorrowedFd<'_>, name: &CStr) -> Result<bool, Errno> {
    for x in [TRUSTED_OPAQUE, USER_OPAQUE] {
        match sys::lgetxattr(dir, name, x) {
            Ok(Some(v)) if v == b"y" => return Ok(true),
            Ok(_) | Err(Errno::NOTSUP | Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = prefix.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl<W: Write> Packer<W> {
    fn walk(&mut self, dir: BorrowedFd<'_>, prefix: &[u8]) -> Result<(), PackError> {
        let names = sorted_names(dir).map_err(|e| fail("read directory", prefix, e))?;
        for name in names {
            let path = join(prefix, name.to_bytes());
            let st = sys::lstat_at(dir, &name).map_err(|e| fail("stat", &path, e))?;
            let cpath = CString::new(path.clone()).unwrap_or_default();
            self.snapshot.entries.push((cpath, Key::of(&st)));
            self.entry(dir, &name, &path, &st)?;
        }
        Ok(())
    }

    fn base(&self, path: &[u8], st: &Stat, kind: EntryKind) -> TarEntry {
        TarEntry {
            path: path.to_vec(),
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            mtime: st.st_mtime,
            xattrs: Vec::new(),
        }
    }

    fn put(&mut self, e: &TarEntry, data: Option<&mut dyn Read>) -> Result<(), PackError> {
        self.entries += 1;
        self.tw
            .append(e, data)
            .map_err(|e| io_fail("write layer", e))
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
        st: &Stat,
    ) -> Result<(), PackError> {
        let ft = FileType::from_raw_mode(st.st_mode);
        if sys::is_whiteout(st) {
            let parent = &path[..path.len() - name.to_bytes().len()];
            let mut wh = parent.to_vec();
            wh.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
            wh.extend_from_slice(name.to_bytes());
            let e = self.base(&wh, st, EntryKind::File { size: 0 });
            return self.put(&e, None);
        }
        let Some(e) = entry_from_stat(dir, name, path, st).map_err(|(op, e)| fail(op, path, e))?
        else {
            log::info!(
                "not packing {}: sockets have no tar form",
                String::from_utf8_lossy(path)
            );
            return Ok(());
        };
        match ft {
            FileType::Directory => self.dir(dir, name, path, st, e),
            FileType::RegularFile => self.file(dir, name, path, st, e),
            _ => self.put(&e, None),
        }
    }

    fn dir(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
        st: &Stat,
        e: TarEntry,
    ) -> Result<(), PackError> {
        self.put(&e, None)?;
        if is_opaque_dir(dir, name).map_err(|err| fail("read xattrs of", path, err))? {
            let marker = join(path, OPAQUE_MARKER.as_bytes());
            let m = self.base(&marker, st, EntryKind::File { size: 0 });
            self.put(&m, None)?;
        }
        let sub = sys::open_at(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, 0)
            .map_err(|err| fail("open", path, err))?;
        self.walk(sub.as_fd(), path)
    }

    fn file(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
        st: &Stat,
        mut e: TarEntry,
    ) -> Result<(), PackError> {
        if !matches!(e.kind, EntryKind::File { .. }) {
            // A device node or FIFO an unprivileged store keeps as an empty file.
            return self.put(&e, None);
        }
        if st.st_nlink > 1 {
            let id = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&id) {
                e.kind = EntryKind::HardLink {
                    target: first.clone(),
                };
                return self.put(&e, None);
            }
            self.links.insert(id, path.to_vec());
        }
        let fd: OwnedFd =
            sys::open_at(dir, name, OFlags::RDONLY, 0).map_err(|err| fail("open", path, err))?;
        let now = rustix::fs::fstat(&fd).map_err(|err| fail("stat", path, err))?;
        if now.st_ino != st.st_ino {
            return Err(PackError::Changed(format!(
                "{} was replaced while it was read",
                String::from_utf8_lossy(path)
            )));
        }
        let mut f = std::fs::File::from(fd);
        self.put(&e, Some(&mut f))
    }
}

/// Opens a directory to pack (or walk) by path.
pub fn open_tree(path: &std::path::Path) -> crate::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("open", path, e.into()))
}

/// `OsStr` view of bytes (paths inside layers are bytes).
pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn list(tar: &[u8]) -> Vec<(String, u8, String)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    e.header().entry_type().as_byte(),
                    link,
                )
            })
            .collect()
    }

    #[test]
    fn upper_dir_becomes_oci_layer() {
        let t = tempfile::tempdir().unwrap();
        let u = t.path();
        std::fs::create_dir_all(u.join("etc/sub")).unwrap();
        std::fs::write(u.join("etc/b"), "bee").unwrap();
        std::fs::write(u.join("etc/a"), "a").unwrap();
        std::fs::hard_link(u.join("etc/a"), u.join("etc/sub/a2")).unwrap();
        symlink("/etc/a", u.join("lnk")).unwrap();
        std::fs::create_dir(u.join("opq")).unwrap();
        std::fs::set_permissions(u.join("opq"), std::fs::Permissions::from_mode(0o700)).unwrap();
        let root = open_tree(u).unwrap();
        let opq = sys::open_at(root.as_fd(), c"opq", OFlags::RDONLY, 0).unwrap();
        let xattr_ok =
            rustix::fs::fsetxattr(&opq, TRUSTED_OPAQUE, b"y", rustix::fs::XattrFlags::empty())
                .is_ok();
        let wh_ok = sys::mknod_whiteout(root.as_fd(), c"gone").is_ok();
        let (bytes, packed) = pack_dir(root.as_fd(), Vec::new()).unwrap();
        let got = list(&bytes);
        // Sorted by on-disk name: the whiteout "gone" sits between "etc" and "lnk".
        let mut want: Vec<(String, u8, String)> = vec![
            ("etc/".to_string(), b'5', String::new()),
            ("etc/a".into(), b'0', String::new()),
            ("etc/b".into(), b'0', String::new()),
            ("etc/sub/".into(), b'5', String::new()),
            ("etc/sub/a2".into(), b'1', "etc/a".into()),
        ];
        if wh_ok {
            want.push((".wh.gone".into(), b'0', String::new()));
        }
        want.push(("lnk".into(), b'2', "/etc/a".into()));
        want.push(("opq/".into(), b'5', String::new()));
        if xattr_ok {
            want.push(("opq/.wh..wh..opq".into(), b'0', String::new()));
        }
        assert_eq!(got, want);
        assert!(packed.snapshot.unchanged(root.as_fd()).unwrap());
        // No overlay-private xattr leaks into the layer.
        assert!(!String::from_utf8_lossy(&bytes).contains("trusted.overlay"));
        // Deterministic.
        let (again, _) = pack_dir(root.as_fd(), Vec::new()).unwrap();
        assert_eq!(bytes, again);
        // A change after the pack is seen.
        std::fs::write(u.join("etc/b"), "changed").unwrap();
        assert!(!packed.snapshot.unchanged(root.as_fd()).unwrap());
    }

    #[test]
    fn new_entry_in_a_packed_dir_is_a_change() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        let root = open_tree(t.path()).unwrap();
        let (_, packed) = pack_dir(root.as_fd(), Vec::new()).unwrap();
        assert!(packed.snapshot.unchanged(root.as_fd()).unwrap());
        std::fs::write(t.path().join("d/new"), "x").unwrap();
        assert!(!packed.snapshot.unchanged(root.as_fd()).unwrap());
    }
}
