//! Writes classified layer entries beneath a held layer-root directory fd.
//!
//! Every path is resolved from the root fd with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`, then the final name is created with an `*at` call on the parent fd
//! that never follows it. A symlink planted by an earlier entry therefore can never redirect a
//! later write out of the layer: the walk fails with ELOOP and the entry is refused.
//!
//! Directory owner, mode and times are applied at [`LayerWriter::finish`], after everything
//! below them is written (creating children changes a directory's mtime). Directories created
//! only because an entry needed them as parents are reported as implicit, so the caller can give
//! them the attributes of the lower layers (see [`copy_dir_attrs_from_lower`]).
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
    XattrFlags,
};
use rustix::io::Errno;

use super::tarentry::{Action, Kind, Meta, Mtime, OPAQUE_MARKER, RelPath};

/// The overlay opaque-directory xattr and its value.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const OPAQUE_VALUE: &[u8] = b"y";

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);
const COPY_BUF: usize = 256 * 1024;

/// Why an entry was refused or failed; the caller prefixes the layer and entry path.
pub type WriteResult<T> = Result<T, String>;

fn errmsg(op: &str, path: &RelPath, e: Errno) -> String {
    match e {
        Errno::LOOP => format!("{op} {path}: refusing to follow a symlink inside the layer"),
        Errno::XDEV => format!("{op} {path}: path escapes the layer"),
        _ => format!("{op} {path}: {e}"),
    }
}

/// Extraction state for one layer.
pub struct LayerWriter {
    root: OwnedFd,
    /// Non-directories written by this layer: the only valid hard link targets.
    linkable: HashSet<RelPath>,
    /// Parents created on demand and never listed by the layer.
    implicit: BTreeSet<RelPath>,
    /// Attributes of listed directories, applied in `finish`.
    dirs: BTreeMap<RelPath, Meta>,
    parent_cache: Option<(RelPath, Rc<OwnedFd>)>,
    buf: Vec<u8>,
    privileged: bool,
}

impl LayerWriter {
    /// `root` must be an empty directory opened O_DIRECTORY.
    pub fn new(root: OwnedFd) -> Self {
        LayerWriter {
            root,
            linkable: HashSet::new(),
            implicit: BTreeSet::new(),
            dirs: BTreeMap::new(),
            parent_cache: None,
            buf: vec![0; COPY_BUF],
            privileged: rustix::process::geteuid().is_root(),
        }
    }

    /// Applies one action; `data` is the entry's content (read for regular files only).
    pub fn apply(&mut self, action: Action, data: &mut dyn Read) -> WriteResult<()> {
        match action {
            Action::Skip(_) => Ok(()),
            Action::Root(meta) => {
                self.implicit.remove(&RelPath::root());
                self.set_dir_xattrs(&RelPath::root(), &meta)?;
                self.dirs.insert(RelPath::root(), meta);
                Ok(())
            }
            Action::Whiteout(path) => self.whiteout(&path),
            Action::Opaque(dir) => self.opaque(&dir),
            Action::Create { path, kind, meta } => self.create(&path, kind, &meta, data),
        }
    }

    /// Applies directory attributes and returns the implicit directories (never the root
    /// unless the layer did not list it).
    pub fn finish(mut self) -> WriteResult<Vec<RelPath>> {
        // The root is implicit until a `./` entry says otherwise.
        if !self.dirs.contains_key(&RelPath::root()) {
            self.implicit.insert(RelPath::root());
        }
        let dirs = std::mem::take(&mut self.dirs);
        for (path, meta) in &dirs {
            let fd = self.open_dir(path)?;
            self.chown(fd.as_fd(), None, meta)
                .map_err(|e| errmsg("chown", path, e))?;
            rfs::fchmod(&fd, Mode::from_raw_mode(meta.mode & 0o7777))
                .map_err(|e| errmsg("chmod", path, e))?;
            rfs::futimens(&fd, &times(meta.mtime)).map_err(|e| errmsg("utimens", path, e))?;
        }
        Ok(self.implicit.into_iter().collect())
    }

    fn open_dir(&self, path: &RelPath) -> WriteResult<OwnedFd> {
        open_dir_beneath(self.root.as_fd(), path.as_path()).map_err(|e| errmsg("open", path, e))
    }

    /// The parent directory of an entry, creating missing ones as implicit directories.
    fn parent_fd(&mut self, parent: &RelPath) -> WriteResult<Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.parent_cache
            && p == parent
        {
            return Ok(Rc::clone(fd));
        }
        let fd = match open_dir_beneath(self.root.as_fd(), parent.as_path()) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => self.make_parents(parent)?,
            Err(e) => return Err(errmsg("open", parent, e)),
        };
        let fd = Rc::new(fd);
        self.parent_cache = Some((parent.clone(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Walks down from the root, creating each missing component (0755) as implicit. A
    /// whiteout written by this layer in the way becomes an opaque directory.
    fn make_parents(&mut self, parent: &RelPath) -> WriteResult<OwnedFd> {
        let mut cur = open_dir_beneath(self.root.as_fd(), Path::new("."))
            .map_err(|e| errmsg("open", &RelPath::root(), e))?;
        let mut sofar = RelPath::root();
        for comp in parent.components() {
            sofar = sofar.join(comp);
            match open_dir_beneath(cur.as_fd(), Path::new(comp)) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    rfs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755))
                        .map_err(|e| errmsg("mkdir", &sofar, e))?;
                    self.implicit.insert(sofar.clone());
                    cur = open_dir_beneath(cur.as_fd(), Path::new(comp))
                        .map_err(|e| errmsg("open", &sofar, e))?;
                }
                Err(Errno::NOTDIR) if is_whiteout_at(cur.as_fd(), comp) => {
                    self.remove_existing(cur.as_fd(), comp, &sofar)?;
                    rfs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755))
                        .map_err(|e| errmsg("mkdir", &sofar, e))?;
                    self.implicit.insert(sofar.clone());
                    cur = open_dir_beneath(cur.as_fd(), Path::new(comp))
                        .map_err(|e| errmsg("open", &sofar, e))?;
                    set_opaque(cur.as_fd()).map_err(|e| errmsg("set opaque on", &sofar, e))?;
                }
                Err(Errno::NOTDIR | Errno::LOOP) if is_symlink_at(cur.as_fd(), comp) => {
                    return Err(format!(
                        "parent {sofar} is a symlink: refusing to follow a symlink inside the layer"
                    ));
                }
                Err(Errno::NOTDIR) => {
                    return Err(format!(
                        "parent {sofar} is not a directory (an earlier entry of this layer made \
                         it a file; containerd, moby and podman refuse such a layer too)"
                    ));
                }
                Err(e) => return Err(errmsg("open", &sofar, e)),
            }
        }
        Ok(cur)
    }

    fn create(
        &mut self,
        path: &RelPath,
        kind: Kind,
        meta: &Meta,
        data: &mut dyn Read,
    ) -> WriteResult<()> {
        let parent = path.parent().unwrap_or_else(RelPath::root);
        let name = path.file_name().unwrap_or_default().to_owned();
        let dfd = self.parent_fd(&parent)?;
        let dfd = dfd.as_fd();
        if let Kind::Dir = kind {
            return self.create_dir(dfd, &name, path, meta);
        }
        if let Kind::HardLink { target } = &kind
            && !self.linkable.contains(target)
        {
            return Err(format!(
                "hard link to {target}, which is not an earlier file of this layer"
            ));
        }
        let mut attempt = 0;
        loop {
            match self.create_node(dfd, &name, &kind, meta, data) {
                Err(Errno::EXIST) if attempt == 0 => {
                    self.remove_existing(dfd, &name, path)?;
                    attempt += 1;
                }
                Err(e) => return Err(errmsg("create", path, e)),
                Ok(()) => break,
            }
        }
        self.linkable.insert(path.clone());
        Ok(())
    }

    /// Creates one non-directory node; EEXIST is returned untouched for the caller to replace.
    fn create_node(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &OsStr,
        kind: &Kind,
        meta: &Meta,
        data: &mut dyn Read,
    ) -> Result<(), Errno> {
        let mode = Mode::from_raw_mode(meta.mode & 0o7777);
        match kind {
            Kind::File { .. } => {
                let flags = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW;
                let fd = rfs::openat(
                    dfd,
                    name,
                    flags | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                let mut file = std::fs::File::from(fd);
                copy_data(data, &mut file, &mut self.buf)?;
                // Owner before mode (chown clears setuid), xattrs after both (chown and
                // writes clear security.capability), times last.
                self.chown(file.as_fd(), None, meta)?;
                rfs::fchmod(&file, mode)?;
                for (k, v) in &meta.xattrs {
                    set_xattr_fd(file.as_fd(), k, v)?;
                }
                return rfs::futimens(&file, &times(meta.mtime));
            }
            Kind::HardLink { target } => {
                let tparent = target.parent().unwrap_or_else(RelPath::root);
                let tdir = open_dir_beneath(self.root.as_fd(), tparent.as_path())?;
                let tname = target.file_name().unwrap_or_default();
                return rfs::linkat(&tdir, tname, dfd, name, AtFlags::empty());
            }
            Kind::Symlink { target } => rfs::symlinkat(target.as_slice(), dfd, name)?,
            Kind::Fifo => rfs::mknodat(dfd, name, FileType::Fifo, mode, 0)?,
            Kind::Char { major, minor } => rfs::mknodat(
                dfd,
                name,
                FileType::CharacterDevice,
                mode,
                rfs::makedev(*major, *minor),
            )?,
            Kind::Block { major, minor } => rfs::mknodat(
                dfd,
                name,
                FileType::BlockDevice,
                mode,
                rfs::makedev(*major, *minor),
            )?,
            Kind::Dir => return Err(Errno::ISDIR),
        }
        // Symlinks and special files: by name, never following the final component.
        self.chown(dfd, Some(name), meta)?;
        if !matches!(kind, Kind::Symlink { .. }) {
            rfs::chmodat(dfd, name, mode, AtFlags::empty())?;
        }
        for (k, v) in &meta.xattrs {
            rfs::lsetxattr(proc_path(dfd, name), k.as_slice(), v, XattrFlags::empty())?;
        }
        rfs::utimensat(dfd, name, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
    }

    fn create_dir(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
        meta: &Meta,
    ) -> WriteResult<()> {
        let mut opaque = false;
        match rfs::mkdirat(dfd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rfs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| errmsg("stat", path, e))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    // A whiteout or any other non-directory of this layer followed by a
                    // directory: that entry already hid whatever the lower layers have here,
                    // so the new directory starts empty (containerd and moby remove the old
                    // entry and make a fresh directory): an opaque directory.
                    opaque = true;
                    self.remove_existing(dfd, name, path)?;
                    rfs::mkdirat(dfd, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| errmsg("mkdir", path, e))?;
                }
            }
            Err(e) => return Err(errmsg("mkdir", path, e)),
        }
        self.implicit.remove(path);
        self.linkable.remove(path);
        if opaque {
            let fd = self.open_dir(path)?;
            set_opaque(fd.as_fd()).map_err(|e| errmsg("set opaque on", path, e))?;
        }
        self.set_dir_xattrs(path, meta)?;
        self.dirs.insert(path.clone(), meta.clone());
        Ok(())
    }

    fn set_dir_xattrs(&self, path: &RelPath, meta: &Meta) -> WriteResult<()> {
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        let fd = self.open_dir(path)?;
        for (k, v) in &meta.xattrs {
            set_xattr_fd(fd.as_fd(), k, v).map_err(|e| {
                errmsg(
                    &format!("set xattr {}", String::from_utf8_lossy(k)),
                    path,
                    e,
                )
            })?;
        }
        Ok(())
    }

    fn whiteout(&mut self, path: &RelPath) -> WriteResult<()> {
        let parent = path.parent().unwrap_or_else(RelPath::root);
        let name = path.file_name().unwrap_or_default().to_owned();
        // A whiteout below a name this layer made a non-directory (umoci writes `d` as a file
        // and then `d/.wh.x` for d's old child) hides nothing: the non-directory already ends
        // the merge there. podman's and containerd's overlay appliers skip it too.
        if self.skip_marker_under_non_dir(&parent, path)? {
            return Ok(());
        }
        let dfd = self.parent_fd(&parent)?;
        match make_whiteout(dfd.as_fd(), &name) {
            // Something this layer wrote already has that name: a whiteout only hides lower
            // layers (OCI image spec), so the entry stays.
            Ok(()) | Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(errmsg("create whiteout", path, e)),
        }
    }

    fn opaque(&mut self, dir: &RelPath) -> WriteResult<()> {
        // An opaque marker inside something that is not a directory in this layer: nothing
        // below it to hide (the same rule as a whiteout there).
        if self.skip_marker_under_non_dir(dir, &dir.join(OsStr::new(OPAQUE_MARKER)))? {
            return Ok(());
        }
        let fd = match self.open_dir(dir) {
            Ok(fd) => fd,
            Err(_) => {
                // Not written yet: create it (implicit) through the parent walk.
                let fd = self.make_parents(dir)?;
                self.parent_cache = None;
                fd
            }
        };
        set_opaque(fd.as_fd()).map_err(|e| errmsg("set opaque on", dir, e))
    }

    /// True when `dir` (or one of its parents) is a non-directory this layer wrote: a whiteout
    /// or opaque marker there is ignored. A symlink there is refused (never followed), a
    /// missing directory is not a reason to skip (the marker hides lower-layer names).
    fn skip_marker_under_non_dir(&self, dir: &RelPath, marker: &RelPath) -> WriteResult<bool> {
        let mut cur = open_dir_beneath(self.root.as_fd(), Path::new("."))
            .map_err(|e| errmsg("open", &RelPath::root(), e))?;
        let mut sofar = RelPath::root();
        for comp in dir.components() {
            sofar = sofar.join(comp);
            match open_dir_beneath(cur.as_fd(), Path::new(comp)) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => return Ok(false),
                Err(Errno::NOTDIR | Errno::LOOP) if is_symlink_at(cur.as_fd(), comp) => {
                    return Err(format!(
                        "parent {sofar} is a symlink: refusing to follow a symlink inside the layer"
                    ));
                }
                Err(Errno::NOTDIR) => {
                    log::info!(
                        "ignoring {marker}: {sofar} is not a directory in this layer (it hides nothing)"
                    );
                    return Ok(true);
                }
                Err(e) => return Err(errmsg("open", &sofar, e)),
            }
        }
        Ok(false)
    }

    /// Removes what an earlier entry of this layer wrote at `name` (a later entry wins).
    fn remove_existing(
        &mut self,
        dfd: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
    ) -> WriteResult<()> {
        remove_tree(dfd, name).map_err(|e| errmsg("replace", path, e))?;
        self.parent_cache = None;
        let under = |p: &RelPath| p.as_path().starts_with(path.as_path());
        self.linkable.retain(|p| !under(p));
        self.implicit.retain(|p| !under(p));
        self.dirs.retain(|p, _| !under(p));
        Ok(())
    }

    /// Sets the owner; an unprivileged extraction keeps the caller's ids.
    fn chown(&self, fd: BorrowedFd<'_>, name: Option<&OsStr>, meta: &Meta) -> Result<(), Errno> {
        if !self.privileged {
            return Ok(());
        }
        let (u, g) = (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)));
        match name {
            Some(n) => rfs::chownat(fd, n, u, g, AtFlags::SYMLINK_NOFOLLOW),
            None => rfs::fchown(fd, u, g),
        }
    }
}

/// Opens a directory beneath `base` without following any symlink; `path` may be empty.
pub fn open_dir_beneath(base: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, Errno> {
    let p: &Path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    rfs::openat2(
        base,
        p,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        RESOLVE,
    )
}

fn times(m: Mtime) -> Timestamps {
    let t = Timespec {
        tv_sec: m.sec,
        tv_nsec: m.nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn proc_path(dfd: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    Path::new("/proc/self/fd")
        .join(dfd.as_raw_fd().to_string())
        .join(name)
}

fn set_xattr_fd(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> Result<(), Errno> {
    match rfs::fsetxattr(fd, name, value, XattrFlags::empty()) {
        // A filesystem without that namespace: keep going, as tar does.
        Err(Errno::NOTSUP) => {
            log::warn!("xattr {} not supported here", String::from_utf8_lossy(name));
            Ok(())
        }
        r => r,
    }
}

fn set_opaque(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    rfs::fsetxattr(fd, OPAQUE_XATTR, OPAQUE_VALUE, XattrFlags::empty())
}

/// Creates an overlay whiteout: a character device 0/0.
pub fn make_whiteout(dfd: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    rfs::mknodat(
        dfd,
        name,
        FileType::CharacterDevice,
        Mode::empty(),
        rfs::makedev(0, 0),
    )
}

fn is_symlink_at(dfd: BorrowedFd<'_>, name: &OsStr) -> bool {
    rfs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
}

fn is_whiteout_at(dfd: BorrowedFd<'_>, name: &OsStr) -> bool {
    match rfs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => {
            FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
        }
        Err(_) => false,
    }
}

fn copy_data(src: &mut dyn Read, dst: &mut std::fs::File, buf: &mut [u8]) -> Result<(), Errno> {
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_errno(&e)),
        };
        dst.write_all(&buf[..n]).map_err(|e| io_errno(&e))?;
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Removes `name` in `dfd` and, for a directory, everything below it, never following symlinks.
pub fn remove_tree(dfd: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match rfs::unlinkat(dfd, name, AtFlags::empty()) {
        Err(Errno::ISDIR) => {}
        r => return r,
    }
    let sub = open_dir_beneath(dfd, Path::new(name))?;
    let mut names = Vec::new();
    let mut dir = rfs::Dir::read_from(&sub)?;
    while let Some(ent) = dir.read() {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(std::ffi::OsString::from(
                <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(n),
            ));
        }
    }
    for n in names {
        remove_tree(sub.as_fd(), &n)?;
    }
    rfs::unlinkat(dfd, name, AtFlags::REMOVEDIR)
}

/// Gives each implicit directory of a layer the owner, mode and times of the same directory in
/// the topmost lower layer that has an entry there (`lowers` top first). A layer-listed entry
/// that is not a directory (a file or whiteout) ends the search: nothing to inherit.
pub fn copy_dir_attrs_from_lower(
    layer: BorrowedFd<'_>,
    implicit: &[RelPath],
    lowers: &[BorrowedFd<'_>],
) -> WriteResult<()> {
    for path in implicit {
        let found =
            lowers
                .iter()
                .find_map(|lower| match open_dir_beneath(*lower, path.as_path()) {
                    Ok(fd) => Some(rfs::fstat(&fd).ok()),
                    Err(Errno::NOENT) => None,
                    Err(_) => Some(None),
                });
        let Some(Some(st)) = found else { continue };
        let fd = open_dir_beneath(layer, path.as_path()).map_err(|e| errmsg("open", path, e))?;
        let owner = (
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        );
        if rustix::process::geteuid().is_root() {
            rfs::fchown(&fd, owner.0, owner.1).map_err(|e| errmsg("chown", path, e))?;
        }
        rfs::fchmod(&fd, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(|e| errmsg("chmod", path, e))?;
        let ts = Timestamps {
            last_access: Timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec as _,
            },
            last_modification: Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            },
        };
        rfs::futimens(&fd, &ts).map_err(|e| errmsg("utimens", path, e))?;
    }
    Ok(())
}
