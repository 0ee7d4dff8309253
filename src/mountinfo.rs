//! The mount table, the one parser of /proc/self/mountinfo in the crate (pure) and waiting for a
//! mount point to appear or disappear by poll(2) on it: the kernel marks the file with POLLPRI whenever the mount
//! table of this namespace changes, so readiness costs no sleeping and no busy loop.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::{Error, Result};

pub const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted device (for a FUSE mount, its bdi name in /sys/class/bdi).
    pub device: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undoes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |j: usize| {
            b.get(j)
                .filter(|c| (b'0'..=b'7').contains(c))
                .map(|c| c - b'0')
        };
        if b[i] == b'\\'
            && let (Some(x), Some(y), Some(z)) = (octal(i + 1), octal(i + 2), octal(i + 3))
        {
            out.push(x.wrapping_mul(64).wrapping_add(y * 8).wrapping_add(z));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Parses mountinfo text; malformed lines are skipped.
/// Line: `id parent maj:min root MOUNTPOINT opts [optional...] - FSTYPE SOURCE superopts`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split(' ');
            let device = l.nth(2)?.to_string();
            let mount_point = l.nth(1)?;
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = unescape(r.next().unwrap_or(""))
                .to_string_lossy()
                .into_owned();
            Some(MountEntry {
                device,
                mount_point: unescape(mount_point),
                fstype,
                source,
            })
        })
        .collect()
}

pub fn read_mountinfo() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|e| Error::io("read", MOUNTINFO, e))?;
    Ok(parse_mountinfo(&text))
}

pub fn is_mounted(entries: &[MountEntry], mnt: &Path) -> bool {
    entries.iter().any(|e| e.mount_point == mnt)
}

/// Mount points at or beneath `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(entries: &[MountEntry], dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.mount_point.starts_with(dir))
        .map(|e| e.mount_point.clone())
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// The topmost mount at exactly `mnt` (the last one listed: later mounts cover earlier ones).
pub fn mount_at<'a>(entries: &'a [MountEntry], mnt: &Path) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == mnt)
}

/// The mount that holds `path` (longest mount point that is a prefix of it).
pub fn mount_of<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    entries
        .iter()
        .filter(|e| path.starts_with(&e.mount_point))
        .max_by_key(|e| e.mount_point.components().count())
}

/// Waits until `mnt` is (or is no longer) a mount point, up to `timeout`.
pub fn wait_for(mnt: &Path, mounted: bool, timeout: Duration) -> Result<()> {
    if wait_until(|m| is_mounted(m, mnt) == mounted, timeout)? {
        return Ok(());
    }
    let what = if mounted { "appear" } else { "go away" };
    Err(Error::Usage(format!(
        "the mount at {} did not {what} within {} s",
        mnt.display(),
        timeout.as_secs()
    )))
}

/// Re-reads the mount table each time it changes until `pred` holds (true) or `timeout`
/// passes (false).
pub fn wait_until(pred: impl Fn(&[MountEntry]) -> bool, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut f = File::open(MOUNTINFO).map_err(|e| Error::io("open", MOUNTINFO, e))?;
    let mut text = String::new();
    loop {
        text.clear();
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.read_to_string(&mut text))
            .map_err(|e| Error::io("read", MOUNTINFO, e))?;
        if pred(&parse_mountinfo(&text)) {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLPRI)];
        poll(&mut fds, PollTimeout::from(ms))
            .map_err(|e| Error::io("poll", MOUNTINFO, e.into()))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
98 22 0:52 / /var/tmp/lfb.1/r0/m rw,relatime shared:50 - overlay overlay rw,lowerdir=/a:/b
99 22 0:53 / /var/tmp/lfb.1/r1/m\\040x rw,nosuid,nodev - fuse.fuse-overlayfs fuse-overlayfs rw
100 22 0:54 / /var/tmp/lfb.10 rw - tmpfs tmpfs rw
garbage line
";

    #[test]
    fn parses_fields_and_escapes() {
        let e = parse_mountinfo(SAMPLE);
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].mount_point, PathBuf::from("/"));
        assert_eq!(e[0].fstype, "ext4");
        assert_eq!(e[0].source, "/dev/vda");
        assert_eq!(e[0].device, "254:0");
        assert_eq!(e[1].device, "0:52");
        assert_eq!(e[2].mount_point, PathBuf::from("/var/tmp/lfb.1/r1/m x"));
        assert_eq!(e[2].fstype, "fuse.fuse-overlayfs");
    }

    #[test]
    fn under_is_component_wise_and_deepest_first() {
        let e = parse_mountinfo(SAMPLE);
        let under = mounts_under(&e, Path::new("/var/tmp/lfb.1"));
        assert_eq!(
            under,
            vec![
                PathBuf::from("/var/tmp/lfb.1/r0/m"),
                PathBuf::from("/var/tmp/lfb.1/r1/m x")
            ]
        );
        assert!(is_mounted(&e, Path::new("/var/tmp/lfb.1/r0/m")));
        assert!(!is_mounted(&e, Path::new("/var/tmp/lfb.1/r0")));
    }

    #[test]
    fn mount_of_picks_the_longest_prefix() {
        let e = parse_mountinfo(SAMPLE);
        assert_eq!(
            mount_of(&e, Path::new("/var/tmp/x")).unwrap().fstype,
            "ext4"
        );
        assert_eq!(
            mount_of(&e, Path::new("/var/tmp/lfb.10/y")).unwrap().fstype,
            "tmpfs"
        );
    }

    #[test]
    fn backslash_without_octal_is_kept() {
        assert_eq!(unescape("a\\b\\134c"), PathBuf::from("a\\b\\c"));
    }
}
