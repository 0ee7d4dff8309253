//! Layer compression recognised by leading bytes (never by media type): gzip, zstd or plain tar.
use std::io::{self, Cursor, Read};

use crate::{Error, Result};

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";
const LZ4_MAGIC: &[u8] = &[0x04, 0x22, 0x4d, 0x18];
const TAR_BLOCK: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::Plain => "plain tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

/// Decides the format from the first bytes of a blob (up to one tar block).
pub fn sniff(prefix: &[u8]) -> std::result::Result<Compression, String> {
    if prefix.starts_with(GZIP_MAGIC) {
        return Ok(Compression::Gzip);
    }
    if prefix.starts_with(ZSTD_MAGIC) {
        return Ok(Compression::Zstd);
    }
    for (magic, name) in [(XZ_MAGIC, "xz"), (BZIP2_MAGIC, "bzip2"), (LZ4_MAGIC, "lz4")] {
        if prefix.starts_with(magic) {
            return Err(format!(
                "{name}-compressed layers are not supported (use gzip or zstd)"
            ));
        }
    }
    if prefix.is_empty() {
        return Err("empty blob: not a tar archive (truncated?)".into());
    }
    if prefix.len() < TAR_BLOCK {
        return Err(format!(
            "{} bytes: too short for a tar archive, not gzip or zstd (truncated?)",
            prefix.len()
        ));
    }
    if prefix.iter().all(|&b| b == 0) || tar_checksum_ok(prefix) {
        return Ok(Compression::Plain);
    }
    Err("unknown layer format: not a tar archive, gzip or zstd".into())
}

/// True when the first 512 bytes are a tar header with a valid checksum.
fn tar_checksum_ok(block: &[u8]) -> bool {
    let Some(field) = block.get(148..156) else {
        return false;
    };
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0 && b != b' ')
        .skip_while(|&&b| b == b' ')
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    let Ok(want) = u32::from_str_radix(text, 8) else {
        return false;
    };
    let sum: u32 = block[..TAR_BLOCK]
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == want
}

/// Wraps `raw` in the decoder its leading bytes call for; `what` names the blob in errors.
pub fn decoder<'a, R: Read + Send + 'a>(
    mut raw: R,
    what: &str,
) -> Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let mut prefix = Vec::with_capacity(TAR_BLOCK);
    (&mut raw)
        .take(TAR_BLOCK as u64)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::Format(format!("{what}: reading: {e}")))?;
    let kind = sniff(&prefix).map_err(|e| Error::Format(format!("{what}: {e}")))?;
    let joined = Cursor::new(prefix).chain(raw);
    let r: Box<dyn Read + Send + 'a> = match kind {
        Compression::Plain => Box::new(joined),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(joined)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(joined)
                .map_err(|e| Error::Format(format!("{what}: zstd: {e}")))?,
        ),
    };
    Ok((kind, r))
}

/// The compression a layer media type declares (OCI `...tar`, `+gzip`, `+zstd`, their
/// non-distributable forms, Docker's `...diff.tar.gzip`); `None` for a type that names none
/// (unknown or foreign types are not checked).
pub fn declared_by_media_type(media_type: &str) -> Option<Compression> {
    let mt = media_type.trim();
    if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") {
        Some(Compression::Gzip)
    } else if mt.ends_with("+zstd") || mt.ends_with(".tar.zstd") {
        Some(Compression::Zstd)
    } else if mt.ends_with(".tar") || mt.ends_with("layer.v1.tar") {
        Some(Compression::Plain)
    } else {
        None
    }
}

/// Reads the first bytes of the blob at `path` and checks them against `media_type`: a
/// manifest that calls a gzip blob zstd is refused (tools that trust the media type, such as
/// umoci, would fail on it). `what` names the manifest's layer in the error.
pub fn check_media_type(path: &std::path::Path, media_type: &str, what: &str) -> Result<()> {
    if declared_by_media_type(media_type).is_none() {
        return Ok(());
    }
    let mut prefix = Vec::with_capacity(TAR_BLOCK);
    std::fs::File::open(path)
        .and_then(|f| f.take(TAR_BLOCK as u64).read_to_end(&mut prefix))
        .map_err(|e| Error::io("read", path, e))?;
    check_media_prefix(&prefix, media_type, what)
}

/// [`check_media_type`] on the first bytes of a blob (up to one tar block).
pub fn check_media_prefix(prefix: &[u8], media_type: &str, what: &str) -> Result<()> {
    let Some(declared) = declared_by_media_type(media_type) else {
        return Ok(());
    };
    let actual = sniff(prefix).map_err(|e| Error::Format(format!("{what}: {e}")))?;
    if actual != declared {
        return Err(Error::Format(format!(
            "{what}: the manifest's media type {media_type} says {declared}, but the blob is \
             {actual}; the manifest lies about the layer (fix the manifest's mediaType)"
        )));
    }
    Ok(())
}

/// Reads to the end, discarding: used to verify what follows a tar's end marker.
pub fn discard<R: Read>(r: &mut R) -> io::Result<u64> {
    io::copy(r, &mut io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_declare_compression() {
        let rows = [
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::Plain),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                Some(Compression::Plain),
            ),
            ("application/vnd.example.thing", None),
            ("", None),
        ];
        for (mt, want) in rows {
            assert_eq!(declared_by_media_type(mt), want, "{mt}");
        }
    }

    #[test]
    fn sniff_table() {
        let mut hdr = tar::Header::new_gnu();
        hdr.set_path("a").unwrap();
        hdr.set_size(0);
        hdr.set_cksum();
        let tar_block = hdr.as_bytes().to_vec();
        let mut bad_sum = tar_block.clone();
        bad_sum[0] ^= 1;
        let rows: Vec<(Vec<u8>, Option<Compression>)> = vec![
            (vec![0x1f, 0x8b, 8, 0], Some(Compression::Gzip)),
            (vec![0x28, 0xb5, 0x2f, 0xfd, 0], Some(Compression::Zstd)),
            (tar_block, Some(Compression::Plain)),
            (vec![0; 512], Some(Compression::Plain)),
            (bad_sum, None),
            (vec![0xfd, b'7', b'z', b'X', b'Z', 0], None),
            (b"BZh91AY".to_vec(), None),
            (vec![0; 100], None),
            (vec![], None),
            (b"PK\x03\x04".repeat(200), None),
        ];
        for (i, (bytes, want)) in rows.into_iter().enumerate() {
            assert_eq!(sniff(&bytes).ok(), want, "row {i}");
        }
    }
}
