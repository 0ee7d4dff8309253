//! eStargz (seekable gzip, as stargz-snapshotter reads it): written from a plain tar, and its
//! TOC read back.
//!
//! ```text
//! blob:  [gzip member: headers of a + piece 0 of a (+ padding)] [member: piece 1 of a] ...
//!        [member: headers of b + b] ... [member: tar entry "stargz.index.json" (the TOC)
//!        + the end-of-archive blocks] [footer: 51-byte empty gzip member]
//! footer: gzip header with FEXTRA, subfield "SG" of 22 bytes = TOC offset as 16 lowercase hex
//!         digits + "STARGZ", then an empty stored deflate block, CRC 0, size 0
//! ```
//!
//! Every member is a complete gzip stream, so a plain gzip reader (multi-member, as every
//! registry client is) reads one tar. Unlike zstd:chunked, the TOC is a tar entry: plain clients
//! (docker, podman, skopeo + umoci, a full `layerfs pull`) extract a file `/stargz.index.json`
//! at the root of the layer, and the uncompressed stream (and so the diff_id and the image's
//! config) differs from the original layer's. A TOC entry's `offset` is where the member that
//! holds its data starts, `innerOffset` where the piece starts inside that member's decoded
//! bytes; a member ends where the next offset (or the TOC) begins. The layer annotation
//! `containerd.io/snapshot/stargz/toc.digest` is the sha256 of the TOC JSON: a lazy reader
//! trusts the TOC through it.
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use base64::Engine as _;
use flate2::Compression as Level;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

use super::chunked::{Counting, MAX_TOC, Written};
use super::tarentry::{Meta, Mtime};
use super::toc::{
    CHUNK, TarItem, TarSink, Toc, TocChunk, TocEntry, TocKind, entry_of, format_time, parse_time,
};
use crate::digest::Digest;
use crate::digest::Hasher;
use crate::{Error, Result};

pub const TOC_NAME: &str = "stargz.index.json";
pub const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
pub const UNCOMPRESSED_SIZE: &str = "io.containers.estargz.uncompressed-size";
pub const FOOTER_LEN: u64 = 51;

#[derive(Serialize, Deserialize, Default, Debug)]
struct JsonToc {
    version: u32,
    entries: Vec<JsonEntry>,
}

#[derive(Serialize, Deserialize, Default, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct JsonEntry {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modtime: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    link_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    mode: u64,
    #[serde(default, skip_serializing_if = "is_zero32")]
    uid: u32,
    #[serde(default, skip_serializing_if = "is_zero32")]
    gid: u32,
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
    chunk_offset: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    chunk_size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    chunk_digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    inner_offset: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_zero32(v: &u32) -> bool {
    *v == 0
}

/// Writes eStargz from a tar walked by [`super::toc::walk`].
pub struct EstargzWriter<W: Write> {
    out: Option<Counting<W>>,
    member: Option<GzEncoder<Counting<W>>>,
    /// Decoded bytes written to the open member so far.
    in_member: u64,
    member_start: u64,
    entries: Vec<JsonEntry>,
    file: Option<(usize, Hasher)>,
    plain: Hasher,
}

impl<W: Write> EstargzWriter<W> {
    pub fn new(out: W) -> Self {
        EstargzWriter {
            out: Some(Counting { inner: out, pos: 0 }),
            member: None,
            in_member: 0,
            member_start: 0,
            entries: Vec::new(),
            file: None,
            plain: Hasher::new(),
        }
    }

    fn close_member(&mut self) -> io::Result<()> {
        if let Some(m) = self.member.take() {
            self.out = Some(m.finish()?);
        }
        Ok(())
    }

    fn open_member(&mut self) -> io::Result<()> {
        self.close_member()?;
        let out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("estargz writer: no output"))?;
        self.member_start = out.pos;
        self.in_member = 0;
        self.member = Some(GzEncoder::new(out, Level::default()));
        Ok(())
    }

    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.plain.update(b);
        self.in_member += b.len() as u64;
        match self.member.as_mut() {
            Some(m) => m.write_all(b),
            None => Err(io::Error::other("estargz writer: no open member")),
        }
    }

    /// Writes the TOC entry, the end-of-archive blocks and the footer.
    pub fn finish(mut self, trailer: &[u8]) -> io::Result<(W, Written)> {
        let json = serde_json::to_vec(&JsonToc {
            version: 1,
            entries: std::mem::take(&mut self.entries),
        })
        .map_err(io::Error::other)?;
        self.open_member()?;
        let toc_offset = self.member_start;
        let mut h = tar::Header::new_ustar();
        h.set_path(TOC_NAME)?;
        h.set_size(json.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.write(h.as_bytes())?;
        self.write(&json)?;
        let pad = (512 - json.len() % 512) % 512;
        self.write(&vec![0u8; pad])?;
        self.write(trailer)?;
        self.close_member()?;
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("estargz writer: no output"))?;
        out.write_all(&footer(toc_offset))?;
        out.flush()?;
        let (diff_id, size) = self.plain.finish();
        let mut annotations = BTreeMap::new();
        annotations.insert(TOC_DIGEST.to_string(), Digest::of(&json).to_string());
        annotations.insert(UNCOMPRESSED_SIZE.to_string(), size.to_string());
        Ok((
            out.inner,
            Written {
                annotations,
                diff_id: Some(diff_id),
            },
        ))
    }
}

/// The 51-byte footer naming the TOC's offset.
pub fn footer(toc_offset: u64) -> Vec<u8> {
    let mut f = vec![
        0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
    ];
    f.extend_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    f.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    f
}

/// The TOC offset a footer names.
pub fn parse_footer(f: &[u8]) -> Option<u64> {
    if f.len() != FOOTER_LEN as usize || f[..4] != [0x1f, 0x8b, 8, 4] || &f[12..14] != b"SG" {
        return None;
    }
    let text = std::str::from_utf8(f.get(16..38)?).ok()?;
    let hex = text.strip_suffix("STARGZ")?;
    u64::from_str_radix(hex, 16).ok()
}

/// The trailer is written by `finish`, after the TOC: keep it until then.
pub struct EstargzSink<W: Write> {
    pub w: EstargzWriter<W>,
    pub trailer: Vec<u8>,
}

impl<W: Write> TarSink for EstargzSink<W> {
    fn entry(&mut self, item: &TarItem) -> io::Result<()> {
        let w = &mut self.w;
        w.open_member()?;
        let offset = w.member_start;
        w.write(&item.headers)?;
        let e = entry_of(item)?;
        let mut j = json_of(&e)?;
        j.offset = offset;
        w.entries.push(j);
        if e.kind == TocKind::Reg && e.size > 0 {
            w.file = Some((w.entries.len() - 1, Hasher::new()));
        }
        Ok(())
    }

    fn data(&mut self, file_offset: u64, piece: &[u8]) -> io::Result<()> {
        let w = &mut self.w;
        if file_offset > 0 {
            w.open_member()?;
        }
        let inner = w.in_member;
        let offset = w.member_start;
        w.write(piece)?;
        let digest = Digest::of(piece).to_string();
        let Some((idx, hasher)) = w.file.as_mut() else {
            return Err(io::Error::other("file data outside a regular file"));
        };
        hasher.update(piece);
        let idx = *idx;
        let Some(reg) = w.entries.get_mut(idx) else {
            return Err(io::Error::other("lost TOC entry"));
        };
        if file_offset == 0 {
            reg.chunk_size = if reg.size > CHUNK {
                piece.len() as u64
            } else {
                0
            };
            reg.chunk_digest = digest;
            reg.inner_offset = inner;
        } else {
            let name = reg.name.clone();
            w.entries.push(JsonEntry {
                name,
                kind: "chunk".into(),
                offset,
                chunk_offset: file_offset,
                chunk_size: piece.len() as u64,
                chunk_digest: digest,
                inner_offset: inner,
                ..JsonEntry::default()
            });
        }
        Ok(())
    }

    fn end_entry(&mut self, pad: &[u8]) -> io::Result<()> {
        let w = &mut self.w;
        if let Some((idx, hasher)) = w.file.take()
            && let Some(reg) = w.entries.get_mut(idx)
        {
            reg.digest = hasher.finish().0.to_string();
        }
        w.write(pad)
    }

    fn trailer(&mut self, rest: &[u8]) -> io::Result<()> {
        self.trailer = rest.to_vec();
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
        name: e.name.clone(),
        kind: e.kind.name().into(),
        size: e.size,
        modtime: Some(format_time(e.meta.mtime)),
        link_name: e.link.clone(),
        mode: u64::from(e.meta.mode),
        uid: e.meta.uid,
        gid: e.meta.gid,
        dev_major: e.dev.0,
        dev_minor: e.dev.1,
        xattrs,
        ..JsonEntry::default()
    })
}

/// Decodes the TOC member (from the TOC offset to the footer): (TOC JSON bytes, the TOC entry's
/// tar header). The caller checks the JSON against the layer's annotation.
pub fn toc_member(member: &[u8], what: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let bad = |m: String| Error::Format(format!("{what}: TOC: {m}"));
    let mut dec = Vec::new();
    flate2::read::GzDecoder::new(member)
        .take(MAX_TOC)
        .read_to_end(&mut dec)
        .map_err(|e| bad(format!("gzip: {e}")))?;
    let hdr = dec.get(..512).ok_or_else(|| bad("short member".into()))?;
    let h = tar::Header::from_byte_slice(hdr);
    if h.path_bytes().as_ref() != TOC_NAME.as_bytes() {
        return Err(bad(format!("the TOC member does not hold {TOC_NAME}")));
    }
    let size = h.entry_size().map_err(|e| bad(e.to_string()))? as usize;
    let json = dec
        .get(512..512 + size)
        .ok_or_else(|| bad("short TOC entry".into()))?;
    Ok((json.to_vec(), hdr.to_vec()))
}

/// Parses TOC JSON; `toc_offset` ends the last member.
pub fn parse_toc(json: &[u8], toc_offset: u64, what: &str) -> Result<Toc> {
    let bad = |m: String| Error::Format(format!("{what}: TOC: {m}"));
    let doc: JsonToc = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
    let mut starts: Vec<u64> = doc.entries.iter().map(|j| j.offset).collect();
    starts.push(toc_offset);
    starts.sort_unstable();
    starts.dedup();
    let end_of = |off: u64| {
        let i = starts.partition_point(|&s| s <= off);
        starts.get(i).copied().unwrap_or(toc_offset)
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut toc = Toc::default();
    for j in doc.entries {
        let chunk = |size: u64, file_offset: u64| -> Result<TocChunk> {
            Ok(TocChunk {
                file_offset,
                size,
                blob_offset: j.offset,
                blob_end: end_of(j.offset),
                inner_offset: j.inner_offset,
                digest: Digest::parse(&j.chunk_digest).map_err(|e| bad(e.to_string()))?,
            })
        };
        if j.kind == "chunk" {
            let Some(reg) = toc.entries.last_mut().filter(|r| r.name == j.name) else {
                return Err(bad(format!("chunk of {} does not follow its file", j.name)));
            };
            let size = if j.chunk_size == 0 {
                reg.size.saturating_sub(j.chunk_offset)
            } else {
                j.chunk_size
            };
            reg.chunks.push(chunk(size, j.chunk_offset)?);
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
        let mut chunks = Vec::new();
        if kind == TocKind::Reg && j.size > 0 {
            let size = if j.chunk_size == 0 {
                j.size
            } else {
                j.chunk_size
            };
            chunks.push(chunk(size, 0)?);
        }
        toc.entries.push(TocEntry {
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
            chunks,
        });
    }
    for e in &toc.entries {
        e.check_chunks().map_err(bad)?;
    }
    Ok(toc)
}

/// Decodes one piece: the member(s) in `span`, skipping `inner` bytes, `size` bytes long.
pub fn decode_piece(span: &[u8], inner: u64, size: u64) -> io::Result<Vec<u8>> {
    let mut dec = flate2::read::MultiGzDecoder::new(span);
    io::copy(&mut (&mut dec).take(inner), &mut io::sink())?;
    let mut out = Vec::with_capacity(size as usize);
    (&mut dec).take(size).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::toc::walk;

    #[test]
    fn footer_round_trip_is_51_bytes() {
        let f = footer(0x1234_5678);
        assert_eq!(f.len() as u64, FOOTER_LEN);
        assert_eq!(parse_footer(&f), Some(0x1234_5678));
        // It is a valid empty gzip member.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&f[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn plain_gzip_reader_sees_the_tar_with_the_toc_entry() {
        let tar = crate::image::chunked::tests::sample_tar();
        let mut s = EstargzSink {
            w: EstargzWriter::new(Vec::new()),
            trailer: Vec::new(),
        };
        walk(&tar[..], &mut s, "t").unwrap();
        let trailer = std::mem::take(&mut s.trailer);
        let (blob, written) = s.w.finish(&trailer).unwrap();
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(written.diff_id.unwrap(), Digest::of(&plain));
        let names: Vec<String> = tar::Archive::new(&plain[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["etc/", "etc/os-release", "big", TOC_NAME]);
        let off = parse_footer(&blob[blob.len() - 51..]).unwrap();
        let (json, _) = toc_member(&blob[off as usize..blob.len() - 51], "t").unwrap();
        assert_eq!(
            Digest::of(&json).to_string(),
            written.annotations[TOC_DIGEST]
        );
        let toc = parse_toc(&json, off, "t").unwrap();
        let big = &toc.entries[2];
        assert_eq!(big.chunks.len(), 3);
        for c in &big.chunks {
            let span = &blob[c.blob_offset as usize..c.blob_end as usize];
            let data = decode_piece(span, c.inner_offset, c.size).unwrap();
            assert_eq!(Digest::of(&data), c.digest);
        }
        let small = &toc.entries[1].chunks[0];
        let span = &blob[small.blob_offset as usize..small.blob_end as usize];
        assert_eq!(
            decode_piece(span, small.inner_offset, small.size).unwrap(),
            b"NAME=test\n"
        );
    }
}
