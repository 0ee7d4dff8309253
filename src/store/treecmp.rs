//! Comparing two extracted layer trees entry by entry, without following symlinks: type,
//! mode, owner, mtime, size, file contents, symlink targets, device numbers and xattrs
//! (`fsck --deep` compares a layer with a fresh extraction of its kept blob).
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{Error, Result};

/// The first difference between the trees below `a` and `b` (a path relative to them and
/// what differs), or `None` when they are the same.
pub fn first_difference(a: &Path, b: &Path) -> Result<Option<String>> {
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let names = |root: &Path| -> Result<BTreeSet<OsString>> {
            let d = root.join(&rel);
            std::fs::read_dir(&d)
                .map_err(|e| Error::io("read", &d, e))?
                .map(|e| {
                    e.map(|e| e.file_name())
                        .map_err(|e| Error::io("read", &d, e))
                })
                .collect()
        };
        let (na, nb) = (names(a)?, names(b)?);
        if let Some(n) = na.symmetric_difference(&nb).next() {
            let side = if na.contains(n) {
                "only on disk"
            } else {
                "missing"
            };
            return Ok(Some(format!("/{}: {side}", rel.join(n).display())));
        }
        for n in na {
            let r = rel.join(&n);
            if let Some(d) = entry_difference(&a.join(&r), &b.join(&r))? {
                return Ok(Some(format!("/{}: {d}", r.display())));
            }
            if a.join(&r).symlink_metadata().is_ok_and(|m| m.is_dir()) {
                stack.push(r);
            }
        }
    }
    Ok(None)
}

fn entry_difference(a: &Path, b: &Path) -> Result<Option<String>> {
    let (ma, mb) = (lstat(a)?, lstat(b)?);
    let fields = [
        (
            "type",
            u64::from(ma.mode() & libc::S_IFMT),
            u64::from(mb.mode() & libc::S_IFMT),
        ),
        (
            "mode",
            u64::from(ma.mode() & 0o7777),
            u64::from(mb.mode() & 0o7777),
        ),
        ("owner", u64::from(ma.uid()), u64::from(mb.uid())),
        ("group", u64::from(ma.gid()), u64::from(mb.gid())),
        ("size", size_of(&ma), size_of(&mb)),
        // Directories a layer only implies and whiteouts get the time of their extraction.
        ("mtime", mtime(&ma).0, mtime(&mb).0),
        ("mtime ns", mtime(&ma).1, mtime(&mb).1),
        ("device", ma.rdev(), mb.rdev()),
    ];
    if let Some((what, x, y)) = fields.iter().find(|(_, x, y)| x != y) {
        return Ok(Some(format!("{what} is {x:o} on disk, {y:o} in the blob")));
    }
    if ma.file_type().is_symlink() {
        let (ta, tb) = (readlink(a)?, readlink(b)?);
        if ta != tb {
            return Ok(Some("symlink target differs".into()));
        }
    } else if ma.is_file() && !same_content(a, b)? {
        return Ok(Some("contents differ".into()));
    }
    if xattrs(a)? != xattrs(b)? {
        return Ok(Some("extended attributes differ".into()));
    }
    Ok(None)
}

fn mtime(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::FileTypeExt;
    let whiteout = m.file_type().is_char_device() && m.rdev() == 0;
    if m.is_dir() || whiteout {
        (0, 0)
    } else {
        (m.mtime() as u64, m.mtime_nsec() as u64)
    }
}

fn size_of(m: &std::fs::Metadata) -> u64 {
    if m.is_dir() { 0 } else { m.len() }
}

fn lstat(p: &Path) -> Result<std::fs::Metadata> {
    p.symlink_metadata().map_err(|e| Error::io("stat", p, e))
}

fn readlink(p: &Path) -> Result<std::path::PathBuf> {
    std::fs::read_link(p).map_err(|e| Error::io("readlink", p, e))
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| Error::io("open", p, e));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut fa, &mut ba).map_err(|e| Error::io("read", a, e))?;
        let m = read_full(&mut fb, &mut bb).map_err(|e| Error::io("read", b, e))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Names and values of an entry's xattrs, sorted (not following a symlink).
fn xattrs(p: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 64 * 1024];
    let n = match rustix::fs::llistxattr(p, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listxattr", p, e.into())),
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let mut val = vec![0u8; 64 * 1024];
        let k = rustix::fs::lgetxattr(p, name, &mut val[..])
            .map_err(|e| Error::io("getxattr", p, e.into()))?;
        out.push((name.to_vec(), val[..k].to_vec()));
    }
    out.sort();
    Ok(out)
}
