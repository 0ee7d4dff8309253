//! `layerfs save IMAGE... -o FILE --format docker-archive|oci-archive|oci-dir`.
//!
//! ```text
//! oci-dir / oci-archive              docker-archive (what Docker 25+ `docker save` writes)
//!   oci-layout                         oci-layout
//!   index.json                         index.json
//!   blobs/sha256/HEX                   blobs/sha256/HEX   (layers uncompressed)
//!                                      manifest.json      [{Config, RepoTags, Layers}]
//! ```
//!
//! Layers are the blobs the store kept when it extracted them (`layers/CHAIN/blob`), so digests,
//! diff_ids and the image ID survive a save and a load. When every layer blob the image's
//! stored manifest names is the one written, that manifest is written unchanged (its digest
//! too); otherwise a new OCI manifest is written for the same config. docker-archive needs
//! uncompressed layers: they are decompressed and checked against the config's diff_ids. A layer
//! stored without a blob (by an older layerfs) is re-packed from its directory, and used only if
//! that reproduces its diff_id.
//!
//! The output appears atomically: it is written next to the target and renamed at the end.
//! [`save_to_writer`] streams an archive instead (standard output: `save` without `-o`).
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::convert::SeekableFormat;
use super::{ImageRecord, Store};
use crate::digest::{Digest, HashingReader, HashingWriter};
use crate::image::compress::{self, Compression};
use crate::image::oci::{
    ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, Document, LAYER_TAR, OCI_CONFIG,
    OCI_INDEX, OCI_MANIFEST, layer_media_type, oci_manifest, parse_document,
};
use crate::image::pack::{open_tree, pack_dir};
use crate::image::tarwrite::{TarEntry, TarWriter};
use crate::reference::Reference;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    DockerArchive,
    OciArchive,
    OciDir,
}

impl std::str::FromStr for SaveFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "docker-archive" | "docker" => Ok(SaveFormat::DockerArchive),
            "oci-archive" => Ok(SaveFormat::OciArchive),
            "oci-dir" | "oci" => Ok(SaveFormat::OciDir),
            _ => Err(Error::Usage(format!(
                "unknown format {s:?}: use docker-archive, oci-archive or oci-dir"
            ))),
        }
    }
}

/// Bytes of a blob to write: a file, or in memory.
#[derive(Clone, Debug)]
enum Data {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// A blob ready to be written, with its descriptor.
#[derive(Clone, Debug)]
pub struct Blob {
    pub desc: Descriptor,
    data: Data,
}

impl Blob {
    fn bytes(media_type: &str, b: Vec<u8>) -> Blob {
        Blob {
            desc: descriptor(media_type, Digest::of(&b), b.len() as u64),
            data: Data::Bytes(b),
        }
    }
    fn open(&self) -> Result<Box<dyn Read + Send>> {
        Ok(match &self.data {
            Data::Bytes(b) => Box::new(std::io::Cursor::new(b.clone())),
            Data::File(p) => Box::new(File::open(p).map_err(|e| Error::io("open", p, e))?),
        })
    }
}

fn descriptor(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

/// Reads up to one tar block of a file and names its compression.
fn sniff_file(p: &Path) -> Result<Compression> {
    let mut head = Vec::with_capacity(512);
    File::open(p)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(|e| Error::io("read", p, e))?;
    compress::sniff(&head).map_err(|e| Error::Format(format!("{}: {e}", p.display())))
}

/// Layer `i` of an image record: (chain ID, diff_id); a record whose lists disagree is corrupt.
fn layer_ids(img: &ImageRecord, i: usize) -> Result<(&Digest, &Digest)> {
    match (img.layers.get(i), img.diff_ids.get(i)) {
        (Some(c), Some(d)) => Ok((c, d)),
        _ => Err(Error::Format(format!(
            "image record {}: layer {i} missing (corrupt record: {} layers, {} diff_ids)",
            img.id,
            img.layers.len(),
            img.diff_ids.len()
        ))),
    }
}

/// The blob of layer `i` of `img` as stored: the kept blob, or a re-pack of the layer directory
/// (uncompressed) when it reproduces the diff_id. `scratch` holds re-packed layers.
pub fn stored_layer(store: &Store, img: &ImageRecord, i: usize, scratch: &Path) -> Result<Blob> {
    let (chain, diff_id) = layer_ids(img, i)?;
    if let Some(kept) = store.layer_blob(chain)? {
        let kind = sniff_file(&kept.path)?;
        return Ok(Blob {
            desc: descriptor(layer_media_type(kind), kept.blob.digest, kept.blob.size),
            data: Data::File(kept.path),
        });
    }
    let dest = scratch.join(format!("repack-{}", chain.hex()));
    let root = open_tree(&store.layer_diff(chain))?;
    let file = File::create(&dest).map_err(|e| Error::io("create", &dest, e))?;
    let w = HashingWriter::new(BufWriter::new(file));
    let (w, _) = pack_dir(std::os::fd::AsFd::as_fd(&root), w).map_err(|e| match e {
        crate::image::pack::PackError::Changed(m) => Error::Format(m),
        crate::image::pack::PackError::Failed(e) => e,
    })?;
    let (buf, got, size) = w.finish();
    buf.into_inner()
        .map_err(|e| Error::io("write", &dest, e.into_error()))?;
    if &got != diff_id {
        return Err(Error::Format(format!(
            "layer {} has no stored blob (it was loaded by an older layerfs) and re-packing its \
             directory gives {got}, not its diff_id {diff_id}: load the image again to save it",
            chain.short()
        )));
    }
    Ok(Blob {
        desc: descriptor(LAYER_TAR, got, size),
        data: Data::File(dest),
    })
}

/// The descriptor of layer `i` of `img` without writing anything: the kept blob's, or (no
/// blob kept) the uncompressed tar's, whose digest is the diff_id.
pub fn layer_descriptor(store: &Store, img: &ImageRecord, i: usize) -> Result<Descriptor> {
    let (chain, diff_id) = layer_ids(img, i)?;
    if let Some(kept) = store.layer_blob(chain)? {
        let kind = sniff_file(&kept.path)?;
        return Ok(descriptor(
            layer_media_type(kind),
            kept.blob.digest,
            kept.blob.size,
        ));
    }
    let meta = store.layer_meta(chain)?;
    Ok(descriptor(LAYER_TAR, diff_id.clone(), meta.size))
}

/// The uncompressed layer (digest = diff_id) for docker-archive, decompressed into `scratch`.
fn uncompressed_layer(store: &Store, img: &ImageRecord, i: usize, scratch: &Path) -> Result<Blob> {
    let b = stored_layer(store, img, i, scratch)?;
    if b.desc.media_type == LAYER_TAR {
        return Ok(b);
    }
    let (chain, diff_id) = layer_ids(img, i)?;
    let what = format!("layer {}", chain.short());
    let (_, dec) = compress::decoder(b.open()?, &what)?;
    let mut r = HashingReader::new(dec);
    let dest = scratch.join(format!("plain-{}", diff_id.hex()));
    let mut out = File::create(&dest).map_err(|e| Error::io("create", &dest, e))?;
    std::io::copy(&mut r, &mut out).map_err(|e| Error::Format(format!("{what}: {e}")))?;
    let (_, got, size) = r.finish();
    if &got != diff_id {
        return Err(Error::DigestMismatch {
            what: format!("{what}: stored blob decompressed"),
            expected: diff_id.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(Blob {
        desc: descriptor(LAYER_TAR, got, size),
        data: Data::File(dest),
    })
}

/// One image to save: its blobs and the manifest that ties them.
struct Planned {
    img: ImageRecord,
    names: Vec<Reference>,
    config: Blob,
    layers: Vec<Blob>,
    manifest: Blob,
}

/// The image's stored manifest, if it names exactly these layer blobs.
fn reusable_manifest(
    store: &Store,
    img: &ImageRecord,
    name: Option<&Reference>,
    layers: &[Blob],
) -> Option<Blob> {
    // The manifest this name was loaded with, else the image's first one.
    let by_name = name.and_then(|n| img.manifests.get(&n.to_string()));
    let candidates = by_name.into_iter().chain(img.manifest.as_ref());
    candidates
        .filter_map(|md| manifest_if_same(store, img, md, layers))
        .next()
}

/// The stored manifest `md` when it names exactly these layer blobs, with media types that
/// declare the compression the blobs have.
fn manifest_if_same(
    store: &Store,
    img: &ImageRecord,
    md: &crate::store::Digest,
    layers: &[Blob],
) -> Option<Blob> {
    use crate::image::compress::declared_by_media_type;
    let bytes = store.read_blob(md).ok()?;
    let Ok(Document::Manifest(m)) = parse_document(&bytes, "manifest") else {
        return None;
    };
    let same = m.layers.len() == layers.len()
        && m.layers.iter().zip(layers).all(|(a, b)| {
            a.digest == b.desc.digest
                && a.size == b.desc.size
                && declared_by_media_type(&a.media_type)
                    == declared_by_media_type(&b.desc.media_type)
        });
    if !same || m.config.digest != img.id {
        return None;
    }
    let mt = if m.media_type.is_empty() {
        OCI_MANIFEST.to_string()
    } else {
        m.media_type
    };
    Some(Blob::bytes(&mt, bytes))
}

fn plan(
    store: &Store,
    arg: &str,
    format: SaveFormat,
    seekable: Option<SeekableFormat>,
    scratch: &Path,
) -> Result<Planned> {
    let img = store.resolve(arg)?;
    let names = match Reference::parse(arg) {
        Ok(r) if store.names_of(&img.id)?.contains(&r.to_string()) => vec![r],
        _ => Vec::new(),
    };
    if let Some(fmt) = seekable {
        let c = super::convert::convert(store, &img, fmt, scratch)?;
        let layers = c
            .layers
            .into_iter()
            .map(|l| {
                let mut desc = descriptor(l.media_type, l.digest, l.size);
                desc.annotations = l.annotations;
                Blob {
                    desc,
                    data: Data::File(l.path),
                }
            })
            .collect();
        return Ok(Planned {
            img,
            names,
            config: Blob::bytes(OCI_CONFIG, c.config),
            layers,
            manifest: Blob::bytes(OCI_MANIFEST, c.manifest),
        });
    }
    let config = Blob::bytes(OCI_CONFIG, store.read_blob(&img.id)?);
    let layers = (0..img.layers.len())
        .map(|i| match format {
            SaveFormat::DockerArchive => uncompressed_layer(store, &img, i, scratch),
            _ => stored_layer(store, &img, i, scratch),
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = match reusable_manifest(store, &img, names.first(), &layers) {
        Some(m) => m,
        None => {
            let descs: Vec<Descriptor> = layers.iter().map(|l| l.desc.clone()).collect();
            Blob::bytes(OCI_MANIFEST, oci_manifest(&config.desc, &descs)?)
        }
    };
    Ok(Planned {
        img,
        names,
        config,
        layers,
        manifest,
    })
}

/// Where the files of a layout go: a directory or a tar archive.
enum Out<'a> {
    Dir(PathBuf),
    Tar(TarWriter<BufWriter<&'a mut dyn Write>>),
}

impl Out<'_> {
    fn dir(&mut self, name: &str) -> Result<()> {
        match self {
            Out::Dir(root) => {
                let p = root.join(name);
                std::fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))
            }
            Out::Tar(t) => t
                .append(&TarEntry::dir(name), None)
                .map_err(|e| Error::io("write", name, e)),
        }
    }

    fn file(&mut self, name: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        match self {
            Out::Dir(root) => {
                let p = root.join(name);
                let mut f = File::create(&p).map_err(|e| Error::io("create", &p, e))?;
                let n = std::io::copy(data, &mut f).map_err(|e| Error::io("write", &p, e))?;
                if n != size {
                    return Err(Error::Format(format!(
                        "{}: wrote {n} bytes, expected {size}",
                        p.display()
                    )));
                }
                f.sync_all().map_err(|e| Error::io("fsync", &p, e))
            }
            Out::Tar(t) => t
                .append(&TarEntry::file(name, size), Some(data))
                .map_err(|e| Error::io("write", name, e)),
        }
    }

    fn bytes(&mut self, name: &str, b: &[u8]) -> Result<()> {
        self.file(name, b.len() as u64, &mut &b[..])
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexOut<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Writes the layout in the order Docker 25+ uses: blobs, index.json, manifest.json,
/// oci-layout.
fn write_layout(out: &mut Out, images: &[Planned], docker: bool) -> Result<()> {
    out.dir("blobs")?;
    out.dir("blobs/sha256")?;
    let mut blobs: BTreeMap<Digest, &Blob> = BTreeMap::new();
    for p in images {
        for b in p.layers.iter().chain([&p.config, &p.manifest]) {
            blobs.entry(b.desc.digest.clone()).or_insert(b);
        }
    }
    for (d, b) in &blobs {
        out.file(&blob_name(d), b.desc.size, &mut b.open()?)?;
    }
    let mut manifests = Vec::new();
    for p in images {
        if p.names.is_empty() {
            manifests.push(p.manifest.desc.clone());
        }
        for n in &p.names {
            let mut d = p.manifest.desc.clone();
            d.annotations
                .insert(ANNOTATION_IMAGE_NAME.into(), n.to_string());
            if let Some(t) = &n.tag {
                d.annotations.insert(ANNOTATION_REF_NAME.into(), t.clone());
            }
            manifests.push(d);
        }
    }
    let index = serde_json::to_vec(&IndexOut {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests,
    })
    .map_err(|e| Error::Format(format!("encoding index.json: {e}")))?;
    out.bytes("index.json", &index)?;
    if docker {
        let entries: Vec<DockerEntry> = images
            .iter()
            .map(|p| DockerEntry {
                config: blob_name(&p.img.id),
                repo_tags: p.names.iter().map(Reference::familiar).collect(),
                layers: p.layers.iter().map(|l| blob_name(&l.desc.digest)).collect(),
            })
            .collect();
        let mj = serde_json::to_vec(&entries)
            .map_err(|e| Error::Format(format!("encoding manifest.json: {e}")))?;
        out.bytes("manifest.json", &mj)?;
    }
    out.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
}

/// Saves `images` (references or IDs) to `output`; progress lines go to `log`.
pub fn save(
    store: &Store,
    images: &[String],
    output: &Path,
    format: SaveFormat,
    log: &mut dyn Write,
) -> Result<()> {
    save_with(store, images, output, format, None, log)
}

/// [`save`], with the layers re-compressed into a seekable format when `seekable` is given.
pub fn save_with(
    store: &Store,
    images: &[String],
    output: &Path,
    format: SaveFormat,
    seekable: Option<SeekableFormat>,
    log: &mut dyn Write,
) -> Result<()> {
    if seekable.is_some() && format == SaveFormat::DockerArchive {
        return Err(Error::Usage(
            "docker-archive holds uncompressed layers: use --format oci-archive or oci-dir \
             with --compression"
                .into(),
        ));
    }
    if images.is_empty() {
        return Err(Error::Usage("save: name at least one image".into()));
    }
    if format == SaveFormat::OciDir
        && std::fs::read_dir(output).is_ok_and(|mut d| d.next().is_some())
    {
        // rename(2) replaces an empty directory only.
        return Err(Error::Usage(format!(
            "{} exists and is not empty: choose a new directory",
            output.display()
        )));
    }
    let scratch = store.staging()?;
    let planned = images
        .iter()
        .map(|a| plan(store, a, format, seekable, scratch.path()))
        .collect::<Result<Vec<_>>>()?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = output
        .file_name()
        .ok_or_else(|| Error::Usage(format!("save: bad output path {}", output.display())))?;
    let tmp = parent.join(format!(
        ".{}.layerfs-tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let r = write_to(&tmp, &planned, format);
    if let Err(e) = r {
        let _ = super::remove_all(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, output).map_err(|e| Error::io("rename", output, e))?;
    for p in &planned {
        let _ = writeln!(
            log,
            "Saved {} ({} layers) to {}",
            p.names
                .first()
                .map_or_else(|| p.img.id.short().to_string(), Reference::familiar),
            p.layers.len(),
            output.display()
        );
    }
    Ok(())
}

fn write_to(tmp: &Path, planned: &[Planned], format: SaveFormat) -> Result<()> {
    match format {
        SaveFormat::OciDir => {
            std::fs::create_dir(tmp).map_err(|e| Error::io("create", tmp, e))?;
            write_layout(&mut Out::Dir(tmp.to_path_buf()), planned, false)
        }
        SaveFormat::OciArchive | SaveFormat::DockerArchive => {
            let mut f = File::create(tmp).map_err(|e| Error::io("create", tmp, e))?;
            write_archive(&mut f, planned, format, &tmp.display().to_string())?;
            f.sync_all().map_err(|e| Error::io("fsync", tmp, e))
        }
    }
}

/// Writes an archive format into `w` (flushed at the end); `shown` names it in errors.
fn write_archive(
    w: &mut dyn Write,
    planned: &[Planned],
    format: SaveFormat,
    shown: &str,
) -> Result<()> {
    let mut out = Out::Tar(TarWriter::new(BufWriter::with_capacity(1 << 20, w)));
    write_layout(&mut out, planned, format == SaveFormat::DockerArchive)?;
    let Out::Tar(t) = out else {
        return Ok(());
    };
    let w = t.finish().map_err(|e| Error::io("write", shown, e))?;
    w.into_inner()
        .map_err(|e| Error::io("write", shown, e.into_error()))?
        .flush()
        .map_err(|e| Error::io("write", shown, e))
}

/// Saves `images` as an archive (docker-archive or oci-archive) streamed into `w`, e.g.
/// standard output; `shown` names it in messages. Nothing is written before every image and
/// layer is found, so a bad name leaves the output empty.
pub fn save_to_writer(
    store: &Store,
    images: &[String],
    format: SaveFormat,
    w: &mut dyn Write,
    shown: &str,
    log: &mut dyn Write,
) -> Result<()> {
    if images.is_empty() {
        return Err(Error::Usage("save: name at least one image".into()));
    }
    if format == SaveFormat::OciDir {
        return Err(Error::Usage(
            "save: --format oci-dir writes a directory: give -o DIR".into(),
        ));
    }
    let scratch = store.staging()?;
    let planned = images
        .iter()
        .map(|a| plan(store, a, format, None, scratch.path()))
        .collect::<Result<Vec<_>>>()?;
    write_archive(w, &planned, format, shown)?;
    for p in &planned {
        let _ = writeln!(
            log,
            "Saved {} ({} layers) to {shown}",
            p.names
                .first()
                .map_or_else(|| p.img.id.short().to_string(), Reference::familiar),
            p.layers.len(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::oci::LAYER_ZSTD;

    #[test]
    fn manifest_is_deterministic_oci() {
        let c = descriptor(OCI_CONFIG, Digest::of(b"c"), 1);
        let l = descriptor(LAYER_ZSTD, Digest::of(b"l"), 2);
        let m = oci_manifest(&c, std::slice::from_ref(&l)).unwrap();
        assert_eq!(m, oci_manifest(&c, &[l]).unwrap());
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["schemaVersion"], 2);
        assert_eq!(v["mediaType"], OCI_MANIFEST);
        assert_eq!(v["layers"][0]["mediaType"], LAYER_ZSTD);
        assert!(v["layers"][0].get("annotations").is_none());
        assert!(matches!(
            parse_document(&m, "m").unwrap(),
            Document::Manifest(_)
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(
            "docker-archive".parse::<SaveFormat>().unwrap(),
            SaveFormat::DockerArchive
        );
        assert_eq!("oci-dir".parse::<SaveFormat>().unwrap(), SaveFormat::OciDir);
        assert!("tar".parse::<SaveFormat>().is_err());
    }
}
