//! `layerfs push`: store -> registry.
//!
//! Layer blobs are the ones the store kept when it extracted each layer (`layers/CHAIN/blob`).
//! The image's own manifest is pushed unchanged when it names exactly those blobs, so the
//! pushed digest equals the pulled or loaded one. Otherwise (a layer first stored from a
//! differently compressed blob, a legacy docker archive without a manifest) an OCI manifest is
//! written for the kept blobs; the config, and so the image ID, never changes.
//!
//! Per blob: `HEAD` first (present: nothing to send); else a cross-repository mount
//! (`POST …/uploads/?mount=D&from=REPO`) when a repository of the same registry is known to
//! hold it (from the store's RepoDigests); else one monolithic upload (`POST` for a session,
//! `PUT ?digest=D` with the bytes). Then the manifest, unless the tag already points at it.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;

use super::client::{Body, Client, ClientOptions, Method, Request, Stats, header};
use super::docs::{OCI_CONFIG, blob_path, manifest_accept, manifest_media_type, manifest_path};
use super::{auth::Credentials, challenge::repo_scope};
use crate::digest::Digest;
use crate::image::compress::{Compression, sniff};
use crate::image::oci::{Document, Manifest, OCI_MANIFEST, parse_document};
use crate::pool::parallel_map;
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};
use crate::{Error, Result};

/// How many repositories a mount is tried from before uploading.
const MAX_MOUNT_TRIES: usize = 3;

#[derive(Clone, Debug)]
pub struct PushOptions {
    pub client: ClientOptions,
    pub progress: bool,
    /// Blobs uploaded at once.
    pub jobs: usize,
    /// Re-compress the layers into this seekable format first (a new manifest; for eStargz
    /// also a new config).
    pub compression: Option<crate::store::convert::SeekableFormat>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            client: ClientOptions::default(),
            progress: false,
            jobs: 4,
            compression: None,
        }
    }
}

/// What a push did.
#[derive(Debug, Default)]
pub struct Pushed {
    pub digest: Option<Digest>,
    pub size: u64,
    pub uploaded: u64,
    pub mounted: u64,
    pub existing: u64,
    pub manifest_put: bool,
}

/// A blob to push, from the store.
struct Blob {
    digest: Digest,
    size: u64,
    path: PathBuf,
    /// `layer` or `config`, for messages.
    kind: &'static str,
}

enum Outcome {
    Existed,
    Mounted(String),
    Uploaded,
}

/// Pushes the image `img` to `dest` (a tag).
pub fn push(
    store: &Store,
    img: &ImageRecord,
    dest: &Reference,
    creds: Option<Credentials>,
    opts: &PushOptions,
    out: &mut dyn Write,
) -> Result<Pushed> {
    let Some(tag) = dest.tag.as_deref().filter(|_| dest.digest.is_none()) else {
        return Err(Error::Usage(format!(
            "push to a tag, not a digest: {}",
            dest.familiar()
        )));
    };
    // Converted blobs live in a staging directory until the push is done.
    let mut _scratch = None;
    let (manifest, blobs) = match opts.compression {
        None => manifest_and_blobs(store, img)?,
        Some(fmt) => {
            let st = store.staging()?;
            let c = crate::store::convert::convert(store, img, fmt, st.path())?;
            _scratch = Some(st);
            converted_blobs(c)
        }
    };
    let client = Client::connect(&dest.registry, creds, &opts.client)?;
    let repo = dest.repository.as_str();
    let _ = writeln!(out, "The push refers to repository [{}]", dest.name());
    let sources = mount_sources(store, dest)?;
    let bars = crate::human::progress_bars(opts.progress);
    let outcomes = parallel_map(&blobs, opts.jobs, |b| {
        let from = sources.get(&b.digest).map(Vec::as_slice).unwrap_or(&[]);
        ensure_blob(&client, repo, b, from, &bars)
    })?;
    let mut done = Pushed::default();
    for (b, o) in blobs.iter().zip(&outcomes) {
        let what = match o {
            Outcome::Existed => {
                done.existing += 1;
                format!("{} already exists", b.kind)
            }
            Outcome::Mounted(from) => {
                done.mounted += 1;
                format!("mounted from {from}")
            }
            Outcome::Uploaded => {
                done.uploaded += 1;
                format!("pushed ({} bytes)", b.size)
            }
        };
        let _ = writeln!(out, "sha256:{}: {what}", b.digest.short());
    }
    let digest = Digest::of(&manifest);
    done.manifest_put = put_manifest(&client, repo, tag, &manifest, &digest)?;
    store.put_blob(&manifest)?;
    if opts.compression.is_none() {
        store.add_repo_digest(&img.id, &format!("{}@{digest}", dest.name()))?;
    }
    let _ = writeln!(out, "{tag}: digest: {digest} size: {}", manifest.len());
    done.digest = Some(digest);
    done.size = manifest.len() as u64;
    Ok(done)
}

fn push_scope(repo: &str) -> String {
    repo_scope(repo, true)
}

/// The manifest to push and the blobs it names (layers, then the config). Layer blobs are the
/// ones the store kept when it extracted each layer.
fn manifest_and_blobs(store: &Store, img: &ImageRecord) -> Result<(Vec<u8>, Vec<Blob>)> {
    let config_path = store.blob_path(&img.id);
    let config = Blob {
        digest: img.id.clone(),
        size: std::fs::metadata(&config_path)
            .map_err(|e| Error::io("stat", &config_path, e))?
            .len(),
        path: config_path,
        kind: "config",
    };
    let mut blobs = Vec::with_capacity(img.layers.len() + 1);
    for (chain, diff_id) in img.layers.iter().zip(&img.diff_ids) {
        let kept = store.layer_blob(chain)?.ok_or_else(|| {
            Error::Format(format!(
                "image {}: layer {diff_id} has no kept blob (stored by an older layerfs); remove the image and load or pull it again to push it",
                img.id.short()
            ))
        })?;
        blobs.push(Blob {
            digest: kept.blob.digest,
            size: kept.blob.size,
            path: kept.path,
            kind: "layer",
        });
    }
    let manifest = match stored_manifest(store, img, &blobs) {
        Some(bytes) => bytes,
        None => build_manifest(&config, &blobs)?,
    };
    blobs.push(config);
    Ok((manifest, blobs))
}

/// The blobs of a converted image (layers, then the config) and its manifest.
fn converted_blobs(c: crate::store::convert::Converted) -> (Vec<u8>, Vec<Blob>) {
    let mut blobs: Vec<Blob> = c
        .layers
        .into_iter()
        .map(|l| Blob {
            digest: l.digest,
            size: l.size,
            path: l.path,
            kind: "layer",
        })
        .collect();
    blobs.push(Blob {
        digest: Digest::of(&c.config),
        size: c.config.len() as u64,
        path: c.config_path,
        kind: "config",
    });
    (c.manifest, blobs)
}

/// The image's own manifest, when it names exactly these layer blobs.
fn stored_manifest(store: &Store, img: &ImageRecord, layers: &[Blob]) -> Option<Vec<u8>> {
    let md = img.manifest.as_ref()?;
    let bytes = store.read_blob(md).ok()?;
    let Document::Manifest(m) = parse_document(&bytes, md.as_str()).ok()? else {
        return None;
    };
    let same = m.config.digest == img.id
        && m.layers.len() == layers.len()
        && m.layers
            .iter()
            .zip(layers)
            .all(|(d, b)| d.digest == b.digest && d.size == b.size);
    if !same {
        log::info!(
            "image {}: its manifest names other layer blobs than the store keeps; writing a new manifest",
            img.id.short()
        );
    }
    same.then_some(bytes)
}

/// An OCI manifest for `layers` (media types from the blobs' leading bytes).
fn build_manifest(config: &Blob, layers: &[Blob]) -> Result<Vec<u8>> {
    let mut descs = Vec::new();
    for l in layers {
        let mut head = Vec::with_capacity(512);
        std::fs::File::open(&l.path)
            .and_then(|f| f.take(512).read_to_end(&mut head))
            .map_err(|e| Error::io("read", &l.path, e))?;
        let kind = sniff(&head).map_err(|e| Error::Format(format!("blob {}: {e}", l.digest)))?;
        let media = match kind {
            Compression::Plain => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        descs.push(serde_json::json!({"mediaType": media, "digest": l.digest, "size": l.size}));
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.size},
        "layers": descs,
    });
    serde_json::to_vec(&m).map_err(|e| Error::Format(format!("encoding manifest: {e}")))
}

/// Blob digest -> other repositories of the destination registry that hold it, from the
/// RepoDigests of the store's images whose manifests are stored.
fn mount_sources(store: &Store, dest: &Reference) -> Result<BTreeMap<Digest, Vec<String>>> {
    let mut out: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
    let prefix = format!("{}/", dest.registry);
    for img in store.images()? {
        for rd in &img.repo_digests {
            let Some((name, d)) = rd.split_once('@') else {
                continue;
            };
            let Some(repo) = name.strip_prefix(&prefix) else {
                continue;
            };
            if repo == dest.repository {
                continue;
            }
            let Ok(d) = Digest::parse(d) else { continue };
            let Ok(bytes) = store.read_blob(&d) else {
                continue;
            };
            let Ok(Document::Manifest(m)) = parse_document(&bytes, d.as_str()) else {
                continue;
            };
            let m: Manifest = m;
            for b in m.layers.iter().chain([&m.config]) {
                out.entry(b.digest.clone())
                    .or_default()
                    .insert(repo.to_owned());
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(d, r)| (d, r.into_iter().take(MAX_MOUNT_TRIES).collect()))
        .collect())
}

/// Makes sure the registry has `b` in `repo`.
fn ensure_blob(
    client: &Client,
    repo: &str,
    b: &Blob,
    mount_from: &[String],
    bars: &indicatif::MultiProgress,
) -> Result<Outcome> {
    let scope = push_scope(repo);
    let url = client.url(&blob_path(repo, &b.digest))?;
    let resp = client.send(&Request::new(Method::Head, url, &scope))?;
    match resp.status().as_u16() {
        200 => return Ok(Outcome::Existed),
        404 => {}
        _ => return Err(client.status_error(resp, &format!("blob {}", b.digest), &scope)),
    }
    let location = match try_mount(client, repo, b, mount_from)? {
        Mount::Done(from) => return Ok(Outcome::Mounted(from)),
        Mount::Session(l) => l,
        Mount::Refused => start_upload(client, repo, &scope)?,
    };
    let url = client
        .base()
        .join(&location)?
        .with_query("digest", b.digest.as_str());
    let bar = crate::human::byte_bar(bars, b.size, format!("sha256:{}", b.digest.short()));
    let req = Request::new(Method::Put, url, &scope)
        .header("content-type", "application/octet-stream")
        .body(Body::File {
            path: &b.path,
            len: b.size,
            bar: Some(&bar),
        });
    let resp = client.send(&req)?;
    bar.finish_and_clear();
    if resp.status().as_u16() != 201 {
        return Err(client.status_error(resp, &format!("upload of blob {}", b.digest), &scope));
    }
    if let Some(h) = header(&resp, "docker-content-digest")
        && h != b.digest.as_str()
    {
        return Err(Error::DigestMismatch {
            what: format!("registry {}: uploaded blob", client.registry),
            expected: b.digest.to_string(),
            actual: h,
        });
    }
    Stats::add(&client.stats.blob_uploads, 1);
    Stats::add(&client.stats.bytes_uploaded, b.size);
    Ok(Outcome::Uploaded)
}

enum Mount {
    Done(String),
    /// The registry declined but opened an upload session (202) at this location.
    Session(String),
    Refused,
}

/// Cross-repository mounts from the repositories known to hold `b`.
fn try_mount(client: &Client, repo: &str, b: &Blob, from: &[String]) -> Result<Mount> {
    for src in from {
        let scope = format!("{} {}", push_scope(repo), repo_scope(src, false));
        let url = client
            .url(&format!("/v2/{repo}/blobs/uploads/"))?
            .with_query("mount", b.digest.as_str())
            .with_query("from", src);
        let resp = client.send(&Request::new(Method::Post, url, &scope))?;
        match resp.status().as_u16() {
            201 => {
                Stats::add(&client.stats.blob_mounts, 1);
                return Ok(Mount::Done(src.clone()));
            }
            202 => {
                if let Some(l) = header(&resp, "location") {
                    return Ok(Mount::Session(l));
                }
            }
            s => log::debug!("mount of {} from {src} refused: HTTP {s}", b.digest),
        }
    }
    Ok(Mount::Refused)
}

/// `POST /v2/REPO/blobs/uploads/` -> the session's Location.
fn start_upload(client: &Client, repo: &str, scope: &str) -> Result<String> {
    let url = client.url(&format!("/v2/{repo}/blobs/uploads/"))?;
    let resp = client.send(&Request::new(Method::Post, url, scope))?;
    if resp.status().as_u16() != 202 {
        return Err(client.status_error(resp, &format!("upload to {repo}"), scope));
    }
    header(&resp, "location").ok_or_else(|| {
        Error::Registry(format!(
            "registry {}: upload session without a Location",
            client.registry
        ))
    })
}

/// PUTs the manifest unless the tag already points at it. True when it was sent.
fn put_manifest(
    client: &Client,
    repo: &str,
    tag: &str,
    bytes: &[u8],
    digest: &Digest,
) -> Result<bool> {
    let scope = push_scope(repo);
    let url = client.url(&manifest_path(repo, tag))?;
    let head = client.send(
        &Request::new(Method::Head, url.clone(), &scope).header("accept", manifest_accept()),
    )?;
    if head.status().as_u16() == 200
        && header(&head, "docker-content-digest").as_deref() == Some(digest.as_str())
    {
        return Ok(false);
    }
    let media = manifest_media_type(bytes);
    let req = Request::new(Method::Put, url, &scope)
        .header("content-type", media)
        .body(Body::Bytes(bytes));
    let resp = client.send(&req)?;
    if resp.status().as_u16() != 201 {
        return Err(client.status_error(resp, &format!("manifest {repo}:{tag}"), &scope));
    }
    if let Some(h) = header(&resp, "docker-content-digest")
        && h != digest.as_str()
    {
        return Err(Error::DigestMismatch {
            what: format!("registry {}: stored manifest", client.registry),
            expected: digest.to_string(),
            actual: h,
        });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_manifest_types_follow_the_bytes() {
        let t = tempfile::tempdir().unwrap();
        let mk = |name: &str, bytes: &[u8], kind| {
            let p = t.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            Blob {
                digest: Digest::of(bytes),
                size: bytes.len() as u64,
                path: p,
                kind,
            }
        };
        let gz = mk("g", &[0x1f, 0x8b, 8, 0, 0, 0], "layer");
        let zs = mk("z", &[0x28, 0xb5, 0x2f, 0xfd, 0], "layer");
        let tar = mk("t", &[0u8; 1024], "layer");
        let cfg = mk("c", b"{}", "config");
        let m = build_manifest(&cfg, &[gz, zs, tar]).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        let types: Vec<&str> = v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "application/vnd.oci.image.layer.v1.tar+gzip",
                "application/vnd.oci.image.layer.v1.tar+zstd",
                "application/vnd.oci.image.layer.v1.tar",
            ]
        );
        assert_eq!(v["config"]["digest"], Digest::of(b"{}").as_str());
        assert_eq!(manifest_media_type(&m), OCI_MANIFEST);
    }
}
