//! Re-compresses a stored image's layers into a seekable format (zstd:chunked or eStargz) for
//! `push --compression` and `save --compression`: each kept layer blob is decompressed, checked
//! against its diff_id while it is walked, and written again with a TOC. zstd:chunked keeps the
//! tar stream byte for byte (same diff_ids, same config, same image ID); eStargz adds its TOC
//! entry to the stream, so its diff_ids and the config (and the image ID) are new.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::digest::{HashingReader, HashingWriter};
use crate::image::chunked::ChunkedWriter;
use crate::image::compress;
use crate::image::estargz::{EstargzSink, EstargzWriter};
use crate::image::toc::walk;
use crate::store::{ImageRecord, Store};
use crate::{Error, Result};

pub const ZSTD_MEDIA: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const GZIP_MEDIA: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A seekable layer format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekableFormat {
    ZstdChunked,
    Estargz,
}

impl std::str::FromStr for SeekableFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "zstd:chunked" => Ok(SeekableFormat::ZstdChunked),
            "estargz" => Ok(SeekableFormat::Estargz),
            _ => Err(Error::Usage(format!(
                "unknown compression {s:?}: use zstd:chunked or estargz (or leave it out to \
                 send the layers as stored)"
            ))),
        }
    }
}

/// One converted layer blob in the scratch directory.
#[derive(Clone, Debug)]
pub struct ConvertedLayer {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    pub media_type: &'static str,
    pub annotations: BTreeMap<String, String>,
    pub diff_id: Digest,
}

/// A converted image: config, layers and the OCI manifest naming them.
#[derive(Debug)]
pub struct Converted {
    pub config: Vec<u8>,
    pub config_path: PathBuf,
    pub layers: Vec<ConvertedLayer>,
    pub manifest: Vec<u8>,
}

/// Converts every layer of `img` into `fmt`, writing blobs into `scratch`.
pub fn convert(
    store: &Store,
    img: &ImageRecord,
    fmt: SeekableFormat,
    scratch: &Path,
) -> Result<Converted> {
    let mut layers = Vec::new();
    for (chain, diff_id) in img.layers.iter().zip(&img.diff_ids) {
        layers.push(convert_layer(store, chain, diff_id, fmt, scratch)?);
    }
    let config = store.read_blob(&img.id)?;
    let config = if fmt == SeekableFormat::Estargz {
        with_diff_ids(&config, &layers, &img.id)?
    } else {
        config
    };
    let config_digest = Digest::of(&config);
    let config_path = scratch.join(format!("config-{}", config_digest.hex()));
    std::fs::write(&config_path, &config).map_err(|e| Error::io("write", &config_path, e))?;
    let descs: Vec<_> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": l.media_type,
                "digest": l.digest,
                "size": l.size,
                "annotations": l.annotations,
            })
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .map_err(|e| Error::Format(format!("encoding manifest: {e}")))?;
    Ok(Converted {
        config,
        config_path,
        layers,
        manifest,
    })
}

fn convert_layer(
    store: &Store,
    chain: &Digest,
    diff_id: &Digest,
    fmt: SeekableFormat,
    scratch: &Path,
) -> Result<ConvertedLayer> {
    let what = format!("layer {}", diff_id.short());
    let kept = store.layer_blob(chain)?.ok_or_else(|| {
        Error::Format(format!(
            "{what} has no kept blob (stored by an older layerfs): remove the image and load \
             or pull it again to convert it"
        ))
    })?;
    let src = File::open(&kept.path).map_err(|e| Error::io("open", &kept.path, e))?;
    let (_, dec) = compress::decoder(std::io::BufReader::new(src), &what)?;
    let mut plain = HashingReader::new(dec);
    let dest = scratch.join(format!("layer-{}", chain.hex()));
    let file = File::create(&dest).map_err(|e| Error::io("create", &dest, e))?;
    let out = HashingWriter::new(BufWriter::new(file));
    let io_err =
        |e: std::io::Error| Error::Format(format!("{what}: writing {}: {e}", dest.display()));
    let (out, written, media_type) = match fmt {
        SeekableFormat::ZstdChunked => {
            let mut w = ChunkedWriter::new(out);
            walk(&mut plain, &mut w, &what)?;
            let (out, written) = w.finish().map_err(io_err)?;
            (out, written, ZSTD_MEDIA)
        }
        SeekableFormat::Estargz => {
            let mut s = EstargzSink {
                w: EstargzWriter::new(out),
                trailer: Vec::new(),
            };
            walk(&mut plain, &mut s, &what)?;
            let trailer = std::mem::take(&mut s.trailer);
            let (out, written) = s.w.finish(&trailer).map_err(io_err)?;
            (out, written, GZIP_MEDIA)
        }
    };
    let (_, got, _) = plain.finish();
    if &got != diff_id {
        return Err(Error::DigestMismatch {
            what: format!("{what}: stored blob decompressed"),
            expected: diff_id.to_string(),
            actual: got.to_string(),
        });
    }
    let (buf, digest, size) = out.finish();
    let mut file = buf
        .into_inner()
        .map_err(|e| Error::io("write", &dest, e.into_error()))?;
    file.flush().map_err(|e| Error::io("write", &dest, e))?;
    let new_diff = written.diff_id.unwrap_or_else(|| diff_id.clone());
    Ok(ConvertedLayer {
        path: dest,
        digest,
        size,
        media_type,
        annotations: written.annotations,
        diff_id: new_diff,
    })
}

/// The config with `rootfs.diff_ids` replaced by the converted layers' (other fields kept).
fn with_diff_ids(config: &[u8], layers: &[ConvertedLayer], id: &Digest) -> Result<Vec<u8>> {
    let mut v: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| Error::Format(format!("config {id}: {e}")))?;
    let ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    let Some(rootfs) = v.get_mut("rootfs").and_then(|r| r.as_object_mut()) else {
        return Err(Error::Format(format!("config {id}: no rootfs")));
    };
    rootfs.insert("diff_ids".into(), serde_json::json!(ids));
    serde_json::to_vec(&v).map_err(|e| Error::Format(format!("encoding config: {e}")))
}
