//! zstd:chunked (containers-storage's seekable zstd layer): written from a plain tar, and its
//! TOC read back.
//!
//! ```text
//! blob:  [zstd frame: tar headers + padding] [zstd frame: file a, piece 0] [frame: a, piece 1]
//!        [frame: padding, headers of b] [frame: b] ... [frame: end-of-archive blocks]
//!        [skippable frame: zstd(TOC JSON)] [skippable frame: tar-split (empty here)]
//!        [skippable frame: 64-byte footer]
//! footer (little-endian u64s): TOC offset, TOC compressed length, TOC length, manifest type 1,
//!        tar-split offset, compressed length, length; then the magic "GNUlInUx"
//! ```
//!
//! A plain zstd reader decodes the frames one after the other and skips the skippable ones, so
//! it sees exactly the original tar (same diff_id). The TOC lists every entry with its
//! metadata; a regular file's data starts a new frame, so its compressed span
//! (`offset`..`endOffset`) decodes on its own; files over [`CHUNK`] bytes are split into pieces
//! (`chunk` entries), each its own frame with its own sha256 (`chunkDigest`). The manifest
//! carries the TOC's position and the sha256 of its compressed bytes as layer annotations:
//! a lazy reader trusts the TOC through them. The tar-split frame is written empty: layerfs
//! keeps the tar headers in the stream, and containers-storage then does a normal pull.
use std::collections::BTreeMap;
use std::io::{self, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::tarentry::{Meta, Mtime};
use super::toc::{
    CHUNK, TarItem, TarSink, Toc, TocChunk, TocEntry, TocKind, entry_of, format_time, parse_time,
};
use crate::digest::Digest;
use crate::digest::Hasher;
use crate::{Error, Result};

pub const MANIFEST_CHECKSUM: &str = "io.github.containers.zstd-chunked.manifest-checksum";
pub const MANIFEST_POSITION: &str = "io.github.containers.zstd-chunked.manifest-position";
pub const TARSPLIT_POSITION: &str = "io.github.containers.zstd-chunked.tarsplit-position";
const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
const FOOTER_MAGIC: &[u8; 8] = b"GNUlInUx";
const FOOTER_LEN: usize = 64;
const MANIFEST_TYPE_CRFS: u64 = 1;
/// Largest TOC accepted (uncompressed).
pub const MAX_TOC: u64 = 512 * 1024 * 1024;
const LEVEL: i32 = 3;

#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase")]
struct JsonToc {
    version: u32,
    entries: Vec<JsonEntry>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct JsonEntry {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    link_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    mode: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(default, skip_serializing_if = "is_zero32")]
    uid: u32,
    #[serde(default, skip_serializing_if = "is_zero32")]
    gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modtime: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero32")]
    dev_major: u32,
    #[serde(default, skip_serializing_if = "is_zero32")]
    dev_minor: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    xattrs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    end_offset: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    chunk_size: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    chunk_offset: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    chunk_digest: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    chunk_type: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero32(v: &u32) -> bool {
    *v == 0
}

/// A writer's result: the annotations for the layer descriptor.
#[derive(Debug, Default)]
pub struct Written {
    pub annotations: BTreeMap<String, String>,
    /// sha256 of the uncompressed stream (the diff_id).
    pub diff_id: Option<Digest>,
}

/// Counts and hashes what goes to the blob.
pub struct Counting<W: Write> {
    pub inner: W,
    pub pos: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes zstd:chunked from a tar walked by [`super::toc::walk`].
pub struct ChunkedWriter<W: Write> {
    out: Counting<W>,
    /// Uncompressed bytes waiting for the next metadata frame.
    pending: Vec<u8>,
    entries: Vec<JsonEntry>,
    /// Index in `entries` of the regular file being written, and its whole-file hasher.
    file: Option<(usize, Hasher)>,
    plain: Hasher,
}

impl<W: Write> ChunkedWriter<W> {
    pub fn new(out: W) -> Self {
        ChunkedWriter {
            out: Counting { inner: out, pos: 0 },
            pending: Vec::new(),
            entries: Vec::new(),
            file: None,
            plain: Hasher::new(),
        }
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let frame = zstd::bulk::compress(&self.pending, LEVEL)?;
        self.out.write_all(&frame)?;
        self.pending.clear();
        Ok(())
    }

    fn skippable(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(&SKIPPABLE_MAGIC)?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(data)
    }

    /// Writes the TOC, the tar-split frame and the footer; returns the annotations.
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        self.flush_pending()?;
        let json = serde_json::to_vec(&JsonToc {
            version: 1,
            entries: std::mem::take(&mut self.entries),
        })
        .map_err(io::Error::other)?;
        let packed = zstd::bulk::compress(&json, LEVEL)?;
        let toc_offset = self.out.pos + 8;
        self.skippable(&packed)?;
        let split_offset = self.out.pos + 8;
        self.skippable(&[])?;
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        for v in [
            toc_offset,
            packed.len() as u64,
            json.len() as u64,
            MANIFEST_TYPE_CRFS,
            split_offset,
            0,
            0,
        ] {
            footer.extend_from_slice(&v.to_le_bytes());
        }
        footer.extend_from_slice(FOOTER_MAGIC);
        self.skippable(&footer)?;
        self.out.flush()?;
        let mut annotations = BTreeMap::new();
        annotations.insert(
            MANIFEST_CHECKSUM.to_string(),
            Digest::of(&packed).to_string(),
        );
        annotations.insert(
            MANIFEST_POSITION.to_string(),
            format!(
                "{toc_offset}:{}:{}:{MANIFEST_TYPE_CRFS}",
                packed.len(),
                json.len()
            ),
        );
        annotations.insert(TARSPLIT_POSITION.to_string(), format!("{split_offset}:0:0"));
        let diff_id = Some(self.plain.finish().0);
        Ok((
            self.out.inner,
            Written {
                annotations,
                diff_id,
            },
        ))
    }
}

impl<W: Write> TarSink for ChunkedWriter<W> {
    fn entry(&mut self, item: &TarItem) -> io::Result<()> {
        self.plain.update(&item.headers);
        self.pending.extend_from_slice(&item.headers);
        let e = entry_of(item)?;
        self.entries.push(json_of(&e)?);
        if e.kind == TocKind::Reg && e.size > 0 {
            self.file = Some((self.entries.len() - 1, Hasher::new()));
        }
        Ok(())
    }

    fn data(&mut self, file_offset: u64, piece: &[u8]) -> io::Result<()> {
        self.flush_pending()?;
        self.plain.update(piece);
        let start = self.out.pos;
        let frame = zstd::bulk::compress(piece, LEVEL)?;
        self.out.write_all(&frame)?;
        let end = self.out.pos;
        let digest = Digest::of(piece).to_string();
        let Some((idx, hasher)) = self.file.as_mut() else {
            return Err(io::Error::other("file data outside a regular file"));
        };
        hasher.update(piece);
        let idx = *idx;
        let Some(reg) = self.entries.get_mut(idx) else {
            return Err(io::Error::other("lost TOC entry"));
        };
        reg.end_offset = end;
        if file_offset == 0 {
            reg.offset = start;
            if reg.size > CHUNK {
                reg.chunk_size = piece.len() as u64;
                reg.chunk_digest = digest;
            }
        } else {
            let name = reg.name.clone();
            self.entries.push(JsonEntry {
                kind: "chunk".into(),
                name,
                offset: start,
                end_offset: end,
                chunk_size: piece.len() as u64,
                chunk_offset: file_offset,
                chunk_digest: digest,
                ..JsonEntry::default()
            });
        }
        Ok(())
    }

    fn end_entry(&mut self, pad: &[u8]) -> io::Result<()> {
        if let Some((idx, hasher)) = self.file.take()
            && let Some(reg) = self.entries.get_mut(idx)
        {
            reg.digest = hasher.finish().0.to_string();
        }
        self.plain.update(pad);
        self.pending.extend_from_slice(pad);
        Ok(())
    }

    fn trailer(&mut self, rest: &[u8]) -> io::Result<()> {
        self.plain.update(rest);
        self.pending.extend_from_slice(rest);
        Ok(())
    }
}

fn json_of(e: &TocEntry) -> io::Result<JsonEntry> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut xattrs = BTreeMap::new();
    for (k, v) in &e.meta.xattrs {
        let k = String::from_utf8(k.clone())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "xattr name is not UTF-8"))?;
        xattrs.insert(k, b64.encode(v));
    }
    Ok(JsonEntry {
        kind: e.kind.name().into(),
        name: e.name.clone(),
        link_name: e.link.clone(),
        mode: u64::from(e.meta.mode),
        size: e.size,
        uid: e.meta.uid,
        gid: e.meta.gid,
        modtime: Some(format_time(e.meta.mtime)),
        dev_major: e.dev.0,
        dev_minor: e.dev.1,
        xattrs,
        ..JsonEntry::default()
    })
}

/// The TOC's span in the blob from the layer annotations: (offset, compressed length,
/// uncompressed length, sha256 of the compressed bytes). None when the layer has none.
pub fn toc_position(annotations: &BTreeMap<String, String>) -> Option<(u64, u64, u64, Digest)> {
    let pos = annotations.get(MANIFEST_POSITION)?;
    let sum = Digest::parse(annotations.get(MANIFEST_CHECKSUM)?).ok()?;
    let mut it = pos.split(':').map(|s| s.parse::<u64>().ok());
    let (off, len, ulen, typ) = (it.next()??, it.next()??, it.next()??, it.next()??);
    (typ == MANIFEST_TYPE_CRFS).then_some((off, len, ulen, sum))
}

/// Decodes a TOC fetched from `toc_position`'s span (already checked against its digest).
pub fn parse_toc(packed: &[u8], ulen: u64, what: &str) -> Result<Toc> {
    if ulen > MAX_TOC {
        return Err(Error::Format(format!(
            "{what}: TOC of {ulen} bytes is too large"
        )));
    }
    let json = zstd::bulk::decompress(packed, ulen as usize)
        .map_err(|e| Error::Format(format!("{what}: TOC: zstd: {e}")))?;
    let doc: JsonToc =
        serde_json::from_slice(&json).map_err(|e| Error::Format(format!("{what}: TOC: {e}")))?;
    toc_of(doc, what)
}

fn toc_of(doc: JsonToc, what: &str) -> Result<Toc> {
    let bad = |m: String| Error::Format(format!("{what}: TOC: {m}"));
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut toc = Toc::default();
    for j in doc.entries {
        if j.kind == "chunk" {
            let Some(reg) = toc.entries.last_mut().filter(|r| r.name == j.name) else {
                return Err(bad(format!("chunk of {} does not follow its file", j.name)));
            };
            reg.chunks.push(TocChunk {
                file_offset: j.chunk_offset,
                size: j.chunk_size,
                blob_offset: j.offset,
                blob_end: j.end_offset,
                inner_offset: 0,
                digest: Digest::parse(&j.chunk_digest).map_err(|e| bad(e.to_string()))?,
            });
            continue;
        }
        let kind = TocKind::parse(&j.kind)
            .ok_or_else(|| bad(format!("{}: unknown type {:?}", j.name, j.kind)))?;
        let mut xattrs = Vec::new();
        for (k, v) in &j.xattrs {
            let v = b64
                .decode(v)
                .map_err(|e| bad(format!("{}: xattr {k}: {e}", j.name)))?;
            xattrs.push((k.as_bytes().to_vec(), v));
        }
        let mtime = match &j.modtime {
            Some(t) => parse_time(t).ok_or_else(|| bad(format!("{}: bad modtime", j.name)))?,
            None => Mtime::default(),
        };
        let mut e = TocEntry {
            name: j.name.clone(),
            kind,
            link: j.link_name.clone(),
            size: j.size,
            dev: (j.dev_major, j.dev_minor),
            meta: Meta {
                mode: (j.mode & 0o7777) as u32,
                uid: j.uid,
                gid: j.gid,
                mtime,
                xattrs,
            },
            chunks: Vec::new(),
        };
        if kind == TocKind::Reg && j.size > 0 {
            let (size, digest) = if j.chunk_digest.is_empty() {
                (j.size, &j.digest)
            } else {
                (j.chunk_size, &j.chunk_digest)
            };
            e.chunks.push(TocChunk {
                file_offset: 0,
                size,
                blob_offset: j.offset,
                blob_end: j.end_offset,
                inner_offset: 0,
                digest: Digest::parse(digest).map_err(|e| bad(e.to_string()))?,
            });
        }
        toc.entries.push(e);
    }
    // A piece without its own end offset ends where the next begins.
    for e in &mut toc.entries {
        let ends: Vec<u64> = e.chunks.iter().skip(1).map(|c| c.blob_offset).collect();
        let n = e.chunks.len();
        for (i, c) in e.chunks.iter_mut().enumerate() {
            if i + 1 < n && (c.blob_end == 0 || c.blob_end > ends[i]) {
                c.blob_end = ends[i];
            }
        }
        e.check_chunks().map_err(bad)?;
    }
    Ok(toc)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::toc::walk;
    use std::io::Read;

    pub(crate) fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "etc/", &[][..]).unwrap();
        let small = b"NAME=test\n".to_vec();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(small.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, "etc/os-release", &small[..]).unwrap();
        let big: Vec<u8> = (0..(CHUNK as usize * 2 + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o600);
        h.set_uid(1);
        h.set_gid(2);
        h.set_size(big.len() as u64);
        b.append_data(&mut h, "big", &big[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn plain_zstd_reader_sees_the_original_tar_and_the_toc_points_at_the_data() {
        let tar = sample_tar();
        let mut w = ChunkedWriter::new(Vec::new());
        walk(&tar[..], &mut w, "t").unwrap();
        let (blob, written) = w.finish().unwrap();
        let mut plain = Vec::new();
        zstd::stream::read::Decoder::new(&blob[..])
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, tar);
        assert_eq!(written.diff_id.unwrap(), Digest::of(&tar));
        let (off, len, ulen, sum) = toc_position(&written.annotations).unwrap();
        let packed = &blob[off as usize..(off + len) as usize];
        assert_eq!(Digest::of(packed), sum);
        let toc = parse_toc(packed, ulen, "t").unwrap();
        let names: Vec<_> = toc.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["etc/", "etc/os-release", "big"]);
        let big = &toc.entries[2];
        assert_eq!(big.chunks.len(), 3);
        let mut whole = Vec::new();
        for c in &big.chunks {
            let span = &blob[c.blob_offset as usize..c.blob_end as usize];
            let data = zstd::stream::decode_all(span).unwrap();
            assert_eq!(Digest::of(&data), c.digest);
            whole.extend(data);
        }
        assert_eq!(whole.len() as u64, big.size);
        let footer = &blob[blob.len() - FOOTER_LEN..];
        assert_eq!(&footer[56..], FOOTER_MAGIC);
        assert_eq!(u64::from_le_bytes(footer[..8].try_into().unwrap()), off);
        assert_eq!(toc.entries[1].meta.mtime.sec, 1_700_000_000);
    }
}
