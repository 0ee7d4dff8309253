//! What the two seekable layer formats have in common: a table of contents (TOC) that lists
//! every tar entry with its metadata and where each piece of file data sits in the compressed
//! blob, and a tar walker that feeds a format writer entry by entry, keeping the original tar
//! bytes (headers, padding, trailer) so that the uncompressed stream is unchanged.
//!
//! ```text
//! original tar:  [hdr a][data a][pad] [hdr b][data b ...][pad] ... [zero blocks]
//! walker calls:  entry(a) data(a, chunk 0) end(pad) entry(b) data(b, 0) data(b, 1) end(pad)
//!                ... trailer(zero blocks)
//! ```
//!
//! Data is handed over in pieces of at most [`CHUNK`] bytes, aligned to file offsets: each
//! piece is one chunk of the TOC, compressed on its own and verified by its own digest.
use std::io::{self, Read};

use super::tarentry::{Meta, Mtime, RawEntry, RawType, apply_pax};
use crate::digest::Digest;
use crate::{Error, Result};

/// File data per chunk (the unit fetched and verified on a lazy read).
pub const CHUNK: u64 = 1024 * 1024;
const BLOCK: usize = 512;
/// Largest extension header (long name, PAX) accepted.
const MAX_EXT: u64 = 1024 * 1024;
/// Largest tail after the end-of-archive marker kept in memory.
const MAX_TRAILER: u64 = 16 * 1024 * 1024;

/// Entry types of a TOC (the names both formats use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TocKind {
    Dir,
    Reg,
    Symlink,
    HardLink,
    Char,
    Block,
    Fifo,
}

impl TocKind {
    pub fn name(self) -> &'static str {
        match self {
            TocKind::Dir => "dir",
            TocKind::Reg => "reg",
            TocKind::Symlink => "symlink",
            TocKind::HardLink => "hardlink",
            TocKind::Char => "char",
            TocKind::Block => "block",
            TocKind::Fifo => "fifo",
        }
    }

    pub fn parse(s: &str) -> Option<TocKind> {
        Some(match s {
            "dir" => TocKind::Dir,
            "reg" => TocKind::Reg,
            "symlink" => TocKind::Symlink,
            "hardlink" => TocKind::HardLink,
            "char" => TocKind::Char,
            "block" => TocKind::Block,
            "fifo" => TocKind::Fifo,
            _ => return None,
        })
    }

    fn of(t: RawType) -> Option<TocKind> {
        Some(match t {
            RawType::File => TocKind::Reg,
            RawType::HardLink => TocKind::HardLink,
            RawType::Symlink => TocKind::Symlink,
            RawType::Char => TocKind::Char,
            RawType::Block => TocKind::Block,
            RawType::Dir => TocKind::Dir,
            RawType::Fifo => TocKind::Fifo,
            RawType::Sparse | RawType::Other(_) => return None,
        })
    }
}

/// One piece of a regular file's data and where it is in the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocChunk {
    /// Offset of this piece in the file.
    pub file_offset: u64,
    pub size: u64,
    /// The compressed span to fetch: [blob_offset, blob_end).
    pub blob_offset: u64,
    pub blob_end: u64,
    /// Bytes to skip in the decompressed span before the piece starts (eStargz).
    pub inner_offset: u64,
    /// sha256 of the piece's bytes.
    pub digest: Digest,
}

/// One tar entry as a TOC lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocEntry {
    /// The tar path as written (`./` and leading `/` kept as they were).
    pub name: String,
    pub kind: TocKind,
    pub link: String,
    pub size: u64,
    pub dev: (u32, u32),
    pub meta: Meta,
    /// Regular files with data: their pieces, in file order.
    pub chunks: Vec<TocChunk>,
}

impl TocEntry {
    /// The entry as the tar parser would have produced it (for the shared classifier).
    pub fn raw(&self) -> RawEntry {
        RawEntry {
            path: self.name.as_bytes().to_vec(),
            link: self.link.as_bytes().to_vec(),
            kind: match self.kind {
                TocKind::Dir => RawType::Dir,
                TocKind::Reg => RawType::File,
                TocKind::Symlink => RawType::Symlink,
                TocKind::HardLink => RawType::HardLink,
                TocKind::Char => RawType::Char,
                TocKind::Block => RawType::Block,
                TocKind::Fifo => RawType::Fifo,
            },
            size: self.size,
            dev: self.dev,
            meta: self.meta.clone(),
        }
    }

    /// Checks that the pieces cover the file exactly, in order.
    pub fn check_chunks(&self) -> std::result::Result<(), String> {
        if self.kind != TocKind::Reg {
            return Ok(());
        }
        let mut at = 0;
        for c in &self.chunks {
            if c.file_offset != at || c.blob_end <= c.blob_offset || c.size == 0 {
                return Err(format!(
                    "{}: TOC pieces do not cover the file in order (piece at {})",
                    self.name, c.file_offset
                ));
            }
            at += c.size;
        }
        if at != self.size {
            return Err(format!(
                "{}: TOC pieces cover {at} of {} bytes",
                self.name, self.size
            ));
        }
        Ok(())
    }
}

/// A layer's table of contents, format-neutral.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Toc {
    pub entries: Vec<TocEntry>,
}

/// RFC 3339 with nanoseconds, as Go's time.Time marshals.
pub fn format_time(t: Mtime) -> String {
    let ns = i128::from(t.sec) * 1_000_000_000 + i128::from(t.nsec);
    jiff::Timestamp::from_nanosecond(ns)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

pub fn parse_time(s: &str) -> Option<Mtime> {
    let ts: jiff::Timestamp = s.parse().ok()?;
    let ns = ts.as_nanosecond();
    Some(Mtime {
        sec: i64::try_from(ns.div_euclid(1_000_000_000)).ok()?,
        nsec: u32::try_from(ns.rem_euclid(1_000_000_000)).ok()?,
    })
}

/// One logical tar entry: its header blocks (extension headers included) and what they say.
pub struct TarItem {
    pub headers: Vec<u8>,
    pub entry: RawEntry,
    /// TOC kind; None for entry types a TOC cannot list (they are refused).
    pub kind: TocKind,
}

/// A format writer fed by [`walk`].
pub trait TarSink {
    fn entry(&mut self, item: &TarItem) -> io::Result<()>;
    /// One piece of the current entry's data, at `file_offset`.
    fn data(&mut self, file_offset: u64, piece: &[u8]) -> io::Result<()>;
    /// The padding after the current entry's data (possibly empty).
    fn end_entry(&mut self, pad: &[u8]) -> io::Result<()>;
    /// Everything after the last entry: the end-of-archive blocks and any tail.
    fn trailer(&mut self, rest: &[u8]) -> io::Result<()>;
}

/// Walks a plain tar stream, feeding `sink`. `what` names the layer in errors.
pub fn walk<R: Read>(mut r: R, sink: &mut dyn TarSink, what: &str) -> Result<u64> {
    let fail = |m: String| Error::Format(format!("{what}: {m}"));
    let io_fail = |e: io::Error| Error::Format(format!("{what}: {e}"));
    let mut headers = Vec::new();
    let mut long_name = None;
    let mut long_link = None;
    let mut pax = None;
    let mut n = 0u64;
    loop {
        let mut block = [0u8; BLOCK];
        let got = read_full(&mut r, &mut block).map_err(io_fail)?;
        if got == 0 && headers.is_empty() {
            return Err(fail("tar ends without an end-of-archive block".into()));
        }
        if got < BLOCK {
            return Err(fail("truncated tar header".into()));
        }
        if block.iter().all(|&b| b == 0) {
            if !headers.is_empty() {
                return Err(fail("extension header with no entry".into()));
            }
            let mut rest = block.to_vec();
            (&mut r)
                .take(MAX_TRAILER)
                .read_to_end(&mut rest)
                .map_err(io_fail)?;
            sink.trailer(&rest).map_err(io_fail)?;
            return Ok(n);
        }
        let h = tar::Header::from_byte_slice(&block);
        let size = h
            .entry_size()
            .map_err(|e| fail(format!("bad size in tar header: {e}")))?;
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        headers.extend_from_slice(&block);
        let typ = h.entry_type().as_byte();
        if matches!(typ, b'L' | b'K' | b'x' | b'g') {
            if size > MAX_EXT {
                return Err(fail(format!("extension header of {size} bytes")));
            }
            let mut data = vec![0u8; padded as usize];
            if read_full(&mut r, &mut data).map_err(io_fail)? < data.len() {
                return Err(fail("truncated extension header".into()));
            }
            headers.extend_from_slice(&data);
            let mut body = data[..size as usize].to_vec();
            match typ {
                b'L' => long_name = Some(strip_nul(std::mem::take(&mut body))),
                b'K' => long_link = Some(strip_nul(std::mem::take(&mut body))),
                b'x' => pax = Some(body),
                _ => {}
            }
            continue;
        }
        let entry =
            raw_entry(h, size, long_name.take(), long_link.take(), pax.take()).map_err(fail)?;
        let shown = String::from_utf8_lossy(&entry.path).into_owned();
        let kind = TocKind::of(entry.kind)
            .ok_or_else(|| fail(format!("entry {shown}: tar entry type not supported")))?;
        let item = TarItem {
            headers: std::mem::take(&mut headers),
            entry,
            kind,
        };
        sink.entry(&item).map_err(io_fail)?;
        let mut at = 0u64;
        let mut buf = Vec::new();
        while at < size {
            let len = (size - at).min(CHUNK) as usize;
            buf.resize(len, 0);
            if read_full(&mut r, &mut buf).map_err(io_fail)? < len {
                return Err(fail(format!("entry {shown}: truncated data")));
            }
            sink.data(at, &buf).map_err(io_fail)?;
            at += len as u64;
        }
        let mut pad = vec![0u8; (padded - size) as usize];
        if read_full(&mut r, &mut pad).map_err(io_fail)? < pad.len() {
            return Err(fail(format!("entry {shown}: truncated padding")));
        }
        sink.end_entry(&pad).map_err(io_fail)?;
        n += 1;
    }
}

fn strip_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

fn raw_entry(
    h: &tar::Header,
    size: u64,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
) -> std::result::Result<RawEntry, String> {
    let field = |what: &str, e: io::Error| format!("bad {what} in tar header: {e}");
    let id = |v: u64, what: &str| u32::try_from(v).map_err(|_| format!("{what} {v} out of range"));
    let mut raw = RawEntry {
        path: long_name.unwrap_or_else(|| h.path_bytes().into_owned()),
        link: long_link
            .or_else(|| h.link_name_bytes().map(|c| c.into_owned()))
            .unwrap_or_default(),
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
    if let Some(p) = pax {
        apply_pax(&p, &mut raw)?;
    }
    Ok(raw)
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The TOC entry for a walked item (chunks are filled in by the writer).
pub fn entry_of(item: &TarItem) -> io::Result<TocEntry> {
    let utf8 = |b: &[u8], what: &str| {
        String::from_utf8(b.to_vec()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{what} {:?} is not UTF-8: a TOC (JSON) cannot name it; push this layer \
                     as gzip or zstd",
                    String::from_utf8_lossy(b)
                ),
            )
        })
    };
    Ok(TocEntry {
        name: utf8(&item.entry.path, "path")?,
        kind: item.kind,
        link: utf8(&item.entry.link, "link target")?,
        size: if item.kind == TocKind::Reg {
            item.entry.size
        } else {
            0
        },
        dev: item.entry.dev,
        meta: item.entry.meta.clone(),
        chunks: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        for t in [
            Mtime { sec: 0, nsec: 0 },
            Mtime {
                sec: 1_700_000_000,
                nsec: 123_456_789,
            },
            Mtime { sec: -5, nsec: 1 },
        ] {
            assert_eq!(parse_time(&format_time(t)), Some(t), "{t:?}");
        }
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z"),
            Some(Mtime {
                sec: 1_700_000_000,
                nsec: 0
            })
        );
    }
}
