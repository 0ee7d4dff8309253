//! A small, deterministic tar writer: ustar headers with PAX extended records where ustar
//! cannot say it (long names and link names, large ids, sizes or times, xattrs).
//!
//! Deterministic means: the same entries give the same bytes. Owner names are left empty
//! (layers are numeric), times are whole seconds, PAX records are written in sorted key order
//! and the PAX header's own fields are fixed. The archive ends with two zero blocks and no
//! record padding (OCI layers need none).
use std::io::{self, Read, Write};

use super::tarentry::PAX_XATTR_PREFIX;

pub const BLOCK: usize = 512;
const NAME_LEN: usize = 100;
/// Largest value of an 8-byte octal field (7 digits + NUL).
const MAX_OCTAL_7: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal field (11 digits + NUL).
const MAX_OCTAL_11: u64 = 0o77_777_777_777;

/// The kind of an entry, with what only that kind carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File { size: u64 },
    Dir,
    Symlink { target: Vec<u8> },
    HardLink { target: Vec<u8> },
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

impl EntryKind {
    fn typeflag(&self) -> u8 {
        match self {
            EntryKind::File { .. } => b'0',
            EntryKind::HardLink { .. } => b'1',
            EntryKind::Symlink { .. } => b'2',
            EntryKind::Char { .. } => b'3',
            EntryKind::Block { .. } => b'4',
            EntryKind::Dir => b'5',
            EntryKind::Fifo => b'6',
        }
    }
}

/// Extended attributes as (name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry's header fields. `path` is relative, without a leading `/`; directories get
/// their trailing `/` from the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits incl. setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes, written as `SCHILY.xattr.NAME` PAX records.
    pub xattrs: Xattrs,
}

impl TarEntry {
    /// A regular file with the usual defaults (root-owned, 0644, epoch 0).
    pub fn file(path: &str, size: u64) -> Self {
        TarEntry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File { size },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }

    /// A directory with the usual defaults (root-owned, 0755, epoch 0).
    pub fn dir(path: &str) -> Self {
        TarEntry {
            kind: EntryKind::Dir,
            mode: 0o755,
            ..TarEntry::file(path, 0)
        }
    }

    fn data_size(&self) -> u64 {
        match self.kind {
            EntryKind::File { size } => size,
            _ => 0,
        }
    }

    fn name(&self) -> Vec<u8> {
        let mut p = self.path.clone();
        if self.kind == EntryKind::Dir && !p.ends_with(b"/") {
            p.push(b'/');
        }
        p
    }
}

/// Writes entries to `W`, counting bytes.
pub struct TarWriter<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out, written: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the header(s) of `e`, then exactly `size` bytes of `data` for a regular file
    /// (an error if `data` ends early: the file shrank while it was read).
    pub fn append(&mut self, e: &TarEntry, data: Option<&mut dyn Read>) -> io::Result<()> {
        let name = e.name();
        let link: &[u8] = match &e.kind {
            EntryKind::Symlink { target } | EntryKind::HardLink { target } => target,
            _ => b"",
        };
        let size = e.data_size();
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if name.len() > NAME_LEN {
            pax.push((b"path".to_vec(), name.clone()));
        }
        if link.len() > NAME_LEN {
            pax.push((b"linkpath".to_vec(), link.to_vec()));
        }
        if u64::from(e.uid) > MAX_OCTAL_7 {
            pax.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
        }
        if u64::from(e.gid) > MAX_OCTAL_7 {
            pax.push((b"gid".to_vec(), e.gid.to_string().into_bytes()));
        }
        if size > MAX_OCTAL_11 {
            pax.push((b"size".to_vec(), size.to_string().into_bytes()));
        }
        if e.mtime < 0 || e.mtime as u64 > MAX_OCTAL_11 {
            pax.push((b"mtime".to_vec(), e.mtime.to_string().into_bytes()));
        }
        for (k, v) in &e.xattrs {
            let mut key = PAX_XATTR_PREFIX.as_bytes().to_vec();
            key.extend_from_slice(k);
            pax.push((key, v.clone()));
        }
        if !pax.is_empty() {
            pax.sort();
            let body = pax_records(&pax);
            let mut pname = b"PaxHeaders/".to_vec();
            let base = name
                .rsplit(|&b| b == b'/')
                .find(|c| !c.is_empty())
                .unwrap_or(b"x");
            pname.extend_from_slice(&base[..base.len().min(NAME_LEN - pname.len())]);
            let h = header(&pname, b'x', 0o644, 0, 0, body.len() as u64, 0, b"", (0, 0));
            self.put(&h)?;
            self.put(&body)?;
            self.pad(body.len() as u64)?;
        }
        let dev = match e.kind {
            EntryKind::Char { major, minor } | EntryKind::Block { major, minor } => (major, minor),
            _ => (0, 0),
        };
        let h = header(
            &name[..name.len().min(NAME_LEN)],
            e.kind.typeflag(),
            e.mode & 0o7777,
            u64::from(e.uid).min(MAX_OCTAL_7),
            u64::from(e.gid).min(MAX_OCTAL_7),
            size.min(MAX_OCTAL_11),
            e.mtime.clamp(0, MAX_OCTAL_11 as i64) as u64,
            &link[..link.len().min(NAME_LEN)],
            dev,
        );
        self.put(&h)?;
        if size > 0 {
            let Some(data) = data else {
                return Err(io::Error::other("file entry without data"));
            };
            let n = self.copy_exact(data, size)?;
            if n != size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("file shrank while it was read ({n} of {size} bytes)"),
                ));
            }
            self.pad(size)?;
        }
        Ok(())
    }

    fn copy_exact(&mut self, data: &mut dyn Read, size: u64) -> io::Result<u64> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match data.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.put(&buf[..n])?;
            left -= n as u64;
        }
        Ok(size - left)
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// `LEN KEY=VALUE\n` records, LEN counting the whole record including its own digits.
fn pax_records(recs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in recs {
        let rest = k.len() + v.len() + 3; // space, '=', newline
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

#[allow(clippy::too_many_arguments)]
fn header(
    name: &[u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: &[u8],
    dev: (u32, u32),
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if matches!(typeflag, b'3' | b'4') {
        octal(&mut h[329..337], u64::from(dev.0).min(MAX_OCTAL_7));
        octal(&mut h[337..345], u64::from(dev.1).min(MAX_OCTAL_7));
    }
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed = (String, u8, u64, Vec<u8>, Vec<(String, Vec<u8>)>);

    fn parse(bytes: &[u8]) -> Vec<Parsed> {
        let mut a = tar::Archive::new(bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
                let t = e.header().entry_type().as_byte();
                let size = e.header().size().unwrap();
                let link = e
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let x: Vec<(String, Vec<u8>)> = e
                    .pax_extensions()
                    .unwrap()
                    .into_iter()
                    .flatten()
                    .map(|x| x.unwrap())
                    .filter(|x| x.key().unwrap().starts_with("SCHILY"))
                    .map(|x| (x.key().unwrap().to_string(), x.value_bytes().to_vec()))
                    .collect();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, t, size, link, x)
            })
            .collect()
    }

    #[test]
    fn entries_round_trip_through_the_tar_crate() {
        let long = "d/".to_string() + &"n".repeat(150);
        let mut w = TarWriter::new(Vec::new());
        w.append(&TarEntry::dir("d"), None).unwrap();
        let mut f = TarEntry::file("d/f", 3);
        f.xattrs = vec![(b"user.a".to_vec(), b"v=1".to_vec())];
        f.uid = 5_000_000;
        w.append(&f, Some(&mut &b"abc"[..])).unwrap();
        w.append(&TarEntry::file(&long, 0), None).unwrap();
        let mut l = TarEntry::file("d/l", 0);
        l.kind = EntryKind::Symlink {
            target: "t".repeat(200).into_bytes(),
        };
        w.append(&l, None).unwrap();
        let mut c = TarEntry::file("d/c", 0);
        c.kind = EntryKind::Char { major: 1, minor: 3 };
        w.append(&c, None).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let got = parse(&bytes);
        assert_eq!(got.len(), 5);
        assert_eq!((got[0].0.as_str(), got[0].1), ("d/", b'5'));
        assert_eq!((got[1].0.as_str(), got[1].2), ("d/f", 3));
        assert_eq!(
            got[1].4,
            vec![("SCHILY.xattr.user.a".to_string(), b"v=1".to_vec())]
        );
        assert_eq!(got[2].0, long);
        assert_eq!(got[3].3, "t".repeat(200).into_bytes());
        assert_eq!(got[4].1, b'3');
        let mut a = tar::Archive::new(&bytes[..]);
        let mut e1 = a.entries().unwrap().nth(1).unwrap().unwrap();
        assert_eq!(
            e1.pax_extensions()
                .unwrap()
                .unwrap()
                .find(|x| x.as_ref().unwrap().key().unwrap() == "uid")
                .unwrap()
                .unwrap()
                .value()
                .unwrap(),
            "5000000"
        );
    }

    #[test]
    fn same_entries_same_bytes() {
        let mk = || {
            let mut w = TarWriter::new(Vec::new());
            let mut f = TarEntry::file("a", 1);
            f.xattrs = vec![
                (b"user.b".to_vec(), b"2".to_vec()),
                (b"user.a".to_vec(), b"1".to_vec()),
            ];
            w.append(&f, Some(&mut &b"x"[..])).unwrap();
            w.finish().unwrap()
        };
        assert_eq!(mk(), mk());
    }

    #[test]
    fn short_data_is_an_error() {
        let mut w = TarWriter::new(Vec::new());
        let err = w
            .append(&TarEntry::file("a", 10), Some(&mut &b"abc"[..]))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn pax_record_lengths() {
        let r = pax_records(&[(b"path".to_vec(), b"x".repeat(93))]);
        assert_eq!(&r[..4], b"103 ");
        assert_eq!(r.len(), 103);
        let r = pax_records(&[(b"a".to_vec(), b"b".to_vec())]);
        assert_eq!(r, b"6 a=b\n");
    }
}
