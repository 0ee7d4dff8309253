//! Reading files inside a layer directory without following any symlink: every open goes
//! through `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from the layer's held fd, so a
//! hostile layer cannot point a read (or an extract) outside itself.
use std::ffi::CStr;
use std::io::Read;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Opens `rel` (layer-relative, no leading `/`) for reading.
pub fn open_beneath(layer: BorrowedFd<'_>, rel: &CStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat2(
        layer,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
}

/// The target of the symlink `rel` (its parent is resolved beneath the layer).
pub fn readlink_beneath(layer: BorrowedFd<'_>, rel: &CStr) -> Result<Vec<u8>, Errno> {
    let bytes = rel.to_bytes();
    let (dir, name) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&b"."[..], bytes),
    };
    let dir = std::ffi::CString::new(dir).map_err(|_| Errno::INVAL)?;
    let name = std::ffi::CString::new(name).map_err(|_| Errno::INVAL)?;
    let dfd = rustix::fs::openat2(
        layer,
        &dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    Ok(rustix::fs::readlinkat(&dfd, &name, Vec::new())?.into_bytes())
}

/// Reads at most `max` bytes of the regular file `rel`.
pub fn read_beneath(layer: BorrowedFd<'_>, rel: &CStr, max: u64) -> std::io::Result<Vec<u8>> {
    let fd = open_beneath(layer, rel)?;
    let mut out = Vec::new();
    std::fs::File::from(fd).take(max).read_to_end(&mut out)?;
    Ok(out)
}

/// Whether two regular files hold the same bytes (their sizes are known to be equal).
pub fn same_contents(
    a: BorrowedFd<'_>,
    arel: &CStr,
    b: BorrowedFd<'_>,
    brel: &CStr,
) -> std::io::Result<bool> {
    let mut fa = std::fs::File::from(open_beneath(a, arel)?);
    let mut fb = std::fs::File::from(open_beneath(b, brel)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Names beginning with `.wh.` are other tools' whiteout markers (containers-storage under a
/// mount program); like the driver, inspection never shows them as entries.
pub fn is_wh_name(name: &std::ffi::OsStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes().starts_with(b".wh.")
}
