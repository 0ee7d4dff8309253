//! Test helpers: layer tars and images built in code.
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A layer tar under construction; paths are written into the header verbatim (no checks), so
/// malicious names can be expressed.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
    pub mtime: u64,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Self {
        Layer {
            b: tar::Builder::new(Vec::new()),
            mtime: 1_600_000_000,
        }
    }

    fn header(&self, path: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        let bytes = path.as_bytes();
        if bytes.len() <= 100 {
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        }
        h
    }

    /// Appends an entry; names longer than 100 bytes go through a GNU long name record.
    pub fn raw(
        &mut self,
        path: &str,
        kind: tar::EntryType,
        mode: u32,
        owner: (u64, u64),
        link: Option<&str>,
        data: &[u8],
    ) -> &mut Self {
        if path.len() > 100 {
            let mut lh = tar::Header::new_gnu();
            lh.set_entry_type(tar::EntryType::GNULongName);
            lh.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            lh.set_size(path.len() as u64 + 1);
            lh.set_mode(0o644);
            lh.set_cksum();
            let mut name = path.as_bytes().to_vec();
            name.push(0);
            self.b.append(&lh, &name[..]).unwrap();
        }
        let mut h = self.header(path, kind, mode, data.len() as u64);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.raw(path, tar::EntryType::Regular, mode, (0, 0), None, data)
    }
    pub fn file_owned(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        self.raw(path, tar::EntryType::Regular, mode, (uid, gid), None, data)
    }
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.raw(path, tar::EntryType::Directory, mode, (0, 0), None, b"")
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(
            path,
            tar::EntryType::Symlink,
            0o777,
            (0, 0),
            Some(target),
            b"",
        )
    }
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.raw(path, tar::EntryType::Link, 0o644, (0, 0), Some(target), b"")
    }
    pub fn fifo(&mut self, path: &str) -> &mut Self {
        self.raw(path, tar::EntryType::Fifo, 0o600, (0, 0), None, b"")
    }
    pub fn chardev(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut h = self.header(path, tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &b""[..]).unwrap();
        self
    }
    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, b"", 0o644)
    }
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }
    /// A PAX header with xattrs for the next entry.
    pub fn xattrs(&mut self, attrs: &[(&str, &[u8])]) -> &mut Self {
        let recs: Vec<(String, &[u8])> = attrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.b
            .append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self
    }
    pub fn pax(&mut self, recs: &[(&str, &[u8])]) -> &mut Self {
        self.b.append_pax_extensions(recs.iter().copied()).unwrap();
        self
    }

    /// The finished tar (with its end-of-archive blocks).
    pub fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    layerfs::store::Digest::of(data).to_string()
}

/// `ls -l`-like one-line description of an entry, for tree comparisons.
pub fn describe(path: &Path) -> String {
    let md = std::fs::symlink_metadata(path).unwrap();
    let ft = md.mode() & libc::S_IFMT;
    let kind = match ft {
        libc::S_IFDIR => "d".to_string(),
        libc::S_IFREG => format!(
            "f:{}",
            String::from_utf8_lossy(&std::fs::read(path).unwrap())
        ),
        libc::S_IFLNK => format!("l:{}", std::fs::read_link(path).unwrap().display()),
        libc::S_IFCHR => format!("c:{}", md.rdev()),
        libc::S_IFBLK => format!("b:{}", md.rdev()),
        libc::S_IFIFO => "p".to_string(),
        _ => "?".to_string(),
    };
    format!("{kind} {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid())
}

/// Every path below `root` (sorted, relative) with [`describe`].
pub fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        out.push((rel, describe(&p)));
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(root, &p, out);
        }
    }
}

pub fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}
