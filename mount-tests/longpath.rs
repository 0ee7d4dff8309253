//! Long paths through the mount, compared with kernel overlayfs: the cases of pjdfstest's
//! `*/03` (and `rename/02`) rewritten for this harness — paths of PATH_MAX-1 bytes made of
//! 255-byte components, created and then chmod'ed, chown'ed, truncated, linked, renamed,
//! unlinked, rmdir'ed, ... — plus trees deeper than PATH_MAX reached one directory fd at a
//! time, on fresh entries and on lower-layer entries that must be copied up.
//!
//! Every operation's outcome (errno, or the resulting type/mode/owner/size/links) is recorded
//! for both implementations and the two lists must be equal; the kernel's list must also show
//! success where POSIX requires it (so the comparison can't pass with both failing).
mod common;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use common::mount::{Dirs, Impl, Mount};
use common::ops::errno_name;
use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, OFlags, RenameFlags, Uid};

const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4096;

/// A 255-byte name, distinct per `i` and `tag`.
fn comp(tag: char, i: usize) -> String {
    let head = format!("{tag}{i:03}");
    head.clone() + &"x".repeat(NAME_MAX - head.len())
}

/// `n` directory names and their joined prefixes.
fn chain(tag: char, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in 0..n {
        let c = comp(tag, i);
        out.push(match out.last() {
            Some(p) => format!("{p}/{c}"),
            None => c,
        });
    }
    out
}

/// The 15 directories that, with a final 255-byte name, make PATH_MAX-1 bytes.
fn dirs15(tag: char) -> Vec<String> {
    chain(tag, (PATH_MAX - 1 - NAME_MAX) / (NAME_MAX + 1))
}

fn st(dir: BorrowedFd<'_>, p: &str) -> String {
    match rustix::fs::statat(dir, p, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => {
            let t = match FileType::from_raw_mode(s.st_mode) {
                FileType::RegularFile => "f",
                FileType::Directory => "d",
                FileType::Symlink => "l",
                FileType::Fifo => "p",
                FileType::CharacterDevice => "c",
                FileType::BlockDevice => "b",
                _ => "?",
            };
            let mode = s.st_mode & 0o7777;
            let size = if t == "d" { 0 } else { s.st_size };
            format!(
                "{t} {mode:04o} {}:{} size={size} nlink={}",
                s.st_uid, s.st_gid, s.st_nlink
            )
        }
        Err(e) => errno_name(e),
    }
}

fn res<T>(r: rustix::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => errno_name(e),
    }
}

/// Records outcomes, labelled.
struct Log(Vec<String>);

impl Log {
    fn push(&mut self, label: &str, outcome: String) {
        self.0.push(format!("{label}: {outcome}"));
    }
}

/// pjdfstest's long-path cases at PATH_MAX-1 bytes, relative to the mount root `root`.
fn pjd_long_paths(root: BorrowedFd<'_>, mnt: &Path, log: &mut Log) {
    let d = dirs15('d');
    pjd_files(root, mnt, &d, log);
    pjd_names(root, &d, log);
    pjd_limits(root, &d, log);
}

/// The directory chain, then mkdir/rmdir, open, chmod, chown, truncate, ftruncate at
/// PATH_MAX-1.
fn pjd_files(root: BorrowedFd<'_>, mnt: &Path, d: &[String], log: &mut Log) {
    for p in d {
        log.push(
            "mkdir chain",
            res(rustix::fs::mkdirat(
                root,
                p.as_str(),
                Mode::from_raw_mode(0o755),
            )),
        );
    }
    let base = d.last().cloned().unwrap_or_default();
    let p = format!("{base}/{}", comp('n', 0));
    assert_eq!(p.len(), PATH_MAX - 1);
    // mkdir/03, rmdir/03
    log.push(
        "mkdir",
        res(rustix::fs::mkdirat(
            root,
            p.as_str(),
            Mode::from_raw_mode(0o755),
        )),
    );
    log.push("stat dir", st(root, &p));
    log.push(
        "rmdir",
        res(rustix::fs::unlinkat(root, p.as_str(), AtFlags::REMOVEDIR)),
    );
    // open/03
    let fd = rustix::fs::openat(
        root,
        p.as_str(),
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    );
    log.push("open create", res(fd.as_ref().map(|_| ()).map_err(|e| *e)));
    if let Ok(fd) = &fd {
        log.push("write", res(rustix::io::write(fd, b"long path data")));
    }
    drop(fd);
    log.push("stat file", st(root, &p));
    // chmod/03, chown/03
    log.push(
        "chmod",
        res(rustix::fs::chmodat(
            root,
            p.as_str(),
            Mode::from_raw_mode(0o640),
            AtFlags::empty(),
        )),
    );
    log.push("after chmod", st(root, &p));
    let owner = (Some(Uid::from_raw(65534)), Some(Gid::from_raw(65533)));
    log.push(
        "chown",
        res(rustix::fs::chownat(
            root,
            p.as_str(),
            owner.0,
            owner.1,
            AtFlags::empty(),
        )),
    );
    log.push("after chown", st(root, &p));
    // truncate/03: truncate(2) has no *at form; a child process with the mount as its cwd.
    let t = Command::new("truncate")
        .current_dir(mnt)
        .args(["-s", "123", &p])
        .status();
    log.push("truncate", format!("{:?}", t.map(|s| s.success())));
    log.push("after truncate", st(root, &p));
    // ftruncate/03
    match rustix::fs::openat(root, p.as_str(), OFlags::WRONLY, Mode::empty()) {
        Ok(fd) => log.push("ftruncate", res(rustix::fs::ftruncate(&fd, 567))),
        Err(e) => log.push("ftruncate open", errno_name(e)),
    }
    log.push("after ftruncate", st(root, &p));
}

/// link, rename, unlink, mkfifo, mknod and symlink at PATH_MAX-1.
fn pjd_names(root: BorrowedFd<'_>, d: &[String], log: &mut Log) {
    let base = d.last().cloned().unwrap_or_default();
    let p = format!("{base}/{}", comp('n', 0));
    let p2 = format!("{base}/{}", comp('n', 1));
    let p3 = format!("{base}/{}", comp('n', 2));
    // link/03, rename/02, unlink/03
    log.push(
        "link",
        res(rustix::fs::linkat(
            root,
            p.as_str(),
            root,
            p2.as_str(),
            AtFlags::empty(),
        )),
    );
    log.push("after link", st(root, &p));
    log.push(
        "rename",
        res(rustix::fs::renameat_with(
            root,
            p2.as_str(),
            root,
            p3.as_str(),
            RenameFlags::empty(),
        )),
    );
    log.push("renamed from", st(root, &p2));
    log.push("renamed to", st(root, &p3));
    log.push(
        "unlink new",
        res(rustix::fs::unlinkat(root, p3.as_str(), AtFlags::empty())),
    );
    log.push(
        "unlink",
        res(rustix::fs::unlinkat(root, p.as_str(), AtFlags::empty())),
    );
    log.push("gone", st(root, &p));
    // mkfifo/03, mknod/03
    let nodes = [
        ("mkfifo", FileType::Fifo, 0),
        (
            "mknod chr",
            FileType::CharacterDevice,
            rustix::fs::makedev(1, 3),
        ),
        (
            "mknod blk",
            FileType::BlockDevice,
            rustix::fs::makedev(7, 250),
        ),
    ];
    for (label, kind, dev) in nodes {
        log.push(
            label,
            res(rustix::fs::mknodat(
                root,
                p.as_str(),
                kind,
                Mode::from_raw_mode(0o640),
                dev,
            )),
        );
        log.push(label, st(root, &p));
        log.push(
            label,
            res(rustix::fs::unlinkat(root, p.as_str(), AtFlags::empty())),
        );
    }
    // symlink/03: a long link name, and a PATH_MAX-1 target.
    log.push(
        "symlink",
        res(rustix::fs::symlinkat("target", root, p.as_str())),
    );
    log.push(
        "readlink",
        format!("{:?}", rustix::fs::readlinkat(root, p.as_str(), Vec::new())),
    );
    log.push(
        "unlink symlink",
        res(rustix::fs::unlinkat(root, p.as_str(), AtFlags::empty())),
    );
    log.push(
        "symlink long target",
        res(rustix::fs::symlinkat(
            p.as_str(),
            root,
            comp('s', 0).as_str(),
        )),
    );
    let target = rustix::fs::readlinkat(root, comp('s', 0).as_str(), Vec::new());
    log.push(
        "readlink long target",
        format!("{:?}", target.map(|t| t.as_bytes().len())),
    );
}

/// One byte more is too long (the VFS), and so is a 256-byte name (the filesystem); then
/// rmdir/03 on every length of the chain.
fn pjd_limits(root: BorrowedFd<'_>, d: &[String], log: &mut Log) {
    let base = d.last().cloned().unwrap_or_default();
    let too_long = format!("{base}/{}y", comp('n', 0));
    log.push(
        "PATH_MAX",
        res(rustix::fs::mkdirat(
            root,
            too_long.as_str(),
            Mode::from_raw_mode(0o755),
        )),
    );
    let name256 = format!("{}/{}y", d[0], comp('n', 0));
    log.push(
        "NAME_MAX+1 mkdir",
        res(rustix::fs::mkdirat(
            root,
            name256.as_str(),
            Mode::from_raw_mode(0o755),
        )),
    );
    log.push("NAME_MAX+1 stat", st(root, &name256));
    // rmdir/03 on every length of the chain.
    for p in d.iter().rev() {
        log.push(
            "rmdir chain",
            res(rustix::fs::unlinkat(root, p.as_str(), AtFlags::REMOVEDIR)),
        );
    }
}

/// Opens (creating when `make`) `depth` directories below `root`, one fd at a time: the
/// whole path is far longer than PATH_MAX.
fn descend(
    root: BorrowedFd<'_>,
    tag: char,
    depth: usize,
    make: bool,
    log: &mut Log,
) -> Option<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for i in 0..depth {
        let name = comp(tag, i);
        let dir = cur.as_ref().map_or(root, |f| f.as_fd());
        if make && let Err(e) = rustix::fs::mkdirat(dir, name.as_str(), Mode::from_raw_mode(0o755))
        {
            log.push(&format!("mkdir depth {i}"), errno_name(e));
            return None;
        }
        match rustix::fs::openat(
            dir,
            name.as_str(),
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        ) {
            Ok(fd) => cur = Some(fd),
            Err(e) => {
                log.push(&format!("open depth {i}"), errno_name(e));
                return None;
            }
        }
    }
    cur
}

/// Depth beyond PATH_MAX: a new tree, and a lower tree copied up at its bottom.
fn deep_trees(root: BorrowedFd<'_>, log: &mut Log) {
    const DEEP: usize = 40;
    if let Some(dir) = descend(root, 'e', DEEP, true, log) {
        let f = comp('f', 0);
        let fd = rustix::fs::openat(
            &dir,
            f.as_str(),
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o600),
        );
        log.push(
            "deep create",
            res(fd.map(|fd| rustix::io::write(fd, b"deep"))),
        );
        log.push(
            "deep chmod",
            res(rustix::fs::chmodat(
                &dir,
                f.as_str(),
                Mode::from_raw_mode(0o4711),
                AtFlags::empty(),
            )),
        );
        log.push(
            "deep link",
            res(rustix::fs::linkat(
                &dir,
                f.as_str(),
                &dir,
                "l",
                AtFlags::empty(),
            )),
        );
        log.push(
            "deep rename",
            res(rustix::fs::renameat(&dir, "l", &dir, "m")),
        );
        log.push("deep stat", st(dir.as_fd(), f.as_str()));
        log.push(
            "deep unlink",
            res(rustix::fs::unlinkat(&dir, "m", AtFlags::empty())),
        );
    }
    // The lower tree: copy-up of 40 directories and the file at the bottom.
    if let Some(dir) = descend(root, 'L', DEEP, false, log) {
        let f = "bottom";
        log.push("lower stat", st(dir.as_fd(), f));
        log.push(
            "lower chmod",
            res(rustix::fs::chmodat(
                &dir,
                f,
                Mode::from_raw_mode(0o600),
                AtFlags::empty(),
            )),
        );
        let fd = rustix::fs::openat(&dir, f, OFlags::WRONLY | OFlags::APPEND, Mode::empty());
        log.push(
            "lower append",
            res(fd.map(|fd| rustix::io::write(fd, b"+"))),
        );
        log.push("lower after", st(dir.as_fd(), f));
        let x = rustix::fs::openat(&dir, f, OFlags::RDONLY, Mode::empty()).and_then(|fd| {
            rustix::fs::fsetxattr(&fd, "user.deep", b"1", rustix::fs::XattrFlags::empty())
        });
        log.push("lower setxattr", res(x));
        log.push(
            "lower rmdir bottom",
            res(rustix::fs::unlinkat(&dir, f, AtFlags::empty())),
        );
    }
}

/// A lower layer holding a PATH_MAX-1 file and a 40-deep tree with a file at its bottom.
fn build_lower(lower: &Path) {
    std::fs::create_dir_all(lower).unwrap();
    let root =
        rustix::fs::openat(CWD, lower, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let mut log = Log(Vec::new());
    let dir = descend(root.as_fd(), 'L', 40, true, &mut log).expect("lower chain");
    let fd = rustix::fs::openat(
        &dir,
        "bottom",
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&fd, b"lower data").unwrap();
    let d = dirs15('P');
    for p in &d {
        rustix::fs::mkdirat(&root, p.as_str(), Mode::from_raw_mode(0o755)).unwrap();
    }
    let p = format!("{}/{}", d[d.len() - 1], comp('n', 0));
    let fd = rustix::fs::openat(
        &root,
        p.as_str(),
        OFlags::CREATE | OFlags::WRONLY,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    rustix::io::write(&fd, b"lower long").unwrap();
}

/// Copy-up of a PATH_MAX-1 lower file (15 parents first) by chmod, chown, truncate, xattr.
fn lower_long_path(root: BorrowedFd<'_>, log: &mut Log) {
    let d = dirs15('P');
    let p = format!("{}/{}", d[d.len() - 1], comp('n', 0));
    log.push("lower long stat", st(root, &p));
    log.push(
        "lower long chmod",
        res(rustix::fs::chmodat(
            root,
            p.as_str(),
            Mode::from_raw_mode(0o600),
            AtFlags::empty(),
        )),
    );
    log.push(
        "lower long chown",
        res(rustix::fs::chownat(
            root,
            p.as_str(),
            Some(Uid::from_raw(7)),
            None,
            AtFlags::empty(),
        )),
    );
    let fd = rustix::fs::openat(
        root,
        p.as_str(),
        OFlags::WRONLY | OFlags::TRUNC,
        Mode::empty(),
    );
    log.push("lower long truncate", res(fd.map(|_| ())));
    log.push("lower long after", st(root, &p));
    log.push(
        "lower long unlink",
        res(rustix::fs::unlinkat(root, p.as_str(), AtFlags::empty())),
    );
    log.push("lower long gone", st(root, &p));
}

fn run(imp: Impl, base: &Path) -> Vec<String> {
    let lower = base.join("lower");
    build_lower(&lower);
    let (upper, work, mnt) = (base.join("upper"), base.join("work"), base.join("mnt"));
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).unwrap();
    }
    let dirs = Dirs {
        lowers: vec![lower],
        upper: Some((upper, work)),
        mode: common::mount::Mode::Legacy,
    };
    let m = Mount::new(imp, &dirs, &mnt).unwrap_or_else(|e| panic!("{}: {e}", imp.name()));
    let root =
        rustix::fs::openat(CWD, &mnt, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let mut log = Log(Vec::new());
    pjd_long_paths(root.as_fd(), &mnt, &mut log);
    deep_trees(root.as_fd(), &mut log);
    lower_long_path(root.as_fd(), &mut log);
    drop(root);
    m.unmount().unwrap();
    log.0
}

#[test]
fn long_and_deep_paths_match_the_kernel() {
    common::require_root();
    let tmp = common::diff::test_tmp();
    let kb = tempfile::Builder::new()
        .prefix("longpath-k")
        .tempdir_in(&tmp)
        .unwrap();
    let lb = tempfile::Builder::new()
        .prefix("longpath-l")
        .tempdir_in(&tmp)
        .unwrap();
    let kernel = run(Impl::Kernel, kb.path());
    let ours = run(Impl::under_test(), lb.path());
    // The kernel's own answers: success wherever pjdfstest expects it.
    for line in &kernel {
        let bad = line.ends_with("ENAMETOOLONG")
            && !line.contains("PATH_MAX")
            && !line.contains("NAME_MAX+1");
        assert!(!bad, "kernel: {line}");
    }
    assert!(
        kernel.iter().any(|l| l == "PATH_MAX: ENAMETOOLONG"),
        "{kernel:#?}"
    );
    assert!(
        kernel
            .iter()
            .any(|l| l == "lower after: f 0600 0:0 size=11 nlink=1"),
        "{kernel:#?}"
    );
    let diffs: Vec<String> = kernel
        .iter()
        .zip(&ours)
        .filter(|(k, o)| k != o)
        .map(|(k, o)| format!("kernel {k}\n   ours {o}"))
        .collect();
    assert_eq!(
        kernel.len(),
        ours.len(),
        "kernel {kernel:#?}\nours {ours:#?}"
    );
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
