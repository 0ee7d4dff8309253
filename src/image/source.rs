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
    /// Opens a directory or an archive. An archive that is not a seekable regular file (a pipe,
    /// `/dev/stdin`, `<(gzip -c x.tar)`) is read once as a stream; a gzip- or zstd-compressed
    /// one is decompressed. Both are spooled into `scratch` as plain tar, since the formats
    /// need random access (docker-save and OCI archives put their index last).
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
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        Self::from_file(file, path, scratch)
    }

    /// Reads an archive from standard input (`load` without `-i`); named `<stdin>` in messages.
    pub fn stdin(scratch: &Path) -> Result<Self> {
        use std::os::fd::AsFd;
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("dup", STDIN_NAME, e))?;
        Self::from_file(File::from(fd), Path::new(STDIN_NAME), scratch)
    }

    fn from_file(mut file: File, path: &Path, scratch: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let seekable = file.metadata().is_ok_and(|m| m.is_file());
        let mut head = Vec::new();
        (&mut file)
            .take(512)
            .read_to_end(&mut head)
            .map_err(|e| Error::io("read", path, e))?;
        let kind = compress::sniff(&head).map_err(|e| {
            Error::Format(format!(
                "{shown}: not a docker archive, OCI archive or OCI layout directory: {e}"
            ))
        })?;
        let file = if seekable && kind == Compression::Plain {
            use std::io::{Seek, SeekFrom};
            file.seek(SeekFrom::Start(0))
                .map_err(|e| Error::io("seek", path, e))?;
            file
        } else {
            // The bytes already read, then the rest, each read exactly once.
            let stream = io::Cursor::new(head).chain(file);
            spool(stream, kind, &shown, &scratch.join("archive.tar"))?
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

/// How standard input is named in messages.
pub const STDIN_NAME: &str = "<stdin>";

/// Copies a (possibly compressed) archive stream into `dest` as plain tar and reopens it.
/// Running out of space is said plainly, with where and what to do.
fn spool(stream: impl Read + Send, kind: Compression, shown: &str, dest: &Path) -> Result<File> {
    let mut out = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
    let mut counted = CountingWriter {
        inner: &mut out,
        n: 0,
    };
    let copied = if kind == Compression::Plain {
        let mut s = stream;
        io::copy(&mut s, &mut counted)
    } else {
        let (_, mut dec) = compress::decoder(stream, shown)?;
        io::copy(&mut dec, &mut counted)
    };
    let written = counted.n;
    match copied {
        Ok(_) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
            let dir = dest.parent().unwrap_or(dest);
            let why = if kind == Compression::Plain {
                "a stream is kept whole to be read"
            } else {
                "a compressed archive is kept whole and decompressed to be read"
            };
            return Err(Error::Format(format!(
                "{shown}: no space left on the device of {} after spooling {written} bytes of \
                 the archive there ({why}): free space, use a --root on a larger file system, \
                 or load an uncompressed archive file with -i FILE, which needs no copy",
                dir.display()
            )));
        }
        Err(e) if kind != Compression::Plain => {
            return Err(Error::Format(format!(
                "{shown}: decompressing {kind}: {e} (after {written} bytes)"
            )));
        }
        Err(e) => return Err(Error::io("read and spool", shown, e)),
    }
    File::open(dest).map_err(|e| Error::io("open", dest, e))
}

struct CountingWriter<'a> {
    inner: &'a mut File,
    n: u64,
}

impl io::Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    // Where the last member's data ends, rounded up to a tar block; and its name.
    let mut last = (0u64, String::new());
    for e in entries {
        let e = e.map_err(|e| format!("bad tar archive: {e}"))?;
        let name = clean_name(&String::from_utf8_lossy(&e.path_bytes()));
        let end = e.raw_file_position().saturating_add(e.size());
        if end > len {
            return Err(format!(
                "archive truncated: member {name} needs {end} bytes, the archive has {len}"
            ));
        }
        last = (end.div_ceil(512) * 512, name.clone());
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
    // A stream cut at a member boundary parses as a shorter archive; without its
    // end-of-archive blocks (two zero blocks) and without the index it is surely cut.
    let indexed = ["index.json", "manifest.json"]
        .iter()
        .any(|n| members.contains_key(*n));
    if !indexed && len < last.0 + 1024 {
        return Err(format!(
            "archive truncated: it stops after member {} without an end-of-archive marker \
             and has no index.json or manifest.json",
            last.1
        ));
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
