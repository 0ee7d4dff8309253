//! Opening a mount's directories, with the kernel's refusals, before anything is touched.
//!
//! - upperdir and workdir must be separate subtrees (neither inside the other, not equal):
//!   the workdir's `work/` is emptied at every mount, so an upper inside it would be wiped,
//!   and a workdir inside the upper would show up in the union;
//! - no lowerdir may be the upperdir, the workdir or another lowerdir, or lie inside one: an
//!   upper equal to a lower would write whiteouts into a "read-only" layer (an upper inside a
//!   lower is accepted, as by the kernel);
//! - an upper/work pair is used by one live mount at a time: the daemon holds an exclusive
//!   `flock` on both directories for its lifetime (the kernel marks them "in use" the same way);
//!   a second mount is refused, and nothing in its workdir is cleared.
//!
//! Containment is decided on (device, inode) of every ancestor, walked up through `..` from the
//! opened directories, so symlinks and bind mounts in the given paths can't hide an overlap.
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::layer::Layer;
use super::{WORK_SUBDIR, Writable, copyup};
use crate::{Error, Result, sys};

/// A directory and its ancestors up to the root, as (dev, ino), itself first.
fn ancestry(fd: BorrowedFd<'_>) -> Result<Vec<(u64, u64)>, Errno> {
    let id = |st: &rustix::fs::Stat| (st.st_dev, st.st_ino);
    let mut out = vec![id(&rustix::fs::fstat(fd)?)];
    let mut cur: Option<OwnedFd> = None;
    // Deeper trees than this don't exist on Linux (PATH_MAX bounds what `..` can climb to).
    for _ in 0..4096 {
        let here = cur.as_ref().map_or(fd, |f| f.as_fd());
        let up = rustix::fs::openat(
            here,
            c"..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let st = id(&rustix::fs::fstat(&up)?);
        if out.last() == Some(&st) {
            break;
        }
        out.push(st);
        cur = Some(up);
    }
    Ok(out)
}

/// The directories of a mount, opened, with their ancestries.
struct Opened<'a> {
    what: &'static str,
    layer: &'a Layer,
    up: Vec<(u64, u64)>,
}

impl Opened<'_> {
    /// Is `self` the directory `other` or inside it?
    fn within(&self, other: &Opened<'_>) -> bool {
        other.up.first().is_some_and(|me| self.up.contains(me))
    }

    fn overlaps(&self, other: &Opened<'_>) -> bool {
        self.within(other) || other.within(self)
    }
}

fn opened<'a>(what: &'static str, layer: &'a Layer) -> Result<Opened<'a>> {
    let up = ancestry(layer.fd()).map_err(|e| Error::io("inspect", &layer.path, e.into()))?;
    Ok(Opened { what, layer, up })
}

/// Refuses overlapping upper, work and lower directories, with the kernel's rules and words:
/// upper and work apart; no lower equal to or inside the upper or the workdir, or equal to or
/// inside another lower. (An upper or workdir inside a lower is accepted, as by the kernel.)
pub(super) fn check_overlaps(lowers: &[Layer], upper: &Layer, work: &Layer) -> Result<()> {
    let (u, w) = (opened("upperdir", upper)?, opened("workdir", work)?);
    if u.overlaps(&w) {
        return Err(Error::Usage(format!(
            "workdir and upperdir must be separate subtrees: upperdir {} and workdir {} {} \
             (use two sibling directories, e.g. DIR/upper and DIR/work)",
            upper.path.display(),
            work.path.display(),
            relation(&u, &w),
        )));
    }
    let ls = lowers
        .iter()
        .map(|l| opened("lowerdir", l))
        .collect::<Result<Vec<_>>>()?;
    for (i, l) in ls.iter().enumerate() {
        let others = [&u, &w].into_iter().chain(ls[..i].iter());
        for other in others {
            let conflict = if l.within(other) {
                Some((l, other))
            } else if other.what == "lowerdir" && other.within(l) {
                Some((other, l))
            } else {
                None
            };
            if let Some((inner, outer)) = conflict {
                let word = if inner.up.first() == outer.up.first() {
                    "conflicting"
                } else {
                    "overlapping"
                };
                return Err(Error::Usage(format!(
                    "{word} lowerdir path: lowerdir {} and {} {} {} (a lower layer must not be \
                     the upperdir, the workdir or another lowerdir, nor lie inside one)",
                    inner.layer.path.display(),
                    outer.what,
                    outer.layer.path.display(),
                    relation(inner, outer),
                )));
            }
        }
    }
    Ok(())
}

/// How `a` and `b` overlap, in words.
fn relation(a: &Opened<'_>, b: &Opened<'_>) -> String {
    if a.up.first() == b.up.first() {
        "are the same directory".into()
    } else if a.within(b) {
        format!("overlap: the {} is inside the {}", a.what, b.what)
    } else {
        format!("overlap: the {} is inside the {}", b.what, a.what)
    }
}

/// Takes the exclusive lock that marks `layer` in use by this mount, for as long as the fd
/// lives (the daemon's lifetime: the fd is inherited across its fork).
fn lock_in_use(layer: &Layer, what: &str) -> Result<OwnedFd> {
    let fd = sys::open_at(layer.fd(), c".", OFlags::RDONLY | OFlags::DIRECTORY, 0)
        .map_err(|e| Error::io("open", &layer.path, e.into()))?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(fd),
        Err(Errno::WOULDBLOCK) => Err(Error::Usage(format!(
            "{what} {} is in use by another live layerfs mount: an upper/work pair serves one \
             mount at a time (unmount the other one, or give this mount its own {what})",
            layer.path.display()
        ))),
        Err(e) => Err(Error::io("lock", &layer.path, e.into())),
    }
}

/// Opens and checks the upper and work directories, marks them in use, then prepares
/// `workdir/work` (clearing leftovers of an interrupted operation, as the kernel does).
pub(super) fn open_writable(lowers: &[Layer], upper: &Path, work: &Path) -> Result<Writable> {
    let upper = Layer::open(upper, "upperdir")?;
    let wroot = Layer::open(work, "workdir")?;
    if wroot.dev != upper.dev {
        return Err(Error::Usage(format!(
            "workdir {} and upperdir {} are on different filesystems: they must be on the same one \
             (copy-up publishes by rename)",
            wroot.path.display(),
            upper.path.display()
        )));
    }
    check_overlaps(lowers, &upper, &wroot)?;
    let locks = vec![
        lock_in_use(&upper, "upperdir")?,
        lock_in_use(&wroot, "workdir")?,
    ];
    // The kernel makes `work` mode 000, which only root can enter; a normal user's daemon
    // needs it usable (fuse-overlayfs does the same), and fixes one left at 000.
    let root = rustix::process::geteuid().is_root();
    let mode = if root { Mode::empty() } else { Mode::RWXU };
    match rustix::fs::mkdirat(wroot.fd(), WORK_SUBDIR, mode) {
        Ok(()) => {}
        Err(Errno::EXIST) if !root => {
            let st = crate::sys::lstat_at(wroot.fd(), WORK_SUBDIR)
                .map_err(|e| Error::io("stat", wroot.path.join("work"), e.into()))?;
            let mine = st.st_uid == rustix::process::geteuid().as_raw();
            if mine && st.st_mode & 0o700 != 0o700 && crate::sys::file_type(&st).is_dir() {
                crate::sys::nofollow::chmod_at(wroot.fd(), WORK_SUBDIR, 0o700)
                    .map_err(|e| Error::io("chmod", wroot.path.join("work"), e.into()))?;
            }
        }
        Err(Errno::EXIST) => {}
        Err(e) => {
            return Err(Error::io("create", wroot.path.join("work"), e.into()));
        }
    }
    let work_path = wroot.path.join("work");
    let work = Layer::open(&work_path, "workdir")?;
    copyup::purge_dir_contents(work.fd(), c".")
        .map_err(|e| Error::io("clean", &work_path, e.into()))?;
    Ok(Writable {
        upper,
        work,
        _in_use: locks,
    })
}
