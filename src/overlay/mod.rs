//! The union: a stack of one optional writable upper layer over read-only lower layers, with
//! the semantics of Linux overlayfs (Documentation/filesystems/overlayfs.rst, defaults
//! redirect_dir=off, index=off, metacopy=off). No fuser types here: `crate::fuse` converts.
//!
//! Layout of a mount:
//! ```text
//!   upper/            writable layer (index 0 of the stack)       whiteouts: char 0/0
//!   lower[0]/ ...     read-only layers, top first                  opaque: trusted.overlay.opaque=y
//!   workdir/work/     staging: every copy-up, whiteout and new entry that must appear
//!                     atomically is built here and published by one rename
//! ```
//!
//! Lock discipline (the only locks in the union):
//! 1. `NodeTable` lock: get/insert/remove only, never held across a syscall.
//! 2. a node's `state` lock: read or update that node's fields, never across a syscall, never
//!    while taking another lock.
//! 3. a node's `copyup_lock`: held across that node's copy-up (bulk I/O), so concurrent first
//!    writes do one copy-up while every other node stays available. Taken child-last: a
//!    copy-up takes its ancestors' copy-up locks one at a time, parents first, never two at once.
//! 4. a directory's `dir_lock`: held while its upper copy gains or loses an entry (our
//!    directory operations, and the publishing rename of a child's copy-up with the restore of
//!    the directory's times). Taken after every copy-up the operation needs, so nothing waits
//!    for a copy-up lock while holding it; rename takes both directories' locks in id order.
//!
//! 5. a node's `lower_names` (cached lower listings) and `dir_fds` (cached directory fds,
//!    `place.rs`): held only to read or update that field, never across a syscall, never
//!    while taking another lock.
//! 6. in `crate::fuse`: the `iomodes` map (the same rule as 5); a `FileH`'s `reopened`, held
//!    while the upper copy is opened for a handle opened before a copy-up (takes 1-2 inside);
//!    a `DirH`'s `entries`, held while one READDIR(PLUS) reply is filled from the listing
//!    (the lookups of READDIRPLUS take 1-2 and 5 inside). Neither is taken by the union, so
//!    nothing waits for them while holding another lock.
//!
//! Directory operations on one directory are serialised by the kernel (i_rwsem), so a name's
//! state can't change between our lookup of it and the operation on it.
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FileType, Stat};
use rustix::io::Errno;

pub mod copyup;
pub mod dirops;
pub mod fileops;
pub mod layer;
pub mod lookup;
pub mod node;
pub mod owners;
pub mod place;
pub mod readdir;
pub mod redirect;
pub mod rename;
mod setup;
pub mod whiteout;

use crate::{Error, Result, sys};
use layer::{Layer, LowerIdx};
use node::{Node, NodeId, NodeState, NodeTable};

/// Stat of a node as the mount shows it (`st_ino` is the node id).
pub type Attr = Stat;

/// The credentials of the process making a request: new entries are owned by it.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Top first.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub userxattr: bool,
    /// Rename merged and lower directories with redirects (`redirect.rs`); off: EXDEV.
    pub redirect_dir: bool,
    pub fsync: bool,
    /// Owner translation and override xattrs (`owners.rs`).
    pub ownership: owners::Ownership,
    /// Attribute and xattr switches of fuse-overlayfs.
    pub quirks: Quirks,
}

/// fuse-overlayfs's switches that change what the mount shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quirks {
    /// Every directory reports one link (`static_nlink`).
    pub static_nlink: bool,
    /// `st_ino` truncated to 32 bits (`ino32_t`).
    pub ino32: bool,
    /// POSIX ACL xattrs fail with EOPNOTSUPP (`noacl`).
    pub noacl: bool,
    /// Every xattr call fails with EOPNOTSUPP (`noxattrs=1`).
    pub noxattrs: bool,
}

/// Which layer of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Upper,
    Lower(LowerIdx),
}

#[derive(Debug)]
struct Writable {
    upper: Layer,
    /// `workdir/work`, on the upper layer's filesystem.
    work: Layer,
    /// The exclusive locks marking the upper and work directories in use (`setup.rs`).
    _in_use: Vec<std::os::fd::OwnedFd>,
}

#[derive(Debug)]
pub struct Overlay {
    rw: Option<Writable>,
    lowers: Vec<Layer>,
    pub nodes: NodeTable,
    /// Every layer on one filesystem: node ids are plain inode numbers.
    single_dev: bool,
    devs: Vec<u64>,
    opaque_xattr: &'static CStr,
    fsync: bool,
    redirect_dir: bool,
    tmp_seq: AtomicU64,
    pub(crate) owners: owners::Ownership,
    pub(crate) quirks: Quirks,
}

const WORK_SUBDIR: &CStr = c"work";

impl Overlay {
    pub fn new(cfg: &Config) -> Result<Overlay> {
        if cfg.lowers.is_empty() {
            return Err(Error::Usage(
                "no lowerdir given: use -o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR]".into(),
            ));
        }
        // Every directory looked up keeps an fd (place.rs): cache up to half the fd limit.
        let limit = sys::nofollow::raise_nofile_limit();
        node::set_fd_budget(usize::try_from(limit / 2).unwrap_or(usize::MAX));
        let lowers = cfg
            .lowers
            .iter()
            .map(|p| Layer::open(p, "lowerdir"))
            .collect::<Result<Vec<_>>>()?;
        let rw = match (&cfg.upper, &cfg.work) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Usage(
                    "upperdir and workdir go together: give both, or neither for a read-only mount"
                        .into(),
                ));
            }
            (Some(u), Some(w)) => Some(setup::open_writable(&lowers, u, w)?),
        };
        let mut devs: Vec<u64> = Vec::new();
        for d in rw
            .iter()
            .map(|w| w.upper.dev)
            .chain(lowers.iter().map(|l| l.dev))
        {
            if !devs.contains(&d) {
                devs.push(d);
            }
        }
        let ov = Overlay {
            single_dev: devs.len() == 1,
            devs,
            rw,
            lowers,
            nodes: NodeTable::default(),
            opaque_xattr: if cfg.userxattr {
                whiteout::USER_OPAQUE
            } else {
                whiteout::TRUSTED_OPAQUE
            },
            fsync: cfg.fsync,
            redirect_dir: cfg.redirect_dir && !cfg.userxattr,
            tmp_seq: AtomicU64::new(seed()),
            owners: cfg.ownership.clone(),
            quirks: cfg.quirks,
        };
        let mut ov = ov;
        if !cfg.userxattr && ov.rw.is_some() && !ov.trusted_xattrs_work() {
            // Like the kernel in a user namespace: trusted.* needs CAP_SYS_ADMIN in the
            // initial namespace, so the markers go to user.overlay.* instead.
            log::warn!(
                "trusted.* xattrs can't be written here (not root in the initial user namespace): \
                 using user.overlay.* markers, as -o userxattr does"
            );
            ov.opaque_xattr = whiteout::USER_OPAQUE;
            // As with an explicit userxattr (and the kernel's userxattr default): no redirects.
            ov.redirect_dir = false;
        }
        let root_state = NodeState {
            links: Vec::new(),
            upper: ov.rw.is_some(),
            lowers: (0..ov.lowers.len()).map(|i| LowerIdx(i as u16)).collect(),
            upper_ino: None,
            redirect: None,
            lower_at: Arc::default(),
        };
        // The root shows the inode number of the upper root (else the top lower's), like
        // overlayfs; its node id is FUSE's fixed root id.
        let top = ov
            .rw
            .as_ref()
            .map_or_else(|| ov.lowers.first(), |w| Some(&w.upper));
        let root_ino = match top {
            Some(l) => ov.node_id_for(l.dev, sys::lstat_at(l.fd(), c".")?.st_ino).0,
            None => NodeId::ROOT.0,
        };
        let root = Node::new(NodeId::ROOT, root_ino, FileType::Directory, root_state);
        ov.nodes.insert_root(root);
        Ok(ov)
    }

    pub fn is_read_only(&self) -> bool {
        self.rw.is_none()
    }

    pub fn fsync_enabled(&self) -> bool {
        self.fsync
    }

    pub fn node(&self, id: NodeId) -> Result<Arc<Node>> {
        self.nodes.get(id).ok_or(Error::Sys(Errno::STALE))
    }

    pub fn forget(&self, id: NodeId, n: u64) {
        self.nodes.forget(id, n);
    }

    fn writable(&self) -> Result<&Writable> {
        self.rw.as_ref().ok_or(Error::Sys(Errno::ROFS))
    }

    pub fn layer_fd(&self, w: Which) -> Result<BorrowedFd<'_>> {
        Ok(self.layer(w)?.fd())
    }

    pub(super) fn layer(&self, w: Which) -> Result<&Layer> {
        match w {
            Which::Upper => Ok(&self.writable()?.upper),
            Which::Lower(i) => self.lower(i),
        }
    }

    fn lower(&self, i: LowerIdx) -> Result<&Layer> {
        self.lowers
            .get(usize::from(i.0))
            .ok_or(Error::Sys(Errno::STALE))
    }

    /// The layer holding the node's visible copy.
    pub fn top_of(st: &NodeState) -> Result<Which> {
        if st.upper {
            Ok(Which::Upper)
        } else {
            st.lowers
                .first()
                .map(|l| Which::Lower(*l))
                .ok_or(Error::Sys(Errno::STALE))
        }
    }

    /// The node id for an inode of layer filesystem `dev`: the inode number itself when every
    /// layer shares one filesystem, else the number tagged with the filesystem's index.
    fn node_id_for(&self, dev: u64, ino: u64) -> NodeId {
        let id = if self.single_dev {
            ino
        } else {
            let idx = self.devs.iter().position(|d| *d == dev).unwrap_or(0) as u64;
            ((idx + 1) << 48) ^ ino
        };
        if id == NodeId::ROOT.0 || id == 0 {
            NodeId(1 << 62 | id)
        } else {
            NodeId(id)
        }
    }

    /// Stat of the node's visible copy, as the mount shows it.
    pub fn getattr(&self, node: &Arc<Node>) -> Result<Attr> {
        let st = node.state();
        let mut a = self.stat_in(node, Self::top_of(&st)?)?;
        self.fix_attr(node, &st, &mut a);
        drop(st);
        self.show_owners(node, &mut a);
        Ok(a)
    }

    fn fix_attr(&self, node: &Arc<Node>, st: &NodeState, a: &mut Attr) {
        a.st_ino = node.ino();
        if self.quirks.ino32 {
            a.st_ino &= 0xffff_ffff;
        }
        // Like overlayfs: a directory merged from several layers reports one link.
        if node.is_dir()
            && (self.quirks.static_nlink || usize::from(st.upper) + st.lowers.len() > 1)
        {
            a.st_nlink = 1;
        }
    }

    /// The owners (and, with an override xattr, the mode) as the mount shows them. Call it
    /// with no node lock held: it may read the node's override xattr.
    fn show_owners(&self, node: &Arc<Node>, a: &mut Attr) {
        if self.owners.is_identity() {
            return;
        }
        let value = self.owners.override_xattr.and_then(|name| {
            let top = Self::top_of(&node.state()).ok()?;
            let p = self.place(node, top).ok()?;
            owners::read_override(fileops::target(node, &p), name)
        });
        self.owners.show(a, value.as_deref());
    }

    /// Can this process write `trusted.*` xattrs in the upper layer? Probed once at mount on
    /// a scratch file in the workdir.
    fn trusted_xattrs_work(&self) -> bool {
        let Ok(w) = self.writable() else {
            return true;
        };
        let tmp = self.tmp_name();
        let fd = match sys::open_at(
            w.work.fd(),
            &tmp,
            rustix::fs::OFlags::CREATE | rustix::fs::OFlags::EXCL | rustix::fs::OFlags::WRONLY,
            0o600,
        ) {
            Ok(fd) => fd,
            Err(_) => return true,
        };
        let t = sys::nofollow::Target::Fd(fd.as_fd());
        let ok = sys::nofollow::set_xattr(t, c"trusted.overlay.layerfs-probe", b"y", 0).is_ok();
        let _ = rustix::fs::unlinkat(w.work.fd(), &tmp, rustix::fs::AtFlags::empty());
        ok
    }

    /// A fresh name for staging an entry in the workdir. Names never repeat within a mount
    /// and are seeded per mount, and every creation with one uses O_EXCL semantics.
    fn tmp_name(&self) -> CString {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#lfs{:x}-{n:x}", std::process::id())).unwrap_or_default()
    }

    pub fn statfs(&self) -> Result<rustix::fs::StatVfs> {
        let fd = match &self.rw {
            Some(w) => w.upper.fd(),
            None => self.lower(LowerIdx(0))?.fd(),
        };
        // O_PATH fds don't support fstatvfs: reopen the root for reading.
        let dir = sys::open_at(
            fd,
            c".",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            0,
        )?;
        Ok(rustix::fs::fstatvfs(dir.as_fd())?)
    }

    pub fn opaque_xattr(&self) -> &'static CStr {
        self.opaque_xattr
    }

    pub fn own_xattrs(&self) -> whiteout::OwnXattrs {
        whiteout::OwnXattrs {
            prefix: if self.opaque_xattr == whiteout::USER_OPAQUE {
                b"user.overlay."
            } else {
                b"trusted.overlay."
            },
        }
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t << 16) ^ u64::from(std::process::id())
}

/// What a name resolves to (see `lookup.rs`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub node: Arc<Node>,
    pub attr: Attr,
}

/// The longest name a layer filesystem takes (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// A name as the kernel hands it over, checked: one component (not empty, `.` or `..`, no
/// `/`, no NUL) of at most NAME_MAX bytes. The kernel never sends anything else; the check
/// keeps every caller of the overlay to one-component names, which `place.rs` relies on.
pub fn component(name: &OsStr) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Error::Sys(Errno::INVAL));
    }
    if b.len() > NAME_MAX {
        return Err(Error::Sys(Errno::NAMETOOLONG));
    }
    Ok(sys::cstr(name)?)
}

/// A name to create: a `component` that is not a `.wh.` name (whiteouts in other tools'
/// layers: never shown, never created).
pub(crate) fn name_ok(name: &OsStr) -> Result<CString> {
    let c = component(name)?;
    if whiteout::is_wh_name(name) {
        return Err(Error::Sys(Errno::INVAL));
    }
    Ok(c)
}

/// A name to remove or rename away: a `component`; `.wh.` names never exist (ENOENT).
pub(crate) fn existing_name(name: &OsStr) -> Result<CString> {
    let c = component(name)?;
    if whiteout::is_wh_name(name) {
        return Err(Error::Sys(Errno::NOENT));
    }
    Ok(c)
}
