//! Conversions between the overlay's types and fuser's.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType as FuseType, INodeNo, TimeOrNow};
use rustix::fs::FileType;

use crate::overlay::Attr;
use crate::overlay::fileops::SetTime;

pub fn kind(t: FileType) -> FuseType {
    match t {
        FileType::Directory => FuseType::Directory,
        FileType::Symlink => FuseType::Symlink,
        FileType::Fifo => FuseType::NamedPipe,
        FileType::Socket => FuseType::Socket,
        FileType::CharacterDevice => FuseType::CharDevice,
        FileType::BlockDevice => FuseType::BlockDevice,
        _ => FuseType::RegularFile,
    }
}

pub fn fuse_kind_to_rustix(t: u32) -> FileType {
    FileType::from_raw_mode(t)
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
            + Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64)
    }
}

/// The kernel's "new" device number encoding, which FUSE carries in 32 bits.
fn encode_dev(rdev: u64) -> u32 {
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

pub fn decode_dev(rdev: u32) -> u64 {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    rustix::fs::makedev(major, minor)
}

pub fn to_fuse(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.st_ino),
        size: a.st_size as u64,
        blocks: a.st_blocks as u64,
        atime: time(a.st_atime, a.st_atime_nsec as i64),
        mtime: time(a.st_mtime, a.st_mtime_nsec as i64),
        ctime: time(a.st_ctime, a.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: kind(FileType::from_raw_mode(a.st_mode)),
        perm: (a.st_mode & 0o7777) as u16,
        nlink: a.st_nlink as u32,
        uid: a.st_uid,
        gid: a.st_gid,
        rdev: encode_dev(a.st_rdev),
        blksize: a.st_blksize as u32,
        flags: 0,
    }
}

pub fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    match t? {
        TimeOrNow::Now => Some(SetTime::Now),
        TimeOrNow::SpecificTime(st) => Some(match st.duration_since(UNIX_EPOCH) {
            Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), d.subsec_nanos());
                if ns > 0 {
                    s -= 1;
                    ns = 1_000_000_000 - ns;
                }
                SetTime::At(s, ns)
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_round_trip() {
        for (maj, min) in [(0, 0), (1, 3), (8, 17), (259, 70000), (4095, 255)] {
            let d = rustix::fs::makedev(maj, min);
            assert_eq!(decode_dev(encode_dev(d)), d, "{maj}:{min}");
        }
    }
}
