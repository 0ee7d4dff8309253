//! File data copy for copy-up: clone (FICLONE) when the filesystem shares extents, else
//! `copy_file_range` over the data segments only (SEEK_DATA/SEEK_HOLE), else read/write.
//! Holes stay holes: only data segments are copied and the length is set with ftruncate.
use std::os::fd::BorrowedFd;

use rustix::io::Errno;

const CHUNK: usize = 1 << 20;

/// How the data was copied; reported in debug logs and used by tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    Clone,
    CopyFileRange,
    ReadWrite,
}

/// Copies `len` bytes of `src` into the empty file `dst`.
pub fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, len: u64) -> Result<CopyMethod, Errno> {
    if len == 0 {
        return Ok(CopyMethod::Clone);
    }
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(CopyMethod::Clone);
    }
    let mut method = CopyMethod::CopyFileRange;
    let mut off = 0u64;
    while off < len {
        let start = match super::seek_data(src, off) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            // No SEEK_DATA support: treat the whole rest as data.
            Err(Errno::INVAL | Errno::NOTSUP) => off,
            Err(e) => return Err(e),
        };
        if start >= len {
            break;
        }
        let end = super::seek_hole(src, start).unwrap_or(len).min(len);
        copy_range(src, dst, start, end, &mut method)?;
        off = end;
    }
    rustix::fs::ftruncate(dst, len)?;
    Ok(method)
}

fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    start: u64,
    end: u64,
    method: &mut CopyMethod,
) -> Result<(), Errno> {
    let mut pos = start;
    while pos < end {
        let want = usize::try_from(end - pos).unwrap_or(CHUNK).min(CHUNK);
        let n = if *method == CopyMethod::CopyFileRange {
            let (mut i, mut o) = (pos, pos);
            match rustix::fs::copy_file_range(src, Some(&mut i), dst, Some(&mut o), want) {
                Ok(n) => n,
                Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::IO) => {
                    *method = CopyMethod::ReadWrite;
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            read_write(src, dst, pos, want)?
        };
        if n == 0 {
            // The source shrank under us; what was there is copied.
            break;
        }
        pos += n as u64;
    }
    Ok(())
}

fn read_write(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    pos: u64,
    want: usize,
) -> Result<usize, Errno> {
    let mut buf = vec![0u8; want];
    let n = rustix::io::pread(src, &mut buf[..], pos)?;
    let mut done = 0;
    while done < n {
        match rustix::io::pwrite(dst, &buf[done..n], pos + done as u64)? {
            // A write that takes nothing would loop forever: the destination is full.
            0 => return Err(Errno::NOSPC),
            w => done += w,
        }
    }
    Ok(n)
}
