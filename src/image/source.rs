//! Files of an image source: an OCI layout directory, or a tar archive (docker save, OCI
//! archive) read in place through an index of its members (no extraction of the outer tar).
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::compress::{self, Compression};
use crate::digest::Digest;
use crate::{Error, Result};

/// A readable source of named files.
pub enum Source {
    Dir {
        root: OwnedFd,
        path: PathBuf,
    },
    Tar {
        file: Arc<File>,
        path: PathBuf,
        members: HashMap<String, (u64, u64)>,
    },
}

/// A member of a tar archive read with `pread`, so several can be read at once.
pub struct RangeReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive truncated",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Member names as written by different tools (`./blobs/x`, `blobs/x`) compare equal.
fn clean_name(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

impl Source {
    /// Opens a directory or an archive. A gzip- or zstd-compressed archive is first decompressed
    /// into `scratch` (random access is needed).
    pub fn open(path: &Path, scratch: &Path) -> Result<Self> {
        let md = std::fs::metadata(path).map_err(|e| Error::io("open", path, e))?;
        if md.is_dir() {
            let root = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io("open", path, e.into()))?;
            return Ok(Source::Dir {
                root,
                path: path.to_owned(),
            });
        }
        let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut head = Vec::new();
        (&mut file)
            .take(512)
            .read_to_end(&mut head)
            .map_err(|e| Error::io("read", path, e))?;
        let shown = path.display().to_string();
        let kind = compress::sniff(&head).map_err(|e| {
            Error::Format(format!(
                "{shown}: not a docker archive, OCI archive or OCI layout directory: {e}"
            ))
        })?;
        let file = if kind == Compression::Plain {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Error::io("seek", path, e))?;
            file
        } else {
            let tmp = scratch.join("archive.tar");
            let raw = File::open(path).map_err(|e| Error::io("open", path, e))?;
            let (_, mut dec) = compress::decoder(raw, &shown)?;
            let mut out = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
            io::copy(&mut dec, &mut out)
                .map_err(|e| Error::Format(format!("{shown}: decompressing {kind}: {e}")))?;
            File::open(&tmp).map_err(|e| Error::io("open", &tmp, e))?
        };
        let members = index_tar(&file).map_err(|e| Error::Format(format!("{shown}: {e}")))?;
        Ok(Source::Tar {
            file: Arc::new(file),
            path: path.to_owned(),
            members,
        })
    }

    /// The path the user gave, for messages.
    pub fn path(&self) -> &Path {
        match self {
            Source::Dir { path, .. } | Source::Tar { path, .. } => path,
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir { .. } => self.open_dir_member(name).is_ok(),
            Source::Tar { members, .. } => members.contains_key(&clean_name(name)),
        }
    }

    fn open_dir_member(&self, name: &str) -> Result<(File, u64)> {
        let Source::Dir { root, path } = self else {
            return Err(Error::Format("not a directory source".into()));
        };
        let shown = path.join(name);
        let fd = rustix::fs::openat2(
            root,
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| Error::io("open", &shown, e.into()))?;
        let file = File::from(fd);
        let md = file.metadata().map_err(|e| Error::io("stat", &shown, e))?;
        if !md.is_file() {
            return Err(Error::Format(format!(
                "{}: not a regular file",
                shown.display()
            )));
        }
        Ok((file, md.len()))
    }

    /// Opens a member for streaming, with its size.
    pub fn open_member(&self, name: &str) -> Result<(Box<dyn Read + Send>, u64)> {
        match self {
            Source::Dir { .. } => {
                let (f, len) = self.open_dir_member(name)?;
                Ok((Box::new(f), len))
            }
            Source::Tar {
                file,
                path,
                members,
            } => {
                let Some(&(pos, len)) = members.get(&clean_name(name)) else {
                    return Err(Error::Format(format!(
                        "{}: no member {name}",
                        path.display()
                    )));
                };
                let r = RangeReader {
                    file: Arc::clone(file),
                    pos,
                    end: pos + len,
                };
                Ok((Box::new(r), len))
            }
        }
    }

    /// Reads a small member whole (JSON documents), refusing anything larger than `max`.
    pub fn read_small(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let (mut r, len) = self.open_member(name)?;
        if len > max {
            return Err(Error::Format(format!(
                "{}: {name} is {len} bytes, more than the {max} accepted",
                self.path().display()
            )));
        }
        let mut v = Vec::with_capacity(len as usize);
        r.read_to_end(&mut v).map_err(|e| {
            Error::Format(format!("{}: reading {name}: {e}", self.path().display()))
        })?;
        Ok(v)
    }

    /// Reads a blob of an OCI layout and checks it against its descriptor.
    pub fn read_blob(&self, digest: &Digest, size: u64, max: u64) -> Result<Vec<u8>> {
        let name = blob_path(digest);
        if size > max {
            return Err(Error::Format(format!(
                "{name}: {size} bytes is too large for a document"
            )));
        }
        let bytes = self.read_small(&name, max)?;
        if bytes.len() as u64 != size {
            return Err(Error::Format(format!(
                "{}: blob {digest} is {} bytes, its descriptor says {size}",
                self.path().display(),
                bytes.len()
            )));
        }
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("{}: blob {name}", self.path().display()),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }
}

/// `blobs/sha256/HEX` of an OCI layout.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Regular-file members of an uncompressed tar: name -> (data offset, size). Symlinks and
/// hard links between members (legacy `docker save` links repeated layers) resolve to their
/// target's data.
fn index_tar(file: &File) -> std::result::Result<HashMap<String, (u64, u64)>, String> {
    let mut members = HashMap::new();
    let mut links: Vec<(String, String)> = Vec::new();
    let mut ar = tar::Archive::new(file);
    let entries = ar
        .entries_with_seek()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    for e in entries {
        let e = e.map_err(|e| format!("bad tar archive: {e}"))?;
        let name = clean_name(&String::from_utf8_lossy(&e.path_bytes()));
        let typ = e.header().entry_type();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        match (typ, link) {
            (t, _) if t.is_file() => {
                members.insert(name, (e.raw_file_position(), e.size()));
            }
            (tar::EntryType::Symlink, Some(l)) => {
                let base = name.rsplit_once('/').map_or("", |(d, _)| d);
                links.push((name.clone(), resolve_relative(base, &l)));
            }
            (tar::EntryType::Link, Some(l)) => links.push((name.clone(), clean_name(&l))),
            _ => {}
        }
    }
    // Links may point at links: a few rounds settle any sane archive.
    for _ in 0..8 {
        for (name, target) in &links {
            if let Some(&r) = members.get(target) {
                members.entry(name.clone()).or_insert(r);
            }
        }
    }
    if members.is_empty() {
        return Err("empty archive".into());
    }
    Ok(members)
}

/// `base` joined with a relative link target, `..` applied (never above the archive root).
fn resolve_relative(base: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|c| !c.is_empty()).collect()
    };
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}
