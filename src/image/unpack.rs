//! Streams a layer tar (already decompressed) into an empty directory in overlay format.
//!
//! The tar crate is used only as a header parser, in raw mode, so that GNU long names, long
//! link names and PAX records are read here with a size cap (the crate would buffer them
//! whole). Each entry goes through [`classify`] (pure) and then [`LayerWriter`] (disk).
//!
//! Bounded output: the uncompressed stream is counted under the parser and refused past
//! [`Limits::max_bytes`]; entries past [`Limits::max_entries`]. The stream must end with a tar
//! end-of-archive block followed only by zero padding; anything else is truncation or garbage.
use std::cell::Cell;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::rc::Rc;

use super::tarentry::{Action, Meta, Mtime, RawEntry, RawType, RelPath, apply_pax, classify};
use super::write::LayerWriter;
use crate::{Error, Result};

/// Largest GNU long name / long link / PAX header accepted.
const MAX_EXT_HEADER: u64 = 1 << 20;
const BLOCK: u64 = 512;

/// Caps on one layer's uncompressed size and entry count (decompression bombs).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// Environment variable overriding [`Limits::max_bytes`] (bytes).
pub const MAX_BYTES_ENV: &str = "LAYERFS_MAX_LAYER_BYTES";

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 << 30,
            max_entries: 20_000_000,
        }
    }
}

impl Limits {
    /// Defaults, with `LAYERFS_MAX_LAYER_BYTES` applied when set.
    pub fn from_env() -> Self {
        let mut l = Limits::default();
        if let Some(n) = std::env::var(MAX_BYTES_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
        {
            l.max_bytes = n;
        }
        l
    }
}

/// What an extraction produced.
#[derive(Debug)]
pub struct Unpacked {
    pub entries: u64,
    /// Uncompressed tar stream length.
    pub tar_bytes: u64,
    /// Directories created as parents but not listed by the layer (the root included).
    pub implicit_dirs: Vec<RelPath>,
}

/// Counts bytes and fails once more than `max` were read.
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
    max: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.count.get() + n as u64;
        self.count.set(total);
        if total > self.max {
            return Err(io::Error::other("layer size limit exceeded"));
        }
        Ok(n)
    }
}

/// Extracts `stream` into the empty directory `root`. `what` names the layer in errors.
pub fn unpack_layer<R: Read>(
    stream: R,
    root: OwnedFd,
    limits: &Limits,
    what: &str,
) -> Result<Unpacked> {
    let count = Rc::new(Cell::new(0u64));
    let counted = Counted {
        inner: stream,
        count: Rc::clone(&count),
        max: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(counted);
    let over = |count: &Cell<u64>| count.get() > limits.max_bytes;
    let bomb = || {
        Error::Format(format!(
            "{what}: uncompressed layer exceeds {} bytes (decompression bomb?); \
             set {MAX_BYTES_ENV} to raise the limit",
            limits.max_bytes
        ))
    };
    let mut writer = LayerWriter::new(root);
    let walked = walk_entries(&mut archive, &mut writer, limits);
    let (entries, end) = match walked {
        Ok(v) => v,
        Err(_) if over(&count) => return Err(bomb()),
        Err(e) => return Err(Error::Format(format!("{what}: {e}"))),
    };
    // The parser stops at the first zero header block, or at EOF on a header boundary; only
    // the first is a complete archive.
    if count.get() < end + BLOCK {
        return Err(Error::Format(format!(
            "{what}: layer tar ends without an end-of-archive block (truncated)"
        )));
    }
    let mut rest = archive.into_inner();
    let nonzero = drain_nonzero(&mut rest).map_err(|e| {
        if over(&count) {
            bomb()
        } else {
            Error::Format(format!("{what}: reading after the end of the tar: {e}"))
        }
    })?;
    if nonzero {
        return Err(Error::Format(format!(
            "{what}: trailing data after the end of the tar archive"
        )));
    }
    let implicit_dirs = writer
        .finish()
        .map_err(|e| Error::Format(format!("{what}: {e}")))?;
    Ok(Unpacked {
        entries,
        tar_bytes: count.get(),
        implicit_dirs,
    })
}

/// Reads the rest of a stream; true when any byte is not zero.
fn drain_nonzero<R: Read>(r: &mut R) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut nonzero = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(nonzero),
            Ok(n) => nonzero |= buf[..n].iter().any(|&b| b != 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Extension headers seen before the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

/// Parses and applies every entry; returns (entries, offset just past the last entry's data).
fn walk_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    writer: &mut LayerWriter,
    limits: &Limits,
) -> std::result::Result<(u64, u64), String> {
    let mut pending = Pending::default();
    let mut n = 0u64;
    let mut end = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| format!("bad tar stream: {e}"))?;
    for entry in entries.raw(true) {
        let mut entry = entry.map_err(|e| format!("bad tar stream: {e}"))?;
        n += 1;
        if n > limits.max_entries {
            return Err(format!(
                "more than {} tar entries (decompression bomb?)",
                limits.max_entries
            ));
        }
        let size = entry.header().entry_size().map_err(|e| e.to_string())?;
        end = entry.raw_file_position() + size.div_ceil(BLOCK) * BLOCK;
        let typ = entry.header().entry_type().as_byte();
        match typ {
            b'L' => pending.long_name = Some(read_ext(&mut entry, size, "GNU long name")?),
            b'K' => pending.long_link = Some(read_ext(&mut entry, size, "GNU long link")?),
            b'x' => pending.pax = Some(read_ext(&mut entry, size, "PAX header")?),
            b'g' => drop(read_ext(&mut entry, size, "PAX global header")?),
            _ => {
                let raw = raw_entry(&entry, size, std::mem::take(&mut pending))?;
                let shown = RelPath::normalize(&raw.path)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|_| String::from_utf8_lossy(&raw.path).into_owned());
                let action = classify(raw).map_err(|e| format!("entry {shown}: {e}"))?;
                if let Action::Skip(why) = action {
                    log::info!("skipping tar entry {shown}: {why}");
                    continue;
                }
                writer
                    .apply(action, &mut entry)
                    .map_err(|e| format!("entry {shown}: {e}"))?;
            }
        }
    }
    if pending.long_name.is_some() || pending.long_link.is_some() || pending.pax.is_some() {
        return Err("extension header at the end of the archive with no entry".into());
    }
    Ok((n, end))
}

fn read_ext<R: Read>(entry: &mut R, size: u64, what: &str) -> std::result::Result<Vec<u8>, String> {
    if size > MAX_EXT_HEADER {
        return Err(format!(
            "{what} of {size} bytes is larger than {MAX_EXT_HEADER}"
        ));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry
        .take(size)
        .read_to_end(&mut v)
        .map_err(|e| format!("reading {what}: {e}"))?;
    Ok(v)
}

fn raw_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    size: u64,
    pending: Pending,
) -> std::result::Result<RawEntry, String> {
    let h = entry.header();
    let field = |what: &str, e: io::Error| format!("bad {what} in tar header: {e}");
    let strip_nul = |mut v: Vec<u8>| {
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    };
    let id = |v: u64, what: &str| {
        u32::try_from(v)
            .ok()
            .filter(|&x| x != u32::MAX)
            .ok_or_else(|| format!("{what} {v} out of range"))
    };
    let mut raw = RawEntry {
        path: match pending.long_name {
            Some(n) => strip_nul(n),
            None => h.path_bytes().into_owned(),
        },
        link: match pending.long_link {
            Some(n) => strip_nul(n),
            None => h
                .link_name_bytes()
                .map(|c| c.into_owned())
                .unwrap_or_default(),
        },
        kind: RawType::from_byte(h.entry_type().as_byte()),
        size,
        dev: (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        ),
        meta: Meta {
            mode: h.mode().map_err(|e| field("mode", e))? & 0o7777,
            uid: id(h.uid().map_err(|e| field("uid", e))?, "uid")?,
            gid: id(h.gid().map_err(|e| field("gid", e))?, "gid")?,
            mtime: Mtime {
                sec: i64::try_from(h.mtime().map_err(|e| field("mtime", e))?).unwrap_or(0),
                nsec: 0,
            },
            xattrs: Vec::new(),
        },
    };
    if let Some(pax) = pending.pax {
        apply_pax(&pax, &mut raw)?;
    }
    if raw.meta.uid == u32::MAX || raw.meta.gid == u32::MAX {
        return Err("uid/gid 4294967295 is not a valid owner".into());
    }
    Ok(raw)
}

/// Opens (creating) an empty directory for a layer root.
pub fn open_layer_root(path: &std::path::Path) -> Result<OwnedFd> {
    std::fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))?;
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::io("open", path, e.into()))?;
    Ok(fd)
}
